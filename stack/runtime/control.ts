/**
 * The control plane of a running stack, written once for both runtimes: `faultstack
 * run` in one thread has one stack (a LocalPort), `--shards` has one per worker thread
 * (a port over the worker's messages, sharded.ts). Every handler works on the list of
 * ports: counters and counts are summed, listeners and rows concatenated, a fault or
 * parameter change goes to every stack's copy, connect, routes and unlock ask the
 * first stack or all of them. With --shards the replies also say which shard each part
 * came from (`shards`, `shard` on rows and listeners).
 */
import { clientQueue, type Steering } from '../../drivers/tun/steering';
import type { TunDevice } from '../../drivers/tun/index';
import type { ControlHandler } from '../control/server';
import { STATS_ROWS_PER_EVENT, badArgument, booleanArg, integerArg, requiredString, statsQuery, type StatsQuery } from '../control/protocol';
import type { FaultConfig } from '../faults/config';
import { FAULTS, PARAMS, describeRange } from '../faults/catalogue';
import type { EventLog } from '../faults/events';
import { CodedError } from '../util/errors';
import { formatIpv4, parseIpv4 } from '../wire/addr';
import { neighReply, type EthernetRuntime } from './ethernet';
import type { RuntimeOptions } from './options';
import { memoryAfterGc } from './memory';
import type { ShardSummary, StackShard } from './shard';
import type { ConnectionRow } from './stats';

export type UnlockReply = { released: boolean; holder?: string; heldMs?: number };

/** A stack's summary for `stats`, with what its rows matched and, from a worker, its own memory after a GC. */
export interface ShardStats extends ShardSummary {
  matched: number;
  heapUsedAfterGc?: number;
  arrayBuffersAfterGc?: number;
}

/** How the control plane reaches one stack. */
export interface ShardPort {
  readonly index: number;
  /** The summary; rows matching `q` go to `send` batch by batch (false: the client is gone, stop). */
  stats(args: Record<string, unknown>, q: StatsQuery, send: (rows: ConnectionRow[]) => boolean): Promise<ShardStats>;
  /** Applies a change already validated on the runtime's own configuration to the stack's copy. */
  setFault(id: string, mode: string): Promise<void>;
  setParam(name: string, value: string | number): Promise<void>;
  connect(args: Record<string, unknown>): Promise<unknown>;
  unlock(): Promise<UnlockReply>;
  routes(): Promise<unknown>;
  /** A trace command (trace.ts): start, get, stop or list; null when this stack has no such connection or trace. */
  trace(cmd: string, args: Record<string, unknown>): Promise<unknown>;
}

/** The stack of a one-thread run: called directly, and it shares the runtime's fault configuration. */
export class LocalPort implements ShardPort {
  readonly index = 0;
  constructor(private readonly shard: StackShard) {}
  async stats(_args: Record<string, unknown>, q: StatsQuery, send: (rows: ConnectionRow[]) => boolean): Promise<ShardStats> {
    const summary = this.shard.summary();
    const matched = q.limit > 0 ? (await this.shard.rows(q, send)).matched : 0;
    return { ...summary, matched };
  }
  async setFault(): Promise<void> {
    /* the runtime's configuration is this stack's */
  }
  async setParam(): Promise<void> {
    /* likewise */
  }
  connect(args: Record<string, unknown>): Promise<unknown> {
    return this.shard.connect(args);
  }
  async unlock(): Promise<UnlockReply> {
    return this.shard.unlock();
  }
  async routes(): Promise<unknown> {
    return this.shard.routes();
  }
  async trace(cmd: string, args: Record<string, unknown>): Promise<unknown> {
    return this.shard.trace(cmd, args);
  }
}

export interface ControlView {
  opts: RuntimeOptions;
  tun: TunDevice;
  /** The runtime's fault configuration: validates every change and is what `stats` shows. */
  faults: FaultConfig;
  events: EventLog;
  startedAt: number;
  ports: ShardPort[];
  /** --shards: replies say which shard each part came from. */
  sharded: boolean;
  /** --shards: how the kernel's packets are steered to the shards' queues (drivers/tun/steering.ts). */
  steer?: Steering;
  /** With --tap: the link layer (stats' `link`, `neigh`). */
  link: EthernetRuntime | null;
  /** With --nlb: the NLB host, in one line (the ready line names it). */
  nlb?: string;
  /** With --external-tun: the firewall's external interface (the ready line names it). */
  external?: { tun: string; addr: string; mtu: number; hostNetns: string | null; offloads: string[] };
  /** The link layer's clock for `neigh` and `stats` (the stack's scheduler). */
  now(): number;
  /** With --web: where the web view is, and its token (null on localhost without --web-token). */
  web?: { url: string; token: string | null };
}

