// A promise-based client for the samd worker (worker.js holds the protocol).
//
// Requests go through one queue, so a caller never sees 'busy' because of its own
// sequencing; only cancel() bypasses it. If the worker dies (a wasm trap), the client
// spawns a fresh one, sends the last init again and reloads the last loaded model (which
// then comes from Cache Storage), before any queued request runs.

/**
 * An `error` reply: `kind` is one of the protocol's error kinds, or 'fatal' for a crash;
 * a failed load's `kept` says whether the model loaded before is still loaded.
 */
export class SamdError extends Error {
  constructor(kind, message, kept = undefined) {
    super(message);
    this.name = 'SamdError';
    this.kind = kind;
    if (kept !== undefined) this.kept = kept;
  }
}

const finals = new Set(['device', 'loaded', 'done', 'cacheCleared']);

export class SamdClient {
  #workerUrl;
  #onCrash;
  #worker = null;
  #nextId = 1;
  /** The request in flight: {id, resolve, reject, onEvent}. */
  #pending = null;
  #tail = Promise.resolve();
  /** Settles once a crashed worker has been replaced; the queue waits for it. */
  #revival = Promise.resolve();
  #reviving = false;
  #init = null;
  #load = null;

  /**
   * `workerUrl` defaults to the worker.js beside this module. `onCrash(message, revival,
   * kind)` hears of a worker crash (`kind` 'fatal') or of a lost GPU device
   * ('device-lost'); `revival` settles when the replacement has the model again.
   */
  constructor({ workerUrl = new URL('./worker.js', import.meta.url), onCrash } = {}) {
    this.#workerUrl = new URL(workerUrl, location.href);
    this.#onCrash = onCrash;
    this.#spawn();
  }

  /** The last successful load: {modelUrl, corpusUrl, info}, or null. */
  get loaded() {
    return this.#load;
  }

  init(backend = 'auto') {
    const msg = { type: 'init', backend };
    return this.#enqueue(msg, null).then((device) => {
      this.#init = msg;
      return device;
    });
  }

  /**
   * URLs are resolved against the page, since the worker may live at a blob: URL.
   * `warmUp` is the protocol's: 'auto', 'on' or 'off'. With `corpusOptional`, a corpus
   * built with another model's tokenizer is passed over (the result's `corpusSkipped`
   * says so) rather than refused.
   */
  load(modelUrl, corpusUrl = null, onProgress = null, { warmUp = 'auto', corpusOptional = false } = {}) {
    const msg = {
      type: 'load',
      modelUrl: new URL(modelUrl, document.baseURI).href,
      corpusUrl: corpusUrl ? new URL(corpusUrl, document.baseURI).href : null,
      warmUp,
      corpusOptional,
    };
    return this.#enqueue(msg, onProgress).then(
      (info) => {
        this.#load = { modelUrl: msg.modelUrl, corpusUrl: msg.corpusUrl, msg, info };
        return info;
      },
      (e) => {
        if (e.kept === false) this.#load = null;
        throw e;
      },
    );
  }

  /** Resolves with the `done` message; `onStep` gets each `step`. */
  generate({ prompt, method = 'sam+tr', maxTokens = 64, raw = false, temperature = 0, topP = 1, seed = 0, stop = [] }, onStep = null) {
    return this.#enqueue({ type: 'generate', prompt, method, maxTokens, raw, temperature, topP, seed, stop }, onStep);
  }

  /** Stops the running request (not the queued ones); it then settles as the protocol says. */
  cancel() {
    if (this.#pending) this.#worker?.postMessage({ type: 'cancel' });
  }

  clearCache() {
    return this.#enqueue({ type: 'clearCache' }, null);
  }

  /** Ends the worker for good; the request in flight fails. */
  terminate() {
    this.#worker?.terminate();
    this.#worker = null;
    this.#fail(new SamdError('cancelled', 'the client was closed'));
    this.#workerUrl = null;
  }

  #enqueue(msg, onEvent) {
    const task = this.#tail.then(async () => {
      await this.#revival;
      if (!this.#workerUrl) throw new SamdError('cancelled', 'the client was closed');
      if (!this.#worker) await this.#revive(msg.type !== 'init');
      return this.#exchange(msg, onEvent);
    });
    this.#tail = task.catch(() => {});
    return task;
  }

  #exchange(msg, onEvent) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending = { id, resolve, reject, onEvent };
      this.#worker.postMessage({ ...msg, id });
    });
  }

  /**
   * A module worker must come from the page's origin. When this module was loaded from
   * another one (an embedded <samd-demo>), a same-origin blob worker imports the real
   * worker instead; that one finds pkg/ from its own import.meta.url.
   */
  #spawn() {
    let url = this.#workerUrl;
    if (url.origin !== location.origin) {
      const source = `import ${JSON.stringify(url.href)};`;
      url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
    }
    const worker = new Worker(url, { type: 'module' });
    worker.onmessage = (e) => this.#receive(worker, e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      this.#crash(worker, e.message || 'the worker failed to start or crashed');
    };
    worker.onmessageerror = () => this.#crash(worker, 'a worker message could not be read');
    this.#worker = worker;
  }

  #receive(worker, msg) {
    if (worker !== this.#worker) return;
    if (msg.type === 'fatal') return this.#crash(worker, msg.message, msg.kind);
    const pending = this.#pending;
    if (!pending || msg.id !== pending.id) return;
    if (msg.type === 'error') {
      this.#pending = null;
      pending.reject(new SamdError(msg.kind, msg.message, msg.kept));
    } else if (finals.has(msg.type)) {
      this.#pending = null;
      pending.resolve(msg);
    } else {
      pending.onEvent?.(msg);
    }
  }

  /** The worker is gone (`kind` 'fatal', or 'device-lost'): a fresh one takes over. */
  #crash(worker, message, kind = 'fatal') {
    if (worker !== this.#worker) return;
    worker.terminate();
    this.#worker = null;
    const reviving = this.#reviving;
    this.#fail(new SamdError(kind, message));
    // A crash while reviving is left to the next request, so a model that kills the
    // worker on every load cannot loop.
    if (reviving || !this.#init) return;
    this.#revival = this.#revive(true).catch(() => {});
    this.#onCrash?.(message, this.#revival, kind);
  }

  /** A fresh worker; with `replay`, the last init and the last successful load again. */
  async #revive(replay) {
    this.#reviving = true;
    try {
      this.#spawn();
      if (!replay || !this.#init) return;
      await this.#exchange(this.#init, null);
      const load = this.#load;
      this.#load = null;
      if (load) this.#load = { ...load, info: await this.#exchange(load.msg, null) };
    } finally {
      this.#reviving = false;
    }
  }

  #fail(error) {
    const pending = this.#pending;
    this.#pending = null;
    pending?.reject(error);
  }
}
