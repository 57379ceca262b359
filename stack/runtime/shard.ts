/**
 * One stack as the runtime runs it: the Stack on its device with its faults installed,
 * its socket API, its services, and what the control plane asks of it (its stats
 * summary and rows, its status page, connect, unlock, routes). `faultstack run` in one
 * thread has one of these; `--shards` has one per worker thread (shard-worker.ts). The
 * control plane (control.ts) reaches it directly or over the worker's message port;
 * nothing here is written again for the sharded case.
 *
 * This module is what a shard worker loads: it must not import run.ts, the sharded
 * main thread, captures, impairments, Ethernet, IPsec or the control server
 * (.dependency-cruiser.cjs checks that).
 */
import { txQueueLen } from '../../drivers/tun/index';
import type { Device } from '../../drivers/device';
import { Stack, type Scheduler, type StackOptions } from '../stack';
import { createNetApi } from '../api/net';
import type { NetApi } from '../api/net-api';
import type { FaultConfig } from '../faults/config';
import type { EventLog } from '../faults/events';
import { installFaults, type InstalledFaults } from '../faults/install';
import { CodedError } from '../util/errors';
import { MAX_TIMEOUT_MS, badArgument, integerArg, requiredString, type StatsQuery } from '../control/protocol';
import { rxQueueBytes, stackOffloads } from './setup';
import { connectionCounts, listenerRows, streamRows, cachedSummary, type ConnectionRow } from './stats';
import type { Lifecycle } from './lifecycle';
import { TraceRegistry } from './trace';
import type { CongestionControl, ServiceName } from './options';

/** What one stack reports for `stats`: counts and counters, never rows (those are streamed). */
export interface ShardSummary {
  counters: Record<string, number>;
  device: Record<string, number>;
  tsoSegments: number;
  txChecksumOffload: boolean;
  connectionCount: number;
  states: Record<string, number>;
  listeners: Record<string, number>[];
  lock: { name: string; held: boolean; [k: string]: unknown };
  leak: Record<string, number>;
}

export interface StackShardOptions {
  /** The device the stack sends on (the outermost wrapper: its stats() sum the chain's). */
  device: Device;
  scheduler: Scheduler;
  /** The TUN/TAP device's name (its txqueuelen bounds the receive windows). */
  deviceName: string;
  /** The device's txqueuelen when it cannot be read by name here (--host-netns moved it away). */
  txQueueLen?: number;
  /** Queues of the device this stack reads (1 for a shard). */
  queues: number;
  mtu: number;
  vnetHdr: boolean;
  tso4: boolean;
  csum: boolean;
  addr: { addr: number; prefix: number };
  cc: CongestionControl;
  /** Stack options a link layer implies (stack/runtime/ethernet.ts). */
  extra?: Partial<StackOptions>;
  faults: FaultConfig;
  events: EventLog;
  /** The shard's number with --shards (status pages say which shard answered); null in one thread. */
  index: number | null;
}

export interface ServiceHandle {
  close(): Promise<void> | void;
}

/**
 * The services' own log lines (a test that started or failed and why, a listener's
 * error) go to stderr with the time: without them an iperf3 test the server ended
 * showed only the client's side ("received an unknown control message"), and not the
 * server's reason ("client did not end the test in time").
 */
export function serviceLog(prefix: string): (line: string) => void {
  return (line) => {
    process.stderr.write(`${new Date().toISOString()} ${prefix}${line}\n`);
  };
}

export class StackShard {
  readonly stack: Stack;
  readonly installed: InstalledFaults;
  /** The stack's own sockets. */
  readonly api: ReturnType<typeof createNetApi>;
  readonly faults: FaultConfig;
  readonly events: EventLog;
  readonly index: number | null;
  readonly startedAt = Date.now();
  /** Per-connection traces taken on request (trace.ts). */
  readonly traces: TraceRegistry;
  private readonly device: Device;

  /** Builds the stack and installs its faults; `life` closes the stack at shutdown. */
  constructor(o: StackShardOptions, life: Lifecycle) {
    this.device = o.device;
    this.faults = o.faults;
    this.events = o.events;
    this.index = o.index;
    this.stack = new Stack({
      device: o.device,
      scheduler: o.scheduler,
      address: o.addr.addr,
      prefix: o.addr.prefix,
      mtu: o.mtu,
      tcp: { congestionControl: o.cc },
      ...stackOffloads(o.vnetHdr, o.tso4, o.csum),
      ...(o.extra ?? {}),
      rxQueueBytes: rxQueueBytes(o.txQueueLen ?? txQueueLen(o.deviceName), o.queues, o.mtu, o.vnetHdr, o.tso4),
    });
    this.installed = installFaults(this.stack, o.faults, o.events);
    life.defer(() => this.stack.close());
    this.api = createNetApi(this.stack);
    this.traces = new TraceRegistry(this.stack);
    life.defer(() => this.traces.close());
  }

