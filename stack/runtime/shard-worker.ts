/**
 * One stack shard of `faultstack run --queues N --shards`, in a worker thread: a Stack on
 * one TUN queue (an fd the main thread opened and keeps), with its own faults and plain
 * services. The kernel steers each flow to one queue, so each shard sees whole TCP
 * connections. The main thread (stack/runtime/run.ts) asks over the message port:
 *   { id, cmd: 'stats' | 'fault.set' | 'param.set' | 'connect' | 'unlock' | 'routes' | 'shutdown', args }
 * and gets { id, result } or { id, error: { code, message } }. Unasked, the worker posts
 * { ready: true }, { fatal: message } (start failed), { event } (every EventLog event) and
 * { deviceError: message } (the queue stopped).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TunQueue, txQueueLen } from '../../drivers/tun/index';
import { Stack } from '../stack';
import { RealScheduler } from './scheduler';
import { createNetApi } from '../api/net';
import { buildFaultConfig } from '../faults/config';
import { EventLog } from '../faults/events';
import { installFaults } from '../faults/install';
import { rxQueueBytes, stackOffloads } from './setup';
import type { CongestionControl } from '../../bin/cli/run-options';
import type { Ipv4Cidr } from '../wire/addr';
import { connectOnce, memoryAfterGc, serviceLog } from './run';
import { cachedSummary, collectRows, connectionCounts, listenerRows } from './stats';
import { statsQuery } from '../control/protocol';

/** What the main thread gives each worker (structured-cloneable). */
export interface ShardWorkerData {
  shard: number;
  fd: number;
  tun: string;
  vnetHdr: boolean;
  mtu: number;
  tso4: boolean;
  csum: boolean;
  addr: Ipv4Cidr;
  cc: CongestionControl;
  profile?: string;
  faults: string[];
  params: string[];
  services: string[];
}

export interface ShardRequest { id: number; cmd: string; args: Record<string, unknown> }

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('shard-worker: not in a worker thread');
  const d = workerData as ShardWorkerData;
  const cleanups: (() => void | Promise<void>)[] = [];
  const cleanup = async () => { for (const f of cleanups.reverse()) { try { await f(); } catch { /* best effort */ } } cleanups.length = 0; };
  try {
    const faults = buildFaultConfig({ profile: d.profile, faults: d.faults, params: d.params });
    const events = new EventLog();
    events.subscribe((event) => port.postMessage({ event }));
    const queue = TunQueue.fromFd(d.fd, {
      name: d.tun, vnetHdr: d.vnetHdr, mtu: d.mtu,
      onError: (err) => port.postMessage({ deviceError: `shard ${d.shard}: ${err.message}` }),
    });
    cleanups.push(() => queue.close());
    const stack = new Stack({
      device: queue, scheduler: new RealScheduler(), address: d.addr.addr, prefix: d.addr.prefix, mtu: d.mtu,
      tcp: { congestionControl: d.cc },
      ...stackOffloads(d.vnetHdr, d.tso4, d.csum),
      rxQueueBytes: rxQueueBytes(txQueueLen(d.tun), 1, d.mtu, d.vnetHdr, d.tso4),
    });
    const installed = installFaults(stack, faults, events);
    cleanups.push(() => stack.close());
    const api = createNetApi(stack);
    const startedAt = Date.now();

    const summary = () => {
      const s = stack;
      const counts = connectionCounts(s);
      return {
        shard: d.shard,
        uptimeMs: Date.now() - startedAt,
        counters: { ...s.counters },
        device: queue.stats(),
        connectionCount: counts.total,
        states: counts.states,
        listeners: listenerRows(s),
        ...installed.stats(), // lock (KB 297040), leak (KB 903927)
        tsoSegments: s.tsoSegmentsMax,
        txChecksumOffload: s.txCsumOffload,
        memory: process.memoryUsage(),
      };
    };
    /** The main thread's stats request: the summary, the rows that match (at most the limit), the memory after a GC if asked. */
    const stats = async (args: Record<string, unknown>) => {
      const q = statsQuery(args);
      const out: Record<string, unknown> = summary();
      if (q.limit > 0) { const r = await collectRows(stack, q); out.rows = r.rows; out.matched = r.matched; }
      if (q.gc) Object.assign(out, memoryAfterGc());
      return out;
    };
    // The status page names no peer: counts, queues, counters, lock state.
    const status = cachedSummary(() => {
      const { connectionCount, states, listeners, counters, lock } = summary();
      return { shard: d.shard, connections: connectionCount, states, listeners, counters, lock: { held: lock.held, heldForMs: lock.heldForMs } };
    });

    if (d.services.length > 0) {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const svc = require('../services/index') as typeof import('../services/index');
      const names = d.services.filter((n): n is import('../services/index').ServiceName => svc.isServiceName(n));
      const started = await svc.startServices(api, names, { statusProvider: status, faults, events, log: serviceLog(`shard ${d.shard}: `) });
      cleanups.push(async () => { for (const h of started) await h.close(); });
    }

    let stopping = false;
    const handlers: Record<string, (args: Record<string, unknown>) => unknown> = {
      stats: (args) => stats(args),
      'fault.set': (args) => { faults.setMode(String(args.id ?? ''), String(args.mode ?? '')); return { id: args.id, mode: faults.mode(String(args.id ?? '')) }; },
      'param.set': (args) => ({ name: faults.setParam(String(args.name ?? ''), args.value as string | number) }),
      connect: (args) => connectOnce(stack, api, args),
      unlock: () => installed.faults.kb297040.unlock(),
      routes: () => stack.pmtu.describe(stack.now),
      shutdown: async () => {
        if (!stopping) { stopping = true; await cleanup(); }
        return { stopped: true };
      },
    };
    port.on('message', (m: ShardRequest) => {
      const fn = handlers[m.cmd];
      if (!fn) { port.postMessage({ id: m.id, error: { code: 'EINVAL', message: `unknown shard command ${m.cmd}` } }); return; }
      Promise.resolve()
        .then(() => fn(m.args ?? {}))
        .then(
          (result) => port.postMessage({ id: m.id, result }),
          (e: Error & { code?: string }) => port.postMessage({ id: m.id, error: { code: e?.code ?? 'EIO', message: e?.message ?? String(e) } }),
        );
    });
    port.postMessage({ ready: true });
  } catch (e) {
    await cleanup();
    port.postMessage({ fatal: (e as Error)?.message ?? String(e) });
  }
}

void main();
