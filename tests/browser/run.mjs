// Browser tests of the race page and the <samd-demo> widget, in Debian's headless chromium
// (the CPU backend, and WebGPU through SwiftShader). Usage: node tests/browser/run.mjs
// Screenshots go to tests/artifacts/. See harness.mjs for the environment variables.
// The robustness tests (cut and slow downloads, cancels, concurrent requests) are in
// robustness.mjs, imported below so that this one command runs them all.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  backend,
  checkBuilt,
  checkLanes,
  gpuModel,
  launch,
  maxTokens,
  model,
  modelFetches,
  openPage,
  prompt,
  race,
  repo,
  screenshot,
  serve,
  serveFaulty,
  shownError,
  slow,
  stopwatch,
  waitUntil,
  webRoots,
} from './harness.mjs';

let server;
/** The AR text of the race test, for the WebGPU test to compare with. */
let cpuText = null;

before(async () => {
  checkBuilt();
  server = await serve();
  console.log(`serving ${server.url} (model ${model}, backend ${backend})`);
});
after(() => server?.close());

test('race page: both lanes give the same text, then a reload loads the model from the cache', { timeout: 3 * slow }, async () => {
  const lap = stopwatch('race');
  const browser = await launch();
  try {
    const { page } = browser;
    await openPage(page, server);
    lap('engine started');
    await race(page, 'race');
    lap('model loaded and both lanes ran');
    const { ar, mat } = await checkLanes(page);
    cpuText = backend === 'cpu' ? ar : null;
    console.log(`  race: ${JSON.stringify(ar)} (spec MAT ${mat})`);
    assert.equal(await page.getByTestId('device').getAttribute('data-from-cache'), 'false');
    await page.getByTestId('replay').click();
    await page.locator('[data-testid=lane-spec-stats][data-done=true]').waitFor({ timeout: slow });
    assert.equal(await page.getByTestId('lane-spec-text').textContent(), ar, 'the replay shows the same text');
    lap('replayed');
    await screenshot(page, 'race');

    const fetched = modelFetches(server);
    assert.ok(fetched >= 1, 'the model was fetched over the network');
    await page.reload();
    await page.locator('[data-testid=device][data-backend]').waitFor({ timeout: slow });
    await race(page, 'race-reload');
    lap('reloaded and ran again');
    assert.equal(modelFetches(server), fetched, 'the model was fetched again after a reload');
    assert.equal(await page.getByTestId('device').getAttribute('data-from-cache'), 'true');
    assert.equal((await checkLanes(page)).ar, ar, 'same text after the reload');
    await screenshot(page, 'race-from-cache');
  } finally {
    await browser.close();
  }
});

