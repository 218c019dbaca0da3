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

/** Serve the repository root on a free port; returns { url, close }. */
export async function startServer() {
  const server = await serve({ root: ROOT, port: 0 });
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
