//! Helpers shared by the integration tests.

use std::sync::OnceLock;

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;

/// A wgpu device on Vulkan, or `None` (with the reason printed) when there is no adapter.
///
/// In CI and on GPU-less machines the adapter is Mesa's lavapipe (`apt-get install
/// mesa-vulkan-drivers libvulkan1`, `XDG_RUNTIME_DIR=/tmp`). The API is pinned to Vulkan
/// in code because cubecl ignores `WGPU_BACKEND`. Shaders are WGSL, as in the browser.
/// Initialised once per process: a second init of the same device is refused, and tests
/// run on parallel threads.
pub fn wgpu_device() -> Option<Device> {
    static DEVICE: OnceLock<Option<Device>> = OnceLock::new();
    let device = DEVICE.get_or_init(|| {
        Device::wgpu_options()
            .graphics_api(WgpuBackend::Vulkan)
            .init()
            .inspect_err(|e| eprintln!("no Vulkan adapter for wgpu: {e}"))
            .ok()
    });
    if device.is_none() {
        eprintln!("skipping wgpu: no adapter");
    }
    device.clone()
}
