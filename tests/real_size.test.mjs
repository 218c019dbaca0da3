// The full-size I2VGen-XL (seeded random weights, the real configs and tokenizer) through the page
// in headless Chromium on SwiftShader: served hub-style, loaded cold (downloaded into Cache
// Storage) and warm (a new page that makes no weight request), one generation each at the
// smallest size, the frames equal to `i2vgen generate` on the same model natively. Opt-in and
// slow: run by `bash tests/real_size.sh`, which prepares the model and the native frames; not in
// CI (tests/e2e/ is).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, recordRequests, startServer, ROOT } from './e2e/browser.mjs';

const NATIVE = process.env.REAL_SIZE_NATIVE ?? join(ROOT, 'tests/out/real-size-native.safetensors');
const REQUEST = JSON.parse(process.env.REAL_SIZE_REQUEST ?? '{}');
const REPO = 'demo/real-i2vgen'; // tests/fixtures/real-i2vgen, linked by the script

let server;
let context;
before(async () => {
  server = await startServer({
    intercept(req, res) {
      if (new URL(req.url, 'http://x').pathname !== '/blank.html') return false;
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><title>real size</title>');
      return true;
    },
  });
  context = await launch();
});
after(async () => {
  await context?.close();
  await server?.close();
});

/** The f32 `frames` tensor of a safetensors file. */
function readFrames(path) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const t = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')).frames;
  const data = bytes.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
  return new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
}

/** `frames` as a safetensors file with the `frames` tensor's header of `like` (same shape, f32). */
function writeFrames(path, like, frames) {
  const bytes = readFileSync(like);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  const out = { frames: { ...header.frames, data_offsets: [0, frames.length * 4] } };
  const json = Buffer.from(JSON.stringify(out).padEnd(Math.ceil(JSON.stringify(out).length / 8) * 8, ' '));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([size, json, Buffer.from(new Float32Array(frames).buffer)]));
}

/**
 * One generation in a fresh page through the app's client, with each progress stage's start
 * time: `{result, stages: [[stage, ms since the request]], ms}`.
 */
async function generate() {
  const page = await context.newPage();
  page.on('console', (m) => console.log(`[page] ${m.text()} (GPU process ${GB(gpuProcessBytes())})`));
  page.on('worker', (w) => w.on('console', (m) => m.type() === 'error' && console.log(`[worker] ${m.text()}`)));
  await page.goto(`${server.url}blank.html`);
  const out = await page.evaluate(async ({ repo, request }) => {
    const { Client } = await import('/web/js/client.js');
    const client = new Client();
    const image = await (await fetch('/tests/fixtures/golden/image.png')).arrayBuffer();
    const stages = [];
    const started = performance.now();
    let reported = 0;
    const onProgress = (p) => {
      const at = performance.now() - started;
      if (stages.at(-1)?.[0] !== p.stage) {
        stages.push([p.stage, at]);
        console.log(`${(at / 1000).toFixed(1)} s: ${p.stage}`);
      }
      // A line per GB streamed, so a long run shows it is moving.
      if (p.done > reported + 1e9) {
        reported = p.done;
        console.log(`${(at / 1000).toFixed(1)} s: ${(p.done / 1e9).toFixed(1)} of ${(p.total / 1e9).toFixed(1)} GB (${p.file})`);
      }
    };
    try {
      const r = await client.request('generate', {
        source: { type: 'hub', base: new URL('hub', location.href).href, repo, revision: 'main' },
        image, request, quality: 'reference', returnFrames: true,
      }, { onProgress }).promise;
      return {
        stages, ms: performance.now() - started, load: r.load, precision: r.precision, gpuBytes: r.gpuBytes,
        wasmHeapBytes: r.wasmHeapBytes, frames: Array.from(r.rawFrames),
      };
    } catch (err) {
      return { error: err.message, stages };
    }
  }, { repo: REPO, request: REQUEST });
  await page.close();
  return out;
}

