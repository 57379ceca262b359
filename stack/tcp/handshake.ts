/**
 * Opening a connection (RFC 9293 3.5): the active open and its SYN (3.10.1), a segment
 * arriving in SYN-SENT (3.10.7.3), simultaneous open, the SYN options (MSS 3.7.1, window
 * scale and timestamps RFC 7323, SACK-permitted RFC 2018) and the completion of a passive
 * open from the listener's half-open entry (halfopen.ts holds SYN-RECEIVED until then).
 */
import { ACK, RST, SYN, type TcpRepr } from '../wire/tcp';
import { type Seq, asSeq, seqAdd, seqGt, seqLe, tsGe } from '../wire/seq';
import type { TcpConnection } from './connection';
import { HalfOpenFlag, type HalfOpen } from './halfopen';
import type { Listener } from './listener';
import { State } from './state';
import { sampleRtt, tsNow } from './rtt';

const SEQ0 = asSeq(0);

/** Active open (RFC 9293 3.10.1): send SYN. */
export function openActive(c: TcpConnection, now: number): void {
  c.iss = c.layer.isn(c, now);
  c.sndUna = c.iss;
  c.sndNxt = c.iss;
  c.sndMax = c.iss;
  c.rcvWscale = c.layer.config.windowScale;
  c.state = State.SynSent;
  c.retries = 0;
  sendSyn(c, now);
}

/**
 * A passive open whose handshake just completed: the listener's half-open entry
 * (halfopen.ts) holds what the SYN negotiated, `ack` is the final ACK (its SEG.ACK is
 * ISS+1, checked there). The connection starts ESTABLISHED.
 */
export function establishPassive(c: TcpConnection, req: HalfOpen, ack: TcpRepr, now: number): void {
  const cfg = c.layer.config;
  c.listener = req.listener;
  c.irs = req.irs;
  c.rcvNxt = req.rcvNxt;
  c.iss = req.iss;
  c.sndUna = ack.ack;
  c.sndNxt = ack.ack;
  c.sndMax = ack.ack;
  c.peerMss = req.peerMss;
  c.wsOk = req.has(HalfOpenFlag.WindowScale);
  c.sndWscale = req.sndWscale;
  c.rcvWscale = c.wsOk ? cfg.windowScale : 0;
  c.sackOk = req.has(HalfOpenFlag.Sack);
  c.tsOk = req.has(HalfOpenFlag.Timestamps);
  if (c.tsOk) {
    // TS.Recent from the SYN, or from the final ACK (RFC 7323 4.3: SEG.SEQ = Last.ACK.sent).
    c.tsRecent = ack.hasTimestamp && tsGe(ack.tsVal, req.tsRecent) ? ack.tsVal : req.tsRecent;
    c.tsRecentAt = now;
  }
  // Our SYN-ACK offered min(rcvBuf, 65535) unscaled: the right edge we are committed to.
  c.rcvAdvEdge = seqAdd(c.rcvNxt, Math.min(c.rcvBuf, 65535));
  c.lastAckSent = c.rcvNxt;
  c.sndWnd = ack.window << c.sndWscale;
  c.maxSndWnd = c.sndWnd;
  c.sndWl1 = ack.seq;
  c.sndWl2 = ack.ack;
  c.updateMss();
  // Karn: an RTT sample only if no SYN-ACK was resent; a resent one also means the
  // initial window is one segment (establish).
  if (req.backoff === 0) sampleRtt(c, now - req.sentAt);
  c.backoff = req.backoff;
  c.establish(now);
}

/**
 * The final ACK of a handshake we answered with a SYN cookie (tcp.ts checked the cookie
 * in SEG.ACK - 1): the connection starts ESTABLISHED with what the cookie kept, which is
 * the peer's MSS and nothing else. No window scaling, SACK or timestamps (our cookie
 * SYN-ACK offered none), and our window as that SYN-ACK gave it (RFC 4987 3.6).
 */
export function openFromCookie(c: TcpConnection, l: Listener, ack: TcpRepr, iss: Seq, peerMss: number, now: number): void {
  c.listener = l;
  c.peerMss = peerMss;
  c.irs = seqAdd(ack.seq, -1);
  c.rcvNxt = ack.seq;
  c.iss = iss;
  c.sndUna = ack.ack;
  c.sndNxt = ack.ack;
  c.sndMax = ack.ack;
  c.sndWnd = ack.window;
  c.maxSndWnd = ack.window;
  c.sndWl1 = ack.seq;
  c.sndWl2 = ack.ack;
  c.rcvAdvEdge = seqAdd(ack.seq, Math.min(c.layer.config.rcvBuf, 65535));
  c.updateMss();
  c.establish(now);
}

function takeSynOptions(c: TcpConnection, seg: TcpRepr, now: number): void {
  const cfg = c.layer.config;
  c.peerMss = seg.mss > 0 ? seg.mss : 536; // RFC 9293 3.7.1 default
  c.wsOk = seg.wscale >= 0 && cfg.windowScale >= 0 && !c.layer.suppressSynOptions(c);
  if (c.wsOk) {
    c.sndWscale = Math.min(seg.wscale, 14); // RFC 7323 2.3
    c.rcvWscale = cfg.windowScale;
  } else {
    c.sndWscale = 0;
    c.rcvWscale = 0;
  }
  c.sackOk = seg.sackPermitted && cfg.sack;
  c.tsOk = seg.hasTimestamp && cfg.timestamps;
  if (c.tsOk) {
    c.tsRecent = seg.tsVal;
    c.tsRecentAt = now;
  }
  c.updateMss();
}

