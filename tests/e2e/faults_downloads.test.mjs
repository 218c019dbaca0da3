// Download faults against the real worker, cache and hub mirror (web/serve.mjs), each ending in a
// clear sentence or a successful run and a consistent cache: altered bytes under a published
// sha256, the hub's `main` moving between runs, a server without Range support, a stalled
// connection, a truncated body, a reload mid-download listed as partial, then resumed, and the
// storage quota running out mid-download.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { launch, startServer, openApp, workerRequest, ROOT, damagedChunks } from './browser.mjs';

const CHUNK = 256 * 1024;
const UNET = 'tiny-i2vgen/unet/diffusion_pytorch_model.safetensors';
const UNET_BYTES = statSync(join(ROOT, 'tests/fixtures', UNET)).size;
const SOURCE = (url) => ({ type: 'hub', base: new URL('hub', url).href, repo: 'demo/tiny-i2vgen', revision: 'main' });

/** Download and build the demo model in the worker (no generation: the downloads are under test). */
const load = (page, url, extra = {}) => workerRequest(page, 'load', { source: SOURCE(url), chunkBytes: CHUNK, ...extra });
const isUnet = (req, path) => path.endsWith(UNET) && req.headers.range !== 'bytes=0-0';

/** The UNet chunks in the cache (any commit). */
const unetChunks = (page) => page.evaluate(async () => (await (await caches.open('i2vgen-weights-v1')).keys())
  .filter((r) => r.url.includes('unet/diffusion_pytorch_model') && r.url.includes('i2vgen=chunk')).length);

/** Wait until at least `n` UNet chunks are in the cache. */
async function waitForUnetChunks(page, n) {
  while (await unetChunks(page) < n) await new Promise((ok) => setTimeout(ok, 200));
}

/** Answer the first UNet download with `first(res, bytes)`, then serve normally. */
async function faultyServer(first, extra = {}) {
  let faults = 0;
  const server = await startServer({
    ...extra,
    intercept(req, res, path) {
      if (!isUnet(req, path) || faults) return false;
      faults += 1;
      first(res, readFileSync(path));
      return true;
    },
  });
  return { ...server, faults: () => faults };
}

async function withBrowser(server, body) {
  const context = await launch();
  try {
    await body(context, await openApp(context, server.url));
  } finally {
    await context.close();
    await server.close();
  }
}

test('bytes that differ from the published sha256 are refused with a sentence and not kept', { timeout: 600_000 }, async () => {
  const server = await startServer({
    intercept(req, res, path) {
      if (!isUnet(req, path)) return false;
      const bytes = readFileSync(path);
      const sha = `"${createHash('sha256').update(bytes).digest('hex')}"`; // the file's true sha256
      bytes[bytes.length - 10] ^= 0xff; // same length, one byte altered
      res.writeHead(200, { 'content-length': bytes.length, 'x-linked-etag': sha, etag: sha, 'access-control-allow-origin': '*' }).end(bytes);
      return true;
    },
  });
  await withBrowser(server, async (context, page) => {
    const result = await load(page, server.url);
    assert.match(result.error ?? '', /is not the file that was published: its sha256 is [0-9a-f]{64}, not [0-9a-f]{64}\. It was not kept/);
    assert.equal(result.code, 'download');
    assert.equal(await unetChunks(page), 0, 'chunks of the refused file stayed in the cache');
  });
});

test('the hub moving main between two runs means a new download under the new commit, never a mix', { timeout: 600_000 }, async () => {
  let commit = 'a'.repeat(40);
  const server = await startServer({ hubCommit: () => commit });
  await withBrowser(server, async (context, page) => {
    const first = await load(page, server.url);
    assert.equal(first.error, undefined, first.error);
    await page.close();
    commit = 'b'.repeat(40);
    page = await openApp(context, server.url);
    const second = await load(page, server.url);
    assert.equal(second.error, undefined, second.error);
    assert.ok(second.network >= second.bytes, `the second run took ${second.network} of ${second.bytes} bytes from the network`);
    const keys = await page.evaluate(async () => (await (await caches.open('i2vgen-weights-v1')).keys()).map((r) => decodeURIComponent(r.url)));
    assert.ok(keys.some((k) => k.includes(`@${'a'.repeat(40)}`)) && keys.some((k) => k.includes(`@${'b'.repeat(40)}`)), 'one model record per commit');
    assert.ok(keys.filter((k) => k.includes('/resolve/')).every((k) => k.includes('/resolve/aaaa') === k.includes('commit-aaaa')), 'a file cached under another commit than its URL names');
  });
});

test('a server without Range support: a dropped download resumes by reading up to the offset', { timeout: 600_000 }, async () => {
  let served = 0;
  const server = await startServer({
    intercept(req, res, path) {
      if (!isUnet(req, path)) return false;
      const bytes = readFileSync(path);
      res.writeHead(200, { 'content-length': bytes.length, 'access-control-allow-origin': '*' }); // Range ignored
      if (served++ === 0) res.write(bytes.subarray(0, Math.floor(bytes.length * 0.6)), () => setTimeout(() => res.socket.destroy(), 500));
      else res.end(bytes);
      return true;
    },
  });
  await withBrowser(server, async (context, page) => {
    const result = await load(page, server.url);
    assert.equal(result.error, undefined, result.error);
    assert.equal(served, 2, 'one drop, one full re-read');
    assert.match(result.retries.join('\n'), /truncated/);
  });
});

