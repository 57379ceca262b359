/**
 * Per-connection traces (`faultstack trace`, the web view's time-sequence and cwnd/RTT
 * graphs): on request, a connection gets an observer (stack/tcp/observer.ts) that keeps
 *   - a sample each time one of SND.UNA, SND.NXT, RCV.NXT, cwnd, ssthresh, SRTT, RTO or
 *     the bytes in flight changed, with the stack's time (ms);
 *   - each data segment (and FIN) sent: its sequence number, length and whether it was
 *     a retransmission (what tcptrace and Wireshark's Stevens graph draw).
 * Sequence numbers are relative to the ISS (ours) and the IRS (the peer's), as Wireshark
 * shows them. Both logs are rings of a bounded size in typed arrays (nothing allocated
 * per sample): a long transfer keeps its latest part and says how much it dropped.
 * Traces outlive their connection (the end of a transfer is what one looks at), up to
 * MAX_TRACES per stack; the oldest finished one goes first.
 */
import type { Stack } from '../stack';
import type { TcpConnection } from '../tcp/connection';
import type { ConnectionObserver } from '../tcp/observer';
import { type Seq, seqSize } from '../wire/seq';
import { formatIpv4, parseIpv4 } from '../wire/addr';
import { CodedError } from '../util/errors';
import { badArgument, booleanArg, integerArg, requiredString } from '../control/protocol';

export const DEFAULT_TRACE_SAMPLES = 20_000;
export const MAX_TRACE_SAMPLES = 200_000;
/** Traces a stack keeps at once (live and finished). */
export const MAX_TRACES = 16;

/** The sample fields, in the order of a row of the ring. */
export const SAMPLE_FIELDS = ['t', 'una', 'nxt', 'rcvNxt', 'cwnd', 'ssthresh', 'srtt', 'rto', 'inflight'] as const;
const NS = SAMPLE_FIELDS.length;
export const SEGMENT_FIELDS = ['t', 'seq', 'len', 'retrans'] as const;
const NG = SEGMENT_FIELDS.length;

export type TraceSample = Record<(typeof SAMPLE_FIELDS)[number], number>;
export interface TraceSegment {
  t: number;
  seq: number;
  len: number;
  retrans: boolean;
}

/** What `trace.get` answers (and `faultstack trace --json` prints). */
export interface TraceReply {
  conn: string;
  local: string;
  peer: string;
  state: string;
  active: boolean;
  /** The stack's time (ms) when the trace started; samples' `t` count from it. */
  startedAt: number;
  mss: number;
  capacity: number;
  samples: TraceSample[];
  segments: TraceSegment[];
  /** Oldest entries overwritten by newer ones (the ring was full). */
  droppedSamples: number;
  droppedSegments: number;
  retransmissions: number;
  /** Armed for a connection that does not exist yet (trace.start with wait): nothing recorded so far. */
  pending?: boolean;
  shard?: number;
}

/** A bounded ring of fixed-width numeric rows. */
class Ring {
  private readonly data: Float64Array;
  private next = 0;
  count = 0;
  dropped = 0;
  constructor(
    readonly width: number,
    readonly capacity: number,
  ) {
    this.data = new Float64Array(width * capacity);
  }
  /** The row to fill (the oldest one is overwritten when the ring is full). */
  push(): number {
    const at = this.next * this.width;
    this.next = (this.next + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
    else this.dropped++;
    return at;
  }
  set(at: number, i: number, v: number): void {
    this.data[at + i] = v;
  }
  /** Rows oldest first. */
  rows<T>(make: (d: Float64Array, at: number) => T): T[] {
    const out: T[] = [];
    const first = this.count < this.capacity ? 0 : this.next;
    for (let k = 0; k < this.count; k++) out.push(make(this.data, ((first + k) % this.capacity) * this.width));
    return out;
  }
}

export class ConnectionTrace implements ConnectionObserver {
  readonly samples: Ring;
  readonly segments: Ring;
  retransmissions = 0;
  active = true;
  /** Last values recorded, to keep only changes. */
  private readonly last = new Float64Array(NS).fill(NaN);
  private readonly cur = new Float64Array(NS);
  readonly id: string;
  stateAtEnd = '';

  constructor(
    readonly conn: TcpConnection,
    readonly startedAt: number,
    capacity: number,
  ) {
    this.samples = new Ring(NS, capacity);
    this.segments = new Ring(NG, capacity);
    this.id = connId(conn);
  }

  private rel(s: Seq): number {
    return seqSize(this.conn.iss, s);
  }

