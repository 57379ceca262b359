/**
 * NetApi backed by the kernel's TCP/IP (node:net and node:dgram).
 *
 * Services are developed and tested against this implementation with real
 * clients (on 127.0.0.1 or inside a network namespace); the same service code
 * then runs unchanged on faultstack's userspace sockets.
 */
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import type { NetApi, TcpServerLike, TcpServerOptions, TcpSocketLike, UdpSocketLike } from './net-api';

export const kernelNet: NetApi = {
  createServer(listener?: (socket: TcpSocketLike) => void, options: TcpServerOptions = {}): TcpServerLike {
    const server = net.createServer({ noDelay: options.noDelay ?? false, allowHalfOpen: options.allowHalfOpen ?? false });
    const allocate = options.connectionState;
    if (allocate) {
      // The kernel tells the application at accept: the state lives as long as the socket.
      server.on('connection', (socket: net.Socket) => {
        const st = allocate({ remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0 });
        socket.once('close', () => st.release());
      });
    }
    if (listener) server.on('connection', (socket: net.Socket) => listener(socket));
    return server;
  },

  connect(options: { port: number; host: string; localAddress?: string; noDelay?: boolean }, connectListener?: () => void): TcpSocketLike {
    const opts: net.NetConnectOpts = { port: options.port, host: options.host, noDelay: options.noDelay ?? false };
    if (options.localAddress !== undefined) opts.localAddress = options.localAddress;
    return net.connect(opts, connectListener);
  },

  createUdpSocket(): UdpSocketLike {
    return dgram.createSocket({ type: 'udp4' });
  },
};
