/**
 * Sockets on the userspace stack with Node's `net` shape: a TCP socket is a
 * `stream.Duplex`, so `node:http` and `node:tls` run on top of it unchanged.
 *
 * Backpressure: a write completes (its callback runs) while the connection's send
 * queue is below its send buffer; past that, the callback waits for ACKs to free
 * room. The receive window is the receive buffer minus what the application has
 * not read yet (`readableLength`), so a slow reader closes the window.
 */
import { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import type { Stack } from '../stack';
import type { ConnectionOwner, TcpConnection } from '../tcp/connection';
import type { ApplicationState, Listener } from '../tcp/listener';
import { CodedError } from '../util/errors';
import { formatIpv4, parseIpv4 } from '../wire/addr';
import type { ConnectionState, NetApi, PeerInfo, TcpServerLike, TcpSocketLike } from './net-api';
import { FsUdpSocket } from './dgram';

export interface SocketOptions {
  allowHalfOpen?: boolean;
  /** Nagle off from the start, as `new net.Socket({ noDelay })` (applied when the connection is attached). */
  noDelay?: boolean;
}

export class FsSocket extends Duplex implements TcpSocketLike, ConnectionOwner {
  conn: TcpConnection | null = null;
  connecting = false;
  private pendingWriteCb: ((err?: Error | null) => void) | null = null;
  private idleTimeoutMs = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  bytesRead = 0;
  bytesWritten = 0;
  remotePort?: number;
  localPort?: number;
  /**
   * The addresses as int32 (small integers V8 keeps in the object; a uint32 above 2^31
   * would be a heap number each), made into strings when asked, as net.Socket's getters
   * do: an idle connection keeps no strings (issue 16).
   */
  private remoteIp = 0;
  private localIp = 0;
  get remoteAddress(): string | undefined {
    return this.localPort !== undefined ? formatIpv4(this.remoteIp >>> 0) : undefined;
  }
  get localAddress(): string | undefined {
    return this.localPort !== undefined ? formatIpv4(this.localIp >>> 0) : undefined;
  }
  get remoteFamily(): 'IPv4' {
    return 'IPv4';
  }
  /**
   * TCP_NODELAY as the application asked for it. Like Node's net.Socket (kSetNoDelay), a
   * setNoDelay() before there is a connection (before connect(), or on a socket an
   * http server builds itself) is kept and applied when the connection is attached.
   */
  private noDelay: boolean;

  constructor(
    readonly stack: Stack,
    opts: SocketOptions = {},
  ) {
    super({ allowHalfOpen: opts.allowHalfOpen ?? false, highWaterMark: 64 * 1024 });
    this.noDelay = opts.noDelay ?? false;
  }

  /**
   * Like Linux's TCP_INFO, the little iperf3 reports: segments retransmitted so far and
   * the congestion control in use (Linux's names). Null once the connection is gone.
   */
  tcpInfo(): { retransmits: number; congestion: string } | null {
    const c = this.conn;
    if (!c) return null;
    return { retransmits: c.retransSegs, congestion: c.layer.config.congestionControl === 'cubic' ? 'cubic' : 'reno' };
  }

  /** Wraps a connection (an accepted one, or a new active open). */
  adopt(conn: TcpConnection): void {
    this.conn = conn;
    this.remoteIp = conn.remoteAddr | 0;
    this.remotePort = conn.remotePort;
    this.localIp = conn.localAddr | 0;
    this.localPort = conn.localPort;
    conn.attach(this, this.noDelay);
  }

  connect(port: number, host: string, localAddress?: string, cb?: () => void): this {
    const remote = parseIpv4(host);
    if (remote === null) {
      process.nextTick(() => this.destroy(new CodedError('EINVAL', `connect EINVAL: "${host}" is not an IPv4 address`)));
      return this;
    }
    const local = localAddress ? parseIpv4(localAddress) : this.stack.address;
    if (local === null) {
      process.nextTick(() => this.destroy(new CodedError('EINVAL', `connect EINVAL: bad local address "${localAddress}"`)));
      return this;
    }
    if (cb) this.once('connect', cb);
    this.connecting = true;
    const now = this.tick();
    try {
      const conn = this.stack.tcp.connect(local, remote, port, 0, now);
      this.adopt(conn);
    } catch (e) {
      process.nextTick(() => this.destroy(e as Error));
    }
    this.stack.flushSoon();
    return this;
  }

  private tick(): number {
    return this.stack.clock();
  }

  // ---- ConnectionOwner
  onEstablished(): void {
    this.connecting = false;
    this.emit('connect');
    this.emit('ready');
  }
  onData(data: Buffer): void {
    this.bytesRead += data.length;
    this.touch();
    this.push(data);
  }
  /**
   * The peer's FIN is the end of the readable side, reported one macrotask after the data
   * before it, as a kernel socket's EOF is: libuv delivers it in a read callback of its
   * own, after the callbacks for that data and everything they queued (nextTicks,
   * microtasks) have run. Data and FIN often arrive in one burst here (`nc -N`: three
   * pipelined requests, then SHUT_WR); reporting the end in the same turn made node:http
   * see it while the second and third responses still waited their turn, and it dropped
   * them (its socketOnEnd aborts the requests not answered yet). A half-close loses
   * nothing at the TCP level (RFC 9293 3.6: CLOSE-WAIT still sends); neither may the
   * socket.
   */
  onPeerFin(): void {
    if (this.peerFinQueued) return;
    this.peerFinQueued = true;
    setImmediate(() => {
      this.peerFinQueued = false;
      if (!this.readableEnded && !this.destroyed) this.push(null);
    });
  }
  private peerFinQueued = false;
  onSendSpace(): void {
    const cb = this.pendingWriteCb;
    if (cb && this.conn && this.conn.hasSendSpace()) {
      this.pendingWriteCb = null;
      cb();
    }
  }
  onClosed(err: CodedError | null): void {
    this.conn = null;
    const cb = this.pendingWriteCb;
    this.pendingWriteCb = null;
    if (err) {
      // Asynchronously, like Node: listeners attached right after accept still hear it.
      process.nextTick(() => {
        cb?.(err);
        this.destroy(err);
      });
      return;
    }
    if (cb) cb();
    // A FIN reported in the next macrotask ends the readable side then, after its data.
    if (!this.readableEnded && !this.peerFinQueued) this.push(null);
  }
  unreadBytes(): number {
    return this.readableLength;
  }

  // ---- stream.Duplex
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const conn = this.conn;
    if (!conn) {
      cb(new CodedError('EPIPE', 'write EPIPE'));
      return;
    }
    this.bytesWritten += chunk.length;
    this.touch();
    conn.send(chunk, this.tick());
    this.stack.flushSoon();
    if (conn.hasSendSpace()) cb();
    else this.pendingWriteCb = cb;
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    const conn = this.conn;
    if (!conn) {
      cb(new CodedError('EPIPE', 'write EPIPE'));
      return;
    }
    const now = this.tick();
    // One writev(2): every chunk is queued before the output loop runs, so that they leave
    // together (a corked http response's header and body in one segment), not the first
    // alone and the rest held back by Nagle until the peer's (delayed) ACK.
    for (const { chunk } of chunks) {
      this.bytesWritten += chunk.length;
      conn.enqueue(chunk);
    }
    conn.output(now);
    this.touch();
    this.stack.flushSoon();
    if (conn.hasSendSpace()) cb();
    else this.pendingWriteCb = cb;
  }

  /**
   * end() with nothing to write on a side that has already finished (or a destroyed
   * socket) changes nothing, but Node's Writable.end builds an ERR_STREAM_ALREADY_FINISHED
   * error with its stack trace for it even when nobody is told. Node's http server calls
   * it for every connection the client closes after the response: 4% of the stack
   * process's CPU at 6,000 short connections/s. Skip it; anything else goes to Node.
   */
  override end(...args: unknown[]): this {
    if (args.every((a) => a === undefined) && (this.writableFinished || this.destroyed)) return this;
    return (super.end as (...a: unknown[]) => this)(...args);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.conn) {
      this.conn.shutdownWrite(this.tick());
      this.stack.flushSoon();
    }
    cb();
  }

  override _read(): void {
    if (this.conn) this.conn.onAppRead(this.tick());
  }

  private appReadQueued = false;
  /**
   * Every read by the application may open the receive window. Node calls _read
   * again only after a push, so once the connection has stopped pushing (the window
   * shut) the reads that drain the buffer went unnoticed: no window update was sent
   * (RFC 9293 3.8.6.2.2) and the peer learned of it only from its next zero-window
   * probe, up to a minute later. One check per burst of reads (a microtask), so a
   * drain that reads many chunks sends one update.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- stream.Readable's own signature
  override read(size?: number): any {
    const r = super.read(size);
    if (this.conn && !this.appReadQueued) {
      this.appReadQueued = true;
      queueMicrotask(() => {
        this.appReadQueued = false;
        if (this.conn) this.conn.onAppRead(this.tick());
      });
    }
    return r;
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.clearIdle();
    const conn = this.conn;
    this.conn = null;
    if (conn && !conn.isClosed()) {
      // Like close(2): unread data means a reset, otherwise a graceful close in the background.
      conn.close(this.tick(), this.readableLength > 0);
      this.stack.flushSoon();
    }
    cb(err);
  }

  /** Sends a RST and destroys the socket (Node's socket.resetAndDestroy). */
  resetAndDestroy(): this {
    const conn = this.conn;
    if (conn) {
      this.conn = null;
      conn.abortByApplication(this.tick());
      this.stack.flushSoon();
    }
    return this.destroy();
  }

  // ---- net.Socket surface
  setNoDelay(noDelay = true): this {
    this.noDelay = Boolean(noDelay);
    const conn = this.conn;
    // Data Nagle was holding back goes now (as setsockopt(TCP_NODELAY) pushes it in Linux).
    if (conn && conn.setNoDelay(this.noDelay, this.tick())) this.stack.flushSoon();
    return this;
  }
  setKeepAlive(enable = false, initialDelay = 0): this {
    this.conn?.setKeepAlive(enable, initialDelay, this.tick());
    return this;
  }
  setTimeout(ms: number, cb?: () => void): this {
    this.idleTimeoutMs = ms;
    if (cb) this.once('timeout', cb);
    this.touch();
    return this;
  }
  private touch(): void {
    if (this.idleTimeoutMs <= 0) {
      this.clearIdle();
      return;
    }
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = null;
        this.emit('timeout');
      }, this.idleTimeoutMs);
      this.idleTimer.unref?.();
    }
  }
  private clearIdle(): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }
  address(): { address: string; family: string; port: number } | Record<string, never> {
    return this.localAddress ? { address: this.localAddress, family: 'IPv4', port: this.localPort! } : {};
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
  get readyState(): string {
    if (this.connecting) return 'opening';
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }
  get pending(): boolean {
    return !this.conn || this.connecting;
  }
  get bufferSize(): number {
    return this.writableLength + (this.conn ? this.conn.sendQueued : 0);
  }
}

