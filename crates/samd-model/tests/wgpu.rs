//! The wgpu backend, with our kernels and with the reference ops, must agree with the CPU
//! (flex) backend on a tiny random model.
//!
//! Runs on any Vulkan adapter (see [`common::wgpu_device`]). Without an adapter the tests
//! print why and pass.

mod common;
#[path = "common/scenarios.rs"]
mod scenarios;

use burn::backend::Dispatch;
use burn::tensor::{Device, Tensor, TensorData, read_sync};
use common::wgpu_device;
use samd_model::block_form::{BlockForm, HalfFloat};
use samd_model::block_rows::{BlockRows, QuantKind};
use samd_model::dequant::dequantize;
use samd_model::gguf::GgmlType;
use samd_model::gguf_writer::GgufWriter;
use samd_model::kernel_check::{check_kernels, verify_scenario};
use samd_model::kernels::BlockKernels;
use samd_model::{BlockOps, GgufFile, Llama, LlamaConfig, WeightName};
use scenarios::assert_replays_match_launches;

/// Max abs logit difference allowed between wgpu and CPU. Both are f32; the kernels sum in
/// different orders (tiled matmul, tree reductions), which on O(1) logits of a 2-layer model
/// stays far below this.
const BACKEND_TOLERANCE: f32 = 1e-4;

fn run(model: &Llama) -> (Vec<f32>, Vec<u32>) {
    read_sync(verify_scenario(model)).expect("scenario runs")
}

#[test]
fn wgpu_matches_cpu_on_tiny_random_model() {
    let Some(gpu) = wgpu_device() else { return };
    let config = LlamaConfig::tiny();
    let cpu_model = Llama::random(config.clone(), 5, true, &Device::flex()).expect("cpu model");
    for ops in [BlockOps::Kernels, BlockOps::Reference] {
        let gpu_model = Llama::random(config.clone(), 5, true, &gpu)
            .expect("gpu model")
            .with_block_ops(ops);
        assert_backends_agree(&format!("wgpu ({ops:?})"), &cpu_model, &gpu_model);
    }
}