test('bad model URLs and a blank prompt show an error, and the model loaded before stays', { timeout: 2 * slow }, async () => {
  const lap = stopwatch('bad-url');
  const browser = await launch();
  // A file that says it is 5 GB (a 7B model's size) is refused before its download: the
  // server sends a few KB and hangs up, which a download would report as a cut connection.
  const huge = await serveFaulty('web/index.html', { announce: 5e9 });
  // The real model with its last weight renamed: it parses, its config and tokenizer are
  // fine, and only the weights' check finds it unusable.
  const lastWeight = 'blk.29.ffn_down.weight';
  const broken = await serveFaulty(model, {
    edit: (bytes) => {
      const at = bytes.indexOf(lastWeight);
      assert.ok(at > 0, `the model holds ${lastWeight}`);
      bytes[at + lastWeight.length - 1] = 'X'.charCodeAt(0);
    },
  });
  try {
    const { page } = browser;
    await openPage(page, server);
    await race(page, 'bad-url');
    const before = await checkLanes(page);
    lap('loaded and ran');
    const cases = [
      ['models/no-such-model.gguf', 'http'],
      ['index.html', 'corrupt'],
      [`${huge.url}huge.gguf`, 'too-big'],
      [`${broken.url}broken.gguf`, 'corrupt'],
    ];
    for (const [url, kind] of cases) {
      await page.getByTestId('model').fill(url);
      await page.getByTestId('run').click();
      const error = await shownError(page, kind);
      console.log(`  bad-url: ${url} -> ${error}`);
      assert.match(error, /still loaded/, 'the error says the model loaded before is still loaded');
      await screenshot(page, `bad-url-${kind}`);
    }
    assert.match(await page.getByTestId('error').textContent(), /missing weight "blk\.29\.ffn_down\.weight"/);
    lap('errors shown');
    // Back to the model loaded before: it is still there (a model released by the failed
    // load would make this run fail with 'no-model').
    await page.getByTestId('model').fill(model);
    const asked = await page.getByTestId('prompt').inputValue();
    await page.getByTestId('prompt').fill(' \n ');
    await page.getByTestId('run').click();
    const error = page.getByTestId('error');
    await error.waitFor({ state: 'visible', timeout: slow });
    assert.equal(await error.getAttribute('data-kind'), 'prompt', await error.textContent());
    console.log(`  bad-url: a blank prompt -> ${await error.textContent()}`);
    await page.getByTestId('prompt').fill(asked);
    await race(page, 'bad-url');
    // The text, not the MAT: the tree budget goes on learning what each node costs.
    assert.equal((await checkLanes(page)).ar, before.ar, 'the same text as before the bad loads');
    lap('recovered');
    await screenshot(page, 'bad-url-recovered');
  } finally {
    await browser.close();
    await huge.close();
    await broken.close();
  }
});

test('other models\' files load with the default corpus passed over; a named corpus that does not fit is refused', { timeout: 2 * slow }, async () => {
  const lap = stopwatch('other-model');
  const browser = await launch();
  // Qwen2 and Qwen3 files (random weights; scripts/make-tiny-qwen.py): another vocab than
  // the default corpus's, NEOX RoPE, and q/k/v biases or head norms.
  const archs = ['qwen2', 'qwen3'];
  const files = await Promise.all(archs.map((arch) => serveFaulty(`crates/samd-model/tests/fixtures/tiny_${arch}.gguf`)));
  try {
    const { page } = browser;
    for (const [i, arch] of archs.entries()) {
      const url = `${files[i].url}tiny_${arch}.gguf`;
      if (i === 0) await openPage(page, server, { model: url });
      else await page.getByTestId('model').fill(url);
      await race(page, `other-model-${arch}`);
      await checkLanes(page);
      const label = await page.getByTestId('progress-label').textContent();
      console.log(`  other-model: ${label}`);
      assert.match(label, new RegExp(`${arch}, 2 layers`));
      assert.match(label, /no static corpus: .*another model's tokenizer/);
      lap(`${arch} loaded without the default corpus and ran`);
    }
    // The same corpus named by another URL (the server ignores the query) is the user's
    // choice: it must fit.
    await page.getByTestId('corpus').fill(`${server.url}corpus/default.samdcorp?named`);
    await page.getByTestId('run').click();
    const error = await shownError(page, 'unsupported');
    assert.match(error, /does not fit this model/);
    lap('a named corpus of another tokenizer refused');
  } finally {
    await browser.close();
    await Promise.all(files.map((f) => f.close()));
  }
});

test('without WebGPU the page falls back to the CPU and says so', { timeout: 2 * slow }, async () => {
  const lap = stopwatch('cpu-fallback');
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await openPage(page, server, { backend: 'auto', max: '8' });
    const notice = page.getByTestId('fallback-notice');
    assert.ok(await notice.isVisible(), 'the fallback notice is visible');
    assert.equal(await page.getByTestId('device').getAttribute('data-backend'), 'cpu');
    assert.equal(await page.getByTestId('method').inputValue(), 'sam', 'the CPU drafts with SAM unless told otherwise');
    console.log(`  cpu-fallback: ${await notice.textContent()}`);
    await race(page, 'cpu-fallback');
    await checkLanes(page);
    lap('ran on the CPU');
    await screenshot(page, 'cpu-fallback');
  } finally {
    await browser.close();
  }
});

