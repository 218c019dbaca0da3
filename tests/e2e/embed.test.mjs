// The embed page takes only its known parameters: served WITHOUT our CSP header (a static host),
// `?onfocus=…&autofocus`, `onerror`, `style` run no script and reach no attribute; out-of-bounds
// numbers are clamped and unknown enums dropped. With our header, the widget's styles (a
// constructed stylesheet) cause no CSP violation and apply.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, startServer, ROOT } from './browser.mjs';

const HOSTILE = 'model=demo&frames=100000&width=-5&quality=turbo&tabindex=0&autofocus=&onfocus=window.pwned%3D1&onerror=window.pwned%3D2'
  + '&onload=alert(1)&style=background:url(x)&origins=javascript:alert(1)';

async function embedAttributes(server) {
  const context = await launch({ webgpu: false });
  try {
    const page = await context.newPage();
    const dialogs = [];
    const violations = [];
    page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
    page.on('console', (m) => /Content Security Policy|Refused to apply/.test(m.text()) && violations.push(m.text()));
    await page.goto(`${server.url}web/embed.html?${HOSTILE}`);
    await page.waitForFunction(() => customElements.get('i2v-generator'));
    await page.focus('i2v-generator').catch(() => {});
    await page.waitForTimeout(300);
    const state = await page.evaluate(() => {
      const el = document.querySelector('i2v-generator');
      const button = el.shadowRoot.querySelector('button');
      return {
        pwned: window.pwned ?? null,
        attributes: Object.fromEntries([...el.attributes].map((a) => [a.name, a.value])),
        background: getComputedStyle(button).backgroundColor,
      };
    });
    return { ...state, dialogs, violations };
  } finally {
    await context.close();
  }
}

test('served without our CSP header, hostile parameters run no script and reach no attribute', { timeout: 120_000 }, async () => {
  const server = await startServer({
    intercept(req, res, path) {
      if (!path.endsWith(join('web', 'embed.html'))) return false;
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(readFileSync(join(ROOT, 'web/embed.html')));
      return true;
    },
  });
  try {
    const r = await embedAttributes(server);
    assert.equal(r.pwned, null);
    assert.deepEqual(r.dialogs, []);
    assert.deepEqual(r.attributes, { model: 'demo', frames: '128', width: '16' });
  } finally {
    await server.close();
  }
});

test('with our CSP header the widget styles apply and no CSP violation is reported', { timeout: 120_000 }, async () => {
  const server = await startServer();
  try {
    const r = await embedAttributes(server);
    assert.deepEqual(r.violations, []);
    assert.equal(r.background, 'rgb(53, 87, 212)');
    assert.equal(r.pwned, null);
  } finally {
    await server.close();
  }
});
