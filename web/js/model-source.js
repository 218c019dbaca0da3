// Where a model comes from, and streaming it into the wasm ModelLoader.
//
// Two sources:
// - `{type: 'hub', base, repo, revision}`: a diffusers I2VGenXLPipeline repo read exactly as the
//   Hugging Face hub serves it (`<base>/<repo>/resolve/<revision>/<path>`), preferring the
//   `*.fp16.safetensors` variant files; `base` is https://huggingface.co or a local mirror.
// - `{type: 'converted', url}`: a folder written by `weights-tools convert` (manifest.json + shards).

import { SafetensorsStream } from './safetensors-stream.js';
import { QuotaError, checkQuota, mb } from './weight-store.js';

// What each kind of pipeline folder holds: an I2VGenXLPipeline (the base stage) or a
// VideoToVideoSDPipeline (the refiner).
const KINDS = {
  i2vgen: { components: ['text_encoder', 'image_encoder', 'vae', 'unet'], extra: ['feature_extractor/preprocessor_config.json'] },
  refiner: { components: ['text_encoder', 'vae', 'unet'], extra: [] },
};
const textFiles = (kind) => [
  'scheduler/scheduler_config.json', ...KINDS[kind].extra,
  'tokenizer/vocab.json', 'tokenizer/merges.txt', 'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json',
  ...KINDS[kind].components.map((c) => `${c}/config.json`),
];
const OPTIONAL = new Set(['tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json']);

export const DEFAULT_HUB = { type: 'hub', base: 'https://huggingface.co', repo: 'ali-vilab/i2vgen-xl', revision: 'main' };

export function sourceId(source) {
  return source.type === 'hub' ? `${source.base}/${source.repo}@${source.revision}` : new URL('manifest.json', source.url).href;
}

/** Whether `url` exists, and its size, with one small Range request. */
async function probe(store, url) {
  store.stats.requests += 1;
  const response = await store.fetch(url, { headers: { Range: 'bytes=0-0' }, cache: 'no-store' });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  const range = response.headers.get('content-range');
  await response.body?.cancel();
  return range ? Number(range.split('/')[1]) : Number(response.headers.get('content-length'));
}

/**
 * The files of a model: `{id, label, bytes, files: [{url, path?, component?, hash, size, kind}]}`
 * with kind `text` (configs, tokenizer), `weights` (a component's safetensors file) or `shard`
 * (a converted shard holding `<component>/<key>` tensors). Cached after the first time.
 */
export async function resolve(store, source, kind = 'i2vgen') {
  const TEXT_FILES = textFiles(kind);
  const id = sourceId(source);
  const cached = await store.loadModel(id);
  if (cached) return cached;
  const files = [];
  if (source.type === 'hub') {
    const root = `${source.base.replace(/\/$/, '')}/${source.repo}/resolve/${source.revision}/`;
    const hash = `rev-${source.revision}`;
    for (const path of TEXT_FILES) {
      const size = await probe(store, root + path);
      if (size === null && !OPTIONAL.has(path)) throw new Error(`${source.repo} has no ${path}; is it ${kind === 'i2vgen' ? 'an I2VGenXLPipeline' : 'a VideoToVideoSDPipeline'} repository in the diffusers layout?`);
      if (size !== null) files.push({ kind: 'text', path, url: root + path, hash, size });
    }
    for (const component of KINDS[kind].components) {
      const stem = component.includes('encoder') ? 'model' : 'diffusion_pytorch_model';
      let found = false;
      for (const name of [`${stem}.fp16.safetensors`, `${stem}.safetensors`]) {
        const size = await probe(store, `${root}${component}/${name}`);
        if (size !== null) {
          files.push({ kind: 'weights', component, url: `${root}${component}/${name}`, hash, size });
          found = true;
          break;
        }
      }
      if (!found) throw new Error(`${source.repo} has no ${component}/${stem}.safetensors (or .fp16.safetensors); convert its .bin weights with weights-tools or the README's one-liner and serve the folder`);
    }
  } else {
    const url = new URL('manifest.json', source.url).href;
    store.stats.requests += 1;
    const response = await store.fetch(url, { cache: 'no-store' });
    if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}; is it a folder written by weights-tools convert?`);
    const manifest = await response.json();
    if (manifest.format !== 'i2vgen-weights' || manifest.version !== 1) throw new Error(`${url} is not an i2vgen-weights version 1 manifest`);
    for (const f of manifest.files) {
      if (TEXT_FILES.includes(f.path)) files.push({ kind: 'text', path: f.path, url: new URL(f.path, url).href, hash: f.sha256, size: f.bytes });
    }
    for (const s of manifest.shards) files.push({ kind: 'shard', url: new URL(s.path, url).href, hash: s.sha256, size: s.bytes });
  }
  const bytes = files.reduce((n, f) => n + f.size, 0);
  const label = source.type === 'hub' ? `${source.repo} (${source.revision})` : id;
  return { id, label, bytes, files };
}

/**
 * Stream every file of `model` into `loader` (the wasm ModelLoader). `onProgress({file, done,
 * total, fileDone, fileTotal, rate, eta})` reports every chunk; `signal` cancels.
 */
export async function load(store, model, loader, options = {}) {
  let needed = 0;
  for (const f of model.files) needed += f.size - await store.cachedBytes(f.url, f.hash, f.size);
  await checkQuota(needed);
  try {
    await store.saveModel(model.id, model);
    return await stream(store, model, loader, options);
  } catch (err) {
    // Every chunk already stored is whole and checked; the next try resumes from them.
    if (err instanceof QuotaError) {
      throw new QuotaError(`The model needs ${mb(needed)} of browser storage but the browser refused to store more (its quota is reached). Free some space (Settings → cached models, or the browser's site data) and try again; what was downloaded is kept.`);
    }
    throw err;
  }
}

async function stream(store, model, loader, { signal, onProgress = () => {} }) {
  const total = model.files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  let network = 0;
  const started = performance.now();
  for (const file of model.files) {
    let fileDone = 0;
    const name = file.path ?? file.url.split('/').slice(-2).join('/');
    const onBytes = (n, fromCache) => {
      done += n;
      fileDone += n;
      if (!fromCache) network += n;
      const seconds = (performance.now() - started) / 1000;
      const rate = done / Math.max(seconds, 1e-3);
      onProgress({ file: name, done, total, fileDone, fileTotal: file.size, rate, eta: (total - done) / rate, network });
    };
    if (file.kind === 'text') {
      const bytes = await store.bytes(file.url, { hash: file.hash, size: file.size, signal, onBytes });
      loader.addFile(file.path, new TextDecoder().decode(bytes));
      continue;
    }
    const add = file.kind === 'shard'
      ? (name_, dtype, shape, bytes) => {
        const slash = name_.indexOf('/');
        loader.addTensor(name_.slice(0, slash), name_.slice(slash + 1), dtype, shape, bytes);
      }
      : (key, dtype, shape, bytes) => loader.addTensor(file.component, key, dtype, shape, bytes);
    const reader = new SafetensorsStream(add, name);
    for await (const chunk of store.chunks(file.url, { hash: file.hash, size: file.size, signal, onBytes })) {
      reader.push(chunk);
    }
    reader.finish();
  }
  return { bytes: total, network, seconds: (performance.now() - started) / 1000 };
}

export const describe = (model) => `${model.label}: ${mb(model.bytes)} in ${model.files.length} files`;
