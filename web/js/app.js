// The page: checks WebGPU, shows the adapter, runs the device check, and drives the worker that
// generates videos. Everything long runs in the worker; this file only talks to it.
import init, { choosePrecision, defaults, deviceCheck, precision, sizeTiers } from '../pkg/i2vgen_web.js';
import { aspect, budgetBytes, demoSource, largestFit, sharedClient } from './client.js';
import { FATAL_CODES } from './protocol.js';
import { DEFAULT_HUB } from './model-source.js';
import { deleteModel, listModels, mb } from './weight-store.js';

const $ = (id) => document.getElementById(id);

const WEBGPU_HELP =
  'Use Chrome or Edge 113 or newer on Windows, macOS or ChromeOS (on Linux start Chrome with ' +
  '--enable-unsafe-webgpu and --enable-features=Vulkan), Safari 26, or Firefox 141 on Windows ' +
  '(elsewhere set dom.webgpu.enabled in about:config).';

function setState(state, message) {
  document.body.dataset.state = state;
  $('message').textContent = message;
}

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

function showAdapter(adapter) {
  const info = adapter.info ?? {};
  $('gpu-vendor').textContent = info.vendor || '(not reported)';
  $('gpu-architecture').textContent = info.architecture || '(not reported)';
  $('gpu-description').textContent = info.description || '(not reported)';
  const f16 = adapter.features.has('shader-f16');
  $('gpu-f16').textContent = f16 ? 'yes (f16 path)' : 'no (f32 path)';
  $('gpu-max-buffer').textContent = mib(adapter.limits.maxBufferSize);
  $('gpu-max-binding').textContent = mib(adapter.limits.maxStorageBufferBindingSize);
  $('gpu').hidden = false;
}

// ---- generation -------------------------------------------------------------------------------

let client = null;
let running = null; // request id
let imageBytes = null;
/** The video shown: its 8-bit RGBA frames (to extend it), size, fps, clips, last request, URLs. */
let shown = null;

function source() {
  if ($('model-demo').checked) return demoSource(location.href);
  return { ...DEFAULT_HUB, base: $('hub-base').value.trim() || DEFAULT_HUB.base, repo: $('hub-repo').value.trim(), revision: $('hub-revision').value.trim() || 'main' };
}

/** A model given as a hub repo id or a converted folder's URL. */
function modelSource(text) {
  if (/^https?:/.test(text)) return { type: 'converted', url: text.endsWith('/') ? text : `${text}/` };
  return { ...DEFAULT_HUB, base: $('hub-base').value.trim() || DEFAULT_HUB.base, repo: text, revision: 'main' };
}

function refinement() {
  if (!$('refine').checked) return undefined;
  const [height, width] = $('refine-size').value.split('x').map(Number);
  const demo = $('model-demo').checked;
  return {
    source: demo ? { ...demoSource(location.href), repo: 'demo/tiny-vid2vid' } : modelSource($('refine-source').value.trim()),
    prompt: $('refine-prompt').value || $('prompt').value,
    strength: Number($('refine-strength').value),
    steps: Number($('refine-steps').value),
    guidance: Number($('refine-guidance').value),
    width, height,
  };
}

function sampling() {
  return {
    scheduler: $('scheduler').value || null,
    spacing: $('spacing').value || null,
    guidanceUntil: Number($('guidance-until').value),
    cacheInterval: Number($('cache-interval').value),
  };
}

function request() {
  return {
    prompt: $('prompt').value,
    negativePrompt: $('negative-prompt').value,
    width: Number($('width').value),
    height: Number($('height').value),
    frames: Number($('frames').value),
    fps: Number($('fps').value),
    steps: Number($('steps').value),
    guidance: Number($('guidance').value),
    seed: Number($('seed').value),
    sampling: sampling(),
    budgetBytes: budgetBytes($('budget').value),
  };
}

/** A cost in whole-UNet evaluations, beside the reference preset's. */
function describeCost(unetEquivalents) {
  const reference = DEFAULTS.presets.reference;
  return `Cost: ≈${unetEquivalents.toFixed(1)} whole-UNet evaluations (the reference, ${reference.steps} guided steps: ${Math.round(reference.unetEquivalents)}).`;
}

const optionText = (select, value) => [...$(select).options].find((o) => o.value === (value ?? ''))?.textContent ?? value;

