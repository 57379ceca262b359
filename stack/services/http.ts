/**
 * HTTP service (port 80 by default): a node:http server fed with connections
 * accepted by a NetApi server (`httpServer.emit('connection', socket)`), so it
 * runs unchanged on the kernel and on faultstack's sockets.
 *
 * Routes (GET and HEAD):
 *   /            status page: HTML, or JSON with `?json` or `Accept: application/json`
 *   /bytes/N     N bytes (0 <= N <= 1 GiB) of a deterministic pattern (see
 *                `bytesPatternAt`), Content-Length set, streamed with backpressure;
 *                400 with a plain-text reason for a bad N
 *   /healthz     "ok"
 * Anything else is 404; other methods are 405.
 *
 * The stack plugs its counters into the status page with `setStatusProvider(fn)`
 * (all HTTP services) or `handle.setStatusProvider(fn)` (one of them).
 */
import * as http from 'node:http';
import type { NetApi } from '../api/net-api';
import { startTcpService, type LogFn, type ServiceHandle } from './echo';

/** Returns whatever the stack wants on its status page (must be JSON-serialisable). */
export type StatusProvider = () => Record<string, unknown>;

let globalStatusProvider: StatusProvider | null = null;

/** Sets (or clears with null) the status provider used by every HTTP service. */
export function setStatusProvider(fn: StatusProvider | null): void {
  globalStatusProvider = fn;
}

export const MAX_BYTES = 1024 * 1024 * 1024;

/**
 * The /bytes/N body: byte i is (i mod 251). The period is prime, so any lost,
 * duplicated or reordered run of bytes shorter than 251 shows up as a mismatch.
 */
export const BYTES_PATTERN_PERIOD = 251;
export function bytesPatternAt(offset: number): number {
  return offset % BYTES_PATTERN_PERIOD;
}

// 256 periods = 64 256 bytes; every chunk starts at a multiple of the period.
const BYTES_CHUNK = (() => {
  const b = Buffer.allocUnsafe(BYTES_PATTERN_PERIOD * 256);
  for (let i = 0; i < b.length; i++) b[i] = bytesPatternAt(i);
  return b;
})();
const TURN_BUDGET = 4 * 1024 * 1024;

export interface HttpOptions {
  port?: number;
  host?: string;
  log?: LogFn;
  /** Provider for this service only; otherwise the global one is used. */
  statusProvider?: StatusProvider;
  /** Idle keep-alive connections are closed after this many ms (default 5000). */
  keepAliveTimeoutMs?: number;
  /** TCP_NODELAY on every connection, as node:http's own server sets it (default true). */
  noDelay?: boolean;
}

export interface HttpHandle extends ServiceHandle {
  setStatusProvider(fn: StatusProvider | null): void;
  stats(): HttpStats;
}

