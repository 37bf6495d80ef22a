//! Readying a freshly loaded model, so that the first generation a user sees pays no
//! one-time cost that later ones do not. The race page runs plain decoding first, so
//! such a cost lands on one lane and skews the comparison.

use samd_engine::{GenerateOptions, Method, ModelTarget, Session};
use samd_model::Tokenizer;
use serde::Serialize;
use web_time::Instant;

use crate::device::DeviceInfo;
use crate::error::{ErrorKind, WebError};

/// Whether a load warms the model up: a load request's `warmUp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// On the CPU and on a hardware WebGPU adapter.
    Auto,
    /// On any device, a software WebGPU adapter too.
    Always,
    /// Never: the load is shorter, and the first generation pays.
    Never,
}

impl When {
    /// Parses `auto` (or nothing), `on` or `off`.
    pub fn parse(s: Option<&str>) -> Result<Self, WebError> {
        match s {
            None | Some("auto") => Ok(When::Auto),
            Some("on") => Ok(When::Always),
            Some("off") => Ok(When::Never),
            Some(other) => Err(WebError::new(
                ErrorKind::Options,
                format!("unknown warm-up {other:?} (expected auto, on or off)"),
            )),
        }
    }

    /// Whether to warm up on `device`. Not by default on a software WebGPU adapter: there
    /// a step of many nodes takes seconds, and warming every tree size of a two-layer
    /// model took minutes on SwiftShader, more than the races it would even out.
    fn applies(self, device: &DeviceInfo) -> bool {
        match self {
            When::Auto => !device.software,
            When::Always => true,
            When::Never => false,
        }
    }
}

/// What a warm-up ran, for the page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmUpInfo {
    /// Forward passes run.
    pub passes: usize,
    /// Step graphs captured (WebGPU).
    pub graphs: usize,
    /// Its wall time.
    pub ms: f64,
}

/// The session over `target`, warmed up on `device` if `when` says so, and what the
/// warm-up ran. `progress(done, total)` follows a WebGPU warm-up's passes, whose timings
/// also give the tree budget each tree size's cost ([`Session::warm_up`]).
pub async fn ready(
    target: ModelTarget,
    tokenizer: &Tokenizer,
    device: &DeviceInfo,
    when: When,
    progress: impl FnMut(usize, usize),
) -> Result<(Session<ModelTarget>, Option<WarmUpInfo>), WebError> {
    let mut session = Session::new(target, None);
    if !when.applies(device) {
        return Ok((session, None));
    }
    let started = Instant::now();
    let (passes, graphs) = if device.backend == "webgpu" {
        let done = session.warm_up(&Method::ALL, progress).await?;
        (done.passes, done.graphs)
    } else {
        (warm_up_cpu(&mut session, tokenizer).await, 0)
    };
    let info = WarmUpInfo {
        passes,
        graphs,
        ms: started.elapsed().as_secs_f64() * 1e3,
    };
    Ok((session, Some(info)))
}

/// Runs a short plain generation (16 tokens), thrown away, so that the first one a user
/// sees does not pay V8's one-time costs: after a load the first run decoded 3–10% slower
/// than a second, its prefill 1.7–1.9× as long (`profile-cpu.mjs --methods ar,ar,ar`);
/// with 4 tokens of warm-up the prefill evened out but the decoding did not. It adds
/// about 0.2 s to a load. Errors are left to the first real generation, which meets them
/// too. Returns the passes it ran.
async fn warm_up_cpu(session: &mut Session<ModelTarget>, tokenizer: &Tokenizer) -> usize {
    let Ok(ids) = tokenizer.encode_chat("Say hello.") else {
        return 0;
    };
    let options = GenerateOptions {
        max_new_tokens: 16,
        stop_ids: Vec::new(),
        sampling: None,
    };
    session.generate(&ids, options).await.ok();
    session.cancel();
    session.stats().readbacks
}
