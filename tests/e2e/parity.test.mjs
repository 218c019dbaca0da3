// Browser = native: the worker's frames for the golden request and noise equal `i2vgen generate`
// on the CPU (and the diffusers reference), from the hub layout and from converted shards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { launch, startServer, openApp, workerRequest, ROOT, OUT } from './browser.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

const GOLDEN = join(ROOT, 'tests/fixtures/golden');
const spec = JSON.parse(readFileSync(join(GOLDEN, 'pipeline.json'), 'utf8'));
const REQUEST = {
  prompt: spec.prompt, negativePrompt: spec.negative_prompt, width: spec.width, height: spec.height,
  frames: spec.num_frames, fps: spec.target_fps, steps: spec.num_inference_steps, guidance: spec.guidance_scale, seed: 0,
};
// diffusers' sampling (the model's scheduler, guidance and the whole UNet at every step), which
// `i2vgen generate` uses without --preset; the request's steps win over the preset's.
const QUALITY = 'reference';

/** One f32 tensor of a safetensors file. */
function readTensor(path, name) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const t = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'))[name];
  assert.equal(t.dtype, 'F32');
  const data = bytes.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
  return Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)));
}

const maxAbs = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

function cargo(args) {
  execFileSync('cargo', ['run', '--quiet', ...args], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}

test('the worker generates the same frames as i2vgen generate, from the hub layout and from converted shards', { timeout: 900_000 }, async () => {
  const native = join(OUT, 'native-frames.safetensors');
  cargo(['--bin', 'i2vgen', '--', 'generate', '--model', 'tests/fixtures/tiny-i2vgen', '--image', join(GOLDEN, 'image.png'),
    '--prompt', spec.prompt, '--negative-prompt', spec.negative_prompt, '--frames', `${spec.num_frames}`, '--height', `${spec.height}`,
    '--width', `${spec.width}`, '--fps', `${spec.target_fps}`, '--steps', `${spec.num_inference_steps}`, '--guidance', `${spec.guidance_scale}`,
    '--noise', join(GOLDEN, 'pipeline.safetensors'), '--backend', 'cpu', '--output', native]);
  const converted = join(OUT, 'converted-f32');
  rmSync(converted, { recursive: true, force: true });
  cargo(['--bin', 'weights-tools', '--', 'convert', '--from', 'tests/fixtures/tiny-i2vgen', '--to', converted, '--dtype', 'f32', '--shard-mb', '1']);

  const context = await launch();
  try {
    // `?precision=f32` reaches the worker (SwiftShader has no shader-f16, so "auto" is f32 too).
    const page = await openApp(context, `${server.url}?precision=f32`);
    const run = (source) => workerRequest(page, 'generate', {
      source, imageUrl: '/tests/fixtures/golden/image.png', noiseUrl: '/tests/fixtures/golden/pipeline.safetensors', request: REQUEST, quality: QUALITY, returnFrames: true,
    });
    const hub = await run({ type: 'hub', base: new URL('hub', server.url).href, repo: 'demo/tiny-i2vgen', revision: 'main' });
    assert.equal(hub.error, undefined, hub.error);
    assert.equal(hub.precision, 'f32');
    const expected = readTensor(native, 'frames');
    const reference = readTensor(join(GOLDEN, 'pipeline.safetensors'), 'frames');
    assert.equal(hub.rawFrames.length, expected.length);
    const vsNative = maxAbs(hub.rawFrames, expected);
    const vsDiffusers = maxAbs(hub.rawFrames, reference);
    const shards = await run({ type: 'converted', url: new URL('tests/out/converted-f32/', server.url).href });
    assert.equal(shards.error, undefined, shards.error);
    const vsShards = maxAbs(shards.rawFrames, hub.rawFrames);
    console.log(`browser vs native CPU ${vsNative.toExponential(2)}, vs diffusers ${vsDiffusers.toExponential(2)}, converted f32 shards vs hub layout ${vsShards.toExponential(2)} (max abs)`);
    assert.ok(vsNative <= 1e-3, `browser vs native: ${vsNative}`);
    assert.ok(vsDiffusers <= 1e-3, `browser vs diffusers: ${vsDiffusers}`);
    assert.equal(vsShards, 0);
  } finally {
    await context.close();
  }
});

test('the cascade in the browser (seeded draws, base then refiner) equals i2vgen generate --refine-model', { timeout: 900_000 }, async () => {
  const seed = 5;
  const refine = { prompt: 'a sharper cat', strength: 0.6, steps: 5, guidance: 15, width: 80, height: 48 };
  const native = join(OUT, 'native-cascade.safetensors');
  cargo(['--bin', 'i2vgen', '--', 'generate', '--model', 'tests/fixtures/tiny-i2vgen', '--image', join(GOLDEN, 'image.png'),
    '--prompt', spec.prompt, '--negative-prompt', spec.negative_prompt, '--frames', `${spec.num_frames}`, '--height', `${spec.height}`,
    '--width', `${spec.width}`, '--fps', `${spec.target_fps}`, '--steps', `${spec.num_inference_steps}`, '--guidance', `${spec.guidance_scale}`,
    '--seed', `${seed}`, '--refine-model', 'tests/fixtures/tiny-vid2vid', '--refine-prompt', refine.prompt,
    '--refine-strength', `${refine.strength}`, '--refine-steps', `${refine.steps}`, '--refine-guidance', `${refine.guidance}`,
    '--refine-height', `${refine.height}`, '--refine-width', `${refine.width}`, '--backend', 'cpu', '--output', native]);

  const context = await launch();
  try {
    const page = await openApp(context, `${server.url}?precision=f32`);
    const hub = (repo) => ({ type: 'hub', base: new URL('hub', server.url).href, repo, revision: 'main' });
    const result = await workerRequest(page, 'generate', {
      source: hub('demo/tiny-i2vgen'), imageUrl: '/tests/fixtures/golden/image.png', request: { ...REQUEST, seed }, quality: QUALITY,
      refine: { source: hub('demo/tiny-vid2vid'), ...refine }, returnFrames: true,
    });
    assert.equal(result.error, undefined, result.error);
    assert.deepEqual([result.width, result.height, result.frames], [80, 48, spec.num_frames]);
    const expected = readTensor(native, 'frames');
    assert.equal(result.rawFrames.length, expected.length);
    const diff = maxAbs(result.rawFrames, expected);
    console.log(`cascade: browser vs native CPU ${diff.toExponential(2)} (max abs, seeded draws)`);
    assert.ok(diff <= 1e-3, `browser vs native: ${diff}`);
  } finally {
    await context.close();
  }
});
