// <samd-demo>: a compact speculative-decoding race for any page, in one script tag.
//
//   <script type="module" src="https://…/samd-demo.js"></script>
//   <samd-demo prompt="…" methods="ar,sam+tr" autostart></samd-demo>
//
// Attributes: model and corpus (URLs, resolved against the page; the model defaults to the
// one served beside this module), prompt, methods (the lanes, the first is the baseline;
// by default ar,sam+tr on WebGPU and ar,sam on the CPU),
// max-tokens (64), backend (auto|webgpu|cpu), autostart (load and run on connect).
// Each element has its own worker, found beside this module, so it works cross-origin.

import { SamdClient } from './client.js';
import { appendStep, compareOutputs, legend, markStats, tokenCss } from './tokens.js';

const defaultModel = new URL('models/SmolLM2-135M-Instruct.Q4_1.gguf', import.meta.url).href;

const methodLabels = {
  ar: 'Plain (AR)',
  pld: 'Prompt lookup',
  sam: 'SAM',
  tr: 'Token Recycling',
  'sam+tr': 'SAM + Token Recycling',
};

const css = `
:host { display: block; font: 14px/1.45 system-ui, sans-serif; color: inherit; }
.box { border: 1px solid #8886; border-radius: 8px; padding: .7em .8em; }
.head { display: flex; gap: .6em; align-items: center; flex-wrap: wrap; }
.head strong { font-size: 1.05em; }
.status { flex: 1; color: #888; font-size: .9em; }
textarea { width: 100%; box-sizing: border-box; font: inherit; margin: .5em 0; resize: vertical; }
.lanes { display: grid; grid-template-columns: repeat(auto-fit, minmax(14em, 1fr)); gap: .6em; }
h3 { font-size: .9em; margin: 0 0 .3em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; min-height: 5em; max-height: 14em; overflow-y: auto;
  font: 13px/1.5 ui-monospace, monospace; border: 1px solid #8884; border-radius: 4px; padding: .4em; }
.stats { font-size: .85em; color: #888; margin: .3em 0 0; min-height: 1.2em; }
.notice { font-size: .85em; margin: .4em 0 0; padding: .3em .5em; border-left: 3px solid #e0a800; }
.error { color: #c62828; font-size: .9em; margin: .4em 0 0; white-space: pre-wrap; }
${tokenCss}
`;

