/**
 * A listening socket: an explicit SYN queue (half-open connections, SYN-RECEIVED:
 * compact HalfOpen entries, see halfopen.ts) and an explicit accept queue
 * (established, not yet accepted by the application).
 *
 * What happens when a queue is full is a *backlog policy*, chosen by the stack's
 * profile. The policies live in stack/tcp/backlog.ts, beside each other, because
 * that choice is where KB 903927 lives: Linux drops the final ACK, Windows without
 * SYN attack protection refuses the SYN with a RST, and Windows with protection
 * (delayed indication) completes the handshake and resets afterwards.
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
import { HalfOpen, HalfOpenFlag, SynQueue } from './halfopen';
import type { TcpLayer } from './tcp';

export type AdmitVerdict = 'ok' | 'drop' | 'reset';
export type SynVerdict = 'accept' | 'drop' | 'reset' | 'cookie';

export class Listener {
  /** Half-open entries, by four-tuple and by age. */
  readonly synQueue = new SynQueue();
  readonly acceptQueue: TcpConnection[] = [];
  /** The application's per-connection allocation when it is told of a connection (KB 903927's "stacks"). */
  onIndicate: ((conn: TcpConnection) => unknown) | null = null;
  /** Called when the accept queue goes from empty to non-empty. */
  onAcceptable: (() => void) | null = null;
  closed = false;
  /** Connections the backlog policy reset after their handshake (KB 903927). */
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

  get halfOpen(): number { return this.synQueue.size; }

  /** The half-open entry of this four-tuple, if any. */
  findHalfOpen(localAddr: number, remoteAddr: number, remotePort: number): HalfOpen | undefined {
    return this.synQueue.find(localAddr, remoteAddr, remotePort);
  }

  /** A SYN for this port, with no connection yet. */
  onSyn(seg: TcpRepr, src: number, dst: number, now: number): HalfOpen | null {
    const layer = this.layer;
    const verdict = layer.backlog.onSyn(this, seg, now);
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
        layer.backlog.afterSynQueued(this, req, now);
        return req;
      }
    }
  }

  /** The final ACK of a handshake arrived: may it complete? */
  admit(req: HalfOpen, now: number): AdmitVerdict {
    const v = this.layer.backlog.onFinalAck(this, req, now);
    if (v === 'drop') this.droppedAcks++;
    return v;
  }

  /** The entry leaves the SYN queue (handshake done, given up, reset or recycled). */
  removeHalfOpen(req: HalfOpen, established = false): void {
    if (!this.synQueue.remove(req)) return;
    this.layer.halfOpenCount--;
    this.layer.timers.disarm(req);
    if (req.has(HalfOpenFlag.Retried)) this.halfOpenRetried--;
    this.layer.backlog.halfOpenGone?.(this, req, established);
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
    if (this.closed) { conn.abort(now); return; }
    this.acceptQueue.push(conn);
    this.layer.backlog.afterEstablished(this, conn, req, now);
    if (this.acceptQueue.length === 1 && this.onAcceptable) this.onAcceptable();
  }

  onSynAckRetransmit(req: HalfOpen, now: number): void {
    if (!req.has(HalfOpenFlag.Retried)) { req.flags |= HalfOpenFlag.Retried; this.halfOpenRetried++; }
    this.layer.backlog.onSynAckRetransmit(this, req, now);
  }

  /** The application takes the next established connection, if any. */
  accept(): TcpConnection | null {
    const c = this.acceptQueue.shift();
    if (!c) return null;
    c.listener = null;
    this.layer.backlog.onAccepted?.(this);
    return c;
  }

  /** A connection of the accept queue went away (reset, timed out). */
  forget(conn: TcpConnection): void {
    this.layer.backlog.forget?.(this, conn);
    const i = this.acceptQueue.indexOf(conn);
    if (i >= 0) this.acceptQueue.splice(i, 1);
  }

  close(now: number): void {
    this.closed = true;
    this.layer.backlog.onListenerClose?.(this, now);
    // Half-open peers hear a reset, as from an aborted connection in SYN-RECEIVED.
    for (const req of [...this.synQueue.values()]) {
      this.layer.sendReset(req.localAddr, req.remoteAddr, this.port, req.remotePort, seqAdd(req.iss, 1));
      this.removeHalfOpen(req);
    }
    for (const c of [...this.acceptQueue]) c.abort(now);
    this.acceptQueue.length = 0;
  }
}
