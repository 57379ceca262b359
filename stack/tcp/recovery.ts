/**
 * Loss recovery: what a connection does when duplicate ACKs or SACK blocks say a
 * segment was lost (fast retransmit and fast recovery), and how that ends. One
 * interface, two implementations, chosen once when the connection is synchronized
 * (TcpConnection.establish), as gVisor's sender picks its lossRecovery:
 *   SackRecovery    RFC 6675 (conservative SACK-based recovery: scoreboard, IsLost,
 *                   pipe, NextSeg), when both sides agreed on SACK (RFC 2018)
 *   NewRenoRecovery RFC 6582 (NewReno: partial ACKs, window inflation), otherwise
 * The congestion controller (congestion.ts) decides cwnd and ssthresh; recovery decides
 * when it is asked and what is resent. Both share the rules here: DupThresh duplicate
 * ACKs, the RecoveryPoint, and no new fast recovery for data sent before an RTO until
 * it is acknowledged (RFC 6582 3.2 step 2, RFC 6675 5.1).
 *
 * Imports types only: the implementations extend RecoveryBase while their modules load.
 */
import type { TcpRepr } from '../wire/tcp';
import { type Seq, asSeq, seqGe, seqGt, seqLe } from '../wire/seq';
import type { TcpConnection } from './connection';

/** RFC 6675 2 (and RFC 5681 3.2): DupThresh. */
export const DUP_THRESH = 3;

/** `retransmitBeforeNewData`: a retransmission was sent; ask again. */
export const RESENT = -1;
/** `retransmitBeforeNewData`: the congestion window has no room for a segment. */
export const CWND_FULL = -2;

export interface LossRecovery {
  readonly kind: 'sack' | 'newreno';
  /** In fast recovery, until SND.UNA reaches the RecoveryPoint. */
  readonly inRecovery: boolean;
  /**
   * The SACK blocks of an arriving ACK (RFC 2018), before SND.UNA moves to `ack`.
   * True when they report data not SACKed before (a duplicate ACK by RFC 6675 2).
   */
  onSackBlocks(seg: TcpRepr, ack: Seq): boolean;
  /**
   * SND.UNA moved forward to `ack` by `acked` sequence numbers (`dataAcked` of them
   * data, our FIN being the other). Ends recovery at the RecoveryPoint, handles a
   * partial ACK before it, or grows cwnd outside recovery.
   */
  onAckAdvanced(ack: Seq, acked: number, dataAcked: number, now: number): void;
  /** A duplicate ACK (RFC 5681 2), or an ACK that SACKed new data: may enter fast recovery. */
  onDuplicateAck(now: number): void;
  /**
   * The output loop asks before each new segment. In SACK recovery the next hole RFC
   * 6675 deems lost is resent first (NextSeg): RESENT, ask again. CWND_FULL when the
   * congestion window leaves no room for a segment. Otherwise the bytes in flight the
   * congestion window is measured against (RFC 6675 pipe in SACK recovery, else
   * FlightSize).
   */
  retransmitBeforeNewData(now: number): number;
  /** The retransmission timer expired (RFC 6298 5.4-5.7): recovery is over, everything is resent from SND.UNA. */
  onRetransmitTimeout(): void;
  /** The connection is gone. */
  clear(): void;
}

/** What both recoveries share; the differences are the abstract methods. */
export abstract class RecoveryBase implements LossRecovery {
  abstract readonly kind: 'sack' | 'newreno';
  inRecovery = false;
  /** Duplicate ACKs since SND.UNA last moved. */
  dupAcks = 0;
  /** RecoveryPoint (RFC 6675) / "recover" (RFC 6582): SND.MAX when recovery began, or at the last RTO. */
  recoverPoint: Seq = asSeq(0);
  /** Set by an RTO until SND.UNA passes the RecoveryPoint it recorded. */
  rtoRecovery = false;

  constructor(protected readonly c: TcpConnection) {}

  abstract onSackBlocks(seg: TcpRepr, ack: Seq): boolean;
  abstract retransmitBeforeNewData(now: number): number;
  /** RFC 6675 IsLost(SND.UNA): loss detected before DupThresh duplicate ACKs. */
  protected abstract lostAtUna(): boolean;
  /** Entering recovery: the first retransmission and the cwnd to recover with (`ssthresh` is set). */
  protected abstract fastRetransmit(ssthresh: number, now: number): void;
  /** An ACK that moved SND.UNA but not to the RecoveryPoint. */
  protected abstract onPartialAck(acked: number, now: number): void;
  /** A duplicate ACK while in recovery (or while an RTO's data is outstanding). */
  protected abstract onDupAckInRecovery(): void;
  /** SND.UNA moved to `ack`. */
  protected abstract advance(ack: Seq): void;

  onAckAdvanced(ack: Seq, acked: number, dataAcked: number, now: number): void {
    const c = this.c;
    this.advance(ack);
    this.dupAcks = 0;
    if (this.rtoRecovery && seqGt(ack, this.recoverPoint)) this.rtoRecovery = false;
    if (this.inRecovery) {
      if (seqGe(ack, this.recoverPoint)) {
        // Full acknowledgment: recovery is over (RFC 6582 3.2 step 3, RFC 6675 5 (3)).
        this.inRecovery = false;
        c.cc.onRecoveryExit(c.flight);
      } else this.onPartialAck(acked, now);
    } else {
      c.cc.onAck(dataAcked > 0 ? dataAcked : acked, c.flight, now, c.srtt);
    }
  }

  onDuplicateAck(now: number): void {
    const c = this.c;
    this.dupAcks++;
    // No new fast recovery for data sent before an RTO until it is acknowledged
    // (RFC 6582 3.2 step 2, RFC 6675 5.1: RecoveryPoint = HighData at the timeout).
    if (!this.inRecovery && !(this.rtoRecovery && seqLe(c.sndUna, this.recoverPoint))) {
      // DupThresh duplicate ACKs, or (with SACK) RFC 6675 IsLost for the first unacknowledged byte.
      if (this.dupAcks >= DUP_THRESH || this.lostAtUna()) this.enterRecovery(now);
    } else this.onDupAckInRecovery();
  }

  /** Loss detected: fast retransmit, and fast recovery until the RecoveryPoint is acknowledged. */
  private enterRecovery(now: number): void {
    const c = this.c;
    this.inRecovery = true;
    this.recoverPoint = c.sndMax;
    const ssthresh = c.cc.onCongestionEvent(c.flight, now);
    c.layer.counters.TcpExtTCPFastRetrans++;
    c.rttStart = -1; // Karn
    this.fastRetransmit(ssthresh, now);
  }

  onRetransmitTimeout(): void {
    this.inRecovery = false;
    this.dupAcks = 0;
    this.rtoRecovery = true;
    this.recoverPoint = this.c.sndMax;
  }

  clear(): void {
    /* nothing kept beyond the counters above */
  }
}
