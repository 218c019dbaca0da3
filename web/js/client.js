// The page's side of the worker protocol: one worker, requests with ids, promises for results.
// Errors arrive as protocol.js classes (test `err.code`). When the worker reports itself unusable
// (the GPU device lost, a wasm panic) or dies, its requests are rejected with that error and a
// fresh worker takes its place at the next request; the model cache (Cache Storage) survives, so
// the next run works.
import { Kind, Panic, PANIC_SENTENCE, errorFrom } from './protocol.js';

let nextId = 1;

/**
 * Start the worker (`precision`: "auto" or "f32", see `choosePrecision`; `faults`: the test
 * faults on). From another site (the widget), wrap it in a same-origin blob worker.
 */
function startWorker(precision, faults) {
  const url = new URL('./worker.js', import.meta.url);
  if (precision && precision !== 'auto') url.searchParams.set('precision', precision);
  if (faults) url.searchParams.set('faults', '1');
  if (url.origin === location.origin) return new Worker(url, { type: 'module' });
  const shim = new Blob([`import ${JSON.stringify(url.href)};`], { type: 'text/javascript' });
  return new Worker(URL.createObjectURL(shim), { type: 'module' });
}

export class Client {
  constructor({ precision = 'auto', faults = false } = {}) {
    this.options = { precision, faults };
    this.pending = new Map();
    /** Workers started after one failed (for tests and the console). */
    this.restarts = 0;
    this.worker = this.start();
  }

  start() {
    const worker = startWorker(this.options.precision, this.options.faults);
    worker.onmessage = ({ data: { kind, id, payload } }) => {
      if (kind === Kind.FATAL) {
        this.replace(worker, errorFrom(payload));
        return;
      }
      const p = this.pending.get(id);
      if (!p) return;
      if (kind === Kind.PROGRESS) p.onProgress?.(payload);
      else if (kind === Kind.PREVIEW) p.onPreview?.(payload);
      else {
        this.pending.delete(id);
        if (kind === Kind.RESULT) p.resolve(payload);
        else p.reject(errorFrom(payload));
      }
    };
    // An uncaught error in the worker leaves it in an unknown state: treated like a panic.
    worker.onerror = (event) => {
      console.error(`The worker failed: ${event.message ?? 'unknown error'}`);
      this.replace(worker, new Panic(PANIC_SENTENCE));
    };
    return worker;
  }

  /**
   * Reject every pending request of `worker` with `err` and let it go; the next request starts a
   * fresh worker (lazily, so a worker that cannot even start is not restarted in a loop).
   */
  replace(worker, err) {
    if (worker !== this.worker) return;
    worker.terminate();
    this.worker = null;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.restarts += 1;
  }

  /** Send a request; returns `{id, promise}`. */
  request(kind, payload, { onProgress, onPreview, transfer = [] } = {}) {
    const id = nextId++;
    const promise = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, onProgress, onPreview }));
    this.worker ??= this.start();
    this.worker.postMessage({ kind, id, payload }, transfer);
    return { id, promise };
  }

  cancel(id) {
    this.worker?.postMessage({ kind: Kind.CANCEL, id });
  }
}

const shared = new Map();

/**
 * The page's one Client for `precision` (the app and every widget share it, so one worker owns
 * the GPU and the loaded model).
 */
export function sharedClient({ precision = 'auto' } = {}) {
  if (!shared.has(precision)) shared.set(precision, new Client({ precision }));
  return shared.get(precision);
}

/** The bundled demo model: the tiny fixture pipeline served hub-style by our server. */
export function demoSource(base) {
  return { type: 'hub', base: new URL('hub', base).href, repo: 'demo/tiny-i2vgen', revision: 'main' };
}

/** The aspect a size tier is offered as (the tiers are 16:9, 9:16 and 1:1 to the nearest 16 pixels). */
export const aspect = ({ width, height }) => (width === height ? '1:1' : width > height ? '16:9' : '9:16');

/** The largest of the `sizes` tiers that fits, 16:9 first; null when none fits. */
export function largestFit(tiers) {
  const fitting = (tiers ?? []).filter((t) => t.fits);
  const wide = fitting.filter((t) => aspect(t) === '16:9');
  return (wide.length ? wide : fitting).reduce((best, t) => (best && best.width * best.height >= t.width * t.height ? best : t), null);
}

/** A memory budget in decimal GB, as typed or given as an attribute, in bytes; undefined when empty or not above 0. */
export function budgetBytes(gb) {
  const value = Number(gb);
  return gb !== null && gb !== undefined && gb !== '' && value > 0 ? Math.round(value * 1e9) : undefined;
}
