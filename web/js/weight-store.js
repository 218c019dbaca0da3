// Downloads model files into Cache Storage in fixed-size chunks and reads them back.
//
// Why Cache Storage (not OPFS): a `cache.put` is atomic — a chunk is either stored whole or not at
// all, even when the quota runs out or the tab closes mid-write — so an interrupted download never
// leaves a half-written entry that poisons the next visit; it works the same in the page and the
// worker, and on http://127.0.0.1.
//
// Layout: each chunk of a file is one entry keyed by the file's URL, its content hash (the
// manifest's sha256, or the pinned revision for hub files) and the chunk index; the chunk's own
// sha256 rides in a header and is checked on every read. A `meta` entry per file records its size,
// so a second visit needs no request at all. A download that breaks resumes with a Range request
// from the first missing chunk; a chunk that fails its check is deleted and fetched again.

export const CACHE_NAME = 'i2vgen-weights-v1';
export const CHUNK_BYTES = 16 * 2 ** 20;
const RETRIES = 5;

export class QuotaError extends Error {}

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('');
export const sha256 = async (bytes) => hex(await crypto.subtle.digest('SHA-256', bytes));

function key(url, hash, what) {
  const u = new URL(url);
  u.searchParams.set('i2vgen-hash', hash);
  u.searchParams.set('i2vgen', what);
  return u.href;
}

export const mb = (bytes) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;

function isQuota(err) {
  return err?.name === 'QuotaExceededError' || /quota/i.test(String(err?.message));
}

async function put(cache, url, bytes, headers = {}) {
  try {
    await cache.put(url, new Response(bytes, { headers }));
  } catch (err) {
    if (isQuota(err)) throw new QuotaError('The browser ran out of storage space while saving the model.');
    throw err;
  }
}

/** Open the store. `chunkBytes` is fixed per store (tests use small chunks). */
export async function openStore({ chunkBytes = CHUNK_BYTES, fetchImpl = (...args) => fetch(...args) } = {}) {
  const cache = await caches.open(CACHE_NAME);
  return new WeightStore(cache, chunkBytes, fetchImpl);
}

class WeightStore {
  constructor(cache, chunkBytes, fetchImpl) {
    this.cache = cache;
    this.chunkBytes = chunkBytes;
    this.fetch = fetchImpl;
    this.stats = { requests: 0, networkBytes: 0, cacheBytes: 0 };
  }

  /** The recorded size of a file, or null if it was never seen. */
  async knownSize(url, hash) {
    const meta = await this.cache.match(key(url, hash, 'meta'));
    return meta ? (await meta.json()).size : null;
  }

  /** Bytes of a file already in the cache (verified chunks are counted when read). */
  async cachedBytes(url, hash, size) {
    let bytes = 0;
    const count = Math.ceil(size / this.chunkBytes);
    for (let i = 0; i < count; i++) {
      if (await this.cache.match(key(url, hash, `chunk-${this.chunkBytes}-${i}`))) {
        bytes += Math.min(this.chunkBytes, size - i * this.chunkBytes);
      }
    }
    return bytes;
  }

  /** GET `url` from byte `start` up to (not including) `end` (null: to the end of the file). */
  async request(url, start, end, signal) {
    this.stats.requests += 1;
    const headers = start > 0 || end !== null ? { Range: `bytes=${start}-${end === null ? '' : end - 1}` } : {};
    const response = await this.fetch(url, { headers, signal, cache: 'no-store' });
    if (response.status === 404) throw new Error(`${url} was not found (404)`);
    if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
    if (Object.keys(headers).length && response.status !== 206) throw new Error(`${url} does not support resuming (no Range support)`);
    return response;
  }

  /** Record a file's size (from a response) the first time it is seen. */
  async learnSize(url, hash, response) {
    const range = response.headers.get('content-range');
    const size = range ? Number(range.split('/')[1]) : Number(response.headers.get('content-length'));
    if (!Number.isFinite(size) || size <= 0) throw new Error(`${url} did not say how large it is`);
    await put(this.cache, key(url, hash, 'meta'), JSON.stringify({ size }), { 'content-type': 'application/json' });
    return size;
  }

