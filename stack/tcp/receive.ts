/**
 * The receiving half of a connection: a segment arriving in a synchronized state (RFC
 * 9293 3.10.7.4, its checks in order: PAWS from RFC 7323 5.3, acceptability, RST and
 * SYN per RFC 5961, trimming to the window, the ACK (send.ts), the text, the FIN),
 * TS.Recent (RFC 7323 4.3), in-order delivery and reassembly, when ACKs are owed
 * (RFC 5681 4.2, RFC 9293 3.8.6.3), and the window we advertise: receiver SWS avoidance
 * (RFC 9293 3.8.6.2.2, RFC 1122 4.2.3.3) and autotuning.
 */
import { CodedError } from '../util/errors';
import { ACK, FIN, RST, SYN, type TcpRepr } from '../wire/tcp';
import { type Seq, seqAdd, seqGt, seqInWindow, seqLe, seqLt, seqSize, seqSub, tsGe, tsLt } from '../wire/seq';
import type { TcpConnection } from './connection';
import { NO_PENDING } from './buffers';
import { State } from './state';
import { sampleRtt } from './rtt';

const TS_MAX_AGE_MS = 24 * 24 * 3600 * 1000; // RFC 7323 5.5: 24 days
/** Out-of-order segments kept per connection (besides the byte limit, rcvBuf). */
const MAX_OOO_SEGMENTS = 4096;
/** Segments at least this long are delivered in the device's own buffer when it allows (zero copy). */
const ZERO_COPY_MIN = 16 * 1024;
/**
 * Receive-window autotuning (see tuneRcvWindow): the window offered starts at this and
 * grows to twice what arrives per round trip when the peer needs more.
 */
export const RCV_WINDOW_MIN = 128 * 1024;
/** Delivery rate is measured over intervals of at least this long (ms). */
const RCV_RATE_INTERVAL_MS = 1;

