/**
 * KB 903927: the Windows listener with SYN attack protection (the TCP layer's
 * listenerAdmission hook while TcpStackProfile is windows). What its reset path leaves
 * behind, buggy or hotfixed, is leak.ts.
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
 * - The reset goes through the listener's resetBeforeAccept, which hands what the
 *   connection held (first flight, application state) to the TCP layer's
 *   resetBeforeAccept hook: leak.ts keeps it all reachable (buggy, the article) or
 *   releases it (hotfixed).
 */
import type { FaultConfig } from '../config';
import { EventKind, type EventLog } from '../events';
import type { BacklogPolicy } from '../../tcp/backlog';
import type { TcpConnection } from '../../tcp/connection';
import { HalfOpenFlag, type HalfOpen } from '../../tcp/halfopen';
import type { AdmitVerdict, Listener, SynVerdict } from '../../tcp/listener';
import type { TcpRepr } from '../../wire/tcp';
import { formatIpv4 } from '../../wire/addr';
import { Timer } from '../../timers';

/** Per-listener protection state. */
interface ListenerState {
  portsExhausted: number;
  triggered: boolean;
  triggeredBy: string | null;
  /** Connections that completed the handshake and wait for their delayed indication, with the timer that indicates them without data. */
  awaitingIndication: Map<TcpConnection, Timer>;
  /** Half-open entries told to the application at their SYN: each holds a backlog slot. */
  indicatedHalfOpen: number;
}

export class WindowsBacklog implements BacklogPolicy {
  readonly name = 'windows';
  private readonly state = new WeakMap<Listener, ListenerState>();
  /** Established connections reset because the backlog was full when the application was told. */
  resets = 0;
  /** Delay before a handshake-complete connection is indicated when no data arrives (ms). */
  indicationDelayMs = 200;

  constructor(
    readonly cfg: FaultConfig,
    readonly events: EventLog,
  ) {}

  private ls(l: Listener): ListenerState {
    let s = this.state.get(l);
    if (!s) {
      s = { portsExhausted: 0, triggered: false, triggeredBy: null, awaitingIndication: new Map(), indicatedHalfOpen: 0 };
      this.state.set(l, s);
    }
    return s;
  }

  private get p() {
    return this.cfg.params;
  }

  /** Past TcpMaxHalfOpen half-open entries the protection starts (when it is enabled). */
  synQueueLimit(): { limit: number; by: string } {
    return { limit: this.p.TcpMaxHalfOpen, by: 'TcpMaxHalfOpen' };
  }

  /** Protection acts only when SynAttackProtect is set and TcpMaxConnectResponseRetransmissions >= 2. */
  private protectionEnabled(): boolean {
    return this.p.SynAttackProtect > 0 && this.p.TcpMaxConnectResponseRetransmissions >= 2;
  }

