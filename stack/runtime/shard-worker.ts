/**
 * One stack shard of `faultstack run --queues N --shards`, in a worker thread: a Stack on
 * one TUN queue (an fd the main thread opened and keeps), with its own faults and plain
 * services. The kernel steers each flow to one queue, so each shard sees whole TCP
 * connections. The main thread (stack/runtime/sharded.ts) asks over the message port:
 *   { id, cmd: 'stats' | 'fault.set' | 'param.set' | 'connect' | 'unlock' | 'routes' | 'trace' | 'shutdown', args }
 * and gets { id, result } or { id, error: { code, message } }. Unasked, the worker posts
 * { ready: true }, { fatal: message } (start failed), { event } (every EventLog event) and
 * { deviceError: message } (the queue stopped).
 *
 * It loads the one stack's part of the runtime (shard.ts) and nothing of the one-thread
 * runtime (run.ts), the main thread's control plane, captures, impairments or IPsec.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TunQueue } from '../../drivers/tun/index';
import { RealScheduler } from './scheduler';
import { buildFaultConfig } from '../faults/config';
import { EventLog } from '../faults/events';
import type { CongestionControl, ServiceName } from './options';
import type { Ipv4Cidr } from '../wire/addr';
import { Lifecycle } from './lifecycle';
import { StackShard } from './shard';
import { memoryAfterGc } from './memory';
import type { ConnectionRow } from './stats';
import { statsQuery } from '../control/protocol';

/** What the main thread gives each worker (structured-cloneable). */
export interface ShardWorkerData {
  shard: number;
  fd: number;
  tun: string;
  vnetHdr: boolean;
  /** Receive coalescing without the virtio header (TunOpenOptions.gro). */
  gro: boolean;
  /** Deferred writes (TunOpenOptions.txThread). */
  txThread: boolean;
  mtu: number;
  tso4: boolean;
  csum: boolean;
  addr: Ipv4Cidr;
  cc: CongestionControl;
  profile?: string;
  faults: string[];
  params: string[];
  services: ServiceName[];
}

export interface ShardRequest {
  id: number;
  cmd: string;
  args: Record<string, unknown>;
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('shard-worker: not in a worker thread');
  const d = workerData as ShardWorkerData;
  const life = new Lifecycle();
  try {
    const faults = buildFaultConfig({ profile: d.profile, faults: d.faults, params: d.params });
    const events = new EventLog();
    events.subscribe((event) => port.postMessage({ event }));
    const queue = TunQueue.fromFd(d.fd, {
      name: d.tun,
      vnetHdr: d.vnetHdr,
      gro: d.gro,
      txThread: d.txThread,
      mtu: d.mtu,
      onError: (err) => port.postMessage({ deviceError: `shard ${d.shard}: ${err.message}` }),
    });
    life.defer(() => queue.close());
    const shard = new StackShard(
      {
        device: queue,
        scheduler: new RealScheduler(),
        deviceName: d.tun,
        queues: 1,
        mtu: d.mtu,
        vnetHdr: d.vnetHdr,
        tso4: d.tso4,
        csum: d.csum,
        addr: d.addr,
        cc: d.cc,
        faults,
        events,
        index: d.shard,
      },
      life,
    );
    await shard.startServices(d.services, life, { logPrefix: `shard ${d.shard}: ` });

    const handlers: Record<string, (args: Record<string, unknown>) => unknown> = {
      // The summary, the rows that match (at most the limit) and this thread's memory after a GC if asked.
      stats: async (args) => {
        const q = statsQuery(args);
        const rows: ConnectionRow[] = [];
        const matched =
          q.limit > 0
            ? (
                await shard.rows(q, (b) => {
                  rows.push(...b);
                  return true;
                })
              ).matched
            : 0;
        return { ...shard.summary(), matched, rows, ...(q.gc ? memoryAfterGc() : {}) };
      },
      // Already validated by the main thread on its copy of the configuration.
      'fault.set': (args) => {
        faults.setMode(String(args.id ?? ''), String(args.mode ?? ''));
        return { id: args.id, mode: faults.mode(String(args.id ?? '')) };
      },
      'param.set': (args) => ({ name: faults.setParam(String(args.name ?? ''), args.value as string | number) }),
      connect: (args) => shard.connect(args),
      unlock: () => shard.unlock(),
      routes: () => shard.routes(),
      trace: (args) => shard.trace(String(args.cmd ?? ''), (args.args ?? {}) as Record<string, unknown>),
      shutdown: async () => {
        await life.shutdown();
        return { stopped: true };
      },
    };
    port.on('message', (m: ShardRequest) => {
      const fn = handlers[m.cmd];
      if (!fn) {
        port.postMessage({ id: m.id, error: { code: 'EINVAL', message: `unknown shard command ${m.cmd}` } });
        return;
      }
      Promise.resolve()
        .then(() => fn(m.args ?? {}))
        .then(
          (result) => port.postMessage({ id: m.id, result }),
          (e: Error & { code?: string }) => port.postMessage({ id: m.id, error: { code: e?.code ?? 'EIO', message: e?.message ?? String(e) } }),
        );
    });
    port.postMessage({ ready: true });
  } catch (e) {
    await life.shutdown();
    port.postMessage({ fatal: (e as Error)?.message ?? String(e) });
  }
}

void main();
