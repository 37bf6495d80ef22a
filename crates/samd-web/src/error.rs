//! Errors as the page sees them: a stable kind it can branch on, and a plain message.

use serde::Serialize;
use wasm_bindgen::JsValue;

/// What went wrong, in the terms of the worker protocol (`web/worker.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request never got a response (offline, DNS, CORS, a dropped connection).
    Network,
    /// The server answered with an error status.
    Http,
    /// The bytes are not a valid model or corpus file.
    Corrupt,
    /// A valid file that samd cannot run (architecture, quant type, tokenizer).
    Unsupported,
    /// The model does not fit the device's limits.
    TooBig,
    /// The GPU device was lost.
    DeviceLost,
    /// The prompt is empty or does not fit the context.
    Prompt,
    /// A generation option that cannot work.
    Options,
    /// A generation was requested before a model was loaded.
    NoModel,
    /// The user cancelled.
    Cancelled,
    /// Anything else: a bug, reported as such.
    Internal,
}

/// An error with its kind. It crosses into JavaScript as `{kind, message}`.
#[derive(Debug, Clone, Serialize)]
pub struct WebError {
    /// The kind, for the page to branch on.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
}

impl WebError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> JsValue {
        serde_wasm_bindgen::to_value(&e).unwrap_or_else(|_| JsValue::from_str(&e.message))
    }
}

impl From<samd_model::Error> for WebError {
    fn from(e: samd_model::Error) -> Self {
        use samd_model::Error as E;
        let kind = match &e {
            E::UnsupportedType { .. }
            | E::UnsupportedTokenizer { .. }
            | E::UnsupportedChatTemplate { .. }
            | E::UnsupportedArchitecture { .. } => ErrorKind::Unsupported,
            E::Readback { reason } if is_device_loss(reason) => ErrorKind::DeviceLost,
            E::Readback { .. } | E::CacheFull { .. } => ErrorKind::Internal,
            E::TokenOutOfRange { .. } | E::PositionOutOfRange { .. } => ErrorKind::Prompt,
            _ => ErrorKind::Corrupt,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<samd_engine::Error> for WebError {
    fn from(e: samd_engine::Error) -> Self {
        use samd_engine::Error as E;
        match e {
            E::Model(m) => m.into(),
            E::EmptyPrompt | E::PromptTooLong { .. } => Self::new(ErrorKind::Prompt, e.to_string()),
            E::Options { .. } | E::UnknownMethod { .. } => {
                Self::new(ErrorKind::Options, e.to_string())
            }
            E::CorpusTokenizer { .. } => Self::new(ErrorKind::Unsupported, e.to_string()),
            _ => Self::new(ErrorKind::Internal, e.to_string()),
        }
    }
}

impl From<samd_draft::Error> for WebError {
    fn from(e: samd_draft::Error) -> Self {
        Self::new(ErrorKind::Corrupt, e.to_string())
    }
}

/// cubecl reports a lost wgpu device as a poisoned device on every later sync point.
fn is_device_loss(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("poison") || r.contains("lost")
}

/// A JavaScript exception's message.
pub fn js_message(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    js_sys::Reflect::get(e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Whether a JavaScript exception is an `AbortError` (a cancelled fetch).
pub fn is_abort(e: &JsValue) -> bool {
    js_sys::Reflect::get(e, &JsValue::from_str("name"))
        .ok()
        .and_then(|n| n.as_string())
        .is_some_and(|n| n == "AbortError")
}
