// The first race after a load against later ones (a benchmark, not a test). Each race
// runs plain decoding, then the speculative method, through the worker client, as the
// race page does; per run it prints the prefill, the decode speed, and every step's tree
// size and verify time, so that a step that compiled pipelines or captured a step graph
// shows beside a later step of its size. On WebGPU the first race pays those for every
// new tree size unless the load warmed them up (`--warmup`).
// Usage: node tests/browser/first-race.mjs [--backend webgpu] [--warmup auto|on|off]
//   [--races 2] [--max 12] [--method sam+tr] [--model PATH] [--corpus PATH] [--prompt T]
// — after scripts/build-web.sh. The model defaults to the WebGPU test's (the 2-layer cut
// when present: SwiftShader takes seconds per step).
import { parseArgs } from 'node:util';
import { gpuModel, launch, prompt, serve } from './harness.mjs';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'webgpu' },
    warmup: { type: 'string', default: 'auto' },
    races: { type: 'string', default: '2' },
    max: { type: 'string', default: '12' },
    method: { type: 'string', default: 'sam+tr' },
    model: { type: 'string', default: gpuModel },
    corpus: { type: 'string', default: 'corpus/default.samdcorp' },
    prompt: { type: 'string', default: prompt },
  },
});
const server = await serve();
const browser = await launch();
try {
  const { page } = browser;
  page.setDefaultTimeout(0);
  // Any page of the server's origin will do: the client runs the worker itself.
  await page.goto(`${server.url}client.js`);
  const options = {
    ...values,
    clientUrl: `${server.url}client.js`,
    modelUrl: new URL(values.model, server.url).href,
    corpusUrl: values.corpus ? new URL(values.corpus, server.url).href : null,
  };
  const out = await page.evaluate(async (o) => {
    const { SamdClient } = await import(o.clientUrl);
    const client = new SamdClient();
    try {
      const device = await client.init(o.backend);
      const started = performance.now();
      const loaded = await client.load(o.modelUrl, o.corpusUrl, null, { warmUp: o.warmup });
      const loadMs = performance.now() - started;
      const races = [];
      for (let i = 0; i < Number(o.races); i++) {
        const runs = [];
        for (const method of ['ar', o.method]) {
          const steps = [];
          const request = { prompt: o.prompt, method, maxTokens: Number(o.max) };
          const done = await client.generate(request, (s) => steps.push([s.treeLen, s.verifyUs]));
          runs.push({ method, stats: done.stats, steps: steps.slice(1) });
        }
        races.push(runs);
      }
      return { device, loaded, loadMs, races };
    } finally {
      client.terminate();
    }
  }, options);
  const warm = out.loaded.warmUp;
  console.log(`device: ${out.device.backend} · ${out.device.adapter}; ${JSON.stringify(values)}`);
  console.log(
    `load: ${(out.loadMs / 1000).toFixed(1)} s` +
      (warm ? `, warm-up ${(warm.ms / 1000).toFixed(1)} s (${warm.passes} passes, ${warm.graphs} step graphs)` : ', no warm-up'),
  );
  out.races.forEach((runs, i) => {
    const [ar, spec] = runs.map((r) => r.stats.tokensPerS);
    console.log(`race ${i + 1}: ${runs[1].method} ${(spec / ar).toFixed(2)}x AR`);
    for (const { method, stats, steps } of runs) {
      const list = steps.map(([n, us]) => `${n}:${(us / 1000).toFixed(0)}`).join(' ');
      console.log(
        `  ${method}: ${stats.tokensPerS.toFixed(3)} tok/s, prefill ${stats.prefillMs.toFixed(0)} ms, ` +
          `MAT ${stats.mat.toFixed(2)}, steps (nodes:verify ms) ${list}`,
      );
    }
  });
} finally {
  await browser.close();
  server.close();
}