/** The settings a clip was made with, as the worker used them. */
function describeSettings({ steps, seed, sampling: s }, unetEquivalents) {
  const parts = [`${steps} steps`, `scheduler: ${optionText('scheduler', s.scheduler)}`, `spacing: ${optionText('spacing', s.spacing)}`];
  if (s.guidanceUntil < 1) parts.push(`guidance for the first ${Math.round(s.guidanceUntil * 100)}% of the steps`);
  if (s.cacheInterval > 1) parts.push(`the whole UNet every ${s.cacheInterval} steps`);
  return `${parts.join(', ')}, seed ${seed}: ≈${unetEquivalents.toFixed(1)} whole-UNet evaluations.`;
}

function describeProgress(p) {
  switch (p.stage) {
    case 'loading': return [`Loading weights: ${p.file} — ${mb(p.done)} of ${mb(p.total)} (${mb(p.rate)}/s, about ${Math.ceil(p.eta)} s left)`, p.done / p.total];
    case 'restoring': return p.done === undefined ? [p.message, null] : [`${p.message} ${mb(p.done)} of ${mb(p.total)}`, p.done / p.total];
    case 'denoising': return [`Denoising step ${p.step} of ${p.steps} (about ${Math.ceil(p.eta)} s left)`, p.step / p.steps];
    case 'refining': return [`Refining step ${p.step} of ${p.steps} (about ${Math.ceil(p.eta)} s left)`, p.step / p.steps];
    case 'decoding': case 'decoding refined': return [`Decoding ${p.stage === 'decoding' ? '' : 'refined '}frame ${p.frame} of ${p.frames}`, p.frame / p.frames];
    default: return [p.message ?? p.stage, null];
  }
}

function showPreview({ frames, width, height, rgba }) {
  const canvas = $('preview');
  canvas.width = width * frames;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const pixels = new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.byteLength);
  for (let f = 0; f < frames; f++) {
    const frame = pixels.subarray(f * width * height * 4, (f + 1) * width * height * 4);
    ctx.putImageData(new ImageData(new Uint8ClampedArray(frame), width, height), f * width, 0);
  }
}

/** Start a `generate` request with progress shown (each line prefixed with `label`, if any). */
function startRun(payload, label) {
  $('progress-section').hidden = false;
  $('generate').disabled = true;
  $('extend').disabled = true;
  $('cancel').disabled = false;
  $('cost').textContent = '';
  setRun('running', 'Starting…');
  const { id, promise } = client.request('generate', payload, {
    onProgress: (p) => {
      const [text, fraction] = describeProgress(p);
      $('stage').textContent = label ? `${label}: ${text}` : text;
      if (p.unetEquivalents !== undefined) $('cost').textContent = describeCost(p.unetEquivalents);
      if (fraction === null) $('progress').removeAttribute('value');
      else $('progress').value = fraction;
    },
    onPreview: showPreview,
  });
  running = id;
  return promise.finally(() => {
    running = null;
    $('generate').disabled = false;
    $('extend').disabled = false;
    $('cancel').disabled = true;
    refreshCache();
    refreshSizes();
  });
}

/** Show a result (`clips` clips long) in place of the video shown. */
function show(result, clips) {
  if (shown) for (const url of shown.urls) URL.revokeObjectURL(url);
  const { rgba, width, height, frames, fps, request: used, unetEquivalents } = result;
  // Either encoding may have failed (the result's videoNote says why): show what exists.
  const [webm, gif] = [result.webm, result.gif].map((blob) => (blob ? URL.createObjectURL(blob) : null));
  shown = { rgba, width, height, frames, fps, clips, request: used, urls: [webm, gif].filter(Boolean) };
  if (webm) $('result-video').src = webm;
  else $('result-video').removeAttribute('src');
  $('result-video').hidden = !webm;
  // Without a WebM the GIF is the video shown.
  if (!webm && gif) $('result-gif').src = gif;
  else $('result-gif').removeAttribute('src');
  $('result-gif').hidden = !(gif && !webm);
  $('download-webm').hidden = !webm;
  $('download-webm').href = webm ?? '';
  $('download-gif').hidden = !gif;
  $('download-gif').href = gif ?? '';
  $('result-settings').textContent = `${clips > 1 ? `${clips} clips; the last: ` : ''}${describeSettings(used, unetEquivalents)}`;
  $('result').hidden = false;
}

