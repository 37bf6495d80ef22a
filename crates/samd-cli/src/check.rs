//! `samd check-kernels`: tree steps against plain decoding on this machine, checked.
//!
//! On wgpu it runs our WGSL kernels. The tests run the same check on lavapipe and the
//! browser tests under Chrome's WGSL compiler; a real GPU compiles the kernels with its
//! own driver, which may add up a kernel's products in another order (fusing
//! multiply-adds in one variant and not in another, say). Run there, this says whether
//! tree steps still give plain decoding's logits bit for bit, which speculative
//! decoding's exact output rests on. On the CPU it checks the same of the CPU's
//! products and attention, as this CPU runs them (AVX2 or not).

use anyhow::{Result, bail};
use burn::tensor::read_sync;
use samd_model::kernel_check::{check_cpu, check_kernels};

use crate::args::{CheckArgs, DeviceKind};
use crate::load::init_device;

/// Runs the subcommand: prints what the check found, and fails on a disagreement.
pub fn run(args: &CheckArgs) -> Result<()> {
    let device = init_device(args.device)?;
    let started = std::time::Instant::now();
    let (what, check) = match args.device {
        DeviceKind::Wgpu => ("WGSL kernels", read_sync(check_kernels(&device))?),
        DeviceKind::Cpu => (
            "CPU products, attention and tree steps",
            read_sync(check_cpu(&device))?,
        ),
    };
    println!("{what}: {check} ({:.1} s)", started.elapsed().as_secs_f64());
    if !check.passed() {
        bail!("{what} disagree on this device");
    }
    Ok(())
}