/** RFC 9293 3.10.7.4: a segment arrives in a synchronized state or SYN-RECEIVED. */
export function segmentArrives(c: TcpConnection, seg: TcpRepr, buf: Buffer, now: number): void {
  const ctr = c.layer.counters;
  const f = seg.flags;
  // PAWS (RFC 7323 5.3), with the allowances a real peer's reordering needs (pawsVerdict).
  if (c.tsOk && seg.hasTimestamp && !(f & RST) && tsLt(seg.tsVal, c.tsRecent) && now - c.tsRecentAt < TS_MAX_AGE_MS) {
    const verdict = pawsVerdict(c, seg);
    if (verdict === PAWS_OLD_ACK) {
      ctr.TcpExtPAWSOldAck++;
      return;
    }
    if (verdict === PAWS_REJECT) {
      ctr.TcpExtPAWSEstab++;
      c.sendAck(now);
      return;
    }
  }
  // The peer's SYN again in SYN-RECEIVED: our SYN-ACK was lost. Resend it now (as
  // Linux's tcp_check_req does); the acceptability check below would answer with a
  // bare ACK, which the peer in SYN-SENT drops, leaving it to our slower SYN-ACK timer.
  if (c.state === State.SynReceived && (f & (SYN | ACK | RST)) === SYN && seg.seq === c.irs) {
    c.retransmitSynAck(now);
    return;
  }
  let seq = seg.seq;
  let len = seg.payloadLength;
  let dataOff = seg.payloadOffset;
  let fin = (f & FIN) !== 0;
  const rcvWnd = Math.max(0, seqSub(c.rcvAdvEdge, c.rcvNxt));
  const segLen = len + (f & SYN ? 1 : 0) + (fin ? 1 : 0);
  // Acceptability (RFC 9293 3.10.7.4, first check). A segment without data may also sit
  // exactly at the right edge, RCV.NXT + RCV.WND (as Linux's tcp_sequence allows): that is
  // where a peer that has filled the window, and lost a segment of it, sends its pure
  // ACKs from. RFC 9293's strict test dropped them, and the ACKs they carried with them.
  let acceptable: boolean;
  if (segLen === 0) acceptable = rcvWnd === 0 ? seq === c.rcvNxt : seqInWindow(seq, c.rcvNxt, rcvWnd + 1);
  else if (rcvWnd === 0)
    acceptable = seq === c.rcvNxt; // data is dropped below but ACK/RST/FIN still count
  else acceptable = seqInWindow(seq, c.rcvNxt, rcvWnd) || seqInWindow(seqAdd(seq, segLen - 1), c.rcvNxt, rcvWnd);
  if (!acceptable) {
    if (!(f & RST)) c.sendAck(now);
    // The peer's FIN again in TIME-WAIT (our last ACK was lost): ACK it and restart the
    // 2 MSL timeout (RFC 9293 3.10.7.4), so we are still there if that ACK is lost too.
    if (c.state === State.TimeWait && f & FIN) {
      c.lingerAt = now + c.layer.config.timeWaitMs;
      c.rearm();
    }
    return;
  }
  // TS.Recent is updated further down, once the segment has passed the RST, SYN and
  // ACK checks: a segment that fails them must not move it (see updateTsRecent).
  // RST (RFC 5961 3.2): exact match resets; anything else in the window is challenged.
  if (f & RST) {
    if (seq === c.rcvNxt) onReset(c, now);
    else challengeAck(c, now);
    return;
  }
  // SYN in a synchronized state (RFC 5961 4.2): challenge ACK.
  if (f & SYN) {
    challengeAck(c, now);
    return;
  }
  if (!(f & ACK)) return;
  // Trim to the window: drop what is below RCV.NXT and above the right edge.
  if (seqLt(seq, c.rcvNxt)) {
    const drop = seqSize(seq, c.rcvNxt);
    if (drop >= len) {
      if (len > 0) c.ackNow = true;
      dataOff += len;
      len = 0;
      if (fin && drop > seg.payloadLength) fin = false;
    } else {
      dataOff += drop;
      len -= drop;
    }
    seq = c.rcvNxt;
  }
  // Room up to the right edge from where this segment starts (it may start above
  // RCV.NXT: an out-of-order segment straddling the edge keeps only its in-window part).
  const room = Math.max(0, seqSub(seqAdd(c.rcvNxt, rcvWnd), seq));
  if (len > room) {
    // Data beyond the window is not acceptable and is answered with an ACK at once
    // (RFC 9293 3.10.7.4): that ACK is what answers a zero-window probe carrying a
    // byte of data (RFC 1122 4.2.2.17), telling the prober the window is still shut.
    len = room;
    fin = false;
    c.ackNow = true;
  }
  c.lastRecvAt = now;
  c.keepaliveProbes = 0;
  if (c.keepaliveEnabled) {
    c.keepaliveAt = now + c.keepaliveIdleMs;
  }

  // ACK processing. (Only a simultaneous open reaches SYN-RECEIVED as a connection:
  // a passive open is a listener's half-open entry until its handshake completes.)
  if (c.state === State.SynReceived) {
    if (seqLt(c.sndUna, seg.ack) && seqLe(seg.ack, c.sndMax)) {
      updateTsRecent(c, seg, now);
      c.sndUna = seg.ack;
      c.sndWnd = seg.window << c.sndWscale;
      c.maxSndWnd = c.sndWnd;
      c.sndWl1 = seg.seq;
      c.sndWl2 = seg.ack;
      if (c.rttStart >= 0 && c.retries === 0) sampleRtt(c, now - c.rttStart);
      c.rttStart = -1;
      c.establish(now);
      if (c.isClosed()) return;
      // A close that came while the handshake was still under way (RFC 9293 3.10.4).
      if (c.finAfterConnect) c.shutdownWrite(now);
    } else {
      c.layer.sendReset(c.localAddr, c.remoteAddr, c.localPort, c.remotePort, seg.ack);
      return;
    }
  } else {
    if (seqGt(seg.ack, c.sndMax)) {
      c.sendAck(now);
      return;
    } // acks data we never sent
    if (seqLt(seg.ack, seqAdd(c.sndUna, -c.maxSndWnd))) {
      challengeAck(c, now);
      return;
    } // RFC 5961 5.2
    updateTsRecent(c, seg, now);
    c.processAck(seg, seq, len, now);
    if (c.state === State.Closed) return;
  }

  // Segment text (RFC 9293 3.10.7.4, seventh).
  if (len > 0) {
    if (c.state === State.Established || c.state === State.FinWait1 || c.state === State.FinWait2) {
      if (c.orphaned && c.layer.config.resetOnOrphanData) {
        // The application is gone and cannot read it (Linux: TCPAbortOnData).
        ctr.TcpExtTCPAbortOnData++;
        c.layer.sendReset(c.localAddr, c.remoteAddr, c.localPort, c.remotePort, c.sndMax);
        c.destroy(null, now);
        return;
      }
      receiveData(c, seq, buf, dataOff, len, now);
      if (c.isClosed()) return; // the application closed it from its data handler
    } else if (c.state !== State.TimeWait) c.ackNow = true;
  }
  // FIN (eighth).
  if (fin) {
    const finAt = seqAdd(seq, len);
    if (finAt === c.rcvNxt) c.receiveFin(now);
    else if (seqGt(finAt, c.rcvNxt)) {
      c.oooFin = true;
      c.oooFinSeq = finAt;
      c.ackNow = true;
    }
    if (c.isClosed()) return;
  }
  c.output(now);
}