async function generate(event) {
  event.preventDefault();
  if (running) return;
  if (!imageBytes) {
    setRun('error', 'Choose an image first (PNG, JPEG or WebP).');
    return;
  }
  // The previous video stays visible (and downloadable) until the new one replaces it.
  try {
    const result = await startRun({ source: source(), image: imageBytes.slice(0), request: request(), refine: refinement() });
    show(result, 1);
    setRun('done', `Done: ${result.frames} frames of ${result.width}×${result.height} at ${result.fps} fps. The video is below.${notes(result)}`);
  } catch (err) {
    setRun(err.code === 'cancelled' ? 'cancelled' : 'error', err.code === 'cancelled' ? 'Cancelled.' : err.message);
  }
}

/**
 * The next clip from the last frame of the video shown, with the form's prompt and settings at the
 * video's size and fps and the next seed; the video becomes both, the repeated frame once.
 */
async function extend() {
  if (running || !shown) return;
  const clips = shown.clips + 1;
  const { width, height, seed } = shown.request;
  const continues = { rgba: shown.rgba, width: shown.width, height: shown.height, frames: shown.frames, fps: shown.fps };
  const payload = { source: source(), continues, request: { ...request(), width, height, seed: seed + 1 }, refine: refinement() };
  try {
    const result = await startRun(payload, `Clip ${clips} of ${clips}`);
    show(result, clips);
    setRun('done', `Done: ${clips} clips, ${result.frames} frames of ${result.width}×${result.height} at ${result.fps} fps. The video is below.${notes(result)}`);
  } catch (err) {
    setRun(err.code === 'cancelled' ? 'cancelled' : 'error', err.code === 'cancelled'
      ? 'The extension was cancelled; the previous video is kept below.'
      : FATAL_CODES.has(err.code)
        ? `${err.message} The previous video is kept below.`
        : `Could not extend the video (${err.message.replace(/\.$/, '')}); the previous video is kept below.`);
  }
}

/** What a result says besides "done": why the refinement or one of the encodings is missing. */
const notes = ({ refineError, videoNote }) => [refineError, videoNote].filter(Boolean).map((n) => ` ${n}`).join('');

function setRun(run, message) {
  document.body.dataset.run = run;
  $('message').textContent = message;
}

async function setImage(file) {
  imageBytes = null;
  $('image-preview').hidden = true;
  const bytes = await file.arrayBuffer();
  try {
    const { width, height } = await client.request('check-image', { image: bytes.slice(0) }).promise;
    imageBytes = bytes;
    if ($('image-preview').src.startsWith('blob:')) URL.revokeObjectURL($('image-preview').src);
    $('image-preview').src = URL.createObjectURL(file);
    $('image-preview').hidden = false;
    setRun('ready', `Image: ${file.name || 'pasted'}, ${width}×${height} pixels.`);
  } catch (err) {
    setRun('error', `${file.name || 'That file'}: ${err.message}`);
  }
}

async function refreshCache() {
  const list = $('cached-models');
  list.replaceChildren();
  for (const model of await listModels()) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = 'Delete';
    button.setAttribute('aria-label', `Delete ${model.label}`);
    button.onclick = async () => { await deleteModel(model.id); refreshCache(); };
    // A partial download is listed as such, with the bytes actually stored, never as cached.
    const size = model.complete ? mb(model.bytes) : `partly downloaded, ${mb(model.stored)} of ${mb(model.bytes)} (a run resumes it)`;
    item.append(`${model.label}: ${size} `, button);
    list.append(item);
  }
  if (!list.children.length) list.append('No models are cached.');
}

/** The request defaults, from the library (through wasm): the one place they are kept. */
let DEFAULTS = null;

// ---- sizes ------------------------------------------------------------------------------------

/** The size tiers, `[{width, height}]`, with `fits` and `reason` once the model says which fit. */
let tiers = [];
/** The user chose the size (the Size select, width, height or the I2VGen-XL defaults): kept. */
let sizeChosen = false;
let sizesAsked = 0;

const sizeValue = ({ width, height }) => `${height}x${width}`;
const modelDefault = () => ($('model-demo').checked ? DEFAULTS.demo : DEFAULTS.browser);

function setSize({ width, height }) {
  $('width').value = width;
  $('height').value = height;
}

/**
 * The Size options: the model's own size when it is no tier (the demo model's 40×24), every tier
 * (those that do not fit disabled, the memory plan's sentence as their title, the others their
 * peak), and custom.
 */