test('<samd-demo> runs embedded in a page of another origin', { timeout: 2 * slow }, async () => {
  const lap = stopwatch('widget');
  // The example page is served by a second origin, with its script tag pointing at the first.
  const site = await mkdtemp(join(tmpdir(), 'samd-site-'));
  const html = await readFile(join(repo, 'web/embed-example.html'), 'utf8');
  const rewritten = html.replace('src="samd-demo.js"', `src="${server.url}samd-demo.js"`);
  assert.notEqual(rewritten, html, 'embed-example.html loads samd-demo.js');
  await writeFile(join(site, 'embed-example.html'), rewritten);
  const host = await serve([['/', site], ...webRoots.filter(([prefix]) => prefix === '/models/')]);
  const browser = await launch();
  try {
    const { page } = browser;
    const before = server.requests.length;
    const query = new URLSearchParams({ model, 'max-tokens': String(maxTokens), backend, prompt });
    await page.goto(`${host.url}embed-example.html?${query}`);
    const state = await waitUntil(page, 'widget', () => {
      const root = document.querySelector('samd-demo').shadowRoot;
      const q = (id) => root?.querySelector(`[data-testid="${id}"]`);
      const error = q('error') && !q('error').hidden ? q('error').textContent : null;
      return { done: !!error || q('lane-1-stats')?.dataset.done === 'true', error, status: q('device')?.textContent ?? 'not upgraded' };
    });
    if (state.error) assert.fail(`the widget shows an error: ${state.error}`);
    lap('loaded and ran');
    const demo = page.locator('samd-demo');
    const base = await demo.getByTestId('lane-0-text').textContent();
    assert.ok(base.length > 0, 'the baseline lane is empty');
    assert.equal(await demo.getByTestId('lane-1-text').textContent(), base, 'the lanes differ');
    assert.ok(Number(await demo.getByTestId('lane-1-stats').getAttribute('data-mat')) >= 1);
    assert.equal(await demo.getByTestId('lane-1-stats').getAttribute('data-identical'), 'true', 'the widget says the lanes agree');
    assert.ok((await demo.locator('.text span[data-source]').count()) > 0, 'tokens carry their source');
    const fromWidgetOrigin = server.requests.slice(before).map((r) => r.path);
    assert.ok(fromWidgetOrigin.includes('/worker.js'), 'the worker comes from the widget origin');
    assert.ok(!host.requests.some((r) => r.path.endsWith('.js')), 'no script from the page origin');
    await screenshot(page, 'widget-cross-origin');
  } finally {
    await browser.close();
    await host.close();
    await rm(site, { recursive: true, force: true });
  }
});

// Here the only WebGPU adapter is SwiftShader, which runs the model at seconds a token
// where the CPU backend takes milliseconds: `auto` must pass it over, and say so.
test('auto passes a software WebGPU adapter over for the CPU, and says so', { timeout: slow }, async () => {
  const browser = await launch();
  try {
    const { page } = browser;
    await openPage(page, server, { backend: 'auto', max: '4' });
    assert.equal(await page.getByTestId('device').getAttribute('data-backend'), 'cpu');
    const notice = page.getByTestId('fallback-notice');
    assert.ok(await notice.isVisible(), 'the fallback notice is visible');
    assert.match(await notice.textContent(), /software/);
    console.log(`  software-adapter: ${await notice.textContent()}`);
  } finally {
    await browser.close();
  }
});

