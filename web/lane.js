// One lane of the race page: streamed tokens, stats, a per-step timeline and the
// accepted-length histogram. It keeps the run's steps so Race replay can play them again.

import { STATS_KEYS, appendStep, markStats } from './tokens.js';

export class Lane {
  /** `root` is an article holding [data-testid$=-text|-stats|-timeline|-histogram]. */
  constructor(root) {
    const part = (name) => root.querySelector(`[data-testid$="-${name}"]`);
    this.text = part('text');
    this.stats = part('stats');
    this.timelineEl = part('timeline');
    this.histogramEl = part('histogram');
    /** The recorded run: its steps and its `done` message. */
    this.steps = [];
    this.done = null;
  }

  /** Empties the view; `keepRecord` keeps the recording for a replay. */
  clear(keepRecord = false) {
    this.text.replaceChildren();
    this.stats.textContent = '';
    for (const key of STATS_KEYS) delete this.stats.dataset[key];
    this.timelineEl.replaceChildren();
    this.histogramEl.replaceChildren();
    if (!keepRecord) {
      this.steps = [];
      this.done = null;
    }
  }

  /** Generates with `client`, streaming into the lane; resolves with the `done` message. */
  async run(client, options, baseline = null) {
    const done = await client.generate(options, (step) => this.step(step));
    this.finish(done, baseline);
    return done;
  }

  /** Shows one step; `record` is false while replaying. */
  step(step, record = true) {
    if (record) this.steps.push(step);
    appendStep(this.text, step);
    const tokens = this.text.childElementCount;
    this.stats.textContent = `${tokens} tokens · ${(step.atMs / 1000).toFixed(2)} s`;
  }

  /** Shows the final stats; `baseline` (the AR lane's done) adds the speedup. */
  finish(done, baseline = null) {
    this.done = done;
    const s = done.stats;
    const speedup = baseline?.stats.tokensPerS > 0 ? s.tokensPerS / baseline.stats.tokensPerS : null;
    const parts = [
      `${s.tokensPerS.toFixed(1)} tok/s`,
      `MAT ${s.mat.toFixed(2)}`,
      `${s.steps} steps`,
      `${s.readbacks} readbacks`,
      `prefill ${Math.round(s.prefillMs)} ms`,
      `stop: ${done.stop}`,
    ];
    if (speedup != null) parts.unshift(`${speedup.toFixed(2)}× vs AR`);
    this.stats.textContent = parts.join(' · ');
    markStats(this.stats, s, speedup);
    this.#histogram(s.histogram);
  }

  /** Draws the steps on a time axis of `scaleMs` (shared by both lanes, so widths compare). */
  timeline(scaleMs) {
    const most = Math.max(1, ...this.steps.map((s) => s.tokens.length));
    let before = 0;
    const bars = this.steps.map((s) => {
      const bar = document.createElement('span');
      bar.dataset.source = s.sources.find((src) => src !== 'model') ?? 'model';
      bar.style.left = `${(100 * before) / scaleMs}%`;
      bar.style.width = `${(100 * (s.atMs - before)) / scaleMs}%`;
      bar.style.height = `${(100 * s.tokens.length) / most}%`;
      bar.title = `${s.tokens.length} tokens in ${(s.atMs - before).toFixed(0)} ms`;
      before = s.atMs;
      return bar;
    });
    this.timelineEl.replaceChildren(...bars);
  }

  #histogram(histogram) {
    const most = Math.max(1, ...histogram);
    const first = histogram[0] ? 0 : 1;
    const bars = histogram.slice(first).map((count, i) => {
      const bar = document.createElement('div');
      const fill = document.createElement('span');
      fill.style.height = `${(100 * count) / most}%`;
      const label = document.createElement('small');
      label.textContent = String(first + i);
      bar.title = `${count} steps committed ${first + i} tokens`;
      bar.append(fill, label);
      return bar;
    });
    this.histogramEl.replaceChildren(...bars);
  }
}
