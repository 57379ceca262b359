/**
 * Discard service (RFC 863), TCP port 9 by default: reads and drops everything,
 * closes its side when the peer does.
 */
import type { NetApi } from '../api/net-api';
import { endThis, startTcpService, type ServiceHandle, type TcpServiceOptions } from './echo';

export interface DiscardHandle extends ServiceHandle {
  stats(): { connections: number; bytes: number };
}

export function startDiscard(api: NetApi, opts: TcpServiceOptions = {}): DiscardHandle {
  let bytes = 0;
  // Shared listeners, no closures per connection (an idle one keeps what it was given).
  const onData = (chunk: Buffer): void => {
    bytes += chunk.length;
  };
  const svc = startTcpService(api, 'discard', { port: opts.port ?? 9, host: opts.host, log: opts.log }, (socket) => {
    socket.on('data', onData);
    socket.on('end', endThis);
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
