//! Loading a model in timed stages: device, file read, GGUF parse, config, tokenizer,
//! weights.
//!
//! The stages are separate on purpose. `generate` checks the prompt against the tokenizer
//! and the context length before it pays for the weights (the slowest stage: the weights
//! are dequantised, save those a GPU reads in their blocks, and uploaded), and
//! `inspect-model` reports each stage's time.
//! Every error names the model file, since "truncated at offset N" means little without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;
use samd_draft::corpus::StaticSam;
use samd_engine::check_corpus;
use samd_model::{GgufFile, Llama, LlamaConfig, MatrixForm, Tokenizer};

use crate::args::{CorpusArgs, DEFAULT_CORPUS, DeviceKind, ModelArgs};

/// Wall time of each load stage, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimings {
    /// Creating the device (wgpu: adapter and queue; CPU: nothing).
    pub device_ms: f64,
    /// Reading the file into memory.
    pub read_ms: f64,
    /// Parsing and validating the GGUF header and tensor table.
    pub parse_ms: f64,
    /// Building the BPE tokenizer from the GGUF metadata.
    pub tokenizer_ms: f64,
    /// Dequantising the weights read as f32 and uploading every weight to the device.
    pub weights_ms: f64,
}

impl LoadTimings {
    /// The sum of the stages.
    pub fn total_ms(&self) -> f64 {
        self.device_ms + self.read_ms + self.parse_ms + self.tokenizer_ms + self.weights_ms
    }

    /// The stages as a JSON object, for `--json`.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "device_ms": self.device_ms,
            "read_ms": self.read_ms,
            "parse_ms": self.parse_ms,
            "tokenizer_ms": self.tokenizer_ms,
            "weights_ms": self.weights_ms,
            "load_ms": self.total_ms(),
        })
    }
}

/// Runs `f` and returns its result with its wall time in milliseconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64() * 1e3)
}

/// Creates the device.
///
/// wgpu is pinned to Vulkan in code: cubecl ignores `WGPU_BACKEND`, and Vulkan is what
/// both a real GPU and Mesa's lavapipe (the GPU-less fallback) offer on Linux. The adapter
/// itself can still be chosen with `CUBECL_WGPU_DEFAULT_DEVICE`.
pub fn init_device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        DeviceKind::Wgpu => Device::wgpu_options()
            .graphics_api(WgpuBackend::Vulkan)
            .init()
            .map_err(|e| {
                anyhow!(
                    "no Vulkan adapter for wgpu ({e}); without a GPU install Mesa's lavapipe \
                     (apt-get install mesa-vulkan-drivers libvulkan1) or use --device cpu"
                )
            }),
    }
}

/// A model file read into memory. The GGUF view borrows from it, so it outlives every
/// stage that reads tensors.
#[derive(Debug)]
pub struct ModelBytes {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl ModelBytes {
    /// Reads the whole file: the weights are dequantised from it anyway, and a plain read
    /// needs no `unsafe` mmap.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read model file {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            bytes,
        })
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parses and validates the GGUF header and tensor table (tensor data is not touched).
    pub fn parse(&self) -> Result<GgufFile<'_>> {
        GgufFile::parse(&self.bytes)
            .with_context(|| format!("{} is not a valid GGUF file", self.path.display()))
    }

    /// The Llama config, or an error naming the architecture the file declares.
    pub fn config(&self, file: &GgufFile<'_>) -> Result<LlamaConfig> {
        LlamaConfig::from_gguf(file)
            .with_context(|| format!("{} cannot be run", self.path.display()))
    }

    /// The tokenizer stored in the file's metadata.
    pub fn tokenizer(&self, file: &GgufFile<'_>) -> Result<Tokenizer> {
        Tokenizer::from_gguf(file)
            .with_context(|| format!("{} has no usable tokenizer", self.path.display()))
    }

    /// Uploads the weights to `device`, to run as `args` says.
    pub fn weights(&self, file: &GgufFile<'_>, device: &Device, args: &ModelArgs) -> Result<Llama> {
        let form = if args.f32_weights {
            MatrixForm::F32
        } else {
            MatrixForm::default()
        };
        let mut model = Llama::from_gguf_with(file, device, form)
            .with_context(|| format!("cannot load the weights of {}", self.path.display()))?;
        model.set_step_graphs(!args.no_graphs);
        Ok(model)
    }
}

