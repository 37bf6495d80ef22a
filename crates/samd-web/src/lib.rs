//! samd in the browser: the decode engine behind a small wasm-bindgen API.
//!
//! `web/worker.js` hosts one [`Engine`] in a dedicated Web Worker, so the page never
//! blocks, and turns its calls into the worker protocol documented there. The engine is
//! pull-based like [`samd_engine::Session`]: the worker awaits [`Engine::start`], then
//! [`Engine::step`] until an event carries `stop`, yielding to its event loop between
//! steps so that a cancel message gets through.
#![deny(missing_docs)]

mod device;
mod error;
mod events;
mod fetch;
mod warm_up;

use std::sync::Arc;

use burn::tensor::Device;
use samd_draft::Drafter;
use samd_draft::corpus::StaticSam;
use samd_engine::{GenerateOptions, Method, ModelTarget, Session, TextStream, check_corpus};
use samd_model::reference::Reference;
use samd_model::{GgufFile, Llama, LlamaConfig, Tokenizer};
use wasm_bindgen::prelude::*;
use web_sys::AbortSignal;
use web_time::Instant;

pub use device::{DeviceInfo, Want};
pub use error::{ErrorKind, WebError};
pub use events::{GenerateRequest, LoadedInfo, ModelInfo, StepView};

/// Positions of the KV cache: prompt and output together. Smaller than SmolLM2's 8192
/// context, to keep the cache (46 KB per position for SmolLM2-135M) modest in a tab.
const CACHE_POSITIONS: usize = 2048;

/// A loaded model, ready to generate.
struct Loaded {
    session: Session<ModelTarget>,
    tokenizer: Tokenizer,
    corpus: Option<Arc<StaticSam>>,
    vocab: u32,
    /// The method of the session's drafter.
    method: Method,
    /// Drafters of the other methods used before, kept for what they learned: the demo
    /// alternates plain and speculative requests, and Token Recycling's table and the
    /// tree budget's rates build up over a session.
    parked: Vec<(Method, Box<dyn Drafter>)>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parked: Vec<Method> = self.parked.iter().map(|(m, _)| *m).collect();
        f.debug_struct("Loaded")
            .field("session", &self.session)
            .field("vocab", &self.vocab)
            .field("method", &self.method)
            .field("parked", &parked)
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// Puts `method`'s drafter in the session: the one it has, a parked one, or a new one.
    fn use_method(&mut self, method: Method) -> Result<(), WebError> {
        if method == self.method {
            return Ok(());
        }
        let next = match self.parked.iter().position(|(m, _)| *m == method) {
            Some(i) => Some(self.parked.swap_remove(i).1),
            None => method.drafter(self.vocab, self.corpus.clone())?,
        };
        if let Some(previous) = self.session.set_drafter(next) {
            self.parked.push((self.method, previous));
        }
        self.method = method;
        Ok(())
    }
}

/// What `checkKernels` found.
#[derive(Debug, serde::Serialize)]
struct KernelReport {
    rows: usize,
    passed: bool,
    message: String,
}

/// What `checkReference` found.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferenceReport {
    /// Largest |logit − reference| over each prompt position's reference top-20, the
    /// prompt as one forward, then a token per forward.
    prompt_pass: f32,
    one_by_one: Option<f32>,
    /// What this backend may show ([`Reference::tolerance`]).
    tolerance: f32,
    greedy_text: String,
    greedy_equal: bool,
    passed: bool,
    message: String,
}

/// A generation in progress.
#[derive(Debug)]
struct Run {
    text: TextStream,
    started: Instant,
}

/// One device, at most one model, one generation at a time.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Engine {
    device: Device,
    info: DeviceInfo,
    loaded: Option<Loaded>,
    run: Option<Run>,
}

#[wasm_bindgen]
impl Engine {
    /// Creates the engine on `backend` (`auto`, `webgpu` or `cpu`).
    pub async fn create(backend: String) -> Result<Engine, JsValue> {
        install_panic_hook();
        let want = Want::parse(&backend)?;
        let (device, info) = device::init(want).await?;
        Ok(Engine {
            device,
            info,
            loaded: None,
            run: None,
        })
    }

    /// What runs the model: `{backend, adapter, fallback, notice}`.
    #[wasm_bindgen(js_name = deviceInfo)]
    pub fn device_info(&self) -> Result<JsValue, JsValue> {
        to_js(&self.info)
    }

