/**
 * Echo service (RFC 862) on TCP and UDP, port 7 by default.
 *
 * This file also holds the small scaffolding every TCP service shares
 * (`startTcpService`, `ServiceHandle`): listen on a NetApi server, track the
 * connections, close everything on shutdown. It only uses the NetApi interface,
 * so it runs on the kernel (kernelNet) and on faultstack's sockets alike.
 */
import type { NetApi, TcpServerLike, TcpServerOptions, TcpSocketLike, UdpSocketLike } from '../api/net-api';

export type LogFn = (line: string) => void;

/** What every started service returns. */
export interface ServiceHandle {
  readonly name: string;
  /** Resolves once the service listens; rejects if it could not (port in use...). */
  readonly ready: Promise<void>;
  /** The TCP port actually bound (useful with port 0); 0 before `ready`. */
  port(): number;
  /** Open TCP connections right now. */
  connections(): number;
  /** Stops listening, destroys open connections; resolves when all is closed. */
  close(): Promise<void>;
}

export interface TcpServiceOptions {
  port?: number;
  host?: string;
  log?: LogFn;
}

export interface TcpService extends ServiceHandle {
  readonly server: TcpServerLike;
  /** Total connections accepted since start. */
  accepted(): number;
}

function boundPort(addr: ReturnType<TcpServerLike['address']>): number {
  return addr && typeof addr === 'object' ? addr.port : 0;
}

/** A listen() that resolves on success and rejects on the first 'error'. */
function listenOn(server: TcpServerLike, port: number, host: string | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    const opts: { port: number; host?: string } = { port };
    if (host !== undefined) opts.host = host;
    server.listen(opts, () => {
      server.removeListener('error', onError);
      resolve();
    });
  });
}

/**
 * Listens on `port` and hands every accepted socket to `onSocket`. Sockets are
 * tracked so close() can destroy them; a socket error never escapes as an
 * uncaught exception (it is logged, the socket is destroyed).
 */
export function startTcpService(
  api: NetApi,
  name: string,
  opts: { port: number; host?: string; log?: LogFn; server?: TcpServerOptions },
  onSocket: (socket: TcpSocketLike) => void,
): TcpService {
  const log = opts.log ?? ((): void => undefined);
  const sockets = new Set<TcpSocketLike>();
  let acceptedCount = 0;
  let closing = false;
  let closePromise: Promise<void> | null = null;

  // One pair of handlers for every socket (an event listener's `this` is its socket): no
  // closures per connection, which an idle connection would carry for its whole life.
  function onSocketError(this: TcpSocketLike, err: Error): void {
    log(`${name}: connection ${this.remoteAddress ?? '?'}:${this.remotePort ?? '?'} error: ${err.message}`);
    this.destroy();
  }
  function onSocketClose(this: TcpSocketLike): void {
    sockets.delete(this);
  }
  const server = api.createServer((socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    acceptedCount++;
    sockets.add(socket);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    try {
      onSocket(socket);
    } catch (err) {
      log(`${name}: handler failed: ${(err as Error).message}`);
      socket.destroy();
    }
  }, opts.server);

  const ready = listenOn(server, opts.port, opts.host).then(() => {
    server.on('error', (err: Error) => log(`${name}: server error: ${err.message}`));
    log(`${name}: listening on tcp port ${boundPort(server.address())}`);
  });
  // Avoid an unhandled rejection if nobody awaits `ready`; callers still see it.
  ready.catch(() => undefined);

  return {
    name,
    server,
    ready,
    port: () => boundPort(server.address()),
    connections: () => sockets.size,
    accepted: () => acceptedCount,
    close(): Promise<void> {
      if (closePromise) return closePromise;
      closing = true;
      closePromise = new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        sockets.clear();
        ready.then(
          () => server.close(() => resolve()),
          () => resolve(), // never listened: nothing to close
        );
      });
      return closePromise;
    },
  };
}

/**
 * Copies everything read back to the writer, honouring backpressure, and
 * half-closes when the peer does.
 */
function echoSocket(socket: TcpSocketLike, onData: (this: TcpSocketLike, chunk: Buffer) => void): void {
  socket.on('data', onData);
  socket.on('drain', resumeThis);
  socket.on('end', endThis);
}

/** Shared listeners (`this` is the socket that emitted). */
function resumeThis(this: TcpSocketLike): void {
  this.resume();
}
export function endThis(this: TcpSocketLike): void {
  this.end();
}

export interface EchoOptions extends TcpServiceOptions {
  /** Also serve UDP echo on the same port number (default true). */
  udp?: boolean;
}

export interface EchoHandle extends ServiceHandle {
  /** UDP port bound (0 if UDP is off or not bound yet). */
  udpPort(): number;
  stats(): { tcpConnections: number; tcpBytes: number; udpDatagrams: number; udpBytes: number };
}

export function startEcho(api: NetApi, opts: EchoOptions = {}): EchoHandle {
  const log = opts.log ?? ((): void => undefined);
  const port = opts.port ?? 7;
  let tcpBytes = 0;
  let udpDatagrams = 0;
  let udpBytes = 0;

  function onData(this: TcpSocketLike, chunk: Buffer): void {
    tcpBytes += chunk.length;
    if (!this.write(chunk)) this.pause();
  }
  const tcp = startTcpService(api, 'echo', { port, host: opts.host, log }, (socket) => echoSocket(socket, onData));

  let udp: UdpSocketLike | null = null;
  let udpBound = false;
  let udpReady: Promise<void> = Promise.resolve();
  if (opts.udp !== false) {
    const sock = api.createUdpSocket();
    udp = sock;
    udpReady = new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      sock.once('error', onError);
      // UDP echo binds the port TCP got, so port 0 gives one port number for both.
      tcp.ready.then(
        () => {
          if (udp !== sock) return reject(new Error('echo: closed before udp bind'));
          sock.bind(tcp.port(), opts.host, () => {
            sock.removeListener('error', onError);
            udpBound = true;
            sock.on('error', (err: Error) => log(`echo: udp error: ${err.message}`));
            log(`echo: listening on udp port ${sock.address().port}`);
            resolve();
          });
        },
        (err: Error) => reject(err),
      );
    });
    udpReady.catch(() => undefined);
    sock.on('message', (msg: Buffer, rinfo: { address: string; port: number }) => {
      udpDatagrams++;
      udpBytes += msg.length;
      sock.send(msg, rinfo.port, rinfo.address, (err) => {
        if (err) log(`echo: udp send to ${rinfo.address}:${rinfo.port} failed: ${err.message}`);
      });
    });
  }

  const ready = Promise.all([tcp.ready, udpReady]).then(() => undefined);
  ready.catch(() => undefined);

  return {
    name: 'echo',
    ready,
    port: tcp.port,
    connections: tcp.connections,
    udpPort: () => (udp && udpBound ? udp.address().port : 0),
    stats: () => ({ tcpConnections: tcp.accepted(), tcpBytes, udpDatagrams, udpBytes }),
    async close(): Promise<void> {
      const closeUdp = new Promise<void>((resolve) => {
        if (!udp) return resolve();
        const sock = udp;
        udp = null; // also stops a bind that has not happened yet
        try {
          sock.close(() => resolve());
        } catch {
          resolve(); // already closed (e.g. after a failed bind)
        }
      });
      await Promise.all([tcp.close(), closeUdp]);
    },
  };
}
