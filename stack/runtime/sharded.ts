/**
 * `faultstack run --queues N --shards`: the main thread. It opens the multi-queue TUN
 * device without polling it, configures the kernel side, starts one worker per queue
 * (shard-worker.ts: a stack on that queue's fd), runs the control socket over them
 * (control.ts, the same handlers as one thread) and, at shutdown, stops the workers
 * before it closes the fds.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { clientSteeringProgram } from '../../drivers/tun/steering';
import { ControlServer } from '../control/server';
import type { StatsQuery } from '../control/protocol';
import type { EventLog } from '../faults/events';
import { CodedError } from '../util/errors';
import { controlHandlers, readyLine, type ControlView, type ShardPort, type ShardStats, type UnlockReply } from './control';
import { impairUnavailable } from './impair-control';
import { startWeb } from './web';
import { Lifecycle } from './lifecycle';
import type { RuntimeOptions, StackRuntimeHandle } from './options';
import { configureHostLink, faultSetup, hostLinkBefore, openRunTun } from './setup';
import type { ShardWorkerData } from './shard-worker';
import type { ConnectionRow } from './stats';
import { STATS_ROWS_PER_EVENT } from '../control/protocol';

/** A shard worker as the control plane sees it. */
class WorkerPort implements ShardPort {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly exited: Promise<void>;

  constructor(
    readonly index: number,
    readonly worker: Worker,
  ) {
    this.exited = new Promise<void>((r) => worker.once('exit', () => r()));
  }

  call(cmd: string, args: Record<string, unknown> = {}): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, cmd, args });
    });
  }

  /** A reply to one of our calls. */
  settle(id: number, m: Record<string, unknown>): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    const err = m.error as { code: string; message: string } | undefined;
    if (err) p.reject(new CodedError(err.code, err.message));
    else p.resolve(m.result);
  }

  failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  async stats(args: Record<string, unknown>, q: StatsQuery, send: (rows: ConnectionRow[]) => boolean): Promise<ShardStats> {
    // The worker checks the same arguments; Infinity does not survive a structured clone.
    const r = (await this.call('stats', { ...args, ...(q.limit === Infinity ? { all: true } : {}) })) as ShardStats & { rows: ConnectionRow[] };
    const { rows, ...summary } = r;
    for (let i = 0; i < rows.length; i += STATS_ROWS_PER_EVENT) if (!send(rows.slice(i, i + STATS_ROWS_PER_EVENT))) break;
    return summary;
  }
  async setFault(id: string, mode: string): Promise<void> {
    await this.call('fault.set', { id, mode });
  }
  async setParam(name: string, value: string | number): Promise<void> {
    await this.call('param.set', { name, value });
  }
  connect(args: Record<string, unknown>): Promise<unknown> {
    return this.call('connect', args);
  }
  async unlock(): Promise<UnlockReply> {
    return (await this.call('unlock')) as UnlockReply;
  }
  routes(): Promise<unknown> {
    return this.call('routes');
  }
  trace(cmd: string, args: Record<string, unknown>): Promise<unknown> {
    return this.call('trace', { cmd, args });
  }

  /** Asks the worker to stop its stack (at most 5 s), then ends the thread. */
  async stop(): Promise<void> {
    try {
      await Promise.race([this.call('shutdown'), new Promise((r) => setTimeout(r, 5000))]);
    } catch {
      /* it stopped already */
    }
    await this.worker.terminate();
    await this.exited;
  }
}

/** Starts one worker; resolves once its stack serves. Unasked messages (events, device errors) go to onEvent. */
function startShard(index: number, data: ShardWorkerData, onEvent: (m: Record<string, unknown>) => void): Promise<WorkerPort> {
  const port = new WorkerPort(index, new Worker(path.join(__dirname, 'shard-worker.js'), { workerData: data }));
  return new Promise<WorkerPort>((resolve, reject) => {
    let ready = false;
    port.worker.on('message', (m: Record<string, unknown>) => {
      if (typeof m.id === 'number') port.settle(m.id, m);
      else if (m.ready) {
        ready = true;
        resolve(port);
      } else if (m.fatal) reject(new Error(`shard ${index}: ${String(m.fatal)}`));
      else onEvent(m);
    });
    port.worker.once('error', (e) => {
      port.failAll(e);
      if (!ready) reject(e);
      else onEvent({ deviceError: `shard ${index} crashed: ${e.message}` });
    });
    void port.exited.then(() => {
      port.failAll(new CodedError('ESHUTDOWN', `shard ${index} stopped`));
      if (!ready) reject(new Error(`shard ${index} exited while starting`));
    });
  });
}