export interface ServerOptions {
  allowHalfOpen?: boolean;
  /** Accepted sockets start with Nagle off (net.createServer({ noDelay })). */
  noDelay?: boolean;
  /** Accept one connection per interval instead of as fast as possible (a slow server). */
  acceptIntervalMs?: number;
  /** The application's per-connection state (net-api.ts TcpServerOptions.connectionState). */
  connectionState?: (peer: PeerInfo) => ConnectionState;
}

function peerOf(conn: TcpConnection): PeerInfo {
  return { remoteAddress: formatIpv4(conn.remoteAddr), remotePort: conn.remotePort };
}

export class FsServer extends EventEmitter implements TcpServerLike {
  listener: Listener | null = null;
  private acceptTimer: NodeJS.Timeout | null = null;
  listening = false;
  readonly connections = new Set<FsSocket>();

  constructor(
    readonly stack: Stack,
    readonly opts: ServerOptions = {},
    onConnection?: (s: FsSocket) => void,
  ) {
    super();
    if (onConnection) this.on('connection', onConnection);
  }

  listen(...args: unknown[]): this {
    let port = 0,
      host = '0.0.0.0',
      backlog = 511;
    let cb: (() => void) | undefined;
    if (typeof args[0] === 'object' && args[0] !== null) {
      const o = args[0] as { port?: number; host?: string; backlog?: number };
      port = o.port ?? 0;
      host = o.host ?? host;
      backlog = o.backlog ?? backlog;
      cb = args[1] as (() => void) | undefined;
    } else {
      port = Number(args[0] ?? 0);
      for (const a of args.slice(1)) {
        if (typeof a === 'function') cb = a as () => void;
        else if (typeof a === 'string') host = a;
        else if (typeof a === 'number') backlog = a;
      }
    }
    const addr = host === '0.0.0.0' || host === '::' ? 0 : parseIpv4(host);
    if (addr === null) {
      process.nextTick(() => this.emit('error', new CodedError('EINVAL', `listen EINVAL: bad address "${host}"`)));
      return this;
    }
    if (port === 0) {
      const { ephemeralLow: lo, ephemeralHigh: hi } = this.stack.tcp.config;
      const start = lo + Math.floor(Math.random() * (hi - lo + 1));
      for (let i = 0; i <= hi - lo; i++) {
        const p = lo + ((start - lo + i) % (hi - lo + 1));
        if (!this.stack.tcp.listeners.has(p)) {
          port = p;
          break;
        }
      }
    }
    try {
      this.listener = this.stack.tcp.listen(port, addr, backlog);
    } catch (e) {
      process.nextTick(() => this.emit('error', e));
      return this;
    }
    this.listening = true;
    this.listener.onAcceptable = () => this.drain();
    const allocate = this.opts.connectionState;
    // Told of a connection before accepting it (a policy's delayed indication): allocate then.
    if (allocate) this.listener.application = { indicated: (conn): ApplicationState => allocate(peerOf(conn)) };
    if (cb) this.once('listening', cb);
    process.nextTick(() => this.emit('listening'));
    return this;
  }