  update(c: TcpConnection, now: number): void {
    const v = this.cur;
    v[1] = this.rel(c.sndUna);
    v[2] = this.rel(c.sndNxt);
    v[3] = seqSize(c.irs, c.rcvNxt);
    v[4] = c.cc.cwnd;
    v[5] = c.cc.ssthresh;
    v[6] = c.srtt;
    v[7] = c.rto;
    v[8] = c.flight;
    const l = this.last;
    let changed = false;
    for (let i = 1; i < NS; i++)
      if (v[i] !== l[i]) {
        changed = true;
        break;
      }
    if (!changed) return;
    const at = this.samples.push();
    this.samples.set(at, 0, now - this.startedAt);
    for (let i = 1; i < NS; i++) {
      this.samples.set(at, i, v[i]!);
      l[i] = v[i]!;
    }
    if (c.isClosed()) this.finish();
  }

  sent(_c: TcpConnection, seq: Seq, len: number, retransmission: boolean, now: number): void {
    const at = this.segments.push();
    this.segments.set(at, 0, now - this.startedAt);
    this.segments.set(at, 1, this.rel(seq));
    this.segments.set(at, 2, len);
    this.segments.set(at, 3, retransmission ? 1 : 0);
    if (retransmission) this.retransmissions++;
  }

  /** Detaches from the connection (stopped, or the connection closed); the record stays. */
  finish(): void {
    if (!this.active) return;
    this.active = false;
    this.stateAtEnd = this.conn.stateName;
    if (this.conn.observer === this) this.conn.observer = null;
  }

  reply(): TraceReply {
    const c = this.conn;
    return {
      conn: this.id,
      local: `${formatIpv4(c.localAddr)}:${c.localPort}`,
      peer: `${formatIpv4(c.remoteAddr)}:${c.remotePort}`,
      state: this.active ? c.stateName : this.stateAtEnd,
      active: this.active,
      startedAt: this.startedAt,
      mss: c.mss,
      capacity: this.samples.capacity,
      samples: this.samples.rows((d, at) => {
        const s = {} as TraceSample;
        for (let i = 0; i < NS; i++) s[SAMPLE_FIELDS[i]!] = d[at + i]!;
        return s;
      }),
      segments: this.segments.rows((d, at) => ({ t: d[at]!, seq: d[at + 1]!, len: d[at + 2]!, retrans: d[at + 3] === 1 })),
      droppedSamples: this.samples.dropped,
      droppedSegments: this.segments.dropped,
      retransmissions: this.retransmissions,
    };
  }
}

/** A connection's name in traces: LOCAL:PORT-PEER:PORT, as the connection table's rows show them. */
export function connId(c: TcpConnection): string {
  return `${formatIpv4(c.localAddr)}:${c.localPort}-${formatIpv4(c.remoteAddr)}:${c.remotePort}`;
}

/** A connection named as PEER:PORT or LOCAL:PORT-PEER:PORT. */
export interface ConnSelector {
  local: { addr: number; port: number } | null;
  peer: { addr: number; port: number };
}

const CONN_VALID = 'PEER:PORT or LOCAL:PORT-PEER:PORT, e.g. 198.18.0.1:43210 or 198.18.0.2:80-198.18.0.1:43210';

function endpoint(text: string): { addr: number; port: number } | null {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(text.trim());
  if (!m) return null;
  const addr = parseIpv4(m[1]!),
    port = Number(m[2]);
  if (addr === null || port < 1 || port > 65535) return null;
  return { addr, port };
}

export function parseConnSelector(text: string): ConnSelector {
  const parts = text.split('-');
  const eps = parts.map(endpoint);
  if (eps.some((e) => e === null) || parts.length < 1 || parts.length > 2) throw badArgument(`"conn" must be ${CONN_VALID}, not ${JSON.stringify(text)}`);
  return parts.length === 2 ? { local: eps[0]!, peer: eps[1]! } : { local: null, peer: eps[0]! };
}

function selects(s: ConnSelector, c: TcpConnection): boolean {
  if (c.remoteAddr !== s.peer.addr || c.remotePort !== s.peer.port) return false;
  return s.local === null || (c.localAddr === s.local.addr && c.localPort === s.local.port);
}

/** A stack's traces: started, read and stopped by the control plane (trace.* requests). */
export class TraceRegistry {
  private readonly traces: ConnectionTrace[] = [];
  /** Armed traces (trace.start with wait): the next connection each selects gets one when it enters the table. */
  private readonly pending: { sel: ConnSelector; text: string; capacity: number }[] = [];
  private readonly before: Stack['tcp']['hooks']['connectionCreated'];

  constructor(private readonly stack: Stack) {
    const hooks = stack.tcp.hooks;
    this.before = hooks.connectionCreated;
    // One length check per new connection while nothing is armed.
    hooks.connectionCreated = (c, now) => {
      this.before(c, now);
      if (this.pending.length > 0) this.attachPending(c, now);
    };
  }

  private attachPending(c: TcpConnection, now: number): void {
    const i = this.pending.findIndex((p) => selects(p.sel, c));
    if (i < 0 || c.observer !== null) return;
    const [p] = this.pending.splice(i, 1);
    const t = new ConnectionTrace(c, now, p!.capacity);
    this.traces.push(t);
    // No sample yet: the handshake code sets the ISS right after the connection is made.
    c.observer = t;
  }

