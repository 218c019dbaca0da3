// The widget on another site: a page on a second port loads <i2v-generator> with one module
// script from the app's server, generates through its JS API and sees its events in order. The
// iframe embedding answers postMessage only from origins on its allow-list.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, startServer } from './browser.mjs';

let app;
let site;
before(async () => {
  app = await startServer();
  const page = (body) => `<!doctype html><html><head><meta charset="utf-8"><title>another site</title></head><body>${body}</body></html>`;
  site = await startServer({
    intercept(req, res) {
      const url = new URL(req.url, 'http://x');
      const html = url.pathname === '/widget.html'
        ? page(`<script type="module" src="${app.url}web/js/widget.js"></script>
                <i2v-generator id="gen" model="demo" width="40" height="24" frames="2" steps="1" fps="8"></i2v-generator>`)
        : url.pathname === '/quality.html'
        ? page(`<script type="module" src="${app.url}web/js/widget.js"></script>
                <i2v-generator id="fast" model="demo" quality="fast" steps="4" width="40" height="24" frames="2" fps="8"></i2v-generator>
                <i2v-generator id="bad" model="demo" quality="turbo" width="40" height="24" frames="2" fps="8"></i2v-generator>`)
        : page(`<iframe id="frame" onload="window.frameLoaded = true" src="${app.url}web/embed.html?model=demo&width=40&height=24&frames=2&steps=1&origins=${encodeURIComponent(url.searchParams.get('allow'))}"></iframe>`);
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
      return true;
    },
  });
});
after(async () => { await app.close(); await site.close(); });

const IMAGE = () => `${app.url}tests/fixtures/golden/image.png`;

test('the widget generates through its JS API on another site and fires its events in order', { timeout: 900_000 }, async () => {
  const context = await launch();
  try {
    const page = await context.newPage();
    const log = [];
    page.on('console', (m) => log.push(m.text()));
    await page.goto(`${site.url}widget.html`);
    const result = await page.evaluate(async (imageUrl) => {
      await customElements.whenDefined('i2v-generator');
      const el = document.getElementById('gen');
      const events = [];
      for (const name of ['progress', 'preview', 'done', 'error']) el.addEventListener(name, (e) => events.push(name === 'progress' ? `progress:${e.detail.stage}` : name));
      const image = await (await fetch(imageUrl)).blob();
      try {
        const r = await el.generate({ image, prompt: 'a cat surfing' });
        return { events, width: r.width, height: r.height, frames: r.frames, fps: r.fps, type: r.video.type, size: r.video.size, shadow: !!el.shadowRoot };
      } catch (err) {
        return { events, error: err.message };
      }
    }, IMAGE());
    assert.equal(result.error, undefined, `${result.error}\n${log.join('\n')}`);
    assert.deepEqual([result.width, result.height, result.frames, result.fps, result.type], [40, 24, 2, 8, 'video/webm']);
    assert.ok(result.size > 0 && result.shadow);
    const stages = result.events.filter((e, i, all) => e !== all[i - 1]);
    // The UNet comes in from the cache after the encoding (`restoring`): one phase on the GPU at a time.
    const order = ['progress:checking', 'progress:loading', 'progress:encoding', 'progress:restoring', 'progress:denoising', 'progress:decoding', 'progress:video', 'done'];
    assert.deepEqual(stages.filter((e) => order.includes(e)), order, result.events.join(' '));
  } finally {
    await context.close();
  }
});