  summary(): ShardSummary {
    const s = this.stack;
    const counts = connectionCounts(s);
    return {
      counters: { ...s.counters },
      device: this.device.stats(),
      tsoSegments: s.tsoSegmentsMax,
      txChecksumOffload: s.txCsumOffload,
      connectionCount: counts.total,
      states: counts.states,
      listeners: listenerRows(s),
      ...this.faultSections(),
    };
  }

  /** The fault modules' sections of `stats`: KB 297040's lock, KB 903927's leak. */
  private faultSections(): Pick<ShardSummary, 'lock' | 'leak'> {
    const { lock, leak } = this.installed.stats();
    return { lock, leak: leak as unknown as Record<string, number> };
  }

  /** The rows matching `q`, handed to `send` a batch at a time (stats.ts: streamRows). */
  rows(q: StatsQuery, send: (rows: ConnectionRow[]) => boolean): Promise<{ matched: number; sent: number }> {
    return streamRows(this.stack, q, send);
  }

  /**
   * The status page served through the stack (GET / on the http service): counts per
   * state, the listeners' queues, counters and faults. Bounded in size and cost, and it
   * names no peer: any client of the page may read it.
   */
  status(): Record<string, unknown> {
    const s = this.stack;
    const snap = this.faults.snapshot();
    const counts = connectionCounts(s);
    const { lock, leak } = this.faultSections();
    return {
      ...(this.index !== null ? { shard: this.index } : {}),
      uptimeMs: Date.now() - this.startedAt,
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

  /**
   * Starts the named services. The plain ones run on `api` (which may carry connection
   * toxics); mtls keeps the stack's own sockets (it needs FsServer's accept pacing).
   * Each is loaded only when asked for.
   */
  /** `logPrefix` goes in front of the services' log lines (which shard said it). */
  async startServices(names: readonly ServiceName[], life: Lifecycle, o: { api?: NetApi; certDir?: string; logPrefix?: string } = {}): Promise<void> {
    const handles: ServiceHandle[] = [];
    life.defer(async () => {
      for (const h of handles) await h.close();
    });
    const plain = names.filter((n): n is Exclude<ServiceName, 'mtls'> => n !== 'mtls');
    if (plain.length > 0) {
      const svc = require('../services/index') as typeof import('../services/index');
      const statusProvider = cachedSummary(() => this.status());
      handles.push(
        ...(await svc.startServices(o.api ?? this.api, plain, {
          statusProvider,
          faults: this.faults,
          events: this.events,
          log: serviceLog(o.logPrefix ?? ''),
        })),
      );
    }
    if (names.includes('mtls')) {
      const { startMtls } = require('../services/mtls') as typeof import('../services/mtls');
      if (!o.certDir) throw new Error('mtls needs a certificate directory');
      const h = startMtls(this.api, { faults: this.faults, certDir: o.certDir });
      handles.push(h);
      await h.ready;
    }
  }

  connect(args: Record<string, unknown>): Promise<unknown> {
    return connectOnce(this.stack, this.api, args);
  }

  unlock(): { released: boolean; holder?: string; heldMs?: number } {
    return this.installed.faults.kb297040.unlock();
  }

  routes(): unknown {
    return this.stack.pmtu.describe(this.stack.now);
  }

  /** A trace command (start, get, stop, list): null when the connection or its trace is not in this stack. */
  trace(cmd: string, args: Record<string, unknown>): unknown {
    return this.traces.handle(cmd, args);
  }
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
    } catch (e) {
      reject(e);
      return;
    }
    // Without a limit from the caller: the active open's whole SYN schedule (the first
    // timeout doubling after each of synRetries retransmissions) and 2 s more, so a hung
    // attempt (KB 297040) is reported when a healthy one would have failed.
    const cfg = s.tcp.config;
    let scheduleMs = 0;
    for (let k = 0; k <= cfg.synRetries; k++) scheduleMs += Math.min(cfg.synRtoMs * 2 ** k, cfg.maxRtoMs);
    const timeoutMs = timeoutArg ?? scheduleMs + 2000;
    if (!Number.isInteger(port)) {
      reject(badArgument('"port" is required: an integer from 1 to 65535'));
      return;
    }
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
