// A static file server for the app on 127.0.0.1: the page and what it loads, with the MIME types
// WebAssembly streaming needs, Range requests (resumable weight downloads), the page's strict
// Content-Security-Policy as a header (it binds the worker too), and a hub mirror:
// /hub/<owner>/<name>/resolve/<revision>/<path> serves tests/fixtures/<name>/<path> the way
// huggingface.co serves a repo (the bundled demo model), with the hub's integrity headers:
// `X-Repo-Commit` (a hash of the folder's contents, standing in for the git commit), and for
// LFS-like files (weights) `X-Linked-Etag`/`ETag` carrying their sha256; and the hub's revision
// API, /hub/api/models/<owner>/<name>/revision/<revision> → {"sha": <that commit>}.
//
// Only what the app needs is served (PUBLIC), never a dotfile (.git) or the rest of the checkout;
// CORS only on what a page on another site loads (the widget's scripts, the wasm module, weights).
// Any web page can make a developer's browser request this server, so a bad URL gets a 400, never
// an exception, and the app cannot be framed; only the embed page can.
// Usage: node web/serve.mjs [--port 8080] [--root DIR]
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { extname, join, relative as relativePath, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
  '.webm': 'video/webm',
  '.mp4': 'video/mp4',
  '.txt': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream',
};

const POLICY = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; " +
  "img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self' https://huggingface.co https://*.huggingface.co https://*.hf.co; " +
  "worker-src 'self' blob:";
/** The app's policy: no site may frame it (clickjacking on its buttons). */
export const CSP = `${POLICY}; frame-ancestors 'none'`;
/** The embed page is made to be framed by any site (it answers only the origins it is given). */
export const EMBED_CSP = `${POLICY}; frame-ancestors *`;
const EMBED = '/web/embed.html';

/** What is served, as paths from the root: files, and folders (ending in `/`). */
const PUBLIC = [
  '/index.html', EMBED, '/web/js/', '/web/css/', '/web/pkg/', '/web/node_modules/mediabunny/',
  '/tests/fixtures/', // the demo model and the test inputs
  '/tests/out/', // what the browser tests write and read back
  '/models/', // folders written by `weights-tools convert`, as the README puts them
];
/** What a page on another site may read: the widget's modules, the wasm module, weights, images. */
const CROSS_ORIGIN = ['/web/js/', '/web/pkg/', '/web/node_modules/mediabunny/', '/tests/fixtures/', '/models/'];

const HUB = /^\/hub\/[^/]+\/([^/]+)\/resolve\/[^/]+\/(.+)$/;
const HUB_REVISION = /^\/hub\/api\/models\/[^/]+\/([^/]+)\/revision\/[^/]+$/;
/** The files the hub stores in LFS, whose sha256 it publishes. */
const LFS = ['.safetensors', '.bin', '.pt', '.onnx'];

const digests = new Map(); // `${path} ${size} ${mtime}` → sha256, so each file is hashed once

function fileSha256(path) {
  const stat = statSync(path);
  const id = `${path} ${stat.size} ${stat.mtimeMs}`;
  if (!digests.has(id)) {
    // In 64 MiB reads: a real-size UNet file (2.8 GB) is over Node's 2 GiB limit for one buffer.
    const hash = createHash('sha256');
    const buffer = Buffer.alloc(64 << 20);
    const fd = openSync(path, 'r');
    try {
      for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;) hash.update(buffer.subarray(0, n));
    } finally {
      closeSync(fd);
    }
    digests.set(id, hash.digest('hex'));
  }
  return digests.get(id);
}

/** A demo folder's "commit": a sha1 over its files' paths and sha256s, as a git commit names its tree. */
export function folderCommit(dir) {
  const hash = createHash('sha1');
  const walk = (folder) => {
    for (const entry of readdirSync(folder, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) hash.update(`${relativePath(dir, path)} ${fileSha256(path)}\n`);
    }
  };
  walk(dir);
  return hash.digest('hex');
}

const under = (list, path) => list.some((p) => (p.endsWith('/') ? path.startsWith(p) : path === p));

/**
 * The file a request names, as `{ path }` from the root (`/web/js/app.js`); `{ status: 400 }` when
 * its URL is not one (malformed percent-encoding, an unparsable URL), `{ status: 404 }` when a
 * segment starts with `.` (`..`, `.git`; percent-encoded too; a backslash separates segments as well).
 */
