/**
 * The fault event log: what the stack says about *why* it behaves as it does, in the
 * articles' own terms (which threshold triggered SYN attack protection, which lock
 * is held, which ICMP message was ignored at the host-route limit).
 *
 * Events are kept in a bounded ring for the control plane (`recent(n)`), pushed to
 * subscribers as they happen, and optionally appended as JSON lines to a file. File
 * writes are buffered and flushed on a short timer, when the buffer grows, on
 * `close()`, and at process exit, so the tail of a run is never lost.
 */
import * as fs from 'node:fs';
import type { ConfigChange, FaultConfig } from './config';

/** The event kinds the stack emits; their `data` shapes are below. */
export const EventKind = {
  /** SYN attack protection started; data: SynProtectionTriggeredData. */
  SynProtectionTriggered: 'syn-protection-triggered',
  /** Every threshold is back under its limit; data: { halfOpen, halfOpenRetried, portsExhausted }. */
  SynProtectionCleared: 'syn-protection-cleared',
  /** An established connection was reset because the listen backlog was full after the handshake; data: BacklogResetData. */
  BacklogReset: 'backlog-reset',
  /** Buggy path: what a reset connection left allocated and reachable; data: LeakRetainedData. */
  LeakRetained: 'leak-retained',
  /** Buggy path: the connection-table lock was taken and will not be released; data: LockData. */
  LockTakenNotReleased: 'lock-taken-not-released',
  /** The connection-table lock was released (hotfixed path, or by hand from the control plane); data: LockData. */
  LockReleased: 'lock-released',
  /** The host-route count reached MaxIcmpHostRoutes; data: HostRouteLimitData. */
  HostRouteLimitReached: 'hostroute-limit-reached',
  /** An ICMP fragmentation-needed message was ignored because of the limit; data: IcmpIgnoredData. */
  IcmpIgnoredAtLimit: 'icmp-ignored-at-limit',
  /** A fault's mode changed; data: { fault, alias, from, to }. */
  FaultModeChanged: 'fault-mode-changed',
  /** A parameter changed; data: { name, from, to }. */
  ParamChanged: 'param-changed',
  /** A system profile was applied; data: { from, to }. */
  ProfileApplied: 'profile-applied',
  /** Another host's ARP packet claimed one of our addresses (RFC 5227 2.4); data: { address, mac, defended }. */
  ArpConflict: 'arp-conflict',
  /** ARP resolution of a neighbour failed; what waited for it was reported unreachable; data: { address, dropped }. */
  NeighbourFailed: 'neigh-failed',
} as const;
export type EventKindName = (typeof EventKind)[keyof typeof EventKind];

export interface SynProtectionTriggeredData {
  threshold: 'TcpMaxHalfOpen' | 'TcpMaxHalfOpenRetried' | 'TcpMaxPortsExhausted';
  /** The counter's value when it went over. */
  value: number;
  /** The parameter's value. */
  limit: number;
  port?: number;
}
export interface BacklogResetData {
  local: string;
  remote: string;
  backlog: number;
  /** Bytes the client had already sent (its first flight) when it was reset. */
  bytesReceived: number;
}
export interface LeakRetainedData {
  connection: string;
  /** Bytes left reachable by this connection. */
  bytes: number;
  /** Running total of leaked bytes. */
  totalBytes: number;
  /** What stayed reachable: "control block", "receive buffer", "application state"... */
  what: string[];
}
export interface LockData {
  lock: string;
  holder: string;
  since?: string;
  waiters?: number;
}
export interface HostRouteLimitData {
  /** The counter as the stack keeps it (inflated on the buggy path). */
  count: number;
  /** The routes that really exist. */
  routes: number;
  limit: number;
}
export interface IcmpIgnoredData {
  destination: string;
  nextHopMtu: number;
  count: number;
  limit: number;
}

export interface FaultEventInput {
  /** Canonical fault id when the event belongs to one fault. */
  fault?: string;
  kind: string;
  message: string;
  data?: object;
}

export interface FaultEvent {
  seq: number;
  /** ISO-8601 wall time. */
  ts: string;
  fault?: string;
  kind: string;
  message: string;
  data?: object;
}

export type EventListener = (e: FaultEvent) => void;

export interface EventLogOptions {
  /** Events kept in memory (default 10,000). */
  capacity?: number;
  /** Append each event as one JSON line to this file. */
  file?: string;
  /** Longest time an event waits in the file buffer (default 200 ms). */
  flushIntervalMs?: number;
  /** Buffered bytes that trigger an immediate flush (default 64 KiB). */
  flushBytes?: number;
  /** Wall clock, for tests. */
  now?: () => Date;
}

