/**
 * The control plane over HTTP (`faultstack run --web [ADDR:]PORT`): a JSON API that
 * mirrors the control socket, a server-sent event stream of the event log, `/metrics`
 * for Prometheus, and the web view's static files. It calls the same handler table as
 * the Unix socket (stack/runtime/control.ts and the feature modules' handlers), so a
 * request means the same thing on both.
 *
 * Like the socket, it is plain Node `http` on the host, never served through the
 * emulated stack: it keeps answering while a fault has the stack hung (KB 297040).
 * Bound to a loopback address it needs no token unless one was given; bound anywhere
 * else it refuses every /api and /metrics request without the token (401). Every error
 * is one line of JSON: {"error":{"code":"EINVAL","message":"..."}}.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { ControlContext, ControlHandler } from './server';
import { ErrorCode } from './protocol';

/** Largest request body (JSON arguments), as the socket's longest request line. */
export const MAX_BODY = 64 * 1024;
/** Event streams open at once; one more gets 503. */
export const MAX_STREAMS = 32;
/** A comment line on every event stream this often, so proxies and browsers keep it open. */
const SSE_HEARTBEAT_MS = 15_000;

export interface HttpControlOptions {
  /** Address to bind (default 127.0.0.1). */
  host: string;
  /** 0: any free port (tests). */
  port: number;
  /** Required on /api and /metrics when not null (Authorization: Bearer T, or ?token=T). */
  token: string | null;
  handlers: Record<string, ControlHandler>;
  /** The Prometheus text for /metrics. */
  metrics?: () => Promise<string>;
  /** The web view's files (index.html, app.js, app.css); absent: no page, the API only. */
  staticDir?: string;
  log?: (message: string) => void;
}

/** An address on which only this machine can reach the server. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** A fresh token for a server bound off localhost without one given. */
export function newToken(): string {
  return crypto.randomBytes(18).toString('base64url');
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** HTTP status for a handler's error code. */
export function statusFor(code: string): number {
  switch (code) {
    case ErrorCode.BAD_ARGUMENT:
    case 'EUSAGE':
    case ErrorCode.BAD_REQUEST:
    case ErrorCode.BAD_JSON:
    case 'EIMPAIR':
      return 400;
    case 'ENOENT':
    case ErrorCode.UNKNOWN_COMMAND:
      return 404;
    case 'ENOTSUP':
      return 501;
    case 'EBUSY':
      return 409;
    case 'ETIMEDOUT':
      return 504;
    case ErrorCode.HANDLER_FAILED:
    case ErrorCode.UNENCODABLE:
      return 500;
    default:
      return code.startsWith('E') ? 502 : 500;
  }
}

function errorOf(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  const code = typeof (e as { code?: unknown })?.code === 'string' ? (e as { code: string }).code : ErrorCode.HANDLER_FAILED;
  const message = e instanceof Error ? e.message : String(e);
  // An impairment spec error carries no code; its name says what it is.
  if ((e as Error)?.name === 'ImpairSpecError') return new HttpError(400, 'EINVAL', message);
  return new HttpError(statusFor(code), code, message);
}

/** A query string's values as the handlers' argument types: numbers, booleans, strings. */
export function queryArgs(u: URL): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of u.searchParams) {
    if (k === 'token') continue;
    if (/^-?\d+(\.\d+)?$/.test(v)) out[k] = Number(v);
    else if (v === 'true' || v === '') out[k] = true;
    else if (v === 'false') out[k] = false;
    else out[k] = v;
  }
  return out;
}

interface Route {
  method: string;
  /** A path with :name segments. */
  path: string;
  /** The handler to call and how its arguments are made from the request. */
  cmd: string | ((params: Record<string, string>) => string);
  args?: (params: Record<string, string>, query: Record<string, unknown>, body: Record<string, unknown>) => Record<string, unknown>;
  /** What docs/api.md says; also the /api index. */
  doc: string;
}

const q = (_p: Record<string, string>, query: Record<string, unknown>) => query;
const b = (_p: Record<string, string>, _q: Record<string, unknown>, body: Record<string, unknown>) => body;

