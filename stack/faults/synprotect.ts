/**
 * KB 903927: the Windows listener with SYN attack protection, and the leak on its
 * reset path.
 *
 * The Windows listener (AFD backlog semantics, KB 142641, the Server 2003 TCP/IP
 * reference):
 * - Protection off (SynAttackProtect 0), or not triggered: the application is told
 *   at the first SYN, so a SYN that finds the backlog full is refused with a RST
 *   (the client's connect() fails with ECONNREFUSED). Each refusal counts toward
 *   TcpMaxPortsExhausted.
 * - Protection triggers when a threshold is exceeded: half-open connections over
 *   TcpMaxHalfOpen, half-open connections that had a SYN-ACK retransmission over
 *   TcpMaxHalfOpenRetried, or more than TcpMaxPortsExhausted refusals since the
 *   backlog last had room. It acts only when TcpMaxConnectResponseRetransmissions
 *   >= 2. While it is active: one SYN-ACK retransmission instead of the configured
 *   number (our choice), no window scaling or other per-route options on the
 *   SYN-ACK (the route cache entry is not consulted before it is sent), and with
 *   SynAttackProtect 2 the *delayed indication*: the handshake completes first and
 *   the application (and its backlog) is consulted afterwards, when the client's
 *   first data arrives. If the backlog is full then, the established connection is
 *   reset: the client connected successfully and its next operation fails with
 *   ECONNRESET.
 * - Buggy (the article): what the reset connection allocated (its control block,
 *   its receive buffer holding the client's first flight, the per-connection
 *   application state) stays reachable and is never freed. Hotfixed: all of it is
 *   released on that path.
 */
import type { FaultConfig } from './catalogue';
import { EventKind, type EventLog } from './events';
import type { BacklogPolicy } from '../tcp/backlog';
import type { TcpConnection } from '../tcp/connection';
import { HalfOpenFlag, type HalfOpen } from '../tcp/halfopen';
import type { AdmitVerdict, Listener, SynVerdict } from '../tcp/listener';
import type { TcpRepr } from '../wire/tcp';
import { formatIpv4 } from '../wire/addr';
import { Timer } from '../timers';

/** What one leaked connection keeps reachable (buggy mode). */
export interface LeakedConnection {
  conn: TcpConnection;
  firstFlight: Buffer[];
  appState: unknown;
  bytes: number;
  at: string;
}

/** Rough size of a control block with its scoreboards and timer (for the event's byte count). */
const CONTROL_BLOCK_BYTES = 1200;

/** Per-listener protection state. */
interface ListenerState {
  portsExhausted: number;
  triggered: boolean;
  triggeredBy: string | null;
  /** Connections that completed the handshake and wait for their delayed indication. */
  /** Connections waiting for their delayed indication, each with the timer that indicates it. */
  awaitingIndication: Map<TcpConnection, Timer>;
  /** Half-open entries told to the application at their SYN: each holds a backlog slot. */
  indicatedHalfOpen: number;
}

export class WindowsBacklog implements BacklogPolicy {
  readonly name = 'windows';
  private readonly state = new WeakMap<Listener, ListenerState>();
  /** Buggy mode: every reset connection's allocations, kept reachable on purpose. */
  readonly leaked: LeakedConnection[] = [];
  leakedBytes = 0;
  resets = 0;
  freed = 0;
  /** Delay before a handshake-complete connection is indicated when no data arrives (ms). */
  indicationDelayMs = 200;

  constructor(readonly cfg: FaultConfig, readonly events: EventLog) {}

  private ls(l: Listener): ListenerState {
    let s = this.state.get(l);
    if (!s) {
      s = { portsExhausted: 0, triggered: false, triggeredBy: null, awaitingIndication: new Map(), indicatedHalfOpen: 0 };
      this.state.set(l, s);
    }
    return s;
  }

  private get p() { return this.cfg.params; }

  /** Protection acts only when SynAttackProtect is set and TcpMaxConnectResponseRetransmissions >= 2. */
  private protectionEnabled(): boolean {
    return this.p.SynAttackProtect > 0 && this.p.TcpMaxConnectResponseRetransmissions >= 2;
  }

