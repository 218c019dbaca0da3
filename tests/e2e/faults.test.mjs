// Faults injected into the worker (its `?faults=1` test hooks) and hostile requests posted to it,
// on the demo model at its own size with the fewest steps. Each case asserts the sentence the
// page gets, no uncaught error, and that the next normal run works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { damagedChunks, launch, startServer } from './browser.mjs';

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

const REQUEST = { prompt: 'a cat surfing', width: 40, height: 24, frames: 2, steps: 1, fps: 8 };
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

test('a GPU validation error outside any error scope: one sentence, a fresh worker, the next run works', { timeout: 300_000 }, async () => {
  const before = await restarts();
  await arm('gpu-error');
  const r = await run();
  assert.equal(r.code, 'gpu-lost', JSON.stringify(r));
  assert.equal(r.message, "The GPU was reset; the model is reloading from this browser's cache. Try again.");
  assert.equal(await restarts(), before + 1);
  // The fresh worker has no model: a run over a tiny budget is refused by the memory plan from
  // the cached configs, before any weight is read, as `too-large`.
  const refused = await run({ request: { ...REQUEST, budgetBytes: 1000 } });
  assert.equal(refused.code, 'too-large', JSON.stringify(refused));
  assert.match(refused.message, /^2 frames at 40×24 .*memory budget/);
  await nextRunWorks();
  assert.deepEqual(await damagedChunks(page), []);
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

test('the WebM encoder failing still delivers the GIF, which the widget shows; the next video replaces it', { timeout: 300_000 }, async () => {
  // Through an <i2v-generator> on this page's fault-armed worker (the model stays loaded).
  const shown = await page.evaluate(async () => {
    await import('/web/js/widget.js');
    const el = document.createElement('i2v-generator');
    for (const [name, v] of Object.entries({ model: 'demo', width: '40', height: '24', frames: '2', steps: '1', fps: '8' })) el.setAttribute(name, v);
    document.body.append(el);
    el.client = window.faults.client;
    window.widget = el;
    await window.faults.arm('webm-fails');
    const image = await (await fetch('/tests/fixtures/golden/image.png')).blob();
    const r = await el.generate({ image, prompt: 'a cat surfing' });
    const $ = (sel) => el.shadowRoot.querySelector(sel);
    const img = $('img');
    await img.decode();
    return {
      video: r.video, gif: r.gif?.size ?? null, note: r.note, status: $('[part="status"]').textContent,
      videoHidden: $('video').hidden, videoSrc: $('video').getAttribute('src'),
      imgHidden: img.hidden, imgSrc: img.src, imgWidth: img.naturalWidth,
    };
  });
  const note = 'The WebM could not be made (the WebM encoder was made to fail by the fault tests).';
  assert.equal(shown.video, null);
  assert.ok(shown.gif > 0);
  assert.equal(shown.note, note);
  assert.equal(shown.status, `Done. ${note}`);
  assert.ok(shown.videoHidden && shown.videoSrc === null, 'no empty video player');
  assert.ok(!shown.imgHidden && shown.imgSrc.startsWith('blob:') && shown.imgWidth === 40, JSON.stringify(shown));
  // The next run's WebM replaces the GIF, whose blob URL is revoked.
  const next = await page.evaluate(async (gifUrl) => {
    const el = window.widget;
    const image = await (await fetch('/tests/fixtures/golden/image.png')).blob();
    const r = await el.generate({ image, prompt: 'a cat surfing' });
    const $ = (sel) => el.shadowRoot.querySelector(sel);
    const revoked = await fetch(gifUrl).then(() => false, () => true);
    el.remove();
    return { webm: r.video?.size ?? 0, videoHidden: $('video').hidden, videoSrc: $('video').src, imgHidden: $('img').hidden, imgSrc: $('img').getAttribute('src'), revoked };
  }, shown.imgSrc);
  assert.ok(next.webm > 0 && !next.videoHidden && next.videoSrc.startsWith('blob:'), JSON.stringify(next));
  assert.ok(next.imgHidden && next.imgSrc === null, JSON.stringify(next));
  assert.ok(next.revoked, 'the replaced GIF\'s blob URL was revoked');
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
      continuesNotVideo: generate({ source, continues: { rgba: [1, 2, 3], width: 1, height: 1, frames: 1, fps: 8 }, defaults: 'demo', request: { prompt } }),
      continuesHugeFrames: generate({ source, continues: { rgba: new Uint8Array(4), width: 1, height: 1, frames: 2 ** 40, fps: 8 }, defaults: 'demo', request: { prompt } }),
      continuesShortBytes: generate({ source, continues: { rgba: new Uint8Array(40 * 24 * 4), width: 40, height: 24, frames: 2, fps: 8 }, defaults: 'demo', request: { prompt } }),
      // 1,024 frames of 40×24 (3.9 MB) and a clip of three (its first the repeat) would be 1,026.
      continuesTooLong: generate({ source, continues: { rgba: new Uint8Array(1024 * 40 * 24 * 4), width: 40, height: 24, frames: 1024, fps: 8 }, defaults: 'demo', request: { prompt, width: 40, height: 24, frames: 3 } }),
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
  assert.match(errors.continuesNotVideo.message, /^The video to extend must be \{rgba: Uint8Array, width, height, frames, fps\}/);
  assert.match(errors.continuesHugeFrames.message, /^The video to extend has 1099511627776 frames, more than the 1024 a video may have/);
  assert.match(errors.continuesShortBytes.message, /^The video to extend is incomplete: 2 frames of 40×24 RGBA are 7680 bytes, not 3840/);
  assert.match(errors.continuesTooLong.message, /^The video would be 1026 frames long, more than the 1024 a video may have/);
  assert.equal(await restarts(), before, 'a bad request does not cost the worker');
  await nextRunWorks();
  noPageErrors();
});

// A cancel is taken between the calls into wasm: a stage that is one long call (encoding: the
// encoders and the VAE; a denoising step; a frame's decode) answers when that call returns,
// which on SwiftShader is seconds, so those are held to stopping before the next stage and their
// latencies are printed; loading and video encoding, made of short calls, answer within 1 s.
// Encoding is the exception: nothing yields to the message loop between the encoders and the
// first step, so its cancel is read, and taken, after that step.
const STAGES = ['loading', 'encoding', 'denoising', 'decoding', 'video'];

test('a cancel in each stage of a run stops it there, within a second where no long wasm call runs', { timeout: 600_000 }, async (t) => {
  const answers = await page.evaluate(async ({ request, stages }) => {
    const { Client, demoSource } = await import('/web/js/client.js');
    const image = await (await fetch('/tests/fixtures/golden/image.png')).arrayBuffer();
    const out = {};
    for (const stage of stages) {
      // Loading from the cache: a fresh worker, which has no model yet.
      const client = stage === 'loading' ? new Client() : window.faults.client;
      let sent = null;
      const after = []; // the progress reported once the cancel was sent, by stage
      // Two steps where the cancel comes between them; one elsewhere (cheaper).
      const steps = stage === 'denoising' ? 2 : 1;
      const { id, promise } = client.request('generate', { source: demoSource(location.href), image: image.slice(0), defaults: 'demo', request: { ...request, steps } }, {
        onProgress: (p) => {
          if (sent !== null) after.push(p.stage);
          if (p.stage !== stage || sent !== null) return;
          sent = performance.now();
          client.cancel(id);
        },
      });
      out[stage] = await promise.then(
        () => ({ outcome: 'result', ms: performance.now() - sent }),
        (err) => ({ outcome: err.code, message: err.message, ms: performance.now() - sent, after }),
      );
      if (client !== window.faults.client) client.worker?.terminate();
    }
    return out;
  }, { request: REQUEST, stages: STAGES });
  t.diagnostic(`cancel latencies (ms): ${Object.entries(answers).map(([s, a]) => `${s} ${a.ms.toFixed(0)}`).join(', ')}`);
  for (const [stage, a] of Object.entries(answers)) {
    assert.equal(a.outcome, 'cancelled', `${stage}: ${JSON.stringify(a)}`);
    const later = a.after.filter((s) => STAGES.indexOf(s) > STAGES.indexOf(stage));
    assert.deepEqual(later, stage === 'encoding' && later.length ? ['denoising'] : [], `${stage}: the run went on to ${later.join(', ')} after the cancel`);
  }
  // Encoding, queueing a step and queueing a frame's decode are synchronous wasm calls: a cancel is
  // read when the call returns (the GPU's own work is not waited for). On SwiftShader queueing is
  // CPU work, seconds per step, so only the stages without such a call are held to a second.
  for (const stage of ['loading', 'video']) assert.ok(answers[stage].ms < 1000, `${stage}: the cancel took ${answers[stage].ms.toFixed(0)} ms`);
  assert.equal(answers.loading.message, 'Cancelled; what was downloaded is kept.');
  await nextRunWorks();
  noPageErrors();
});
