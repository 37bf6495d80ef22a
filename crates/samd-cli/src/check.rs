//! `samd check-kernels`: our WGSL kernels on this machine's GPU, checked.
//!
//! The tests run the same check on lavapipe and the browser tests under Chrome's WGSL
//! compiler; a real GPU compiles the kernels with its own driver, which may add up a
//! kernel's products in another order (fusing multiply-adds in one variant and not in
//! another, say). Run there, this says whether tree steps still give plain decoding's
//! logits bit for bit, which speculative decoding's exact output rests on.

use anyhow::{Result, bail};
use burn::tensor::read_sync;
use samd_model::kernel_check::check_kernels;

use crate::args::DeviceKind;
use crate::load::init_device;

/// Runs the subcommand: prints what the check found, and fails if a kernel disagreed.
pub fn run() -> Result<()> {
    let device = init_device(DeviceKind::Wgpu)?;
    let started = std::time::Instant::now();
    let check = read_sync(check_kernels(&device))?;
    println!("{check} ({:.1} s)", started.elapsed().as_secs_f64());
    if !check.passed() {
        bail!("the WGSL kernels disagree on this device");
    }
    Ok(())
}
