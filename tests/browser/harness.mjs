// Shared set-up for the browser tests: servers on free ports with request logs, and
// Debian's chromium driven by playwright-core with a fresh profile each time.
//
// Environment:
//   SAMD_TEST_MODEL    model path under the served root (models/SmolLM2-135M-Instruct.Q4_1.gguf)
//   SAMD_TEST_GPU_MODEL the model of the WebGPU test (models/smollm2-135m-2layers.gguf when
//                      present: `samd shrink-model --layers 2` makes it; SwiftShader takes
//                      seconds per step even so)
//   SAMD_TEST_BACKEND  backend most tests ask for (cpu: SwiftShader's WebGPU takes minutes per
//                      token, so only one short test uses it; set auto on a machine with a GPU)
//   SAMD_TEST_OVERLAY  a folder whose files shadow web/ (e.g. a stand-in worker.js), to test
//                      the page before the wasm is built
//   CHROMIUM           the browser (/usr/bin/chromium)

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { defaultRoots, startServer } from '../../scripts/serve.mjs';

export const repo = fileURLToPath(new URL('../../', import.meta.url));
export const model = process.env.SAMD_TEST_MODEL ?? 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
export const gpuModel =
  process.env.SAMD_TEST_GPU_MODEL ??
  (existsSync(join(repo, 'models/smollm2-135m-2layers.gguf')) ? 'models/smollm2-135m-2layers.gguf' : model);
export const backend = process.env.SAMD_TEST_BACKEND ?? 'cpu';
/** The race page's defaults in the tests: short runs of a prompt with a one-line answer. */
export const maxTokens = 12;
export const prompt = 'What is the capital of France? Answer in one sentence.';
const sources = new Set(['model', 'dynamic', 'static', 'recycling', 'lookup']);
const overlay = process.env.SAMD_TEST_OVERLAY;
const artifacts = join(repo, 'tests/artifacts');

/** Generous: a loaded 2-core machine loads the 98 MB model and runs both lanes in a minute. */
export const slow = 5 * 60_000;

/** The web roots, with the overlay first when there is one. */
export const webRoots = overlay ? [['/', overlay], ...defaultRoots] : defaultRoots;

/** Fails early, and plainly, when there is nothing to test. */
export function checkBuilt() {
  if (!existsSync(join(repo, model))) throw new Error(`no model at ${model}: run scripts/fetch-model.sh`);
  if (!overlay && !existsSync(join(repo, 'web/pkg/samd_web.js'))) {
    throw new Error('web/pkg/samd_web.js is missing: run scripts/build-web.sh first');
  }
}

/** A server on a free port that records every request. */
export async function serve(roots = webRoots, headers = {}) {
  const requests = [];
  const server = await startServer({ port: 0, roots, headers, log: (r) => requests.push(r) });
  return { ...server, requests };
}

/**
 * A second origin serving `file` at every path, with the faults a download must survive:
 * the first `cuts` GETs announce the whole length but lose the connection after `cutAt`
 * bytes, `delayMs` before each 256 KB chunk makes a slow network, `announce` claims
 * that many bytes instead of the file's length, and `edit(bytes)` changes the file's
 * bytes in place first. Each request is logged as {method, path, sent, closed}.
 */
export async function serveFaulty(file, { cutAt = Infinity, cuts = 0, delayMs = 0, announce, edit } = {}) {
  const data = await readFile(join(repo, file));
  edit?.(data);
  const requests = [];
  const server = createServer(async (req, res) => {
    const log = { method: req.method, path: req.url, sent: 0, closed: false };
    requests.push(log);
    res.on('close', () => (log.closed = true));
    res.on('error', () => {});
    res.writeHead(200, { 'Access-Control-Allow-Origin': '*', 'Content-Type': 'application/octet-stream', 'Content-Length': announce ?? data.length });
    if (req.method !== 'GET') return res.end();
    const gets = requests.filter((r) => r.method === 'GET').length;
    const end = gets <= cuts ? Math.min(cutAt, data.length) : data.length;
    while (log.sent < end && !res.destroyed) {
      if (delayMs) await new Promise((ok) => setTimeout(ok, delayMs));
      const chunk = data.subarray(log.sent, Math.min(log.sent + (1 << 18), end));
      // One chunk in flight at a time: once its callback runs it is with the kernel, so a
      // cut below comes after exactly `cutAt` bytes.
      await new Promise((ok) => res.write(chunk, ok));
      log.sent += chunk.length;
    }
    if (end < (announce ?? data.length)) res.destroy();
    else res.end();
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((ok) => server.close(ok));
    },
  };
}

/**
 * A browser with a fresh profile. With `webgpu` false the unsafe-WebGPU switch is left
 * out: navigator.gpu still exists but offers no adapter, so the engine must use the CPU.
 */
