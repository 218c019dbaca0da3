// The worker owns the model: wasm + burn on WebGPU, weight download and cache, generation, video
// encoding. Protocol (both ways `{kind, id, payload}`, kinds and error classes in protocol.js):
//   page → worker: load {source, kind?, chunkBytes?, stallMs?} | generate {source, image | continues,
//                  request, quality?, defaults?, noise?, refine?, returnFrames?} | sizes {source,
//                  request, quality?, defaults?, load?} | check-image {image} | cancel {} |
//                  fault {fault} (only with `?faults=1`)
//   `request` fields left out take `quality`'s ("reference", "balanced", "fast": its steps and
//   sampling), then the library's browser defaults (`defaults: "demo"`: the demo model's); its
//   `budgetBytes` is the page's GPU memory budget (absent: none), and the worker adds the
//   adapter's buffer limits. The completed request is checked by the library before any model
//   loads; a request the memory plan says cannot fit is refused with its sentence, planned from
//   the model's configs before any weight is downloaded. `sizes`
//   answers the size tiers for the request on the loaded model, `[{width, height, fits,
//   peakBytes, reason}]` (`reason`: the plan's sentence; the request's own size is ignored), or
//   null when `source` is not the model loaded (`load: true` loads it first).
//   `refine` = {source, prompt, negativePrompt?, strength, steps, guidance, width, height} runs
//   the refinement stage on the base video (the base model is unloaded first to free the GPU);
//   if it fails or is cancelled the result is the base video with `refineError` (a sentence).
//   `continues` = {rgba, width, height, frames, fps}: a video (8-bit RGBA frames, at most
//   MAX_VIDEO_FRAMES with the new clip) to extend; its last frame is the image, the new clip
//   runs at its fps, and the result is the video then the new clip without its first frame (the
//   repeat). check-image is answered at once (it needs no
//   GPU); the other requests run one at a time. An unknown kind or a payload of the wrong shape
//   is answered with a `bad-request` error.
//   worker → page: progress {stage, …; `encoding` carries the run's unetEquivalents} | preview
//                  {frames, width, height, rgba} | result {webm, gif, videoNote, width, height,
//                  frames, fps, rgba, request, unetEquivalents, refineError, restored, …}
//                  (`webm` or `gif` may be null when its encoder failed; `videoNote` says why;
//                  `restored` {encode, denoise}: seconds spent streaming a phase's networks back
//                  in from the cache, null when they stayed on the GPU; `gpuBytes` [in use,
//                  reserved] of burn's memory pool after the run; `wasmHeapBytes` the wasm
//                  memory's size, its high-water mark) | error {code,
//                  message} | fatal {code, message} (no id: the GPU device was lost or wasm
//                  panicked; the worker is unusable and the page replaces it)
// The worker's URL may carry `?precision=f32` (see `choosePrecision`); the default is "auto".
// `?faults=1` turns on the test faults (see `arm`), never set in normal use.
import init, {
  ModelLoader, checkImage, checkRequest, choosePrecision, defaults, encodeGif, gpuMemory, panicForTests, phaseComponents, precision, toRgba,
} from '../pkg/i2vgen_web.js';
import { QuotaError, openStore } from './weight-store.js';
import { load, resolve, sourceId } from './model-source.js';
import { encodeWebm } from './webm.js';
import {
  BadRequest, Cancelled, FAULTS, FATAL_CODES, GPU_LOST_SENTENCE, GpuLost, Kind, StorageFull, TooLarge, errorPayload,
} from './protocol.js';

const PREVIEW_EVERY = 2;
const params = new URL(import.meta.url).searchParams;
const FAULTS_ON = params.get('faults') === '1';
let current = null; // {id: kind + sourceId, model: Model}
const cancelled = new Set();
let queue = Promise.resolve();

const post = (kind, id, payload, transfer = []) => self.postMessage({ kind, id, payload }, transfer);

// ---- the worker's own failures: GPU lost, wgpu errors, wasm panics -----------------------------

/** The GPUDevice burn's wgpu runtime asked for (captured below), for the `destroy-device` fault. */
let gpuDevice = null;
/** Set once the worker is unusable; the page is told once (`fatal`) and replaces the worker. */
let fatalError = null;

function fatal(err) {
  if (fatalError) return;
  fatalError = err;
  post(Kind.FATAL, null, errorPayload(err));
}

