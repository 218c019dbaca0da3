// Downloads model files into Cache Storage in fixed-size chunks and reads them back.
//
// Why Cache Storage (not OPFS): a `cache.put` is atomic — a chunk is either stored whole or not at
// all, even when the quota runs out or the tab closes mid-write — so an interrupted download never
// leaves a half-written entry that poisons the next visit; it works the same in the page and the
// worker, and on http://127.0.0.1.
//
// Layout: each chunk of a file is one entry keyed by the file's URL, its cache key (the
// manifest's sha256, or the commit a hub file is pinned to) and the chunk index; the chunk's own
// sha256 rides in a header and is checked on every read. A `meta` entry per file records its size,
// so a second visit needs no request at all, and, once the whole file was checked, the sha256 of
// every chunk. A download that breaks resumes with a Range request from the first missing chunk;
// a chunk that fails its check is deleted and fetched again.
//
// Integrity: a file with a published sha256 (the manifest's, or the hub's X-Linked-Etag) is
// hashed as its bytes arrive; each chunk also stores the hash state before and after it, so a
// download resumed after a reload continues the hash without reading the earlier chunks twice.
// A file whose bytes do not give the published sha256 is refused and its chunks are deleted.
import { Sha256 } from './sha256.js';
import { DownloadFailed } from './protocol.js';

export const CACHE_NAME = 'i2vgen-weights-v1';
export const CHUNK_BYTES = 16 * 2 ** 20;
const RETRIES = 6;
/** No byte for this long: the connection is stalled; abort it and retry. */
const STALL_MS = 15_000;
/** The first back-off; it doubles with each failure in a row, capped, with jitter. */
const RETRY_MS = 250;
const RETRY_CAP_MS = 8_000;
/** How far the network reader may run ahead of storing and consuming: four full-size chunks. */
const READ_AHEAD_BYTES = 4 * CHUNK_BYTES;

export class QuotaError extends Error {}
/** A file whose bytes are not those its manifest or hub published: never retried, never kept. */
export class IntegrityError extends DownloadFailed {}
/** An answer that another try will not change (404, 403, a bad Content-Range). */
class Refused extends DownloadFailed {}

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('');
export const sha256 = async (bytes) => hex(await crypto.subtle.digest('SHA-256', bytes));

function key(url, hash, what) {
  const u = new URL(url);
  u.searchParams.set('i2vgen-hash', hash);
  u.searchParams.set('i2vgen', what);
  return u.href;
}

/** `{url, hash, what}` of a cache key made by `key`. */
function parseKey(href) {
  const u = new URL(href);
  const hash = u.searchParams.get('i2vgen-hash');
  const what = u.searchParams.get('i2vgen');
  u.searchParams.delete('i2vgen-hash');
  u.searchParams.delete('i2vgen');
  return { url: u.href, hash, what };
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

function sleep(ms, signal) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(ok, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); fail(signal.reason); }, { once: true });
  });
}

/** Aborts a request when no byte arrives for `ms` while it is waited for, or when `signal` aborts. */
class Watchdog {
  constructor(ms, signal) {
    this.ms = ms;
    this.stalled = false;
    this.controller = new AbortController();
    this.signal = signal;
    this.onAbort = () => this.controller.abort();
    signal?.addEventListener('abort', this.onAbort);
  }

  /** Start waiting for bytes. */
  wait() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.stalled = true; this.controller.abort(); }, this.ms);
  }

  /** Bytes came (or the wait is over): the time spent storing them is not a stall. */
  pause() {
    clearTimeout(this.timer);
  }

  stop() {
    this.pause();
    this.signal?.removeEventListener('abort', this.onAbort);
  }
}

/**
 * Bytes read from the network ahead of the caller, at most `limit` of them held (beyond the last
 * piece): the download waits for room, the caller for bytes. `close(error)` ends it; the caller
 * still gets the pieces already held, then null, and finds the download's error in `error`.
 */
class ReadAhead {
  constructor(limit) {
    this.limit = limit;
    this.held = [];
    this.bytes = 0;
    this.closed = false;
    this.error = null;
    this.wake = null; // one waiter at a time: the download waits only while chunks are held, the caller only while none are
  }

  notify() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async push(chunk) {
    this.held.push(chunk);
    this.bytes += chunk.length;
    this.notify();
    while (this.bytes > this.limit && !this.closed) await new Promise((ok) => { this.wake = ok; });
  }