export async function launch({ webgpu = true } = {}) {
  const profile = await mkdtemp(join(tmpdir(), 'samd-chromium-'));
  const args = [
    '--headless=new',
    '--no-sandbox',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ];
  if (webgpu) args.push('--enable-unsafe-webgpu');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    ignoreDefaultArgs: ['--headless'],
    args,
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.log(`  [browser ${m.type()}] ${m.text()}`);
  });
  page.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));
  return {
    context,
    page,
    close: async () => {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** The race page with the test's defaults, once the engine has reported its device. */
export async function openPage(page, server, params = {}) {
  const query = new URLSearchParams({ model, backend, max: String(maxTokens), prompt, ...params });
  await page.goto(`${server.url}index.html?${query}`);
  await page.locator('[data-testid=device][data-backend]').waitFor({ timeout: slow });
}

/** Clicks Run and waits for the spec lane, or fails with the page's error. */
export async function race(page, name, timeout = slow) {
  await page.getByTestId('run').click();
  await waitForLanes(page, name, timeout);
}

/** Waits for the spec lane of a run already started, or fails with the page's error. */
export async function waitForLanes(page, name, timeout = slow) {
  const state = await waitUntil(
    page,
    name,
    () => {
      const q = (id) => document.querySelector(`[data-testid="${id}"]`);
      const error = q('error').hidden ? null : q('error').textContent;
      const lanes = ['ar', 'spec'].map((l) => (q(`lane-${l}-stats`).dataset.done ? `${l} done` : '')).join(' ');
      return { done: !!error || q('lane-spec-stats').dataset.done === 'true', error, status: `${q('progress-label').textContent} ${lanes}` };
    },
    timeout,
  );
  if (state.error) assert.fail(`the page shows an error: ${state.error}`);
}

/** Both lanes are done, non-empty and equal, and every token span names its source. */
export async function checkLanes(page) {
  const ar = await page.getByTestId('lane-ar-text').textContent();
  const spec = await page.getByTestId('lane-spec-text').textContent();
  assert.ok(ar.length > 0, 'the AR lane is empty');
  assert.equal(spec, ar, 'speculative decoding changed the text');
  const stats = page.getByTestId('lane-spec-stats');
  assert.ok(Number(await stats.getAttribute('data-mat')) >= 1, 'MAT below 1');
  assert.ok(Number(await stats.getAttribute('data-tokens-per-s')) > 0, 'no tok/s');
  for (const lane of ['ar', 'spec']) await checkSpans(page, lane);
  const verdict = page.getByTestId('verdict');
  assert.equal(await verdict.getAttribute('data-identical'), 'true', await verdict.textContent());
  assert.ok(await verdict.isVisible(), 'the page says whether the lanes agree');
  assert.ok(await page.getByTestId('error').isHidden(), 'no error is shown');
  return { ar, mat: await stats.getAttribute('data-mat') };
}

/** A finished lane shows one span per generated token, each naming its source. */
export async function checkSpans(page, lane) {
  const spans = await page.getByTestId(`lane-${lane}-text`).locator('span').evaluateAll((els) => els.map((e) => e.dataset.source));
  const generated = Number(await page.getByTestId(`lane-${lane}-stats`).getAttribute('data-generated'));
  assert.equal(spans.length, generated, `${lane}: one span per generated token`);
  for (const s of spans) assert.ok(sources.has(s), `${lane}: token source ${s}`);
}

/**
 * Waits for the error of a failed load, checks its kind, that the stale progress is gone and
 * that the page is usable again; returns its text.
 */
export async function shownError(page, kind) {
  const error = page.getByTestId('error');
  await error.waitFor({ state: 'visible', timeout: slow });
  const text = await error.textContent();
  assert.equal(await error.getAttribute('data-kind'), kind, text);
  await page.locator('[data-testid=run]:enabled').waitFor();
  assert.ok(await page.getByTestId('progress-area').isHidden(), 'the progress of the failed load is still shown');
  return text;
}

/** The URLs in the page origin's Cache Storage, where the worker keeps whole downloads. */
export const cachedUrls = (page) =>
  page.evaluate(async () => {
    const urls = [];
    for (const name of await caches.keys()) for (const r of await (await caches.open(name)).keys()) urls.push(r.url);
    return urls;
  });

/**
 * Polls `summary` (a function run in the page) until it returns {done: true}, logging each
 * change of its `status` so a slow run shows where it is; on timeout, screenshots the page.
 */
export async function waitUntil(page, name, summary, timeout = slow) {
  const start = performance.now();
  let last = '';
  for (;;) {
    const state = await page.evaluate(summary);
    if (state.status !== last) {
      console.log(`  ${name}: ${((performance.now() - start) / 1000).toFixed(1)} s ${state.status}`);
      last = state.status;
    }
    if (state.done) return state;
    if (performance.now() - start > timeout) {
      await screenshot(page, `${name}-timeout`);
      throw new Error(`${name}: not done after ${timeout / 1000} s; last: ${last}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

export async function screenshot(page, name) {
  await mkdir(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

/** Logs how long each phase of a test took. */
export function stopwatch(test) {
  const start = performance.now();
  let last = start;
  return (what) => {
    const now = performance.now();
    console.log(`  ${test}: ${what} after ${((now - last) / 1000).toFixed(1)} s (total ${((now - start) / 1000).toFixed(1)} s)`);
    last = now;
  };
}

/** GETs of the model file seen by `server` so far. */
export const modelFetches = (server) => server.requests.filter((r) => r.method === 'GET' && r.path.endsWith('.gguf')).length;
