// The dev server (web/serve.mjs) against what any web page can make a developer's browser send
// it: a malformed URL answers 400 and the server keeps serving; dotfiles, path traversal and the
// rest of the checkout are not served; only the embed page may be framed by other sites; the
// demo model still serves with Range requests and CORS. Plain HTTP requests, no browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, ROOT } from './browser.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

/** One request with the path sent as written (fetch would normalize `..` away): {status, headers, body}. */
function get(path, { method = 'GET', headers = {} } = {}) {
  const { hostname, port } = new URL(server.url);
  return new Promise((ok, fail) => {
    const req = request({ hostname, port, path, method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', fail);
    req.end();
  });
}

const UNET = 'tests/fixtures/tiny-i2vgen/unet/diffusion_pytorch_model.safetensors';
const HUB_UNET = '/hub/demo/tiny-i2vgen/resolve/main/unet/diffusion_pytorch_model.safetensors';

test('a malformed percent-encoding answers 400 and the server keeps serving', async () => {
  for (const path of ['/%E0%A4%A', '/%', '/web/js/%ZZ.js', '/hub/demo/tiny-i2vgen/resolve/main/%E0%A4%A']) {
    const res = await get(path);
    assert.equal(res.status, 400, path);
  }
  const next = await get('/');
  assert.equal(next.status, 200);
  assert.match(next.body.toString(), /<title>i2vgen-web/);
});

test('dotfiles and .git are never served', async () => {
  for (const path of ['/.git/HEAD', '/.git/config', '/%2egit/HEAD', '/web/.gitignore', '/tests/fixtures/.x', '/hub/demo/.git/resolve/main/HEAD']) {
    assert.equal((await get(path)).status, 404, path);
  }
});

test('path traversal does not leave the served folders', async () => {
  const paths = [
    '/../etc/passwd', '/../../../../etc/passwd', '/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/web/js/..%2f..%2f..%2f..%2fetc/passwd',
    '/tests/fixtures/..%5c..%5c..%5cCargo.toml', '/hub/demo/..%2f..%2f..%2f..%2fetc/resolve/main/passwd',
    '/hub/demo/tiny-i2vgen/resolve/main/..%2f..%2f..%2fCargo.toml', '/tests/fixtures/../../Cargo.toml',
  ];
  for (const path of paths) {
    const res = await get(path);
    assert.ok(res.status === 400 || res.status === 404, `${path} answered ${res.status}`);
    assert.doesNotMatch(res.body.toString(), /root:|\[workspace\]/, path);
  }
});

test('only what the app needs is served, not the rest of the checkout', async () => {
  for (const path of ['/Cargo.toml', '/README.md', '/crate/src/lib.rs', '/web/serve.mjs', '/web/src/lib.rs', '/web/package.json', '/tests/e2e/serve.test.mjs', '/target/']) {
    assert.equal((await get(path)).status, 404, path);
  }
  for (const path of ['/', '/index.html', '/web/embed.html', '/web/js/app.js', '/web/css/app.css', '/tests/fixtures/golden/image.png',
    '/web/node_modules/mediabunny/dist/bundles/mediabunny.min.mjs']) {
    assert.equal((await get(path, { method: 'HEAD' })).status, 200, path);
  }
});

test('the app may not be framed by another site; the embed page may', async () => {
  const app = await get('/');
  const csp = app.headers['content-security-policy'];
  assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /frame-ancestors \*/);
  assert.equal(app.headers['access-control-allow-origin'], undefined, 'the app page is readable cross-origin');

  const embed = await get('/web/embed.html');
  assert.match(embed.headers['content-security-policy'], /frame-ancestors \*/);
  assert.match(embed.headers['content-security-policy'], /script-src 'self' 'wasm-unsafe-eval'/);
});

test('the demo model serves with Range requests and CORS; the widget modules with CORS', async () => {
  const bytes = readFileSync(join(ROOT, UNET));
  const whole = await get(HUB_UNET);
  assert.equal(whole.status, 200);
  assert.equal(whole.headers['access-control-allow-origin'], '*');
  assert.ok(whole.body.equals(bytes));

  const part = await get(HUB_UNET, { headers: { range: 'bytes=8-15' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers['content-range'], `bytes 8-15/${bytes.length}`);
  assert.ok(part.body.equals(bytes.subarray(8, 16)));
  assert.match(part.headers['access-control-expose-headers'], /content-range/);

  const past = await get(HUB_UNET, { headers: { range: `bytes=${bytes.length}-` } });
  assert.equal(past.status, 416);

  const preflight = await get(HUB_UNET, { method: 'OPTIONS', headers: { origin: 'https://site.example', 'access-control-request-headers': 'range' } });
  assert.equal(preflight.status, 204);
  assert.match(preflight.headers['access-control-allow-headers'], /range/);

  for (const path of ['/web/js/widget.js', '/web/node_modules/mediabunny/dist/bundles/mediabunny.min.mjs', '/tests/fixtures/golden/image.png']) {
    assert.equal((await get(path, { method: 'HEAD' })).headers['access-control-allow-origin'], '*', path);
  }
});
