// The race page: plain AR and speculative decoding of one prompt, run one after the
// other for honest timing, then replayed side by side. Query parameters override the
// defaults: ?model=&corpus=&backend=&max=&prompt=&method=&warmup=auto|on|off

import { SamdClient } from './client.js';
import { EXAMPLES } from './examples.js';
import { Lane } from './lane.js';
import { compareOutputs, legend, tokenCss } from './tokens.js';

const $ = (id) => document.getElementById(id);
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

const ui = {
  prompt: $('prompt'),
  model: $('model'),
  corpus: $('corpus'),
  backend: $('backend'),
  method: $('method'),
  max: $('max'),
  temperature: $('temperature'),
  topP: $('top-p'),
  seed: $('seed'),
  raw: $('raw'),
  load: $('load'),
  clearCache: $('clear-cache'),
  run: $('run'),
  cancel: $('cancel'),
  replay: $('replay'),
  progress: $('progress'),
  progressLabel: $('progress-label'),
  progressArea: byTestId('progress-area'),
  device: byTestId('device'),
  notice: byTestId('fallback-notice'),
  error: byTestId('error'),
  verdict: byTestId('verdict'),
  specMethod: document.querySelector('#lane-spec [data-role="method"]'),
};
const lanes = { ar: new Lane($('lane-ar')), spec: new Lane($('lane-spec')) };

const errorTitles = {
  network: 'Network error',
  http: 'The server refused the file',
  corrupt: 'Not a usable model file',
  unsupported: 'Unsupported model',
  'too-big': 'Too big for this device',
  'device-lost': 'The GPU device was lost',
  'out-of-memory': 'Out of memory',
  busy: 'The engine is busy',
  prompt: 'Bad prompt',
  options: 'Unsupported options',
  'no-model': 'No model loaded',
  cancelled: 'Cancelled',
  fatal: 'The engine crashed and was restarted',
  internal: 'Internal error',
};

/** SmolLM2's static corpus: passed over, with a notice, for a model of another vocab. */
const DEFAULT_CORPUS = 'corpus/default.samdcorp';

let client = null;
let busy = false;
let cancelled = false;
let replayTimers = [];
/** Whether the URL or the user picked the speculative method (else it follows the device). */
let methodChosen = false;

function applyDefaults() {
  const q = new URLSearchParams(location.search);
  // The math example by default: a worked answer reuses the question's words and numbers,
  // and the static corpus holds this model's GSM8K answers, so speculation shows (SAM+TR
  // 1.57x AR on math on the H200, 0.93x on multi-turn's first turns; docs/BENCHMARKS.md).
  ui.prompt.value = q.get('prompt') ?? EXAMPLES.find((e) => e.category === 'math').prompt;
  ui.model.value = q.get('model') ?? 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
  // The committed static corpus (samd corpus build); `?corpus=` with nothing after it drafts without one.
  ui.corpus.value = q.get('corpus') ?? DEFAULT_CORPUS;
  for (const [name, select] of [['backend', ui.backend], ['method', ui.method]]) {
    const value = q.get(name);
    if (value && [...select.options].some((o) => o.value === value)) select.value = value;
  }
  methodChosen = q.has('method');
  ui.method.addEventListener('change', () => {
    methodChosen = true;
  });
  if (q.get('max')) ui.max.value = q.get('max');

  for (const example of EXAMPLES) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = example.category;
    button.title = `Spec-Bench question ${example.id}`;
    button.addEventListener('click', () => {
      ui.prompt.value = example.prompt;
    });
    $('examples').append(button);
  }

  const style = document.createElement('style');
  style.textContent = tokenCss;
  document.head.append(style);
  $('legend').append(legend());
}

