/**
 * The control server: answers CLI requests on a Unix socket (see protocol.ts).
 *
 * It never crashes on input: bad JSON, unknown commands and throwing handlers all
 * become error replies. It is plain Node `net`, independent of the emulated stack's
 * processing, so it keeps answering while a fault has the stack hung.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { CodedError } from '../util/errors';
import {
  ControlCommand,
  ControlErrorBody,
  ControlLine,
  ErrorCode,
  LineSplitter,
  MAX_CLIENTS,
  MAX_REQUEST_LINE,
  RequestId,
  encodeLine,
  parseRequest,
} from './protocol';

export interface ControlContext {
  readonly cmd: string;
  readonly id: RequestId;
  /** Sends one event line for this request; false once the client has gone. */
  stream(event: unknown): boolean;
  /** Called once when the client's connection closes (immediately if it already has). */
  onClose(fn: () => void): void;
  readonly closed: boolean;
  /** Resolves when the client goes away: return it from a handler to keep a stream open. */
  untilClosed(): Promise<void>;
}

export type ControlHandler = (args: Record<string, unknown>, ctx: ControlContext) => unknown;

export interface ControlServerOptions {
  /** A client that does not read what we send is dropped past this many queued bytes. */
  maxQueuedBytes?: number;
  /** Where to report a client dropped for cause or a server error (default: nowhere). */
  log?: (message: string) => void;
  /** Clients served at once (default MAX_CLIENTS); one more gets an EBUSY reply and is closed. */
  maxClients?: number;
  /** Longest request line in bytes (default MAX_REQUEST_LINE): what an unfinished line may hold per client. */
  maxLineBytes?: number;
}

class Connection {
  closed = false;
  /** Requests whose handler has not finished yet. */
  pending = 0;
  private ended = false;
  private readonly closeFns: (() => void)[] = [];
  private readonly splitter: LineSplitter;

  constructor(
    readonly socket: net.Socket,
    private readonly server: ControlServer,
    private readonly maxQueued: number,
    maxLine: number,
  ) {
    this.splitter = new LineSplitter(maxLine);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.onClosed());
    // The client half-closing (end after its requests) must not cut off our replies;
    // a last request without its newline is still a request.
    socket.on('end', () => {
      this.ended = true;
      const last = this.splitter.end();
      if (last !== null) this.server.dispatch(this, last);
      this.finishIfIdle();
    });
  }

  /** After the client half-closed, end our side once every request has been answered. */
  finishIfIdle(): void {
    if (this.ended && this.pending === 0 && !this.socket.destroyed) this.socket.end();
  }

  private onData(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.splitter.push(chunk);
    } catch (e) {
      this.send({ id: null, ok: false, error: { code: ErrorCode.LINE_TOO_LONG, message: (e as Error).message } });
      this.socket.end();
      return;
    }
    for (const line of lines) this.server.dispatch(this, line);
    this.finishIfIdle();
  }

  send(msg: ControlLine): boolean {
    if (this.closed || this.socket.destroyed) return false;
    let text: string;
    try {
      text = encodeLine(msg);
    } catch (e) {
      const id = (msg as { id: RequestId }).id;
      text = encodeLine({ id, ok: false, error: { code: ErrorCode.UNENCODABLE, message: `reply cannot be encoded as JSON: ${(e as Error).message}` } });
    }
    if (this.socket.writableLength > this.maxQueued) {
      this.server.logLine(`control: dropping a client that reads too slowly (${this.socket.writableLength} bytes queued)`);
      this.socket.destroy();
      return false;
    }
    this.socket.write(text);
    return true;
  }

  onClose(fn: () => void): void {
    if (this.closed) queueMicrotask(fn);
    else this.closeFns.push(fn);
  }

  private onClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.forget(this);
    for (const fn of this.closeFns.splice(0)) {
      try {
        fn();
      } catch (e) {
        this.server.logLine(`control: onClose callback threw: ${(e as Error).message}`);
      }
    }
  }
}