/** The shard an active open to args.host goes out from (0 unless client steering says otherwise; a bad host is the shard's to refuse). */
function connectShard(v: ControlView, args: Record<string, unknown>): number {
  // steer is set only on a sharded stack.
  if (v.steer !== 'client' || typeof args.host !== 'string') return 0;
  const addr = parseIpv4(args.host);
  return addr === null ? 0 : clientQueue(addr, v.ports.length);
}

function sumInto(acc: Record<string, number>, add: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(add)) if (typeof v === 'number') acc[k] = (acc[k] ?? 0) + v;
}

function sum(parts: Record<string, unknown>[]): Record<string, number> {
  const acc: Record<string, number> = {};
  for (const p of parts) sumInto(acc, p);
  return acc;
}

/** The events command's arguments, checked. */
function eventsArgs(args: Record<string, unknown>): { limit: number; follow: boolean } {
  return { limit: integerArg(args, 'limit', 1, 100_000) ?? 1000, follow: booleanArg(args, 'follow') ?? false };
}

/** param.set's value: a string or a number; the catalogue checks its range. */
function paramValue(args: Record<string, unknown>): string | number {
  const v = args.value;
  if (typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))) return v;
  throw badArgument(`"value" must be a string or a number (the parameter's new value), not ${v === undefined ? 'missing' : JSON.stringify(v)}`);
}

/**
 * A stats request: the summary of every stack merged, the rows asked for (streamed as
 * { rows } events, at most the limit over all stacks), the memory after a GC if asked.
 */
async function stats(v: ControlView, args: Record<string, unknown>, ctx: { stream(ev: unknown): boolean }): Promise<Record<string, unknown>> {
  const q = statsQuery(args);
  let sent = 0;
  const per = await Promise.all(
    v.ports.map((p) =>
      p.stats(args, q, (rows) => {
        const room = Math.max(0, q.limit - sent);
        if (room === 0) return true;
        const take = rows.length > room ? rows.slice(0, room) : rows;
        sent += take.length;
        for (let i = 0; i < take.length; i += STATS_ROWS_PER_EVENT) {
          const batch = take.length <= STATS_ROWS_PER_EVENT ? take : take.slice(i, i + STATS_ROWS_PER_EVENT);
          if (!ctx.stream({ rows: v.sharded ? batch.map((c) => ({ ...c, shard: p.index })) : batch })) return false;
        }
        return true;
      }),
    ),
  );
  const s = v.faults.snapshot();
  const first = per[0]!;
  const locks = per.map((p) => p.lock);
  const device = sum(per.map((p) => p.device));
  if (v.sharded) device.queues = per.length;
  const out: Record<string, unknown> = {
    tun: v.tun.name,
    addr: `${formatIpv4(v.opts.addr.addr)}/${v.opts.addr.prefix}`,
    uptimeMs: Date.now() - v.startedAt,
    counters: sum(per.map((p) => p.counters)),
    device,
    ...(v.link ? { link: { ...v.link.eth.describe(v.now()), ...v.link.summary() } } : {}),
    offloads: { accepted: v.tun.offloads.names, vnetHdr: v.tun.vnetHdr, tsoSegments: first.tsoSegments, txChecksumOffload: first.txChecksumOffload },
    connectionCount: per.reduce((n, p) => n + p.connectionCount, 0),
    states: sum(per.map((p) => p.states)),
    listeners: per.flatMap((p, i) => (v.sharded ? p.listeners.map((l) => ({ ...l, shard: v.ports[i]!.index })) : p.listeners)),
    // Held if any stack holds it (each shard has its own table and lock).
    lock: locks.find((l) => l.held) ?? locks[0],
    faults: s.modes,
    params: s.params,
    profile: s.profile,
    leak: sum(per.map((p) => p.leak)),
    memory: process.memoryUsage(),
    ...(v.sharded
      ? {
          shards: per.map((p, i) => ({
            shard: v.ports[i]!.index,
            counters: p.counters,
            device: p.device,
            lock: p.lock,
            leak: p.leak,
            connections: p.connectionCount,
            ...(q.gc ? { heapUsedAfterGc: p.heapUsedAfterGc } : {}),
          })),
        }
      : {}),
  };
  if (q.limit > 0) {
    out.rows = { matched: per.reduce((n, p) => n + p.matched, 0), sent, limit: q.limit === Infinity ? 'all' : q.limit };
  }
  if (q.gc) {
    // This thread's heap, and each worker's (a one-thread stack's heap is this one).
    const mine = memoryAfterGc();
    out.heapUsedAfterGc = per.reduce((n, p) => n + (p.heapUsedAfterGc ?? 0), mine.heapUsedAfterGc);
    out.arrayBuffersAfterGc = per.reduce((n, p) => n + (p.arrayBuffersAfterGc ?? 0), mine.arrayBuffersAfterGc);
  }
  return out;
}