const PAWS_PASS = 0,
  PAWS_REJECT = 1,
  PAWS_OLD_ACK = 2;
/**
 * How far (in the peer's ticks) a segment's TSval may trail TS.Recent and still pass.
 * RFC 7323 5.3 rejects any TSval below TS.Recent, but a retransmission that fills a hole
 * moves TS.Recent to its own, newer, TSval, and the originals sent just before it, still
 * in flight behind it on a reordering path, then fail: each is data the sender has to
 * send again. With millisecond ticks, one tick of slack lets through what was sent in the
 * same or the previous millisecond (Linux allows the same, TCP_PAWS_WINDOW).
 */
const PAWS_WINDOW_TICKS = 1;
/** The peer's timestamp clock is taken to tick at most this often per ms (RFC 7323 5.4: 1 ms to 1 s; some stacks use 1200 Hz). */
const PEER_TICKS_PER_MS = 1.2;

/**
 * The verdict on a segment whose TSval is below TS.Recent (the caller checked that, the
 * RST exemption and TS.Recent's age):
 *  - within PAWS_WINDOW_TICKS of TS.Recent: passes;
 *  - a pure duplicate ACK at RCV.NXT that moves neither SND.UNA nor the window, up to an
 *    RTO of ticks behind: passes. It can only count towards fast retransmit, which is
 *    what a reordered duplicate ACK is for, and PAWS guards against nothing here: an old
 *    duplicate from a previous wrap of the sequence space would have to match RCV.NXT
 *    and SND.UNA exactly;
 *  - a pure ACK below RCV.NXT: an old ACK overtaken by newer segments. Dropped without
 *    the ACK that RFC 7323 asks for (TcpExtPAWSOldAck): the peer already has newer ACKs,
 *    and answering every late ACK of a reordering path doubles the ACK traffic;
 *  - anything else is rejected as RFC 7323 says (TcpExtPAWSEstab, answered with an ACK).
 */