    /// Checks this backend's own code against the reference (`samd_model::kernel_check`):
    /// `{rows, passed, message}`. On WebGPU, our hand-written WGSL kernels against burn's
    /// ops and a host sort. On the CPU, the SIMD products over quantised blocks and the
    /// SIMD attention against the scalar code, then that a tree's nodes get the logits
    /// one-node steps give, bit for bit (`kernel_check::check_cpu`). A diagnostic for a
    /// user's device, and what the browser tests run.
    #[wasm_bindgen(js_name = checkKernels)]
    pub async fn check_kernels(&self) -> Result<JsValue, JsValue> {
        let check = if self.info.backend == "webgpu" {
            samd_model::kernel_check::check_kernels(&self.device).await
        } else {
            samd_model::kernel_check::check_cpu(&self.device).await
        }
        .map_err(WebError::from)?;
        to_js(&KernelReport {
            rows: check.rows,
            passed: check.passed(),
            message: check.to_string(),
        })
    }

    /// Holds the loaded model to an independent numpy forward of the default model
    /// ([`samd_model::reference`]): its logits over the prompt, run as one forward and a
    /// token per forward, and its greedy reply. `{promptPass, oneByOne, tolerance,
    /// greedyText, greedyEqual, passed, message}`. The reference ran
    /// SmolLM2-135M-Instruct.Q4_1.gguf; another SmolLM2-135M file differs by its
    /// quantisation, and a model of another shape is refused.
    #[wasm_bindgen(js_name = checkReference)]
    pub async fn check_reference(&self) -> Result<JsValue, JsValue> {
        let loaded = self
            .loaded
            .as_ref()
            .ok_or_else(|| WebError::new(ErrorKind::NoModel, "load a model before checking it"))?;
        let model = loaded.session.target().model();
        if *model.config() != LlamaConfig::smollm2_135m() {
            return Err(WebError::new(
                ErrorKind::Unsupported,
                "the reference is SmolLM2-135M-Instruct's, and this model has another shape",
            )
            .into());
        }
        let reference = Reference::bundled();
        let got = reference
            .compare(model, true)
            .await
            .map_err(WebError::from)?;
        let tolerance = Reference::tolerance(model);
        let greedy_equal = got.greedy_ids == reference.greedy_ids;
        let largest = got.largest();
        let passed = greedy_equal && largest <= tolerance;
        let greedy_text = loaded
            .tokenizer
            .decode(&got.greedy_ids)
            .map_err(WebError::from)?;
        let message = format!(
            "logits within {largest:.1e} of the numpy reference (tolerance {tolerance:.0e}); \
             greedy reply {greedy_text:?}{} (reference model: sha256 {})",
            if greedy_equal {
                ", as the reference's"
            } else {
                ", not the reference's"
            },
            reference.model_sha256
        );
        to_js(&ReferenceReport {
            prompt_pass: got.prompt_pass,
            one_by_one: got.one_by_one,
            tolerance,
            greedy_text,
            greedy_equal,
            passed,
            message,
        })
    }

