// The page's side of the worker protocol: one worker, requests with ids, promises for results.

let nextId = 1;

/**
 * Start the worker (`precision`: "auto" or "f32", see `choosePrecision`). From another site (the
 * widget), wrap it in a same-origin blob worker.
 */
function startWorker(precision) {
  const url = new URL('./worker.js', import.meta.url);
  if (precision && precision !== 'auto') url.searchParams.set('precision', precision);
  if (url.origin === location.origin) return new Worker(url, { type: 'module' });
  const shim = new Blob([`import ${JSON.stringify(url.href)};`], { type: 'text/javascript' });
  return new Worker(URL.createObjectURL(shim), { type: 'module' });
}

export class Client {
  constructor({ precision } = {}) {
    this.worker = startWorker(precision);
    this.pending = new Map();
    this.worker.onmessage = ({ data: { kind, id, payload } }) => {
      const p = this.pending.get(id);
      if (!p) return;
      if (kind === 'progress') p.onProgress?.(payload);
      else if (kind === 'preview') p.onPreview?.(payload);
      else {
        this.pending.delete(id);
        if (kind === 'result') p.resolve(payload);
        else {
          const err = new Error(payload.message);
          err.cancelled = payload.cancelled;
          p.reject(err);
        }
      }
    };
    this.worker.onerror = (event) => {
      for (const p of this.pending.values()) p.reject(new Error(`The worker failed: ${event.message ?? 'unknown error'}. Reload the page to try again.`));
      this.pending.clear();
    };
  }

  /** Send a request; returns `{id, promise}`. */
  request(kind, payload, { onProgress, onPreview, transfer = [] } = {}) {
    const id = nextId++;
    const promise = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, onProgress, onPreview }));
    this.worker.postMessage({ kind, id, payload }, transfer);
    return { id, promise };
  }

  cancel(id) {
    this.worker.postMessage({ kind: 'cancel', id });
  }
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
