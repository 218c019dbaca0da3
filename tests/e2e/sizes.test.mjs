// Size tiers and the GPU memory budget: with `?budget=` set small (a small GPU, faked), the sizes
// the memory plan says cannot fit are offered disabled with the plan's sentence (a run over it is
// refused from the configs, before any weight is downloaded), choosing a size
// sets the width and height, a run at a size over the budget is refused with that sentence before
// anything runs, and the page goes on working; the widget's `budget` does the same. The demo model
// stands in for the real one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launch, startServer, openApp, recordRequests, workerRequest, ROOT } from './browser.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

const IMAGE = join(ROOT, 'tests/fixtures/golden/image.png');
const SOURCE = (url) => ({ type: 'hub', base: new URL('hub', url).href, repo: 'demo/tiny-i2vgen', revision: 'main' });
const value = ({ width, height }) => `${height}x${width}`;

/** The Size options once the model has said some do not fit: `[{value, text, disabled, title}]`. */
async function sizeOptions(page) {
  await page.waitForFunction(() => [...document.querySelectorAll('#size option')].some((o) => o.disabled), null, { timeout: 300_000 });
  return page.$$eval('#size option', (options) => options.map((o) => ({ value: o.value, text: o.textContent, disabled: o.disabled, title: o.title })));
}