class SamdDemo extends HTMLElement {
  #client = null;
  #device = null;
  #busy = false;
  #ui;

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    const style = document.createElement('style');
    style.textContent = css;
    const box = el('div', 'box');
    const head = el('div', 'head');
    const run = el('button', '', 'Run');
    run.dataset.testid = 'run';
    const status = el('span', 'status', 'Idle');
    status.dataset.testid = 'device';
    head.append(el('strong', '', 'samd'), status, run);
    const prompt = el('textarea');
    prompt.rows = 2;
    prompt.dataset.testid = 'prompt';
    const notice = el('p', 'notice');
    notice.dataset.testid = 'fallback-notice';
    notice.hidden = true;
    const error = el('p', 'error');
    error.dataset.testid = 'error';
    error.hidden = true;
    const lanes = el('div', 'lanes');
    box.append(head, prompt, notice, lanes, legend(), error);
    root.append(style, box);
    run.addEventListener('click', () => this.run());
    this.#ui = { run, status, prompt, notice, error, lanes };
  }

  connectedCallback() {
    if (!this.#ui.prompt.value) this.#ui.prompt.value = this.getAttribute('prompt') ?? '';
    if (this.hasAttribute('autostart')) this.run();
  }

  disconnectedCallback() {
    this.#client?.terminate();
    this.#client = null;
    this.#device = null;
  }

  /** Loads the model if needed and runs every method in turn, the baseline first. */
  async run() {
    if (this.#busy) return;
    this.#busy = true;
    const { run, status, prompt, error } = this.#ui;
    run.disabled = true;
    error.hidden = true;
    try {
      await this.#ensureLoaded();
      // Without a methods attribute the CPU races SAM, which pays better than SAM+TR there
      // (docs/BENCHMARKS.md, "In the browser").
      const fallback = this.#device.backend === 'cpu' ? 'ar,sam' : 'ar,sam+tr';
      const methods = (this.getAttribute('methods') ?? fallback).split(',').map((m) => m.trim()).filter(Boolean);
      const lanes = methods.map((method, i) => this.#lane(method, i));
      this.#ui.lanes.replaceChildren(...lanes.map((l) => l.root));
      let baseline = null;
      for (const lane of lanes) {
        status.textContent = `${this.#deviceText()} · running ${methodLabels[lane.method] ?? lane.method}…`;
        const ids = [];
        const done = await this.#client.generate(
          { prompt: prompt.value, method: lane.method, maxTokens: Number(this.getAttribute('max-tokens') ?? 64) },
          (step) => {
            ids.push(...step.tokens);
            appendStep(lane.text, step);
          },
        );
        if (baseline) {
          showStats(lane.stats, done, baseline);
          showVerdict(lane.stats, compareOutputs(baseline.ids, ids));
        } else {
          baseline = { done, ids };
          showStats(lane.stats, done, null);
        }
      }
      status.textContent = this.#deviceText();
    } catch (e) {
      error.hidden = false;
      error.textContent = e.message;
      status.textContent = this.#device ? this.#deviceText() : 'Engine not started';
    } finally {
      this.#busy = false;
      run.disabled = false;
    }
  }

  async #ensureLoaded() {
    const { status, notice } = this.#ui;
    if (!this.#client) {
      this.#client = new SamdClient({
        onCrash: (message, _revival, kind) => {
          const what = kind === 'device-lost' ? 'The GPU device was lost' : 'The engine crashed';
          this.#ui.error.hidden = false;
          this.#ui.error.textContent = `${what} and the engine was restarted: ${message}`;
        },
      });
      status.textContent = 'Starting the engine…';
      try {
        this.#device = await this.#client.init(this.getAttribute('backend') ?? 'auto');
      } catch (e) {
        this.#client.terminate();
        this.#client = null;
        throw e;
      }
      status.dataset.backend = this.#device.backend;
      notice.hidden = !this.#device.fallback;
      notice.textContent = this.#device.notice ?? '';
    }
    const model = new URL(this.getAttribute('model') || defaultModel, document.baseURI).href;
    const corpusAttr = this.getAttribute('corpus');
    const corpus = corpusAttr ? new URL(corpusAttr, document.baseURI).href : null;
    const have = this.#client.loaded;
    if (have?.modelUrl === model && have.corpusUrl === corpus) return;
    const onProgress = (p) => {
      const share = p.total ? ` ${Math.round((100 * p.bytes) / p.total)}%` : ` ${(p.bytes / 1e6).toFixed(0)} MB`;
      status.textContent =
        p.phase === 'kernels' ? `Preparing the GPU's kernels:${share}` : `Loading the model: ${p.phase}${share}`;
    };
    const warmUp = this.getAttribute('warmup') ?? 'auto';
    const loaded = await this.#client.load(model, corpus, onProgress, { warmUp });
    status.dataset.fromCache = String(loaded.fromCache);
  }

  #deviceText() {
    const d = this.#device;
    return d.backend === 'webgpu' ? `WebGPU · ${d.adapter}` : `CPU · ${d.adapter}`;
  }

  #lane(method, i) {
    const root = el('section');
    root.dataset.method = method;
    const text = el('div', 'text');
    text.dataset.testid = `lane-${i}-text`;
    const stats = el('p', 'stats');
    stats.dataset.testid = `lane-${i}-stats`;
    root.append(el('h3', '', methodLabels[method] ?? method), text, stats);
    return { method, root, text, stats };
  }
}

function showStats(statsEl, done, baseline) {
  const s = done.stats;
  const base = baseline?.done.stats;
  const speedup = base && base.tokensPerS > 0 ? s.tokensPerS / base.tokensPerS : null;
  statsEl.textContent =
    `${s.tokensPerS.toFixed(1)} tok/s · MAT ${s.mat.toFixed(2)}` + (speedup != null ? ` · speedup ${speedup.toFixed(2)}×` : '');
  markStats(statsEl, s, speedup);
}

/** Adds to a lane's stats whether its tokens are the baseline's (`compareOutputs`). */
function showVerdict(statsEl, { identical, at }) {
  statsEl.dataset.identical = String(identical);
  statsEl.textContent += identical ? ' · identical output' : ` · differs from token ${at + 1}`;
}

function el(tag, className = '', text = '') {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

if (!customElements.get('samd-demo')) customElements.define('samd-demo', SamdDemo);
