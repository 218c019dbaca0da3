// The page runs burn on WebGPU in real headless Chromium and gets the native CPU's number.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { launch, startServer, recordConsole, ROOT, OUT } from './browser.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

function nativeCpuChecksum() {
  const out = execFileSync('cargo', ['run', '--quiet', '--bin', 'i2vgen', '--', 'info', '--json'],
    { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const cpu = JSON.parse(out).find((r) => r.backend === 'cpu');
  assert.ok(cpu && typeof cpu.checksum === 'number', `no CPU checksum in: ${out}`);
  return cpu.checksum;
}

test('the page runs the device check on WebGPU and matches the native CPU backend', async () => {
  const expected = nativeCpuChecksum();
  const context = await launch();
  try {
    const page = await context.newPage();
    const log = recordConsole(page);
    await page.goto(server.url);
    await page.waitForSelector('body:not([data-state="loading"])', { timeout: 300_000 });
    const state = await page.getAttribute('body', 'data-state');
    const message = await page.textContent('#message');
    await page.screenshot({ path: join(OUT, 'device-check.png'), fullPage: true });
    assert.equal(state, 'ready', `page ended in state ${state}: ${message}\n${log.join('\n')}`);

    // The adapter exists and is the one we asked Chromium for.
    assert.equal(await page.isVisible('#gpu'), true);
    const architecture = await page.textContent('#gpu-architecture');
    assert.match(architecture, /swiftshader/i);
    assert.match(await page.textContent('#gpu-max-binding'), /^\d+ MiB$/);

    const shown = Number(await page.textContent('#check-value'));
    assert.ok(Number.isFinite(shown) && shown > 0, `no number shown: ${shown}`);
    const rel = Math.abs(shown - expected) / Math.abs(expected);
    console.log(`browser ${shown}, native cpu ${expected}, relative difference ${rel.toExponential(2)}`);
    assert.ok(rel <= 1e-4, `browser ${shown} vs native ${expected}: relative ${rel}`);
  } finally {
    await context.close();
  }
});

test('?precision=f32 is honoured and a bad precision is a sentence', async () => {
  const context = await launch();
  try {
    const page = await context.newPage();
    await page.goto(`${server.url}?precision=f32`);
    await page.waitForSelector('body:not([data-state="loading"])', { timeout: 300_000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', await page.textContent('#message'));
    assert.match(await page.textContent('#precision'), /^Precision: f32 .*chosen with \?precision=f32/);

    await page.goto(`${server.url}?precision=f8`);
    await page.waitForSelector('body:not([data-state="loading"])', { timeout: 300_000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'error');
    assert.match(await page.textContent('#message'), /^Unknown precision "f8": use "auto" \(f16 where the GPU supports it\) or "f32"\. For example: \/\?precision=f32$/);
  } finally {
    await context.close();
  }
});

test('without WebGPU the page says so in plain words', async () => {
  const context = await launch({ webgpu: false });
  try {
    const page = await context.newPage();
    await page.goto(server.url);
    await page.waitForSelector('body:not([data-state="loading"])', { timeout: 60_000 });
    await page.screenshot({ path: join(OUT, 'no-webgpu.png'), fullPage: true });
    assert.equal(await page.getAttribute('body', 'data-state'), 'no-webgpu');
    const message = await page.textContent('#message');
    assert.match(message, /WebGPU/);
    assert.match(message, /Chrome/);
    assert.equal(await page.isVisible('#check'), false);
  } finally {
    await context.close();
  }
});