    /// Loads a GGUF model (and optionally a static corpus) from URLs, from the cache when
    /// it holds them. `on_progress(phase, bytes, total)` is called as it goes. The
    /// previous model stays loaded until the new file is fetched and checked (its config,
    /// tokenizer, corpus and every weight's dims and type), so a bad URL or a file this
    /// engine cannot run loses nothing; it is released only to make room for the new
    /// weights.
    ///
    /// Then, unless `warm_up` is `off`, the model is warmed up (`warm_up::ready`): on
    /// WebGPU a pass of every tree size, reported as the phase `kernels` in passes, not
    /// bytes. `auto` (the default) skips it on a software adapter, `on` does not.
    ///
    /// A corpus built with another tokenizer is refused, unless `corpus_optional`: then
    /// the model loads without it, and the result's `corpusSkipped` says why. The page
    /// asks for that with its default corpus (SmolLM2's), so that another model's file
    /// loads without the corpus field cleared first, as the CLI passes its default over.
    pub async fn load(
        &mut self,
        model_url: String,
        corpus_url: Option<String>,
        on_progress: js_sys::Function,
        signal: Option<AbortSignal>,
        warm_up: Option<String>,
        corpus_optional: Option<bool>,
    ) -> Result<JsValue, JsValue> {
        let started = Instant::now();
        let when = warm_up::When::parse(warm_up.as_deref())?;
        let report = |phase: &str, bytes: u64, total: Option<u64>| {
            let total = total.map_or(JsValue::NULL, |t| JsValue::from_f64(t as f64));
            let _ = on_progress.call3(
                &JsValue::NULL,
                &JsValue::from_str(phase),
                &JsValue::from_f64(bytes as f64),
                &total,
            );
        };
        let mut download_progress = |source: fetch::Source, bytes: u64, total: Option<u64>| {
            let phase = match source {
                fetch::Source::Download => "download",
                fetch::Source::Cache => "cache",
            };
            report(phase, bytes, total);
        };
        let fetched =
            fetch::fetch_cached(&model_url, signal.as_ref(), &mut download_progress).await?;
        check_cancel(signal.as_ref())?;

        let size = fetched.bytes.len() as u64;
        report("parse", size, Some(size));
        let file = GgufFile::parse(&fetched.bytes)
            .map_err(|e| named(&model_url, "is not a valid GGUF file", e.into()))?;
        // Everything about the file that can be checked before the old model goes.
        let config =
            Llama::check_gguf(&file).map_err(|e| named(&model_url, "cannot be run", e.into()))?;
        device::check_fits(&self.info, &file, &config)?;
        report("tokenizer", size, Some(size));
        let tokenizer = Tokenizer::from_gguf(&file)
            .map_err(|e| named(&model_url, "has no usable tokenizer", e.into()))?;
        check_cancel(signal.as_ref())?;

        let mut corpus_skipped = None;
        let corpus = match &corpus_url {
            Some(url) if !url.is_empty() => {
                let fetched = fetch::fetch_cached(url, signal.as_ref(), &mut |_, bytes, total| {
                    report("corpus", bytes, total)
                })
                .await?;
                let corpus = StaticSam::from_bytes(&fetched.bytes)
                    .map_err(|e| named(url, "is not a valid corpus file", e.into()))?;
                match check_corpus(&corpus, tokenizer.vocab_hash()) {
                    Ok(()) => Some(Arc::new(corpus)),
                    Err(_) if corpus_optional == Some(true) => {
                        corpus_skipped = Some(format!(
                            "{url} was built with another model's tokenizer: SAM drafts \
                             from the prompt and the output alone"
                        ));
                        None
                    }
                    Err(e) => return Err(named(url, "does not fit this model", e.into()).into()),
                }
            }
            _ => None,
        };
        check_cancel(signal.as_ref())?;

        report("weights", 0, Some(size));
        // The old model's buffers go first, so that two never share the device.
        self.loaded = None;
        self.run = None;
        let model = Llama::from_gguf(&file, &self.device)
            .map_err(|e| named(&model_url, "has unusable weights", e.into()))?;
        report("weights", size, Some(size));

        let model_info = ModelInfo::new(&file, &config, &model_url);
        let from_cache = fetched.from_cache;
        let vocab = u32::try_from(config.vocab_size)
            .map_err(|_| WebError::new(ErrorKind::Unsupported, "vocabulary beyond u32"))?;
        // The file's bytes go before the cache comes, which reuses their memory: a wasm
        // memory never shrinks, so what is alive at once sets the tab's footprint for good.
        drop(file);
        drop(fetched);
        let capacity = CACHE_POSITIONS.min(config.context_len);
        let target = ModelTarget::new(model, capacity);
        let (session, warmed) =
            warm_up::ready(target, &tokenizer, &self.info, when, |done, total| {
                report("kernels", done as u64, Some(total as u64))
            })
            .await?;
        // The warm-up counts: the page's first run comes after it.
        let info = LoadedInfo {
            model: model_info,
            corpus_tokens: corpus.as_ref().map(|c| c.text().len()),
            corpus_skipped,
            from_cache,
            load_ms: started.elapsed().as_secs_f64() * 1e3,
            warm_up: warmed,
        };
        self.loaded = Some(Loaded {
            session,
            tokenizer,
            corpus,
            vocab,
            method: Method::Ar,
            parked: Vec::new(),
        });
        to_js(&info)
    }

    /// Whether a model is loaded. A failed [`Engine::load`] keeps the model it had, unless
    /// it failed after releasing it, while building the new one on the device (out of
    /// memory, a lost device): the worker asks, so the page knows which.
    #[wasm_bindgen(js_name = hasModel)]
    pub fn has_model(&self) -> bool {
        self.loaded.is_some()
    }

