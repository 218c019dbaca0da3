// What a user does: open the page, pick the demo model and an image, type a prompt, press
// Generate, watch progress, get a playable video and downloads. Bad files give a sentence and the
// page keeps working. The page runs under its strict CSP (served as a header, so it binds the
// worker too), and nothing but app files and weights is ever requested.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { launch, startServer, openApp, recordRequests, ROOT, OUT } from './browser.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

const IMAGE = join(ROOT, 'tests/fixtures/golden/image.png');
const PROMPT = 'a lighthouse in a storm, secret words 7f3a';

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}
const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
function pngHeader(width, height) {
  const h = Buffer.alloc(13);
  h.writeUInt32BE(width, 0);
  h.writeUInt32BE(height, 4);
  h[8] = 8; h[9] = 2; // 8-bit RGB
  return Buffer.concat([SIGNATURE, chunk('IHDR', h), chunk('IDAT', deflateSync(Buffer.alloc(16))), chunk('IEND', Buffer.alloc(0))]);
}

test('a user turns an image into a video with the demo model, under the strict CSP', { timeout: 900_000 }, async () => {
  const context = await launch();
  const requests = recordRequests(context);
  const log = [];
  try {
    const page = await openApp(context, server.url, log);
    const violations = [];
    page.on('console', (m) => /Content Security Policy/i.test(m.text()) && violations.push(m.text()));
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', log.join('\n'));

    // Every control has an accessible name.
    const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, button, textarea')]
      .filter((el) => !el.labels?.length && !el.getAttribute('aria-label') && !el.textContent.trim())
      .map((el) => el.id || el.outerHTML));
    assert.deepEqual(unnamed, []);

    // Bad files first: each gives a sentence, and the page keeps working.
    const bad = [
      ['notes.png', Buffer.from('these are not pixels'), /not a PNG, JPEG or WebP/],
      ['empty.png', Buffer.alloc(0), /empty/],
      ['corrupt.png', Buffer.concat([SIGNATURE, Buffer.from('garbage after the signature')]), /not a PNG, JPEG or WebP image this build can decode|not a PNG, JPEG or WebP/],
      ['huge.png', pngHeader(12000, 12000), /12000×12000 pixels, too large/],
    ];
    for (const [name, bytes, expect] of bad) {
      await page.setInputFiles('#image', { name, mimeType: 'image/png', buffer: bytes });
      await page.waitForFunction(() => document.body.dataset.run === 'error');
      const message = await page.textContent('#message');
      assert.match(message, expect, `${name}: ${message}`);
      await page.evaluate(() => { document.body.dataset.run = ''; });
    }

    await page.check('#model-demo');
    await page.setInputFiles('#image', IMAGE);
    await page.waitForFunction(() => document.body.dataset.run === 'ready');
    await page.fill('#prompt', PROMPT);
    await page.fill('#frames', '4');
    await page.fill('#fps', '8');
    await page.fill('#steps', '3');
    await page.selectOption('#size', '24x40');
    await page.click('#generate');
    await page.waitForFunction(() => document.querySelector('#stage').textContent.startsWith('Denoising'), null, { timeout: 300_000 });
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: 600_000 });
    await page.screenshot({ path: join(OUT, 'app-done.png'), fullPage: true });
    assert.equal(await page.getAttribute('body', 'data-run'), 'done', `${await page.textContent('#message')}\n${log.join('\n')}`);

    // A playable video of the right size and length (4 frames at 8 fps = 0.5 s).
    const video = await page.evaluate(async () => {
      const v = document.querySelector('#result-video');
      if (v.readyState < 1) await new Promise((ok) => v.addEventListener('loadedmetadata', ok, { once: true }));
      let duration = v.duration;
      if (!Number.isFinite(duration)) { v.currentTime = 1e9; await new Promise((ok) => v.addEventListener('seeked', ok, { once: true })); duration = v.duration; }
      return { width: v.videoWidth, height: v.videoHeight, duration };
    });
    assert.deepEqual([video.width, video.height], [40, 24]);
    assert.ok(Math.abs(video.duration - 0.5) < 0.06, `duration ${video.duration}`);

    // The downloads: the WebM decodes to 4 frames (Mediabunny demuxes, WebCodecs decodes), the GIF is a GIF.
    const save = async (selector, name) => {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
      await download.saveAs(join(OUT, name));
      return readFileSync(join(OUT, name));
    };
    await save('#download-webm', 'app.webm');
    assert.equal((await save('#download-gif', 'app.gif')).subarray(0, 6).toString('latin1'), 'GIF89a');
    const decoded = await page.evaluate(async () => {
      const { Input, BlobSource, ALL_FORMATS, VideoSampleSink } = await import('/web/node_modules/mediabunny/dist/bundles/mediabunny.min.mjs');
      const blob = await (await fetch('/tests/out/app.webm')).blob();
      const input = new Input({ source: new BlobSource(blob), formats: ALL_FORMATS });
      const track = await input.getPrimaryVideoTrack();
      let frames = 0;
      for await (const sample of new VideoSampleSink(track).samples()) { frames += 1; sample.close(); }
      return { frames, codec: track.codec, width: track.displayWidth, height: track.displayHeight };
    });
    assert.deepEqual([decoded.frames, decoded.codec, decoded.width, decoded.height], [4, 'vp8', 40, 24]);

    // Nothing left for anything but the app and the weights; the image and prompt never did.
    const origin = new URL(server.url).origin;
    for (const r of requests) {
      if (r.url.startsWith('blob:') || r.url.startsWith('data:') || r.url.includes('/tests/out/')) continue;
      assert.ok(r.url.startsWith(origin), `a request left for ${r.url}`);
      assert.equal(r.method, 'GET', `${r.method} ${r.url}`);
      assert.ok(!r.url.includes('7f3a') && !r.url.includes('image.png'), `the prompt or image went out: ${r.url}`);
    }
    assert.deepEqual(violations, []);

    // Cancel: a longer run stops within a step, and the next run works.
    await page.fill('#steps', '40');
    await page.click('#generate');
    await page.waitForFunction(() => /^Denoising step [2-9]/.test(document.querySelector('#stage').textContent), null, { timeout: 300_000 });
    await page.focus('#cancel');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.body.dataset.run === 'cancelled', null, { timeout: 120_000 });
    const stoppedAt = Number(/step (\d+)/.exec(await page.textContent('#stage'))[1]);
    assert.ok(stoppedAt < 40, `the run went on to step ${stoppedAt}`);
    await page.fill('#steps', '1');
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: 300_000 });
    assert.equal(await page.getAttribute('body', 'data-run'), 'done', await page.textContent('#message'));
    writeFileSync(join(OUT, 'app-requests.txt'), requests.map((r) => r.url).join('\n'));
  } finally {
    await context.close();
  }
});
