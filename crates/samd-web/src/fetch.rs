//! Downloading model and corpus files: streamed with progress, kept in the Cache Storage
//! API so that a reload reads them from disk instead of the network.
//!
//! A file enters the cache only once it has arrived whole, so an interrupted download
//! leaves nothing behind and the next attempt restarts cleanly.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Cache, ReadableStreamDefaultReader, RequestInit, Response};

use crate::error::{ErrorKind, WebError, is_abort, js_message};

/// The Cache Storage bucket. Bump the suffix if the stored format ever changes.
pub const CACHE_NAME: &str = "samd-files-v1";

/// The largest file held in wasm memory. A 32-bit WebAssembly module addresses 4 GiB, which
/// must hold the file and the model built from it; a larger file (a 7B model, say) gets a
/// clear error before its download, where it would otherwise exhaust the memory midway and
/// take the worker down.
const MAX_FILE_BYTES: u64 = 1_000_000_000;

/// Where bytes are coming from, for progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The network.
    Download,
    /// The Cache Storage API.
    Cache,
}

/// A file read whole.
#[derive(Debug)]
pub struct Fetched {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether they came from the cache.
    pub from_cache: bool,
}

/// Reads `url`, from the cache when it holds it, else from the network (then caches it).
/// `progress` gets the source, the bytes so far and the total when known.
pub async fn fetch_cached(
    url: &str,
    signal: Option<&AbortSignal>,
    progress: &mut dyn FnMut(Source, u64, Option<u64>),
) -> Result<Fetched, WebError> {
    let cache = open_cache().await;
    if let Some(cache) = &cache
        && let Some(response) = cached(cache, url).await
    {
        let bytes = read_body(url, &response, Source::Cache, signal, progress).await?;
        return Ok(Fetched {
            bytes,
            from_cache: true,
        });
    }

    let response = fetch(url, signal).await?;
    let bytes = read_body(url, &response, Source::Download, signal, progress).await?;
    if let Some(cache) = &cache {
        store(cache, url, &bytes).await;
    }
    Ok(Fetched {
        bytes,
        from_cache: false,
    })
}

/// Deletes every cached file.
pub async fn clear_cache() -> Result<(), WebError> {
    let Some(caches) = scope().and_then(|s| s.caches().ok()) else {
        return Ok(());
    };
    JsFuture::from(caches.delete(CACHE_NAME))
        .await
        .map_err(|e| WebError::new(ErrorKind::Internal, js_message(&e)))?;
    Ok(())
}

fn scope() -> Option<web_sys::WorkerGlobalScope> {
    js_sys::global().dyn_into().ok()
}

/// The cache, or `None` where there is none (an opaque origin, a private window): files
/// are then downloaded every time, which is slower but correct.
async fn open_cache() -> Option<Cache> {
    let caches = scope()?.caches().ok()?;
    let cache = JsFuture::from(caches.open(CACHE_NAME)).await.ok()?;
    cache.dyn_into().ok()
}

async fn cached(cache: &Cache, url: &str) -> Option<Response> {
    let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    hit.dyn_into::<Response>().ok().filter(|r| r.ok())
}

/// Stores a whole file. A full quota only costs the next load a download.
async fn store(cache: &Cache, url: &str, bytes: &[u8]) {
    let body = Uint8Array::from(bytes);
    let stored = match Response::new_with_opt_buffer_source(Some(&body)) {
        Ok(response) => JsFuture::from(cache.put_with_str(url, &response))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        web_sys::console::warn_1(&format!("samd: not cached ({url}): {}", js_message(&e)).into());
    }
}

async fn fetch(url: &str, signal: Option<&AbortSignal>) -> Result<Response, WebError> {
    let scope = scope()
        .ok_or_else(|| WebError::new(ErrorKind::Internal, "samd-web must run in a Web Worker"))?;
    let init = RequestInit::new();
    init.set_signal(signal);
    let response = JsFuture::from(scope.fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| network_error(url, &e))?;
    let response: Response = response
        .dyn_into()
        .map_err(|_| WebError::new(ErrorKind::Internal, "fetch did not return a Response"))?;
    if !response.ok() {
        return Err(WebError::new(
            ErrorKind::Http,
            format!(
                "cannot load {url}: the server answered {} {}",
                response.status(),
                response.status_text()
            ),
        ));
    }
    Ok(response)
}