// wgpu asks the adapter for its device inside wasm, out of our reach; wrapping requestDevice
// before wasm starts is how the worker hears the device's loss and its uncaptured errors (burn's
// runtime panics on the latter, which a page cannot recover from without a new wasm instance).
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await requestDevice.apply(this, args);
    gpuDevice = device;
    device.lost.then((info) => {
      console.warn(`The GPU device was lost (${info.reason}: ${info.message}).`);
      fatal(new GpuLost(GPU_LOST_SENTENCE));
    });
    device.addEventListener('uncapturederror', (event) => {
      console.warn(`The GPU reported an error: ${event.error.message}`);
      fatal(new GpuLost(GPU_LOST_SENTENCE));
    });
    return device;
  };
}

// A Rust panic is a `RuntimeError: unreachable` trap, thrown into whatever JS called wasm: a
// request (caught in `answer`), or an event callback (here).
const trapped = (reason) => reason instanceof WebAssembly.RuntimeError;
self.addEventListener('error', (event) => {
  if (trapped(event.error)) { event.preventDefault(); fatal(event.error); }
});
self.addEventListener('unhandledrejection', (event) => {
  if (trapped(event.reason)) { event.preventDefault(); fatal(event.reason); }
});

// The module's linear memory only grows: its size is the wasm heap's high-water mark.
let memory;
const wasm = init().then((exports) => {
  memory = exports.memory;
  choosePrecision(params.get('precision') ?? 'auto');
});

// ---- test faults (`?faults=1` only) ------------------------------------------------------------

/** Faults armed by `fault` requests, each taken once at its place (see `take`). */
const armed = new Set();
const take = (fault) => armed.delete(fault);

function arm(id, { fault }) {
  if (!FAULTS.includes(fault)) throw new BadRequest(`Unknown fault "${String(fault).slice(0, 40)}": use ${FAULTS.join(', ')}.`);
  armed.add(fault);
  return { armed: fault };
}

/**
 * The faults that strike at a denoising step: the GPU device destroyed, a validation error
 * outside any error scope (a buffer both mapped for reading and writing, which WebGPU forbids;
 * it reaches `uncapturederror`), or a wasm panic.
 */
function stepFaults() {
  if (take('destroy-device')) gpuDevice?.destroy();
  if (take('gpu-error')) gpuDevice?.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.MAP_WRITE });
  if (take('panic')) panicForTests();
}

// ---- requests ----------------------------------------------------------------------------------

function checkCancel(id) {
  if (cancelled.has(id)) throw new Cancelled('Cancelled.');
}

/**
 * Load `source` (unless it is the model loaded now). `plan`: a `generate` request with the
 * adapter's limits (`withLimits`), planned from the configs before any weight is downloaded.
 */
async function loadModel(id, { source, chunkBytes, stallMs, plan, kind = 'i2vgen' }) {
  await wasm;
  const key = `${kind} ${sourceId(source)}`;
  if (current?.id === key) return { cached: true };
  current?.model.free();
  current = null;
  // `stallMs` (tests: a stall found without waiting the real 15 s) only ever shortens the timeout.
  const store = await openStore({ ...(chunkBytes ? { chunkBytes } : {}), ...(stallMs ? { stallMs: Math.min(Math.max(stallMs, 500), 15_000) } : {}) });
  post(Kind.PROGRESS, id, { stage: 'resolving', message: 'Looking up the model files…' });
  const model = await resolve(store, source, kind);
  // The base pipeline's UNet comes onto the GPU when its phase does (`restore`), after the
  // encoders have done their work: the two need not fit together.
  const later = kind === 'i2vgen' ? phaseComponents('denoise') : [];
  const { loader, stats } = await streamModel(id, store, model, {
    wants: (component) => !later.includes(component),
    beforeWeights: (l) => {
      l.checkFiles(kind);
      if (plan && kind === 'i2vgen') checkPlan(l, plan);
    },
  });
  post(Kind.PROGRESS, id, { stage: 'building', message: 'Building the networks on the GPU…' });
  current = { id: key, model: loader.build(kind, kind === 'i2vgen' ? ['encode'] : []), store, files: model };
  for (const note of current.model.notes) console.warn(note);
  return { ...stats, requests: store.stats.requests, model: { id: model.id, label: model.label, bytes: model.bytes } };
}