  /** Re-evaluates the thresholds; emits the trigger/clear events on a change. */
  private evaluate(l: Listener, s: ListenerState): boolean {
    if (!this.protectionEnabled()) {
      s.triggered = false;
      return false;
    }
    const p = this.p;
    let by: 'TcpMaxHalfOpen' | 'TcpMaxHalfOpenRetried' | 'TcpMaxPortsExhausted' | null = null;
    let value = 0,
      limit = 0;
    if (l.synQueue.size > p.TcpMaxHalfOpen) {
      by = 'TcpMaxHalfOpen';
      value = l.synQueue.size;
      limit = p.TcpMaxHalfOpen;
    } else if (l.halfOpenRetried > p.TcpMaxHalfOpenRetried) {
      by = 'TcpMaxHalfOpenRetried';
      value = l.halfOpenRetried;
      limit = p.TcpMaxHalfOpenRetried;
    } else if (s.portsExhausted > p.TcpMaxPortsExhausted || (p.TcpMaxPortsExhausted === 0 && this.backlogFull(l))) {
      by = 'TcpMaxPortsExhausted';
      value = s.portsExhausted;
      limit = p.TcpMaxPortsExhausted;
    }
    if (by && !s.triggered) {
      s.triggered = true;
      s.triggeredBy = by;
      l.layer.counters.FsSynProtectTriggered++;
      this.events.emit({
        fault: 'kb903927',
        kind: EventKind.SynProtectionTriggered,
        // TcpMaxPortsExhausted 0 triggers on a consumed backlog before any refusal: "0 > 0" would say nothing.
        message:
          `SYN attack protection triggered on port ${l.port}: ` +
          (value > limit ? `${by} exceeded (${value} > ${limit})` : `${by} is ${limit} and the backlog of ${l.backlog} is consumed`) +
          (this.p.SynAttackProtect >= 2 ? '; connections are now indicated only after the handshake completes' : ''),
        data: { threshold: by, value, limit, port: l.port },
      });
    } else if (!by && s.triggered) {
      s.triggered = false;
      this.events.emit({
        fault: 'kb903927',
        kind: EventKind.SynProtectionCleared,
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

  isTriggered(l: Listener): boolean {
    return this.ls(l).triggered;
  }

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
    else {
      req.flags |= HalfOpenFlag.HoldsSlot;
      s.indicatedHalfOpen++;
    }
    this.evaluate(l, s);
  }

  onFinalAck(): AdmitVerdict {
    return 'ok';
  }

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
    // Indicate when the first data arrives (the start of the TLS negotiation:
    // dataBeforeAccept), or after a short delay.
    const timer = new Timer((t) => this.indicate(l, conn, t));
    s.awaitingIndication.set(conn, timer);
    l.layer.timers.arm(timer, now + this.indicationDelayMs);
    this.evaluate(l, s);
  }

  dataBeforeAccept(l: Listener, conn: TcpConnection, now: number): void {
    this.indicate(l, conn, now);
  }

  /** The application (AFD) is told now; if its backlog is full, the connection is reset. */
  private indicate(l: Listener, conn: TcpConnection, now: number): void {
    const s = this.ls(l);
    const timer = s.awaitingIndication.get(conn);
    if (timer === undefined) return;
    s.awaitingIndication.delete(conn);
    l.layer.timers.disarm(timer);
    if (conn.isClosed()) return;
    // The server allocates its per-connection state when it is told (the article's "stacks").
    l.tellApplication(conn);
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
    this.resets++;
    l.layer.counters.FsBacklogResets++;
    const local = `${formatIpv4(conn.localAddr)}:${conn.localPort}`;
    const remote = `${formatIpv4(conn.remoteAddr)}:${conn.remotePort}`;
    this.events.emit({
      fault: 'kb903927',
      kind: EventKind.BacklogReset,
      message: `connection ${remote} -> ${local} reset after a completed handshake: backlog ${l.backlog} full when the application was told`,
      data: { local, remote, backlog: l.backlog, bytesReceived: conn.pendingBytes },
    });
    // The reset itself; what the connection held goes to the resetBeforeAccept hook (leak.ts).
    l.resetBeforeAccept(conn, now);
  }

  onSynAckRetransmit(l: Listener): void {
    this.evaluate(l, this.ls(l));
  }

  synAckRetries(l: Listener | null): number {
    if (l && this.ls(l).triggered) return Math.min(1, this.p.TcpMaxConnectResponseRetransmissions);
    return this.p.TcpMaxConnectResponseRetransmissions;
  }

  /** KB 142641: the first SYN-ACK retransmission after 3 s, doubling. */
  synAckRto(): number {
    return 3000;
  }

  suppressSynOptions(l: Listener): boolean {
    return this.ls(l).triggered;
  }

  /** A listener lost a connection it held (reset, timeout): keep the bookkeeping tidy. */
  forget(l: Listener, conn: TcpConnection): void {
    const s = this.ls(l);
    const timer = s.awaitingIndication.get(conn);
    if (timer === undefined) return;
    s.awaitingIndication.delete(conn);
    l.layer.timers.disarm(timer);
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
}
