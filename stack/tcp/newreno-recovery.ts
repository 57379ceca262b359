/**
 * Loss recovery without SACK: RFC 6582 (NewReno). Three duplicate ACKs start fast
 * retransmit with cwnd = ssthresh + 3 * SMSS (step 1), each further duplicate ACK
 * inflates cwnd by one segment (step 4), and a partial ACK resends the next
 * unacknowledged segment and deflates cwnd by what it acknowledged (step 5), until SND.UNA
 * reaches "recover" (the RecoveryPoint).
 */
import type { TcpRepr } from '../wire/tcp';
import type { Seq } from '../wire/seq';
import type { TcpConnection } from './connection';
import { RecoveryBase } from './recovery';
import { retransmitAt } from './send';

export class NewRenoRecovery extends RecoveryBase {
  readonly kind = 'newreno' as const;

  constructor(c: TcpConnection) {
    super(c);
  }

  /** SACK was not negotiated: blocks a peer sends anyway are not looked at. */
  onSackBlocks(_seg: TcpRepr, _ack: Seq): boolean {
    return false;
  }

  protected advance(): void {
    /* no scoreboard */
  }

  /** Only DupThresh duplicate ACKs detect a loss. */
  protected lostAtUna(): boolean {
    return false;
  }

  protected fastRetransmit(ssthresh: number, now: number): void {
    const c = this.c;
    c.layer.counters.TcpExtTCPRenoRecovery++;
    retransmitAt(c, c.sndUna, now);
    c.cc.cwnd = ssthresh + 3 * c.mss;
  }

  /** RFC 6582 3.2 step 5: retransmit the next hole, deflate by the amount acknowledged, add back one SMSS if that was at least one. */
  protected onPartialAck(acked: number, now: number): void {
    const c = this.c;
    retransmitAt(c, c.sndUna, now);
    c.cc.cwnd = Math.max(c.mss, c.cc.cwnd - acked + (acked >= c.mss ? c.mss : 0));
  }

  /** RFC 6582 3.2 step 4: inflate by one segment per duplicate ACK. */
  protected onDupAckInRecovery(): void {
    this.c.cc.cwnd += this.c.mss;
  }

  retransmitBeforeNewData(): number {
    return this.c.flight;
  }
}
