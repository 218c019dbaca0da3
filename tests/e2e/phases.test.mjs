// The base pipeline's two phases in the page: without a memory budget the worker holds one
// phase's networks at a time (the CLIP encoders while encoding, the UNet while denoising) and
// streams the other back in from the cache; the video is the same either way. A budget that
// fits everything keeps every network on the GPU, and then nothing is streamed again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, recordConsole, startServer } from './browser.mjs';

let server;
let context;
let page;
let log;

before(async () => {
  server = await startServer({
    intercept(req, res) {
      if (new URL(req.url, 'http://x').pathname !== '/blank.html') return false;
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><title>phases</title>');
      return true;
    },
  });
  context = await launch();
  page = await context.newPage();
  log = recordConsole(page);
  await page.goto(`${server.url}blank.html`);
  await page.evaluate(async () => {
    const { Client, demoSource } = await import('/web/js/client.js');
    const client = new Client();
    const image = await (await fetch('/tests/fixtures/golden/image.png')).arrayBuffer();
    const request = { prompt: 'a cat surfing', width: 40, height: 24, frames: 2, steps: 1, fps: 8, seed: 5 };
    window.run = async (budgetBytes) => {
      const r = await client.request('generate', {
        source: demoSource(location.href), image: image.slice(0), defaults: 'demo', returnFrames: true,
        request: budgetBytes ? { ...request, budgetBytes } : request,
      }).promise;
      return { restored: r.restored, frames: Array.from(r.rawFrames) };
    };
  });
});

after(async () => {
  await context?.close();
  await server?.close();
});

const run = (budget) => page.evaluate((b) => window.run(b), budget);

test('one phase on the GPU at a time without a budget, everything kept with one, the same video', { timeout: 600_000 }, async () => {
  // First run: the load brings the encoders; the UNet comes in from the cache after encoding.
  const first = await run();
  assert.equal(first.restored.encode, null, JSON.stringify(first.restored));
  assert.ok(first.restored.denoise > 0, JSON.stringify(first.restored));
  // The encoders were let go after encoding and the UNet after the run: both come back.
  const second = await run();
  assert.ok(second.restored.encode > 0 && second.restored.denoise > 0, JSON.stringify(second.restored));
  assert.deepEqual(second.frames, first.frames, 'the video differs after the networks were streamed back in');
  // A budget everything fits in: the networks come back once more, then stay.
  const kept = await run(100e9);
  assert.ok(kept.restored.encode > 0 && kept.restored.denoise > 0, JSON.stringify(kept.restored));
  const resident = await run(100e9);
  assert.deepEqual(resident.restored, { encode: null, denoise: null });
  assert.deepEqual(resident.frames, first.frames);
  console.log(`restored from the cache (demo model): encoders ${second.restored.encode.toFixed(3)} s, UNet ${second.restored.denoise.toFixed(3)} s`);
  assert.deepEqual(log.filter((l) => l.startsWith('[pageerror]')), []);
});