  /** The next chunk, or null once closed and emptied. */
  async next() {
    while (!this.held.length && !this.closed) await new Promise((ok) => { this.wake = ok; });
    const chunk = this.held.shift() ?? null;
    if (chunk) this.bytes -= chunk.length;
    this.notify();
    return chunk;
  }

  close(error = null) {
    if (!this.closed) {
      this.closed = true;
      this.error = error;
    }
    this.notify();
  }
}

/** Open the store. `chunkBytes` is fixed per store (tests use small chunks). */
export async function openStore({ chunkBytes = CHUNK_BYTES, fetchImpl = (...args) => fetch(...args), stallMs = STALL_MS, retryMs = RETRY_MS } = {}) {
  const cache = await caches.open(CACHE_NAME);
  return new WeightStore(cache, chunkBytes, fetchImpl, stallMs, retryMs);
}

class WeightStore {
  constructor(cache, chunkBytes, fetchImpl, stallMs, retryMs) {
    this.cache = cache;
    this.chunkBytes = chunkBytes;
    this.fetch = fetchImpl;
    this.stallMs = stallMs;
    this.retryMs = retryMs;
    this.stats = { requests: 0, networkBytes: 0, cacheBytes: 0 };
  }

  /**
   * A file's meta record `{size, chunkBytes?, chunks?}` (`chunks`: the sha256 of each chunk of
   * `chunkBytes` bytes, once the whole file was checked), or null.
   */
  async meta(url, hash) {
    const meta = await this.cache.match(key(url, hash, 'meta'));
    return meta ? meta.json() : null;
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

  /**
   * GET `url` from byte `start` up to (not including) `end` (null: to the end of the file).
   * Resolves to `{response, skip}`: a server that ignores the Range header answers the whole
   * file, whose first `skip` bytes are then read and dropped.
   */
  async request(url, start, end, signal) {
    this.stats.requests += 1;
    const ranged = start > 0 || end !== null;
    const headers = ranged ? { Range: `bytes=${start}-${end === null ? '' : end - 1}` } : {};
    const response = await this.fetch(url, { headers, signal, cache: 'no-store' });
    if (response.status === 404) throw new Refused(`${url} was not found (404)`);
    if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
      throw new Refused(`${url} answered HTTP ${response.status}`);
    }
    if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
    if (!ranged || response.status !== 206) return { response, skip: ranged ? start : 0 };
    const first = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
    if (!first || Number(first[1]) !== start) {
      throw new Refused(`${url} answered bytes ${first?.[1] ?? '(none)'} onwards when asked for bytes ${start} onwards; the server's Range support is broken`);
    }
    return { response, skip: 0 };
  }

  /** Record a file's size (from a response) the first time it is seen. */
  async learnSize(url, hash, response) {
    const range = response.headers.get('content-range');
    const size = range && response.status === 206 ? Number(range.split('/')[1]) : Number(response.headers.get('content-length'));
    if (!Number.isSafeInteger(size) || size <= 0) throw new Refused(`${url} did not say how large it is`);
    await put(this.cache, key(url, hash, 'meta'), JSON.stringify({ size }), { 'content-type': 'application/json' });
    return size;
  }