/**
 * The networks of `phase` (`encode`, `denoise`) of the loaded base model, streamed back in from
 * the cache when the model let them go after their last use (the memory plan frees them).
 * Returns the seconds it took, or null when they were loaded.
 */
async function restore(id, phase) {
  const missing = current.model.missing(phase);
  if (missing.length === 0) return null;
  const started = performance.now();
  const message = `Loading the ${missing.join(' and ')} from this browser's cache…`;
  post(Kind.PROGRESS, id, { stage: 'restoring', message });
  const { loader } = await streamModel(id, current.store, current.files, {
    wants: (component) => missing.includes(component), progress: { stage: 'restoring', message },
  });
  current.model.loadPhase(phase, loader);
  return (performance.now() - started) / 1000;
}

/**
 * Stream the files of a resolved model from `store` (the cache, else the network) into a new
 * ModelLoader, which takes the tensors of the components `wants` accepts. `beforeWeights(loader)`
 * runs once the configs are in; `progress` is what each chunk's progress message carries besides
 * its bytes. A cancel takes effect at the next chunk.
 */
async function streamModel(id, store, model, { wants, beforeWeights, progress = { stage: 'loading' } }) {
  const controller = new AbortController();
  const timer = setInterval(() => cancelled.has(id) && controller.abort(), 100);
  const loader = await ModelLoader.create();
  try {
    const stats = await load(store, model, loader, {
      signal: controller.signal,
      wants,
      beforeWeights: beforeWeights ? () => beforeWeights(loader) : undefined,
      // Every chunk, from the cache too, reports here: a cancel takes effect at the next one.
      onProgress: (p) => {
        checkCancel(id);
        post(Kind.PROGRESS, id, { ...progress, ...p });
      },
    });
    checkCancel(id);
    return { loader, stats };
  } catch (err) {
    loader.free();
    if (controller.signal.aborted || err instanceof Cancelled) throw new Cancelled('Cancelled; what was downloaded is kept.');
    if (err instanceof QuotaError) throw new StorageFull(err.message);
    throw err;
  } finally {
    clearInterval(timer);
  }
}

/**
 * A readback of queued GPU work, or `Cancelled` as soon as the run is cancelled: the GPU finishes
 * what was queued in the background, but the answer does not wait for a whole step.
 */
function unlessCancelled(id, readback) {
  readback.catch(() => {}); // abandoned after a cancel, its outcome no longer matters
  let timer;
  const cancel = new Promise((_, reject) => {
    timer = setInterval(() => cancelled.has(id) && reject(new Cancelled('Cancelled.')), 50);
  });
  return Promise.race([readback, cancel]).finally(() => clearInterval(timer));
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
      stepFaults();
      await unlessCancelled(id, stage.step().read());
      const perStep = (performance.now() - started) / (i + 1);
      post(Kind.PROGRESS, id, { stage: denoising, step: i + 1, steps, eta: (perStep * (steps - i - 1)) / 1000 });
      if ((i + 1) % PREVIEW_EVERY === 0 && i + 1 < steps) {
        const preview = stage.preview();
        const [frames, height, width] = preview.shape;
        post(Kind.PREVIEW, id, { frames, width, height, rgba: toRgba(await unlessCancelled(id, preview.read()), 3) });
      }
    }
    const count = stage.frames;
    let raw = null;
    for (let f = 0; f < count; f++) {
      checkCancel(id);
      post(Kind.PROGRESS, id, { stage: decoding, frame: f + 1, frames: count });
      const frame = stage.decodeFrame(f);
      const [height, width] = frame.shape;
      raw ??= { values: new Float32Array(count * height * width * 3), width, height };
      raw.values.set(await unlessCancelled(id, frame.read()), f * height * width * 3);
    }
    return raw;
  } catch (err) {
    // After a trap nothing may call into wasm again, not even to free the stage.
    if (trapped(err)) fatal(err);
    throw err;
  } finally {
    if (!fatalError) stage.free();
  }
}

/** The steps and sampling of a quality preset, by name; an unknown name is an error that lists them. */
function preset(presets, quality) {
  const found = Object.hasOwn(presets, quality) ? presets[quality] : null;
  if (!found) throw new BadRequest(`Unknown quality "${String(quality).slice(0, 40)}": use ${Object.keys(presets).join(', ')}.`);
  return { steps: found.steps, sampling: found.sampling };
}

