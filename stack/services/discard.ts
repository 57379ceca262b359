/**
 * Discard service (RFC 863), TCP port 9 by default: reads and drops everything,
 * closes its side when the peer does.
 */
import type { NetApi } from '../api/net-api';
import { startTcpService, type ServiceHandle, type TcpServiceOptions } from './echo';

export interface DiscardHandle extends ServiceHandle {
  stats(): { connections: number; bytes: number };
}

export function startDiscard(api: NetApi, opts: TcpServiceOptions = {}): DiscardHandle {
  let bytes = 0;
  const svc = startTcpService(api, 'discard', { port: opts.port ?? 9, host: opts.host, log: opts.log }, (socket) => {
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    socket.on('end', () => socket.end());
  });
  return {
    name: 'discard',
    ready: svc.ready,
    port: svc.port,
    connections: svc.connections,
    close: svc.close,
    stats: () => ({ connections: svc.accepted(), bytes }),
  };
}