  /**
   * Yield the file's bytes in order, chunk by chunk, from the cache where present and verified,
   * else from the network (resuming after a dropped connection). `onBytes(n, fromCache)` reports
   * progress. `size` may be null for a file never seen (learned from the first response).
   */
  async *chunks(url, { hash, size = null, signal, onBytes = () => {} }) {
    size ??= await this.knownSize(url, hash);
    const chunkKey = (i) => key(url, hash, `chunk-${this.chunkBytes}-${i}`);
    let i = 0;
    let attempts = 0;
    for (;;) {
      // 1. everything cached from chunk i on
      while (size !== null && i * this.chunkBytes < size) {
        const hit = await this.cache.match(chunkKey(i));
        if (!hit) break;
        const bytes = new Uint8Array(await hit.arrayBuffer());
        if (await sha256(bytes) !== hit.headers.get('x-sha256')) {
          await this.cache.delete(chunkKey(i)); // damaged: fetch it again
          break;
        }
        this.stats.cacheBytes += bytes.length;
        onBytes(bytes.length, true);
        yield bytes;
        i += 1;
      }
      if (size !== null && i * this.chunkBytes >= size) return;

      // 2. the network from chunk i up to the next cached chunk, cut into chunks that are stored
      //    as they complete
      signal?.throwIfAborted();
      let stop = null;
      if (size !== null) {
        const count = Math.ceil(size / this.chunkBytes);
        stop = i + 1;
        while (stop < count && !(await this.cache.match(chunkKey(stop)))) stop += 1;
        if (stop === count) stop = null;
      }
      try {
        const response = await this.request(url, i * this.chunkBytes, stop === null ? null : stop * this.chunkBytes, signal);
        if (size === null) size = await this.learnSize(url, hash, response);
        const reader = response.body.getReader();
        let pending = new Uint8Array(Math.min(this.chunkBytes, size - i * this.chunkBytes));
        let filled = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          this.stats.networkBytes += value.length;
          let at = 0;
          while (at < value.length) {
            const take = Math.min(pending.length - filled, value.length - at);
            pending.set(value.subarray(at, at + take), filled);
            filled += take;
            at += take;
            if (filled === pending.length) {
              await put(this.cache, chunkKey(i), pending, { 'x-sha256': await sha256(pending) });
              onBytes(pending.length, false);
              yield pending;
              i += 1;
              attempts = 0;
              if (i * this.chunkBytes >= size) return;
              if (i === stop) {
                await reader.cancel();
                break;
              }
              pending = new Uint8Array(Math.min(this.chunkBytes, size - i * this.chunkBytes));
              filled = 0;
            }
          }
          if (i === stop) break;
        }
        if (i !== stop) throw new Error(`${url} ended early`);
      } catch (err) {
        if (err instanceof QuotaError || signal?.aborted || /not found|HTTP 4|Range support/.test(err.message)) throw err;
        attempts += 1;
        if (attempts > RETRIES) throw new Error(`Downloading ${url} failed ${RETRIES} times (${err.message}); check the connection and try again — what was downloaded is kept.`);
        // a broken connection: resume from the last complete chunk
      }
    }
  }

  /** A whole (small) file as bytes, through the same chunked cache. */
  async bytes(url, opts) {
    const parts = [];
    for await (const chunk of this.chunks(url, opts)) parts.push(chunk);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  /** Remember a resolved model (its files and sizes) so later visits need no request. */
  async saveModel(id, record) {
    await put(this.cache, modelKey(id), JSON.stringify(record), { 'content-type': 'application/json' });
  }

  async loadModel(id) {
    const hit = await this.cache.match(modelKey(id));
    return hit ? hit.json() : null;
  }
}

const modelKey = (id) => `https://i2vgen.invalid/models/${encodeURIComponent(id)}`;

/** The models in the cache: [{id, label, bytes, files}], as recorded when they were loaded. */
export async function listModels() {
  const cache = await caches.open(CACHE_NAME);
  const models = [];
  for (const request of await cache.keys()) {
    if (!request.url.startsWith('https://i2vgen.invalid/models/')) continue;
    const record = await (await cache.match(request)).json();
    models.push({ id: record.id, label: record.label, bytes: record.bytes, files: record.files.length });
  }
  return models;
}

/** Delete a model's files and record from the cache. */
export async function deleteModel(id) {
  const cache = await caches.open(CACHE_NAME);
  const record = await (await cache.match(modelKey(id)))?.json();
  if (!record) return;
  const urls = new Set(record.files.map((f) => f.url));
  for (const r of await cache.keys()) {
    const u = new URL(r.url);
    u.search = '';
    if (urls.has(u.href)) await cache.delete(r);
  }
  await cache.delete(modelKey(id));
}

/** Check the bytes still to download against the browser's quota and ask to persist. */
export async function checkQuota(needed) {
  if (!navigator.storage?.estimate) return;
  const { usage = 0, quota = Infinity } = await navigator.storage.estimate();
  if (navigator.storage.persist) await navigator.storage.persist().catch(() => false);
  if (needed > quota - usage) {
    throw new QuotaError(`The model needs ${mb(needed)} of browser storage but only ${mb(Math.max(0, quota - usage))} is free. Free some space (Settings → cached models, or the browser's site data) and try again.`);
  }
}