  private makeRoom(): void {
    while (this.traces.length + this.pending.length >= MAX_TRACES) {
      const old = this.traces.findIndex((t) => !t.active);
      if (old < 0) throw new CodedError('EBUSY', `${MAX_TRACES} connections are being traced already: stop one (trace.stop) first`);
      this.traces.splice(old, 1);
    }
  }

  private find(sel: ConnSelector): ConnectionTrace | undefined {
    // The newest trace of that connection (a port may be reused by a later connection).
    for (let i = this.traces.length - 1; i >= 0; i--) if (selects(sel, this.traces[i]!.conn)) return this.traces[i];
    return undefined;
  }

  private live(sel: ConnSelector): TcpConnection | undefined {
    for (const c of this.stack.tcp.table.all()) if (!c.isClosed() && selects(sel, c)) return c;
    return undefined;
  }

  /**
   * Starts tracing a live connection (again: the running trace goes on). With `wait`, a
   * connection that does not exist yet is traced from the moment it enters the table.
   * Null: no such connection here (and no wait).
   */
  start(args: Record<string, unknown>): { conn: string; started: boolean; capacity: number; pending?: boolean } | null {
    const text = requiredString(args, 'conn', CONN_VALID);
    const sel = parseConnSelector(text);
    const capacity = integerArg(args, 'samples', 16, MAX_TRACE_SAMPLES) ?? DEFAULT_TRACE_SAMPLES;
    const wait = booleanArg(args, 'wait') ?? false;
    const c = this.live(sel);
    if (!c) {
      if (!wait) return null;
      if (!this.pending.some((p) => p.text === text)) {
        this.makeRoom();
        this.pending.push({ sel, text, capacity });
      }
      return { conn: text, started: false, pending: true, capacity };
    }
    if (c.observer instanceof ConnectionTrace && c.observer.active) return { conn: c.observer.id, started: false, capacity: c.observer.samples.capacity };
    if (c.observer !== null) throw new CodedError('EBUSY', `connection ${connId(c)} already has an observer`);
    this.makeRoom();
    const t = new ConnectionTrace(c, this.stack.now, capacity);
    this.traces.push(t);
    c.observer = t;
    t.update(c, this.stack.now);
    return { conn: t.id, started: true, capacity };
  }

  /** The trace of a connection, or null when this stack has none. */
  get(args: Record<string, unknown>): TraceReply | null {
    const text = requiredString(args, 'conn', CONN_VALID);
    const t = this.find(parseConnSelector(text));
    if (!t) {
      const p = this.pending.find((x) => x.text === text);
      if (!p) return null;
      return {
        conn: text,
        local: '',
        peer: '',
        state: 'not yet',
        active: false,
        pending: true,
        startedAt: this.stack.now,
        mss: 0,
        capacity: p.capacity,
        samples: [],
        segments: [],
        droppedSamples: 0,
        droppedSegments: 0,
        retransmissions: 0,
      };
    }
    if (t.active && t.conn.isClosed()) t.finish();
    return t.reply();
  }

  stop(args: Record<string, unknown>): { conn: string; stopped: boolean } | null {
    const text = requiredString(args, 'conn', CONN_VALID);
    const armed = this.pending.findIndex((x) => x.text === text);
    if (armed >= 0) {
      this.pending.splice(armed, 1);
      return { conn: text, stopped: true };
    }
    const t = this.find(parseConnSelector(text));
    if (!t) return null;
    const was = t.active;
    t.finish();
    return { conn: t.id, stopped: was };
  }

  list(): { conn: string; active: boolean; pending?: boolean; samples: number; segments: number; retransmissions: number }[] {
    return [
      ...this.traces.map((t) => ({
        conn: t.id,
        active: t.active && !t.conn.isClosed(),
        samples: t.samples.count,
        segments: t.segments.count,
        retransmissions: t.retransmissions,
      })),
      ...this.pending.map((p) => ({ conn: p.text, active: false, pending: true, samples: 0, segments: 0, retransmissions: 0 })),
    ];
  }

  /** One trace command (start, get, stop, list) as the control plane sends it. */
  handle(cmd: string, args: Record<string, unknown>): unknown {
    switch (cmd) {
      case 'start':
        return this.start(args);
      case 'get':
        return this.get(args);
      case 'stop':
        return this.stop(args);
      case 'list':
        return this.list();
      default:
        throw badArgument(`unknown trace command ${JSON.stringify(cmd)}: start, get, stop or list`);
    }
  }

  close(): void {
    for (const t of this.traces) t.finish();
    this.pending.length = 0;
    this.stack.tcp.hooks.connectionCreated = this.before;
  }
}
