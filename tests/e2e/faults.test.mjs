// Faults injected into the worker (its `?faults=1` test hooks) and hostile requests posted to it,
// on the demo model at its own size with the fewest steps. Each case asserts the sentence the
// page gets, no uncaught error, and that the next normal run works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, startServer } from './browser.mjs';

let server;
let context;
let page;
const log = [];

before(async () => {
  // A blank same-origin page (no app: its own worker and device check would only cost time).
  server = await startServer({
    intercept(req, res) {
      if (new URL(req.url, 'http://x').pathname !== '/blank.html') return false;
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><title>faults</title>');
      return true;
    },
  });
  context = await launch();
  page = await context.newPage();
  page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
  page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
  page.on('worker', (w) => w.on('console', (msg) => log.push(`[worker ${msg.type()}] ${msg.text()}`)));
  await page.goto(`${server.url}blank.html`);
  await page.evaluate(async () => {
    const { Client, demoSource } = await import('/web/js/client.js');
    const client = new Client({ faults: true });
    const image = await (await fetch('/tests/fixtures/golden/image.png')).arrayBuffer();
    const request = { prompt: 'a cat surfing', width: 40, height: 24, frames: 2, steps: 1, fps: 8 };
    const outcome = (promise) => promise.then(
      (r) => ({ webm: r.webm?.size ?? null, gif: r.gif?.size ?? null, videoNote: r.videoNote, refineError: r.refineError, frames: r.frames, width: r.width }),
      (err) => ({ code: err.code, message: err.message, isError: err instanceof Error }),
    );
    window.faults = {
      client,
      /** A generate request on the demo model (`extra` merged into the payload), its outcome. */
      run: (extra = {}) => outcome(client.request('generate', { source: demoSource(location.href), image: image.slice(0), defaults: 'demo', request, ...extra }).promise),
      arm: (fault) => client.request('fault', { fault }).promise,
      ask: (kind, payload) => outcome(client.request(kind, payload).promise),
    };
  });
});

after(async () => {
  await context?.close();
  await server?.close();
});

const run = (extra) => page.evaluate((e) => window.faults.run(e), extra);
const arm = (fault) => page.evaluate((f) => window.faults.arm(f), fault);
const restarts = () => page.evaluate(() => window.faults.client.restarts);

/** The next normal run delivers both videos. */
async function nextRunWorks() {
  const r = await run();
  assert.equal(r.code, undefined, `${r.message}\n${log.join('\n')}`);
  assert.ok(r.webm > 0 && r.gif > 0 && r.frames === 2, JSON.stringify(r));
}

const noPageErrors = () => assert.deepEqual(log.filter((l) => l.startsWith('[pageerror]')), []);

test('the GPU device destroyed at a step: one sentence, a fresh worker, the next run works', { timeout: 300_000 }, async () => {
  const before = await restarts();
  await arm('destroy-device');
  const r = await run();
  assert.equal(r.code, 'gpu-lost', JSON.stringify(r));
  assert.equal(r.message, "The GPU was reset; the model is reloading from this browser's cache. Try again.");
  assert.equal(await restarts(), before + 1);
  await nextRunWorks();
  noPageErrors();
});