function pawsVerdict(c: TcpConnection, seg: TcpRepr): number {
  const behind = (c.tsRecent - seg.tsVal) | 0;
  if (behind <= PAWS_WINDOW_TICKS) return PAWS_PASS;
  const f = seg.flags;
  const pureAck = (f & (ACK | SYN | FIN)) === ACK && seg.payloadLength === 0;
  if (!pureAck) return PAWS_REJECT;
  if (seqLt(seg.seq, c.rcvNxt)) return PAWS_OLD_ACK;
  if (seg.seq !== c.rcvNxt || seg.ack !== c.sndUna) return PAWS_REJECT;
  const window = seg.window << c.sndWscale;
  const updatesWindow = seqGt(seg.seq, c.sndWl1) || (seg.seq === c.sndWl1 && window > c.sndWnd);
  if (updatesWindow) return PAWS_REJECT;
  return behind <= c.rto * PEER_TICKS_PER_MS ? PAWS_PASS : PAWS_REJECT;
}

/**
 * TS.Recent follows segments at or below Last.ACK.sent (RFC 7323 4.3): with a delayed
 * ACK the echo is the TSval of the first segment it covers, so the peer's RTT sample
 * includes the delay. Only a segment that was found acceptable and passed the RST,
 * SYN and ACK checks counts (RFC 7323 5.3 R3, RFC 5961 4 and 5): a SYN at RCV.NXT with
 * a TSval far ahead is answered with a challenge ACK and must leave TS.Recent alone,
 * or every real segment after it fails PAWS and the connection stalls for good.
 */
export function updateTsRecent(c: TcpConnection, seg: TcpRepr, now: number): void {
  if (c.tsOk && seg.hasTimestamp && seqLe(seg.seq, c.lastAckSent) && tsGe(seg.tsVal, c.tsRecent)) {
    c.tsRecent = seg.tsVal;
    c.tsRecentAt = now;
  }
}

function receiveData(c: TcpConnection, seq: Seq, buf: Buffer, off: number, len: number, now: number): void {
  const ctr = c.layer.counters;
  c.layer.noteQueueUse(c, now);
  if (seq === c.rcvNxt) {
    const hadHole = !c.ooo.empty;
    c.rcvNxt = seqAdd(c.rcvNxt, len);
    c.bytesReceived += len;
    tuneRcvWindow(c, now);
    // The ACK this data is owed is decided before the application sees the data: a
    // reply written from its data handler (an HTTP response) carries the ACK and
    // settles what is owed (afterSend). Arming the delayed ACK after delivery instead
    // sent, 40 ms later, a pure ACK repeating the one the reply had carried.
    c.segsSinceAck += Math.max(1, Math.round(len / c.mss));
    // Every second full segment is ACKed (RFC 5681 4.2); within a receive burst the ACK
    // waits for the burst's end, so that one ACK covers what arrived together (as a
    // GRO receiver's does), not one per GSO packet.
    if (hadHole) {
      /* ACKed at once below, once the queue is pulled */
    } else if (c.segsSinceAck >= 2) {
      if (c.layer.inBurst) c.layer.deferAck(c);
      else c.ackNow = true;
    } else if (!c.ackNow && c.delackAt === Infinity) {
      c.delackAt = now + c.layer.config.delayedAckMs;
      c.rearm();
    }
    // The device's buffer is only valid during this call: a large segment (a GSO
    // super-segment) keeps the device's buffer when it gives it away, anything else
    // is copied, the small ones into a shared chunk.
    const host = c.layer.host;
    if (len >= ZERO_COPY_MIN && host.claimPacket !== undefined && host.claimPacket(buf)) deliver(c, buf.subarray(off, off + len));
    else deliver(c, c.layer.rxBuffers.copyOut(buf, off, len));
    // Delivery may close the connection (a data handler that destroys the socket, a
    // delayed indication that resets it); destroy() disarmed every timer.
    if (c.isClosed()) return;
    if (hadHole) {
      const parts: Buffer[] = [];
      const nxt = c.ooo.pull(c.rcvNxt, parts);
      for (const p of parts) {
        c.bytesReceived += p.length;
        deliver(c, p);
      }
      c.rcvNxt = nxt;
      // RFC 5681 4.2: ACK at once when a gap is filled; within a burst, once at its end
      // (the same instant), covering whatever else the burst brought.
      if (c.layer.inBurst) c.layer.deferAck(c);
      else c.ackNow = true;
    }
    if (c.oooFin && c.oooFinSeq === c.rcvNxt) c.receiveFin(now);
  } else {
    ctr.TcpExtTCPOFOQueue++;
    // Bounded in bytes and in entries: a peer sending tiny segments with gaps must not
    // make every insert walk millions of entries.
    if (c.ooo.bytes + len > c.rcvBuf || c.ooo.segs.length >= MAX_OOO_SEGMENTS) {
      ctr.TcpExtTCPOFODrop++;
    } else c.oooForInsert().insert(seq, buf.subarray(off, off + len));
    // A duplicate ACK with SACK blocks, at once (RFC 5681 4.2). With SACK, the
    // out-of-order segments of one receive burst get one ACK at the burst's end (the
    // same instant) whose blocks say everything they brought, as a GRO receiver's
    // does: after a loss the rest of the window arrives out of order, and an ACK per
    // segment (each a TUN write the kernel processes in our thread) slowed the stack
    // until the TUN queue overflowed again. Without SACK the sender counts duplicate
    // ACKs (RFC 5681 3.2), so each still leaves at once.
    if (c.sackOk && c.layer.inBurst) {
      c.dupAckOwed = true;
      c.layer.deferAck(c);
    } else c.ackNow = true;
  }
}

