// Browser tests of what the page promises when things go wrong, with the real worker and
// wasm: a download cut halfway, a cancel during the download and during a generation, two
// generations asked for at once, and the GPU device lost mid-generation. run.mjs imports
// this file, so one command runs all.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultRoots } from '../../scripts/serve.mjs';
import {
  cachedUrls,
  checkLanes,
  checkSpans,
  gpuModel,
  launch,
  maxTokens,
  model,
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
  waitForLanes,
} from './harness.mjs';

describe('robustness', () => {
  let server;
  before(async () => {
    server = await serve();
  });
  after(() => server?.close());

  /** Runs `body(page)` in a fresh browser on the race page opened with `params`. */
  async function withPage(params, body) {
    const browser = await launch();
    try {
      await openPage(browser.page, server, params);
      await body(browser.page);
    } finally {
      await browser.close();
    }
  }

  test('a download cut halfway shows a network error, caches nothing, and loading again works', { timeout: 2 * slow }, async () => {
    const lap = stopwatch('cut');
    const faulty = await serveFaulty(model, { cutAt: 20e6, cuts: 1 });
    const url = `${faulty.url}cut.gguf`;
    try {
      await withPage({ model: url }, async (page) => {
        await page.getByTestId('run').click();
        const error = await shownError(page, 'network');
        console.log(`  cut: ${error}`);
        assert.match(error, /broke off|ended after/, 'the error says the download broke off');
        assert.match(error, /load again/, 'the error says to load again');
        assert.equal(faulty.requests[0].sent, 20e6, 'the server cut the download at 20 MB');
        assert.ok(!(await cachedUrls(page)).includes(url), 'the partial download was cached');
        await screenshot(page, 'cut-download-error');
        lap('error shown');

        // The same URL again: the server now sends it whole, and it must come from the network.
        await race(page, 'cut-reload');
        await checkLanes(page);
        assert.equal(await page.getByTestId('device').getAttribute('data-from-cache'), 'false');
        assert.equal(faulty.requests.filter((r) => r.method === 'GET').length, 2);
        assert.ok((await cachedUrls(page)).includes(url), 'the whole download is cached');
        await screenshot(page, 'cut-download-recovered');
        lap('loaded again and ran');
      });
    } finally {
      await faulty.close();
    }
  });

  test('Cancel during the download stops it, says so, and the page still loads and runs', { timeout: 2 * slow }, async () => {
    const lap = stopwatch('cancel-load');
    // 256 KB per 50 ms: the 98 MB model would take 20 s.
    const faulty = await serveFaulty(model, { delayMs: 50 });
    try {
      await withPage({ model: `${faulty.url}slow.gguf` }, async (page) => {
        await page.getByTestId('load').click();
        await page.locator('[data-testid=progress-label]', { hasText: /^download: [1-9]/ }).waitFor({ timeout: slow });
        await page.getByTestId('cancel').click();
        const error = await shownError(page, 'cancelled');
        console.log(`  cancel-load: ${error}`);
        assert.match(error, /^Cancelled: .*cancelled/);
        const [get] = faulty.requests;
        // The page shows the error as the worker aborts the fetch; the server sees the
        // connection close a moment later (once, in CI, after the assertion below). Not
        // cancelled, the slow download would run on for 15 s more.
        for (let waited = 0; !get.closed && waited < 5000; waited += 50) {
          await new Promise((ok) => setTimeout(ok, 50));
        }
        console.log(`  cancel-load: the server sent ${(get.sent / 1e6).toFixed(1)} MB`);
        assert.ok(get.closed && get.sent < 50e6, `the download went on after the cancel (${get.sent} bytes sent)`);
        await screenshot(page, 'cancel-load');
        lap('cancelled');

        await page.getByTestId('model').fill(model);
        await race(page, 'cancel-load');
        await checkLanes(page);
        await screenshot(page, 'cancel-load-recovered');
        lap('loaded another URL and ran');
      });
    } finally {
      await faulty.close();
    }
  });

  test('Cancel during a generation keeps the text so far, and the next Run completes', { timeout: 2 * slow }, async () => {
    const lap = stopwatch('cancel-run');
    const max = 64;
    await withPage({ max: String(max), prompt: 'Write a long story about a dragon who learns to cook.' }, async (page) => {
      await page.getByTestId('run').click();
      await page.getByTestId('lane-ar-text').locator('span').nth(2).waitFor({ timeout: slow });
      await page.getByTestId('cancel').click();
      const stats = page.locator('[data-testid=lane-ar-stats][data-done=true]');
      await stats.waitFor({ timeout: slow });
      await page.locator('[data-testid=run]:enabled').waitFor();
      console.log(`  cancel-run: ${await stats.textContent()}`);
      assert.match(await stats.textContent(), /stop: cancelled/);
      const generated = Number(await stats.getAttribute('data-generated'));
      assert.ok(generated >= 3 && generated < max, `${generated} tokens generated`);
      await checkSpans(page, 'ar');
      const kept = await page.getByTestId('lane-ar-text').textContent();
      assert.ok(kept.length > 0, 'the text so far is kept');
      assert.equal(await page.getByTestId('lane-spec-stats').getAttribute('data-done'), null, 'the spec lane ran after a cancel');
      assert.ok(await page.getByTestId('error').isHidden(), 'a cancelled run is not an error');
      await screenshot(page, 'cancel-run');
      lap('cancelled');

      await race(page, 'cancel-run');
      const { ar } = await checkLanes(page);
      assert.ok(ar.startsWith(kept), 'greedy decoding continues the cancelled text');
      assert.match(await page.getByTestId('lane-ar-stats').textContent(), /stop: (max_tokens|eos)/);
      await screenshot(page, 'cancel-run-recovered');
      lap('ran again');
    });
  });

  test('two generations at once: the page runs one, the client queues, the worker refuses with busy', { timeout: 2 * slow }, async () => {
    const lap = stopwatch('twice');
    await withPage({}, async (page) => {
      // Run twice (a click and Ctrl+Enter) in one task: the second finds the page busy.
      await page.evaluate(() => {
        document.querySelector('[data-testid=run]').click();
        const enter = { key: 'Enter', ctrlKey: true, bubbles: true };
        document.querySelector('[data-testid=prompt]').dispatchEvent(new KeyboardEvent('keydown', enter));
      });
      await waitForLanes(page, 'twice');
      const { ar } = await checkLanes(page);
      await screenshot(page, 'twice');
      lap('the page ran once');

      const options = { prompt, maxTokens, modelUrl: new URL(model, server.url).href, clientUrl: `${server.url}client.js` };
      // The client queues a second generate behind the first: both complete.
      const queued = await page.evaluate(async ({ prompt, maxTokens, modelUrl, clientUrl }) => {
        const { SamdClient } = await import(clientUrl);
        const client = new SamdClient();
        try {
          await client.init('cpu');
          await client.load(modelUrl);
          const runs = ['ar', 'sam+tr'].map((method) => client.generate({ prompt, method, maxTokens }));
          return (await Promise.all(runs)).map((done) => done.text);
        } finally {
          client.terminate();
        }
      }, options);
      assert.deepEqual(queued, [ar, ar], 'the queued generations give the page text');
      lap('the client queued the second');

      // The worker itself refuses a request while another runs, and is unharmed by it.
      const direct = await page.evaluate(async ({ prompt, maxTokens, modelUrl }) => {
        const worker = new Worker('./worker.js', { type: 'module' });
        const replies = new Map();
        let wake = () => {};
        worker.onmessage = ({ data }) => {
          if (data.type !== 'step' && data.type !== 'progress') replies.set(data.id, data);
          wake();
        };
        const reply = async (id) => {
          while (!replies.has(id)) await new Promise((ok) => (wake = ok));
          return replies.get(id);
        };
        const generate = (id) => worker.postMessage({ type: 'generate', id, prompt, method: 'ar', maxTokens });
        try {
          worker.postMessage({ type: 'init', id: 1, backend: 'cpu' });
          await reply(1);
          worker.postMessage({ type: 'load', id: 2, modelUrl, corpusUrl: null });
          generate(3);
          const duringLoad = await reply(3);
          const loaded = (await reply(2)).type;
          generate(4);
          generate(5);
          const duringGenerate = await reply(5);
          return { duringLoad, loaded, duringGenerate, done: await reply(4) };
        } finally {
          worker.terminate();
        }
      }, options);
      for (const [refused, busyWith] of [[direct.duringLoad, 2], [direct.duringGenerate, 4]]) {
        assert.equal(refused.type, 'error');
        assert.equal(refused.kind, 'busy');
        assert.match(refused.message, new RegExp(`busy with request ${busyWith}`));
      }
      console.log(`  twice: the worker answered ${JSON.stringify(direct.duringGenerate.message)}`);
      assert.equal(direct.loaded, 'loaded');
      assert.equal(direct.done.type, 'done');
      assert.equal(direct.done.text, ar, 'the generation that ran gives the page text');
      lap('the worker refused the second');
    });
  });
  // The stand-in worker (tests/browser/fixtures/lose-device) destroys the engine's
  // WebGPU device during the first generation, then runs the real worker code.
  test('a GPU device lost mid-generation is reported as such, and a new engine takes over', { timeout: 3 * slow }, async () => {
    const lap = stopwatch('lost');
    const roots = [['/', join(repo, 'tests/browser/fixtures/lose-device')], ['/real/', join(repo, 'web')], ...defaultRoots];
    const lossy = await serve(roots);
    const browser = await launch();
    try {
      const { page } = browser;
      await openPage(page, lossy, { backend: 'webgpu', max: '4', model: gpuModel });
      await page.getByTestId('run').click();
      const error = page.getByTestId('error');
      await error.waitFor({ state: 'visible', timeout: slow });
      const text = await error.textContent();
      console.log(`  lost: ${text}`);
      assert.equal(await error.getAttribute('data-kind'), 'device-lost', text);
      assert.match(text, /device was lost/);
      assert.match(text, /destroyed/, 'the error gives the reason');
      await page.getByTestId('progress-label').filter({ hasText: 'Engine restarted; model reloaded.' }).waitFor({ timeout: slow });
      await screenshot(page, 'device-lost');
      lap('error shown, engine restarted');

      await race(page, 'lost', 3 * slow);
      await checkLanes(page);
      assert.equal(await page.getByTestId('device').getAttribute('data-backend'), 'webgpu');
      lap('ran on the new device');
    } finally {
      await browser.close();
      await lossy.close();
    }
  });
});