  /**
   * Yield the file's bytes in order, chunk by chunk, from the cache where present and verified,
   * else from the network (resuming after a dropped or stalled connection, with back-off).
   * `sha256`: the file's published digest (null: none, e.g. a hub text file), checked after the
   * last chunk and before the iteration ends; on a mismatch it throws and deletes the file's
   * chunks, so a caller must not use the bytes before the end. `onBytes(n, fromCache)`
   * reports progress, `onRetry({attempt, of, reason, seconds})` each retry. `size` may be null
   * for a file never seen (learned from the first response).
   */
  async *chunks(url, { hash, sha256: expected = null, size = null, signal, onBytes = () => {}, onRetry = () => {} }) {
    const meta = await this.meta(url, hash);
    size ??= meta?.size ?? null;
    // The chunks' digests of a file already checked whole, if cut into chunks of this store's size.
    const checked = meta?.chunkBytes === this.chunkBytes ? meta.chunks : null;
    let hasher = expected && !checked ? new Sha256() : null;
    const digests = [];
    const chunkKey = (i) => key(url, hash, `chunk-${this.chunkBytes}-${i}`);
    let i = 0;
    let attempts = 0;
    for (;;) {
      // 1. everything cached from chunk i on
      while (size !== null && i * this.chunkBytes < size) {
        const hit = await this.cache.match(chunkKey(i));
        if (!hit) break;
        const bytes = new Uint8Array(await hit.arrayBuffer());
        const digest = await sha256(bytes);
        if (digest !== (checked?.[i] ?? hit.headers.get('x-sha256'))) {
          await this.cache.delete(chunkKey(i)); // damaged: fetch it again
          break;
        }
        // The stored hash state holds if the state before this chunk is ours; else hash the bytes.
        if (hasher) hasher = (hit.headers.get('x-before') === hasher.save() && Sha256.restore(hit.headers.get('x-after'))) || hasher.update(bytes);
        digests.push(digest);
        this.stats.cacheBytes += bytes.length;
        onBytes(bytes.length, true);
        yield bytes;
        i += 1;
      }
      if (size !== null && i * this.chunkBytes >= size) break;

      // 2. the network from chunk i up to the next cached chunk, cut into chunks that are stored
      //    as they complete. The body is read as fast as it arrives, not as fast as chunks are
      //    hashed, stored and consumed (a ReadAhead between the two): when a connection breaks,
      //    the browser drops the bytes it received but the page had not read yet, so a reader
      //    paced by the rest would lose, and fetch again, far more than the one incomplete chunk.
      signal?.throwIfAborted();
      let stop = null;
      if (size !== null) {
        const count = Math.ceil(size / this.chunkBytes);
        stop = i + 1;
        while (stop < count && !(await this.cache.match(chunkKey(stop)))) stop += 1;
        if (stop === count) stop = null;
      }
      const start = i * this.chunkBytes;
      const watch = new Watchdog(this.stallMs, signal);
      const ahead = new ReadAhead(READ_AHEAD_BYTES);
      let received = 0;
      let wanted = null;
      const download = async () => {
        watch.wait();
        const answer = await this.request(url, start, stop === null ? null : stop * this.chunkBytes, watch.controller.signal);
        const { response } = answer;
        let { skip } = answer;
        watch.pause();
        if (size === null) size = await this.learnSize(url, hash, response);
        wanted = (stop === null ? size : stop * this.chunkBytes) - start;
        const reader = response.body.getReader();
        while (received < wanted) {
          watch.wait();
          const read = await reader.read();
          watch.pause();
          if (read.done) throw new Error(`the body was truncated: it ended after ${received} of ${wanted} bytes`);
          let { value } = read;
          this.stats.networkBytes += value.length;
          if (skip) { // a server without Range support: read up to the offset
            const n = Math.min(skip, value.length);
            skip -= n;
            value = value.subarray(n);
          }
          value = value.subarray(0, wanted - received);
          received += value.length;
          if (value.length) await ahead.push(value);
        }
        await reader.cancel();
      };
      download().then(() => ahead.close(), (err) => ahead.close(err));
      try {
        let pending = null;
        let filled = 0;
        for (let value; (value = await ahead.next());) {
          let at = 0;
          while (at < value.length) {
            pending ??= new Uint8Array(Math.min(this.chunkBytes, size - i * this.chunkBytes));
            const take = Math.min(pending.length - filled, value.length - at);
            pending.set(value.subarray(at, at + take), filled);
            filled += take;
            at += take;
            if (filled < pending.length) continue;
            const digest = await sha256(pending);
            if (checked && digest !== checked[i]) {
              throw new IntegrityError(`Chunk ${i} of ${url} differs from the one checked before; the server now sends other bytes under the same name. Delete the model in Settings and download it again.`);
            }
            const headers = { 'x-sha256': digest };
            if (hasher) {
              headers['x-before'] = hasher.save() ?? '';
              headers['x-after'] = hasher.update(pending).save() ?? '';
            }
            await put(this.cache, chunkKey(i), pending, headers);
            digests.push(digest);
            onBytes(pending.length, false);
            yield pending;
            i += 1;
            attempts = 0;
            pending = null;
            filled = 0;
          }
        }
      } finally {
        // Stored, consumed, or the caller stopped early: the download ends too.
        watch.controller.abort();
        watch.stop();
        ahead.close();
      }
      const err = ahead.error;
      if (!err) continue;
      if (err instanceof QuotaError || err instanceof IntegrityError || err instanceof Refused || signal?.aborted) throw err;
      const reason = watch.stalled
        ? `no byte arrived for ${this.stallMs / 1000} s (a stalled connection)`
        : wanted !== null && received < wanted && !/truncated/.test(err.message)
          ? `the body was truncated: the connection broke after ${received} of ${wanted} bytes (${err.message})`
          : err.message;
      attempts += 1;
      if (attempts > RETRIES) throw new DownloadFailed(`Downloading ${url} failed ${attempts} times in a row (the last time: ${reason}); check the connection and try again — what was downloaded is kept.`);
      const delay = Math.min(this.retryMs * 2 ** (attempts - 1), RETRY_CAP_MS) * (0.5 + Math.random() / 2);
      onRetry({ attempt: attempts, of: RETRIES, reason, seconds: delay / 1000 });
      await sleep(delay, signal);
    }

    // 3. the whole file, before the iteration ends
    if (hasher) {
      const actual = hasher.digest();
      if (actual !== expected) {
        await this.forget(url, hash, size);
        throw new IntegrityError(`${url} is not the file that was published: its sha256 is ${actual}, not ${expected}. It was not kept; the server or a proxy sends damaged or altered bytes, so try again later or ask whoever hosts the model.`);
      }
    }
    if (!checked) await put(this.cache, key(url, hash, 'meta'), JSON.stringify({ size, chunkBytes: this.chunkBytes, chunks: digests }), { 'content-type': 'application/json' });
  }