    /// Starts a generation; the returned step event carries the prefill's first token.
    pub async fn start(&mut self, request: JsValue) -> Result<JsValue, JsValue> {
        self.run = None;
        let request: GenerateRequest = serde_wasm_bindgen::from_value(request)
            .map_err(|e| WebError::new(ErrorKind::Options, format!("bad request: {e}")))?;
        let loaded = self
            .loaded
            .as_mut()
            .ok_or_else(|| WebError::new(ErrorKind::NoModel, "load a model before generating"))?;
        let method: Method = request.method.parse().map_err(WebError::from)?;
        let sampling = request.sampling()?;
        // A blank user turn would still make a prompt (the template's), and an answer to
        // nothing; the CLI refuses it too.
        if !request.raw && request.prompt.trim().is_empty() {
            return Err(WebError::from(samd_engine::Error::EmptyPrompt).into());
        }
        let ids = if request.raw {
            loaded.tokenizer.encode_prompt(&request.prompt)
        } else {
            loaded.tokenizer.encode_chat(&request.prompt)
        }
        .map_err(WebError::from)?;
        loaded.use_method(method)?;
        let stop_ids = loaded.tokenizer.stop_ids();
        let options = GenerateOptions {
            max_new_tokens: request.max_tokens,
            stop_ids,
            sampling,
        };
        let started = Instant::now();
        let event = loaded
            .session
            .start(&ids, options)
            .await
            .map_err(WebError::from)?;
        self.run = Some(Run {
            text: TextStream::with_stops(request.stop),
            started,
        });
        self.view(&event)
    }

    /// Runs one verification step.
    pub async fn step(&mut self) -> Result<JsValue, JsValue> {
        if self.run.is_none() {
            return Err(WebError::new(ErrorKind::Options, "no generation is running").into());
        }
        let loaded = self
            .loaded
            .as_mut()
            .ok_or_else(|| WebError::new(ErrorKind::NoModel, "load a model before generating"))?;
        let event = loaded.session.step().await;
        let event = event.map_err(|e| {
            self.run = None;
            WebError::from(e)
        })?;
        self.view(&event)
    }

    /// Ends the current generation and returns its final event (`stop: "cancelled"`), or
    /// `null` when none was running.
    pub fn cancel(&mut self) -> Result<JsValue, JsValue> {
        let Some(loaded) = self.loaded.as_mut() else {
            return Ok(JsValue::NULL);
        };
        let Some(mut run) = self.run.take() else {
            return Ok(JsValue::NULL);
        };
        loaded.session.cancel();
        let view = StepView::cancelled(&mut run, loaded)?;
        to_js(&view)
    }
}

impl Engine {
    /// The event as the page sees it; on the last step, also the full text and stats.
    fn view(&mut self, event: &samd_engine::StepEvent) -> Result<JsValue, JsValue> {
        let (Some(loaded), Some(run)) = (self.loaded.as_mut(), self.run.as_mut()) else {
            return Err(WebError::new(ErrorKind::Internal, "no generation is running").into());
        };
        let view = StepView::new(event, run, loaded)?;
        if view.stop.is_some() {
            // Ends the engine's run too when a stop string, not the engine, stopped it.
            loaded.session.cancel();
            self.run = None;
        }
        to_js(&view)
    }
}

/// Deletes every cached model and corpus file.
#[wasm_bindgen(js_name = clearCache)]
pub async fn clear_cache() -> Result<(), JsValue> {
    Ok(fetch::clear_cache().await?)
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    serde_wasm_bindgen::to_value(value)
        .map_err(|e| WebError::new(ErrorKind::Internal, e.to_string()).into())
}

fn check_cancel(signal: Option<&AbortSignal>) -> Result<(), WebError> {
    if signal.is_some_and(|s| s.aborted()) {
        return Err(WebError::new(ErrorKind::Cancelled, "loading was cancelled"));
    }
    Ok(())
}

/// Prefixes an error's message with the file it is about.
fn named(url: &str, what: &str, e: WebError) -> WebError {
    WebError::new(e.kind, format!("{url} {what}: {}", e.message))
}

/// Runs the module's static constructors once, when the page instantiates it.
///
/// Dependencies register plugins from constructors (cubecl's IR dialects, through
/// `inventory`). A module that never calls `__wasm_call_ctors` itself is linked as a
/// "command", and the linker then runs every constructor again at the top of every
/// export (919 of them, wasm-bindgen's own included): each promise callback, and each
/// field the step's event sets on its JS object. Calling it here, from wasm-bindgen's
/// start function, makes the linker leave the exports alone.
#[cfg(target_family = "wasm")]
#[wasm_bindgen(start)]
#[allow(unsafe_code)]
fn run_constructors_once() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the start function runs once, right after instantiation and before any
    // other export, which is when the linker would have run the constructors.
    unsafe { __wasm_call_ctors() }
}

/// Sends panics to the console before the wasm instance traps, so that the worker can
/// report what broke instead of a bare "unreachable".
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("samd panicked: {info}").into());
    }));
}