/**
 * The request with the fields the page leaves out (the preset's, then the library's defaults),
 * checked by the library before anything loads.
 */
async function complete(given, quality, which = 'browser') {
  await wasm;
  if (given !== undefined && !isObject(given)) throw new BadRequest('The request must be an object of generation settings (prompt, width, height, frames, …).');
  const all = JSON.parse(defaults());
  if (which !== 'browser' && which !== 'demo') throw new BadRequest(`Unknown defaults "${String(which).slice(0, 40)}": use browser or demo.`);
  const request = { ...all[which], seed: all.seed, ...(quality == null ? {} : preset(all.presets, quality)), ...given };
  try {
    checkRequest(JSON.stringify(request));
  } catch (err) {
    throw trapped(err) ? err : new BadRequest(err.message);
  }
  return request;
}

const isObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);
const isBytes = (value) => value instanceof ArrayBuffer || ArrayBuffer.isView(value);

/** A model source as the page sends it (see model-source.js), or a sentence. */
function checkSource(source, what = 'source') {
  const ok = isObject(source) && (source.type === 'hub'
    ? typeof source.base === 'string' && typeof source.repo === 'string' && typeof source.revision === 'string'
    : source.type === 'converted' && typeof source.url === 'string' && URL.canParse(source.url));
  if (!ok) throw new BadRequest(`The ${what} must be {type: "hub", base, repo, revision} or {type: "converted", url}.`);
}

/**
 * The memory plan of `plan` (a request from `withLimits`) by a ModelLoader (from the configs) or a
 * loaded Model: a refusal is `too-large`, its sentence the plan's.
 */
function checkPlan(model, plan) {
  try {
    model.checkPlan(plan);
  } catch (err) {
    throw trapped(err) ? err : new TooLarge(err.message);
  }
}

/** A request as JSON for the memory plan: with the adapter's buffer limits. */
async function withLimits(request) {
  const limits = (await adapterLimits()) ?? {};
  return JSON.stringify({ ...request, maxBufferBytes: limits.maxBufferSize, maxBindingBytes: limits.maxStorageBufferBindingSize });
}

async function sizes(id, { source, request: given, quality, defaults: which, load, chunkBytes }) {
  checkSource(source);
  const request = await complete(given, quality, which);
  if (current?.id !== `i2vgen ${sourceId(source)}`) {
    if (!load) return null;
    await loadModel(id, { source, chunkBytes });
  }
  return JSON.parse(current.model.sizes(await withLimits(request)));
}

async function loadRequest(id, payload) {
  checkSource(payload.source);
  return loadModel(id, payload);
}

/** The most frames a video made by extending one may have (the page holds them all as RGBA). */
const MAX_VIDEO_FRAMES = 1024;

/** A `continues` video: whole (its bytes fill its frames) and within MAX_VIDEO_FRAMES. */
function checkContinues(continues) {
  const count = (n) => Number.isSafeInteger(n) && n >= 1;
  const { rgba, width, height, frames, fps } = isObject(continues) ? continues : {};
  if (!(rgba instanceof Uint8Array) || ![width, height, frames, fps].every(count)) {
    throw new BadRequest('The video to extend must be {rgba: Uint8Array, width, height, frames, fps} with whole numbers of at least 1.');
  }
  if (frames > MAX_VIDEO_FRAMES) throw new BadRequest(`The video to extend has ${frames} frames, more than the ${MAX_VIDEO_FRAMES} a video may have; download it and start a new one from its last frame.`);
  if (rgba.length !== frames * width * height * 4) throw new BadRequest(`The video to extend is incomplete: ${frames} frames of ${width}×${height} RGBA are ${frames * width * height * 4} bytes, not ${rgba.length}; generate it again.`);
}

/** The payload of a `generate` request, checked before anything loads. */
function checkGenerate({ source, image, continues, noise, refine }) {
  checkSource(source);
  if (continues === undefined && !isBytes(image)) throw new BadRequest('The image must be the bytes of a PNG, JPEG or WebP file (an ArrayBuffer).');
  if (continues !== undefined) checkContinues(continues);
  if (noise !== undefined && noise !== null && !isBytes(noise)) throw new BadRequest('The noise must be the bytes of a safetensors file (an ArrayBuffer).');
  if (refine !== undefined && refine !== null) {
    if (!isObject(refine)) throw new BadRequest('The refinement must be an object ({source, prompt, strength, steps, guidance, width, height}).');
    checkSource(refine.source, 'refinement source');
  }
}

