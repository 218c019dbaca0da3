// Weights in the browser: download once into Cache Storage, resume a broken download, refetch a
// damaged chunk, refuse cleanly when the quota is too small. The tiny fixture pipeline is served
// the way huggingface.co serves a repo (/hub/<owner>/<name>/resolve/<rev>/<path>).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { launch, startServer, openApp, recordRequests, workerRequest, ROOT, damagedChunks } from './browser.mjs';

const CHUNK = 256 * 1024;
const UNET = 'tiny-i2vgen/unet/diffusion_pytorch_model.safetensors';
const UNET_BYTES = statSync(join(ROOT, 'tests/fixtures', UNET)).size;
const SOURCE = (url) => ({ type: 'hub', base: new URL('hub', url).href, repo: 'demo/tiny-i2vgen', revision: 'main' });
const REQUEST = { prompt: 'a cat surfing a wave', negativePrompt: '', width: 40, height: 24, frames: 2, fps: 8, steps: 1, guidance: 9, seed: 3 };

function generate(page, url) {
  return workerRequest(page, 'generate', { source: SOURCE(url), imageUrl: '/tests/fixtures/golden/image.png', request: REQUEST, returnFrames: true, chunkBytes: CHUNK });
}

/** Bytes the server sent for the UNet file (the 1-byte existence probe aside). */
function unetBytesServed(req) {
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (!range) return UNET_BYTES;
  const end = range[2] ? Number(range[2]) + 1 : UNET_BYTES;
  return end - Number(range[1]);
}

test('a second visit loads from the cache with zero weight requests (one revision lookup) and computes the same', { timeout: 900_000 }, async () => {
  const server = await startServer();
  const context = await launch();
  const requests = recordRequests(context);
  try {
    let page = await openApp(context, server.url);
    const first = await generate(page, server.url);
    assert.equal(first.error, undefined, first.error);
    assert.ok(first.load.network >= UNET_BYTES, `first visit downloaded ${first.load.network} bytes`);
    await page.close();

    const before = requests.length;
    page = await openApp(context, server.url);
    const second = await generate(page, server.url);
    assert.equal(second.error, undefined, second.error);
    const weightRequests = requests.slice(before).filter((r) => r.url.includes('/resolve/'));
    assert.deepEqual(weightRequests.map((r) => r.url), [], 'the second visit asked the network for weights');
    assert.deepEqual(requests.slice(before).filter((r) => r.url.includes('/hub/api/')).length, 1, 'one lookup of the commit main names');
    assert.equal(second.load.network, 0);
    assert.deepEqual(second.rawFrames, first.rawFrames);
    const mbps = second.load.bytes / 1e6 / second.load.seconds;
    console.log(`load from cache: ${(second.load.bytes / 1e6).toFixed(1)} MB in ${second.load.seconds.toFixed(2)} s = ${mbps.toFixed(1)} MB/s (chunks of ${CHUNK / 1024} KiB, sha256 checked, tensors uploaded to WebGPU)`);

    // Settings lists the cached model with its size and deletes it.
    await page.click('#settings summary');
    await page.click('#refresh-cache');
    await page.waitForFunction(() => /demo\/tiny-i2vgen \(main, commit [0-9a-f]{7}\): [\d.]+ MB/.test(document.querySelector('#cached-models').textContent));
    await page.click('#cached-models button');
    await page.waitForFunction(() => /No models are cached/.test(document.querySelector('#cached-models').textContent));
    const left = await page.evaluate(async () => (await (await caches.open('i2vgen-weights-v1')).keys()).length);
    assert.equal(left, 0, 'deleting the model left entries in the cache');
  } finally {
    await context.close();
    await server.close();
  }
});

