/**
 * The control client: one call, or one event stream, over the control socket.
 * Connection failures become CodedErrors whose messages say what to do next.
 */
import * as net from 'node:net';
import { CodedError } from '../util/errors';
import { ControlLine, LineSplitter, MAX_TIMEOUT_MS, RequestId, encodeLine } from './protocol';

/** An error reply from the server: code and message as the handler gave them. */
export class ControlError extends CodedError {
  constructor(
    code: string,
    message: string,
    readonly cmd: string,
  ) {
    super(code, message);
    this.name = 'ControlError';
  }
}

export interface CallOptions {
  /** From sending the request to the reply (default 10 s). */
  timeoutMs?: number;
  /** Event lines that come before the reply (a stats request's rows). */
  onEvent?: (ev: unknown) => void;
}

export interface StreamOptions {
  /** For connecting only; a stream has no idle timeout (default 5 s). */
  connectTimeoutMs?: number;
}

export interface ControlStream {
  /** Resolves with the final result when the server ends the stream, or undefined after close(); rejects on an error reply or a lost connection. */
  readonly done: Promise<unknown>;
  close(): void;
}

function connectError(sockPath: string, e: NodeJS.ErrnoException): CodedError {
  switch (e.code) {
    case 'ENOENT':
      return new CodedError('ENOENT', `no control socket at ${sockPath} (is faultstack running? start one with \`faultstack run ...\`)`);
    case 'ECONNREFUSED':
      return new CodedError('ECONNREFUSED', `nothing answers on ${sockPath} (a stale socket left by a faultstack that exited?)`);
    case 'EACCES':
    case 'EPERM':
      return new CodedError(e.code, `permission denied on ${sockPath} (the control socket is root's: run as root)`);
    case 'ENOTSOCK':
      return new CodedError('ENOTSOCK', `${sockPath} is not a socket`);
    default:
      return new CodedError(e.code ?? 'EIO', `cannot reach ${sockPath}: ${e.message}`);
  }
}

/** Node arms no timer beyond 2^31-1 ms (it would fire at once): a longer wait is that long. */
function clampTimeout(ms: number): number {
  return Number.isFinite(ms) ? Math.min(Math.max(1, ms), MAX_TIMEOUT_MS) : MAX_TIMEOUT_MS;
}

function seconds(ms: number): string {
  return `${+(ms / 1000).toFixed(3)} s`;
}

type Pending = {
  cmd: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
  onEvent?: (ev: unknown) => void;
};

export class ControlClient {
  private nextId = 1;
  private readonly pending = new Map<RequestId, Pending>();
  /** Replies of any length: the request limit is the server's, not ours. */
  private readonly splitter = new LineSplitter(Infinity);
  private closedByUs = false;
  private lost: Error | null = null;

  private constructor(
    readonly path: string,
    private readonly socket: net.Socket,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => this.fail(connectError(path, e)));
    socket.on('close', () => this.fail(new CodedError('ECONNRESET', `the faultstack at ${path} closed the connection before replying`)));
  }

  /** Opens a connection (fails after timeoutMs, default 5 s). */
  static connect(sockPath: string, opts: { timeoutMs?: number } = {}): Promise<ControlClient> {
    const timeoutMs = clampTimeout(opts.timeoutMs ?? 5000);
    return new Promise((resolve, reject) => {
      const s = net.createConnection(sockPath);
      const t = setTimeout(() => {
        s.destroy();
        reject(new CodedError('ETIMEDOUT', `no answer from ${sockPath} within ${seconds(timeoutMs)}`));
      }, timeoutMs);
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        reject(connectError(sockPath, e));
      });
      s.once('connect', () => {
        clearTimeout(t);
        s.removeAllListeners('error');
        resolve(new ControlClient(sockPath, s));
      });
    });
  }

  /** One request on a fresh connection, closed afterwards. */
  static async call<T = unknown>(sockPath: string, cmd: string, args: Record<string, unknown> = {}, opts: CallOptions = {}): Promise<T> {
    const timeoutMs = clampTimeout(opts.timeoutMs ?? 10_000);
    const started = Date.now();
    const c = await ControlClient.connect(sockPath, { timeoutMs });
    try {
      return (await c.callWithin(cmd, args, Math.max(1, timeoutMs - (Date.now() - started)), timeoutMs, opts.onEvent)) as T;
    } finally {
      c.close();
    }
  }

  /** A streaming request on a fresh connection; close() the stream to end it. */
  static async stream(
    sockPath: string,
    cmd: string,
    args: Record<string, unknown>,
    onEvent: (ev: unknown) => void,
    opts: StreamOptions = {},
  ): Promise<ControlStream> {
    const c = await ControlClient.connect(sockPath, { timeoutMs: opts.connectTimeoutMs ?? 5000 });
    const done = c.request(cmd, args, onEvent);
    const settled = done.then(
      (v) => v,
      (e: unknown) => {
        if (c.closedByUs) return undefined;
        throw e;
      },
    );
    settled.catch(() => {}); // marked handled: a caller that never awaits `done` must not crash the process
    return { done: settled, close: () => c.close() };
  }

  /** A request on this connection. */
  call(cmd: string, args: Record<string, unknown> = {}, opts: CallOptions = {}): Promise<unknown> {
    const timeoutMs = clampTimeout(opts.timeoutMs ?? 10_000);
    return this.callWithin(cmd, args, timeoutMs, timeoutMs, opts.onEvent);
  }

  /** Waits `waitMs`; the timeout message reports `reportMs` (the caller's whole budget). */
  private callWithin(cmd: string, args: Record<string, unknown>, waitMs: number, reportMs: number, onEvent?: (ev: unknown) => void): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CodedError('ETIMEDOUT', `no reply to "${cmd}" from ${this.path} within ${seconds(reportMs)}`)), waitMs);
    });
    const reply = this.request(cmd, args, onEvent);
    return Promise.race([reply, timeout]).finally(() => clearTimeout(timer));
  }

  private request(cmd: string, args: Record<string, unknown>, onEvent?: (ev: unknown) => void): Promise<unknown> {
    if (this.lost) return Promise.reject(this.lost);
    if (this.closedByUs) return Promise.reject(new CodedError('ECONNRESET', 'control client is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { cmd, resolve, reject, onEvent });
      this.socket.write(encodeLine({ id, cmd, args }));
    }).finally(() => this.pending.delete(id));
  }

  close(): void {
    this.closedByUs = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.splitter.push(chunk);
    } catch (e) {
      this.fail(new CodedError('EPROTO', `reply from ${this.path} is too long: ${(e as Error).message}`));
      this.socket.destroy();
      return;
    }
    for (const line of lines) {
      let msg: ControlLine;
      try {
        msg = JSON.parse(line) as ControlLine;
      } catch {
        this.fail(new CodedError('EPROTO', `${this.path} sent something that is not JSON (is it a faultstack control socket?)`));
        this.socket.destroy();
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) continue;
      if ('event' in msg) {
        p.onEvent?.(msg.event);
      } else if (msg.ok) {
        p.resolve(msg.result);
      } else {
        const err = msg.error ?? { code: 'EPROTO', message: 'error reply without details' };
        p.reject(new ControlError(String(err.code), String(err.message), p.cmd));
      }
    }
  }

  private fail(e: Error): void {
    if (this.lost) return;
    this.lost = this.closedByUs ? new CodedError('ECONNRESET', 'control client is closed') : e;
    for (const p of [...this.pending.values()]) p.reject(this.lost);
    this.pending.clear();
  }
}
