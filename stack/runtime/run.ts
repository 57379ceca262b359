/**
 * `faultstack run`: puts the stack on a real TUN device. Opens (or creates) the
 * device, configures the kernel side, starts the stack, its services and the
 * control socket, and tears everything down on shutdown.
 */
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import type { RunOptions, StackRuntimeHandle } from '../../bin/cli/run-options';
import { type TunDevice, txQueueLen } from '../../drivers/tun/index';
import { PcapDevice, wallClock } from '../../drivers/pcap';
import { ImpairDevice } from '../../drivers/impair';
import { Impairments } from '../impair/registry';
import { ToxicRegistry } from '../impair/toxics';
import { impairHandlers, impairUnavailable } from './impair-control';
import { removeBridge } from '../../drivers/tap/index';
import type { Device } from '../../drivers/device';
import { Stack } from '../stack';
import { RealScheduler } from './scheduler';
import { createNetApi } from '../api/net';
import type { NetApi } from '../api/net-api';
import { formatIpv4 } from '../wire/addr';
import type { FaultConfig } from '../faults/config';
import type { EventLog } from '../faults/events';
import { ControlServer, ControlHandler } from '../control/server';
import { installFaults, InstalledFaults } from '../faults/install';
import { CodedError } from '../util/errors';
import { Worker } from 'node:worker_threads';
import { configureHostLink, faultSetup, hostLinkBefore, openRunTun, rxQueueBytes, stackOffloads } from './setup';
import { EthernetRuntime, ethernetRuntime, neighReply, setupTapKernelSide } from './ethernet';
import { cachedSummary, connectionCounts, listenerRows, streamRows } from './stats';
import { MAX_TIMEOUT_MS, STATS_ROWS_PER_EVENT, badArgument, booleanArg, integerArg, requiredString, statsQuery, type StatsQuery } from '../control/protocol';
import type { ShardWorkerData } from './shard-worker';
import { attachIpsec } from './ipsec-setup';
import { attachFirewall, configureHostNetns } from './firewall-setup';

let gcFn: (() => void) | null = null;
/** Heap in use after a full garbage collection (what a leak keeps reachable). */
export function heapUsedAfterGc(): number {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
  return process.memoryUsage().heapUsed;
}

/**
 * Both halves of what live objects hold after a full collection: the V8 heap, and the
 * ArrayBuffer backing stores (every Buffer's bytes) that V8 keeps outside it. A leaked
 * KB 903927 negotiation state is mostly the latter (two 16.5 KiB record buffers).
 */
export function memoryAfterGc(): { heapUsedAfterGc: number; arrayBuffersAfterGc: number } {
  const heap = heapUsedAfterGc();
  return { heapUsedAfterGc: heap, arrayBuffersAfterGc: process.memoryUsage().arrayBuffers };
}

function kernelSide(opts: RunOptions, hostAddr: string | null): string {
  return opts.hostConfig === false || hostAddr === null ? 'kernel side left as it is' : `kernel side ${hostAddr}${opts.hostNetns ? ` in ${opts.hostNetns}` : ''}`;
}

export interface Runtime {
  stack: Stack;
  device: Device;
  tun: TunDevice;
  /** With --tap: the Ethernet interface between the device and the stack. */
  link: EthernetRuntime | null;
  faults: FaultConfig;
  events: EventLog;
  installed: InstalledFaults;
  startedAt: number;
  impair: Impairments;
}