/** The API: each route is one control command (docs/api.md). */
export const ROUTES: Route[] = [
  {
    method: 'GET',
    path: '/api/stats',
    cmd: 'stats',
    args: q,
    doc: 'counters, counts per state, listeners, lock, faults; ?limit=N|all=true&state=&port=&peer= adds `connections` rows',
  },
  { method: 'GET', path: '/api/events', cmd: 'events', args: (_p, query) => ({ ...query, follow: false }), doc: 'the latest events (?limit=N, default 1000)' },
  { method: 'GET', path: '/api/faults', cmd: 'faults', args: q, doc: 'every fault with its mode and parameters, and the parameter values' },
  { method: 'PUT', path: '/api/faults/:id', cmd: 'fault.set', args: (p, _q, body) => ({ ...body, id: p.id }), doc: 'switch a fault: {"mode":"hotfixed"}' },
  { method: 'PUT', path: '/api/params/:name', cmd: 'param.set', args: (p, _q, body) => ({ ...body, name: p.name }), doc: 'change a parameter: {"value":2}' },
  { method: 'POST', path: '/api/connect', cmd: 'connect', args: b, doc: 'make the stack open a connection: {"host":"198.18.0.99","port":80,"timeoutMs":5000}' },
  { method: 'POST', path: '/api/unlock', cmd: 'unlock', args: b, doc: 'release the connection-table lock (KB 297040)' },
  { method: 'GET', path: '/api/routes', cmd: 'routes', args: q, doc: 'the route table with the PMTU host routes and their count (KB 898060)' },
  { method: 'GET', path: '/api/impairments', cmd: 'impair.list', args: q, doc: 'impairments in place' },
  { method: 'POST', path: '/api/impairments', cmd: 'impair.add', args: b, doc: 'add one: {"spec":"out loss 5%"} or {"words":["out","loss","5%"]}' },
  { method: 'DELETE', path: '/api/impairments', cmd: 'impair.clear', args: b, doc: 'remove every impairment' },
  { method: 'DELETE', path: '/api/impairments/:id', cmd: 'impair.del', args: (p) => ({ id: Number(p.id) }), doc: 'remove impairment ID' },
  { method: 'GET', path: '/api/neigh', cmd: 'neigh', args: q, doc: 'the neighbour (ARP) table of a --tap stack' },
  { method: 'GET', path: '/api/ipsec', cmd: 'ipsec', args: q, doc: 'IPsec SAs and policies (--ipsec)' },
  { method: 'GET', path: '/api/nlb', cmd: 'nlb.display', args: q, doc: 'the NLB host: bucket map, hosts, convergence (--nlb)' },
  { method: 'POST', path: '/api/nlb/:action', cmd: (p) => `nlb.${p.action}`, args: b, doc: 'drainstop, stop or start the NLB host' },
  { method: 'GET', path: '/api/fw', cmd: 'fw', args: q, doc: "a firewall's state: ?what=summary|sessions|bindings|rules (--external-tun)" },
  { method: 'GET', path: '/api/traces', cmd: 'trace.list', args: q, doc: 'the traces taken' },
  {
    method: 'POST',
    path: '/api/traces',
    cmd: 'trace.start',
    args: b,
    doc: 'start tracing a connection: {"conn":"198.18.0.1:43210"} (PEER:PORT or LOCAL:PORT-PEER:PORT)',
  },
  { method: 'GET', path: '/api/traces/:conn', cmd: 'trace.get', args: (p) => ({ conn: p.conn }), doc: "a connection's trace: samples and segments sent" },
  { method: 'DELETE', path: '/api/traces/:conn', cmd: 'trace.stop', args: (p) => ({ conn: p.conn }), doc: 'stop tracing (the record stays)' },
  { method: 'POST', path: '/api/control/:cmd', cmd: (p) => p.cmd!, args: b, doc: 'any control-socket command by name, with its arguments as the body' },
];

function match(route: Route, method: string, pathname: string): Record<string, string> | null {
  if (route.method !== method) return null;
  const want = route.path.split('/'),
    got = pathname.split('/');
  if (want.length !== got.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i]!.startsWith(':')) {
      let v: string;
      try {
        v = decodeURIComponent(got[i]!);
      } catch {
        return null;
      }
      if (v === '') return null;
      params[want[i]!.slice(1)] = v;
    } else if (want[i] !== got[i]) return null;
  }
  return params;
}

const STATIC_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.map': 'application/json',
};

export class HttpControlServer {
  readonly server: http.Server;
  private readonly handlers: Map<string, ControlHandler>;
  private readonly files = new Map<string, { type: string; body: Buffer }>();
  private readonly streams = new Set<http.ServerResponse>();
  private readonly tokenBuf: Buffer | null;
  private closing: Promise<void> | null = null;

  constructor(readonly opts: HttpControlOptions) {
    this.handlers = new Map(Object.entries(opts.handlers));
    this.tokenBuf = opts.token === null ? null : Buffer.from(opts.token);
    if (opts.staticDir) this.loadStatic(opts.staticDir);
    this.server = http.createServer((req, res) => {
      void this.serve(req, res);
    });
    this.server.maxConnections = 128;
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 0; // event streams stay open
  }

  static async start(opts: HttpControlOptions): Promise<HttpControlServer> {
    const s = new HttpControlServer(opts);
    await s.listen();
    return s;
  }