test('a stalled connection is aborted after the stall timeout and retried', { timeout: 600_000 }, async () => {
  const server = await faultyServer((res, bytes) => {
    res.writeHead(200, { 'content-length': bytes.length, 'access-control-allow-origin': '*' });
    res.write(bytes.subarray(0, Math.floor(bytes.length * 0.4))); // then nothing, connection open
  });
  await withBrowser(server, async (context, page) => {
    // A load with the stall timeout shortened to 2 s, so the test does not wait the real 15 s.
    const result = await load(page, server.url, { stallMs: 2000 });
    assert.equal(result.error, undefined, result.error);
    assert.equal(server.faults(), 1);
    assert.match(result.retries.join('\n'), /no byte arrived for 2 s \(a stalled connection\)/);
  });
});

test('a truncated body is named as truncation and retried', { timeout: 600_000 }, async () => {
  const server = await faultyServer((res, bytes) => {
    res.writeHead(200, { 'access-control-allow-origin': '*' }); // no Content-Length: the body just ends
    res.end(bytes.subarray(0, Math.floor(bytes.length * 0.5)));
  });
  await withBrowser(server, async (context, page) => {
    const result = await load(page, server.url);
    assert.equal(result.error, undefined, result.error);
    assert.match(result.retries.join('\n'), /the body was truncated: it ended after \d+ of \d+ bytes/);
  });
});

test('a reload mid-download: Settings lists the model as partial, and the next run resumes from the last whole chunk', { timeout: 600_000 }, async () => {
  let resumed = null;
  const server = await startServer({
    intercept(req, res, path) {
      if (!isUnet(req, path)) return false;
      if (resumed === null) {
        resumed = 0;
        const bytes = readFileSync(path);
        res.writeHead(200, { 'content-length': bytes.length, 'access-control-allow-origin': '*' });
        res.write(bytes.subarray(0, Math.floor(bytes.length * 0.6))); // then hang until the reload
        return true;
      }
      resumed += 1;
      assert.match(req.headers.range ?? '', /^bytes=\d+-$/);
      return false;
    },
  });
  await withBrowser(server, async (context, page) => {
    load(page, server.url).catch(() => {});
    await waitForUnetChunks(page, Math.floor(UNET_BYTES * 0.5 / CHUNK));
    await page.reload();
    await page.waitForSelector('body:not([data-state="loading"])');
    await page.click('#settings summary');
    await page.click('#refresh-cache');
    await page.waitForFunction(() => /demo\/tiny-i2vgen \(main, commit [0-9a-f]{7}\): partly downloaded, [\d.]+ MB of [\d.]+ MB/.test(document.querySelector('#cached-models').textContent));
    const result = await load(page, server.url);
    assert.equal(result.error, undefined, result.error);
    assert.equal(resumed, 1);
    assert.ok(result.network <= UNET_BYTES * 0.5 + CHUNK, `the resumed run downloaded ${result.network} bytes`);
    await page.click('#refresh-cache');
    await page.waitForFunction(() => /demo\/tiny-i2vgen \(main, commit [0-9a-f]{7}\): [\d.]+ MB Delete/.test(document.querySelector('#cached-models').textContent));
  });
});

test('storage running out mid-download: a sentence naming storage, no half chunk kept, and the next run resumes', { timeout: 600_000 }, async () => {
  let release;
  const released = new Promise((ok) => { release = ok; });
  const server = await faultyServer((res, bytes) => {
    // Half the file, then the rest only once the test has shrunk the quota.
    const half = Math.floor(bytes.length * 0.5);
    res.writeHead(200, { 'content-length': bytes.length, 'access-control-allow-origin': '*' });
    res.write(bytes.subarray(0, half));
    released.then(() => res.end(bytes.subarray(half)));
  });
  await withBrowser(server, async (context, page) => {
    const running = load(page, server.url);
    const stored = Math.floor(UNET_BYTES * 0.5 / CHUNK);
    await waitForUnetChunks(page, stored);
    const cdp = await context.newCDPSession(page);
    const origin = new URL(server.url).origin;
    const { usage } = await page.evaluate(() => navigator.storage.estimate());
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: usage + 1000 });
    release();
    const refused = await running;
    assert.match(refused.error ?? '', /needs [\d.]+ MB of browser storage but the browser refused to store more \(its quota is reached\)/);
    assert.equal(refused.code, 'storage');
    const chunks = await unetChunks(page);
    assert.ok(chunks >= stored && chunks < Math.ceil(UNET_BYTES / CHUNK), `${chunks} UNet chunks stored`);
    // Every chunk that was stored is whole and passes its sha256.
    assert.deepEqual(await damagedChunks(page), []);

    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
    const resumed = await load(page, server.url);
    assert.equal(resumed.error, undefined, resumed.error);
    assert.ok(resumed.network <= resumed.bytes - stored * CHUNK, `the resumed run downloaded ${resumed.network} of ${resumed.bytes} bytes`);
  });
});