export interface HttpStats {
  connections: number;
  requests: number;
  bytesRequests: number;
  bodyBytesSent: number;
  status: Record<string, number>;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function wantsJson(req: http.IncomingMessage, query: URLSearchParams): boolean {
  if (query.has('json')) return true;
  const accept = req.headers.accept ?? '';
  return /\bapplication\/json\b/i.test(accept);
}

function renderValue(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return `<pre>${escapeHtml(JSON.stringify(v, null, 2))}</pre>`;
  return escapeHtml(String(v));
}

function renderHtml(doc: Record<string, unknown>): string {
  const rows = (obj: Record<string, unknown>): string =>
    Object.entries(obj)
      .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${renderValue(v)}</td></tr>`)
      .join('\n');
  const stack = (doc.stack ?? {}) as Record<string, unknown>;
  const { stack: _omit, ...service } = doc;
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>faultstack status</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}pre{margin:0}</style>
</head><body>
<h1>faultstack</h1>
<h2>HTTP service</h2>
<table>
${rows(service)}
</table>
<h2>Stack</h2>
<table>
${rows(stack)}
</table>
<p>JSON: <a href="/?json">/?json</a> &middot; health: <a href="/healthz">/healthz</a> &middot; bytes: /bytes/N</p>
</body></html>
`;
}

export function startHttp(api: NetApi, opts: HttpOptions = {}): HttpHandle {
  const log = opts.log ?? ((): void => undefined);
  const startedAt = Date.now();
  let ownProvider: StatusProvider | null = opts.statusProvider ?? null;
  const stats: HttpStats = { connections: 0, requests: 0, bytesRequests: 0, bodyBytesSent: 0, status: {} };

  // node:http's own listening server (http.createServer().listen()) is a net.Server with
  // { allowHalfOpen: true, noDelay: true } (Node >= 18), and net.Server sets TCP_NODELAY
  // on every socket it accepts. Sockets handed in with emit('connection') get neither
  // from node:http, so the listening server here asks for the same options: a response
  // then leaves at once on our sockets and on the kernel's, instead of its last segment
  // waiting for the client's delayed ACK (Nagle).
  const noDelay = opts.noDelay ?? true;
  const httpServer = http.createServer({ keepAliveTimeout: opts.keepAliveTimeoutMs ?? 5000, noDelay });

  const statusDoc = (): Record<string, unknown> => {
    const provider = ownProvider ?? globalStatusProvider;
    let stack: Record<string, unknown> = {};
    if (provider) {
      try {
        stack = provider();
      } catch (err) {
        stack = { error: `status provider failed: ${(err as Error).message}` };
      }
    }
    return {
      service: 'faultstack-http',
      uptimeSec: Math.round((Date.now() - startedAt) / 1000),
      connections: svc.connections(),
      connectionsTotal: stats.connections,
      requests: stats.requests,
      bytesRequests: stats.bytesRequests,
      bodyBytesSent: stats.bodyBytesSent,
      stack,
    };
  };

  const send = (req: http.IncomingMessage, res: http.ServerResponse, code: number, type: string, body: string, extra: Record<string, string> = {}): void => {
    const buf = Buffer.from(body, 'utf8');
    res.writeHead(code, { 'Content-Type': type, 'Content-Length': String(buf.length), ...extra });
    if (req.method === 'HEAD') res.end();
    else {
      stats.bodyBytesSent += buf.length;
      res.end(buf);
    }
  };

  const sendBytes = (req: http.IncomingMessage, res: http.ServerResponse, n: number): void => {
    stats.bytesRequests++;
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(n) });
    if (req.method === 'HEAD' || n === 0) {
      res.end();
      return;
    }
    let sent = 0;
    let done = false;
    let immediate: NodeJS.Immediate | null = null;
    const finish = (): void => {
      if (done) return;
      done = true;
      if (immediate) clearImmediate(immediate);
      immediate = null;
      res.removeListener('drain', pump);
      res.removeListener('close', finish);
    };
    function pump(): void {
      immediate = null;
      if (done) return;
      let turn = 0;
      while (sent < n && turn < TURN_BUDGET) {
        const len = Math.min(BYTES_CHUNK.length, n - sent);
        const ok = res.write(len === BYTES_CHUNK.length ? BYTES_CHUNK : BYTES_CHUNK.subarray(0, len));
        sent += len;
        turn += len;
        stats.bodyBytesSent += len;
        if (!ok && sent < n) {
          res.once('drain', pump);
          return;
        }
      }
      if (sent >= n) {
        finish();
        res.end();
        return;
      }
      immediate = setImmediate(pump);
    }
    // 'close' before we are done: the client went away; stop producing.
    res.on('close', finish);
    pump();
  };

  httpServer.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    stats.requests++;
    res.on('finish', () => {
      stats.status[String(res.statusCode)] = (stats.status[String(res.statusCode)] ?? 0) + 1;
    });
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://faultstack.invalid');
    } catch {
      send(req, res, 400, 'text/plain; charset=utf-8', 'bad request target\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(req, res, 405, 'text/plain; charset=utf-8', `method ${req.method ?? '?'} not allowed\n`, {
        Allow: 'GET, HEAD',
      });
      return;
    }
    const path = url.pathname;
    if (path === '/') {
      const doc = statusDoc();
      if (wantsJson(req, url.searchParams)) {
        send(req, res, 200, 'application/json', JSON.stringify(doc, null, 2) + '\n');
      } else {
        send(req, res, 200, 'text/html; charset=utf-8', renderHtml(doc));
      }
      return;
    }
    if (path === '/healthz') {
      send(req, res, 200, 'text/plain; charset=utf-8', 'ok\n', { 'Cache-Control': 'no-store' });
      return;
    }
    if (path.startsWith('/bytes/')) {
      const raw = path.slice('/bytes/'.length);
      const n = /^[0-9]{1,10}$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n) || n > MAX_BYTES) {
        const shown = raw.length > 40 ? raw.slice(0, 40) + '...' : raw;
        send(req, res, 400, 'text/plain; charset=utf-8', `bad byte count "${shown}": expected a decimal integer from 0 to ${MAX_BYTES} (1 GiB)\n`);
        return;
      }
      sendBytes(req, res, n);
      return;
    }
    send(req, res, 404, 'text/plain; charset=utf-8', `not found: ${path}\n`);
  });

  httpServer.on('clientError', (err: Error, socket) => {
    log(`http: client error: ${err.message}`);
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });

  const svc = startTcpService(api, 'http', { port: opts.port ?? 80, host: opts.host, log, server: { noDelay, allowHalfOpen: true } }, (socket) => {
    stats.connections++;
    httpServer.emit('connection', socket);
  });

  return {
    name: 'http',
    ready: svc.ready,
    port: svc.port,
    connections: svc.connections,
    setStatusProvider(fn: StatusProvider | null): void {
      ownProvider = fn;
    },
    stats: () => ({ ...stats, status: { ...stats.status } }),
    async close(): Promise<void> {
      await svc.close();
      httpServer.close();
    },
  };
}