function errorBody(e: unknown): ControlErrorBody {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return { code: typeof code === 'string' && code ? code : ErrorCode.HANDLER_FAILED, message: e.message || String(e) };
  }
  return { code: ErrorCode.HANDLER_FAILED, message: String(e) };
}

/** Is a server accepting connections on this socket path? */
export function probeSocket(sockPath: string, timeoutMs = 1000): Promise<'live' | 'refused' | 'absent'> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(sockPath);
    const t = setTimeout(() => {
      s.destroy();
      resolve('live');
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve('live');
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      if (e.code === 'ECONNREFUSED') resolve('refused');
      else if (e.code === 'ENOENT') resolve('absent');
      else reject(e);
    });
  });
}

export class ControlServer {
  private readonly server: net.Server;
  private readonly conns = new Set<Connection>();
  private readonly handlers: Map<string, ControlHandler>;
  private readonly maxQueued: number;
  private readonly log: (message: string) => void;
  private listening = false;
  private closing: Promise<void> | null = null;
  /** Clients turned away because MAX_CLIENTS were connected. */
  refused = 0;
  /** Identity of the socket file we created, so close() never unlinks someone else's. */
  private inode: { dev: number; ino: number } | null = null;

  constructor(
    readonly path: string,
    handlers: Record<string, ControlHandler>,
    opts: ControlServerOptions = {},
  ) {
    this.handlers = new Map(Object.entries(handlers));
    this.maxQueued = opts.maxQueuedBytes ?? 16 << 20;
    this.log = opts.log ?? (() => {});
    const maxClients = opts.maxClients ?? MAX_CLIENTS;
    const maxLine = opts.maxLineBytes ?? MAX_REQUEST_LINE;
    if (!this.handlers.has(ControlCommand.PING)) {
      this.handlers.set(ControlCommand.PING, () => ({ pong: true, pid: process.pid, commands: [...this.handlers.keys()].sort() }));
    }
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => {
      if (this.closing) {
        socket.destroy();
        return;
      }
      if (this.conns.size >= maxClients) {
        // Bounded: each client may hold an unfinished line of up to maxLine bytes.
        this.refused++;
        socket.on('error', () => socket.destroy());
        socket.end(
          encodeLine({
            id: null,
            ok: false,
            error: { code: ErrorCode.TOO_MANY_CLIENTS, message: `too many control clients (${maxClients} at once); try again when one has finished` },
          }),
        );
        socket.setTimeout(1000, () => socket.destroy());
        return;
      }
      this.conns.add(new Connection(socket, this, this.maxQueued, maxLine));
    });
    this.server.on('error', (e) => this.log(`control: server error: ${e.message}`));
  }

  /** Creates and starts a server (see listen()). */
  static async start(sockPath: string, handlers: Record<string, ControlHandler>, opts?: ControlServerOptions): Promise<ControlServer> {
    const s = new ControlServer(sockPath, handlers, opts);
    await s.listen();
    return s;
  }

  /**
   * Creates the parent directory (0700) if needed, removes a stale socket file left by
   * a server that died, and listens. Refuses when a live server answers on the path or
   * when the path is something other than a socket.
   */
  async listen(): Promise<void> {
    if (this.listening) return;
    const dir = path.dirname(this.path);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    let st: fs.Stats | null = null;
    try {
      st = fs.lstatSync(this.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (st) {
      if (!st.isSocket()) {
        throw new CodedError('EEXIST', `${this.path} exists and is not a socket; refusing to replace it`);
      }
      const state = await probeSocket(this.path);
      if (state === 'live') {
        throw new CodedError(
          'EADDRINUSE',
          `another server is already answering on ${this.path} (is another faultstack running? stop it or use another --control path)`,
        );
      }
      if (state === 'refused') fs.rmSync(this.path, { force: true });
    }
    // Bind under a private name, then rename into place: the rename is atomic, and
    // since libuv unlinks the bound name when the server closes, closing can never
    // delete a socket file that another server has put at our path since.
    const tmp = path.join(dir, `.${process.pid}-${Math.random().toString(36).slice(2, 8)}.sock`);
    const bindPath = Buffer.byteLength(tmp) <= 107 ? tmp : this.path;
    await new Promise<void>((resolve, reject) => {
      const onErr = (e: NodeJS.ErrnoException) => {
        reject(
          e.code === 'EADDRINUSE'
            ? new CodedError('EADDRINUSE', `${this.path} was taken by another server while starting`)
            : new CodedError(e.code ?? 'EIO', `cannot listen on ${this.path}: ${e.message}`),
        );
      };
      this.server.once('error', onErr);
      this.server.listen(bindPath, () => {
        this.server.off('error', onErr);
        resolve();
      });
    });
    try {
      fs.chmodSync(bindPath, 0o600);
    } catch {
      /* best effort */
    }
    if (bindPath !== this.path) {
      try {
        fs.renameSync(bindPath, this.path);
      } catch (e) {
        await new Promise<void>((r) => this.server.close(() => r()));
        throw new CodedError((e as NodeJS.ErrnoException).code ?? 'EIO', `cannot put the control socket at ${this.path}: ${(e as Error).message}`);
      }
    }
    const mine = fs.statSync(this.path);
    this.inode = { dev: mine.dev, ino: mine.ino };
    this.listening = true;
  }

  /** Registers (or replaces) a handler after construction. */
  handle(cmd: string, fn: ControlHandler): void {
    this.handlers.set(cmd, fn);
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Stops listening, drops every client (their onClose callbacks run) and removes the socket file. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      for (const c of this.conns) c.socket.destroy();
      const done = () => {
        this.removeSocketFile();
        resolve();
      };
      if (this.listening) this.server.close(() => done());
      else done();
    });
    return this.closing;
  }

  private removeSocketFile(): void {
    if (!this.inode) return;
    try {
      const st = fs.statSync(this.path);
      if (st.dev === this.inode.dev && st.ino === this.inode.ino) fs.rmSync(this.path, { force: true });
    } catch {
      /* already gone */
    }
    this.inode = null;
  }

  /** @internal */
  forget(c: Connection): void {
    this.conns.delete(c);
  }

  /** @internal */
  logLine(message: string): void {
    this.log(message);
  }

  /** @internal */
  dispatch(conn: Connection, line: string): void {
    const parsed = parseRequest(line);
    if (!parsed.ok) {
      conn.send({ id: parsed.id, ok: false, error: parsed.error });
      return;
    }
    const { id, cmd, args } = parsed.req;
    const handler = this.handlers.get(cmd);
    if (!handler) {
      const known = [...this.handlers.keys()].sort().join(', ');
      conn.send({ id, ok: false, error: { code: ErrorCode.UNKNOWN_COMMAND, message: `unknown command "${cmd}"; this stack answers: ${known}` } });
      return;
    }
    const ctx: ControlContext = {
      cmd,
      id,
      stream: (event) => conn.send({ id, event }),
      onClose: (fn) => conn.onClose(fn),
      get closed() {
        return conn.closed;
      },
      untilClosed: () => new Promise<void>((resolve) => conn.onClose(resolve)),
    };
    let out: unknown;
    try {
      out = handler(args, ctx);
    } catch (e) {
      conn.send({ id, ok: false, error: errorBody(e) });
      return;
    }
    conn.pending++;
    const settle = (line: ControlLine) => {
      conn.pending--;
      conn.send(line);
      conn.finishIfIdle();
    };
    Promise.resolve(out).then(
      (result) => settle({ id, ok: true, result: result === undefined ? null : result }),
      (e: unknown) => settle({ id, ok: false, error: errorBody(e) }),
    );
  }
}
