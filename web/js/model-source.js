// Where a model comes from, and streaming it into the wasm ModelLoader.
//
// Two sources:
// - `{type: 'hub', base, repo, revision}`: a diffusers I2VGenXLPipeline repo read exactly as the
//   Hugging Face hub serves it (`<base>/<repo>/resolve/<revision>/<path>`), preferring the
//   `*.fp16.safetensors` variant files; `base` is https://huggingface.co or a local mirror.
// - `{type: 'converted', url}`: a folder written by `weights-tools convert` (manifest.json + shards).

import { SafetensorsStream } from './safetensors-stream.js';
import { QuotaError, checkQuota, mb } from './weight-store.js';
import { checkManifest, indexShards, modelFiles, weightFileCandidates } from '../pkg/i2vgen_web.js';

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
  // Which files make the pipeline is the library's decision (through wasm), not this file's.
  const { className, components, textFiles } = JSON.parse(modelFiles(kind));
  const id = sourceId(source);
  const cached = await store.loadModel(id);
  if (cached) return cached;
  const files = [];
  if (source.type === 'hub') {
    const root = `${source.base.replace(/\/$/, '')}/${source.repo}/resolve/${source.revision}/`;
    const hash = `rev-${source.revision}`;
    for (const { path, required } of textFiles) {
      const size = await probe(store, root + path);
      if (size === null && required) throw new Error(`${source.repo} has no ${path}; is it ${kind === 'i2vgen' ? 'an' : 'a'} ${className} repository in the diffusers layout?`);
      if (size !== null) files.push({ kind: 'text', path, url: root + path, hash, size });
    }
    // The f16 variant first: half the download, and the GPU computes in f16 or widens on upload.
    const candidates = JSON.parse(weightFileCandidates(true));
    for (const component of components) {
      files.push(...await weightFiles(store, root, component, candidates, hash, source.repo));
    }
  } else {
    const url = new URL('manifest.json', source.url).href;
    store.stats.requests += 1;
    const response = await store.fetch(url, { cache: 'no-store' });
    if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}; is it a folder written by weights-tools convert?`);
    const text = await response.text();
    checkManifest(text);
    const manifest = JSON.parse(text);
    const paths = new Set(textFiles.map((f) => f.path));
    for (const f of manifest.files) {
      if (paths.has(f.path)) files.push({ kind: 'text', path: f.path, url: new URL(f.path, url).href, hash: f.sha256, size: f.bytes });
    }
    for (const s of manifest.shards) files.push({ kind: 'shard', url: new URL(s.path, url).href, hash: s.sha256, size: s.bytes });
  }
  const bytes = files.reduce((n, f) => n + f.size, 0);
  const label = source.type === 'hub' ? `${source.repo} (${source.revision})` : id;
  return { id, label, bytes, files };
}

/** The weight files of one component of a hub repo: the first candidate that exists. */
async function weightFiles(store, root, component, candidates, hash, repo) {
  for (const { path, index } of candidates) {
    const url = `${root}${component}/${path}`;
    const size = await probe(store, url);
    if (size === null) continue;
    if (!index) return [{ kind: 'weights', component, url, hash, size }];
    store.stats.requests += 1;
    const response = await store.fetch(url, { cache: 'no-store' });
    if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
    const shards = indexShards(await response.text(), `${component}/${path}`);
    const out = [];
    for (const shard of shards) {
      const shardUrl = `${root}${component}/${shard}`;
      const shardSize = await probe(store, shardUrl);
      if (shardSize === null) throw new Error(`${repo} has no ${component}/${shard}, which ${path} names`);
      out.push({ kind: 'weights', component, url: shardUrl, hash, size: shardSize });
    }
    return out;
  }
  throw new Error(`${repo} has no safetensors weights for ${component} (looked for ${candidates.map((c) => c.path).join(', ')}); convert its .bin weights with weights-tools or the README's one-liner and serve the folder`);
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
      ? (key, dtype, shape, bytes) => loader.addShardTensor(key, dtype, shape, bytes)
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
