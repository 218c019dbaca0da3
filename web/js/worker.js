// The worker owns the model: wasm + burn on WebGPU, weight download and cache, generation, video
// encoding. Protocol (both ways `{kind, id, payload}`):
//   page → worker: load {source, chunkBytes?} | generate {source, image, request, noise?,
//                  returnFrames?} | check-image {image} | cancel {}
//   worker → page: progress {stage, …} | preview {frames, width, height, rgba} | result {…} |
//                  error {message, cancelled}
import init, { ModelLoader, checkImage, encodeGif } from '../pkg/i2vgen_web.js';
import { openStore } from './weight-store.js';
import { load, resolve, sourceId } from './model-source.js';
import { encodeWebm } from './webm.js';

const PREVIEW_EVERY = 2;
const wasm = init();
let current = null; // {id: sourceId, generator}
const cancelled = new Set();
let queue = Promise.resolve();

class Cancelled extends Error {}

const post = (kind, id, payload, transfer = []) => self.postMessage({ kind, id, payload }, transfer);

function checkCancel(id) {
  if (cancelled.has(id)) throw new Cancelled('Cancelled.');
}

async function loadModel(id, { source, chunkBytes }) {
  await wasm;
  const key = sourceId(source);
  if (current?.id === key) return { cached: true };
  current?.generator.free();
  current = null;
  const store = await openStore(chunkBytes ? { chunkBytes } : {});
  const controller = new AbortController();
  const timer = setInterval(() => cancelled.has(id) && controller.abort(), 100);
  try {
    post('progress', id, { stage: 'resolving', message: 'Looking up the model files…' });
    const model = await resolve(store, source);
    const loader = await ModelLoader.create();
    const stats = await load(store, model, loader, {
      signal: controller.signal,
      onProgress: (p) => post('progress', id, { stage: 'loading', ...p }),
    });
    post('progress', id, { stage: 'building', message: 'Building the networks on the GPU…' });
    current = { id: key, generator: loader.build() };
    return { ...stats, requests: store.stats.requests, model: { id: model.id, label: model.label, bytes: model.bytes } };
  } catch (err) {
    if (controller.signal.aborted) throw new Cancelled('Cancelled; what was downloaded is kept.');
    throw err;
  } finally {
    clearInterval(timer);
  }
}

async function generate(id, { source, image, request, noise, returnFrames, chunkBytes }) {
  await wasm;
  post('progress', id, { stage: 'checking', message: 'Reading the image…' });
  checkImage(new Uint8Array(image));
  const loaded = await loadModel(id, { source, chunkBytes });
  const generator = current.generator;
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
    const { width, height, frames: count, fps } = request;
    const rgba = [];
    const rgb = new Uint8Array(count * width * height * 3);
    const raw = returnFrames ? new Float32Array(count * width * height * 3) : null;
    for (let f = 0; f < count; f++) {
      checkCancel(id);
      post('progress', id, { stage: 'decoding', frame: f + 1, frames: count });
      const values = await generator.decodeFrame(f).read();
      raw?.set(values, f * values.length);
      for (let j = 0; j < values.length; j++) rgb[f * values.length + j] = Math.min(255, Math.max(0, Math.round(values[j] * 255)));
      rgba.push(toRgba(values, width * height));
    }
    post('progress', id, { stage: 'video', message: 'Encoding the video…' });
    const webm = await encodeWebm(rgba, width, height, fps);
    const gif = new Blob([encodeGif(rgb, width, height, count, fps)], { type: 'image/gif' });
    generator.cancel();
    return { webm, gif, width, height, frames: count, fps, rawFrames: raw, load: loaded };
  } catch (err) {
    generator.cancel(); // frees the generation's GPU memory
    throw err;
  }
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
