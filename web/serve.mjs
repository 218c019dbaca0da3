// A static file server for the app: the repository root on 127.0.0.1, with the MIME types
// WebAssembly streaming needs. Usage: node web/serve.mjs [--port 8080] [--root DIR]
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

/** Start serving `root`; resolves to the listening server. Port 0 picks a free port. */
export function serve({ root, port = 8080, host = '127.0.0.1' }) {
  const base = resolve(root);
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    let path = normalize(join(base, decodeURIComponent(url.pathname)));
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
    res.writeHead(200, {
      'content-type': TYPES[extname(path)] ?? 'application/octet-stream',
      'content-length': stat.size,
      'cache-control': 'no-cache',
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(path).pipe(res);
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