export async function startStackRuntime(opts: RunOptions): Promise<StackRuntimeHandle> {
  if (opts.shards) return startShardedRuntime(opts);
  const { faults, events, unlogChanges } = faultSetup(opts);
  const tap = opts.link === 'tap';
  // A TUN device made beforehand is used as it is and left as it was (hostLinkBefore records it).
  const before = tap ? null : hostLinkBefore(opts);
  const tun = openRunTun(opts, tap ? { mode: 'tap' } : {});
  const cleanups: (() => void | Promise<void>)[] = [];
  const cleanup = async () => { for (const f of cleanups.reverse()) { try { await f(); } catch { /* best effort */ } } };
  try {
    // TAP: a bridge port (the bridge is removed after the TAP, and only if we made it), or an addressed link.
    const bridge = tap ? setupTapKernelSide(opts, tun) : null;
    if (bridge?.created) cleanups.push(() => removeBridge(bridge.name));
    cleanups.push(() => tun.close());
    // Read in this namespace, before --host-netns moves the device away.
    const txq = txQueueLen(tun.name);
    if (!tap) {
      const hostAddrText = opts.hostAddr ? `${formatIpv4(opts.hostAddr.addr)}/${opts.hostAddr.prefix}` : null;
      const host = opts.hostNetns ? configureHostNetns(tun, opts.hostNetns, hostAddrText, opts.mtu) : configureHostLink(opts, tun, before);
      cleanups.push(() => host.restore());
    }
    // TUN: device <- --pcap-wire <- impairments <- --pcap <- stack (docs/impairments.md).
    // TAP: device <- --pcap-wire (frames) <- Ethernet <- impairments <- --pcap <- stack:
    // impairments act on IP packets on both kinds of device.
    const scheduler = new RealScheduler();
    const pcapClock = wallClock(); // one clock for both captures, so their times compare
    let device: Device = tun;
    if (opts.pcapWire) {
      const wire = new PcapDevice(device, { path: opts.pcapWire, snaplen: opts.pcapSnaplen ?? 262144, now: pcapClock });
      device = wire;
      cleanups.push(() => wire.close());
    }
    const link = tap ? ethernetRuntime(opts, device, scheduler, events, bridge) : null;
    if (link) { device = link.eth; cleanups.push(() => link.eth.close()); }
    const impairDevice = new ImpairDevice(device, scheduler);
    device = impairDevice;
    cleanups.push(() => impairDevice.close());
    if (opts.pcap) {
      const pcap = new PcapDevice(device, {
        path: opts.pcap, snaplen: opts.pcapSnaplen ?? 262144, now: pcapClock,
        ...(opts.pcapSizeMB !== undefined ? { rotateBytes: opts.pcapSizeMB * 1_000_000 } : {}),
        ...(opts.pcapFiles !== undefined ? { maxFiles: opts.pcapFiles } : {}),
      });
      device = pcap;
      cleanups.push(() => pcap.close());
    }
    const stack = new Stack({
      device, scheduler, address: opts.addr.addr, prefix: opts.addr.prefix, mtu: tun.mtu,
      tcp: { congestionControl: opts.cc },
      ...stackOffloads(tun.vnetHdr, tun.offloads.tso4, tun.offloads.csum),
      ...(link ? link.stackOptions : {}),
      rxQueueBytes: rxQueueBytes(txq, tun.queueCount, tun.mtu, tun.vnetHdr, tun.offloads.tso4),
      // A firewall's interface answers for its own address only; the rest is forwarded.
      ...(opts.firewall ? { acceptAnyAddress: false } : {}),
    });
    const installed = installFaults(stack, faults, events);
    cleanups.push(() => stack.close());
    link?.attach(stack);
    const ipsec = attachIpsec(stack, opts, events);
    if (ipsec) cleanups.push(() => ipsec.close());
    const toxics = new ToxicRegistry(scheduler);
    const impair = new Impairments({ device: impairDevice, toxics, now: () => scheduler.now(), events });
    for (const words of opts.impair ?? []) impair.add(words);
    const rt: Runtime = { stack, device, tun, link, faults, events, installed, startedAt: Date.now(), impair };

    const api = createNetApi(stack);
    const services = await startNamedServices(toxics.wrapApi(api), api, opts, rt);
    cleanups.push(async () => { for (const s of services) await s.close(); });

    const fw = await attachFirewall(stack, opts, faults, events, scheduler);
    if (fw) cleanups.push(() => fw.close());

    const control = await ControlServer.start(opts.control, { ...controlHandlers(rt, opts, api), ...(ipsec?.handlers ?? {}), ...(fw?.handlers ?? {}) });
    cleanups.push(() => control.close());
    cleanups.push(() => unlogChanges());
    cleanups.push(() => events.close());

    let resolveClosed!: () => void;
    const closed = new Promise<void>((r) => { resolveClosed = r; });
    let shuttingDown = false;
    const shutdown = async () => {
      if (shuttingDown) return closed;
      shuttingDown = true;
      await cleanup();
      resolveClosed();
    };
    tun.onError = (err) => { events.emit({ kind: 'device-error', message: err.message }); void shutdown(); };
    const off = tun.offloads;
    const hostAddr = opts.hostAddr ? `${formatIpv4(opts.hostAddr.addr)}/${opts.hostAddr.prefix}` : null;
    const l2 = link?.summary();
    const info = {
      ready: true, tun: tun.name, ...(l2 ? { link: 'tap', ...l2 } : {}), addr: `${formatIpv4(opts.addr.addr)}/${opts.addr.prefix}`,
      hostAddr: opts.hostConfig === false ? null : hostAddr, mtu: tun.mtu, created: tun.created,
      hostConfig: opts.hostConfig !== false,
      services: opts.services, control: opts.control, offloads: off.names, queues: tun.queueCount,
      profile: faults.snapshot().profile, pid: process.pid,
      ...(opts.hostNetns ? { hostNetns: opts.hostNetns } : {}),
      ...(fw && opts.firewall ? { external: { tun: fw.tun.name, addr: `${formatIpv4(opts.firewall.addr.addr)}/${opts.firewall.addr.prefix}`, mtu: fw.tun.mtu, hostNetns: opts.firewall.hostNetns ?? null, offloads: fw.tun.offloads.names } } : {}),
    };
    const where = l2
      ? `TAP ${info.tun} (mac ${l2.mac}, ${l2.bridge ? `port of bridge ${l2.bridge}${l2.bridgeCreated ? ' (created)' : ''}` : `kernel side ${hostAddr}`}${l2.gateway ? `, gateway ${l2.gateway}` : ''}`
      : `${info.tun} (${kernelSide(opts, info.hostAddr)}`;
    const readyLine = opts.json
      ? JSON.stringify(info)
      : `faultstack ready: ${info.addr} on ${where}, mtu ${info.mtu}, offloads ${off.names.join(',') || 'none'})${info.external ? `, firewall: external ${info.external.addr} on ${info.external.tun} (mtu ${info.external.mtu}${info.external.hostNetns ? `, kernel side in ${info.external.hostNetns}` : ''}), Firewall Client on ${formatIpv4(opts.addr.addr)}:1745` : ''}, services ${opts.services.join(',') || 'none'}, control ${opts.control}`;
    return Object.assign({ readyLine, closed, shutdown }, { runtime: rt, api });
  } catch (e) {
    await cleanup();
    throw e;
  }
}

