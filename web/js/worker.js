// The worker owns the model: wasm + burn on WebGPU, weight download and cache, generation, video
// encoding. Protocol (both ways `{kind, id, payload}`):
//   page → worker: load {source, kind?, chunkBytes?} | generate {source, image | continues,
//                  request, quality?, defaults?, noise?, refine?, returnFrames?} | sizes {source,
//                  request, quality?, defaults?, load?} | check-image {image} | cancel {}
//   `request` fields left out take `quality`'s ("reference", "balanced", "fast": its steps and
//   sampling), then the library's browser defaults (`defaults: "demo"`: the demo model's); its
//   `budgetBytes` is the page's GPU memory budget (absent: none), and the worker adds the
//   adapter's buffer limits. A request the memory plan says cannot fit is refused with its
//   sentence. `sizes` answers the size tiers for the request on the loaded model, `[{width,
//   height, fits, peakBytes, reason}]` (`reason`: the plan's sentence; the request's own size is
//   ignored), or null when `source` is not the model loaded (`load: true` loads it first).
//   `refine` = {source, prompt, negativePrompt?, strength, steps, guidance, width, height} runs
//   the refinement stage on the base video (the base model is unloaded first to free the GPU).
//   `continues` = {rgba, width, height, frames, fps}: a video (8-bit RGBA frames) to extend; its
//   last frame is the image, the new clip runs at its fps, and the result is the video then the
//   new clip without its first frame (the repeat). check-image is answered at once (it needs no
//   GPU); the other requests run one at a time.
//   worker → page: progress {stage, …; `encoding` carries the run's unetEquivalents} | preview
//                  {frames, width, height, rgba} | result {webm, gif, width, height, frames, fps,
//                  rgba, request, unetEquivalents, …} | error {message, cancelled}
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

/** The steps and sampling of a quality preset, by name; an unknown name is an error that lists them. */
function preset(presets, quality) {
  const found = Object.hasOwn(presets, quality) ? presets[quality] : null;
  if (!found) throw new Error(`Unknown quality "${quality}": use ${Object.keys(presets).join(', ')}.`);
  return { steps: found.steps, sampling: found.sampling };
}

/** The request with the fields the page leaves out: the preset's, then the library's defaults. */
async function complete(given, quality, which = 'browser') {
  await wasm;
  const all = JSON.parse(defaults());
  if (which !== 'browser' && which !== 'demo') throw new Error(`Unknown defaults "${which}": use browser or demo.`);
  return { ...all[which], seed: all.seed, ...(quality == null ? {} : preset(all.presets, quality)), ...given };
}

/** A request as JSON for the memory plan: with the adapter's buffer limits. */
async function withLimits(request) {
  const limits = (await adapterLimits()) ?? {};
  return JSON.stringify({ ...request, maxBufferBytes: limits.maxBufferSize, maxBindingBytes: limits.maxStorageBufferBindingSize });
}

async function sizes(id, { source, request: given, quality, defaults: which, load, chunkBytes }) {
  const request = await complete(given, quality, which);
  if (current?.id !== `i2vgen ${sourceId(source)}`) {
    if (!load) return null;
    await loadModel(id, { source, chunkBytes });
  }
  return JSON.parse(current.model.sizes(await withLimits(request)));
}

async function generate(id, { source, image, continues, quality, defaults: which, request: given, noise, refine, returnFrames, chunkBytes }) {
  const request = await complete(given, quality, which);
  if (continues) {
    request.fps = continues.fps;
    const [width, height] = refine ? [refine.width, refine.height] : [request.width, request.height];
    if (width !== continues.width || height !== continues.height) {
      throw new Error(`The new clip would be ${width}×${height} but the video is ${continues.width}×${continues.height}; extend it at the size (and refinement) it was made with.`);
    }
    if (!(continues.frames >= 1) || continues.rgba?.length !== continues.frames * width * height * 4) {
      throw new Error('The video to extend is incomplete; generate it again.');
    }
  } else {
    post('progress', id, { stage: 'checking', message: 'Reading the image…' });
    checkImage(new Uint8Array(image));
  }
  const loaded = await loadModel(id, { source, chunkBytes });
  const unetEquivalents = current.model.unetEquivalents(JSON.stringify(request));
  post('progress', id, { stage: 'encoding', message: 'Encoding the prompt and the image…', unetEquivalents });
  const json = await withLimits(request);
  const noiseBytes = noise ? new Uint8Array(noise) : undefined;
  const stage = continues
    ? current.model.generateFromPixels(json, lastFrame(continues), continues.width, continues.height, noiseBytes)
    : current.model.generate(json, new Uint8Array(image), noiseBytes);
  let video = await runStage(id, stage, { denoising: 'denoising', decoding: 'decoding' });
  if (refine) {
    // The refiner's draws use seed + 1, like the CLI.
    const { source: refineSource, ...options } = refine;
    await loadModel(id, { source: refineSource, chunkBytes, kind: 'refiner' });
    const refiner = current.model.refine(JSON.stringify({ negativePrompt: request.negativePrompt, ...options, seed: request.seed + 1 }), video.values, request.frames, video.height, video.width);
    video = await runStage(id, refiner, { denoising: 'refining', decoding: 'decoding refined' });
  }
  const { width, height } = video;
  let rgba = toRgba(video.values, 3);
  let count = request.frames;
  if (continues) {
    // The new clip starts from the video's last frame: drop its own first frame, the repeat.
    const size = width * height * 4;
    const joined = new Uint8Array(continues.rgba.length + rgba.length - size);
    joined.set(continues.rgba);
    joined.set(rgba.subarray(size), continues.rgba.length);
    rgba = joined;
    count = continues.frames + request.frames - 1;
  }
  return {
    ...(await encode(id, rgba, width, height, count, request.fps)),
    rgba, request, unetEquivalents,
    rawFrames: returnFrames ? video.values : null, load: loaded, precision: await precision(),
  };
}

/** The last frame of a video's 8-bit RGBA frames. */
function lastFrame({ rgba, width, height, frames }) {
  const size = width * height * 4;
  return rgba.subarray((frames - 1) * size, frames * size);
}

/** WebM and GIF of `count` 8-bit RGBA frames of `width`×`height`. */
async function encode(id, rgba, width, height, count, fps) {
  post('progress', id, { stage: 'video', message: 'Encoding the video…' });
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
  sizes,
};

async function answer(id, handler, payload) {
  try {
    const result = await handler(id, payload ?? {});
    post('result', id, result, result?.rgba ? [result.rgba.buffer] : []);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    post('error', id, { message, cancelled: err instanceof Cancelled });
  } finally {
    cancelled.delete(id);
  }
}

async function checkImageBytes(id, { image }) {
  await wasm;
  const [width, height] = checkImage(new Uint8Array(image));
  return { width, height };
}

self.onmessage = ({ data: { kind, id, payload } }) => {
  if (kind === 'cancel') {
    cancelled.add(id);
    return;
  }
  // Reading an image header needs no GPU: answered now, not behind a model load or a run.
  if (kind === 'check-image') {
    answer(id, checkImageBytes, payload);
    return;
  }
  const handler = handlers[kind];
  if (!handler) {
    post('error', id, { message: `unknown request kind ${kind}` });
    return;
  }
  // One request at a time: the GPU is shared.
  queue = queue.then(() => answer(id, handler, payload));
};
