// Where a model comes from, and streaming it into the wasm ModelLoader.
//
// Two sources:
// - `{type: 'hub', base, repo, revision}`: a diffusers I2VGenXLPipeline repo read exactly as the
//   Hugging Face hub serves it (`<base>/<repo>/resolve/<revision>/<path>`), preferring the
//   `*.fp16.safetensors` variant files; `base` is https://huggingface.co or a local mirror.
// - `{type: 'converted', url}`: a folder written by `weights-tools convert` (manifest.json + shards).

import { SafetensorsStream } from './safetensors-stream.js';
import { QuotaError, checkQuota, mb } from './weight-store.js';
import { DownloadFailed } from './protocol.js';
import { checkManifest, indexShards, modelFiles, weightFileCandidates } from '../pkg/i2vgen_web.js';

export const DEFAULT_HUB = { type: 'hub', base: 'https://huggingface.co', repo: 'ali-vilab/i2vgen-xl', revision: 'main' };

export function sourceId(source) {
  return source.type === 'hub' ? `${source.base}/${source.repo}@${source.revision}` : new URL('manifest.json', source.url).href;
}

/** A hub file's published sha256: `X-Linked-Etag` (LFS files) or an ETag that is one; else null. */
function publishedSha256(response) {
  const tag = (response.headers.get('x-linked-etag') ?? response.headers.get('etag') ?? '').replace(/^W\//, '').replaceAll('"', '');
  return /^[0-9a-f]{64}$/.test(tag) ? tag : null;
}

const COMMIT = /^[0-9a-f]{40}$/;

/** `fetch` of a small file (a probe, a manifest, an index), its network failure as a sentence. */
async function reach(store, url, init) {
  try {
    return await store.fetch(url, init);
  } catch (err) {
    throw new DownloadFailed(`Could not reach ${url} (${err.message}); check the connection and try again.`);
  }
}

/** Whether `url` exists, with one small Range request: null, or `{size, sha256, commit}` from its headers. */
async function probe(store, url) {
  store.stats.requests += 1;
  const response = await reach(store, url, { headers: { Range: 'bytes=0-0' }, cache: 'no-store' });
  if (response.status === 404) return null;
  if (!response.ok) throw new DownloadFailed(`${url} answered HTTP ${response.status}; try again later, or check the model's address.`);
  const range = response.status === 206 ? response.headers.get('content-range') : null;
  await response.body?.cancel();
  const size = range ? Number(range.split('/')[1]) : Number(response.headers.get('content-length'));
  if (!Number.isSafeInteger(size) || size < 0) throw new DownloadFailed(`${url} did not say how large it is (Content-Range "${range}"); the server cannot serve model files`);
  const commit = response.headers.get('x-repo-commit');
  return { size, sha256: publishedSha256(response), commit: COMMIT.test(commit ?? '') ? commit : null };
}

/**
 * The commit `source.revision` names now, so that every file comes from that one commit and is
 * cached under it (a branch that moves means a new download, never a mix): the hub's revision API,
 * else the `X-Repo-Commit` of `probePath`; offline, the commit of the model saved last. Null for a mirror
 * that reports neither.
 */
async function pinCommit(store, source, probePath) {
  if (COMMIT.test(source.revision)) return source.revision;
  const base = source.base.replace(/\/$/, '');
  let response;
  try {
    store.stats.requests += 1;
    response = await store.fetch(`${base}/api/models/${source.repo}/revision/${encodeURIComponent(source.revision)}`, { cache: 'no-store' });
  } catch (err) {
    const last = await store.lastSaved(`${sourceId(source)}@`);
    if (last) return last.slice(last.lastIndexOf('@') + 1);
    throw new DownloadFailed(`Could not ask ${base} which commit "${source.revision}" of ${source.repo} is (${err.message}); check the connection and try again.`);
  }
  const sha = response.ok ? (await response.json().catch(() => ({}))).sha : null;
  const commit = COMMIT.test(sha ?? '') ? sha : (await probe(store, `${base}/${source.repo}/resolve/${source.revision}/${probePath}`))?.commit ?? null;
  return commit;
}

/**
 * The files of a model: `{id, label, bytes, files: [{url, path?, component?, hash, sha256, size,
 * kind}]}` with kind `text` (configs, tokenizer), `weights` (a component's safetensors file) or
 * `shard` (a converted shard holding `<component>/<key>` tensors); `hash` keys the cache (the
 * manifest's sha256, or the commit a hub file is pinned to) and `sha256` is the digest the bytes
 * must have (null where none is published). Cached after the first time; a hub model's id names
 * its commit, so it costs one request per visit (which commit the revision is now).
 */
export async function resolve(store, source, kind = 'i2vgen') {
  // Which files make the pipeline is the library's decision (through wasm), not this file's.
  const { className, components, textFiles } = JSON.parse(modelFiles(kind));
  if (source.type !== 'hub') {
    const id = sourceId(source);
    return (await store.loadModel(id)) ?? { id, label: id, ...await manifestFiles(store, id, textFiles) };
  }
  const commit = await pinCommit(store, source, textFiles[0].path);
  const id = commit ? `${sourceId(source)}@${commit}` : sourceId(source);
  const cached = await store.loadModel(id);
  if (cached) return cached;
  const root = `${source.base.replace(/\/$/, '')}/${source.repo}/resolve/${commit ?? source.revision}/`;
  const hash = commit ? `commit-${commit}` : `rev-${source.revision}`;
  const files = [];
  for (const { path, required } of textFiles) {
    const found = await probe(store, root + path);
    if (found === null && required) throw new Error(`${source.repo} has no ${path}; is it ${kind === 'i2vgen' ? 'an' : 'a'} ${className} repository in the diffusers layout?`);
    if (found !== null) files.push({ kind: 'text', path, url: root + path, hash, sha256: found.sha256, size: found.size });
  }
  // The f16 variant first: half the download, and the GPU computes in f16 or widens on upload.
  const candidates = JSON.parse(weightFileCandidates(true));
  for (const component of components) {
    files.push(...await weightFiles(store, root, component, candidates, hash, source.repo));
  }
  const label = `${source.repo} (${source.revision}${commit && commit !== source.revision ? `, commit ${commit.slice(0, 7)}` : ''})`;
  return { id, label, bytes: files.reduce((n, f) => n + f.size, 0), files };
}

/** The files a `weights-tools convert` manifest lists: `{bytes, files}`, each with its sha256. */
async function manifestFiles(store, url, textFiles) {
  store.stats.requests += 1;
  const response = await reach(store, url, { cache: 'no-store' });
  if (!response.ok) throw new DownloadFailed(`${url} answered HTTP ${response.status}; is it a folder written by weights-tools convert?`);
  const text = await response.text();
  checkManifest(text);
  const manifest = JSON.parse(text);
  const paths = new Set(textFiles.map((f) => f.path));
  const files = [];
  for (const f of manifest.files) {
    if (paths.has(f.path)) files.push({ kind: 'text', path: f.path, url: new URL(f.path, url).href, hash: f.sha256, sha256: f.sha256, size: f.bytes });
  }
  for (const s of manifest.shards) files.push({ kind: 'shard', url: new URL(s.path, url).href, hash: s.sha256, sha256: s.sha256, size: s.bytes });
  return { bytes: files.reduce((n, f) => n + f.size, 0), files };
}

/** The weight files of one component of a hub repo: the first candidate that exists. */
async function weightFiles(store, root, component, candidates, hash, repo) {
  for (const { path, index } of candidates) {
    const url = `${root}${component}/${path}`;
    const found = await probe(store, url);
    if (found === null) continue;
    if (!index) return [{ kind: 'weights', component, url, hash, sha256: found.sha256, size: found.size }];
    store.stats.requests += 1;
    const response = await reach(store, url, { cache: 'no-store' });
    if (!response.ok) throw new DownloadFailed(`${url} answered HTTP ${response.status}; try again later, or check the model's address.`);
    const shards = indexShards(await response.text(), `${component}/${path}`);
    const out = [];
    for (const shard of shards) {
      const shardUrl = `${root}${component}/${shard}`;
      const shardFound = await probe(store, shardUrl);
      if (shardFound === null) throw new Error(`${repo} has no ${component}/${shard}, which ${path} names`);
      out.push({ kind: 'weights', component, url: shardUrl, hash, sha256: shardFound.sha256, size: shardFound.size });
    }
    return out;
  }
  throw new Error(`${repo} has no safetensors weights for ${component} (looked for ${candidates.map((c) => c.path).join(', ')}); convert its .bin weights with weights-tools or the README's one-liner and serve the folder`);
}

/**
 * Stream every file of `model` into `loader` (the wasm ModelLoader). `onProgress({file, done,
 * total, fileDone, fileTotal, rate, eta})` reports every chunk; `signal` cancels; `wants(component)`
 * says whose tensors the loader takes (the others are only made sure of in the cache).
 */
export async function load(store, model, loader, options = {}) {
  let needed = 0;
  for (const f of model.files) needed += f.size - await store.cachedBytes(f.url, f.hash, f.size);
  // The configs come first; a run they say cannot fit this GPU is refused before the weights.
  const beforeWeights = async () => {
    await options.beforeWeights?.();
    await checkQuota(needed).catch((err) => {
      err.upFront = true; // its own sentence: what is free now
      throw err;
    });
  };
  try {
    await store.saveModel(model.id, model);
    return await stream(store, model, loader, { ...options, beforeWeights });
  } catch (err) {
    // Every chunk already stored is whole and checked; the next try resumes from them.
    if (err instanceof QuotaError && !err.upFront) {
      throw new QuotaError(`The model needs ${mb(needed)} of browser storage but the browser refused to store more (its quota is reached). Free some space (Settings → cached models, or the browser's site data) and try again; what was downloaded is kept.`);
    }
    throw err;
  }
}

/** Weight bytes handed to the GPU between two waits for it to catch up (`ModelLoader.settle`). */
const SETTLE_BYTES = 256 << 20;

async function stream(store, model, loader, { signal, onProgress = () => {}, beforeWeights, wants = () => true }) {
  const total = model.files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  let network = 0;
  let unsettled = 0;
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
    const onRetry = (retry) => onProgress({
      stage: 'retrying', file: name, done, total, retry,
      message: `Downloading ${name} failed (${retry.reason}); trying again in ${Math.ceil(retry.seconds)} s (${retry.attempt} of ${retry.of}).`,
    });
    if (file.kind === 'text') {
      const bytes = await store.bytes(file.url, { hash: file.hash, sha256: file.sha256, size: file.size, signal, onBytes, onRetry });
      loader.addFile(file.path, new TextDecoder().decode(bytes));
      continue;
    }
    if (beforeWeights) {
      await beforeWeights();
      beforeWeights = null;
    }
    const chunks = store.chunks(file.url, { hash: file.hash, sha256: file.sha256, size: file.size, signal, onBytes, onRetry });
    if (file.kind === 'weights' && !wants(file.component)) {
      // Another phase's network: it must be in the cache, not on the GPU.
      if (await store.cachedBytes(file.url, file.hash, file.size) === file.size) onBytes(file.size, true);
      else for await (const _ of chunks) { /* each chunk is stored and checked as it comes */ }
      continue;
    }
    const add = file.kind === 'shard'
      ? (key, dtype, shape, bytes) => wants(key.split('/')[0]) && loader.addShardTensor(key, dtype, shape, bytes)
      : (key, dtype, shape, bytes) => loader.addTensor(file.component, key, dtype, shape, bytes);
    const reader = new SafetensorsStream(add, name, file.size);
    for await (const chunk of chunks) {
      reader.push(chunk);
      // Back-pressure: from the cache the bytes come faster than a slow GPU uploads and packs
      // them, and every tensor queued for it holds its upload's memory until it is done.
      unsettled += chunk.length;
      if (unsettled >= SETTLE_BYTES) {
        await loader.settle();
        unsettled = 0;
      }
    }
    reader.finish();
  }
  return { bytes: total, network, seconds: (performance.now() - started) / 1000 };
}

export const describe = (model) => `${model.label}: ${mb(model.bytes)} in ${model.files.length} files`;