function deliver(c: TcpConnection, data: Buffer): void {
  if (c.owner) c.owner.onData(data);
  else {
    if (c.pending === NO_PENDING) c.pending = [];
    c.pending.push(data);
    c.pendingBytes += data.length;
    // Not accepted yet: the listener's policy may be waiting for this (a delayed indication).
    if (c.listener !== null) c.listener.dataBeforeAccept(c, c.lastRecvAt);
  }
}

function onReset(c: TcpConnection, now: number): void {
  const ctr = c.layer.counters;
  if (c.state === State.Established || c.state === State.CloseWait) ctr.TcpEstabResets++;
  c.destroy(new CodedError('ECONNRESET', 'read ECONNRESET'), now);
}

function challengeAck(c: TcpConnection, now: number): void {
  if (c.layer.allowChallengeAck(now)) {
    c.layer.counters.TcpExtTCPChallengeACK++;
    c.sendAck(now);
  }
}

/**
 * Receive-window autotuning, after Linux's (tcp_rcv_space_adjust): offer about twice
 * what arrives per round trip, at least RCV_WINDOW_MIN, at most the receive buffer.
 * The round trip is measured when the peer has filled the window: from the segment
 * that opened it further to the first data beyond the old edge (Linux measures the
 * receiver's RTT too; our TSval ticks in ms, too coarse for a TUN peer's 50 us).
 * Offering the whole 4 MiB buffer to a peer one TUN write away made a small-write
 * sender (iperf3 -l 1K) send every write's data as soon as it had an MSS of it:
 * 1,448-byte packets, each a wake-up and several system calls for both sides. A
 * window near what the path needs makes the sender queue while it waits for it, and
 * send what queued as one GSO super-segment.
 */
