/**
 * Backlog policies: what a listener does with a SYN, and with the final ACK of a
 * handshake, when its queues are full, and when the application hears of a connection.
 * The policy in use is the TCP layer's `hooks.listenerAdmission`; its default is the
 * Linux policy below. The Windows listener with SYN attack protection (KB 903927) is a
 * fault module's: stack/faults/kb903927/windows-listener.ts.
 */
import type { TcpRepr } from '../wire/tcp';
import type { TcpConnection } from './connection';
import type { HalfOpen } from './halfopen';
import type { AdmitVerdict, Listener, SynVerdict } from './listener';

export interface BacklogPolicy {
  readonly name: string;
  onSyn(l: Listener, seg: TcpRepr, now: number): SynVerdict;
  afterSynQueued(l: Listener, req: HalfOpen, now: number): void;
  onFinalAck(l: Listener, req: HalfOpen, now: number): AdmitVerdict;
  /** The handshake completed; `req` is the half-open entry it came from (null for a SYN cookie). */
  afterEstablished(l: Listener, conn: TcpConnection, req: HalfOpen | null, now: number): void;
  onSynAckRetransmit(l: Listener, req: HalfOpen, now: number): void;
  /** SYN-ACK retransmissions before a half-open connection is dropped (l null: a simultaneous open). */
  synAckRetries(l: Listener | null): number;
  /** First SYN-ACK retransmission timeout, ms (doubles after each). */
  synAckRto(l: Listener | null): number;
  /** True while per-route options must not be applied to the SYN-ACK (Windows protection). */
  suppressSynOptions(l: Listener): boolean;
  /** The application took a connection off the accept queue. */
  onAccepted?(l: Listener): void;
  /** The listener is closing: connections the policy holds aside must go too. */
  onListenerClose?(l: Listener, now: number): void;
  /** A connection of the accept queue (or held aside by the policy) went away. */
  forget?(l: Listener, conn: TcpConnection): void;
  /** A half-open entry left the SYN queue: handshake completed (`established`), or gone. */
  halfOpenGone?(l: Listener, req: HalfOpen, established: boolean): void;
  /** Data arrived on an established connection the application has not accepted yet. */
  dataBeforeAccept?(l: Listener, conn: TcpConnection, now: number): void;
  /** What bounds the SYN queue, for display (stats, the web view): its size and the rule's name. */
  synQueueLimit?(l: Listener): { limit: number; by: string };
}

export interface LinuxBacklogParams {
  /** net.ipv4.tcp_max_syn_backlog */
  maxSynBacklog: number;
  /** net.ipv4.tcp_syncookies: 0 off, 1 when the SYN queue overflows, 2 always. */
  syncookies: number;
  /** net.ipv4.tcp_abort_on_overflow */
  abortOnOverflow: boolean;
  /** net.core.somaxconn caps the backlog given to listen(). */
  somaxconn: number;
  /** net.ipv4.tcp_synack_retries */
  synAckRetries: number;
}

/** Linux's defaults: tcp_max_syn_backlog as computed on a small machine, cookies on overflow, somaxconn 4096, tcp_synack_retries 5. */
export const LINUX_BACKLOG_DEFAULTS: Readonly<LinuxBacklogParams> = {
  maxSynBacklog: 1024,
  syncookies: 1,
  abortOnOverflow: false,
  somaxconn: 4096,
  synAckRetries: 5,
};

/**
 * Linux (net/ipv4/tcp_input.c tcp_conn_request, tcp_minisocks.c tcp_check_req):
 * a SYN is dropped while the accept queue is full; the SYN queue is bounded by
 * tcp_max_syn_backlog, past which SYN cookies answer; a final ACK that finds the
 * accept queue full is dropped (the SYN-ACK timer resends, the client's ACK comes
 * again) or, with tcp_abort_on_overflow, answered with a reset.
 */
export class LinuxBacklog implements BacklogPolicy {
  readonly name = 'linux';
  constructor(readonly params: () => LinuxBacklogParams) {}

  synQueueLimit(): { limit: number; by: string } {
    return { limit: this.params().maxSynBacklog, by: 'tcp_max_syn_backlog' };
  }

  private acceptFull(l: Listener): boolean {
    return l.acceptQueue.length >= Math.min(l.backlog, this.params().somaxconn);
  }

  onSyn(l: Listener, _seg: TcpRepr): SynVerdict {
    const p = this.params();
    const c = l.layer.counters;
    if (p.syncookies === 2) return 'cookie';
    if (this.acceptFull(l)) {
      c.TcpExtListenOverflows++;
      c.TcpExtListenDrops++;
      return 'drop';
    }
    if (l.synQueue.size >= p.maxSynBacklog) {
      if (p.syncookies === 1) return 'cookie';
      c.TcpExtListenDrops++;
      return 'drop';
    }
    return 'accept';
  }
  afterSynQueued(): void {}
  onFinalAck(l: Listener): AdmitVerdict {
    if (!this.acceptFull(l)) return 'ok';
    l.layer.counters.TcpExtListenOverflows++;
    l.layer.counters.TcpExtListenDrops++;
    return this.params().abortOnOverflow ? 'reset' : 'drop';
  }
  afterEstablished(): void {}
  onSynAckRetransmit(): void {}
  synAckRetries(): number {
    return this.params().synAckRetries;
  }
  synAckRto(): number {
    return 1000;
  }
  suppressSynOptions(): boolean {
    return false;
  }
}