  /** Takes established connections off the accept queue and hands them out. */
  private drain(): void {
    const l = this.listener;
    if (!l) return;
    const interval = this.opts.acceptIntervalMs ?? 0;
    if (interval > 0) {
      if (this.acceptTimer) return;
      const step = () => {
        this.acceptTimer = null;
        if (!this.acceptOne()) return;
        if (l.acceptQueue.length > 0) this.acceptTimer = setTimeout(step, interval);
      };
      this.acceptTimer = setTimeout(step, interval);
      return;
    }
    while (this.acceptOne()) {
      /* accept all */
    }
  }

  private acceptOne(): boolean {
    const l = this.listener;
    const conn = l?.accept();
    if (!l || !conn) return false;
    const s = new FsSocket(this.stack, { allowHalfOpen: this.opts.allowHalfOpen, noDelay: this.opts.noDelay });
    // The state allocated when the application was told of it, or now, at accept.
    const allocate = this.opts.connectionState;
    const st = l.takeApplicationState(conn) ?? (allocate ? allocate(peerOf(conn)) : null);
    s.adopt(conn);
    this.connections.add(s);
    s.once('close', () => {
      this.connections.delete(s);
      st?.release();
    });
    this.emit('connection', s);
    return true;
  }

  setBacklog(backlog: number): void {
    if (this.listener) this.listener.backlog = Math.max(0, backlog);
  }

