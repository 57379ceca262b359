/**
 * A listening socket: an explicit SYN queue (half-open connections, SYN-RECEIVED:
 * compact HalfOpen entries, see halfopen.ts) and an explicit accept queue
 * (established, not yet accepted by the application).
 *
 * What happens when a queue is full is a *backlog policy*: the layer's
 * `hooks.listenerAdmission`. The core's own is Linux's (backlog.ts: drop the final ACK
 * while the accept queue is full, SYN cookies past tcp_max_syn_backlog); the Windows
 * listener with SYN attack protection (refuse the SYN with a RST, or complete the
 * handshake first and reset afterwards) is KB 903927's, in stack/faults/kb903927/.
 *
 * The application may be told of a connection before it accepts it (a policy's
 * indication: `tellApplication`); what it allocates then (`ApplicationState`) is kept
 * here, not on the connection, until it accepts (`takeApplicationState`) or the
 * connection goes. A policy that resets such a connection calls `resetBeforeAccept`,
 * which hands what it held to the layer's `hooks.resetBeforeAccept`.
 *
 * Whatever the policy, the SYN queue is bounded (our choice, docs/design.md): at most
 * `synQueueCapPerListener` entries per listener and `synQueueCapGlobal` in the whole
 * stack. A SYN that would go past a cap recycles the oldest half-open entry (RFC 4987
 * 3.3, "recycling the oldest half-open TCB"; past the global cap, of the fullest
 * listener): a real client completes its handshake in one round trip, long before it
 * becomes the oldest, while a flood's entries never complete. Each recycled entry
 * counts in FsHalfOpenRecycled.
 */
import type { TcpRepr } from '../wire/tcp';
import { seqAdd } from '../wire/seq';
import type { TcpConnection } from './connection';
import { NO_PENDING } from './buffers';
import { HalfOpen, HalfOpenFlag, SynQueue } from './halfopen';
import type { TcpLayer } from './tcp';

export type AdmitVerdict = 'ok' | 'drop' | 'reset';
export type SynVerdict = 'accept' | 'drop' | 'reset' | 'cookie';

/**
 * What an application allocates for a connection once it is told of it (the mtls
 * service's negotiation buffers: KB 903927's "stacks"): its size and how to free it.
 */
export interface ApplicationState {
  readonly bytes: number;
  release(): void;
}

/** The listener's owner (the socket API's server), as far as the listener calls it. */
export interface ListenerApplication {
  /** The application is told of `conn` before accepting it: what it allocated for it (null: nothing). */
  indicated(conn: TcpConnection): ApplicationState | null;
}

export class Listener {
  /** Half-open entries, by four-tuple and by age. */
  readonly synQueue = new SynQueue();
  readonly acceptQueue: TcpConnection[] = [];
  /** Set by the socket API's server: told of connections before it accepts them. */
  application: ListenerApplication | null = null;
  /** What the application allocated for connections it was told of and has not accepted. */
  private readonly states = new Map<TcpConnection, ApplicationState>();
  /** Called when the accept queue goes from empty to non-empty. */
  onAcceptable: (() => void) | null = null;
  closed = false;
  /** Connections reset after their handshake because the backlog was full when the application was told (resetBeforeAccept). */
  resetAfterHandshake = 0;
  refusedSyns = 0;
  /** When this listener last answered a SYN with a cookie (-Infinity: never). */
  lastCookieAt = -Infinity;
  droppedSyns = 0;
  droppedAcks = 0;
  /** Half-open entries that had at least one SYN-ACK retransmission (Windows TcpMaxHalfOpenRetried). */
  halfOpenRetried = 0;
  /** Half-open entries recycled to keep the SYN queue under its caps. */
  recycled = 0;

  constructor(
    readonly layer: TcpLayer,
    readonly addr: number,
    readonly port: number,
    public backlog: number,
  ) {}

  get halfOpen(): number {
    return this.synQueue.size;
  }

  /** The half-open entry of this four-tuple, if any. */
  findHalfOpen(localAddr: number, remoteAddr: number, remotePort: number): HalfOpen | undefined {
    return this.synQueue.find(localAddr, remoteAddr, remotePort);
  }

  /** A SYN for this port, with no connection yet. */
  onSyn(seg: TcpRepr, src: number, dst: number, now: number): HalfOpen | null {
    const layer = this.layer;
    const verdict = layer.hooks.listenerAdmission.onSyn(this, seg, now);
    switch (verdict) {
      case 'drop':
        this.droppedSyns++;
        return null;
      case 'reset':
        this.refusedSyns++;
        layer.refuse(seg, src, dst);
        return null;
      case 'cookie':
        layer.sendSynCookie(this, seg, src, dst, now);
        return null;
      case 'accept': {
        const cfg = layer.config;
        if (this.synQueue.size >= cfg.synQueueCapPerListener) this.recycleOldest();
        else if (layer.halfOpenCount >= cfg.synQueueCapGlobal) layer.recycleOldestHalfOpen(this);
        const req = new HalfOpen(this, dst, src, seg.srcPort, seg, layer.isnFor(dst, this.port, src, seg.srcPort, now), now);
        this.synQueue.add(req);
        layer.halfOpenCount++;
        layer.counters.TcpPassiveOpens++;
        req.sendSynAck(now);
        layer.hooks.listenerAdmission.afterSynQueued(this, req, now);
        return req;
      }
    }
  }

