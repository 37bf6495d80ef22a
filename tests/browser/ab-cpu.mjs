// Two builds of the browser's CPU backend side by side in one process (a benchmark tool,
// not a test): loads the wasm engine of each (`scripts/build-web.sh` output) into node's
// V8, then runs the same generation on each in turn, `--reps` times, and prints each
// build's median time per step by tree size. On a shared VM a build's speed drifts by
// 10% or more from one minute to the next, so two builds timed one after the other in
// separate runs cannot be told apart at that size; taken in turns they see the same drift.
//
// Usage: node tests/browser/ab-cpu.mjs --a DIR --b DIR [--prompt TEXT] [--max N]
//        [--methods ar,sam] [--reps N]
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { defaultRoots, startServer } from '../../scripts/serve.mjs';
import { model } from './harness.mjs';

const { values } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    prompt: { type: 'string', default: 'List the planets of the solar system, one per line, with one sentence about each.' },
    max: { type: 'string', default: '64' },
    methods: { type: 'string', default: 'ar' },
    reps: { type: 'string', default: '4' },
  },
});
if (!values.a || !values.b) throw new Error('usage: ab-cpu.mjs --a DIR --b DIR [options]');

// As in profile-cpu.mjs: a stand-in Worker scope whose cache never opens.
class WorkerGlobalScope {}
globalThis.WorkerGlobalScope = WorkerGlobalScope;
globalThis.caches = { open: () => Promise.reject(new Error('no cache in node')) };
Object.setPrototypeOf(globalThis, WorkerGlobalScope.prototype);

const server = await startServer({ port: 0, roots: defaultRoots, log: () => {} });
try {
  const builds = [];
  for (const name of ['a', 'b']) {
    const pkg = resolve(values[name]);
    // Each build's glue is its own module, with its own wasm instance.
    const { default: init, Engine } = await import(pathToFileURL(`${pkg}/samd_web.js`).href);
    await init({ module_or_path: readFileSync(`${pkg}/samd_web_bg.wasm`) });
    const engine = await Engine.create('cpu');
    await engine.load(new URL(model, server.url).href, null, () => {}, null);
    builds.push({ name, pkg, engine, prefill: [], bySize: new Map(), texts: new Set() });
  }
  for (const method of values.methods.split(',')) {
    for (const build of builds) {
      build.prefill = [];
      build.bySize = new Map();
      build.texts = new Set();
    }
    for (let rep = 0; rep < Number(values.reps); rep += 1) {
      for (const build of builds) await generate(build, method);
    }
    console.log(`${method}:`);
    for (const build of builds) report(build);
    if (new Set(builds.map((b) => [...b.texts].join('\u0000'))).size !== 1) {
      console.log('  note: the builds generated different texts');
    }
  }
} finally {
  server.close();
}

/** One generation on `build`: its prefill time, and each step's forward time by tree size. */
async function generate(build, method) {
  const started = performance.now();
  let event = await build.engine.start({ prompt: values.prompt, method, maxTokens: Number(values.max) });
  build.prefill.push(performance.now() - started);
  let text = '';
  for (;;) {
    text += event.text ?? '';
    if (event.stop) break;
    event = await build.engine.step();
    if (!build.bySize.has(event.treeLen)) build.bySize.set(event.treeLen, []);
    build.bySize.get(event.treeLen).push(event.verifyUs / 1000);
  }
  build.texts.add(text);
}

/** A build's median prefill, and its median step by tree size. */
function report(build) {
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const sizes = [...build.bySize]
    .sort((x, y) => x[0] - y[0])
    .map(([nodes, ms]) => `${nodes} node${nodes === 1 ? '' : 's'} ${median(ms).toFixed(2)} ms (${ms.length})`);
  console.log(`  ${build.name} (${build.pkg}): prefill ${median(build.prefill).toFixed(0)} ms; ${sizes.join(', ')}`);
}