  /** Re-evaluates the thresholds; emits the trigger/clear events on a change. */
  private evaluate(l: Listener, s: ListenerState): boolean {
    if (!this.protectionEnabled()) { s.triggered = false; return false; }
    const p = this.p;
    let by: 'TcpMaxHalfOpen' | 'TcpMaxHalfOpenRetried' | 'TcpMaxPortsExhausted' | null = null;
    let value = 0, limit = 0;
    if (l.synQueue.size > p.TcpMaxHalfOpen) { by = 'TcpMaxHalfOpen'; value = l.synQueue.size; limit = p.TcpMaxHalfOpen; }
    else if (l.halfOpenRetried > p.TcpMaxHalfOpenRetried) { by = 'TcpMaxHalfOpenRetried'; value = l.halfOpenRetried; limit = p.TcpMaxHalfOpenRetried; }
    else if (s.portsExhausted > p.TcpMaxPortsExhausted || (p.TcpMaxPortsExhausted === 0 && this.backlogFull(l))) {
      by = 'TcpMaxPortsExhausted'; value = s.portsExhausted; limit = p.TcpMaxPortsExhausted;
    }
    if (by && !s.triggered) {
      s.triggered = true;
      s.triggeredBy = by;
      l.layer.counters.FsSynProtectTriggered++;
      this.events.emit({
        fault: 'kb903927', kind: EventKind.SynProtectionTriggered,
        // TcpMaxPortsExhausted 0 triggers on a consumed backlog before any refusal: "0 > 0" would say nothing.
        message: `SYN attack protection triggered on port ${l.port}: ` +
          (value > limit ? `${by} exceeded (${value} > ${limit})` : `${by} is ${limit} and the backlog of ${l.backlog} is consumed`) +
          (this.p.SynAttackProtect >= 2 ? '; connections are now indicated only after the handshake completes' : ''),
        data: { threshold: by, value, limit, port: l.port },
      });
    } else if (!by && s.triggered) {
      s.triggered = false;
      this.events.emit({
        fault: 'kb903927', kind: EventKind.SynProtectionCleared,
        message: `SYN attack protection cleared on port ${l.port}: every threshold is back under its limit`,
        data: { halfOpen: l.synQueue.size, halfOpenRetried: l.halfOpenRetried, portsExhausted: s.portsExhausted },
      });
      s.triggeredBy = null;
    }
    return s.triggered;
  }

  /**
   * The backlog counts every connection the application was told of and has not
   * accepted: the accept queue, and the half-open connections indicated at their SYN.
   */
  private backlogFull(l: Listener): boolean {
    return l.acceptQueue.length + this.ls(l).indicatedHalfOpen >= l.backlog;
  }

  isTriggered(l: Listener): boolean { return this.ls(l).triggered; }

  onSyn(l: Listener, _seg: TcpRepr, _now: number): SynVerdict {
    const s = this.ls(l);
    const triggered = this.evaluate(l, s);
    if (triggered && this.p.SynAttackProtect >= 2) return 'accept'; // delayed indication: backlog looked at later
    if (this.backlogFull(l)) {
      s.portsExhausted++;
      l.layer.counters.TcpExtListenOverflows++;
      // The refusal itself may push TcpMaxPortsExhausted over its limit. It stays
      // counted: the backlog was exhausted for this request, and protection must stay
      // on until the backlog has room again (onAccepted), not clear at once.
      if (this.evaluate(l, s) && this.p.SynAttackProtect >= 2) return 'accept';
      return 'reset';
    }
    return 'accept';
  }

  afterSynQueued(l: Listener, req: HalfOpen): void {
    const s = this.ls(l);
    if (s.triggered && this.p.SynAttackProtect >= 2) req.flags |= HalfOpenFlag.DelayedIndication;
    else { req.flags |= HalfOpenFlag.HoldsSlot; s.indicatedHalfOpen++; }
    this.evaluate(l, s);
  }

  onFinalAck(): AdmitVerdict { return 'ok'; }

  /**
   * A half-open entry left the SYN queue: its backlog slot (if it held one) goes with
   * it. The thresholds are looked at again at the next SYN, accept or handshake, as
   * before entries were compact.
   */
  halfOpenGone(l: Listener, req: HalfOpen): void {
    if (!req.has(HalfOpenFlag.HoldsSlot)) return;
    req.flags &= ~HalfOpenFlag.HoldsSlot;
    this.ls(l).indicatedHalfOpen--;
  }

  afterEstablished(l: Listener, conn: TcpConnection, req: HalfOpen | null, now: number): void {
    const s = this.ls(l);
    if (!req || !req.has(HalfOpenFlag.DelayedIndication)) {
      // Indicated at the SYN: it already holds its backlog slot.
      this.evaluate(l, s);
      return;
    }
    // Delayed indication: out of the accept queue until the indication happens.
    const i = l.acceptQueue.indexOf(conn);
    if (i >= 0) l.acceptQueue.splice(i, 1);
    // Indicate when the first data arrives (the start of the TLS negotiation), or after a short delay.
    const timer = new Timer((t) => this.indicate(l, conn, t));
    s.awaitingIndication.set(conn, timer);
    conn.onFirstData = (t) => { l.layer.timers.disarm(timer); this.indicate(l, conn, t); };
    l.layer.timers.arm(timer, now + this.indicationDelayMs);
    this.evaluate(l, s);
  }