fn network_error(url: &str, e: &JsValue) -> WebError {
    if is_abort(e) {
        return WebError::new(ErrorKind::Cancelled, format!("loading {url} was cancelled"));
    }
    WebError::new(
        ErrorKind::Network,
        format!(
            "cannot load {url}: {} (is the URL right, and does the server allow CORS?)",
            js_message(e)
        ),
    )
}

/// Reads a response body chunk by chunk, reporting progress after each.
async fn read_body(
    url: &str,
    response: &Response,
    source: Source,
    signal: Option<&AbortSignal>,
    progress: &mut dyn FnMut(Source, u64, Option<u64>),
) -> Result<Vec<u8>, WebError> {
    let total = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u64>().ok());
    let Some(body) = response.body() else {
        return Ok(Vec::new());
    };
    if let Some(total) = total
        && total > MAX_FILE_BYTES
    {
        // Unread, the body would go on downloading.
        let _ = body.cancel();
        return Err(too_big(url, &format!("{:.0} MB", mb(total))));
    }
    let reader: ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| WebError::new(ErrorKind::Internal, "the body has no default reader"))?;
    let mut bytes = Vec::new();
    reserve(&mut bytes, total.unwrap_or(0), url)?;
    progress(source, 0, total);
    loop {
        if signal.is_some_and(|s| s.aborted()) {
            reader.release_lock();
            return Err(WebError::new(
                ErrorKind::Cancelled,
                format!("loading {url} was cancelled"),
            ));
        }
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| {
            let mut err = network_error(url, &e);
            if err.kind == ErrorKind::Network {
                err.message = format!(
                    "the download of {url} broke off after {:.1} MB: {}; load again to restart it",
                    bytes.len() as f64 / 1e6,
                    js_message(&e)
                );
            }
            err
        })?;
        let done = Reflect::get(&chunk, &JsValue::from_str("done"))
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        let value = Reflect::get(&chunk, &JsValue::from_str("value"))
            .map_err(|e| WebError::new(ErrorKind::Internal, js_message(&e)))?;
        let value: Uint8Array = value
            .dyn_into()
            .map_err(|_| WebError::new(ErrorKind::Internal, "a body chunk is not bytes"))?;
        let start = bytes.len();
        let end = start + value.length() as usize;
        if end as u64 > MAX_FILE_BYTES {
            reader.release_lock();
            let _ = body.cancel();
            return Err(too_big(url, &format!("over {:.0} MB", mb(end as u64))));
        }
        reserve(&mut bytes, value.length().into(), url)?;
        bytes.resize(end, 0);
        value.copy_to(&mut bytes[start..]);
        progress(source, bytes.len() as u64, total);
    }
    // Fewer bytes than announced is a cut connection. More is fine: a server that
    // compresses announces the compressed length.
    if let Some(total) = total
        && (bytes.len() as u64) < total
    {
        return Err(WebError::new(
            ErrorKind::Network,
            format!(
                "the download of {url} ended after {} of {total} bytes; load again to restart it",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Makes room for `more` bytes, or says that the browser has no memory for them (rather
/// than aborting the module, as a failed allocation would).
fn reserve(bytes: &mut Vec<u8>, more: u64, url: &str) -> Result<(), WebError> {
    usize::try_from(more)
        .ok()
        .and_then(|more| bytes.try_reserve(more).ok())
        .ok_or_else(|| {
            WebError::new(
                ErrorKind::TooBig,
                format!(
                    "the browser has no memory for {url}: {:.0} MB read, {:.0} MB more needed",
                    mb(bytes.len() as u64),
                    mb(more)
                ),
            )
        })
}

/// The error for a file beyond [`MAX_FILE_BYTES`]; `size` says how large it is.
fn too_big(url: &str, size: &str) -> WebError {
    WebError::new(
        ErrorKind::TooBig,
        format!(
            "{url} is {size}; the browser build holds files up to {:.0} MB, since its 4 GiB \
             of WebAssembly memory holds the file and the model built from it",
            mb(MAX_FILE_BYTES)
        ),
    )
}

/// Bytes in (decimal) megabytes, as the messages and the progress bar count them.
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
