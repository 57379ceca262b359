/**
 * Loss recovery: fast retransmit and fast recovery, by RFC 6675 (conservative SACK-based
 * recovery: the scoreboard, IsLost, pipe, NextSeg) when SACK was negotiated and by RFC
 * 6582 (NewReno) otherwise.
 */
import { type Seq, seqAdd, seqGt, seqLt, seqSize } from '../wire/seq';
import type { TcpConnection } from './connection';
import { retransmitAt } from './send';

/** RFC 6675 2: DupThresh. */
export const DUP_THRESH = 3;

/** Loss is detected (DupThresh duplicate ACKs, or RFC 6675 IsLost for SND.UNA): enter fast recovery. */
export function enterRecovery(c: TcpConnection, now: number): void {
  const ctr = c.layer.counters;
  c.inRecovery = true;
  c.recoverPoint = c.sndMax;
  const ssthresh = c.cc.onCongestionEvent(c.flight, now);
  ctr.TcpExtTCPFastRetrans++;
  c.rttStart = -1; // Karn
  if (c.sackOk) {
    ctr.TcpExtTCPSackRecovery++;
    c.cc.cwnd = ssthresh;
    // RFC 6675 5 (4.2): retransmit the first segment presumed dropped at once;
    // further holes follow as IsLost marks them.
    c.highRxt = c.sndUna;
    const n = Math.min(c.mss, seqSize(c.sndUna, c.scoreboard.nextSackedStart(c.sndUna, c.sndMax)));
    if (n > 0) {
      retransmitAt(c, c.sndUna, now);
      c.highRxt = seqAdd(c.sndUna, n);
    }
  } else {
    ctr.TcpExtTCPRenoRecovery++;
    retransmitAt(c, c.sndUna, now);
    c.cc.cwnd = ssthresh + 3 * c.mss;
  }
}

/** RFC 6675 pipe: bytes in flight, not counting SACKed data or holes deemed lost and not yet resent. */
export function pipe(c: TcpConnection): number {
  const sb = c.scoreboard;
  const out = seqSize(c.sndUna, c.sndMax);
  if (sb.empty) return out;
  const high = sb.lossBoundary(c.mss, DUP_THRESH, c.sndUna);
  const from = seqGt(c.highRxt, c.sndUna) ? c.highRxt : c.sndUna;
  const lostNotResent = seqLt(from, high) ? sb.holeBytes(from, high) : 0;
  return Math.max(0, out - sb.sackedBytes - lostNotResent);
}

/** First un-SACKed byte at or above HighRxt that RFC 6675 IsLost deems lost, or null. */
export function nextHole(c: TcpConnection): Seq | null {
  const sb = c.scoreboard;
  if (sb.empty) return null;
  let s = seqGt(c.highRxt, c.sndUna) ? c.highRxt : c.sndUna;
  const high = sb.lossBoundary(c.mss, DUP_THRESH, c.sndUna);
  while (seqLt(s, high)) {
    if (!sb.isSacked(s)) return s;
    s = sb.sackedEnd(s);
  }
  return null;
}