test('a connection dropped mid-file resumes; at most one chunk is fetched twice', { timeout: 900_000 }, async () => {
  let dropped = false;
  let served = 0;
  const server = await startServer({
    intercept(req, res, path) {
      if (!path.endsWith(UNET) || req.headers.range === 'bytes=0-0') return false;
      if (dropped) {
        served += unetBytesServed(req);
        return false;
      }
      // The first download: send the headers and 60% of the bytes, then drop the connection.
      dropped = true;
      const bytes = readFileSync(path);
      const cut = Math.floor(bytes.length * 0.6);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length });
      res.write(bytes.subarray(0, cut), () => setTimeout(() => res.socket.destroy(), 1000));
      served += cut;
      return true;
    },
  });
  const context = await launch();
  try {
    const page = await openApp(context, server.url);
    const result = await generate(page, server.url);
    assert.equal(result.error, undefined, result.error);
    assert.ok(dropped, 'the server never dropped the connection');
    const refetched = served - UNET_BYTES;
    console.log(`dropped at 60%: ${served} bytes served for a ${UNET_BYTES}-byte file, ${refetched} fetched twice (chunk ${CHUNK})`);
    assert.ok(refetched >= 0 && refetched <= CHUNK, `re-fetched ${refetched} bytes`);
  } finally {
    await context.close();
    await server.close();
  }
});

test('a damaged cached chunk is detected and fetched again, alone', { timeout: 900_000 }, async () => {
  const server = await startServer();
  const context = await launch();
  const requests = recordRequests(context);
  try {
    let page = await openApp(context, server.url);
    const first = await generate(page, server.url);
    assert.equal(first.error, undefined, first.error);
    const damaged = await page.evaluate(async (chunk) => {
      const cache = await caches.open('i2vgen-weights-v1');
      const key = (await cache.keys()).find((r) => r.url.includes('unet/diffusion_pytorch_model') && r.url.includes(`chunk-${chunk}-3`));
      const response = await cache.match(key);
      const bytes = new Uint8Array(await response.arrayBuffer());
      bytes[1000] ^= 0xff;
      await cache.put(key, new Response(bytes, { headers: response.headers }));
      return key.url;
    }, CHUNK);
    assert.ok(damaged);
    await page.close();

    const before = requests.length;
    page = await openApp(context, server.url);
    const second = await generate(page, server.url);
    assert.equal(second.error, undefined, second.error);
    const weightRequests = requests.slice(before).filter((r) => r.url.includes('/resolve/'));
    assert.equal(weightRequests.length, 1, weightRequests.map((r) => r.url).join('\n'));
    assert.equal(weightRequests[0].headers.range, `bytes=${3 * CHUNK}-${4 * CHUNK - 1}`);
    assert.deepEqual(second.rawFrames, first.rawFrames);
  } finally {
    await context.close();
    await server.close();
  }
});

test('too little storage: a clear message, nothing half-written, and it works once there is room', { timeout: 900_000 }, async () => {
  const server = await startServer();
  const context = await launch();
  try {
    const page = await openApp(context, server.url);
    const cdp = await context.newCDPSession(page);
    const origin = new URL(server.url).origin;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1_000_000 });
    const refused = await generate(page, server.url);
    const QUOTA = /needs [\d.]+ MB of browser storage but (only [\d.]+ MB is free|the browser refused to store more)/;
    assert.match(refused.error ?? '', QUOTA);
    // Consistent: every chunk that was stored is whole and passes its sha256.
    assert.deepEqual(await damagedChunks(page), []);

    // The page shows the same sentence to a user.
    await page.check('#model-demo');
    await page.setInputFiles('#image', join(ROOT, 'tests/fixtures/golden/image.png'));
    await page.waitForFunction(() => document.body.dataset.run === 'ready');
    await page.fill('#prompt', 'a cat');
    await page.click('#generate');
    await page.waitForFunction(() => document.body.dataset.run === 'error', null, { timeout: 120_000 });
    assert.match(await page.textContent('#message'), QUOTA);

    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
    const ok = await generate(page, server.url);
    assert.equal(ok.error, undefined, ok.error);
  } finally {
    await context.close();
    await server.close();
  }
});