interface ServiceHandle { close(): Promise<void> | void }

/**
 * The services' own log lines (a test that started or failed and why, a listener's
 * error) go to stderr with the time: without them an iperf3 test the server ended
 * showed only the client's side ("received an unknown control message"), and not the
 * server's reason ("client did not end the test in time").
 */
export function serviceLog(prefix: string): (line: string) => void {
  return (line) => { process.stderr.write(`${new Date().toISOString()} ${prefix}${line}\n`); };
}

/** `api` carries the toxics; mtls keeps the stack's own sockets (it needs FsServer's accept pacing). */
async function startNamedServices(api: NetApi, raw: ReturnType<typeof createNetApi>, opts: RunOptions, rt: Runtime): Promise<ServiceHandle[]> {
  const plain = opts.services.filter((n) => n !== 'mtls');
  const handles: ServiceHandle[] = [];
  if (plain.length > 0) {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const svc = require('../services/index') as typeof import('../services/index');
    const status = cachedSummary(() => statusSummary(rt));
    const started = await svc.startServices(api, plain, { statusProvider: status, faults: rt.faults, events: rt.events, log: serviceLog('') });
    handles.push(...started);
  }
  if (opts.services.includes('mtls')) {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { startMtls } = require('../services/mtls') as typeof import('../services/mtls');
    const certDir = process.env.FAULTSTACK_CERT_DIR || path.join(path.dirname(opts.control), 'certs');
    const h = startMtls(raw, { faults: rt.faults, certDir });
    await h.ready;
    handles.push(h);
  }
  return handles;
}

/**
 * The stats summary: counts (connections per state, half-open entries, listeners'
 * queues), counters, lock, faults. No connection rows: those are streamed on request
 * (stack/runtime/stats.ts).
 */