/** A fresh worker client, initialised with the chosen backend. */
async function start() {
  client?.terminate();
  client = new SamdClient({ onCrash });
  ui.device.textContent = 'Starting the engine…';
  delete ui.device.dataset.backend;
  delete ui.device.dataset.fromCache;
  const device = await client.init(ui.backend.value);
  ui.device.dataset.backend = device.backend;
  ui.device.textContent = device.backend === 'webgpu' ? `WebGPU · ${device.adapter}` : `CPU (wasm) · ${device.adapter}`;
  ui.notice.hidden = !device.fallback;
  ui.notice.textContent = device.fallback ? (device.notice ?? 'WebGPU is not available; running on the CPU.') : '';
  // On a CPU every verified node costs, and SAM's drafts pay better than SAM+TR's, which
  // compute Token Recycling's top-8 and grow wider trees (docs/BENCHMARKS.md, "In the
  // browser"). Unless the URL or the user chose a method, the CPU drafts with SAM.
  if (!methodChosen) ui.method.value = device.backend === 'cpu' ? 'sam' : 'sam+tr';
}

function onCrash(message, revival, kind) {
  showError({ kind, message });
  ui.progressLabel.textContent = 'Restarting the engine and reloading the model…';
  revival.then(() => {
    const loaded = client.loaded;
    ui.progressLabel.textContent = loaded ? 'Engine restarted; model reloaded.' : 'Engine restarted.';
    if (loaded) ui.device.dataset.fromCache = String(loaded.info.fromCache);
  });
}

async function load() {
  const modelUrl = ui.model.value.trim();
  const corpusUrl = ui.corpus.value.trim() || null;
  ui.progressArea.hidden = false;
  ui.progress.removeAttribute('value');
  ui.progressLabel.textContent = 'Loading…';
  delete ui.device.dataset.fromCache;
  const warmUp = new URLSearchParams(location.search).get('warmup') ?? 'auto';
  const onProgress = (p) => {
    if (p.total) {
      ui.progress.max = p.total;
      ui.progress.value = p.bytes;
    } else {
      ui.progress.removeAttribute('value');
    }
    const mb = (n) => (n / 1e6).toFixed(1);
    ui.progressLabel.textContent =
      p.phase === 'kernels'
        ? `Preparing the GPU's kernels for every tree size: pass ${p.bytes} of ${p.total}`
        : `${p.phase}: ${mb(p.bytes)}${p.total ? ` / ${mb(p.total)}` : ''} MB`;
  };
  // The default corpus fits SmolLM2 alone; a corpus the user named must fit the model.
  const corpusOptional = corpusUrl === DEFAULT_CORPUS;
  const loaded = await client
    .load(modelUrl, corpusUrl, onProgress, { warmUp, corpusOptional })
    .catch((e) => {
      ui.progressArea.hidden = true;
      const kept = e.kept && client.loaded;
      if (kept) e.message = `${e.message.replace(/\.?$/, '.')} The model loaded before, ${kept.info.model.name}, is still loaded.`;
      throw e;
    });
  const m = loaded.model;
  ui.progress.max = 1;
  ui.progress.value = 1;
  ui.progressLabel.textContent =
    `${m.name}: ${m.architecture}, ${m.layers} layers, hidden ${m.hidden}, vocab ${m.vocab}, context ${m.context}` +
    (loaded.corpus ? `; corpus ${loaded.corpus.tokens} tokens` : '') +
    (loaded.corpusSkipped ? `; no static corpus: ${loaded.corpusSkipped}` : '') +
    ` · ${(loaded.loadMs / 1000).toFixed(1)} s${loaded.fromCache ? ' from cache' : ''}` +
    (loaded.warmUp?.graphs ? ` (${(loaded.warmUp.ms / 1000).toFixed(1)} s of it preparing ${loaded.warmUp.graphs} step graphs)` : '');
  ui.device.dataset.fromCache = String(loaded.fromCache);
}

/** Loads the model in the form unless it is the one already loaded. */
async function ensureLoaded() {
  const want = new URL(ui.model.value.trim(), document.baseURI).href;
  const corpus = ui.corpus.value.trim();
  const wantCorpus = corpus ? new URL(corpus, document.baseURI).href : null;
  const have = client.loaded;
  if (!have || have.modelUrl !== want || have.corpusUrl !== wantCorpus) await load();
}