export class EventLog {
  readonly capacity: number;
  private readonly ring: (FaultEvent | undefined)[];
  private count = 0; // events ever emitted, also the last seq
  private readonly listeners = new Set<EventListener>();
  private readonly now: () => Date;
  /** Subscriber exceptions swallowed so that a bad observer cannot break the stack. */
  subscriberErrors = 0;

  private fd: number | null = null;
  private pending: string[] = [];
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly flushIntervalMs: number;
  private readonly flushBytes: number;
  private readonly onExit = (): void => this.flush();
  private closed = false;

  constructor(opts: EventLogOptions = {}) {
    const cap = opts.capacity ?? 10_000;
    if (!Number.isInteger(cap) || cap < 1) throw new RangeError(`EventLog capacity must be a positive integer, got ${cap}`);
    this.capacity = cap;
    this.ring = new Array<FaultEvent | undefined>(cap);
    this.now = opts.now ?? (() => new Date());
    this.flushIntervalMs = opts.flushIntervalMs ?? 200;
    this.flushBytes = opts.flushBytes ?? 64 * 1024;
    if (opts.file !== undefined) {
      this.fd = fs.openSync(opts.file, 'a');
      process.on('exit', this.onExit);
    }
  }

  /** Sequence number of the last event (0 before any). */
  get lastSeq(): number {
    return this.count;
  }

  /** Events currently held in memory. */
  get size(): number {
    return Math.min(this.count, this.capacity);
  }

  emit(input: FaultEventInput): FaultEvent {
    if (this.closed) throw new Error('EventLog: emit after close');
    const seq = ++this.count;
    const ts = this.now().toISOString();
    // Property order is the JSON line's column order: seq, ts, fault, kind, message, data.
    const e: FaultEvent =
      input.fault !== undefined
        ? { seq, ts, fault: input.fault, kind: input.kind, message: input.message }
        : { seq, ts, kind: input.kind, message: input.message };
    if (input.data !== undefined) e.data = input.data;
    this.ring[(seq - 1) % this.capacity] = e;
    if (this.fd !== null) this.queueLine(JSON.stringify(e) + '\n');
    for (const fn of this.listeners) {
      try {
        fn(e);
      } catch {
        this.subscriberErrors++;
      }
    }
    return e;
  }

  /** Calls `fn` for every event from now on; returns the unsubscribe function. */
  subscribe(fn: EventListener): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  /** The last `n` events held (all of them when n is omitted), oldest first. */
  recent(n: number = this.capacity): FaultEvent[] {
    const k = Math.max(0, Math.min(Math.floor(n), this.size));
    const out = new Array<FaultEvent>(k);
    for (let i = 0; i < k; i++) {
      const seq = this.count - k + 1 + i;
      out[i] = this.ring[(seq - 1) % this.capacity] as FaultEvent;
    }
    return out;
  }

  /** Events held with seq greater than `seq`, oldest first (for polling clients). */
  since(seq: number): FaultEvent[] {
    return this.recent(this.count - seq);
  }

  /** Writes everything buffered to the file now. */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.fd === null || this.pending.length === 0) return;
    const data = this.pending.join('');
    this.pending = [];
    this.pendingBytes = 0;
    const buf = Buffer.from(data, 'utf8');
    let off = 0;
    while (off < buf.length) off += fs.writeSync(this.fd, buf, off, buf.length - off);
  }

  /** Flushes and closes the file; further emits throw. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
      process.removeListener('exit', this.onExit);
    }
    this.listeners.clear();
  }

  private queueLine(line: string): void {
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (this.pendingBytes >= this.flushBytes) {
      this.flush();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.flushIntervalMs);
      this.timer.unref();
    }
  }
}

/**
 * Records every configuration change of `cfg` in `log` (fault-mode-changed,
 * param-changed, profile-applied); returns the function that stops it.
 */
export function logConfigChanges(cfg: FaultConfig, log: EventLog): () => void {
  return cfg.onChange((c: ConfigChange) => {
    switch (c.kind) {
      case 'mode':
        log.emit({
          fault: c.fault,
          kind: EventKind.FaultModeChanged,
          message: `${c.fault} (${c.alias}) mode ${c.from} -> ${c.to}`,
          data: { fault: c.fault, alias: c.alias, from: c.from, to: c.to },
        });
        break;
      case 'param':
        log.emit({
          kind: EventKind.ParamChanged,
          message: `${c.name} ${c.from} -> ${c.to}`,
          data: { name: c.name, from: c.from, to: c.to },
        });
        break;
      case 'profile':
        log.emit({
          kind: EventKind.ProfileApplied,
          message: `profile ${c.from ?? '(none)'} -> ${c.to}`,
          data: { from: c.from, to: c.to },
        });
        break;
    }
  });
}
