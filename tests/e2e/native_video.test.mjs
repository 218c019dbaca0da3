// The native CLI's video files play in a real browser: `i2vgen generate --output x.webm` (AV1 by
// rav1e, muxed by libwebm) loads in a <video> with the right size and duration, and Chromium's own
// AV1 decoder (WebCodecs, demuxed by Mediabunny) gives back the frames of `--output x.safetensors`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, startServer, ROOT, OUT } from './browser.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.close(); });

const [FRAMES, FPS, HEIGHT, WIDTH] = [6, 8, 32, 48];

function generate(output) {
  execFileSync('cargo', ['run', '--quiet', '--bin', 'i2vgen', '--', 'generate', '--model', 'tests/fixtures/tiny-i2vgen',
    '--image', 'tests/fixtures/golden/image.png', '--prompt', 'a cat', '--frames', `${FRAMES}`, '--fps', `${FPS}`,
    '--height', `${HEIGHT}`, '--width', `${WIDTH}`, '--steps', '2', '--backend', 'cpu', '--seed', '3', '--output', output],
  { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}

/** `frames` [F,H,W,3] f32 of a safetensors file. */
function readFrames(path) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const t = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')).frames;
  assert.deepEqual(t.shape, [FRAMES, HEIGHT, WIDTH, 3]);
  const data = bytes.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
  return Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)));
}

test('i2vgen generate writes a WebM that Chromium plays and decodes to the generated frames', { timeout: 900_000 }, async () => {
  mkdirSync(OUT, { recursive: true });
  generate(join(OUT, 'native.webm'));
  generate(join(OUT, 'native-video-frames.safetensors'));
  const expected = readFrames(join(OUT, 'native-video-frames.safetensors'));

  const context = await launch({ webgpu: false });
  try {
    const page = await context.newPage();
    await page.goto(new URL('tests/out/', server.url).href).catch(() => {});
    const video = await page.evaluate(async () => {
      const v = document.createElement('video');
      v.muted = true;
      v.src = '/tests/out/native.webm';
      document.body.append(v);
      await new Promise((ok, fail) => {
        v.addEventListener('loadeddata', ok, { once: true });
        v.addEventListener('error', () => fail(new Error(`the video did not load: ${v.error?.message}`)), { once: true });
      });
      await v.play();
      await new Promise((ok) => v.addEventListener('ended', ok, { once: true }));
      return { width: v.videoWidth, height: v.videoHeight, duration: v.duration };
    });
    assert.deepEqual([video.width, video.height], [WIDTH, HEIGHT]);
    assert.ok(Math.abs(video.duration - FRAMES / FPS) < 0.01, `duration ${video.duration}`);

    const decoded = await page.evaluate(async () => {
      const { Input, BlobSource, ALL_FORMATS, VideoSampleSink } = await import('/web/node_modules/mediabunny/dist/bundles/mediabunny.min.mjs');
      const blob = await (await fetch('/tests/out/native.webm')).blob();
      const input = new Input({ source: new BlobSource(blob), formats: ALL_FORMATS });
      const track = await input.getPrimaryVideoTrack();
      const rgb = [];
      const timestamps = [];
      for await (const sample of new VideoSampleSink(track).samples()) {
        const canvas = new OffscreenCanvas(sample.displayWidth, sample.displayHeight);
        const context = canvas.getContext('2d');
        sample.draw(context, 0, 0);
        const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
        for (let i = 0; i < data.length; i += 4) rgb.push(data[i] / 255, data[i + 1] / 255, data[i + 2] / 255);
        timestamps.push(sample.timestamp);
        sample.close();
      }
      return { codec: track.codec, timestamps, rgb };
    });
    assert.equal(decoded.codec, 'av1');
    assert.deepEqual(decoded.timestamps.map((t) => Math.round(t * FPS)), [...Array(FRAMES).keys()]);
    assert.equal(decoded.rgb.length, expected.length);
    // Lossy AV1 at 4:2:0 of the tiny model's pixel noise: luma PSNR ≥ 30 dB (as the MP4 test).
    const luma = (p, i) => 0.2126 * p[i] + 0.7152 * p[i + 1] + 0.0722 * p[i + 2];
    let squared = 0;
    for (let i = 0; i < expected.length; i += 3) squared += (luma(decoded.rgb, i) - luma(expected, i)) ** 2;
    const psnr = -10 * Math.log10(squared / (expected.length / 3));
    console.log(`native WebM: ${FRAMES} frames ${WIDTH}×${HEIGHT}, ${readFileSync(join(OUT, 'native.webm')).length} bytes, luma PSNR ${psnr.toFixed(1)} dB`);
    assert.ok(psnr >= 30, `luma PSNR ${psnr} dB`);
  } finally {
    await context.close();
  }
});
