// The samd Web Worker: hosts one wasm Engine (crates/samd-web) off the page's thread and
// speaks the protocol below. This file is the authoritative description of it.
//
// Requests (page → worker); each carries a numeric `id`, echoed by its replies:
//   {type:'init', id, backend:'auto'|'webgpu'|'cpu'}
//       → {type:'device', id, backend:'webgpu'|'cpu', adapter, fallback, notice, software}
//   {type:'load', id, modelUrl, corpusUrl|null, warmUp:'auto'|'on'|'off', corpusOptional}
//       → {type:'progress', id, phase, bytes, total|null}*  (phase: download, cache, parse,
//         tokenizer, corpus, weights, then kernels, whose bytes and total count the
//         warm-up's passes)
//       → {type:'loaded', id, model:{name, architecture, layers, hidden, vocab, context},
//          corpus:{tokens}|null, corpusSkipped|null, fromCache, loadMs,
//          warmUp:{passes, graphs, ms}|null}
//       The warm-up runs a pass of every tree size on WebGPU, so that the first race pays
//       no pipeline compiles; 'auto' (the default) skips it on a software adapter. A
//       corpus built with another model's tokenizer fails the load, unless corpusOptional:
//       then the model loads without it, and corpusSkipped says why.
//   {type:'generate', id, prompt, method, maxTokens, raw, temperature, topP, seed, stop}
//       → {type:'step', id, tokens, text, pieces, sources, dynamicMatch, staticMatch,
//          treeLen, draftUs, verifyUs, atMs}*   (the first step is the prefill's first
//          token; pieces[i] is the text that became final with tokens[i], and joins to
//          text; a cancel's last step has no tokens and one piece)
//       → {type:'done', id, stop:'eos'|'max_tokens'|'context'|'stop_string'|'cancelled',
//          text, stats:{
//          promptTokens, generated, steps, mat, tokensPerS, prefillMs, draftMs, verifyMs,
//          totalMs, readbacks, histogram}}
//   {type:'cancel'}  cancels the running load (→ error kind 'cancelled') or generate
//                    (→ done with stop 'cancelled')
//   {type:'clearCache', id} → {type:'cacheCleared', id}
// Any request may end in {type:'error', id, kind, message} instead. Kinds: network, http,
// corrupt, unsupported, too-big, device-lost, out-of-memory, busy, prompt, options,
// no-model, cancelled, internal. A request while another runs gets 'busy'. A failed
// load's error also says whether the model loaded before is still loaded (`kept`): it is,
// unless the failure came while building the new weights on the device, after the old
// ones were released to make room.
// If the wasm instance traps (a panic, an out-of-memory), the worker posts
// {type:'fatal', message}: the engine is gone, and the page must start a new worker.
// If the GPU device is lost, the request that finds out ends in
// {type:'fatal', kind:'device-lost', message} for the same reason: a wasm instance keeps
// its GPU runtime for life, so only a new worker gets a new device.

import init, { Engine, clearCache } from './pkg/samd_web.js';

let engine = null;
let busy = null; // the id of the request in progress
let loadAbort = null;
let cancelGenerate = false;

const post = (msg) => self.postMessage(msg);

// The engine's GPUDevice lives inside the wasm. Wrapping requestDevice lets the worker
// watch `device.lost`, so that a lost GPU is reported as that, not as whatever error the
// next readback happens to give.
let deviceLost = null; // the GPUDeviceLostInfo, once lost
let deviceWatch = null; // settles when the device is lost
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await requestDevice.apply(this, args);
    deviceWatch = device.lost.then((info) => {
      deviceLost = info;
    });
    return device;
  };
}

// Error kinds a lost device can show up as. Others (a bad prompt, a network error) are
// answered at once.
const deviceErrorKinds = new Set(['internal', 'fatal', 'device-lost', 'out-of-memory']);

/**
 * The GPUDeviceLostInfo if the device behind an error of `kind` is lost. The browser
 * settles `device.lost` only after the failed work drains (seconds on a software GPU),
 * so this waits for it, up to a bound.
 */
async function lostDevice(kind) {
  if (!deviceWatch || !deviceErrorKinds.has(kind)) return null;
  if (!deviceLost) await Promise.race([deviceWatch, new Promise((r) => setTimeout(r, 3000))]);
  return deviceLost;
}