async function generate(id, payload) {
  checkGenerate(payload);
  const { source, image, continues, quality, defaults: which, request: given, noise, refine, returnFrames, chunkBytes } = payload;
  const request = await complete(given, quality, which);
  if (continues) {
    request.fps = continues.fps;
    const [width, height] = refine ? [refine.width, refine.height] : [request.width, request.height];
    if (width !== continues.width || height !== continues.height) {
      throw new BadRequest(`The new clip would be ${width}×${height} but the video is ${continues.width}×${continues.height}; extend it at the size (and refinement) it was made with.`);
    }
    if (continues.frames + request.frames - 1 > MAX_VIDEO_FRAMES) {
      throw new BadRequest(`The video would be ${continues.frames + request.frames - 1} frames long, more than the ${MAX_VIDEO_FRAMES} a video may have; download it and start a new one from its last frame.`);
    }
  } else {
    post(Kind.PROGRESS, id, { stage: 'checking', message: 'Reading the image…' });
    checkImage(new Uint8Array(image));
  }
  const json = await withLimits(request);
  const loaded = await loadModel(id, { source, chunkBytes, plan: json });
  const unetEquivalents = current.model.unetEquivalents(JSON.stringify(request));
  checkPlan(current.model, json); // the model may have been loaded for a smaller request
  // Seconds spent streaming each phase's networks back in from the cache (null: they were there).
  const restored = { encode: await restore(id, 'encode'), denoise: null };
  post(Kind.PROGRESS, id, { stage: 'encoding', message: 'Encoding the prompt and the image…', unetEquivalents });
  const noiseBytes = noise ? new Uint8Array(noise) : undefined;
  // Encoding (text and image encoders, VAE encode) is one synchronous call: a cancel is
  // honoured just before it and at the first step after it. The encoders are let go after it
  // unless the memory plan keeps every network, and the UNet comes in.
  checkCancel(id);
  const encoded = continues
    ? current.model.encodeFromPixels(json, lastFrame(continues), continues.width, continues.height, noiseBytes)
    : current.model.encode(json, new Uint8Array(image), noiseBytes);
  let stage;
  try {
    await new Promise((ok) => setTimeout(ok)); // a cancel sent during the encoding is read here
    checkCancel(id);
    restored.denoise = await restore(id, 'denoise');
    checkCancel(id);
    stage = current.model.denoise(encoded);
  } catch (err) {
    if (!trapped(err)) encoded.free();
    throw err;
  }
  let video = await runStage(id, stage, { denoising: 'denoising', decoding: 'decoding' });
  let refineError = null;
  if (refine) {
    try {
      video = await refineVideo(id, video, request, refine, chunkBytes);
    } catch (err) {
      if (FATAL_CODES.has(errorPayload(err).code)) throw err;
      // The base video is finished: it is the result, with the reason there is no refinement.
      refineError = err instanceof Cancelled
        ? 'The refinement was cancelled; this is the base video.'
        : `The refinement failed (${errorPayload(err).message.replace(/\.$/, '')}); this is the base video.`;
    }
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
    rgba, request, unetEquivalents, refineError, restored,
    rawFrames: returnFrames ? video.values : null, load: loaded, precision: await precision(),
    gpuBytes: gpuMemory(), wasmHeapBytes: memory.buffer.byteLength,
  };
}

/** The refinement stage on the base video (`refine` as the protocol gives it). */
async function refineVideo(id, video, request, refine, chunkBytes) {
  if (take('refine-fails')) throw new Error('the refiner was made to fail by the fault tests');
  // The refiner's draws use seed + 1, like the CLI.
  const { source, ...options } = refine;
  await loadModel(id, { source, chunkBytes, kind: 'refiner' });
  checkCancel(id);
  const refiner = current.model.refine(JSON.stringify({ negativePrompt: request.negativePrompt, ...options, seed: request.seed + 1 }), video.values, request.frames, video.height, video.width);
  return runStage(id, refiner, { denoising: 'refining', decoding: 'decoding refined' });
}

/** The last frame of a video's 8-bit RGBA frames. */
function lastFrame({ rgba, width, height, frames }) {
  const size = width * height * 4;
  return rgba.subarray((frames - 1) * size, frames * size);
}