/// `cpu` and `gpu` run [`verify_scenario`] to logits within [`BACKEND_TOLERANCE`] and the
/// same top-8 ids.
fn assert_backends_agree(what: &str, cpu: &Llama, gpu: &Llama) {
    let (cpu_logits, cpu_ids) = run(cpu);
    let (gpu_logits, gpu_ids) = run(gpu);
    let diff = cpu_logits
        .iter()
        .zip(&gpu_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{what} vs cpu: max abs logit diff {diff:e}");
    assert_eq!(cpu_logits.len(), gpu_logits.len());
    assert!(diff <= BACKEND_TOLERANCE, "{what}: max abs diff {diff}");
    assert_eq!(
        cpu_ids, gpu_ids,
        "{what}: top-8 ids differ between backends"
    );
}

/// The same with the matrices in Q4_1 and the embedding in Q8_0: on wgpu the kernels
/// read the blocks, on the CPU the products read them widened (or, with AVX2, the blocks
/// too), and each weight is the same f32 on both.
#[test]
fn wgpu_reading_blocks_matches_cpu_on_a_quantised_model() {
    let Some(gpu) = wgpu_device() else { return };
    let quantised = |device: &Device| {
        Llama::random_quantized(LlamaConfig::tiny_quantisable(), 3, true, device)
            .expect("quantised model")
    };
    assert_backends_agree(
        "wgpu reading blocks",
        &quantised(&Device::flex()),
        &quantised(&gpu),
    );
}

/// A file that mixes block types within matrices the model holds side by side (attn_v in
/// Q8_0 beside Q4_1 q and k, as some quantisation mixes do) loads on wgpu, its q|k|v
/// widened to f32 and the rest in blocks, and gives the CPU's logits.
#[test]
fn a_file_mixing_block_types_in_a_fused_matrix_loads_on_wgpu() {
    let Some(gpu) = wgpu_device() else { return };
    let c = LlamaConfig::tiny_quantisable();
    let mut w = GgufWriter::new();
    w.llama_config("llama", &c);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    for name in WeightName::all(&c) {
        let dims = name.expected_dims(&c);
        let scale = 1.7 / (dims[0] as f32).sqrt();
        let values: usize = dims.iter().product();
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        let gguf_name = name.gguf_name();
        match name {
            WeightName::Output => {} // tied
            WeightName::OutputNorm | WeightName::AttnNorm(_) | WeightName::FfnNorm(_) => {
                let data: Vec<f32> = (0..values).map(|_| 1.0 + 0.2 * uniform()).collect();
                w.tensor_f32(&gguf_name, &dims, &data);
            }
            WeightName::TokenEmbd | WeightName::AttnV(_) => {
                let data: Vec<f32> = (0..values).map(|_| scale * uniform()).collect();
                w.tensor_q8_0(&gguf_name, &dims, &data);
            }
            _ => {
                let data: Vec<f32> = (0..values).map(|_| scale * uniform()).collect();
                w.tensor_q4_1(&gguf_name, &dims, &data);
            }
        }
    }
    let bytes = w.to_bytes();
    let file = GgufFile::parse(&bytes).expect("a valid file");
    let cpu = Llama::from_gguf(&file, &Device::flex()).expect("loads on the CPU");
    let on_gpu = Llama::from_gguf(&file, &gpu).expect("loads on wgpu");
    assert_backends_agree("wgpu, mixed block types", &cpu, &on_gpu);
}

/// What a browser checks against its binding limit before loading a file
/// (`Llama::largest_gpu_weight_bytes`) is the largest buffer the load then makes on wgpu,
/// whichever form holds it: Q4_1 blocks, 16-bit floats, or f32 where the matrices held
/// side by side differ in type.
#[test]
fn the_largest_buffer_foreseen_is_the_one_loaded() {
    let Some(gpu) = wgpu_device() else { return };
    let c = LlamaConfig::tiny_quantisable();
    // The widest matrix (gate|up, or the embedding) decides; each case makes another
    // form the largest.
    type Writer = for<'w> fn(&'w mut GgufWriter, &str, &[u64], &[f32]) -> &'w mut GgufWriter;
    let (q4_1, f16, f32s): (Writer, Writer, Writer) = (
        GgufWriter::tensor_q4_1,
        GgufWriter::tensor_f16,
        GgufWriter::tensor_f32,
    );
    for (what, embedding, gate, up) in [
        ("all Q4_1", q4_1, q4_1, q4_1),
        ("f32 embedding", f32s, q4_1, q4_1),
        ("F16 gate|up", q4_1, f16, f16),
        ("gate in Q4_1 beside up in F16", q4_1, q4_1, f16),
    ] {
        let mut w = GgufWriter::new();
        w.llama_config("llama", &c);
        for name in WeightName::all(&c) {
            let dims = name.expected_dims(&c);
            let values: Vec<f32> = (0..dims.iter().product::<usize>())
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 16.0)
                .collect();
            let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
            let write = match name {
                WeightName::Output => continue, // tied
                _ if dims.len() == 1 => f32s,
                WeightName::TokenEmbd => embedding,
                WeightName::FfnGate(_) => gate,
                WeightName::FfnUp(_) => up,
                _ => q4_1,
            };
            write(&mut w, &name.gguf_name(), &dims, &values);
        }
        let bytes = w.to_bytes();
        let file = GgufFile::parse(&bytes).expect("a valid file");
        let model = Llama::from_gguf(&file, &gpu).expect("loads on wgpu");
        let foreseen = Llama::largest_gpu_weight_bytes(&file, &c);
        assert_eq!(foreseen, model.largest_weight_bytes() as u64, "{what}");
    }
}