/** Every control command a running stack answers, over its ports. */
export function controlHandlers(v: ControlView): Record<string, ControlHandler> {
  const all = <T>(f: (p: ShardPort) => Promise<T>) => Promise.all(v.ports.map(f));
  const shardCount = v.sharded ? { shards: v.ports.length } : {};
  return {
    stats: (args, ctx) => stats(v, args, ctx),
    'fault.set': async (args) => {
      const id = requiredString(args, 'id', 'a fault id or alias such as kb903927'),
        mode = requiredString(args, 'mode', 'off, buggy or hotfixed');
      const previous = v.faults.mode(id);
      v.faults.setMode(id, mode); // validates; throws a usage error for a bad id or mode
      await all((p) => p.setFault(id, mode));
      return { id, mode: v.faults.mode(id), previous, ...shardCount };
    },
    // The catalogue with the live modes and values: what the web view's switches show.
    faults: () => {
      const s = v.faults.snapshot();
      const values = s.params as Record<string, unknown>;
      return {
        profile: s.profile,
        faults: FAULTS.map((f) => ({
          id: f.id,
          alias: f.alias,
          title: f.title,
          article: f.article,
          implemented: f.implemented,
          modes: f.modes,
          mode: (s.modes as Record<string, string>)[f.id],
          params: f.params,
        })),
        params: PARAMS.map((p) => ({
          name: p.name,
          type: p.type,
          default: p.default,
          range: describeRange(p),
          value: values[p.name],
          general: p.general ?? false,
        })),
      };
    },
    'param.set': async (args) => {
      const name = requiredString(args, 'name', 'a parameter name such as SynAttackProtect');
      const value = paramValue(args);
      const before: Record<string, unknown> = { ...v.faults.params };
      const canonical = v.faults.setParam(name, value);
      await all((p) => p.setParam(canonical, value));
      return { name: canonical, value: (v.faults.params as Record<string, unknown>)[canonical], previous: before[canonical], ...shardCount };
    },
    events: async (args, ctx) => {
      const { limit, follow } = eventsArgs(args);
      const recent = v.events.recent(limit);
      if (!follow) return recent;
      for (const e of recent) ctx.stream(e);
      const unsub = v.events.subscribe((e) => {
        if (!ctx.stream(e)) unsub();
      });
      ctx.onClose(unsub);
      await ctx.untilClosed();
      return { followed: true };
    },
    // Active opens go out from the shard the replies will reach: with client steering the
    // shard of the peer's address. With the kernel's flow hash that is not known before the
    // open, and the first shard may not get its replies (docs/design.md).
    connect: (args) => v.ports[connectShard(v, args)]!.connect(args),
    unlock: async () => {
      const per = await all((p) => p.unlock());
      return { ...(per.find((r) => r.released) ?? per[0]!), ...(v.sharded ? { shards: per } : {}) };
    },
    routes: async () => {
      const r = await v.ports[0]!.routes();
      if (!v.sharded) return r;
      const note = `shard 0 of ${v.ports.length}: every shard keeps its own host routes`;
      return Array.isArray(r) ? { routes: r, note } : { ...(r as Record<string, unknown>), note };
    },
    // Traces live in the stack that has the connection: the first one that answers.
    'trace.start': async (args) => {
      // Armed for a connection to come: every shard waits for it (the kernel picks the queue).
      if (args.wait === true) {
        const per = await all((p) => p.trace('start', args));
        const live = per.findIndex((r) => r !== null && !(r as { pending?: boolean }).pending);
        const r = per[live >= 0 ? live : 0] as object;
        return v.sharded ? { ...r, ...(live >= 0 ? { shard: v.ports[live]!.index } : {}) } : r;
      }
      for (const p of v.ports) {
        const r = await p.trace('start', args);
        if (r !== null) return v.sharded ? { ...(r as object), shard: p.index } : r;
      }
      throw new CodedError('ENOENT', `no connection ${String(args.conn)} in the stack (its rows: \`faultstack stats --all\`)`);
    },
    'trace.get': async (args) => {
      const per = await all((p) => p.trace('get', args));
      const isPending = (r: unknown) => (r as { pending?: boolean } | null)?.pending === true;
      const found = per.findIndex((r) => r !== null && !isPending(r));
      if (found >= 0) {
        // An armed trace caught its connection on one shard: the others stop waiting for it.
        await Promise.all(v.ports.map((p, i) => (i !== found && isPending(per[i]) ? p.trace('stop', args) : null)));
        return v.sharded ? { ...(per[found] as object), shard: v.ports[found]!.index } : per[found];
      }
      const armed = per.find(isPending);
      if (armed) return armed;
      throw new CodedError('ENOENT', `no trace of ${String(args.conn)}: start one with \`faultstack trace start CONN\``);
    },
    'trace.stop': async (args) => {
      for (const p of v.ports) {
        const r = await p.trace('stop', args);
        if (r !== null) return r;
      }
      throw new CodedError('ENOENT', `no trace of ${String(args.conn)}`);
    },
    'trace.list': async () => ({
      traces: (await all((p) => p.trace('list', {}))).flatMap((r, i) =>
        (r as Record<string, unknown>[]).map((t) => (v.sharded ? { ...t, shard: v.ports[i]!.index } : t)),
      ),
    }),
    neigh: () => {
      if (!v.link) throw new CodedError('ENOTSUP', `the stack runs on TUN device ${v.tun.name}: no link layer, no neighbours (start it with --tap)`);
      return neighReply(v.link.eth, v.tun.name, v.now());
    },
  };
}