// Yields to the event loop, so that a 'cancel' message can run between steps (the CPU
// backend never awaits anything real, so without this nothing else would run).
const yieldToEvents = () => new Promise((resolve) => setTimeout(resolve, 0));

function errorOf(e) {
  if (e && typeof e === 'object' && typeof e.kind === 'string') return e;
  const message = e && e.message ? e.message : String(e);
  // A trap leaves the instance unusable: only a fresh worker helps.
  if (e instanceof WebAssembly.RuntimeError) return { kind: 'fatal', message };
  if (/out of memory|allocation failed/i.test(message)) return { kind: 'out-of-memory', message };
  return { kind: 'internal', message };
}

async function handle(msg) {
  switch (msg.type) {
    case 'init': {
      await init({ module_or_path: new URL('./pkg/samd_web_bg.wasm', import.meta.url) });
      engine = await Engine.create(msg.backend || 'auto');
      return { type: 'device', ...engine.deviceInfo() };
    }
    case 'load': {
      requireEngine();
      loadAbort = new AbortController();
      try {
        const onProgress = (phase, bytes, total) =>
          post({ type: 'progress', id: msg.id, phase, bytes, total });
        const info = await engine.load(
          msg.modelUrl,
          msg.corpusUrl || null,
          onProgress,
          loadAbort.signal,
          msg.warmUp ?? null,
          msg.corpusOptional ?? false,
        );
        return {
          type: 'loaded',
          model: info.model,
          corpus: info.corpusTokens == null ? null : { tokens: info.corpusTokens },
          corpusSkipped: info.corpusSkipped ?? null,
          fromCache: info.fromCache,
          loadMs: info.loadMs,
          warmUp: info.warmUp ?? null,
        };
      } finally {
        loadAbort = null;
      }
    }
    case 'generate': {
      requireEngine();
      cancelGenerate = false;
      const request = {
        prompt: msg.prompt,
        method: msg.method,
        maxTokens: msg.maxTokens,
        raw: !!msg.raw,
        temperature: msg.temperature ?? 0,
        topP: msg.topP ?? 1,
        seed: msg.seed ?? 0,
        stop: msg.stop ?? [],
      };
      let event = await engine.start(request);
      for (;;) {
        const { fullText, stats, stop, ...step } = event;
        post({ type: 'step', id: msg.id, ...step });
        if (stop) return { type: 'done', stop, text: fullText, stats };
        await yieldToEvents();
        if (cancelGenerate) {
          // The held-back tail of the text goes out as a last (token-less) step.
          const { fullText, stats, stop, ...last } = engine.cancel();
          post({ type: 'step', id: msg.id, ...last });
          return { type: 'done', stop, text: fullText, stats };
        }
        event = await engine.step();
      }
    }
    case 'clearCache':
      await clearCache();
      return { type: 'cacheCleared' };
    default:
      throw { kind: 'options', message: `unknown request type ${JSON.stringify(msg.type)}` };
  }
}

function requireEngine() {
  if (!engine) throw { kind: 'internal', message: "send 'init' before any other request" };
}

self.onmessage = async ({ data: msg }) => {
  if (msg.type === 'cancel') {
    cancelGenerate = true;
    if (loadAbort) loadAbort.abort();
    return;
  }
  if (busy !== null) {
    post({ type: 'error', id: msg.id, kind: 'busy', message: `busy with request ${busy}; wait for it or cancel it` });
    return;
  }
  busy = msg.id;
  try {
    post({ id: msg.id, ...(await handle(msg)) });
  } catch (e) {
    const { kind, message } = errorOf(e);
    const lost = await lostDevice(kind);
    if (lost) {
      engine = null;
      const why = lost.message ? `${lost.reason} (${lost.message})` : lost.reason;
      const restart = `${why}; the engine restarts on a new device and reloads the model`;
      post({ type: 'fatal', id: msg.id, kind: 'device-lost', message: restart });
    } else if (kind === 'fatal') {
      engine = null;
      post({ type: 'fatal', id: msg.id, message });
    } else {
      const kept = msg.type === 'load' ? { kept: !!engine?.hasModel() } : {};
      post({ type: 'error', id: msg.id, kind, message, ...kept });
    }
  } finally {
    busy = null;
  }
};