/** Chromium's GPU process's resident memory (bytes): with SwiftShader the GPU's memory is the host's. */
function gpuProcessBytes() {
  try {
    const ps = execFileSync('ps', ['-C', 'chromium', '-o', 'rss=,args='], { encoding: 'utf8' });
    return Math.max(0, ...ps.split('\n').filter((l) => l.includes('--type=gpu-process')).map((l) => Number.parseInt(l, 10) * 1024));
  } catch {
    return 0;
  }
}

const GB = (b) => `${(b / 1e9).toFixed(2)} GB`;
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

/** The time from each stage's start to the next's (the last to the end). */
function stageTimes(run) {
  return run.stages.map(([stage, at], i) => `${stage} ${seconds((run.stages[i + 1]?.[1] ?? run.ms) - at)}`).join(', ');
}

test('the real-size model loads cold and warm in Chromium and generates the native frames', { timeout: 4 * 3600_000 }, async () => {
  let gpuProcessPeak = 0;
  const sampler = setInterval(() => { gpuProcessPeak = Math.max(gpuProcessPeak, gpuProcessBytes()); }, 2000);
  after(() => clearInterval(sampler));
  const requests = recordRequests(context);
  const cold = await generate();
  assert.equal(cold.error, undefined, `${cold.error} (stages: ${JSON.stringify(cold.stages)})`);
  const weightRequests = () => requests.filter((r) => r.url.endsWith('.safetensors'));
  const coldWeights = weightRequests().length;
  assert.ok(coldWeights > 0);

  const warm = await generate();
  assert.equal(warm.error, undefined, warm.error);
  assert.equal(weightRequests().length, coldWeights, 'the warm load asked the network for weights');
  assert.equal(warm.load.network, 0);

  const cache = await (async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}blank.html`);
    const bytes = await page.evaluate(async () => (await navigator.storage.estimate()).usage);
    await page.close();
    return bytes;
  })();
  console.log([
    `precision ${cold.precision}; request ${JSON.stringify(REQUEST)}`,
    `model ${GB(cold.load.bytes)}: downloaded ${GB(cold.load.network)} in ${coldWeights} weight requests; browser storage ${GB(cache)}`,
    `cold: load ${seconds(cold.load.seconds * 1000)}, run ${seconds(cold.ms)} (${stageTimes(cold)})`,
    `warm: load ${seconds(warm.load.seconds * 1000)} (downloaded ${GB(warm.load.network)}), run ${seconds(warm.ms)} (${stageTimes(warm)})`,
    `GPU (burn's pool after the run): in use ${GB(warm.gpuBytes[0])}, reserved ${GB(warm.gpuBytes[1])}`,
    `wasm heap high-water mark: cold ${GB(cold.wasmHeapBytes)}, warm ${GB(warm.wasmHeapBytes)}`,
    `Chromium's GPU process (SwiftShader: host memory), peak resident: ${GB(gpuProcessPeak)}`,
  ].join('\n'));
  assert.ok(cold.wasmHeapBytes < 1e9 && warm.wasmHeapBytes < 1e9, 'the wasm heap reached 1 GB');

  // The browser's frames beside the native ones, to compare again without a 30-minute rerun.
  const native = readFrames(NATIVE);
  writeFrames(join(ROOT, 'tests/out/real-size-browser.safetensors'), NATIVE, cold.frames);
  let max = 0;
  for (const [name, run] of [['cold', cold], ['warm', warm]]) {
    assert.equal(run.frames.length, native.length);
    let runMax = 0;
    let sum = 0;
    for (let i = 0; i < native.length; i += 1) {
      const d = Math.abs(run.frames[i] - native[i]);
      runMax = Math.max(runMax, d);
      sum += d;
    }
    console.log(`${name} frames vs i2vgen generate (native): max abs ${runMax.toExponential(2)}, mean abs ${(sum / native.length).toExponential(2)}`);
    max = Math.max(max, runMax);
  }
  assert.ok(max <= 1e-3, `frames differ from the native run by ${max}`);
});