test('the widget takes quality="fast", refuses an unknown quality, and extends its video', { timeout: 900_000 }, async () => {
  const context = await launch();
  try {
    const page = await context.newPage();
    const log = [];
    page.on('console', (m) => log.push(m.text()));
    await page.goto(`${site.url}quality.html`);
    const r = await page.evaluate(async ({ imageUrl, wasmUrl }) => {
      await customElements.whenDefined('i2v-generator');
      const wasm = await import(wasmUrl);
      await wasm.default();
      const { fast } = JSON.parse(wasm.defaults()).presets;
      const image = await (await fetch(imageUrl)).blob();
      const caught = (promise) => promise.then(() => null, (err) => ({ message: err.message, isError: err instanceof Error }));
      const bad = document.getElementById('bad');
      const badError = await caught(bad.generate({ image, prompt: 'a cat' }));
      const badStatus = bad.shadowRoot.querySelector('[part="status"]').textContent;
      const el = document.getElementById('fast');
      const early = await caught(el.extend());
      const clips = [];
      el.addEventListener('progress', (e) => e.detail.stage === 'denoising' && clips.push(`${e.detail.clip} of ${e.detail.clips}`));
      try {
        const first = await el.generate({ image, prompt: 'a cat surfing' });
        const second = await el.extend();
        const pick = ({ frames, fps, width, height, request, unetEquivalents, video }) => ({ frames, fps, width, height, request, unetEquivalents, type: video.type });
        return { fast, badError, badStatus, early, clips: [...new Set(clips)], first: pick(first), second: pick(second) };
      } catch (err) {
        return { error: err.message };
      }
    }, { imageUrl: IMAGE(), wasmUrl: `${app.url}web/pkg/i2vgen_web.js` });
    assert.equal(r.error, undefined, `${r.error}\n${log.join('\n')}`);
    assert.ok(r.badError?.isError && /Unknown quality "turbo": use .*fast/.test(r.badError.message), JSON.stringify(r.badError));
    assert.equal(r.badStatus, r.badError.message);
    assert.ok(r.early?.isError && /no video to extend/.test(r.early.message), JSON.stringify(r.early));

    // The fast preset's sampling (the library's) as the worker ran it; `steps` wins over the
    // preset's 15 (fewer steps for CI time, as the page's extend test does).
    const { request } = r.first;
    assert.deepEqual([request.steps, request.sampling], [4, r.fast.sampling]);
    assert.ok(r.fast.sampling.cacheInterval > 1 && r.fast.sampling.guidanceUntil < 1, JSON.stringify(r.fast));
    assert.ok(r.first.unetEquivalents < 2 * request.steps, `cost ${r.first.unetEquivalents}`);
    // The extension: one clip more, the repeated frame once, same size and fps, the next seed.
    assert.deepEqual([r.first.frames, r.second.frames], [2, 3]);
    assert.deepEqual([r.second.width, r.second.height, r.second.fps, r.second.type], [40, 24, 8, 'video/webm']);
    assert.equal(r.second.request.seed, request.seed + 1);
    assert.deepEqual(r.clips, ['1 of 1', '2 of 2']);
  } finally {
    await context.close();
  }
});

test('the iframe embedding ignores postMessage from origins not on its allow-list', { timeout: 900_000 }, async () => {
  const context = await launch();
  try {
    const page = await context.newPage();
    const send = (allow) => page.evaluate(async ({ imageUrl, wait }) => {
      const frame = document.getElementById('frame');
      while (!window.frameLoaded) await new Promise((ok) => setTimeout(ok, 50));
      const image = await (await fetch(imageUrl)).arrayBuffer();
      const replies = [];
      const done = new Promise((ok) => {
        window.addEventListener('message', (e) => {
          replies.push(e.data.kind);
          if (e.data.kind === 'result' || e.data.kind === 'error') ok();
        });
        setTimeout(ok, wait);
      });
      frame.contentWindow.postMessage({ kind: 'generate', id: 1, payload: { image, prompt: 'a cat' } }, '*');
      await done;
      return replies;
    }, { imageUrl: IMAGE(), wait: allow ? 300_000 : 5_000 });

    await page.goto(`${site.url}embed-test.html?allow=${encodeURIComponent('https://allowed.example')}`);
    assert.deepEqual(await send(false), [], 'a message from a non-allowed origin was answered');

    await page.goto(`${site.url}embed-test.html?allow=${encodeURIComponent(new URL(site.url).origin)}`);
    const replies = await send(true);
    assert.equal(replies.at(-1), 'result', replies.join(' '));
    assert.ok(replies.includes('progress'));
  } finally {
    await context.close();
  }
});
