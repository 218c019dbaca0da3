// A static file server for the app: the repository root on 127.0.0.1, with the MIME types
// WebAssembly streaming needs, Range requests (resumable weight downloads), CORS (the widget on
// other sites), the page's strict Content-Security-Policy as a header (it binds the worker too),
// and a hub mirror: /hub/<owner>/<name>/resolve/<revision>/<path> serves
// tests/fixtures/<name>/<path> the way huggingface.co serves a repo (the bundled demo model).
// Usage: node web/serve.mjs [--port 8080] [--root DIR]
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep } from 'node:path';
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
  '.txt': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream',
};

export const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; " +
  "img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self' https://huggingface.co https://*.huggingface.co https://*.hf.co; " +
  "worker-src 'self' blob:; frame-ancestors *";

const HUB = /^\/hub\/[^/]+\/([^/]+)\/resolve\/[^/]+\/(.+)$/;

/**
 * Start serving `root`; resolves to the listening server. Port 0 picks a free port.
 * `intercept(req, res, path)` (tests) may answer a request itself by returning true.
 */
export function serve({ root, port = 8080, host = '127.0.0.1', intercept = () => false }) {
  const base = resolve(root);
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('access-control-allow-headers', 'range');
    res.setHeader('access-control-expose-headers', 'content-range, content-length');
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    const hub = HUB.exec(url.pathname);
    const relative = hub ? `/tests/fixtures/${hub[1]}/${hub[2]}` : decodeURIComponent(url.pathname);
    let path = normalize(join(base, relative));
    if (intercept(req, res, path)) return;
    res.setHeader('content-security-policy', CSP);
    if (path !== base && !path.startsWith(base + sep)) {
      res.writeHead(403).end('forbidden');
      return;
    }
    let stat;
    try {
      stat = statSync(path);
      if (stat.isDirectory()) {
        path = join(path, 'index.html');
        stat = statSync(path);
      }
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${url.pathname}`);
      return;
    }
    const type = TYPES[extname(path)] ?? 'application/octet-stream';
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
    if (req.method === 'HEAD') res.end();
    else createReadStream(path, { start, end }).pipe(res);
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