function fillSizes() {
  const own = modelDefault();
  const options = [];
  if (!tiers.some((t) => sizeValue(t) === sizeValue(own))) {
    options.push(new Option(`model default (${own.width}×${own.height})`, sizeValue(own)));
  }
  for (const tier of tiers) {
    const option = new Option(`${tier.width}×${tier.height} (${aspect(tier)})`, sizeValue(tier));
    if (tier.fits === false) {
      option.disabled = true;
      option.title = tier.reason;
      const need = /need ([\d.]+ GB)/.exec(tier.reason)?.[1];
      option.textContent += need ? ` — needs ${need}` : ' — too large for this GPU';
    } else if (tier.fits) {
      option.title = `About ${(tier.peakBytes / 1e9).toFixed(1)} GB of GPU memory at its peak.`;
    }
    options.push(option);
  }
  options.push(new Option('custom (the width and height below)', 'custom'));
  $('size').replaceChildren(...options);
  syncSize();
}

/** Select the option of the width and height (else custom), and say what does not fit. */
function syncSize() {
  const value = `${$('height').value}x${$('width').value}`;
  $('size').value = [...$('size').options].some((o) => o.value === value) ? value : 'custom';
  const tier = tiers.find((t) => sizeValue(t) === value);
  const unfit = tiers.filter((t) => t.fits === false);
  let note = '';
  if (tier?.fits === false) note = tier.reason;
  else if (unfit.length) note = `Not offered: ${unfit.map((t) => `${t.width}×${t.height}`).join(', ')}. ${unfit[0].reason}`;
  else if (tiers.every((t) => t.fits === undefined)) note = 'Which sizes fit this GPU is checked once the model is loaded.';
  $('size-note').textContent = note;
}

function chooseSize() {
  sizeChosen = true;
  if ($('size').value !== 'custom') {
    const [height, width] = $('size').value.split('x').map(Number);
    setSize({ width, height });
  }
  syncSize();
}

/**
 * Ask the loaded model which sizes fit with the form's frames, guidance, sampling and budget (the
 * demo model, bundled and small, is loaded for it). Until the user chooses a size, the real model
 * takes the largest that fits (16:9 first); the demo model keeps its own.
 */
async function refreshSizes() {
  const asked = ++sizesAsked;
  const demo = $('model-demo').checked;
  try {
    const { width, height } = modelDefault(); // any valid size: the answer covers every tier
    const payload = { source: source(), request: { ...request(), width, height }, load: demo };
    const answer = await client.request('sizes', payload).promise;
    if (asked !== sizesAsked) return; // a newer question is on its way
    tiers = answer ?? JSON.parse(sizeTiers());
    const best = largestFit(answer);
    if (!demo && !sizeChosen && best) setSize(best);
    fillSizes();
  } catch (err) {
    console.warn(`Could not check which sizes fit: ${err.message}`);
  }
}

function applySampling({ scheduler, spacing, guidanceUntil, cacheInterval }) {
  $('scheduler').value = scheduler ?? '';
  $('spacing').value = spacing ?? '';
  $('guidance-until').value = guidanceUntil;
  $('cache-interval').value = cacheInterval;
}

/** The quality preset the steps and sampling knobs match, or "custom". */
function syncQuality() {
  const steps = Number($('steps').value);
  const now = sampling();
  const matches = ({ steps: s, sampling: p }) => s === steps && Object.keys(now).every((k) => p[k] === now[k]);
  $('quality').value = Object.keys(DEFAULTS.presets).find((name) => matches(DEFAULTS.presets[name])) ?? 'custom';
}

function applyQuality() {
  const preset = DEFAULTS.presets[$('quality').value];
  if (!preset) return;
  $('steps').value = preset.steps;
  applySampling(preset.sampling);
}

/** The quality options, costliest first, each with its steps and cost on the real model. */
function qualityOptions() {
  const presets = Object.entries(DEFAULTS.presets).sort(([, a], [, b]) => b.unetEquivalents - a.unetEquivalents);
  const options = presets.map(([name, p]) => new Option(`${name} — ${p.steps} steps, ≈${Math.round(p.unetEquivalents)} UNet evals`, name));
  $('quality').prepend(...options);
}

function applyDefaults(request, refine) {
  setSize(request);
  syncSize();
  for (const name of ['frames', 'fps', 'steps', 'guidance']) $(name).value = request[name];
  applySampling(request.sampling);
  syncQuality();
  if (!refine) return;
  $('refine-size').value = `${refine.height}x${refine.width}`;
  for (const name of ['strength', 'steps', 'guidance']) $(`refine-${name}`).value = refine[name];
}

