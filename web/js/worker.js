// The worker owns the model: wasm + burn on WebGPU, weight download and cache, generation, video
// encoding. Protocol (both ways `{kind, id, payload}`):
//   page → worker: load {source, kind?, chunkBytes?} | generate {source, image, request,
//                  noise?, refine?, returnFrames?} | check-image {image} | cancel {}
//   `refine` = {source, prompt, negativePrompt?, strength, steps, guidance, width, height} runs
//   the refinement stage on the base video (the base model is unloaded first to free the GPU).
//   worker → page: progress {stage, …} | preview {frames, width, height, rgba} | result {…} |
//                  error {message, cancelled}
// The worker's URL may carry `?precision=f32` (see `choosePrecision`); the default is "auto".
import init, { ModelLoader, checkImage, choosePrecision, defaults, encodeGif, precision, toRgba } from '../pkg/i2vgen_web.js';
import { openStore } from './weight-store.js';
import { load, resolve, sourceId } from './model-source.js';
import { encodeWebm } from './webm.js';

const PREVIEW_EVERY = 2;
const wasm = init().then(() => choosePrecision(new URL(import.meta.url).searchParams.get('precision') ?? 'auto'));
let current = null; // {id: kind + sourceId, model: Model}
const cancelled = new Set();
let queue = Promise.resolve();

class Cancelled extends Error {}

const post = (kind, id, payload, transfer = []) => self.postMessage({ kind, id, payload }, transfer);

function checkCancel(id) {
  if (cancelled.has(id)) throw new Cancelled('Cancelled.');
}

async function loadModel(id, { source, chunkBytes, kind = 'i2vgen' }) {
  await wasm;
  const key = `${kind} ${sourceId(source)}`;
  if (current?.id === key) return { cached: true };
  current?.model.free();
  current = null;
  const store = await openStore(chunkBytes ? { chunkBytes } : {});
  const controller = new AbortController();
  const timer = setInterval(() => cancelled.has(id) && controller.abort(), 100);
  try {
    post('progress', id, { stage: 'resolving', message: 'Looking up the model files…' });
    const model = await resolve(store, source, kind);
    const loader = await ModelLoader.create();
    const stats = await load(store, model, loader, {
      signal: controller.signal,
      onProgress: (p) => post('progress', id, { stage: 'loading', ...p }),
    });
    post('progress', id, { stage: 'building', message: 'Building the networks on the GPU…' });
    current = { id: key, model: loader.build(kind) };
    for (const note of current.model.notes) console.warn(note);
    return { ...stats, requests: store.stats.requests, model: { id: model.id, label: model.label, bytes: model.bytes } };
  } catch (err) {
    if (controller.signal.aborted) throw new Cancelled('Cancelled; what was downloaded is kept.');
    throw err;
  } finally {
    clearInterval(timer);
  }
}

/**
 * Drive a prepared stage: every step (awaiting its one-value readback, where progress is
 * reported and a cancel takes effect), previews every PREVIEW_EVERY steps, then decode every
 * frame. Returns the frames, `[F, H, W, 3]` values in [0, 1], and frees the stage's GPU memory.
 */
async function runStage(id, stage, { denoising, decoding }) {
  try {
    const steps = stage.steps;
    const started = performance.now();
    for (let i = 0; i < steps; i++) {
      checkCancel(id);
      await stage.step().read();
      const perStep = (performance.now() - started) / (i + 1);
      post('progress', id, { stage: denoising, step: i + 1, steps, eta: (perStep * (steps - i - 1)) / 1000 });
      if ((i + 1) % PREVIEW_EVERY === 0 && i + 1 < steps) {
        const preview = stage.preview();
        const [frames, height, width] = preview.shape;
        post('preview', id, { frames, width, height, rgba: toRgba(await preview.read(), 3) });
      }
    }
    const count = stage.frames;
    let raw = null;
    for (let f = 0; f < count; f++) {
      checkCancel(id);
      post('progress', id, { stage: decoding, frame: f + 1, frames: count });
      const frame = stage.decodeFrame(f);
      const [height, width] = frame.shape;
      raw ??= { values: new Float32Array(count * height * width * 3), width, height };
      raw.values.set(await frame.read(), f * height * width * 3);
    }
    return raw;
  } finally {
    stage.free();
  }
}

async function generate(id, { source, image, request: given, noise, refine, returnFrames, chunkBytes }) {
  await wasm;
  // Fields the page leaves out take the library's defaults for a browser.
  const { browser, seed } = JSON.parse(defaults());
  const request = { ...browser, seed, ...given };
  post('progress', id, { stage: 'checking', message: 'Reading the image…' });
  checkImage(new Uint8Array(image));
  const loaded = await loadModel(id, { source, chunkBytes });
  post('progress', id, { stage: 'encoding', message: 'Encoding the prompt and the image…' });
  const limits = (await adapterLimits()) ?? {};
  const stage = current.model.generate(JSON.stringify({ ...request, maxBindingBytes: limits.maxStorageBufferBindingSize }), new Uint8Array(image), noise ? new Uint8Array(noise) : undefined);
  let video = await runStage(id, stage, { denoising: 'denoising', decoding: 'decoding' });
  if (refine) {
    // The refiner's draws use seed + 1, like the CLI.
    const { source: refineSource, ...options } = refine;
    await loadModel(id, { source: refineSource, chunkBytes, kind: 'refiner' });
    const refiner = current.model.refine(JSON.stringify({ negativePrompt: request.negativePrompt, ...options, seed: request.seed + 1 }), video.values, request.frames, video.height, video.width);
    video = await runStage(id, refiner, { denoising: 'refining', decoding: 'decoding refined' });
  }
  return { ...(await encode(id, video, request.frames, request.fps)), rawFrames: returnFrames ? video.values : null, load: loaded, precision: await precision() };
}

/** WebM and GIF of `count` frames of [H, W, 3] values in [0, 1]. */
async function encode(id, { values, width, height }, count, fps) {
  post('progress', id, { stage: 'video', message: 'Encoding the video…' });
  const rgba = toRgba(values, 3);
  const size = width * height * 4;
  const frames = [];
  for (let f = 0; f < count; f++) frames.push(rgba.slice(f * size, (f + 1) * size));
  const webm = await encodeWebm(frames, width, height, fps);
  const gif = new Blob([encodeGif(rgba, width, height, count, fps)], { type: 'image/gif' });
  return { webm, gif, width, height, frames: count, fps };
}

let limits = null;
async function adapterLimits() {
  limits ??= navigator.gpu?.requestAdapter().then((a) => a?.limits) ?? Promise.resolve(null);
  return limits;
}

const handlers = {
  load: loadModel,
  generate,
  'check-image': async (id, { image }) => {
    await wasm;
    const [width, height] = checkImage(new Uint8Array(image));
    return { width, height };
  },
};

self.onmessage = ({ data: { kind, id, payload } }) => {
  if (kind === 'cancel') {
    cancelled.add(id);
    return;
  }
  const handler = handlers[kind];
  if (!handler) {
    post('error', id, { message: `unknown request kind ${kind}` });
    return;
  }
  // One request at a time: the GPU is shared.
  queue = queue.then(async () => {
    try {
      post('result', id, await handler(id, payload ?? {}));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      post('error', id, { message, cancelled: err instanceof Cancelled });
    } finally {
      cancelled.delete(id);
    }
  });
};
