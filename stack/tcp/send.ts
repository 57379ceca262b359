/**
 * The sending half of a connection: ACK processing (RFC 9293 3.10.7.4 fifth: SND.UNA,
 * the SND.WL1/SND.WL2 window update, releasing acknowledged data), the effective MSS,
 * and the output loop: what the send and congestion windows allow, cut into segments
 * (TSO super-segments when the device takes them), sender SWS avoidance (RFC 9293
 * 3.8.6.2.1), Nagle (RFC 896, RFC 1122 4.2.3.4), and the FIN in sequence.
 */
import { ACK, FIN, PSH, SYN, type TcpRepr } from '../wire/tcp';
import { type Seq, seqAdd, seqGt, seqLe, seqLt, seqSize, seqSub, tsGe, tsLe } from '../wire/seq';
import type { TcpConnection } from './connection';
import { State } from './state';
import { computeRto, sampleRtt, tsNow } from './rtt';
import { CWND_FULL, RESENT } from './recovery';

/** Effective send MSS: the peer's MSS, the path MTU, and the timestamp option's 12 bytes. */
export function updateMss(c: TcpConnection, pathMtu = c.layer.pathMtu(c.remoteAddr)): void {
  if (c.blackHoleMtu > 0 && c.blackHoleMtu < pathMtu) pathMtu = c.blackHoleMtu;
  let mss = Math.min(c.peerMss, pathMtu - 40);
  if (c.tsOk) mss -= 12;
  mss = Math.max(mss, 64);
  if (mss !== c.mss) {
    c.mss = mss;
    c.cc.setMss(mss);
    if (c.sndMax === c.iss || c.state <= State.SynReceived) c.cc.cwnd = Math.max(c.cc.cwnd, 10 * mss);
  }
}

/** The ACK of an acceptable segment (RFC 9293 3.10.7.4, fifth check) in a synchronized state. */
export function processAck(c: TcpConnection, seg: TcpRepr, seq: Seq, len: number, now: number): void {
  const ctr = c.layer.counters;
  const ack = seg.ack;
  const acked = seqSub(ack, c.sndUna);
  const wnd = seg.window << c.sndWscale;
  const outstanding = c.sndMax !== c.sndUna;
  const isDup = acked === 0 && len === 0 && !(seg.flags & (SYN | FIN)) && wnd === c.sndWnd && outstanding;
  if (len === 0 && acked <= 0) ctr.TcpExtTCPPureAcks++;
  const recovery = c.recovery!;
  // SACK blocks (RFC 2018): the scoreboard, when SACK recovery is in use.
  const newSack = seg.sackCount > 0 && recovery.onSackBlocks(seg, ack);
  // Window update (RFC 9293 3.10.7.4, fifth, SND.WL1/SND.WL2 rule).
  if (seqLt(c.sndWl1, seq) || (c.sndWl1 === seq && seqLe(c.sndWl2, ack))) {
    const opened = c.sndWnd === 0 && wnd > 0;
    c.sndWnd = wnd;
    c.sndWl1 = seq;
    c.sndWl2 = ack;
    if (wnd > c.maxSndWnd) c.maxSndWnd = wnd;
    if (opened) {
      c.persistAt = Infinity;
      c.persistBackoff = 0;
    }
  }
  if (acked > 0) {
    // RTT sample (RFC 7323 4.1 with timestamps; RFC 6298 / Karn otherwise). The TSecr
    // must be a TSval this connection could have sent for the data it acknowledges: not
    // after our clock now, not before the first segment of the flight now being
    // acknowledged. Anything else (a forged or corrupted TSecr) is not a round trip:
    // one TSecr far in the past once made SRTT 268 million ms.
    if (c.tsOk && seg.hasTimestamp && seg.tsEcr !== 0) {
      const ourTs = tsNow(c, now);
      if (tsLe(seg.tsEcr, ourTs) && tsGe(seg.tsEcr, c.tsFlightStart)) sampleRtt(c, (ourTs - seg.tsEcr) >>> 0);
      else c.layer.counters.FsTsEcrImplausible++;
    } else if (c.rttStart >= 0 && seqGt(ack, c.rttSeq)) {
      sampleRtt(c, now - c.rttStart);
      c.rttStart = -1;
    }
    // Release acknowledged data (our FIN takes one sequence number, not a byte).
    let dataAcked = acked;
    if (c.finQueued && seqGt(ack, c.finSeq)) dataAcked -= 1;
    if (dataAcked > 0) {
      c.sendQueue.consume(dataAcked);
      c.bytesAcked += dataAcked;
    }
    c.sndUna = ack;
    if (seqLt(c.sndNxt, ack)) c.sndNxt = ack;
    c.backoff = 0;
    c.retries = 0;
    c.rto = computeRto(c);
    recovery.onAckAdvanced(ack, acked, dataAcked, now);
    if (c.sndUna === c.sndMax) c.disarmRto();
    else c.armRto(now);
    if (c.finQueued && seqGt(ack, c.finSeq)) c.ourFinAcked(now);
    else if (dataAcked > 0 && c.owner && c.sendQueue.length < c.sndBuf) c.owner.onSendSpace();
  } else if (isDup || (newSack && outstanding && acked === 0)) {
    recovery.onDuplicateAck(now);
  }
}

