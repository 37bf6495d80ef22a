// samd against transformers.js, side by side in one headless Chromium (a benchmark, not a
// test; scripts/peer-web.sh installs what it needs and runs it).
//
// Both decode the same prompt ids greedily on the CPU, in wasm, one after the other:
// - samd: the demo's worker on its CPU backend, plain decoding (AR) and SAM+TR;
// - transformers.js 4 (onnxruntime-web, wasm SIMD) over the same weights, written as ONNX
//   by scripts/make-onnx-peer.py: in float32 (exactly our weights), and in onnxruntime's
//   4-bit blocks (the format of transformers.js's own q4 models, which cannot hold Q4_1
//   exactly, so its text may part from ours).
// The prompt's ids come from `samd generate --json` (the chat template applied once, by
// us), so both sides start from the same tokens; the peer's greedy ids are compared with
// our AR's. Figures: prefill ms, and decode tokens/s after the first token, each side's
// own timer.
//
// Usage: node tests/browser/peer-web.mjs --samd BIN [--prompt TEXT] [--max N]
//        [--onnx DIR] [--threads N] [--reps N]
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultRoots } from '../../scripts/serve.mjs';
import { launch, model, repo, serve } from './harness.mjs';

const { values } = parseArgs({
  options: {
    samd: { type: 'string' },
    prompt: { type: 'string', default: 'List the planets of the solar system, one per line, with one sentence about each.' },
    max: { type: 'string', default: '64' },
    onnx: { type: 'string', default: join(repo, 'models/peer-onnx/SmolLM2-135M-Instruct') },
    threads: { type: 'string', default: '1' },
    reps: { type: 'string', default: '2' },
  },
});
/** SmolLM2's <|im_end|>. */
const END_OF_TURN = 2;
if (!values.samd) throw new Error('--samd BIN: the native samd binary, for the prompt ids');

const generated = JSON.parse(
  execFileSync(values.samd, ['generate', '--json', '--max-tokens', '1', '--model', join(repo, model), '--', values.prompt], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }),
);
const ids = generated.prompt_ids;
/** onnxruntime-web runs more than one thread only in a cross-origin isolated page. */
const isolated =
  Number(values.threads) > 1
    ? { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' }
    : {};
console.log(`prompt: ${ids.length} tokens; at most ${values.max} new tokens`);

const server = await serve([
  ['/peer/', join(repo, 'tests/peer/node_modules')],
  ['/peer-model/SmolLM2-135M-Instruct/', values.onnx],
  ['/bench/', join(repo, 'tests/browser')],
  ...defaultRoots,
], isolated);
const browser = await launch({ webgpu: false });
try {
  const page = await browser.context.newPage();
  for (let rep = 1; rep <= Number(values.reps); rep += 1) {
    await page.goto(`${server.url}index.html?backend=cpu&max=1`);
    const ours = {};
    for (const method of ['ar', 'sam+tr']) {
      ours[method] = await page.evaluate(runSamd, { method, prompt: values.prompt, max: Number(values.max), model });
    }
    const peers = [];
    for (const dtype of ['fp32', 'q8', 'q4']) {
      const q = new URLSearchParams({ ids: ids.join(','), max: values.max, threads: values.threads, dtype });
      await page.goto(`${server.url}bench/peer-transformersjs.html?${q}`);
      const peer = await page.waitForFunction(() => window.peerResult, null, { timeout: 900_000, polling: 500 }).then((h) => h.jsonValue());
      if (peer.error) throw new Error(`transformers.js (${dtype}): ${peer.error}`);
      peers.push(peer);
    }
    report(rep, ours, peers);
  }
} finally {
  await browser.close();
  server.close();
}

/** In the page: one generation through the demo's worker client; its stats and ids. */
async function runSamd({ method, prompt, max, model }) {
  const { SamdClient } = await import('/client.js');
  const client = (window.samdClient ??= new SamdClient({ workerUrl: '/worker.js' }));
  if (!window.samdLoaded) {
    await client.init('cpu');
    await client.load(`/${model}`, '/corpus/default.samdcorp');
    await client.generate({ prompt, method: 'ar', maxTokens: 2 }); // warm-up, as the peer's
    window.samdLoaded = true;
  }
  const tokens = [];
  const done = await client.generate({ prompt, method, maxTokens: max }, (step) => tokens.push(...step.tokens));
  return { tokens, stats: done.stats };
}

function report(rep, ours, peers) {
  const ar = ours.ar.stats;
  const spec = ours['sam+tr'].stats;
  const best = Math.max(...peers.map((p) => p.tokensPerS));
  console.log(`\nrun ${rep} (Chromium, CPU, wasm; transformers.js: ${peers[0].threads} thread(s), crossOriginIsolated ${peers[0].isolated})`);
  console.log('| engine | weights | method | tokens | prefill ms | decode tok/s | × the faster peer |');
  console.log('|---|---|---|---|---|---|---|');
  const row = (engine, weights, method, tokens, prefill, tps) =>
    console.log(`| ${engine} | ${weights} | ${method} | ${tokens} | ${prefill.toFixed(0)} | ${tps.toFixed(1)} | ${(tps / best).toFixed(2)} |`);
  for (const peer of peers) {
    const weights = { fp32: 'float32', q8: '8-bit, dynamic (requantised)', q4: '4-bit blocks (requantised)' }[peer.dtype];
    row('transformers.js 4.3.2', weights, 'AR', peer.ids.length, peer.prefillMs, peer.tokensPerS);
  }
  row('samd', 'the GGUF (Q4_1)', 'AR', ar.generated, ar.prefillMs, ar.tokensPerS);
  row('samd', 'the GGUF (Q4_1)', 'SAM+TR', spec.generated, spec.prefillMs, spec.tokensPerS);
  for (const peer of peers) {
    // The peer's ids end with the end-of-turn token, which our stream does not carry.
    const peerIds = peer.ids.at(-1) === END_OF_TURN ? peer.ids.slice(0, -1) : peer.ids;
    const firstDiff = ours.ar.tokens.findIndex((id, i) => id !== peerIds[i]);
    const same = ours.ar.tokens.length === peerIds.length && firstDiff < 0;
    console.log(
      same
        ? `${peer.dtype}: the peer's ${peerIds.length} greedy ids equal our AR's`
        : `${peer.dtype}: the peer's greedy ids part from our AR's at token ${firstDiff < 0 ? Math.min(ours.ar.tokens.length, peerIds.length) : firstDiff} (of ${ours.ar.tokens.length} and ${peerIds.length})`,
    );
  }
}