test('sizes over the memory budget are offered disabled with the reason, and a run over it is refused', { timeout: 900_000 }, async () => {
  const context = await launch();
  const log = [];
  try {
    // The demo model's peaks at the form's settings (its defaults), no budget. The budget is the
    // smallest 16:9 tier's peak (rounded up to 0.1 MB): that tier fits; 1280×704 has 8 times the
    // pixels and stays above it even with the guidance halves run apart (which a budget allows).
    // First visit, nothing cached: a run over the budget is refused with the plan's sentence
    // from the configs alone, before a single weight byte is requested.
    const requests = recordRequests(context);
    let page = await openApp(context, server.url, log);
    const early = await workerRequest(page, 'generate', {
      source: SOURCE(server.url), imageUrl: '/tests/fixtures/golden/image.png', defaults: 'demo',
      request: { prompt: 'a cat', frames: 2, steps: 1, budgetBytes: 1000 },
    });
    assert.match(early.error ?? '', /^2 frames at 40×24 .*memory budget/, JSON.stringify(early));
    assert.equal(early.code, 'too-large');
    // (Resolving the files probes each with a one-byte Range request: not a download.)
    const weights = requests.filter((r) => /\.safetensors$/.test(r.url) && r.headers.range !== 'bytes=0-0');
    assert.deepEqual(weights.map((r) => r.url), [], 'weights were requested before the plan refused the run');
    assert.ok(requests.some((r) => r.url.endsWith('unet/config.json')), 'the configs were read');

    const free = await workerRequest(page, 'sizes', { source: SOURCE(server.url), request: { prompt: '' }, defaults: 'demo', load: true });
    const { error, retries, ...answer } = free; // the tiers array, spread into an object by workerRequest
    assert.equal(error, undefined, error);
    const tiers = Object.values(answer);
    assert.ok(tiers.every((t) => t.fits), JSON.stringify(tiers));
    const smallest = tiers.find((t) => t.width === 448 && t.height === 256);
    const gb = (Math.ceil(smallest.peakBytes / 1e5) / 1e4).toFixed(4);
    const budget = Math.round(Number(gb) * 1e9);
    await page.close();

    page = await openApp(context, `${server.url}?model=demo&budget=${gb}`, log);
    assert.equal(await page.inputValue('#budget'), gb);
    const options = await sizeOptions(page);
    // The demo model keeps its own size, first.
    assert.equal(options[0].value, '24x40', JSON.stringify(options));
    assert.match(options[0].text, /model default \(40×24\)/);
    assert.equal(await page.inputValue('#size'), '24x40');

    const option = (size) => options.find((o) => o.value === value(size));
    const big = option({ width: 1280, height: 704 });
    assert.ok(big.disabled, JSON.stringify(big));
    assert.match(big.title, /memory budget/);
    assert.match(big.text, /^1280×704 \(16:9\) — /);
    // Every tier whose peak without a budget is within it is offered.
    for (const t of tiers.filter((t) => t.peakBytes <= budget)) assert.ok(!option(t).disabled, `${t.width}×${t.height}: ${option(t).title}`);
    assert.ok(tiers.some((t) => t.peakBytes <= budget));
    assert.match(await page.textContent('#size-note'), /memory budget/);

    // Choosing a size sets the width and height.
    await page.selectOption('#size', '256x448');
    assert.deepEqual([await page.inputValue('#width'), await page.inputValue('#height')], ['448', '256']);

    // A size over the budget typed in: the Size select shows it, and the run is refused with the
    // plan's sentence before any step.
    await page.fill('#width', '1280');
    await page.fill('#height', '704');
    assert.equal(await page.inputValue('#size'), '704x1280');
    assert.equal(await page.textContent('#size-note'), big.title);
    await page.setInputFiles('#image', IMAGE);
    await page.waitForFunction(() => document.body.dataset.run === 'ready');
    await page.fill('#prompt', 'a lighthouse in a storm');
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: 300_000 });
    assert.equal(await page.getAttribute('body', 'data-run'), 'error', await page.textContent('#message'));
    assert.equal(await page.textContent('#message'), big.title);
    assert.doesNotMatch(await page.textContent('#stage'), /Denoising/);

    // The page goes on: the demo size runs.
    await page.selectOption('#size', '24x40');
    await page.fill('#frames', '2');
    await page.fill('#steps', '1');
    assert.equal(await page.isDisabled('#generate'), false);
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: 300_000 });
    assert.equal(await page.getAttribute('body', 'data-run'), 'done', `${await page.textContent('#message')}\n${log.join('\n')}`);
    assert.match(await page.textContent('#message'), /40×24/);

    // A run that fails keeps the previous video shown and downloadable.
    const video = await page.getAttribute('#result-video', 'src');
    await page.fill('#width', '1280');
    await page.fill('#height', '704');
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: 300_000 });
    assert.equal(await page.getAttribute('body', 'data-run'), 'error');
    assert.ok(await page.isVisible('#result-video'));
    assert.equal(await page.getAttribute('#result-video', 'src'), video);
    await page.selectOption('#size', '24x40');

    // The widget with the same budget refuses a size over it with the sentence, shown as its
    // status. Without a size it takes the demo model's own: a budget nothing fits names it.
    const widget = await page.evaluate(async ({ gb, imageUrl }) => {
      await import('/web/js/widget.js');
      const el = document.createElement('i2v-generator');
      for (const [name, v] of Object.entries({ model: 'demo', budget: gb, frames: '2', steps: '1' })) el.setAttribute(name, v);
      document.body.append(el);
      const image = await (await fetch(imageUrl)).blob();
      const refused = (options) => el.generate({ image, prompt: 'a cat', ...options }).then(() => null, (err) => err.message);
      const big = await refused({ width: 1280, height: 704 });
      const status = el.shadowRoot.querySelector('[part="status"]').textContent;
      el.setAttribute('budget', '0.001');
      return { big, status, own: await refused({}) };
    }, { gb, imageUrl: '/tests/fixtures/golden/image.png' });
    assert.match(widget.big, /^2 frames at 1280×704 .*memory budget/);
    assert.equal(widget.status, widget.big);
    assert.match(widget.own, /^2 frames at 40×24 .*memory budget/);

    // No budget (the Settings field emptied): every size is offered.
    await page.click('#settings summary');
    await page.fill('#budget', '');
    await page.press('#budget', 'Tab');
    await page.waitForFunction(() => [...document.querySelectorAll('#size option')].every((o) => !o.disabled), null, { timeout: 300_000 });
    assert.equal(await page.textContent('#size-note'), '');
  } finally {
    await context.close();
  }
});
