// Where the browser's CPU backend spends a decode step (a benchmark tool, not a test):
// runs the wasm engine (web/pkg, from scripts/build-web.sh) in node, which runs the same
// V8 as Chromium, times the model's load (and reports the wasm memory it takes), the
// prefill and the steps of each method, and, with --profile (--profile-prefill), samples
// the steps (the prefill) with V8's profiler and prints the wasm functions that took the
// most time. Node has no Worker global scope, caches or WebGPU: the engine gets a
// stand-in scope with no cache, and runs on the CPU backend.
//
// Usage: node tests/browser/profile-cpu.mjs [--prompt TEXT] [--max N] [--methods ar,sam]
//        [--corpus URL] [--profile] [--profile-prefill] [--pkg DIR]
// (--corpus: a static corpus under the served root, e.g. corpus/default.samdcorp)
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { defaultRoots, startServer } from '../../scripts/serve.mjs';
import { model } from './harness.mjs';

const { values } = parseArgs({
  options: {
    prompt: { type: 'string', default: 'List the planets of the solar system, one per line, with one sentence about each.' },
    max: { type: 'string', default: '32' },
    corpus: { type: 'string' },
    methods: { type: 'string', default: 'ar' },
    profile: { type: 'boolean', default: false },
    'profile-prefill': { type: 'boolean', default: false },
    pkg: { type: 'string', default: new URL('../../web/pkg', import.meta.url).pathname },
  },
});

// samd-web fetches through the Worker global scope and opens the Cache Storage when
// there is one: a stand-in scope, whose cache never opens, so files are fetched each time.
class WorkerGlobalScope {}
globalThis.WorkerGlobalScope = WorkerGlobalScope;
globalThis.caches = { open: () => Promise.reject(new Error('no cache in node')) };
Object.setPrototypeOf(globalThis, WorkerGlobalScope.prototype);

const pkg = resolve(values.pkg);
const { default: init, Engine } = await import(pathToFileURL(`${pkg}/samd_web.js`).href);
const wasm = await init({ module_or_path: readFileSync(`${pkg}/samd_web_bg.wasm`) });
const server = await startServer({ port: 0, roots: defaultRoots, log: () => {} });
const inspector = new Session();
inspector.connect();
try {
  const engine = await Engine.create('cpu');
  const loading = performance.now();
  await engine.load(new URL(model, server.url).href, values.corpus ? new URL(values.corpus, server.url).href : null, () => {}, null);
  const mb = (bytes) => (bytes / 1e6).toFixed(0);
  console.log(
    `load: ${(performance.now() - loading).toFixed(0)} ms; wasm memory ${mb(wasm.memory.buffer.byteLength)} MB`,
  );
  for (const method of values.methods.split(',')) {
    if (values['profile-prefill']) await startProfiler();
    const started = performance.now();
    let event = await engine.start({ prompt: values.prompt, method, maxTokens: Number(values.max) });
    const prefilled = performance.now();
    if (values['profile-prefill']) {
      console.log(`${method}'s prefill:`);
      printTop((await inspector.post('Profiler.stop')).profile);
    }
    if (values.profile) await startProfiler();
    let steps = 0;
    let tokens = event.tokens.length;
    const bySize = new Map();
    while (!event.stop) {
      event = await engine.step();
      steps += 1;
      tokens += event.tokens.length;
      if (!bySize.has(event.treeLen)) bySize.set(event.treeLen, []);
      bySize.get(event.treeLen).push(event.verifyUs / 1000);
    }
    const done = performance.now();
    const ms = done - prefilled;
    console.log(
      `${method}: prefill ${(prefilled - started).toFixed(0)} ms, ${steps} steps, ` +
        `${(ms / steps).toFixed(1)} ms a step, ${((tokens - 1) / (ms / 1000)).toFixed(1)} tok/s after the first`,
    );
    printBySize(bySize);
    if (values.profile) {
      const { profile } = await inspector.post('Profiler.stop');
      printTop(profile);
    }
  }
} finally {
  inspector.disconnect();
  server.close();
}

/** Starts sampling with V8's profiler, every 0.5 ms. */
async function startProfiler() {
  await inspector.post('Profiler.enable');
  await inspector.post('Profiler.setSamplingInterval', { interval: 500 });
  await inspector.post('Profiler.start');
}

/** Each tree size's steps: how many, and the median time of their forward and readback. */
function printBySize(bySize) {
  for (const [nodes, ms] of [...bySize].sort((a, b) => a[0] - b[0])) {
    ms.sort((a, b) => a - b);
    const median = ms[Math.floor(ms.length / 2)];
    console.log(`  ${String(nodes).padStart(3)} nodes: ${String(ms.length).padStart(3)} steps, ${median.toFixed(1)} ms each (median)`);
  }
}

/** The functions with the most samples of their own, as shares of all samples. */
function printTop(profile, rows = 20) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const counts = new Map();
  for (const id of profile.samples) {
    const name = nodes.get(id).callFrame.functionName || '(anonymous)';
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const total = profile.samples.length;
  for (const [name, count] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, rows)) {
    console.log(`  ${((100 * count) / total).toFixed(1).padStart(5)}%  ${name.slice(0, 110)}`);
  }
}
