// The worker owns the model: wasm + burn on WebGPU, weight download and cache, generation, video
// encoding. Protocol (both ways `{kind, id, payload}`):
//   page → worker: load {source, kind?, chunkBytes?} | generate {source, image, request,
//                  noise?, refine?, returnFrames?} | check-image {image} | cancel {}
//   `refine` = {source, prompt, negativePrompt?, strength, steps, guidance, width, height} runs
//   the refinement stage on the base video (the base model is unloaded first to free the GPU).
//   worker → page: progress {stage, …} | preview {frames, width, height, rgba} | result {…} |
//                  error {message, cancelled}
// The worker's URL may carry `?precision=f32` (see `choosePrecision`); the default is "auto".
import init, { ModelLoader, checkImage, choosePrecision, encodeGif, precision } from '../pkg/i2vgen_web.js';
import { openStore } from './weight-store.js';
import { load, resolve, sourceId } from './model-source.js';
import { encodeWebm } from './webm.js';

const PREVIEW_EVERY = 2;
const wasm = init().then(() => choosePrecision(new URL(import.meta.url).searchParams.get('precision') ?? 'auto'));
let current = null; // {id: kind + sourceId, model: Generator | Refiner}
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
    current = { id: key, model: kind === 'refiner' ? loader.buildRefiner() : loader.build() };
    return { ...stats, requests: store.stats.requests, model: { id: model.id, label: model.label, bytes: model.bytes } };
  } catch (err) {
    if (controller.signal.aborted) throw new Cancelled('Cancelled; what was downloaded is kept.');
    throw err;
  } finally {
    clearInterval(timer);
  }
}

async function generate(id, { source, image, request, noise, refine, returnFrames, chunkBytes }) {
  await wasm;
  post('progress', id, { stage: 'checking', message: 'Reading the image…' });
  checkImage(new Uint8Array(image));
  const loaded = await loadModel(id, { source, chunkBytes });
  const generator = current.model;
  try {
    post('progress', id, { stage: 'encoding', message: 'Encoding the prompt and the image…' });
    const limits = (await adapterLimits()) ?? {};
    const steps = generator.prepare(JSON.stringify({ ...request, maxBindingBytes: limits.maxStorageBufferBindingSize }), new Uint8Array(image), noise ? new Uint8Array(noise) : undefined);
    const started = performance.now();
    for (let i = 0; i < steps; i++) {
      checkCancel(id);
      await generator.step().read();
      const perStep = (performance.now() - started) / (i + 1);
      post('progress', id, { stage: 'denoising', step: i + 1, steps, eta: (perStep * (steps - i - 1)) / 1000 });
      if ((i + 1) % PREVIEW_EVERY === 0 && i + 1 < steps) {
        const values = await generator.preview().read();
        const [w, h] = [request.width / 8, request.height / 8];
        post('preview', id, { frames: request.frames, width: w, height: h, rgba: toRgba(values, request.frames * w * h) });
      }
    }
    const { width, height, frames: count } = request;
    let raw = await decode(id, generator, count, width * height * 3, 'decoding');
    generator.cancel(); // frees the generation's GPU memory
    let size = [width, height];
    if (refine) [raw, size] = [await refineVideo(id, refine, raw, request, chunkBytes), [refine.width, refine.height]];
    return { ...(await encode(id, raw, count, size, request.fps)), rawFrames: returnFrames ? raw : null, load: loaded, precision: await precision() };
  } catch (err) {
    current?.model.cancel();
    throw err;
  }
}

/** Decode `count` frames of `size` values each through `model.decodeFrame`. */
async function decode(id, model, count, size, stage) {
  const raw = new Float32Array(count * size);
  for (let f = 0; f < count; f++) {
    checkCancel(id);
    post('progress', id, { stage, frame: f + 1, frames: count });
    raw.set(await model.decodeFrame(f).read(), f * size);
  }
  return raw;
}

/** The refinement stage on the decoded base video; the refiner's draws use seed + 1, like the CLI. */
async function refineVideo(id, refine, raw, request, chunkBytes) {
  const { source, ...options } = refine;
  await loadModel(id, { source, chunkBytes, kind: 'refiner' });
  const refiner = current.model;
  const steps = refiner.prepare(JSON.stringify({ negativePrompt: request.negativePrompt, ...options, seed: request.seed + 1 }), raw, request.frames, request.height, request.width);
  const started = performance.now();
  for (let i = 0; i < steps; i++) {
    checkCancel(id);
    await refiner.step().read();
    const perStep = (performance.now() - started) / (i + 1);
    post('progress', id, { stage: 'refining', step: i + 1, steps, eta: (perStep * (steps - i - 1)) / 1000 });
  }
  const out = await decode(id, refiner, request.frames, refine.width * refine.height * 3, 'decoding refined');
  refiner.cancel();
  return out;
}

/** WebM and GIF of `count` frames of [H, W, 3] values in [0, 1]. */
async function encode(id, raw, count, [width, height], fps) {
  post('progress', id, { stage: 'video', message: 'Encoding the video…' });
  const size = width * height * 3;
  const rgb = new Uint8Array(raw.length);
  for (let j = 0; j < raw.length; j++) rgb[j] = Math.min(255, Math.max(0, Math.round(raw[j] * 255)));
  const rgba = [];
  for (let f = 0; f < count; f++) rgba.push(toRgba(raw.subarray(f * size, (f + 1) * size), width * height));
  const webm = await encodeWebm(rgba, width, height, fps);
  const gif = new Blob([encodeGif(rgb, width, height, count, fps)], { type: 'image/gif' });
  return { webm, gif, width, height, frames: count, fps };
}

let limits = null;
async function adapterLimits() {
  limits ??= navigator.gpu?.requestAdapter().then((a) => a?.limits) ?? Promise.resolve(null);
  return limits;
}

function toRgba(values, pixels) {
  const out = new Uint8Array(pixels * 4);
  for (let p = 0; p < pixels; p++) {
    for (let c = 0; c < 3; c++) out[p * 4 + c] = Math.min(255, Math.max(0, Math.round(values[p * 3 + c] * 255)));
    out[p * 4 + 3] = 255;
  }
  return out;
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