  /** Delete a file's chunks and meta record. */
  async forget(url, hash, size) {
    const count = Math.ceil(size / this.chunkBytes);
    for (let i = 0; i < count; i++) await this.cache.delete(key(url, hash, `chunk-${this.chunkBytes}-${i}`));
    await this.cache.delete(key(url, hash, 'meta'));
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
    await put(this.cache, modelKey(id), JSON.stringify({ ...record, saved: Date.now() }), { 'content-type': 'application/json' });
  }

  async loadModel(id) {
    const hit = await this.cache.match(modelKey(id));
    return hit ? hit.json() : null;
  }

  /** The id of the model last saved whose id starts with `prefix` (a visit without a connection), or null. */
  async lastSaved(prefix) {
    let last = null;
    for (const request of await this.cache.keys()) {
      if (!request.url.startsWith(modelKey(prefix))) continue;
      const record = await (await this.cache.match(request)).json();
      if (!last || (record.saved ?? 0) > last.saved) last = { id: record.id, saved: record.saved ?? 0 };
    }
    return last?.id ?? null;
  }
}

const MODELS = 'https://i2vgen.invalid/models/';
const modelKey = (id) => `${MODELS}${encodeURIComponent(id)}`;

/**
 * The models in the cache, honestly: `[{id, label, bytes, stored, complete, files}]` with `stored`
 * the bytes actually held and `complete` true only when every file was downloaded and checked whole.
 */
export async function listModels() {
  const cache = await caches.open(CACHE_NAME);
  const chunks = new Map(); // `${url} ${hash}` → bytes stored, from the chunk keys
  const records = [];
  for (const request of await cache.keys()) {
    if (request.url.startsWith(MODELS)) {
      records.push(await (await cache.match(request)).json());
      continue;
    }
    const { url, hash, what } = parseKey(request.url);
    const chunk = /^chunk-(\d+)-(\d+)$/.exec(what ?? '');
    if (chunk) chunks.set(`${url} ${hash}`, (chunks.get(`${url} ${hash}`) ?? []).concat([[Number(chunk[1]), Number(chunk[2])]]));
  }
  const models = [];
  for (const record of records) {
    let stored = 0;
    let complete = true;
    for (const f of record.files) {
      const held = (chunks.get(`${f.url} ${f.hash}`) ?? []).reduce((n, [size, i]) => n + Math.max(0, Math.min(size, f.size - i * size)), 0);
      stored += Math.min(held, f.size);
      const meta = await cache.match(key(f.url, f.hash, 'meta'));
      if (!meta || !(await meta.json()).chunks) complete = false;
    }
    models.push({ id: record.id, label: record.label, bytes: record.bytes, stored, complete, files: record.files.length });
  }
  return models;
}

/** Delete a model's files and record from the cache. */
export async function deleteModel(id) {
  const cache = await caches.open(CACHE_NAME);
  const record = await (await cache.match(modelKey(id)))?.json();
  if (!record) return;
  const files = new Set(record.files.map((f) => `${f.url} ${f.hash}`));
  for (const r of await cache.keys()) {
    const { url, hash } = parseKey(r.url);
    if (files.has(`${url} ${hash}`)) await cache.delete(r);
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