/** Sends whatever the windows allow, then a pure ACK if one is owed. */
export function output(c: TcpConnection, now: number): void {
  if (c.state < State.Established || c.state === State.TimeWait) {
    if (c.ackNow && c.state === State.TimeWait) sendAck(c, now);
    return;
  }
  let sentAny = false;
  const mss = c.mss;
  const tsoMax = c.layer.tsoMaxSegments(c) * mss;
  const recovery = c.recovery!;
  for (let guard = 0; guard < 100000; guard++) {
    // Loss recovery goes first (RFC 6675 NextSeg resends lost holes before new data),
    // and says what the congestion window is measured against.
    const inFlight = recovery.retransmitBeforeNewData(now);
    if (inFlight === CWND_FULL) break;
    if (inFlight === RESENT) {
      sentAny = true;
      continue;
    }
    const dataLeft = seqSub(dataLimit(c), c.sndNxt);
    const wndRight = seqAdd(c.sndUna, c.sndWnd);
    const wndLeft = seqSub(wndRight, c.sndNxt);
    const cwndLeft = flightLimit(c) - inFlight;
    let n = Math.min(dataLeft, wndLeft, cwndLeft);
    if (dataLeft <= 0) {
      // Only the FIN may remain.
      if (c.finQueued && c.sndNxt === c.finSeq) {
        // Below SND.MAX it went out before (an RTO pulled SND.NXT back): count it as resent.
        const again = seqLt(c.finSeq, c.sndMax);
        sendFin(c, now);
        if (again) {
          c.layer.counters.TcpRetransSegs++;
          c.retransSegs++;
        }
        sentAny = true;
      }
      break;
    }
    if (n <= 0) {
      if (c.sndWnd === 0 && c.flight === 0 && c.persistAt === Infinity) c.armPersist(now);
      break;
    }
    if (n > tsoMax) n = tsoMax;
    else if (n > mss && tsoMax === mss) n = mss;
    if (n < mss && n < dataLeft) {
      // Sender SWS avoidance (RFC 9293 3.8.6.2.1): wait for a full segment unless
      // the peer's window will never allow one.
      if (!(n >= c.maxSndWnd / 2 && c.maxSndWnd > 0) && c.flight > 0) break;
      if (c.flight === 0 && n < dataLeft && n < c.maxSndWnd / 2 && wndLeft < mss && !c.swsOverride) {
        c.armPersist(now);
        break;
      }
    }
    if (n < mss && n === dataLeft && !c.noDelay && c.flight > 0 && !c.finQueued) break; // Nagle (RFC 896)
    if (tsoMax > mss && n > mss) n -= n % mss || 0;
    const retrans = seqLt(c.sndNxt, c.sndMax);
    const withFin = c.finQueued && seqAdd(c.sndNxt, n) === c.finSeq;
    sendDataSegment(c, c.sndNxt, n, now, retrans, withFin);
    c.sndNxt = seqAdd(c.sndNxt, n + (withFin ? 1 : 0));
    if (seqGt(c.sndNxt, c.sndMax)) c.sndMax = c.sndNxt;
    sentAny = true;
    if (withFin) break;
  }
  if (sentAny) return;
  if (c.ackNow) sendAck(c, now);
}

/**
 * What may be in flight: the congestion window, and no more than this connection's share
 * of the device queue the peer answers into (TcpLayer.sndShare).
 */
export function flightLimit(c: TcpConnection): number {
  return Math.min(c.cc.cwnd, c.layer.sndShare(c.mss));
}

/** Sequence number just past the last queued data byte (our FIN's, once queued). */
export function dataLimit(c: TcpConnection): Seq {
  return c.finQueued ? c.finSeq : seqAdd(c.sndUna, c.sendQueue.length);
}

/** Resends one segment's worth from `seq` (fast retransmit, a NewReno partial ACK). */
export function retransmitAt(c: TcpConnection, seq: Seq, now: number): void {
  const left = seqSub(dataLimit(c), seq);
  if (left <= 0) {
    if (c.finQueued && seq === c.finSeq) sendFin(c, now, true);
    return;
  }
  const n = Math.min(c.mss, left);
  const withFin = c.finQueued && seqAdd(seq, n) === c.finSeq;
  sendDataSegment(c, seq, n, now, true, withFin);
}