function tuneRcvWindow(c: TcpConnection, now: number): void {
  if (c.stalled && c.stalledAt >= 0 && seqGt(c.rcvNxt, c.stalledEdge)) {
    const m = now - c.stalledAt;
    c.rcvRtt = c.rcvRtt === 0 || m < c.rcvRtt ? m : c.rcvRtt + (m - c.rcvRtt) / 8;
    c.stalled = false;
    c.stalledAt = -1;
  }
  // Filled: less than a segment of the window left (the sender's SWS avoidance keeps a
  // smaller tail back).
  if (!c.stalled && seqSub(c.rcvAdvEdge, c.rcvNxt) < c.mss) {
    c.stalled = true;
    c.stalledEdge = c.rcvAdvEdge;
    c.stalledAt = -1;
  }
  if (c.rcvRateAt < 0) {
    c.rcvRateAt = now;
    c.rcvRateSeq = c.rcvNxt;
    return;
  }
  const dt = now - c.rcvRateAt;
  if (dt < RCV_RATE_INTERVAL_MS) return;
  const rate = seqSize(c.rcvRateSeq, c.rcvNxt) / dt;
  c.rcvRate = Math.max(rate, c.rcvRate * 0.75);
  c.rcvRateAt = now;
  c.rcvRateSeq = c.rcvNxt;
  if (c.rcvRtt > 0) {
    const want = 2 * c.rcvRate * c.rcvRtt + 16 * c.mss;
    c.rcvWndCap = Math.min(c.rcvBuf, Math.max(RCV_WINDOW_MIN, want));
  }
}

/** End of a receive burst (TcpLayer.endBurst): the ACK deferred to it leaves, unless a segment sent since carried it. */
export function sendDeferredAck(c: TcpConnection, now: number): void {
  c.ackDeferred = false;
  // Nothing went out since (afterSend resets the count): the ACK is still owed.
  if ((c.segsSinceAck > 0 || c.dupAckOwed) && ackOwed(c) && !c.isClosed()) {
    c.ackNow = true;
    c.output(now);
  }
}

/** Data or a FIN arrived that no segment we sent has acknowledged yet, or out-of-order data no SACK block has reported. */
export function ackOwed(c: TcpConnection): boolean {
  return c.rcvNxt !== c.lastAckSent || c.dupAckOwed;
}

/**
 * The window to advertise (already shifted). Never moves the right edge left
 * (RFC 9293 3.8.6.2.2) and avoids advertising tiny openings (receiver SWS).
 */
export function advertiseWindow(c: TcpConnection): number {
  let space = rcvSpace(c);
  const committed = seqSub(c.rcvAdvEdge, c.rcvNxt);
  // Receiver SWS avoidance (RFC 9293 3.8.6.2.2, RFC 1122 4.2.3.3): move the right edge
  // only by at least min(RCV.BUFF/2, MSS); never move it left.
  if (space > committed && space - committed < Math.min(c.rcvBuf >> 1, c.mss)) space = committed;
  if (space < committed) space = Math.max(committed, 0);
  let win = space >>> c.rcvWscale;
  if (win > 65535) win = 65535;
  const edge = seqAdd(c.rcvNxt, win << c.rcvWscale);
  if (seqGt(edge, c.rcvAdvEdge)) c.rcvAdvEdge = edge;
  return win;
}

/**
 * Room to offer beyond RCV.NXT: the receive buffer less what the application has not
 * read and what waits out of order, and no more than this connection's share of the
 * device's receive queue (TcpLayer.rcvShare).
 */
function rcvSpace(c: TcpConnection): number {
  const unread = c.owner ? c.owner.unreadBytes() : c.pendingBytes;
  const space = Math.min(c.rcvBuf - unread - c.ooo.bytes, c.rcvWndCap, c.layer.rcvShare(c.mss));
  return space > 0 ? space : 0;
}

/** The application read data: open the window if that is worth a segment (RFC 9293 3.8.6.2.2). */
export function onAppRead(c: TcpConnection, now: number): void {
  if (c.state < State.Established || c.state > State.FinWait2) return;
  // Only room the 16-bit window field can carry (RFC 7323 2.2: shifted by our scale)
  // counts: an ACK that cannot move the right edge is a duplicate ACK to the peer
  // (RFC 5681 2), e.g. on every read when window scaling was not negotiated.
  const space = Math.min(rcvSpace(c), 65535 << c.rcvWscale);
  const committed = seqSub(c.rcvAdvEdge, c.rcvNxt);
  if (space - committed >= Math.min(c.rcvBuf >> 1, 2 * c.mss)) {
    c.sendAck(now);
    c.layer.flushSoon();
  }
}
