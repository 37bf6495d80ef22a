//! `samd check-kernels`: tree steps against plain decoding on this machine, checked; and
//! `samd check-reference`: the default model (or any, with a `--fixture` made for it)
//! against an independent numpy forward.
//!
//! On wgpu it runs our WGSL kernels. The tests run the same check on lavapipe and the
//! browser tests under Chrome's WGSL compiler; a real GPU compiles the kernels with its
//! own driver, which may add up a kernel's products in another order (fusing
//! multiply-adds in one variant and not in another, say). Run there, this says whether
//! tree steps still give plain decoding's logits bit for bit, which speculative
//! decoding's exact output rests on. On the CPU it checks the same of the CPU's
//! products and attention, as this CPU runs them (AVX2 or not).

use anyhow::{Context, Result, bail};
use burn::tensor::read_sync;
use samd_model::kernel_check::{check_cpu, check_kernels};
use samd_model::reference::Reference;
use sha2::{Digest, Sha256};

use crate::args::{CheckArgs, DeviceKind, ReferenceArgs};
use crate::load::{ModelBytes, init_device};

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

/// Runs `check-reference`: the fixture's prompt as one forward and a token per forward,
/// then greedily, on the device `args` names ([`Reference::compare`]). Where the kernel
/// check holds fast code to slow code that shares its arithmetic, this holds the whole
/// model to numbers made outside this code. On lavapipe each forward takes seconds.
pub fn reference(args: &ReferenceArgs) -> Result<()> {
    let reference = match &args.fixture {
        None => Reference::bundled(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Reference::parse(&text).with_context(|| format!("{} is not usable", path.display()))?
        }
    };
    let args = &args.model;
    let model_bytes = ModelBytes::read(&args.model)?;
    let sha256 = format!("{:x}", Sha256::digest(model_bytes.bytes()));
    if sha256 != reference.model_sha256 {
        bail!(
            "{} is not the file the reference ran (sha256 {sha256}, the reference's {}): \
             other files' logits differ by their quantisation",
            model_bytes.path().display(),
            reference.model_sha256
        );
    }
    let file = model_bytes.parse()?;
    let tokenizer = model_bytes.tokenizer(&file)?;
    let device = init_device(args.device)?;
    let model = model_bytes.weights(&file, &device, args)?;
    let started = std::time::Instant::now();
    let got = read_sync(reference.compare(&model, true))?;
    let tolerance = Reference::tolerance(&model);
    let reply = tokenizer.decode(&got.greedy_ids)?;
    let one_by_one = got.one_by_one.expect("invariant: asked for above");
    println!(
        "logits against the numpy reference, largest difference over each position's top 20: \
         {:.1e} as one forward, {one_by_one:.1e} a token at a time (tolerance {tolerance:.0e}); \
         greedy reply {reply:?} ({:.1} s)",
        got.prompt_pass,
        started.elapsed().as_secs_f64()
    );
    if got.largest() > tolerance {
        bail!("the logits on this device are further from the reference than {tolerance:.0e}");
    }
    if got.greedy_ids != reference.greedy_ids {
        bail!(
            "the greedy reply differs from the reference's {:?}",
            reference.greedy_text
        );
    }
    Ok(())
}
