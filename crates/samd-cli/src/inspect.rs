//! `samd inspect-model`: what a GGUF file holds and how long each load stage takes.
//!
//! It prints what it can before it fails: a file with an unsupported architecture still
//! shows its architecture and tensor types, which is exactly what one needs to know to see
//! why it is refused.

use std::collections::BTreeMap;

use anyhow::Result;
use samd_model::block_form::HalfFloat;
use samd_model::block_rows::QuantKind;
use samd_model::dequant;
use samd_model::gguf::{GgmlType, keys};

use crate::args::InspectArgs;
use crate::load::{LoadTimings, ModelBytes, init_device, timed};

/// Runs the subcommand.
pub fn run(args: &InspectArgs) -> Result<()> {
    let mut timings = LoadTimings::default();
    let (model, ms) = timed(|| ModelBytes::read(&args.model.model));
    let model = model?;
    timings.read_ms = ms;
    let (file, ms) = timed(|| model.parse());
    let file = file?;
    timings.parse_ms = ms;

    println!("file:          {}", model.path().display());
    println!(
        "size:          {} bytes (GGUF v{}, alignment {}, data at {})",
        model.len_bytes(),
        file.version(),
        file.alignment(),
        file.data_offset()
    );
    if let Some(name) = file.metadata(keys::GENERAL_NAME).and_then(|v| v.as_str()) {
        println!("name:          {name}");
    }
    let arch = file.architecture().unwrap_or("(none)");
    println!("architecture:  {arch}");

    // dtype -> (tensor count, elements, bytes)
    let mut by_type: BTreeMap<&str, (GgmlType, usize, u64, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let entry = by_type.entry(t.dtype.name()).or_insert((t.dtype, 0, 0, 0));
        entry.1 += 1;
        entry.2 += t.n_elements();
        entry.3 += t.n_bytes();
    }
    let n_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    println!(
        "tensors:       {} ({:.1} M parameters)",
        file.tensors().len(),
        n_params as f64 / 1e6
    );
    for (name, (dtype, count, elements, bytes)) in &by_type {
        println!(
            "  {name:<6} {count:>4} tensors {:>9.1} M values {:>8.2} MiB  {}",
            *elements as f64 / 1e6,
            *bytes as f64 / (1024.0 * 1024.0),
            read_as(*dtype)
        );
    }

    let config = model.config(&file)?;
    let claimed_context = file
        .get_u32(&format!(
            "{arch}.{}",
            samd_model::config::keys::CONTEXT_LENGTH
        ))
        .ok()
        .and_then(|c| usize::try_from(c).ok())
        .filter(|&c| c > config.context_len);
    let context = match claimed_context {
        Some(c) => format!(
            "{} (trained for {c}; served up to this)",
            config.context_len
        ),
        None => config.context_len.to_string(),
    };
    println!(
        "config:        {} layers, d_model {}, d_ffn {}, {} query / {} KV heads of {}, \
         vocab {}, context {}, rms_eps {:e}, rope_theta {}",
        config.n_layers,
        config.d_model,
        config.d_ffn,
        config.n_heads,
        config.n_kv_heads,
        config.head_dim,
        config.vocab_size,
        context,
        config.rms_eps,
        config.rope_theta
    );
    let rope_pairs = match config.rope_style {
        samd_model::RopeStyle::Interleaved => "adjacent (as stored)",
        samd_model::RopeStyle::Neox => "halves (NEOX; q/k rows reordered at load)",
    };
    let yes_no = |on: bool| if on { "yes" } else { "no" };
    println!(
        "attention:     q/k/v biases {}, query/key head norms {}, RoPE pairs {rope_pairs}",
        yes_no(config.qkv_bias),
        yes_no(config.qk_norm)
    );
    if !config.rope_freq_factors.is_empty() {
        let (low, high) = config
            .rope_freq_factors
            .iter()
            .fold((f32::INFINITY, 0.0f32), |(lo, hi), &f| {
                (lo.min(f), hi.max(f))
            });
        println!(
            "rope factors:  {} pairs' frequencies divided by {low} to {high} (rope_freqs.weight)",
            config.rope_freq_factors.len()
        );
    }

    let (tokenizer, ms) = timed(|| model.tokenizer(&file));
    let tokenizer = tokenizer?;
    timings.tokenizer_ms = ms;
    let end_of_turn = tokenizer
        .end_of_turn_id()
        .map_or_else(|| "none".to_owned(), |id| id.to_string());
    println!(
        "vocab:         {} tokens (eos {}, end of turn {end_of_turn}), {}",
        tokenizer.vocab_size(),
        tokenizer.eos_id(),
        tokenizer.kind()
    );

    let (device, ms) = timed(|| init_device(args.model.device));
    let device = device?;
    timings.device_ms = ms;
    let (weights, ms) = timed(|| model.weights(&file, &device, &args.model));
    let weights = weights?;
    timings.weights_ms = ms;
    let mib = |bytes: usize| bytes as f64 / f64::from(1 << 20);
    // The largest buffer is what a device's binding limit must allow (WebGPU's
    // `maxStorageBufferBindingSize`).
    println!(
        "weights:       {:.1} MiB as held on {}, the largest buffer {:.1} MiB",
        mib(weights.weight_bytes()),
        args.model.device.name(),
        mib(weights.largest_weight_bytes())
    );
    println!(
        "load ({}):    read {:.0} ms, parse {:.0} ms, tokenizer {:.0} ms, device {:.0} ms, \
         dequantise+upload {:.0} ms, total {:.0} ms",
        args.model.device.name(),
        timings.read_ms,
        timings.parse_ms,
        timings.tokenizer_ms,
        timings.device_ms,
        timings.weights_ms,
        timings.total_ms()
    );
    Ok(())
}

/// How samd holds a type's matrices: the block kernels read Q8_0, Q4_0, Q4_1 and Q5_1
/// blocks, and Q8_16's (Q8_0's codes with a scale per 16), and hold some other types in
/// them exactly; they read 16-bit floats as they are too. The rest are widened to f32
/// at load.
fn read_as(dtype: GgmlType) -> String {
    if HalfFloat::of(dtype).is_some() {
        return "matrices read as they are".into();
    }
    match QuantKind::of(dtype) {
        Some(QuantKind::Q8_16) => "matrices read as blocks of 8-bit codes, a scale per 16".into(),
        Some(kind) if kind.name().eq_ignore_ascii_case(dtype.name()) => {
            "matrices read as its blocks".into()
        }
        Some(kind) => format!("matrices read as {} blocks", kind.name()),
        None if dtype == GgmlType::F32 => "read as they are".into(),
        None if dequant::supports(dtype) => "widened to f32".into(),
        None => "unsupported".into(),
    }
}
