/**
 * A listening socket: an explicit SYN queue (half-open connections in SYN-RECEIVED)
 * and an explicit accept queue (established, not yet accepted by the application).
 *
 * What happens when a queue is full is a *backlog policy*, chosen by the stack's
 * profile. The policies live in stack/tcp/backlog.ts, beside each other, because
 * that choice is where KB 903927 lives: Linux drops the final ACK, Windows without
 * SYN attack protection refuses the SYN with a RST, and Windows with protection
 * (delayed indication) completes the handshake and resets afterwards.
 */
import type { TcpRepr } from '../wire/tcp';
import type { TcpConnection } from './connection';
import type { TcpLayer } from './tcp';

export type AdmitVerdict = 'ok' | 'drop' | 'reset';
export type SynVerdict = 'accept' | 'drop' | 'reset' | 'cookie';

export class Listener {
  readonly synQueue = new Set<TcpConnection>();
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

  constructor(
    readonly layer: TcpLayer,
    readonly addr: number,
    readonly port: number,
    public backlog: number,
  ) {}

  get halfOpen(): number { return this.synQueue.size; }

  /** A SYN for this port, with no connection yet. */
  onSyn(seg: TcpRepr, src: number, dst: number, now: number): TcpConnection | null {
    const verdict = this.layer.backlog.onSyn(this, seg, now);
    switch (verdict) {
      case 'drop':
        this.droppedSyns++;
        return null;
      case 'reset':
        this.refusedSyns++;
        this.layer.sendReset(dst, src, this.port, seg.srcPort, 0, (seg.seq + 1 + seg.payloadLength) >>> 0, true);
        return null;
      case 'cookie':
        this.layer.sendSynCookie(this, seg, src, dst, now);
        return null;
      case 'accept': {
        const conn = this.layer.createConnection(dst, this.port, src, seg.srcPort, now);
        conn.listener = this;
        this.synQueue.add(conn);
        this.layer.counters.TcpPassiveOpens++;
        conn.openPassive(seg, now);
        this.layer.backlog.afterSynQueued(this, conn, now);
        return conn;
      }
    }
  }

  /** The final ACK of a handshake arrived: may it complete? */
  admit(conn: TcpConnection, now: number): AdmitVerdict {
    const v = this.layer.backlog.onFinalAck(this, conn, now);
    if (v === 'drop') this.droppedAcks++;
    return v;
  }

  /** The handshake completed: move from the SYN queue to the accept queue. */
  onEstablished(conn: TcpConnection, now: number): void {
    this.synQueue.delete(conn);
    if (this.closed) { conn.abort(now); return; }
    this.acceptQueue.push(conn);
    this.layer.backlog.afterEstablished(this, conn, now);
    if (this.acceptQueue.length === 1 && this.onAcceptable) this.onAcceptable();
  }

  onSynAckRetransmit(conn: TcpConnection, now: number): void {
    this.layer.backlog.onSynAckRetransmit(this, conn, now);
  }

  /** The application takes the next established connection, if any. */
  accept(): TcpConnection | null {
    const c = this.acceptQueue.shift();
    if (!c) return null;
    c.listener = null;
    this.layer.backlog.onAccepted?.(this);
    return c;
  }

  /** A queued connection went away (reset, timed out). */
  forget(conn: TcpConnection): void {
    this.layer.backlog.forget?.(this, conn);
    if (this.synQueue.delete(conn)) return;
    const i = this.acceptQueue.indexOf(conn);
    if (i >= 0) this.acceptQueue.splice(i, 1);
  }

  close(now: number): void {
    this.closed = true;
    this.layer.backlog.onListenerClose?.(this, now);
    for (const c of [...this.synQueue, ...this.acceptQueue]) c.abort(now);
    this.synQueue.clear();
    this.acceptQueue.length = 0;
  }
}