export async function startShardedRuntime(opts: RuntimeOptions): Promise<StackRuntimeHandle> {
  const life = new Lifecycle();
  try {
    if (opts.link === 'tap' || !opts.hostAddr) throw new CodedError('EINVAL', '--shards runs on a TUN device only');
    // The main thread keeps the fault configuration for validation and display; each shard
    // applies every change to its own copy (the faults' state is per shard).
    const { faults, events, unlogChanges } = faultSetup(opts);
    life.defer(() => events.close());
    life.defer(() => unlogChanges());
    const before = hostLinkBefore(opts);
    const tun = openRunTun(opts, { multiQueue: true, startQueues: false });
    life.defer(() => tun.close());
    // Which queue (so which shard) the kernel's packets take: by peer address unless the
    // kernel's own flow hash was asked for (drivers/tun/steering.ts).
    const steer = opts.shardSteer ?? 'client';
    if (steer === 'client') tun.setSteering(clientSteeringProgram(tun.fds().length));
    const host = configureHostLink(opts, tun, before);
    life.defer(() => host.restore());

    const onShardMessage = (m: Record<string, unknown>) => {
      if (m.event) {
        const e = m.event as { fault?: string; kind: string; message: string; data?: unknown };
        try {
          events.emit({
            ...(e.fault !== undefined ? { fault: e.fault } : {}),
            kind: e.kind,
            message: e.message,
            ...(e.data !== undefined ? { data: e.data } : {}),
          } as Parameters<EventLog['emit']>[0]);
        } catch {
          /* closed */
        }
      } else if (m.deviceError) {
        try {
          events.emit({ kind: 'device-error', message: String(m.deviceError) } as Parameters<EventLog['emit']>[0]);
        } catch {
          /* closed */
        }
        void life.shutdown();
      }
    };
    // The shards stop before the fds close (the lifecycle undoes steps last first).
    const ports: WorkerPort[] = [];
    life.defer(async () => {
      await Promise.all(ports.map((p) => p.stop()));
      ports.length = 0;
    });
    const off = tun.offloads;
    const started = await Promise.allSettled(
      tun.fds().map((fd, i) =>
        startShard(
          i,
          {
            shard: i,
            fd,
            tun: tun.name,
            vnetHdr: tun.vnetHdr,
            gro: tun.gro,
            txThread: tun.txThread,
            mtu: tun.mtu,
            tso4: off.tso4,
            csum: off.csum,
            addr: opts.addr,
            cc: opts.cc,
            profile: opts.profile,
            faults: opts.faults.map((f) => `${f.id}=${f.mode}`),
            params: opts.params.map((p) => `${p.name}=${p.value}`),
            services: opts.services.filter((n) => n !== 'mtls'),
          },
          onShardMessage,
        ),
      ),
    );
    for (const r of started) if (r.status === 'fulfilled') ports.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;

    const view: ControlView = {
      opts,
      tun,
      faults,
      events,
      startedAt: Date.now(),
      ports,
      sharded: true,
      steer,
      link: null,
      now: () => performance.now(),
    };
    const handlers = {
      ...controlHandlers(view),
      ...impairUnavailable('impairments need one stack thread: run without --shards'),
    };
    const control = await ControlServer.start(opts.control, handlers);
    life.defer(() => control.close());
    const web = await startWeb(opts, handlers, life);
    if (web) view.web = web;
    return { readyLine: readyLine(view), closed: life.closed, shutdown: () => life.shutdown() };
  } catch (e) {
    await life.shutdown();
    throw e;
  }
}