/// The static corpus `args` asks for, checked against the model's tokenizer: the given
/// file, else the default one when it exists and fits the model, else none.
pub fn load_corpus(args: &CorpusArgs, tokenizer: &Tokenizer) -> Result<Option<Arc<StaticSam>>> {
    load_corpus_or(args, tokenizer, Path::new(DEFAULT_CORPUS))
}

/// [`load_corpus`] with `default` as the default corpus. A corpus given by name that was
/// built with another tokenizer is an error; the default one is passed over, with a note,
/// so that another model's file runs without `--no-corpus` (SmolLM2's corpus is the
/// default, and its ids mean nothing to another vocab).
fn load_corpus_or(
    args: &CorpusArgs,
    tokenizer: &Tokenizer,
    default: &Path,
) -> Result<Option<Arc<StaticSam>>> {
    if args.no_corpus {
        return Ok(None);
    }
    let (path, named) = match &args.corpus {
        Some(path) => (path.as_path(), true),
        None if default.exists() => (default, false),
        None => return Ok(None),
    };
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read corpus {}", path.display()))?;
    let corpus = StaticSam::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid corpus file", path.display()))?;
    if let Err(e) = check_corpus(&corpus, tokenizer.vocab_hash()) {
        if named {
            return Err(e).with_context(|| format!("{} does not fit this model", path.display()));
        }
        eprintln!(
            "note: the default static corpus {} was built with another tokenizer than this \
             model's; SAM drafts from the prompt and the output alone (--corpus names another)",
            path.display()
        );
        return Ok(None);
    }
    Ok(Some(Arc::new(corpus)))
}

/// The model and its tokenizer, on the device `args` names: for subcommands that need
/// nothing else from the file.
pub fn load_model(args: &ModelArgs) -> Result<(Llama, Tokenizer)> {
    let model_bytes = ModelBytes::read(&args.model)?;
    let file = model_bytes.parse()?;
    let tokenizer = model_bytes.tokenizer(&file)?;
    let device = init_device(args.device)?;
    let model = model_bytes.weights(&file, &device, args)?;
    Ok((model, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use samd_model::gguf::{GgufFile, Value, keys};
    use samd_model::gguf_writer::GgufWriter;

    /// A byte-level tokenizer of 256 byte symbols: not SmolLM2's.
    fn other_tokenizer() -> Tokenizer {
        let tokens: Vec<String> = (0u32..256)
            .map(|b| char::from_u32(0x100 + b).expect("a char").to_string())
            .collect();
        let mut w = GgufWriter::new();
        w.metadata(keys::TOKENIZER_MODEL, Value::String("gpt2".into()))
            .metadata(keys::TOKENIZER_PRE, Value::String("gpt2".into()))
            .metadata_str_array(keys::TOKENIZER_TOKENS, &tokens)
            .metadata_str_array(keys::TOKENIZER_MERGES, &[] as &[&str])
            .metadata(keys::TOKENIZER_EOS_ID, Value::U32(0));
        let bytes = w.to_bytes();
        Tokenizer::from_gguf(&GgufFile::parse(&bytes).expect("parse")).expect("tokenizer")
    }

    /// The default corpus (SmolLM2's) is passed over for another vocab; the same file named
    /// with `--corpus` is refused, naming it.
    #[test]
    fn a_default_corpus_of_another_tokenizer_is_passed_over_and_a_named_one_refused() {
        let default =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/corpus/default.samdcorp");
        assert!(default.exists(), "the committed corpus is missing");
        let tokenizer = other_tokenizer();
        let implicit = CorpusArgs {
            corpus: None,
            no_corpus: false,
        };
        assert!(
            load_corpus_or(&implicit, &tokenizer, &default)
                .expect("passed over")
                .is_none()
        );
        let named = CorpusArgs {
            corpus: Some(default.clone()),
            no_corpus: false,
        };
        let err = load_corpus_or(&named, &tokenizer, &default).expect_err("refused");
        let err = format!("{err:#}");
        assert!(
            err.contains("default.samdcorp does not fit this model"),
            "{err}"
        );
        assert!(err.contains("another tokenizer"), "{err}");
    }
}
