//! Choosing the device: WebGPU when the browser has it, burn's CPU backend otherwise, and
//! a plain notice saying which and why.

use burn::tensor::Device;
use serde::Serialize;

use crate::error::{ErrorKind, WebError};

/// Which backend the page asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// WebGPU on a GPU if the browser has one, else the CPU with a notice.
    Auto,
    /// WebGPU or an error.
    WebGpu,
    /// The CPU.
    Cpu,
}

impl Want {
    /// Parses `auto`, `webgpu` or `cpu`.
    pub fn parse(s: &str) -> Result<Self, WebError> {
        match s {
            "auto" => Ok(Want::Auto),
            "webgpu" => Ok(Want::WebGpu),
            "cpu" => Ok(Want::Cpu),
            _ => Err(WebError::new(
                ErrorKind::Options,
                format!("unknown backend {s:?} (expected auto, webgpu or cpu)"),
            )),
        }
    }
}

/// What runs the model, as shown to the user.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// `webgpu` or `cpu`.
    pub backend: &'static str,
    /// The adapter's name (or the CPU).
    pub adapter: String,
    /// WebGPU was wanted but the CPU is used.
    pub fallback: bool,
    /// Why, when it fell back.
    pub notice: Option<String>,
    /// The largest buffer a shader may bind, in bytes (WebGPU only).
    #[serde(skip)]
    pub max_binding: Option<u64>,
    /// The WebGPU adapter is a CPU implementation (the browser's fallback adapter, such
    /// as Chrome's SwiftShader), where a step takes seconds.
    pub software: bool,
}

/// The device, and what to tell the user about it.
pub async fn init(want: Want) -> Result<(Device, DeviceInfo), WebError> {
    if want == Want::Cpu {
        return Ok((Device::flex(), cpu_info(false, None)));
    }
    if want == Want::Auto
        && let Some(software) = software_adapter().await
    {
        // Chrome's SwiftShader took about 13 s a token for SmolLM2-135M on the dev
        // machine, where the CPU backend decodes some 90 tokens a second.
        let named = match software.name.is_empty() {
            true => String::new(),
            false => format!(" ({})", software.name),
        };
        let notice = format!(
            "This browser's only WebGPU adapter{named} is a software one, a CPU \
             implementation that runs this model far slower than the CPU backend: \
             running on the CPU. Ask for the webgpu backend to use the adapter anyway."
        );
        return Ok((Device::flex(), cpu_info(true, Some(notice))));
    }
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let software = is_software(&info);
            let adapter = adapter_name(&info);
            let limits = setup.device.limits();
            let max_binding = limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size);
            Ok((
                device,
                DeviceInfo {
                    backend: "webgpu",
                    adapter,
                    fallback: false,
                    notice: None,
                    max_binding: Some(max_binding),
                    software,
                },
            ))
        }
        Err(e) if want == Want::Auto => {
            web_sys::console::warn_1(&format!("samd: no WebGPU device: {e}").into());
            // A race on the CPU shows speculation near 1x, so the notice says why.
            let notice = "No WebGPU adapter in this browser: running on the CPU, which is \
                          much slower, and where speculation gains little, since checking a \
                          guessed token costs most of a step there (on a GPU, next to \
                          nothing). Details in the console.";
            Ok((Device::flex(), cpu_info(true, Some(notice.into()))))
        }
        Err(e) => Err(WebError::new(
            ErrorKind::Unsupported,
            format!("WebGPU is not available: {e}"),
        )),
    }
}

/// The adapter the wgpu runtime would get, if it is a software one; `None` for a GPU, or
/// no adapter at all. It asks as the runtime does (`cubecl-wgpu`'s `request_adapter`:
/// high performance, no forced fallback), without making a device: the runtime makes
/// its own, once, and cannot hand it back.
async fn software_adapter() -> Option<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .ok()?;
    let info = adapter.get_info();
    is_software(&info).then_some(info)
}

/// Whether `info` describes a CPU implementation of the GPU API (the browser's fallback
/// adapter, such as Chrome's SwiftShader; lavapipe natively).
fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

/// The adapter's name, or what kind it is where the browser keeps the name to itself,
/// for privacy.
fn adapter_name(info: &wgpu::AdapterInfo) -> String {
    match (info.name.is_empty(), is_software(info)) {
        (false, _) => info.name.clone(),
        (true, true) => "software adapter (a CPU implementation)".into(),
        (true, false) => "GPU adapter".into(),
    }
}

fn cpu_info(fallback: bool, notice: Option<String>) -> DeviceInfo {
    DeviceInfo {
        backend: "cpu",
        adapter: "CPU (burn flex, one thread)".into(),
        fallback,
        notice,
        max_binding: None,
        software: false,
    }
}

/// Checks that every weight, as the device will hold it (in the file's blocks, as 16-bit
/// floats, or as f32), fits one buffer binding; otherwise the upload would fail deep
/// inside the GPU runtime instead of with a message.
pub fn check_fits(
    info: &DeviceInfo,
    file: &samd_model::GgufFile<'_>,
    config: &samd_model::LlamaConfig,
) -> Result<(), WebError> {
    let Some(max) = info.max_binding else {
        return Ok(());
    };
    let largest = samd_model::Llama::largest_gpu_weight_bytes(file, config);
    if largest > max {
        return Err(WebError::new(
            ErrorKind::TooBig,
            format!(
                "the model is too big for this device: its largest weight needs a {:.0} MB \
                 buffer, and the adapter allows {:.0} MB",
                largest as f64 / 1e6,
                max as f64 / 1e6
            ),
        ));
    }
    Ok(())
}