function requestPath(rawUrl) {
  let path;
  try {
    path = decodeURIComponent(new URL(rawUrl, 'http://localhost').pathname);
  } catch {
    return { status: 400 };
  }
  if (path.includes('\0')) return { status: 400 };
  if (path.split(/[\\/]/).some((segment) => segment.startsWith('.'))) return { status: 404 };
  if (path === '/') return { path: '/index.html' };
  const revision = HUB_REVISION.exec(path);
  if (revision) return { path: `/tests/fixtures/${revision[1]}/`, hub: 'revision' };
  const hub = HUB.exec(path);
  return hub ? { path: `/tests/fixtures/${hub[1]}/${hub[2]}`, hub: 'file' } : { path };
}

/**
 * Start serving `root`; resolves to the listening server. Port 0 picks a free port.
 * `intercept(req, res, path)` (tests) may answer a request itself by returning true; it sees
 * every request whose URL is well formed, `path` being the file it would name under `root`.
 * `hubCommit(folder)` names the commit the hub mirror reports for a demo folder (tests move it).
 */
export function serve({ root, port = 8080, host = '127.0.0.1', intercept = () => false, hubCommit = folderCommit }) {
  const base = resolve(root);
  const realBase = realpathSync(base);
  const notFound = (res) => res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found');
  const server = createServer((req, res) => {
    res.setHeader('x-content-type-options', 'nosniff');
    const { path: relative, status, hub } = requestPath(req.url);
    if (status === 400) {
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end('bad request: not a valid URL path');
      return;
    }
    if (status === 404) {
      notFound(res);
      return;
    }
    if (under(CROSS_ORIGIN, relative)) {
      res.setHeader('access-control-allow-origin', '*');
      res.setHeader('access-control-allow-headers', 'range');
      res.setHeader('access-control-expose-headers', 'content-range, content-length, x-repo-commit, x-linked-etag, etag');
    }
    let path = join(base, relative);
    if (intercept(req, res, path)) return;
    if (!under(PUBLIC, relative)) {
      notFound(res);
      return;
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD, OPTIONS' }).end();
      return;
    }
    res.setHeader('content-security-policy', relative === EMBED ? EMBED_CSP : CSP);
    if (hub) {
      const folder = join(base, relative.split('/').slice(0, 4).join('/'));
      let commit;
      try {
        commit = hubCommit(folder);
      } catch {
        notFound(res);
        return;
      }
      if (hub === 'revision') {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache' }).end(JSON.stringify({ sha: commit }));
        return;
      }
      res.setHeader('x-repo-commit', commit);
    }
    let stat;
    try {
      stat = statSync(path);
      if (stat.isDirectory()) {
        path = join(path, 'index.html');
        stat = statSync(path);
      }
      // A symbolic link must not lead out of the root.
      const real = realpathSync(path);
      if (!stat.isFile() || (real !== realBase && !real.startsWith(realBase + sep))) throw new Error('outside');
    } catch {
      notFound(res);
      return;
    }
    const type = TYPES[extname(path)] ?? 'application/octet-stream';
    if (hub && LFS.includes(extname(path))) {
      const sha = fileSha256(path);
      res.setHeader('x-linked-etag', `"${sha}"`);
      res.setHeader('etag', `"${sha}"`);
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = stat.size - 1;
    if (range) {
      start = Number(range[1]);
      if (range[2]) end = Math.min(end, Number(range[2]));
      if (start > end) {
        res.writeHead(416, { 'content-range': `bytes */${stat.size}` }).end();
        return;
      }
      res.writeHead(206, { 'content-type': type, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${stat.size}`, 'accept-ranges': 'bytes', 'cache-control': 'no-cache' });
    } else {
      res.writeHead(200, { 'content-type': type, 'content-length': stat.size, 'accept-ranges': 'bytes', 'cache-control': 'no-cache' });
    }
    if (req.method === 'HEAD' || stat.size === 0) res.end();
    else createReadStream(path, { start, end }).on('error', () => res.destroy()).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => ok(server));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const root = arg('--root', fileURLToPath(new URL('..', import.meta.url)));
  const port = Number(arg('--port', process.env.PORT ?? 8080));
  serve({ root, port })
    .then((server) => {
      const { port } = server.address();
      console.log(`i2vgen-web is running at http://127.0.0.1:${port}/  (Ctrl+C to stop)`);
    })
    .catch((err) => {
      console.error(err.code === 'EADDRINUSE'
        ? `Port ${port} is already in use. Stop the other server or run with PORT=<another port>.`
        : `Could not start the server: ${err.message}`);
      process.exit(1);
    });
}