  /** The final ACK of a handshake arrived: may it complete? */
  admit(req: HalfOpen, now: number): AdmitVerdict {
    const v = this.layer.hooks.listenerAdmission.onFinalAck(this, req, now);
    if (v === 'drop') this.droppedAcks++;
    return v;
  }

  /** The entry leaves the SYN queue (handshake done, given up, reset or recycled). */
  removeHalfOpen(req: HalfOpen, established = false): void {
    if (!this.synQueue.remove(req)) return;
    this.layer.halfOpenCount--;
    this.layer.timers.disarm(req);
    if (req.has(HalfOpenFlag.Retried)) this.halfOpenRetried--;
    this.layer.hooks.listenerAdmission.halfOpenGone?.(this, req, established);
  }

  /** Drops the oldest half-open entry to make room (RFC 4987 3.3). */
  recycleOldest(): boolean {
    const oldest = this.synQueue.oldest;
    if (!oldest) return false;
    this.recycle(oldest);
    return true;
  }

  private recycle(req: HalfOpen): void {
    this.recycled++;
    this.layer.counters.FsHalfOpenRecycled++;
    this.removeHalfOpen(req);
  }

  /** The handshake completed: the new connection joins the accept queue. */
  onEstablished(conn: TcpConnection, now: number, req: HalfOpen | null): void {
    if (this.closed) {
      conn.abort(now);
      return;
    }
    // A real peer (it answered our SYN-ACK): the device's early SYN drop spares it from now on.
    this.layer.host.sourceVerified?.(conn.remoteAddr);
    this.acceptQueue.push(conn);
    this.layer.hooks.listenerAdmission.afterEstablished(this, conn, req, now);
    if (this.acceptQueue.length === 1 && this.onAcceptable) this.onAcceptable();
  }

  onSynAckRetransmit(req: HalfOpen, now: number): void {
    if (!req.has(HalfOpenFlag.Retried)) {
      req.flags |= HalfOpenFlag.Retried;
      this.halfOpenRetried++;
    }
    this.layer.hooks.listenerAdmission.onSynAckRetransmit(this, req, now);
  }

  /**
   * The application takes the next established connection, if any; what it allocated
   * when it was told of it (if it was told early) it takes with takeApplicationState.
   */
  accept(): TcpConnection | null {
    const c = this.acceptQueue.shift();
    if (!c) return null;
    c.listener = null;
    this.layer.hooks.listenerAdmission.onAccepted?.(this);
    return c;
  }

  /** A connection of the accept queue (or held aside by the policy) went away (reset, timed out). */
  forget(conn: TcpConnection): void {
    this.layer.hooks.listenerAdmission.forget?.(this, conn);
    const i = this.acceptQueue.indexOf(conn);
    if (i >= 0) this.acceptQueue.splice(i, 1);
    // The application never got it: what it allocated for it goes with it.
    const st = this.takeApplicationState(conn);
    if (st) st.release();
  }

  /** Data arrived on a connection the application has not accepted yet. */
  dataBeforeAccept(conn: TcpConnection, now: number): void {
    this.layer.hooks.listenerAdmission.dataBeforeAccept?.(this, conn, now);
  }

  /** A policy tells the application of `conn` before it is accepted; the application may allocate its state for it. */
  tellApplication(conn: TcpConnection): void {
    const st = this.application ? this.application.indicated(conn) : null;
    if (st) this.states.set(conn, st);
  }

  /** What the application allocated for `conn` when it was told of it, handed over (null: nothing). */
  takeApplicationState(conn: TcpConnection): ApplicationState | null {
    const st = this.states.get(conn);
    if (st === undefined) return null;
    this.states.delete(conn);
    return st;
  }

  /**
   * A policy found the backlog full when it told the application of an established
   * connection: the connection is reset (the client connected, and its next operation
   * fails with ECONNRESET), and what it held (the client's first flight, the
   * application's state) goes to the layer's resetBeforeAccept hook, whose default frees it.
   */
  resetBeforeAccept(conn: TcpConnection, now: number): void {
    this.resetAfterHandshake++;
    const state = this.takeApplicationState(conn);
    conn.abort(now);
    const firstFlight = conn.pending,
      firstFlightBytes = conn.pendingBytes;
    conn.pending = NO_PENDING;
    conn.pendingBytes = 0;
    this.layer.hooks.resetBeforeAccept({ conn, listener: this, firstFlight, firstFlightBytes, state }, now);
  }

  close(now: number): void {
    this.closed = true;
    this.layer.hooks.listenerAdmission.onListenerClose?.(this, now);
    // Half-open peers hear a reset, as from an aborted connection in SYN-RECEIVED.
    for (const req of [...this.synQueue.values()]) {
      this.layer.sendReset(req.localAddr, req.remoteAddr, this.port, req.remotePort, seqAdd(req.iss, 1));
      this.removeHalfOpen(req);
    }
    for (const c of [...this.acceptQueue]) c.abort(now);
    this.acceptQueue.length = 0;
  }
}