// SwiftShader runs WebGPU on the CPU at seconds per step even for the two-layer model, so
// this run stops after four tokens. It samples, from a nucleus and the same seed in both
// lanes: the draws' kernels, their replayed step graphs and the position-keyed noise that
// makes speculative sampling write plain sampling's text, in the browser.
test('WebGPU (SwiftShader) samples both lanes to the same text', { timeout: 4 * slow }, async () => {
  const lap = stopwatch('webgpu');
  const browser = await launch();
  try {
    const { page } = browser;
    await openPage(page, server, { backend: 'webgpu', max: '4', model: gpuModel });
    assert.equal(await page.getByTestId('device').getAttribute('data-backend'), 'webgpu');
    console.log(`  webgpu: ${await page.getByTestId('device').textContent()}`);
    for (const [id, value] of [['temperature', '0.8'], ['top-p', '0.9'], ['seed', '7']]) {
      await page.locator(`#${id}`).fill(value);
    }
    await race(page, 'webgpu', 3 * slow);
    const { ar } = await checkLanes(page);
    lap('ran');
    console.log(`  webgpu: ${JSON.stringify(ar)}; the CPU run began ${JSON.stringify(cpuText?.slice(0, 40))}`);
    await screenshot(page, 'webgpu');
  } finally {
    await browser.close();
  }
});

/**
 * `Engine.checkKernels()` on an engine of `backend`, created through the module's own
 * export rather than the page; asserts that it compared rows and that they agree.
 */
async function checkKernels(backend) {
  const browser = await launch();
  try {
    const { page } = browser;
    await page.goto(`${server.url}index.html?backend=cpu`);
    const result = await page.evaluate(async (backend) => {
      const wasm = await import('/pkg/samd_web.js');
      await wasm.default();
      const engine = await wasm.Engine.create(backend);
      return { device: engine.deviceInfo(), check: await engine.checkKernels() };
    }, backend);
    console.log(`  ${result.device.backend} (${result.device.adapter}): ${result.check?.message}`);
    assert.equal(result.device.backend, backend, `the check needs the ${backend} backend`);
    assert.ok(result.check.rows > 0);
    assert.ok(result.check.passed, result.check.message);
  } finally {
    await browser.close();
  }
}

// Our hand-written WGSL (shaders/) on the browser's WebGPU, compiled by Chrome's Tint
// rather than naga, against burn's ops and a host sort.
test('WebGPU (SwiftShader): the WGSL kernels agree with the reference ops', { timeout: slow }, () =>
  checkKernels('webgpu'));

// The CPU backend's wasm SIMD under V8: its products over quantised blocks and its
// attention must compute the scalar code's sums, and a tree's nodes must get the logits
// one-node steps give, bit for bit, or speculative output could differ from plain output
// at a near-tie.
test('CPU backend: the SIMD code equals the scalar code, and tree steps give plain decoding\'s logits', { timeout: slow }, () =>
  checkKernels('cpu'));

// The real model on the CPU backend against an independent numpy forward in float64: the
// kernel check holds the SIMD code to its scalar spec, and a slip in what both compute
// (a 1% error in Q4_1's minimum terms, tried on purpose) passed it while this failed.
test('CPU backend: the real model\'s logits and greedy reply agree with the numpy reference', { timeout: slow }, async () => {
  const browser = await launch();
  try {
    const { page } = browser;
    await page.goto(`${server.url}index.html?backend=cpu`);
    // In a worker of its own, since samd-web fetches only from a Worker scope.
    const report = await page.evaluate(async (model) => {
      const source = `
        import init, { Engine } from '${location.origin}/pkg/samd_web.js';
        try {
          await init();
          const engine = await Engine.create('cpu');
          await engine.load('${new URL(model, location.href).href}', null, () => {}, null);
          postMessage(await engine.checkReference());
        } catch (e) {
          postMessage({ passed: false, message: 'the check threw: ' + JSON.stringify(e) });
        }`;
      const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
      const worker = new Worker(url, { type: 'module' });
      return new Promise((resolve) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => resolve({ passed: false, message: `the worker failed: ${e.message}` });
      });
    }, model);
    console.log(`  cpu: ${report.message}`);
    assert.ok(report.oneByOne !== undefined && report.oneByOne !== null, 'the prompt a token at a time too');
    assert.ok(report.passed, report.message);
    assert.equal(report.greedyText, 'The capital of France is Paris.<|im_end|>');
  } finally {
    await browser.close();
  }
});

// Imported last, so that its tests run after these.
await import('./robustness.mjs');