function kernelSide(opts: RuntimeOptions, hostAddr: string | null): string {
  return opts.hostConfig === false || hostAddr === null
    ? 'kernel side left as it is'
    : `kernel side ${hostAddr}${opts.hostNetns ? ` in ${opts.hostNetns}` : ''}`;
}

/** The line `faultstack run` prints once the stack serves (it contains "ready"; --json: one JSON object). */
export function readyLine(v: ControlView): string {
  const { opts, tun } = v;
  const off = tun.offloads;
  const hostAddr = opts.hostAddr ? `${formatIpv4(opts.hostAddr.addr)}/${opts.hostAddr.prefix}` : null;
  const l2 = v.link?.summary();
  const info = {
    ready: true,
    tun: tun.name,
    ...(l2 ? { link: 'tap', ...l2 } : {}),
    addr: `${formatIpv4(opts.addr.addr)}/${opts.addr.prefix}`,
    hostAddr: opts.hostConfig === false ? null : hostAddr,
    mtu: tun.mtu,
    created: tun.created,
    hostConfig: opts.hostConfig !== false,
    // A sharded run's main thread opens the queues without polling them: one fd per shard.
    services: opts.services,
    control: opts.control,
    offloads: off.names,
    queues: v.sharded ? v.ports.length : tun.queueCount,
    ...(v.sharded ? { shards: v.ports.length } : {}),
    profile: v.faults.snapshot().profile,
    pid: process.pid,
    ...(opts.hostNetns ? { hostNetns: opts.hostNetns } : {}),
    ...(v.external ? { external: v.external } : {}),
    ...(v.nlb ? { nlb: v.nlb } : {}),
    ...(v.web ? { web: v.web.url, ...(v.web.token ? { webToken: v.web.token } : {}) } : {}),
  };
  if (opts.json) return JSON.stringify(info);
  const where = l2
    ? `TAP ${info.tun} (mac ${l2.mac}, ${l2.bridge ? `port of bridge ${l2.bridge}${l2.bridgeCreated ? ' (created)' : ''}` : `kernel side ${hostAddr}`}${l2.gateway ? `, gateway ${l2.gateway}` : ''}`
    : `${info.tun} (${kernelSide(opts, info.hostAddr)}`;
  const shards = v.sharded ? `, ${v.ports.length} shards` : '';
  const ext = v.external
    ? `, firewall: external ${v.external.addr} on ${v.external.tun} (mtu ${v.external.mtu}${v.external.hostNetns ? `, kernel side in ${v.external.hostNetns}` : ''}), Firewall Client on ${formatIpv4(opts.addr.addr)}:1745`
    : '';
  return `faultstack ready: ${info.addr} on ${where}, mtu ${info.mtu}, offloads ${off.names.join(',') || 'none'})${shards}${ext}, services ${opts.services.join(',') || 'none'}${v.nlb ? `, ${v.nlb}` : ''}, control ${opts.control}${v.web ? `, web ${v.web.url}${v.web.token ? ` token ${v.web.token}` : ''}` : ''}`;
}
