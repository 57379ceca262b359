/**
 * The subset of Node's `net`/`dgram` API that faultstack's services are written
 * against. Node's own `net` and `dgram` modules satisfy it, and so do faultstack's
 * sockets (stack/api/net.ts, stack/api/dgram.ts): a service can be tested against
 * the kernel and then run unchanged on the userspace stack.
 */
import type { Duplex } from 'node:stream';
import type { EventEmitter } from 'node:events';

export interface TcpSocketLike extends Duplex {
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
  setNoDelay(noDelay?: boolean): this;
  setKeepAlive(enable?: boolean, initialDelay?: number): this;
  destroy(error?: Error): this;
  /** Retransmitted segments and congestion control (faultstack's sockets; Node's have no TCP_INFO). */
  tcpInfo?(): { retransmits: number; congestion: string } | null;
}

export interface TcpServerLike extends EventEmitter {
  listen(port: number, host?: string, backlog?: number, cb?: () => void): this;
  listen(options: { port: number; host?: string; backlog?: number }, cb?: () => void): this;
  close(cb?: (err?: Error) => void): this;
  address(): { address: string; family: string; port: number } | string | null;
  /** faultstack's servers: a new listen backlog while listening (Node's cannot change it). */
  setBacklog?(backlog: number): void;
  /** faultstack's servers: a new accept pace (TcpServerOptions.acceptIntervalMs). */
  setAcceptInterval?(ms: number): void;
}

/**
 * What a server's application allocates per connection (TcpServerOptions.connectionState).
 * faultstack's TCP layer knows the same shape as ApplicationState (tcp/listener.ts).
 */
export interface ConnectionState {
  /** Bytes it holds, as the application counts them. */
  readonly bytes: number;
  release(): void;
}

/** The peer a connection state is allocated for. */
export interface PeerInfo {
  remoteAddress: string;
  remotePort: number;
}

export interface UdpSocketLike extends EventEmitter {
  bind(port?: number, address?: string, cb?: () => void): this;
  send(msg: Buffer | Uint8Array, port: number, address: string, cb?: (err: Error | null, bytes?: number) => void): void;
  close(cb?: () => void): this;
  address(): { address: string; family: string; port: number };
}

/**
 * Options a listening server gives the sockets it accepts, as `net.createServer(options)`
 * does: `noDelay` disables Nagle on each of them from the start (node:http's own server
 * asks for it, see stack/services/http.ts), `allowHalfOpen` keeps the writable side open
 * after the peer's FIN.
 */
export interface TcpServerOptions {
  noDelay?: boolean;
  allowHalfOpen?: boolean;
  /**
   * faultstack's servers: accept one connection per interval instead of as fast as
   * possible (a slow application, whose backlog fills). Node's net accepts at once.
   */
  acceptIntervalMs?: number;
  /**
   * The application's per-connection state, allocated once the application is told of a
   * connection and released when its socket closes. On Node's net and on faultstack's
   * Linux listener it is told when it accepts; a Windows listener with delayed
   * indication (SynAttackProtect 2) tells it before it accepts, and a connection reset
   * then takes the state with it (KB 903927, docs/design.md "Hooks").
   */
  connectionState?: (peer: PeerInfo) => ConnectionState;
}

export interface NetApi {
  createServer(listener?: (socket: TcpSocketLike) => void, options?: TcpServerOptions): TcpServerLike;
  connect(options: { port: number; host: string; localAddress?: string; noDelay?: boolean }, connectListener?: () => void): TcpSocketLike;
  createUdpSocket(): UdpSocketLike;
}