async function run() {
  stopReplay();
  const options = {
    prompt: ui.prompt.value,
    maxTokens: Number(ui.max.value),
    raw: ui.raw.checked,
    temperature: Number(ui.temperature.value),
    topP: Number(ui.topP.value),
    seed: Number(ui.seed.value),
  };
  lanes.ar.clear();
  lanes.spec.clear();
  showVerdict();
  ui.specMethod.textContent = `(${ui.method.value})`;
  await ensureLoaded();
  // A cancel in the load's last phase (the weights) cannot stop the load, but stops here.
  if (cancelled) return;
  const ar = await lanes.ar.run(client, { ...options, method: 'ar' });
  drawTimelines();
  if (ar.stop === 'cancelled' || cancelled) return;
  await lanes.spec.run(client, { ...options, method: ui.method.value }, ar);
  drawTimelines();
  showVerdict();
}

/** Says whether the speculative lane gave plain decoding's tokens, once both lanes are done. */
function showVerdict() {
  const { ar, spec } = lanes;
  const finished = (lane) => lane.done && lane.done.stop !== 'cancelled';
  ui.verdict.hidden = !(finished(ar) && finished(spec));
  if (ui.verdict.hidden) return;
  const ids = (lane) => lane.steps.flatMap((step) => step.tokens);
  const { identical, at, tokens } = compareOutputs(ids(ar), ids(spec));
  ui.verdict.dataset.identical = String(identical);
  ui.verdict.textContent = identical
    ? `✓ Identical output: the speculative lane's ${tokens} tokens are plain decoding's, token for token.`
    : `✗ The lanes part at token ${at + 1}: speculation changed the output, which is a bug in samd.`;
}

function drawTimelines() {
  const scale = Math.max(1, ...Object.values(lanes).map((l) => l.steps.at(-1)?.atMs ?? 0));
  for (const lane of Object.values(lanes)) lane.timeline(scale);
}

/** Plays both recordings at once, each step at its recorded time. */
function replay() {
  stopReplay();
  for (const lane of Object.values(lanes)) {
    lane.clear(true);
    for (const step of lane.steps) replayTimers.push(setTimeout(() => lane.step(step, false), step.atMs));
    const end = lane.steps.at(-1)?.atMs ?? 0;
    replayTimers.push(
      setTimeout(() => {
        lane.finish(lane.done, lane === lanes.spec ? lanes.ar.done : null);
        drawTimelines();
      }, end),
    );
  }
}

function stopReplay() {
  replayTimers.forEach(clearTimeout);
  replayTimers = [];
}

/** Runs one user action: buttons reflect it, and any error is shown, never thrown. */
async function act(action) {
  if (busy) return;
  busy = true;
  cancelled = false;
  hideError();
  setButtons();
  try {
    await action();
  } catch (e) {
    showError(e);
  } finally {
    busy = false;
    setButtons();
  }
}

function setButtons() {
  ui.run.disabled = busy;
  ui.load.disabled = busy;
  ui.backend.disabled = busy;
  ui.cancel.disabled = !busy;
  ui.replay.disabled = busy || !(lanes.ar.done && lanes.spec.done);
}

function showError(e) {
  ui.error.hidden = false;
  ui.error.dataset.kind = e.kind ?? 'internal';
  ui.error.textContent = `${errorTitles[e.kind] ?? 'Error'}: ${e.message}`;
}

function hideError() {
  ui.error.hidden = true;
  ui.error.textContent = '';
  delete ui.error.dataset.kind;
}

applyDefaults();
setButtons();
ui.run.addEventListener('click', () => act(run));
ui.load.addEventListener('click', () => act(load));
ui.cancel.addEventListener('click', () => {
  cancelled = true;
  client.cancel();
});
ui.clearCache.addEventListener('click', () =>
  client.clearCache().then(() => {
    ui.progressArea.hidden = false;
    ui.progressLabel.textContent = 'Cache cleared.';
  }, showError),
);
ui.replay.addEventListener('click', replay);
ui.backend.addEventListener('change', () => act(start));
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) act(run);
});
act(start);
