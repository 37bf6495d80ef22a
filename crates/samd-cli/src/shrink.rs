//! `samd shrink-model`: a copy of a model with only its first layers.
//!
//! The browser tests run on a software WebGPU adapter, where the full SmolLM2-135M takes
//! seconds per token; its first two layers, with the real tokenizer and head, run the
//! same code paths in a fraction of that.

use anyhow::{Context, Result};
use samd_model::gguf_writer::keep_first_layers;

use crate::args::ShrinkArgs;
use crate::load::ModelBytes;

/// Runs the subcommand.
pub fn run(args: &ShrinkArgs) -> Result<()> {
    let model = ModelBytes::read(&args.model)?;
    let file = model.parse()?;
    let bytes = keep_first_layers(&file, args.layers)
        .with_context(|| format!("cannot shrink {}", args.model.display()))?;
    std::fs::write(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({:.1} MB, first {} layers of {})",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        args.layers,
        args.model.display()
    );
    Ok(())
}
