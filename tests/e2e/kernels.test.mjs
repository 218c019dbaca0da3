// Every GPU kernel of shaders/ against its burn-op twin in Chromium's WebGPU (SwiftShader): the
// page runs the case list `i2vgen_shaders::cases` (the one shaders/tests/cases.rs runs on native
// wgpu) through the wasm module's `kernel_cases()` and reports one relative error per case.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, startServer, recordConsole, OUT } from './browser.mjs';

// Every family of the list (i2vgen_shaders::cases::FAMILIES).
const FAMILIES = ['group_norm', 'attention', 'conv2d', 'layer_norm', 'bias_act', 'geglu', 'packed_f16', 'matmul_packed'];

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

test('every kernel matches its twin on WebGPU within 1e-5', { timeout: 600_000 }, async () => {
  // A blank page of the server's origin: the app's own page would start the GPU itself.
  writeFileSync(join(OUT, 'kernels.html'), '<!doctype html><title>Kernel cases</title>\n');
  const context = await launch();
  try {
    const page = await context.newPage();
    const log = recordConsole(page);
    await page.goto(`${server.url}tests/out/kernels.html`);
    const started = Date.now();
    const result = await page.evaluate(async () => {
      const wasm = await import('/web/pkg/i2vgen_web.js');
      await wasm.default();
      try {
        return { report: await wasm.kernel_cases() };
      } catch (err) {
        return { error: String(err?.message ?? err) };
      }
    });
    const seconds = (Date.now() - started) / 1000;
    assert.equal(result.error, undefined, `${result.error}\n${log.join('\n')}`);
    const { tolerance, cases } = JSON.parse(result.report);
    assert.equal(tolerance, 1e-5);

    const worst = {};
    const failures = [];
    for (const c of cases) {
      // serde writes a non-finite error as null.
      const err = c.relative_error ?? Infinity;
      console.log(`${c.family.padEnd(14)} ${c.name.padEnd(90)} [${c.shape.join(', ')}] relative ${err.toExponential(2)} launches ${c.launches.join(' ')}`);
      worst[c.family] = Math.max(worst[c.family] ?? 0, err);
      if (!(err <= tolerance)) failures.push(`${c.name}: relative error ${err}`);
      if (!c.kernel_ran) failures.push(`${c.name}: its kernel did not launch (launches: ${c.launches.join(', ')})`);
    }
    console.log(`${cases.length} cases in ${seconds.toFixed(1)} s; worst per family: ${JSON.stringify(worst)}`);
    assert.deepEqual(failures, []);
    assert.deepEqual(Object.keys(worst).sort(), [...FAMILIES].sort());
  } finally {
    await context.close();
  }
});