  setAcceptInterval(ms: number): void {
    this.opts.acceptIntervalMs = ms;
  }

  close(cb?: (err?: Error) => void): this {
    if (this.acceptTimer) {
      clearTimeout(this.acceptTimer);
      this.acceptTimer = null;
    }
    if (this.listener) {
      this.stack.tcp.unlisten(this.listener, this.stack.clock());
      this.listener = null;
      this.stack.flushSoon();
    }
    const wasListening = this.listening;
    this.listening = false;
    process.nextTick(() => {
      if (cb) cb(wasListening ? undefined : new CodedError('ERR_SERVER_NOT_RUNNING', 'Server is not running.'));
      this.emit('close');
    });
    return this;
  }

  address(): { address: string; family: string; port: number } | null {
    const l = this.listener;
    return l ? { address: l.addr === 0 ? '0.0.0.0' : formatIpv4(l.addr), family: 'IPv4', port: l.port } : null;
  }

  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
}

/** A `net`-like API over one stack: what the services run on. */
export function createNetApi(stack: Stack): NetApi & {
  createServer(listener?: (s: TcpSocketLike) => void, opts?: ServerOptions): FsServer;
  connect(options: { port: number; host: string; localAddress?: string; noDelay?: boolean }, cb?: () => void): FsSocket;
} {
  return {
    createServer: (listener?: (s: TcpSocketLike) => void, opts?: ServerOptions) =>
      new FsServer(stack, opts ?? {}, listener as ((s: FsSocket) => void) | undefined),
    connect: (options: { port: number; host: string; localAddress?: string; noDelay?: boolean }, cb?: () => void) =>
      new FsSocket(stack, { noDelay: options.noDelay }).connect(options.port, options.host, options.localAddress, cb),
    createUdpSocket: () => new FsUdpSocket(stack),
  };
}
