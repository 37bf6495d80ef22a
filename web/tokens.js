// Token spans coloured by where each token came from, shared by the page and <samd-demo>.
// Everything shown is built with textContent: model output is untrusted.

/** Where a committed token came from, in the order the legend lists them. */
export const SOURCES = [
  { id: 'dynamic', label: 'dynamic SAM', color: '#8fd18f' },
  { id: 'static', label: 'static SAM', color: '#8fb8f0' },
  { id: 'recycling', label: 'Token Recycling', color: '#f2c46d' },
  { id: 'lookup', label: 'lookup', color: '#d9a3e6' },
  { id: 'model', label: 'model', color: 'transparent' },
];

/** CSS colouring anything with a data-source; a shadow root needs its own copy. */
export const tokenCss = [
  '.tok { border-radius: 2px; }',
  '.legend { display: flex; flex-wrap: wrap; gap: .3em 1em; list-style: none; padding: 0; margin: .5em 0; }',
  '.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: -.1em; border: 1px solid #8886; border-radius: 2px; }',
  ...SOURCES.map((s) => `[data-source="${s.id}"] { background: ${s.color}; }`),
].join('\n');

/**
 * Appends one step's tokens to `container`, a span each. `step.pieces` holds each token's
 * text; a worker that sends only the step's `text` gets it all on the step's last token.
 */
export function appendStep(container, step) {
  const last = step.tokens.length - 1;
  const pieces = step.pieces ?? step.tokens.map((_, i) => (i === last ? step.text : ''));
  step.tokens.forEach((id, i) => {
    const span = document.createElement('span');
    span.className = 'tok';
    span.dataset.source = step.sources[i];
    span.title = `token ${id}: ${labelOf(step.sources[i])}`;
    span.textContent = pieces[i];
    container.append(span);
  });
  // Text released with no token of its own (the held-back tail of a cancelled run).
  const rest = pieces.slice(step.tokens.length).join('');
  if (rest) container.append(document.createTextNode(rest));
}

/** A legend: one swatch and label per source. */
export function legend() {
  const list = document.createElement('ul');
  list.className = 'legend';
  for (const s of SOURCES) {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.dataset.source = s.id;
    item.append(swatch, s.label);
    list.append(item);
  }
  return list;
}

function labelOf(source) {
  return SOURCES.find((s) => s.id === source)?.label ?? source;
}

/**
 * How a lane's token ids compare with the baseline's: `identical`, or the index of the
 * first token where they part (`at`). Speculation must not change the output, greedy or
 * sampled with the same seed, so the page says so, or shows where it broke.
 */
export function compareOutputs(baselineIds, ids) {
  const common = Math.min(baselineIds.length, ids.length);
  let at = 0;
  while (at < common && baselineIds[at] === ids[at]) at += 1;
  return { identical: at === baselineIds.length && at === ids.length, at, tokens: ids.length };
}

/** The dataset keys markStats sets. */
export const STATS_KEYS = ['done', 'mat', 'tokensPerS', 'generated', 'steps', 'readbacks', 'speedup'];

/** Sets the machine-readable attributes that tests and scripts read off a stats element. */
export function markStats(el, stats, speedup = null) {
  el.dataset.done = 'true';
  el.dataset.mat = String(stats.mat);
  el.dataset.tokensPerS = String(stats.tokensPerS);
  el.dataset.generated = String(stats.generated);
  el.dataset.steps = String(stats.steps);
  el.dataset.readbacks = String(stats.readbacks);
  if (speedup != null) el.dataset.speedup = String(speedup);
}
