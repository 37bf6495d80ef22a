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

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
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
export async function serve(roots = webRoots) {
  const requests = [];
  const server = await startServer({ port: 0, roots, log: (r) => requests.push(r) });
  return { ...server, requests };
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