function useDemoDefaults(demo) {
  sizeChosen = false;
  applyDefaults(demo ? DEFAULTS.demo : DEFAULTS.browser, demo ? DEFAULTS.refineDemo : DEFAULTS.refine);
  fillSizes();
  refreshSizes();
}

function wireForm() {
  $('form').hidden = false;
  $('form').addEventListener('submit', generate);
  $('cancel').onclick = () => running && client.cancel(running);
  $('extend').onclick = extend;
  qualityOptions();
  $('quality').onchange = applyQuality;
  for (const id of ['steps', 'scheduler', 'spacing', 'guidance-until', 'cache-interval']) $(id).addEventListener('input', syncQuality);
  tiers = JSON.parse(sizeTiers());
  $('size').onchange = chooseSize;
  for (const id of ['width', 'height']) $(id).addEventListener('input', () => { sizeChosen = true; syncSize(); });
  // What the memory plan depends on besides the size.
  for (const id of ['frames', 'guidance', 'quality', 'cache-interval', 'budget']) $(id).addEventListener('change', refreshSizes);
  const params = new URLSearchParams(location.search);
  if (params.has('budget')) $('budget').value = params.get('budget');
  $('image').onchange = () => $('image').files[0] && setImage($('image').files[0]);
  $('model-demo').onchange = () => useDemoDefaults(true);
  $('model-hub').onchange = () => useDemoDefaults(false);
  $('defaults').onclick = () => {
    sizeChosen = true;
    applyDefaults(DEFAULTS.reference);
    refreshSizes();
  };
  const { width, height, frames, steps } = DEFAULTS.reference;
  $('defaults').textContent = `Use I2VGen-XL's defaults (${width}×${height}, ${frames} frames, ${steps} steps)`;
  $('seed').value = DEFAULTS.seed;
  const drop = $('drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files[0]) setImage(e.dataTransfer.files[0]);
  };
  document.addEventListener('paste', (e) => {
    const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith('image/'));
    if (file) setImage(file);
  });
  $('refresh-cache').onclick = refreshCache;
  if (params.get('model') === 'demo') $('model-demo').checked = true;
  useDemoDefaults($('model-demo').checked);
  refreshCache();
}

async function main() {
  if (!('gpu' in navigator)) {
    setState('no-webgpu', `WebGPU is not available in this browser, so the model cannot run here. ${WEBGPU_HELP}`);
    return;
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    setState('no-webgpu', `This browser has WebGPU but found no usable GPU adapter (it may be blocklisted or disabled). ${WEBGPU_HELP}`);
    return;
  }
  showAdapter(adapter);

  setState('loading', 'Loading the WebAssembly module…');
  await init();
  DEFAULTS = JSON.parse(defaults());
  // `?precision=f32` keeps f32 weights and compute (the default, "auto", uses f16 weights: f16 compute
  // where the GPU has shader-f16, f32 compute with packed weights elsewhere).
  const chosen = new URLSearchParams(location.search).get('precision') ?? 'auto';
  try {
    choosePrecision(chosen);
  } catch (err) {
    setState('error', `${err.message} For example: ${location.pathname}?precision=f32`);
    return;
  }
  setState('loading', 'Running the device check on WebGPU…');
  const started = performance.now();
  const value = await deviceCheck();
  const ms = performance.now() - started;
  $('check-value').textContent = value.toExponential(7);
  $('check-time').textContent = `(${ms.toFixed(0)} ms including shader compilation)`;
  $('check').hidden = false;
  // The worker is started with the same choice, so it computes in the same precision.
  $('precision').textContent = {
    'f16': 'Precision: f16 weights and compute (this GPU has shader-f16: half the memory; add ?precision=f32 to the address for f32).',
    'packed-f16': 'Precision: f16 weights, f32 compute (this GPU has no shader-f16; the weights are packed two to a word: half the memory; add ?precision=f32 to the address for f32 weights).',
    'f32': 'Precision: f32 weights and compute (chosen with ?precision=f32).',
  }[await precision()];
  client = sharedClient({ precision: chosen });
  wireForm();
  setState('ready', 'WebGPU works: burn ran the device check on your GPU. Choose an image and a prompt.');
}

main().catch((err) => {
  console.error(err);
  setState('error', `Something went wrong: ${err?.message ?? err}. Reload the page to try again; if it keeps failing, your GPU driver may not support WebGPU.`);
});
