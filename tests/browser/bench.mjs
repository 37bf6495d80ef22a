// Browser figures for docs/BENCHMARKS.md (a benchmark, not a test): start-up time of the
// page (navigation to engine ready) per backend, and one race on the CPU backend.
// Usage: node tests/browser/bench.mjs [--prompt TEXT] [--max N] [--method M] — after
// scripts/build-web.sh. M is the spec lane's method (default sam+tr).
import { parseArgs } from 'node:util';
import { launch, model, serve } from './harness.mjs';

const { values } = parseArgs({
  options: {
    prompt: { type: 'string', default: 'List the planets of the solar system, one per line, with one sentence about each.' },
    max: { type: 'string', default: '48' },
    method: { type: 'string', default: 'sam+tr' },
  },
});
const server = await serve();
const browser = await launch();
try {
  for (const backend of ['webgpu', 'cpu']) {
    const page = await browser.context.newPage();
    const q = new URLSearchParams({ backend, model, max: values.max, method: values.method, prompt: values.prompt });
    await page.goto(`${server.url}index.html?${q}`);
    await page.locator('[data-testid=device][data-backend]').waitFor({ timeout: 60_000 });
    const ready = await page.evaluate(() => performance.now());
    console.log(`${backend}: engine ready ${ready.toFixed(0)} ms after navigation start`);
    if (backend === 'cpu') {
      await page.getByTestId('run').click();
      await page.locator('[data-testid=lane-spec-stats][data-done=true]').waitFor({ timeout: 600_000 });
      for (const lane of ['ar', 'spec']) console.log(`${lane}: ${await page.getByTestId(`lane-${lane}-stats`).textContent()}`);
    }
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