/**
 * WebM and GIF of `count` 8-bit RGBA frames of `width`×`height`, each made on its own: either
 * alone is a result, and `videoNote` says which failed and why.
 */
async function encode(id, rgba, width, height, count, fps) {
  post(Kind.PROGRESS, id, { stage: 'video', message: 'Encoding the video…' });
  const size = width * height * 4;
  const notes = [];
  const attempt = async (name, make) => {
    checkCancel(id); // a cancel that came during the step before takes effect before this encoder
    try {
      return await make();
    } catch (err) {
      if (FATAL_CODES.has(errorPayload(err).code)) throw err;
      notes.push(`The ${name} could not be made (${errorPayload(err).message.replace(/\.$/, '')}).`);
      return null;
    }
  };
  const webm = await attempt('WebM', () => {
    if (take('webm-fails')) throw new Error('the WebM encoder was made to fail by the fault tests');
    const frames = [];
    for (let f = 0; f < count; f++) frames.push(rgba.slice(f * size, (f + 1) * size));
    return encodeWebm(frames, width, height, fps);
  });
  const gif = await attempt('GIF', () => new Blob([encodeGif(rgba, width, height, count, fps)], { type: 'image/gif' }));
  if (!webm && !gif) throw new Error(`Neither video could be made: ${notes.join(' ')}`);
  return { webm, gif, videoNote: notes.length ? notes.join(' ') : null, width, height, frames: count, fps };
}

let limits = null;
async function adapterLimits() {
  limits ??= navigator.gpu?.requestAdapter().then((a) => a?.limits) ?? Promise.resolve(null);
  return limits;
}

async function checkImageBytes(id, { image }) {
  if (!isBytes(image)) throw new BadRequest('The image must be the bytes of a PNG, JPEG or WebP file (an ArrayBuffer).');
  await wasm;
  const [width, height] = checkImage(new Uint8Array(image));
  return { width, height };
}

/** The requests that use the GPU, run one at a time. */
const queued = new Map([[Kind.LOAD, loadRequest], [Kind.GENERATE, generate], [Kind.SIZES, sizes]]);
const KINDS = [...queued.keys(), Kind.CHECK_IMAGE, Kind.CANCEL];

async function answer(id, handler, payload) {
  try {
    if (payload !== undefined && !isObject(payload)) throw new BadRequest('A request\'s payload must be an object.');
    const result = await handler(id, payload ?? {});
    post(Kind.RESULT, id, result, result?.rgba ? [result.rgba.buffer] : []);
  } catch (err) {
    if (FATAL_CODES.has(errorPayload(err).code)) fatal(err);
    else if (!fatalError) await settleGpuError(err, id);
  } finally {
    cancelled.delete(id);
  }
}

/**
 * Post a request's error, unless the GPU device turns out lost: a readback fails before the
 * device's `lost` promise settles, so a failed run waits briefly for it, and the page then hears
 * `fatal` (one sentence, the worker replaced) instead of the readback's technical message.
 */
async function settleGpuError(err, id) {
  if (gpuDevice && !(err instanceof BadRequest) && !(err instanceof Cancelled)) {
    await Promise.race([gpuDevice.lost, new Promise((ok) => setTimeout(ok, 200))]);
  }
  if (!fatalError) post(Kind.ERROR, id, errorPayload(err));
}

self.onmessage = ({ data }) => {
  const { kind, id, payload } = isObject(data) ? data : {};
  if (kind === Kind.CANCEL) {
    cancelled.add(id);
    return;
  }
  // Reading an image header needs no GPU: answered now, not behind a model load or a run.
  if (kind === Kind.CHECK_IMAGE) {
    answer(id, checkImageBytes, payload);
    return;
  }
  if (kind === Kind.FAULT && FAULTS_ON) {
    answer(id, arm, payload);
    return;
  }
  const handler = typeof kind === 'string' ? queued.get(kind) : undefined;
  if (!handler) {
    post(Kind.ERROR, id ?? null, errorPayload(new BadRequest(`Unknown request kind "${String(kind).slice(0, 40)}": use ${KINDS.join(', ')}.`)));
    return;
  }
  // One request at a time: the GPU is shared.
  queue = queue.then(() => answer(id, handler, payload));
};