/** One data segment (or TSO super-segment) of `len` bytes at `seq`, from the send queue. */
export function sendDataSegment(c: TcpConnection, seq: Seq, len: number, now: number, retransmission: boolean, withFin = false): void {
  c.layer.noteQueueUse(c, now);
  const r = segment(c, now);
  if (c.sndUna === c.sndMax) c.tsFlightStart = r.tsVal;
  let flags = ACK;
  if (withFin) flags |= FIN;
  if (seqAdd(seq, len) === dataLimit(c) || withFin) flags |= PSH;
  r.seq = seq;
  r.ack = c.rcvNxt;
  r.flags = flags;
  r.window = c.advertiseWindow();
  r.payloadLength = len;
  c.layer.emit(c, r, seqSize(c.sndUna, seq));
  if (c.observer !== null) c.observer.sent(c, seq, len + (withFin ? 1 : 0), retransmission, now);
  if (retransmission) {
    const segs = Math.ceil(len / c.mss);
    c.layer.counters.TcpRetransSegs += segs;
    c.retransSegs += segs;
    if (c.rttStart >= 0 && seqLe(seq, c.rttSeq)) c.rttStart = -1; // Karn
  } else if (c.rttStart < 0 && !c.tsOk) {
    c.rttStart = now;
    c.rttSeq = seq;
  }
  afterSend(c, now);
  if (c.rtoAt === Infinity) c.armRto(now);
}

/** Our FIN alone (RFC 9293 3.10.4), or again. */
export function sendFin(c: TcpConnection, now: number, retransmission = false): void {
  const r = segment(c, now);
  if (c.sndUna === c.sndMax) c.tsFlightStart = r.tsVal;
  r.seq = c.finSeq;
  r.ack = c.rcvNxt;
  r.flags = FIN | ACK;
  r.window = c.advertiseWindow();
  r.payloadLength = 0;
  c.layer.emit(c, r, 0);
  if (c.observer !== null) c.observer.sent(c, c.finSeq, 1, retransmission || seqLt(c.finSeq, c.sndMax), now);
  if (!retransmission) {
    c.sndNxt = seqAdd(c.finSeq, 1);
    if (seqGt(c.sndNxt, c.sndMax)) c.sndMax = c.sndNxt;
  } else c.layer.counters.TcpRetransSegs++;
  afterSend(c, now);
  if (c.rtoAt === Infinity) c.armRto(now);
}

/**
 * A pure ACK carrying the current window and SACK blocks. Its sequence number is
 * SND.MAX, not SND.NXT (as BSD's tcp_output does; Linux never pulls SND.NXT back): after
 * a retransmission timeout SND.NXT is back at SND.UNA, below what the peer may already
 * have received, and a peer drops a segment below its RCV.NXT as unacceptable (RFC 9293
 * 3.10.7.4) together with the ACK it carries. Under loss and reordering that left both
 * ends dropping each other's ACKs until the connection timed out.
 */
export function sendAck(c: TcpConnection, now: number): void {
  if (c.state === State.Closed || c.state === State.SynSent) return;
  const r = segment(c, now);
  r.seq = c.sndMax;
  r.ack = c.rcvNxt;
  r.flags = ACK;
  r.window = c.advertiseWindow();
  r.payloadLength = 0;
  c.layer.emit(c, r, 0);
  afterSend(c, now);
}

/**
 * <SEQ=SND.UNA-1><ACK=RCV.NXT><CTL=ACK>: a keepalive (RFC 1122 4.2.3.6) or zero-window
 * probe (RFC 9293 3.8.6.1): a sequence number already acknowledged, which the peer
 * answers with an ACK carrying its window.
 */
export function sendProbe(c: TcpConnection, now: number): void {
  const r = segment(c, now);
  r.seq = seqAdd(c.sndUna, -1);
  r.ack = c.rcvNxt;
  r.flags = ACK;
  r.window = c.advertiseWindow();
  r.payloadLength = 0;
  c.layer.emit(c, r, 0);
}

/** Every segment we send carries RCV.NXT: what was owed is settled. */
function afterSend(c: TcpConnection, now: number): void {
  // The segment just sent opened the window past where the peer had stopped: the
  // receiver's round trip runs from here (tuneRcvWindow).
  if (c.stalled && c.stalledAt < 0 && seqGt(c.rcvAdvEdge, c.stalledEdge)) c.stalledAt = now;
  c.lastAckSent = c.rcvNxt;
  c.dupAckOwed = false;
  c.ackNow = false;
  c.segsSinceAck = 0;
  if (c.delackAt !== Infinity) {
    c.delackAt = Infinity;
    c.rearm();
  }
}

/**
 * The layer's output representation with the options of a segment in a synchronized
 * state: timestamps (RFC 7323 3) and our SACK blocks (RFC 2018 4; three fit beside a
 * timestamp in the 40 option bytes, four without). The caller sets the rest and emits.
 */
function segment(c: TcpConnection, now: number): TcpRepr {
  const r = c.layer.out;
  r.mss = -1;
  r.wscale = -1;
  r.sackPermitted = false;
  r.hasTimestamp = c.tsOk;
  if (c.tsOk) {
    r.tsVal = tsNow(c, now);
    r.tsEcr = c.tsRecent;
  }
  r.sackCount = c.sackOk && !c.ooo.empty ? c.ooo.sackBlocks(c.rcvNxt, r.sack, c.tsOk ? 3 : 4) : 0;
  return r;
}