  /** The application (AFD) is told now; if its backlog is full, the connection is reset. */
  private indicate(l: Listener, conn: TcpConnection, now: number): void {
    const s = this.ls(l);
    const t = s.awaitingIndication.get(conn);
    if (t === undefined) return;
    s.awaitingIndication.delete(conn);
    conn.onFirstData = null;
    l.layer.timers.disarm(t);
    if (conn.isClosed()) return;
    // The server allocates its per-connection state when it is told (the article's "stacks").
    conn.appState = l.onIndicate ? l.onIndicate(conn) : null;
    // The same accounting as at the SYN: connections told to the application at their
    // SYN (before protection triggered) hold their slots while half-open.
    if (!this.backlogFull(l) && !l.closed) {
      l.acceptQueue.push(conn);
      if (l.acceptQueue.length === 1 && l.onAcceptable) l.onAcceptable();
      return;
    }
    this.resetForBacklog(l, conn, now);
  }

  private resetForBacklog(l: Listener, conn: TcpConnection, now: number): void {
    const c = l.layer.counters;
    this.resets++;
    l.resetAfterHandshake++;
    c.FsBacklogResets++;
    const firstFlight = conn.pending.slice();
    const received = conn.pendingBytes;
    const local = `${formatIpv4(conn.localAddr)}:${conn.localPort}`;
    const remote = `${formatIpv4(conn.remoteAddr)}:${conn.remotePort}`;
    this.events.emit({
      fault: 'kb903927', kind: EventKind.BacklogReset,
      message: `connection ${remote} -> ${local} reset after a completed handshake: backlog ${l.backlog} full when the application was told`,
      data: { local, remote, backlog: l.backlog, bytesReceived: received },
    });
    const appState = conn.appState;
    conn.abort(now);
    if (this.cfg.modes.kb903927 === 'buggy') {
      // The buggy reset path: nothing it allocated is released.
      const bytes = CONTROL_BLOCK_BYTES + received + estimateSize(appState);
      this.leaked.push({ conn, firstFlight, appState, bytes, at: new Date().toISOString() });
      this.leakedBytes += bytes;
      c.FsLeakedConnections++;
      c.FsLeakedBytes += bytes;
      this.events.emit({
        fault: 'kb903927', kind: EventKind.LeakRetained,
        message: `buggy reset path: ${bytes} bytes of ${remote} stay allocated (control block, ${received}-byte first flight, application state)`,
        data: { connection: remote, bytes, totalBytes: this.leakedBytes, what: ['control block', 'receive buffer', 'application state'] },
      });
    } else {
      // Hotfixed: the reset path frees everything it allocated.
      conn.releasePending();
      conn.appState = null;
      const st = appState as { release?: () => void } | null;
      if (st && typeof st.release === 'function') st.release();
      this.freed++;
    }
  }

  onSynAckRetransmit(l: Listener): void {
    this.evaluate(l, this.ls(l));
  }

  synAckRetries(l: Listener | null): number {
    if (l && this.ls(l).triggered) return Math.min(1, this.p.TcpMaxConnectResponseRetransmissions);
    return this.p.TcpMaxConnectResponseRetransmissions;
  }

  /** KB 142641: the first SYN-ACK retransmission after 3 s, doubling. */
  synAckRto(): number { return 3000; }

  suppressSynOptions(l: Listener): boolean {
    return this.ls(l).triggered;
  }

  /** A listener lost a connection it held (reset, timeout): keep the bookkeeping tidy. */
  forget(l: Listener, conn: TcpConnection): void {
    const s = this.ls(l);
    const t = s.awaitingIndication.get(conn);
    if (t !== undefined) {
      s.awaitingIndication.delete(conn);
      l.layer.timers.disarm(t);
      conn.onFirstData = null;
    }
  }

  /** A closing listener takes the connections still waiting for their indication with it. */
  onListenerClose(l: Listener, now: number): void {
    const s = this.ls(l);
    for (const conn of [...s.awaitingIndication.keys()]) {
      this.forget(l, conn);
      conn.abort(now);
    }
  }

  /** The application accepted: the backlog has room again. */
  onAccepted(l: Listener): void {
    const s = this.ls(l);
    if (l.acceptQueue.length < l.backlog) s.portsExhausted = 0;
    this.evaluate(l, s);
  }

  /** Releases everything the buggy path kept (for tests and teaching). */
  releaseLeaks(): number {
    const n = this.leaked.length;
    this.leaked.length = 0;
    this.leakedBytes = 0;
    return n;
  }
}

function estimateSize(v: unknown): number {
  if (v === null || v === undefined) return 0;
  const s = v as { bytes?: number; size?: number };
  if (typeof s.bytes === 'number') return s.bytes;
  if (typeof s.size === 'number') return s.size;
  return 0;
}