test('a wasm panic at a step: one sentence, a fresh worker, the next run works', { timeout: 300_000 }, async () => {
  const before = await restarts();
  await arm('panic');
  const r = await run();
  assert.equal(r.code, 'panic', JSON.stringify(r));
  assert.match(r.message, /internal error and was restarted; the model is reloading from this browser's cache\. Try again\.$/);
  assert.equal(await restarts(), before + 1);
  await nextRunWorks();
  noPageErrors();
});

test('the WebM encoder failing still delivers the GIF, with a note saying why', { timeout: 300_000 }, async () => {
  await arm('webm-fails');
  const r = await run();
  assert.equal(r.code, undefined, r.message);
  assert.equal(r.webm, null);
  assert.ok(r.gif > 0);
  assert.equal(r.videoNote, 'The WebM could not be made (the WebM encoder was made to fail by the fault tests).');
  await nextRunWorks();
  noPageErrors();
});

test('the refinement failing delivers the base video with the reason', { timeout: 300_000 }, async () => {
  await arm('refine-fails');
  const refine = await page.evaluate(async () => {
    const { demoSource } = await import('/web/js/client.js');
    return { source: { ...demoSource(location.href), repo: 'demo/tiny-vid2vid' }, prompt: 'a cat', strength: 0.5, steps: 1, guidance: 1, width: 40, height: 24 };
  });
  const r = await run({ refine });
  assert.equal(r.code, undefined, r.message);
  assert.ok(r.webm > 0 && r.gif > 0 && r.frames === 2 && r.width === 40, JSON.stringify(r));
  assert.equal(r.refineError, 'The refinement failed (the refiner was made to fail by the fault tests); this is the base video.');
  await nextRunWorks();
  noPageErrors();
});

test('hostile requests are each answered with a sentence, before any load', { timeout: 300_000 }, async () => {
  const before = await restarts();
  const answers = await page.evaluate(async () => {
    const { ask, client } = window.faults;
    const { demoSource } = await import('/web/js/client.js');
    const source = demoSource(location.href);
    const loads = [];
    const generate = (payload) => {
      const { id, promise } = client.request('generate', payload, { onProgress: (p) => p.stage === 'loading' && loads.push(id) });
      return promise.then(() => ({ code: 'none' }), (err) => ({ code: err.code, message: err.message }));
    };
    const image = new Uint8Array(8);
    const prompt = 'a cat';
    const cases = {
      unknownKind: ask('format-disk', {}),
      prototypeKey: ask('constructor', {}),
      payloadNotObject: ask('generate', 'everything'),
      sourceWrongType: ask('generate', { source: 5, image: new ArrayBuffer(8) }),
      imageWrongType: ask('generate', { source, image: 'a cat.png' }),
      unknownFault: ask('fault', { fault: 'melt' }),
      widthWrongType: generate({ source, image, defaults: 'demo', request: { prompt, width: 'wide' } }),
      hugeSize: generate({ source, image, defaults: 'demo', request: { prompt, width: 100000, height: 100000 } }),
      hugeFrames: generate({ source, image, defaults: 'demo', request: { prompt, frames: 1000000 } }),
      negativeSteps: generate({ source, image, defaults: 'demo', request: { prompt, steps: -1 } }),
      unknownField: generate({ source, image, defaults: 'demo', request: { prompt, evil: true } }),
      requestNotObject: generate({ source, image, defaults: 'demo', request: [1, 2] }),
    };
    const out = {};
    for (const [name, promise] of Object.entries(cases)) out[name] = await promise;
    // A message that is not even an object, straight to the worker: answered, the worker lives on.
    const raw = await new Promise((resolve) => {
      client.worker.addEventListener('message', ({ data }) => data.id === null && resolve(data), { once: true });
      client.worker.postMessage(null);
    });
    out.nullMessage = { code: raw.payload.code, message: raw.payload.message };
    out.loads = loads.length;
    return out;
  });
  const { loads, ...errors } = answers;
  assert.equal(loads, 0, 'no model was loaded for a bad request');
  for (const [name, r] of Object.entries(errors)) {
    assert.equal(r.code, 'bad-request', `${name}: ${JSON.stringify(r)}`);
    assert.match(r.message, /^[^\n]{20,}$/, `${name}: one sentence, no stack, got ${r.message}`);
  }
  assert.match(errors.unknownKind.message, /^Unknown request kind "format-disk": use load, generate, sizes, check-image, cancel\.$/);
  assert.match(errors.hugeSize.message, /too large/);
  assert.match(errors.hugeFrames.message, /frames must be at most/);
  assert.match(errors.negativeSteps.message, /generate request is invalid/);
  assert.equal(await restarts(), before, 'a bad request does not cost the worker');
  await nextRunWorks();
  noPageErrors();
});
