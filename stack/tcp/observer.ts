/**
 * What a per-connection observer sees (`faultstack trace`): the core calls it only when
 * one is attached (TcpConnection.observer, null by default), so a connection nobody
 * traces pays one null check per segment in, per output pass and per timer expiry, and
 * per data segment out. The observer is the runtime's (stack/runtime/trace.ts): the
 * core defines the seam and never knows who listens.
 */
import type { Seq } from '../wire/seq';
import type { TcpConnection } from './connection';

export interface ConnectionObserver {
  /**
   * The control block may have changed: after a segment was processed (RFC 9293 3.10.7),
   * after an output pass, after the connection's timer fired. The observer compares
   * what it cares about (SND.UNA, SND.NXT, RCV.NXT, cwnd, ssthresh, SRTT, RTO, flight).
   */
  update(c: TcpConnection, now: number): void;
  /** A data segment (or a TSO super-segment, or a FIN) left at `seq` with `len` sequence numbers; `retransmission`: sent before. */
  sent(c: TcpConnection, seq: Seq, len: number, retransmission: boolean, now: number): void;
}