  /** Read once at start: the page is a few small files, and serving never touches the disk. */
  private loadStatic(dir: string): void {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const type = STATIC_TYPES[path.extname(name)];
      if (!type) continue;
      this.files.set(`/${name}`, { type, body: fs.readFileSync(path.join(dir, name)) });
    }
    const index = this.files.get('/index.html');
    if (index) this.files.set('/', index);
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onErr = (e: NodeJS.ErrnoException) => {
        reject(
          Object.assign(
            new Error(`cannot serve the web view on ${this.opts.host}:${this.opts.port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.message}`),
            { code: e.code ?? 'EIO' },
          ),
        );
      };
      this.server.once('error', onErr);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', onErr);
        this.server.on('error', (e) => this.opts.log?.(`web: ${e.message}`));
        resolve();
      });
    });
  }

  /** The bound address and port (the port 0 asked for is a real one here). */
  get address(): { host: string; port: number } {
    const a = this.server.address();
    if (a === null || typeof a === 'string') return { host: this.opts.host, port: this.opts.port };
    return { host: a.address, port: a.port };
  }

  get url(): string {
    const { host, port } = this.address;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    for (const r of this.streams) r.destroy();
    this.closing = new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closing;
  }

  private authorized(req: http.IncomingMessage, u: URL): boolean {
    if (this.tokenBuf === null) return true;
    const auth = req.headers.authorization;
    const given = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : u.searchParams.get('token');
    if (given === null || given === undefined) return false;
    const g = Buffer.from(given);
    return g.length === this.tokenBuf.length && crypto.timingSafeEqual(g, this.tokenBuf);
  }

  private send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    let text: string;
    try {
      text = JSON.stringify(body);
    } catch (e) {
      status = 500;
      text = JSON.stringify({ error: { code: ErrorCode.UNENCODABLE, message: `reply cannot be encoded as JSON: ${(e as Error).message}` } });
    }
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
    res.end(text + '\n');
  }

  private fail(res: http.ServerResponse, e: unknown): void {
    const h = errorOf(e);
    // One line, whatever the message held.
    const message = h.message.replace(/\s*\n\s*/g, ' ');
    this.send(res, h.status, { error: { code: h.code, message } }, h.status === 401 ? { 'www-authenticate': 'Bearer realm="faultstack"' } : {});
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const u = new URL(req.url ?? '/', 'http://localhost');
      const method = req.method ?? 'GET';
      const file = this.files.get(u.pathname);
      if (file && (method === 'GET' || method === 'HEAD')) {
        // The page and its script hold nothing secret; the data behind them needs the token.
        res.writeHead(200, {
          'content-type': file.type,
          'cache-control': 'no-cache',
          'x-content-type-options': 'nosniff',
          'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
        });
        res.end(method === 'HEAD' ? undefined : file.body);
        return;
      }
      if (!u.pathname.startsWith('/api') && u.pathname !== '/metrics') {
        throw new HttpError(404, 'ENOENT', `no such page ${u.pathname}: the API is under /api (GET /api lists it), metrics at /metrics`);
      }
      if (!this.authorized(req, u)) {
        throw new HttpError(
          401,
          'EAUTH',
          'a token is required (this server is bound off localhost): send "Authorization: Bearer TOKEN" or ?token=TOKEN; the token was printed by faultstack run',
        );
      }
      if (u.pathname === '/metrics') {
        if (method !== 'GET') throw new HttpError(405, 'EMETHOD', '/metrics answers GET only');
        if (!this.opts.metrics) throw new HttpError(404, 'ENOENT', 'no metrics on this server');
        const text = await this.opts.metrics();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'cache-control': 'no-store' });
        res.end(text);
        return;
      }
      if (u.pathname === '/api' || u.pathname === '/api/') {
        this.send(res, 200, {
          endpoints: [
            ...ROUTES.map((r) => ({ method: r.method, path: r.path, doc: r.doc })),
            { method: 'GET', path: '/api/events/stream', doc: 'the event log as server-sent events (?limit=N recent ones first)' },
            { method: 'GET', path: '/metrics', doc: 'Prometheus text format' },
          ],
          commands: [...this.handlers.keys()].sort(),
        });
        return;
      }
      if (u.pathname === '/api/events/stream' && method === 'GET') {
        this.eventStream(req, res, u);
        return;
      }
      for (const route of ROUTES) {
        const params = match(route, method, u.pathname);
        if (!params) continue;
        const body = method === 'GET' || method === 'DELETE' ? {} : await readBody(req);
        const cmd = typeof route.cmd === 'string' ? route.cmd : route.cmd(params);
        const args = route.args ? route.args(params, queryArgs(u), body) : {};
        this.send(res, 200, await this.call(cmd, args, req));
        return;
      }
      const other = ROUTES.filter((r) => match({ ...r, method }, method, u.pathname)).map((r) => r.method);
      if (other.length) throw new HttpError(405, 'EMETHOD', `${u.pathname} answers ${[...new Set(other)].join(', ')}, not ${method}`);
      throw new HttpError(404, 'ENOENT', `no endpoint ${method} ${u.pathname}: GET /api lists them`);
    } catch (e) {
      this.fail(res, e);
    }
  }

  /** One handler call; rows a handler streams (stats) are collected into the reply. */
  async call(cmd: string, args: Record<string, unknown>, req: http.IncomingMessage | null = null): Promise<unknown> {
    const handler = this.handlers.get(cmd);
    if (!handler) {
      throw new HttpError(404, ErrorCode.UNKNOWN_COMMAND, `this stack does not answer "${cmd}" (it answers: ${[...this.handlers.keys()].sort().join(', ')})`);
    }
    const rows: unknown[] = [];
    const streamed: unknown[] = [];
    let closed = false;
    const closeFns: (() => void)[] = [];
    req?.once('close', () => {
      closed = true;
      for (const f of closeFns.splice(0)) f();
    });
    const ctx: ControlContext = {
      cmd,
      id: null,
      stream: (ev) => {
        if (closed) return false;
        const r = (ev as { rows?: unknown[] })?.rows;
        if (Array.isArray(r)) rows.push(...r);
        else streamed.push(ev);
        return true;
      },
      onClose: (fn) => {
        if (closed) queueMicrotask(fn);
        else closeFns.push(fn);
      },
      get closed() {
        return closed;
      },
      untilClosed: () => new Promise<void>((r) => ctx.onClose(r)),
    };
    const result = await handler(args, ctx);
    if (cmd === 'stats' && result && typeof result === 'object') return { ...(result as object), connections: rows };
    if (streamed.length) return { result: result ?? null, stream: streamed };
    return result ?? null;
  }

  /** GET /api/events/stream: the recent events, then each new one, as server-sent events. */
  private eventStream(req: http.IncomingMessage, res: http.ServerResponse, u: URL): void {
    const handler = this.handlers.get('events');
    if (!handler) throw new HttpError(404, ErrorCode.UNKNOWN_COMMAND, 'this stack has no event log');
    if (this.streams.size >= MAX_STREAMS) throw new HttpError(503, 'EBUSY', `${MAX_STREAMS} event streams are open already: close one`);
    const a = queryArgs(u);
    const limit = a.limit ?? 100;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    this.streams.add(res);
    let closed = false;
    const closeFns: (() => void)[] = [];
    const heartbeat = setInterval(() => {
      res.write(': keepalive\n\n');
    }, SSE_HEARTBEAT_MS);
    const finish = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      this.streams.delete(res);
      for (const f of closeFns.splice(0)) f();
    };
    req.once('close', finish);
    res.once('close', finish);
    const ctx: ControlContext = {
      cmd: 'events',
      id: null,
      stream: (ev) => {
        if (closed) return false;
        // A client that does not read is dropped rather than buffered without bound.
        if (res.writableLength > 4 << 20) {
          res.destroy();
          return false;
        }
        res.write(`data: ${JSON.stringify(ev)}\n\n`);
        return true;
      },
      onClose: (fn) => {
        if (closed) queueMicrotask(fn);
        else closeFns.push(fn);
      },
      get closed() {
        return closed;
      },
      untilClosed: () => new Promise<void>((r) => ctx.onClose(r)),
    };
    Promise.resolve()
      .then(() => handler({ limit, follow: true }, ctx))
      .catch((e: unknown) => {
        if (!closed) {
          res.write(`event: error\ndata: ${JSON.stringify({ error: { code: errorOf(e).code, message: errorOf(e).message } })}\n\n`);
          res.end();
        }
      });
  }
}

/** The request body: empty, or one JSON object of at most MAX_BODY bytes. */
function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > MAX_BODY) {
        failed = true;
        reject(new HttpError(413, 'ETOOLONG', `the request body is larger than ${MAX_BODY} bytes: arguments are a small JSON object`));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('error', (e) => {
      if (!failed) {
        failed = true;
        reject(e);
      }
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') {
        resolve({});
        return;
      }
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch (e) {
        reject(new HttpError(400, ErrorCode.BAD_JSON, `the body is not JSON (${(e as Error).message}): send a JSON object such as {"mode":"hotfixed"}`));
        return;
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        reject(new HttpError(400, ErrorCode.BAD_REQUEST, 'the body must be a JSON object of arguments, such as {"mode":"hotfixed"}'));
        return;
      }
      resolve(v as Record<string, unknown>);
    });
  });
}
