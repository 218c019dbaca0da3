// Quality and Extend on the demo model, as a user sees them: the "fast" quality sets the steps and
// sampling knobs from the library's presets, the run uses them and shows its cost; Extend appends
// the next clip made from the last frame (2·F − 1 frames, the first F unchanged, WebM and GIF);
// a cancelled extension keeps the video shown.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launch, startServer, openApp, ROOT, OUT } from './browser.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

const IMAGE = join(ROOT, 'tests/fixtures/golden/image.png');

/** The library's defaults, through the page's own wasm module. */
const libraryDefaults = (page) => page.evaluate(async () => {
  const wasm = await import('/web/pkg/i2vgen_web.js');
  await wasm.default();
  return JSON.parse(wasm.defaults());
});

/** Download a file the page offers and save it under tests/out/ (where the page can fetch it). */
async function save(page, selector, name) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  await download.saveAs(join(OUT, name));
  return `/tests/out/${name}`;
}

/** The frames of a GIF as the browser decodes them: an array of RGBA byte arrays. */
const gifFrames = (page, url) => page.evaluate(async (url) => {
  const decoder = new ImageDecoder({ data: await (await fetch(url)).arrayBuffer(), type: 'image/gif' });
  await decoder.tracks.ready;
  await decoder.completed;
  const frames = [];
  for (let i = 0; i < decoder.tracks.selectedTrack.frameCount; i++) {
    const { image } = await decoder.decode({ frameIndex: i });
    const canvas = new OffscreenCanvas(image.displayWidth, image.displayHeight);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(image, 0, 0);
    image.close();
    frames.push(Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data));
  }
  return frames;
}, url);

/** Frames of a WebM, counted by demuxing (Mediabunny) and decoding (WebCodecs). */
const webmFrameCount = (page, url) => page.evaluate(async (url) => {
  const { Input, BlobSource, ALL_FORMATS, VideoSampleSink } = await import('/web/node_modules/mediabunny/dist/bundles/mediabunny.min.mjs');
  const input = new Input({ source: new BlobSource(await (await fetch(url)).blob()), formats: ALL_FORMATS });
  let frames = 0;
  for await (const sample of new VideoSampleSink(await input.getPrimaryVideoTrack()).samples()) { frames += 1; sample.close(); }
  return frames;
}, url);

const waitRun = (page) => page.waitForFunction(() => ['done', 'error', 'cancelled'].includes(document.body.dataset.run), null, { timeout: 600_000 });
const cost = (text) => Number(/≈([\d.]+)/.exec(text)?.[1]);

test('the fast quality sets its knobs, a run uses them, and Extend appends the next clip from the last frame', { timeout: 900_000 }, async () => {
  const context = await launch();
  const log = [];
  try {
    const page = await openApp(context, `${server.url}?model=demo`, log);
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', log.join('\n'));
    const defaults = await libraryDefaults(page);
    const { fast } = defaults.presets;
    const F = defaults.demo.frames;

    // The demo model keeps its own defaults (its steps) until a preset is picked.
    assert.equal(await page.inputValue('#quality'), 'custom');
    assert.equal(Number(await page.inputValue('#steps')), defaults.demo.steps);
    const labels = await page.$$eval('#quality option', (options) => options.map((o) => o.textContent));
    assert.ok(labels.includes(`fast — ${fast.steps} steps, ≈${Math.round(fast.unetEquivalents)} UNet evals`), labels.join(' | '));

    await page.selectOption('#quality', 'fast');
    assert.deepEqual(
      await Promise.all(['#steps', '#scheduler', '#spacing', '#guidance-until', '#cache-interval'].map((s) => page.inputValue(s))),
      [String(fast.steps), fast.sampling.scheduler, fast.sampling.spacing, String(fast.sampling.guidanceUntil), String(fast.sampling.cacheInterval)],
    );

    // The run keeps the preset's sampling knobs with fewer steps (CI time): the form turns custom.
    const STEPS = 6;
    await page.fill('#steps', String(STEPS));
    assert.equal(await page.inputValue('#quality'), 'custom');

    await page.setInputFiles('#image', IMAGE);
    await page.waitForFunction(() => document.body.dataset.run === 'ready');
    await page.fill('#prompt', 'a lighthouse in a storm');
    await page.click('#generate');
    await waitRun(page);
    assert.equal(await page.getAttribute('body', 'data-run'), 'done', `${await page.textContent('#message')}\n${log.join('\n')}`);

    // What the worker ran, as the result describes it, and its cost: guidance in half the steps and
    // the whole UNet every third step cost less than two full evaluations a step.
    const settings = await page.textContent('#result-settings');
    for (const part of [`${STEPS} steps`, 'DPM-Solver++', 'trailing', 'first 50% of the steps', 'every 3 steps']) {
      assert.ok(settings.includes(part), `"${part}" is not in: ${settings}`);
    }
    const shown = cost(await page.textContent('#cost'));
    assert.equal(shown, cost(settings), settings);
    assert.ok(shown > 0 && shown < 2 * STEPS, `cost ${shown}`);

    const first = await gifFrames(page, await save(page, '#download-gif', 'extend-1.gif'));
    assert.equal(first.length, F);

    // Extend: clip 2 of 2, then one video of 2·F − 1 frames whose first F are the first clip's.
    await page.click('#extend');
    await page.waitForFunction(() => document.querySelector('#stage').textContent.startsWith('Clip 2 of 2: Denoising'), null, { timeout: 300_000 });
    await waitRun(page);
    assert.equal(await page.getAttribute('body', 'data-run'), 'done', `${await page.textContent('#message')}\n${log.join('\n')}`);
    assert.match(await page.textContent('#message'), new RegExp(`2 clips, ${2 * F - 1} frames of 40×24`));
    await page.screenshot({ path: join(OUT, 'extend-done.png'), fullPage: true });
    const both = await gifFrames(page, await save(page, '#download-gif', 'extend-2.gif'));
    assert.equal(both.length, 2 * F - 1);
    for (let f = 0; f < F; f++) assert.deepEqual(both[f], first[f], `frame ${f} changed`);
    assert.notDeepEqual(both[F], both[F - 1], 'the appended clip repeats the last frame');
    assert.equal(await webmFrameCount(page, await save(page, '#download-webm', 'extend-2.webm')), 2 * F - 1);

    // A cancelled extension keeps the video and its downloads, and says so.
    const gif = await page.getAttribute('#download-gif', 'href');
    await page.fill('#steps', '20');
    await page.click('#extend');
    await page.waitForFunction(() => /^Clip 3 of 3: Denoising step [2-9]/.test(document.querySelector('#stage').textContent), null, { timeout: 300_000 });
    await page.click('#cancel');
    await page.waitForFunction(() => document.body.dataset.run === 'cancelled', null, { timeout: 120_000 });
    assert.match(await page.textContent('#message'), /extension was cancelled; the previous video is kept/);
    assert.equal(await page.isVisible('#result-video'), true);
    assert.equal(await page.getAttribute('#download-gif', 'href'), gif);
    assert.equal((await gifFrames(page, await save(page, '#download-gif', 'extend-kept.gif'))).length, 2 * F - 1);
  } finally {
    await context.close();
  }
});