/// The dequantising kernel widens every block form to the f32s the host's dequantiser
/// gives, exactly: each quantised kind, over rows of several blocks with scales of either
/// sign, and 16-bit floats of every exponent, subnormals among them. The blocks' words,
/// some of them NaN patterns as f32s, reach the device unchanged.
#[test]
fn blocks_widen_on_wgpu_to_the_hosts_dequantised_values() {
    let Some(gpu) = wgpu_device() else { return };
    let rows = 5;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    // Each kind, types held in a kind not their own (Q5_0's and IQ4_NL's codes in Q8_0's
    // bytes, Q3_K's in Q8_16's), and the 16-bit floats.
    for (dtype, form) in [
        (GgmlType::Q4_0, BlockForm::Quant(QuantKind::Q4_0)),
        (GgmlType::Q4_1, BlockForm::Quant(QuantKind::Q4_1)),
        (GgmlType::Q8_0, BlockForm::Quant(QuantKind::Q8_0)),
        (GgmlType::Q5_1, BlockForm::Quant(QuantKind::Q5_1)),
        (GgmlType::Q5_0, BlockForm::Quant(QuantKind::Q8_0)),
        (GgmlType::IQ4_NL, BlockForm::Quant(QuantKind::Q8_0)),
        (GgmlType::Q6_K, BlockForm::Quant(QuantKind::Q8_16)),
        (GgmlType::Q3_K, BlockForm::Quant(QuantKind::Q8_16)),
        (GgmlType::F16, BlockForm::Half(HalfFloat::F16)),
        (GgmlType::BF16, BlockForm::Half(HalfFloat::Bf16)),
    ] {
        let (block, block_bytes) = (dtype.block_size() as usize, dtype.type_size() as usize);
        // Three blocks of 32 a row, or a super-block of 256.
        let cols = 96.max(block);
        // Where the f16 scale (and minimum) lie: first, or last in the K-quants; a 16-bit
        // float's block is one.
        let halves = match dtype {
            GgmlType::Q4_1 | GgmlType::Q5_1 => 0..4,
            GgmlType::Q6_K | GgmlType::Q3_K => block_bytes - 2..block_bytes,
            _ => 0..2,
        };
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / block {
            let mut b: Vec<u8> = (0..block_bytes).map(|_| byte()).collect();
            for half in b[halves.clone()].chunks_exact_mut(2) {
                let h = match form {
                    // Any finite value: an exponent field of all ones loses its top bit.
                    BlockForm::Half(half) => {
                        let h = u16::from_le_bytes([byte(), byte()]);
                        if half.is_finite(h) { h } else { h & !0x4000 }
                    }
                    // Scales (and minimums) between 2^-7 and 2^-3 in size, of either sign.
                    BlockForm::Quant(_) => {
                        let h = u16::from(byte()) | (u16::from(byte() % 4 + 8) << 10);
                        h | (u16::from(byte() & 1) << 15)
                    }
                };
                half.copy_from_slice(&h.to_le_bytes());
            }
            bytes.extend(b);
        }
        let host = dequantize(dtype, &bytes, (rows * cols) as u64).expect("host dequantises");
        let held = BlockRows::from_gguf(dtype, &bytes, rows, cols).expect("whole blocks");
        assert_eq!(held.form(), form, "{dtype}");
        let words = held.gpu_words();
        let bits: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
        let row_words = words.len() / rows;
        let tensor = Tensor::<2>::from_data(TensorData::new(bits, [rows, row_words]), &gpu);
        let widened = Tensor::<2>::from_dispatch(<Dispatch as BlockKernels>::dequantize_blocks(
            &tensor.into_dispatch(),
            form,
        ));
        assert_eq!(widened.dims(), [rows, cols]);
        let got = read_sync(widened.into_data_async())
            .expect("read")
            .try_to_vec::<f32>()
            .expect("f32");
        // Equal as floats: Q4_0's d·(q − 8) is −0 for q = 8 and d < 0, where d·q − 8d is
        // +0; for the 16-bit floats, equal as bits.
        let same = got.len() == host.len()
            && got.iter().zip(&host).all(|(a, b)| match form {
                BlockForm::Quant(_) => a == b,
                BlockForm::Half(_) => a.to_bits() == b.to_bits(),
            });
        assert!(
            same,
            "{form:?}: the kernel's weights differ from the host's"
        );
    }
}

/// What the browser tests run on WebGPU: the top-k kernel against a host sort, the
/// sampling kernels against the reference ops, and the block kernels against the
/// reference ops on SmolLM2's head shape.
#[test]
fn wgsl_kernels_agree_with_the_reference_ops() {
    let Some(gpu) = wgpu_device() else { return };
    let check = read_sync(check_kernels(&gpu)).expect("check ran");
    eprintln!("{check}");
    assert!(check.rows > 0);
    assert!(check.passed(), "{check}");
}

/// [`assert_replays_match_launches`] on two f32 models and a quantised one: one f32 model
/// with Qwen3's head norms, whose kernel stores the keys and values at the slots a replay
/// refills, and the quantised one with q/k/v biases (Qwen2's), which its projections read
/// from a buffer of their own.
#[test]
fn replayed_steps_equal_steps_launched_one_by_one() {
    let Some(gpu) = wgpu_device() else { return };
    assert_replays_match_launches(Llama::random(LlamaConfig::tiny(), 9, true, &gpu).expect("f32"));
    let head_normed = LlamaConfig {
        qk_norm: true,
        ..LlamaConfig::tiny()
    };
    assert_replays_match_launches(Llama::random(head_normed, 9, true, &gpu).expect("head-normed"));
    // Its steps gather their embeddings from blocks, by the ids a replay refills.
    let biased = LlamaConfig {
        qkv_bias: true,
        ..LlamaConfig::tiny_quantisable()
    };
    assert_replays_match_launches(
        Llama::random_quantized(biased, 9, true, &gpu).expect("quantised"),
    );
}