function statsSummary(rt: Runtime, opts: RunOptions) {
  const s = rt.stack;
  const snap = rt.faults.snapshot();
  const counts = connectionCounts(s);
  return {
    tun: rt.tun.name,
    addr: `${formatIpv4(opts.addr.addr)}/${opts.addr.prefix}`,
    uptimeMs: Date.now() - rt.startedAt,
    counters: { ...s.counters },
    device: rt.device.stats(),
    ...(rt.link ? { link: { ...rt.link.eth.describe(s.scheduler.now()), ...rt.link.summary() } } : {}),
    offloads: { accepted: rt.tun.offloads.names, vnetHdr: rt.tun.vnetHdr, tsoSegments: s.tsoSegmentsMax, txChecksumOffload: s.txCsumOffload },
    connectionCount: counts.total,
    states: counts.states,
    listeners: listenerRows(s),
    ...rt.installed.stats(), // lock (KB 297040), leak (KB 903927)
    faults: snap.modes,
    params: snap.params,
    profile: snap.profile,
    memory: process.memoryUsage(),
  };
}

/**
 * The status page served through the stack (GET / on the http service): counts per
 * state, the listeners' queues, counters and faults. Bounded in size and cost, and it
 * names no peer: any client of the page may read it.
 */
function statusSummary(rt: Runtime): Record<string, unknown> {
  const s = rt.stack;
  const snap = rt.faults.snapshot();
  const counts = connectionCounts(s);
  const { lock, leak } = rt.installed.stats();
  return {
    uptimeMs: Date.now() - rt.startedAt,
    profile: snap.profile,
    faults: snap.modes,
    connections: counts.total,
    states: counts.states,
    listeners: listenerRows(s),
    lock: { held: lock.held, heldForMs: lock.heldForMs, blockedPackets: lock.blockedPackets },
    leak,
    counters: { ...s.counters },
  };
}

