// A dependency-free static server for the browser demo and its tests.
//
// Usage: node scripts/serve.mjs [--port N] [--host H]
// Serves web/ at /, the git-ignored models/ at /models/ (web/corpus/ is under / already).
// Every response allows any origin (CORS and CORP), so <samd-demo> can be embedded
// from another site; byte ranges are honoured so large files can be fetched in parts.
// Tests import startServer() to run it on a free port with their own roots.

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('..', import.meta.url));

/** The demo's roots: URL prefix and folder, tried in order. */
export const defaultRoots = [
  ['/models/', join(repo, 'models')],
  ['/', join(repo, 'web')],
];

const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm',
};

const cors = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Expose-Headers': 'Content-Length, Content-Range, Accept-Ranges',
  'Cross-Origin-Resource-Policy': 'cross-origin',
};

/**
 * Starts serving `roots` (a list of [url prefix, folder], the first existing file wins).
 * `log` gets {method, path, status} for each request; `headers` go on every file served
 * (the peer benchmark's cross-origin isolation, which wasm threads need). Resolves once
 * listening.
 */
export async function startServer({ port = 8080, host = '127.0.0.1', roots = defaultRoots, log, headers = {} } = {}) {
  const server = createServer((req, res) => {
    handle(req, res, roots, headers).then(
      (status) => log?.({ method: req.method, path: req.url, status }),
      (err) => {
        if (!res.headersSent) res.writeHead(500, cors);
        res.end();
        log?.({ method: req.method, path: req.url, status: 500, error: String(err) });
      },
    );
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, ok);
  });
  const address = server.address();
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shown}:${address.port}/`;
  return { server, url, close: () => new Promise((ok) => server.close(ok)) };
}

async function handle(req, res, roots, extraHeaders) {
  if (req.method === 'OPTIONS') {
    res.writeHead(204, {
      ...cors,
      'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
      'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] ?? 'Range',
      'Access-Control-Max-Age': '86400',
    });
    res.end();
    return 204;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'method not allowed');
  const found = await find(new URL(req.url, 'http://x').pathname, roots);
  if (!found) return reply(res, 404, 'not found');
  const { file, size } = found;
  const headers = {
    ...cors,
    ...extraHeaders,
    'Content-Type': types[extname(file).toLowerCase()] ?? 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    // Revalidate every time: the demo's own code changes under a developer's feet, and the
    // model is cached by the worker in Cache Storage, not by the HTTP cache.
    'Cache-Control': 'no-cache',
  };
  let start = 0;
  let end = size - 1;
  let status = 200;
  if (req.headers.range) {
    const range = parseRange(req.headers.range, size);
    if (!range) {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}` });
      res.end();
      return 416;
    }
    [start, end] = range;
    status = 206;
    headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  }
  headers['Content-Length'] = String(end - start + 1);
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return status;
  }
  await new Promise((ok, fail) => {
    const stream = createReadStream(file, { start, end });
    stream.once('error', fail);
    res.once('close', ok);
    stream.pipe(res);
  });
  return status;
}

/** Maps a URL path to an existing regular file under one of the roots, or null. */
async function find(pathname, roots) {
  let path;
  try {
    path = decodeURIComponent(pathname);
  } catch {
    return null;
  }
  if (path.includes('\0') || path.split(/[\\/]/).includes('..')) return null;
  if (path.endsWith('/')) path += 'index.html';
  for (const [prefix, dir] of roots) {
    if (!path.startsWith(prefix)) continue;
    const base = resolve(dir);
    const file = resolve(base, '.' + sep + path.slice(prefix.length));
    if (!file.startsWith(base + sep)) continue;
    const info = await stat(file).catch(() => null);
    if (info?.isFile()) return { file, size: info.size };
  }
  return null;
}

/** One `bytes=` range as inclusive [start, end] within size, or null when unsatisfiable. */
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start;
  let end;
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  return start <= end && start < size ? [start, end] : null;
}

function reply(res, status, text) {
  res.writeHead(status, { ...cors, 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text + '\n');
  return status;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const options = { port: '8080', host: '127.0.0.1' };
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i += 2) {
    const name = args[i].replace(/^--/, '');
    if (!(name in options) || args[i + 1] === undefined) {
      console.error('usage: scripts/serve.sh [--port N] [--host H]');
      process.exit(2);
    }
    options[name] = args[i + 1];
  }
  const { url } = await startServer({ port: Number(options.port), host: options.host });
  console.log(`samd demo at ${url}`);
}
