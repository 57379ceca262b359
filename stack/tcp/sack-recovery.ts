/**
 * Loss recovery with SACK: RFC 6675 (conservative SACK-based loss recovery). The
 * scoreboard (buffers.ts) holds what the peer SACKed above SND.UNA; a hole is lost when
 * more than (DupThresh - 1) * SMSS bytes are SACKed above it (IsLost); in recovery the
 * congestion window is measured against pipe (the bytes thought to be in the network)
 * and the output loop resends lost holes before new data (NextSeg, rule 1), HighRxt
 * marking how far it got.
 */
import type { TcpRepr } from '../wire/tcp';
import { type Seq, asSeq, seqAdd, seqGt, seqLe, seqLt, seqSize } from '../wire/seq';
import { Scoreboard } from './buffers';
import type { TcpConnection } from './connection';
import { CWND_FULL, DUP_THRESH, RESENT, RecoveryBase } from './recovery';
import { flightLimit, retransmitAt, sendDataSegment } from './send';

export class SackRecovery extends RecoveryBase {
  readonly kind = 'sack' as const;
  readonly scoreboard = new Scoreboard();
  /** HighRxt (RFC 6675 2): the highest sequence number resent in this recovery. */
  highRxt: Seq = asSeq(0);

  constructor(c: TcpConnection) {
    super(c);
  }

  /** RFC 2018 blocks into the scoreboard, except those at or below SEG.ACK (D-SACK, RFC 2883) or outside (SND.UNA, SND.MAX]. */
  onSackBlocks(seg: TcpRepr, ack: Seq): boolean {
    const c = this.c;
    const ctr = c.layer.counters;
    let newSack = false;
    for (let i = 0; i < seg.sackCount; i++) {
      const l = asSeq(seg.sack[i * 2]),
        r = asSeq(seg.sack[i * 2 + 1]);
      if (seqLe(r, ack)) {
        ctr.TcpExtTCPDSACKRecv++;
        continue;
      }
      if (seqLt(l, c.sndUna) || seqGt(r, c.sndMax)) {
        ctr.TcpExtTCPSACKDiscard++;
        continue;
      }
      if (this.scoreboard.add(l, r)) newSack = true;
    }
    return newSack;
  }

  protected advance(ack: Seq): void {
    this.scoreboard.advance(ack);
  }

  protected lostAtUna(): boolean {
    const c = this.c;
    return seqGt(this.scoreboard.lossBoundary(c.mss, DUP_THRESH, c.sndUna), c.sndUna);
  }

  protected fastRetransmit(ssthresh: number, now: number): void {
    const c = this.c;
    c.layer.counters.TcpExtTCPSackRecovery++;
    c.cc.cwnd = ssthresh;
    // RFC 6675 5 (4.2): retransmit the first segment presumed dropped at once;
    // further holes follow as IsLost marks them.
    this.highRxt = c.sndUna;
    const n = Math.min(c.mss, seqSize(c.sndUna, this.scoreboard.nextSackedStart(c.sndUna, c.sndMax)));
    if (n > 0) {
      retransmitAt(c, c.sndUna, now);
      this.highRxt = seqAdd(c.sndUna, n);
    }
  }

  /** RFC 6675: a partial ACK only moves the scoreboard; the holes still lost go out through NextSeg. */
  protected onPartialAck(): void {
    /* nothing more */
  }

  /** RFC 6675 has no window inflation: pipe already leaves the SACKed data out. */
  protected onDupAckInRecovery(): void {
    /* nothing */
  }

  retransmitBeforeNewData(now: number): number {
    const c = this.c;
    if (!this.inRecovery) return c.flight;
    const mss = c.mss;
    const inPipe = this.pipe();
    if (flightLimit(c) - inPipe < mss) return CWND_FULL;
    const hole = this.nextHole();
    if (hole === null) return inPipe;
    const n = Math.min(mss, seqSize(hole, this.scoreboard.nextSackedStart(hole, c.sndMax)));
    sendDataSegment(c, hole, n, now, true);
    this.highRxt = seqAdd(hole, n);
    return RESENT;
  }

  /** RFC 6675 pipe: bytes in flight, not counting SACKed data or holes deemed lost and not yet resent. */
  pipe(): number {
    const c = this.c;
    const sb = this.scoreboard;
    const out = seqSize(c.sndUna, c.sndMax);
    if (sb.empty) return out;
    const high = sb.lossBoundary(c.mss, DUP_THRESH, c.sndUna);
    const from = seqGt(this.highRxt, c.sndUna) ? this.highRxt : c.sndUna;
    const lostNotResent = seqLt(from, high) ? sb.holeBytes(from, high) : 0;
    return Math.max(0, out - sb.sackedBytes - lostNotResent);
  }

  /** RFC 6675 NextSeg rule 1: the first un-SACKed byte at or above HighRxt that IsLost deems lost, or null. */
  private nextHole(): Seq | null {
    const c = this.c;
    const sb = this.scoreboard;
    if (sb.empty) return null;
    let s = seqGt(this.highRxt, c.sndUna) ? this.highRxt : c.sndUna;
    const high = sb.lossBoundary(c.mss, DUP_THRESH, c.sndUna);
    while (seqLt(s, high)) {
      if (!sb.isSacked(s)) return s;
      s = sb.sackedEnd(s);
    }
    return null;
  }

  override onRetransmitTimeout(): void {
    super.onRetransmitTimeout();
    // RFC 6675 5.1: after an RTO the scoreboard is not trusted; everything is resent from SND.UNA.
    this.scoreboard.clear();
  }

  override clear(): void {
    this.scoreboard.clear();
  }
}