/** Our SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED after a simultaneous open), first or again. */
function sendSyn(c: TcpConnection, now: number): void {
  const cfg = c.layer.config;
  const r = c.layer.out;
  r.mss = c.layer.pathMtu(c.remoteAddr) - 40;
  const suppressed = c.layer.suppressSynOptions(c);
  const active = c.state === State.SynSent;
  // A SYN-ACK carries only the options the peer offered (RFC 7323, RFC 2018).
  r.wscale = cfg.windowScale >= 0 && !suppressed && (active || c.wsOk) ? cfg.windowScale : -1;
  r.sackPermitted = cfg.sack && (active || c.sackOk);
  r.hasTimestamp = cfg.timestamps && (active || c.tsOk);
  r.tsVal = tsNow(c, now);
  if (c.sndMax === c.iss) c.tsFlightStart = r.tsVal;
  r.tsEcr = active ? 0 : c.tsRecent;
  r.sackCount = 0;
  // The window of a SYN or SYN-ACK is never scaled (RFC 7323 2.2).
  r.seq = c.iss;
  r.ack = active ? SEQ0 : c.rcvNxt;
  r.flags = active ? SYN : SYN | ACK;
  r.window = 65535 > c.rcvBuf ? c.rcvBuf : 65535;
  r.payloadLength = 0;
  c.layer.emit(c, r, 0);
  if (!active) {
    c.rcvAdvEdge = seqAdd(c.rcvNxt, Math.min(c.rcvBuf, 65535));
    c.lastAckSent = c.rcvNxt;
  }
  c.sndNxt = seqAdd(c.iss, 1);
  if (seqGt(c.sndNxt, c.sndMax)) c.sndMax = c.sndNxt;
  if (c.rttStart < 0 && c.retries === 0) {
    c.rttStart = now;
    c.rttSeq = c.iss;
  }
  c.armRto(now);
}

/** SYN retransmission in SYN-SENT (the RTO expired, timer.ts). */
export function retransmitSyn(c: TcpConnection, now: number): void {
  c.backoff++;
  c.rttStart = -1;
  sendSyn(c, now);
}

/** Resends the SYN-ACK (SYN-RECEIVED retransmission, or a retransmitted SYN from the peer). */
export function retransmitSynAck(c: TcpConnection, now: number): void {
  c.layer.counters.FsSynAckRetrans++;
  c.layer.counters.TcpRetransSegs++;
  c.backoff++;
  c.rttStart = -1;
  sendSyn(c, now);
}

/** RFC 9293 3.10.7.3: a segment arrives in SYN-SENT. */
export function synSentArrives(c: TcpConnection, seg: TcpRepr, now: number): void {
  const f = seg.flags;
  if (f & ACK) {
    if (seqLe(seg.ack, c.iss) || seqGt(seg.ack, c.sndMax)) {
      if (!(f & RST)) c.layer.sendReset(c.localAddr, c.remoteAddr, c.localPort, c.remotePort, seg.ack);
      return;
    }
  }
  if (f & RST) {
    if (f & ACK) {
      // SYN-SENT -> CLOSED counts as a failed attempt (RFC 4022 tcpAttemptFails).
      c.layer.counters.TcpAttemptFails++;
      c.fail('ECONNREFUSED', `connect ECONNREFUSED ${c.layer.describePeer(c)}`, now);
    }
    return;
  }
  if (!(f & SYN)) return;
  c.irs = seg.seq;
  c.rcvNxt = seqAdd(seg.seq, 1);
  // Our SYN offered min(rcvBuf, 65535) bytes, unscaled (RFC 7323 2.2): the right
  // edge we are committed to from here on (RFC 9293 3.8.6.2.2 never moves it left).
  c.rcvAdvEdge = seqAdd(c.rcvNxt, Math.min(c.rcvBuf, 65535));
  takeSynOptions(c, seg, now);
  if (f & ACK) {
    c.sndUna = seg.ack;
    c.sndWnd = seg.window; // SYN-ACK windows are not scaled
    c.sndWl1 = seg.seq;
    c.sndWl2 = seg.ack;
    c.maxSndWnd = c.sndWnd;
    if (c.rttStart >= 0 && c.retries === 0) sampleRtt(c, now - c.rttStart);
    c.rttStart = -1;
    c.establish(now);
    if (c.isClosed()) return;
    c.ackNow = true;
    if (c.finAfterConnect) c.shutdownWrite(now);
    c.output(now);
  } else {
    // Simultaneous open (RFC 9293 3.5, figure 8): answer with SYN-ACK.
    c.state = State.SynReceived;
    c.sndWnd = seg.window;
    c.sndWl1 = seg.seq;
    c.retries = 0;
    sendSyn(c, now); // in SYN-RECEIVED: a SYN-ACK with the options both SYNs agreed on
  }
}