/** A stats request: the summary, the rows asked for (streamed as { rows } events), the memory after a GC if asked. */
async function statsReply(summary: () => Record<string, unknown>, q: StatsQuery, rows: (send: (r: unknown[]) => boolean) => Promise<{ matched: number; sent: number }>, ctx: { stream(ev: unknown): boolean }) {
  const out: Record<string, unknown> = summary();
  if (q.limit > 0) {
    const r = await rows((batch) => ctx.stream({ rows: batch }));
    out.rows = { matched: r.matched, sent: r.sent, limit: q.limit === Infinity ? 'all' : q.limit };
  }
  if (q.gc) Object.assign(out, memoryAfterGc());
  return out;
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

function controlHandlers(rt: Runtime, opts: RunOptions, api: ReturnType<typeof createNetApi>): Record<string, ControlHandler> {
  const s = rt.stack;
  return {
    stats: (args, ctx) => {
      const q = statsQuery(args);
      return statsReply(() => statsSummary(rt, opts), q, (send) => streamRows(s, q, send), ctx);
    },
    'fault.set': (args) => {
      const id = requiredString(args, 'id', 'a fault id or alias such as kb903927'), mode = requiredString(args, 'mode', 'off, buggy or hotfixed');
      const previous = rt.faults.mode(id);
      rt.faults.setMode(id, mode);
      return { id, mode: rt.faults.mode(id), previous };
    },
    'param.set': (args) => {
      const name = requiredString(args, 'name', 'a parameter name such as SynAttackProtect');
      const value = paramValue(args);
      const before: Record<string, unknown> = { ...rt.faults.params };
      const canonical = rt.faults.setParam(name, value);
      return { name: canonical, value: (rt.faults.params as Record<string, unknown>)[canonical], previous: before[canonical] };
    },
    events: async (args, ctx) => {
      const { limit, follow } = eventsArgs(args);
      const recent = rt.events.recent(limit);
      if (!follow) return recent;
      for (const e of recent) ctx.stream(e);
      const unsub = rt.events.subscribe((e) => { if (!ctx.stream(e)) unsub(); });
      ctx.onClose(unsub);
      await ctx.untilClosed();
      return { followed: true };
    },
    connect: (args) => connectOnce(s, api, args),
    ...rt.installed.control, // unlock (KB 297040)
    routes: () => s.pmtu.describe(s.now),
    ...impairHandlers(rt.impair),
    neigh: () => {
      if (!rt.link) throw new CodedError('ENOTSUP', `the stack runs on TUN device ${rt.tun.name}: no link layer, no neighbours (start it with --tap)`);
      return neighReply(rt.link.eth, rt.tun.name, s.scheduler.now());
    },
  };
}


/**
 * The control plane's `connect`: one active open from the stack; resolves with the time it
 * took, rejects with the error or a timeout that names a held connection-table lock.
 */
export function connectOnce(s: Stack, api: ReturnType<typeof createNetApi>, args: Record<string, unknown>): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let host: string, port: number, timeoutArg: number | undefined;
    try {
      host = requiredString(args, 'host', 'an IPv4 address such as 198.18.0.99');
      port = integerArg(args, 'port', 1, 65535) ?? NaN;
      // Node arms no timer past 2^31-1 ms: a larger one would fire at once.
      timeoutArg = integerArg(args, 'timeoutMs', 1, MAX_TIMEOUT_MS, 'ms');
    } catch (e) { reject(e); return; }
    // Without a limit from the caller: the active open's whole SYN schedule (the first
    // timeout doubling after each of synRetries retransmissions) and 2 s more, so a hung
    // attempt (KB 297040) is reported when a healthy one would have failed.
    const cfg = s.tcp.config;
    let scheduleMs = 0;
    for (let k = 0; k <= cfg.synRetries; k++) scheduleMs += Math.min(cfg.synRtoMs * 2 ** k, cfg.maxRtoMs);
    const timeoutMs = timeoutArg ?? scheduleMs + 2000;
    if (!Number.isInteger(port)) { reject(badArgument('"port" is required: an integer from 1 to 65535')); return; }
    const t0 = Date.now();
    const sock = api.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      const why = s.hooks.gate.reason() ?? 'the stack may be hung: see `faultstack stats`';
      reject(new CodedError('ETIMEDOUT', `no outcome within ${timeoutMs} ms (${why})`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      const localPort = sock.localPort;
      sock.destroy();
      resolve({ connected: true, ms: Date.now() - t0, localPort });
    });
    sock.once('error', (err: Error & { code?: string }) => {
      clearTimeout(timer);
      reject(new CodedError(err.code ?? 'EIO', err.message));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// --shards: one stack per TUN queue, each in a worker thread (stack/runtime/shard-worker.ts)

interface ShardHandle {
  index: number;
  worker: Worker;
  call(cmd: string, args?: Record<string, unknown>): Promise<unknown>;
  exited: Promise<void>;
}

function startShard(index: number, data: ShardWorkerData, onEvent: (m: Record<string, unknown>) => void): Promise<ShardHandle> {
  const worker = new Worker(path.join(__dirname, 'shard-worker.js'), { workerData: data });
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const exited = new Promise<void>((r) => worker.once('exit', () => r()));
  const failAll = (e: Error) => { for (const p of pending.values()) p.reject(e); pending.clear(); };
  return new Promise<ShardHandle>((resolve, reject) => {
    let ready = false;
    worker.on('message', (m: Record<string, unknown>) => {
      if (typeof m.id === 'number') {
        const p = pending.get(m.id);
        if (!p) return;
        pending.delete(m.id);
        const err = m.error as { code: string; message: string } | undefined;
        if (err) p.reject(new CodedError(err.code, err.message));
        else p.resolve(m.result);
      } else if (m.ready) {
        ready = true;
        resolve({
          index, worker, exited,
          call: (cmd, args = {}) => new Promise((res, rej) => {
            const id = nextId++;
            pending.set(id, { resolve: res, reject: rej });
            worker.postMessage({ id, cmd, args });
          }),
        });
      } else if (m.fatal) {
        reject(new Error(`shard ${index}: ${String(m.fatal)}`));
      } else {
        onEvent(m);
      }
    });
    worker.once('error', (e) => { failAll(e); if (!ready) reject(e); else onEvent({ deviceError: `shard ${index} crashed: ${e.message}` }); });
    void exited.then(() => { failAll(new CodedError('ESHUTDOWN', `shard ${index} stopped`)); if (!ready) reject(new Error(`shard ${index} exited while starting`)); });
  });
}

function sumInto(acc: Record<string, number>, add: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(add)) if (typeof v === 'number') acc[k] = (acc[k] ?? 0) + v;
}

async function startShardedRuntime(opts: RunOptions): Promise<StackRuntimeHandle> {
  // The main thread keeps the fault configuration for validation and display; each shard
  // applies every change to its own copy (the faults' state is per shard).
  const { faults, events, unlogChanges } = faultSetup(opts);
  const before = hostLinkBefore(opts);
  const tun = openRunTun(opts, { multiQueue: true, startQueues: false });
  const shards: ShardHandle[] = [];
  const stopShards = async () => {
    await Promise.all(shards.map(async (sh) => {
      try { await Promise.race([sh.call('shutdown'), new Promise((r) => setTimeout(r, 5000))]); } catch { /* it stopped already */ }
      await sh.worker.terminate();
      await sh.exited;
    }));
    shards.length = 0;
  };
  // Reverse order: the control server first, then the shards, then the fds (tun.close).
  const cleanups: (() => void | Promise<void>)[] = [() => tun.close(), () => unlogChanges(), () => events.close(), stopShards];
  const cleanup = async () => { for (const f of cleanups.reverse()) { try { await f(); } catch { /* best effort */ } } cleanups.length = 0; };
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => { resolveClosed = r; });
  let shuttingDown = false;
  const shutdown = async () => {
    if (shuttingDown) return closed;
    shuttingDown = true;
    await cleanup();
    resolveClosed();
  };
  try {
    if (opts.link === 'tap' || !opts.hostAddr) throw new CodedError('EINVAL', '--shards runs on a TUN device only');
    const host = configureHostLink(opts, tun, before);
    // Runs after the shards stopped, before the fds close (cleanups run in reverse).
    cleanups.splice(1, 0, () => host.restore());
    const off = tun.offloads;
    const onShardMessage = (m: Record<string, unknown>) => {
      if (m.event) {
        const e = m.event as { fault?: string; kind: string; message: string; data?: unknown };
        try { events.emit({ ...(e.fault !== undefined ? { fault: e.fault } : {}), kind: e.kind, message: e.message, ...(e.data !== undefined ? { data: e.data } : {}) } as Parameters<EventLog['emit']>[0]); } catch { /* closed */ }
      } else if (m.deviceError) {
        try { events.emit({ kind: 'device-error', message: String(m.deviceError) } as Parameters<EventLog['emit']>[0]); } catch { /* closed */ }
        void shutdown();
      }
    };
    const fds = tun.fds();
    const started = await Promise.allSettled(fds.map((fd, i) => startShard(i, {
      shard: i, fd, tun: tun.name, vnetHdr: tun.vnetHdr, mtu: tun.mtu, tso4: off.tso4, csum: off.csum,
      addr: opts.addr, cc: opts.cc, profile: opts.profile,
      faults: opts.faults.map((f) => `${f.id}=${f.mode}`), params: opts.params.map((p) => `${p.name}=${p.value}`),
      services: opts.services.filter((n) => n !== 'mtls'),
    }, onShardMessage)));
    for (const r of started) if (r.status === 'fulfilled') shards.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;

    const startedAt = Date.now();
    const all = (cmd: string, args: Record<string, unknown> = {}) => Promise.all(shards.map((sh) => sh.call(cmd, args)));
    const handlers: Record<string, ControlHandler> = {
      stats: async (args, ctx) => {
        const q = statsQuery(args);
        // The shards check the same arguments; Infinity does not survive a structured clone.
        const per = (await all('stats', { ...args, ...(q.limit === Infinity ? { all: true } : {}) })) as Record<string, unknown>[];
        const counters: Record<string, number> = {};
        const device: Record<string, number> = {};
        const leak: Record<string, number> = {};
        const states: Record<string, number> = {};
        let heap = 0, abufs = 0, connectionCount = 0;
        const locks = per.map((p) => p.lock as { held?: boolean });
        for (const p of per) {
          sumInto(counters, p.counters as Record<string, unknown>);
          sumInto(device, p.device as Record<string, unknown>);
          sumInto(leak, p.leak as Record<string, unknown>);
          sumInto(states, p.states as Record<string, unknown>);
          connectionCount += Number(p.connectionCount ?? 0);
          heap += Number(p.heapUsedAfterGc ?? 0);
          abufs += Number(p.arrayBuffersAfterGc ?? 0);
        }
        device.queues = per.length;
        const snap = faults.snapshot();
        const out: Record<string, unknown> = {
          tun: tun.name,
          addr: `${formatIpv4(opts.addr.addr)}/${opts.addr.prefix}`,
          uptimeMs: Date.now() - startedAt,
          counters,
          device,
          offloads: { accepted: off.names, vnetHdr: tun.vnetHdr, tsoSegments: per[0]?.tsoSegments, txChecksumOffload: per[0]?.txChecksumOffload },
          connectionCount,
          states,
          listeners: per.flatMap((p) => (p.listeners as Record<string, unknown>[]).map((l) => ({ ...l, shard: p.shard }))),
          // Held if any shard holds it (each shard has its own table and lock).
          lock: locks.find((l) => l.held) ?? locks[0],
          faults: snap.modes,
          params: snap.params,
          profile: snap.profile,
          leak,
          memory: process.memoryUsage(),
          shards: per.map((p) => ({
            shard: p.shard, counters: p.counters, device: p.device, lock: p.lock, leak: p.leak,
            connections: p.connectionCount, ...(q.gc ? { heapUsedAfterGc: p.heapUsedAfterGc } : {}),
          })),
        };
        if (q.limit > 0) {
          let matched = 0, sent = 0;
          for (const p of per) {
            matched += Number(p.matched ?? 0);
            const rows = ((p.rows as Record<string, unknown>[] | undefined) ?? []).slice(0, Math.max(0, q.limit - sent));
            for (let i = 0; i < rows.length; i += STATS_ROWS_PER_EVENT) {
              ctx.stream({ rows: rows.slice(i, i + STATS_ROWS_PER_EVENT).map((c) => ({ ...c, shard: p.shard })) });
            }
            sent += rows.length;
          }
          out.rows = { matched, sent, limit: q.limit === Infinity ? 'all' : q.limit };
        }
        if (q.gc) {
          const mine = memoryAfterGc();
          out.heapUsedAfterGc = mine.heapUsedAfterGc + heap;
          out.arrayBuffersAfterGc = mine.arrayBuffersAfterGc + abufs;
        }
        return out;
      },
      'fault.set': async (args) => {
        const id = requiredString(args, 'id', 'a fault id or alias such as kb903927'), mode = requiredString(args, 'mode', 'off, buggy or hotfixed');
        const previous = faults.mode(id);
        faults.setMode(id, mode); // validates; throws a usage error for a bad id or mode
        await all('fault.set', { id, mode });
        return { id, mode: faults.mode(id), previous, shards: shards.length };
      },
      'param.set': async (args) => {
        const name = requiredString(args, 'name', 'a parameter name such as SynAttackProtect');
        const value = paramValue(args);
        const canonical = faults.setParam(name, value);
        await all('param.set', { name: canonical, value });
        return { name: canonical, value: (faults.params as Record<string, unknown>)[canonical], shards: shards.length };
      },
      events: async (args, ctx) => {
        const { limit, follow } = eventsArgs(args);
        const recent = events.recent(limit);
        if (!follow) return recent;
        for (const e of recent) ctx.stream(e);
        const unsub = events.subscribe((e) => { if (!ctx.stream(e)) unsub(); });
        ctx.onClose(unsub);
        await ctx.untilClosed();
        return { followed: true };
      },
      // Active opens go out from shard 0; the kernel steers the replies of that flow to a
      // queue by its hash, which need not be queue 0 (then the open fails: see docs/design.md).
      connect: (args) => shards[0]!.call('connect', args),
      unlock: async () => {
        const per = (await all('unlock')) as { released: boolean; holder?: string; heldMs?: number }[];
        const hit = per.find((r) => r.released);
        return { ...(hit ?? { released: false }), shards: per };
      },
      routes: async () => {
        const r = await shards[0]!.call('routes');
        const note = `shard 0 of ${shards.length}: every shard keeps its own host routes`;
        return Array.isArray(r) ? { routes: r, note } : { ...(r as Record<string, unknown>), note };
      },
      ...impairUnavailable('impairments need one stack thread: run without --shards'),
    };
    const control = await ControlServer.start(opts.control, handlers);
    cleanups.push(() => control.close());

    const info = {
      ready: true, tun: tun.name, addr: `${formatIpv4(opts.addr.addr)}/${opts.addr.prefix}`,
      hostAddr: opts.hostConfig === false ? null : `${formatIpv4(opts.hostAddr.addr)}/${opts.hostAddr.prefix}`, mtu: tun.mtu, created: tun.created,
      hostConfig: opts.hostConfig !== false,
      services: opts.services, control: opts.control, offloads: off.names, queues: fds.length, shards: shards.length,
      profile: faults.snapshot().profile, pid: process.pid,
    };
    const readyLine = opts.json
      ? JSON.stringify(info)
      : `faultstack ready: ${info.addr} on ${info.tun} (${kernelSide(opts, info.hostAddr)}, mtu ${info.mtu}, offloads ${off.names.join(',') || 'none'}), ${shards.length} shards, services ${opts.services.join(',') || 'none'}, control ${opts.control}`;
    return { readyLine, closed, shutdown };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
