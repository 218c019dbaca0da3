// Shared set-up for the browser tests: the app's static server and Debian's chromium with
// WebGPU on SwiftShader (flags measured in shared/DESIGN.md).
import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../../web/serve.mjs';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const OUT = join(ROOT, 'tests', 'out');
mkdirSync(OUT, { recursive: true });

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const BASE_FLAGS = [
  '--headless=new', '--no-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic',
];
export const WEBGPU_FLAGS = [
  '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--enable-features=Vulkan',
  '--use-angle=swiftshader', '--use-vulkan=swiftshader',
];

/** Launch chromium with a fresh profile; `webgpu: false` leaves WebGPU off. */
export async function launch({ webgpu = true } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'i2vgen-chromium-'));
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_FLAGS, ...(webgpu ? WEBGPU_FLAGS : [])],
    viewport: { width: 900, height: 820 },
  });
}

/** Serve the repository root on a free port; returns { url, close }. `hubCommit`: see serve.mjs. */
export async function startServer({ intercept, hubCommit } = {}) {
  const server = await serve({ root: ROOT, port: 0, intercept, ...(hubCommit ? { hubCommit } : {}) });
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((ok) => server.close(ok)) };
}

/** Collect console errors and page errors so a failure shows what the page said. */
export function recordConsole(page) {
  const lines = [];
  page.on('console', (msg) => lines.push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => lines.push(`[pageerror] ${err.message}`));
  return lines;
}

/** Every request the browser makes (page and workers): `[{url, method}]`. */
export function recordRequests(context) {
  const requests = [];
  context.on('request', (r) => requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  return requests;
}

/** Open the app (or `path`) and wait until the device check is done. */
export async function openApp(context, url, log) {
  const page = await context.newPage();
  if (log) {
    page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
    page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
    page.on('worker', (w) => w.on('console', (msg) => log.push(`[worker ${msg.type()}] ${msg.text()}`)));
  }
  await page.goto(url);
  await page.waitForSelector('body:not([data-state="loading"])', { timeout: 300_000 });
  return page;
}

/**
 * Run a worker request from the page through the app's own client: `{kind, payload}` → result
 * (blobs turned into byte arrays, typed arrays into plain arrays), with `retries`: the messages
 * of the download retries it reported; a failure is `{error, code, retries}`.
 */
export async function workerRequest(page, kind, payload) {
  return page.evaluate(async ({ kind, payload }) => {
    const { Client } = await import('/web/js/client.js');
    // The page's `?precision=` goes to the worker, as the app passes it.
    window.testClient ??= new Client({ precision: new URLSearchParams(location.search).get('precision') ?? 'auto' });
    if (payload.imageUrl) payload.image = await (await fetch(payload.imageUrl)).arrayBuffer();
    if (payload.noiseUrl) payload.noise = await (await fetch(payload.noiseUrl)).arrayBuffer();
    delete payload.imageUrl;
    delete payload.noiseUrl;
    const retries = [];
    const onProgress = (p) => p.stage === 'retrying' && retries.push(p.message);
    try {
      const r = await window.testClient.request(kind, payload, { onProgress }).promise;
      const out = { ...r, retries };
      for (const [k, v] of Object.entries(r)) {
        if (v instanceof Blob) out[k] = { type: v.type, size: v.size };
        if (v instanceof Float32Array) out[k] = Array.from(v);
      }
      return out;
    } catch (err) {
      return { error: err.message, code: err.code, retries };
    }
  }, { kind, payload });
}

/** The cached weight chunks whose bytes fail the sha256 stored with them (their URLs). */
export async function damagedChunks(page) {
  return page.evaluate(async () => {
    const cache = await caches.open('i2vgen-weights-v1');
    const damaged = [];
    for (const key of await cache.keys()) {
      const response = await cache.match(key);
      const expected = response.headers.get('x-sha256');
      if (!expected) continue;
      const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', await response.arrayBuffer()))].map((b) => b.toString(16).padStart(2, '0')).join('');
      if (digest !== expected) damaged.push(key.url);
    }
    return damaged;
  });
}
