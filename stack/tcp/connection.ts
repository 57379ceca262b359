/**
 * One TCP connection (RFC 9293): its control block, the segment-arrival rules of
 * section 3.10.7, the output loop, and its timers. Loss recovery follows RFC 6675
 * when SACK was negotiated and NewReno (RFC 6582) otherwise; RTO per RFC 6298 with
 * Karn's rule; timestamps and PAWS per RFC 7323; RST/SYN/ACK acceptance per RFC 5961.
 *
 * Time is passed in (`now`, ms). The connection never touches a device: it asks its
 * layer (`TcpLayer`) to emit segments and to arm its one timer.
 */
import { CodedError } from '../util/errors';
import {
  ACK, FIN, PSH, RST, SYN, TcpRepr, TcpOptionsOut, seqGe, seqGt, seqLe, seqLt,
} from '../wire/tcp';
import { ReassemblyQueue, Scoreboard, SendQueue } from './buffers';
import { CongestionControl, makeCongestionControl } from './congestion';
import { Timer } from '../timers';
import type { TcpLayer } from './tcp';
import type { Listener } from './listener';
import { HalfOpenFlag, type HalfOpen } from './halfopen';

export const enum State {
  Closed = 0, Listen, SynSent, SynReceived, Established, FinWait1, FinWait2, CloseWait, Closing, LastAck, TimeWait,
}
export const STATE_NAMES = ['CLOSED', 'LISTEN', 'SYN-SENT', 'SYN-RECEIVED', 'ESTABLISHED', 'FIN-WAIT-1', 'FIN-WAIT-2', 'CLOSE-WAIT', 'CLOSING', 'LAST-ACK', 'TIME-WAIT'];

/** What the socket layer above a connection hears. */
export interface ConnectionOwner {
  onEstablished(): void;
  onData(data: Buffer): void;
  onPeerFin(): void;
  /** Acknowledged data freed room in the send queue. */
  onSendSpace(): void;
  /** The connection is gone: null for a clean close, else the error (ECONNRESET, ETIMEDOUT...). */
  onClosed(err: CodedError | null): void;
  /** Bytes delivered to the application and not yet read by it. */
  unreadBytes(): number;
}

const TS_MAX_AGE_MS = 24 * 24 * 3600 * 1000; // RFC 7323 5.5: 24 days
/** Out-of-order segments kept per connection (besides the byte limit, rcvBuf). */
const MAX_OOO_SEGMENTS = 4096;
/** RFC 6675 2: DupThresh. */
const DUP_THRESH = 3;

/** Segments at least this long are delivered in the device's own buffer when it allows (zero copy). */
const ZERO_COPY_MIN = 16 * 1024;
/** Smaller segments are copied into slices of a shared chunk of this size (one allocation per ~40 segments). */
const RX_CHUNK = 64 * 1024;
let rxChunk = Buffer.allocUnsafeSlow(RX_CHUNK);
let rxChunkUsed = 0;

/** A copy of buf[off, off+len) that outlives the device's receive buffer. */
function copyOut(buf: Buffer, off: number, len: number): Buffer {
  if (len > RX_CHUNK / 4) {
    const b = Buffer.allocUnsafeSlow(len);
    buf.copy(b, 0, off, off + len);
    return b;
  }
  if (rxChunkUsed + len > RX_CHUNK) { rxChunk = Buffer.allocUnsafeSlow(RX_CHUNK); rxChunkUsed = 0; }
  const start = rxChunkUsed;
  buf.copy(rxChunk, start, off, off + len);
  // Keep slices 8-byte aligned.
  rxChunkUsed = (start + len + 7) & ~7;
  return rxChunk.subarray(start, start + len);
}
/**
 * Receive-window autotuning (see tuneRcvWindow): the window offered starts at this and
 * grows to twice what arrives per round trip when the peer needs more.
 */
const RCV_WINDOW_MIN = 128 * 1024;
/** Delivery rate is measured over intervals of at least this long (ms). */
const RCV_RATE_INTERVAL_MS = 1;
/** PMTU black-hole detection: unanswered retransmissions of a segment before the fallback size. */
const BLACK_HOLE_RETRIES = 2;
/** The size every IPv4 path must carry (RFC 1122 3.3.3); MSS 536 without options. */
const BLACK_HOLE_MTU = 576;

export class TcpConnection {
  state = State.Closed;
  owner: ConnectionOwner | null = null;
  listener: Listener | null = null;
  /** Set when the application let go (closed or destroyed) but the protocol goes on. */
  orphaned = false;
  createdAt: number;

  // Send sequence space (RFC 9293 3.3.1)
  iss = 0; sndUna = 0; sndNxt = 0; sndMax = 0; sndWnd = 0; sndWl1 = 0; sndWl2 = 0; maxSndWnd = 0;
  sndWscale = 0;           // shift the peer applies to its windows
  // Receive sequence space
  irs = 0; rcvNxt = 0; rcvAdvEdge = 0;
  rcvWscale = 0;           // shift we apply to ours
  rcvBuf: number;
  sndBuf: number;
  // Options
  /** Set by PMTU black-hole detection: this connection sends at most this size from then on (0: not set). */
  blackHoleMtu = 0;
  peerMss = 536; mss = 536; wsOk = false; tsOk = false; sackOk = false; tsRecent = 0; tsRecentAt = 0; tsOffset = 0;
  /** TSval of the first segment sent while nothing was outstanding: the oldest TSecr an ACK of the flight can carry. */
  tsFlightStart = 0;
  // Send side data
  readonly sendQueue = new SendQueue();
  finSeq = -1;             // sequence number of our FIN once the application ended its side
  finAfterConnect = false;
  // Receive side data
  readonly ooo = new ReassemblyQueue();
  oooFinSeq = -1;
  /** Data (and FIN) that arrived before the application accepted the connection. */
  pending: Buffer[] = [];
  pendingBytes = 0;
  pendingFin = false;
  segsSinceAck = 0;
  /** On the layer's list of ACKs owed at the end of the current receive burst. */
  ackDeferred = false;
  /** Out-of-order data arrived in this burst: its duplicate ACK (with SACK) leaves at the burst's end. */
  dupAckOwed = false;
  /** Epoch in which this connection last sent or received data (TcpLayer.noteQueueUse). */
  rxEpoch = -1;
  // Receive-window autotuning (tuneRcvWindow): the cap on what we offer, the receiver's
  // round trip (ms; 0 until measured), the delivery rate (bytes/ms) and their marks.
  rcvWndCap = RCV_WINDOW_MIN;
  rcvRtt = 0; rcvRate = 0; rcvRateSeq = 0; rcvRateAt = -1;
  /** The peer filled our window up to this edge (-1: not waiting); stalledAt: when we opened it further. */
  stalledEdge = -1; stalledAt = -1;
  ackNow = false;
  // RTT (RFC 6298)
  srtt = 0; rttvar = 0; rto: number; rttSeq = 0; rttStart = -1; backoff = 0;
  retries = 0;
  // Congestion control and recovery
  cc: CongestionControl & { setMss(mss: number): void };
  dupAcks = 0; inRecovery = false; recoverPoint = 0; highRxt = 0;
  /** Set by an RTO until SND.UNA passes the RecoveryPoint it recorded. */
  rtoRecovery = false;
  /** RCV.NXT carried by the last segment we sent (RFC 7323 Last.ACK.sent). */
  lastAckSent = 0;
  readonly scoreboard = new Scoreboard();
  // Timers: one heap entry per connection, the earliest of these deadlines.
  readonly timer: Timer;
  rtoAt = Infinity; delackAt = Infinity; persistAt = Infinity; keepaliveAt = Infinity; lingerAt = Infinity;
  persistBackoff = 0;
  /** Set while the persist timer's override lets a sub-MSS segment through (RFC 9293 3.8.6.2.1). */
  private swsOverride = false;
  // Keepalive
  keepaliveEnabled = false; keepaliveIdleMs = 7_200_000; keepaliveProbes = 0; lastRecvAt = 0;
  noDelay = false;
  // Bookkeeping
  bytesAcked = 0; bytesReceived = 0; retransSegs = 0;
  key = '';
  error: CodedError | null = null;

  constructor(
    readonly layer: TcpLayer,
    readonly localAddr: number, readonly localPort: number,
    readonly remoteAddr: number, readonly remotePort: number,
    now: number,
  ) {
    const cfg = layer.config;
    this.createdAt = now;
    this.rcvBuf = cfg.rcvBuf;
    this.sndBuf = cfg.sndBuf;
    this.rto = cfg.initialRtoMs;
    this.cc = makeCongestionControl(cfg.congestionControl, 536);
    this.timer = new Timer((t) => this.onTimer(t));
    this.lastRecvAt = now;
  }

  get stateName(): string { return STATE_NAMES[this.state]; }
  get flight(): number { return (this.sndNxt - this.sndUna) >>> 0; }
  get synchronized(): boolean { return this.state >= State.Established; }
  /** A method, not a narrowed field read: callbacks may have closed the connection. */
  isClosed(): boolean { return this.state === State.Closed; }

  // ---------------------------------------------------------------- opening

  /** Active open (RFC 9293 3.10.1): send SYN. */
  openActive(now: number): void {
    this.iss = this.layer.isn(this, now);
    this.sndUna = this.iss; this.sndNxt = this.iss; this.sndMax = this.iss;
    this.rcvWscale = this.layer.config.windowScale;
    this.state = State.SynSent;
    this.retries = 0;
    this.sendSyn(now);
  }

  /**
   * A passive open whose handshake just completed: the listener's half-open entry
   * (halfopen.ts) holds what the SYN negotiated, `ack` is the final ACK (its SEG.ACK is
   * ISS+1, checked there). The connection starts ESTABLISHED.
   */
  establishPassive(req: HalfOpen, ack: TcpRepr, now: number): void {
    const cfg = this.layer.config;
    this.irs = req.irs;
    this.rcvNxt = req.rcvNxt;
    this.iss = req.iss;
    this.sndUna = ack.ack; this.sndNxt = ack.ack; this.sndMax = ack.ack;
    this.peerMss = req.peerMss;
    this.wsOk = req.has(HalfOpenFlag.WindowScale);
    this.sndWscale = req.sndWscale;
    this.rcvWscale = this.wsOk ? cfg.windowScale : 0;
    this.sackOk = req.has(HalfOpenFlag.Sack);
    this.tsOk = req.has(HalfOpenFlag.Timestamps);
    if (this.tsOk) {
      // TS.Recent from the SYN, or from the final ACK (RFC 7323 4.3: SEG.SEQ = Last.ACK.sent).
      this.tsRecent = ack.hasTimestamp && seqGe(ack.tsVal, req.tsRecent) ? ack.tsVal : req.tsRecent;
      this.tsRecentAt = now;
    }
    // Our SYN-ACK offered min(rcvBuf, 65535) unscaled: the right edge we are committed to.
    this.rcvAdvEdge = (this.rcvNxt + Math.min(this.rcvBuf, 65535)) >>> 0;
    this.lastAckSent = this.rcvNxt;
    this.sndWnd = ack.window << this.sndWscale;
    this.maxSndWnd = this.sndWnd;
    this.sndWl1 = ack.seq; this.sndWl2 = ack.ack;
    this.updateMss();
    // Karn: an RTT sample only if no SYN-ACK was resent; a resent one also means the
    // initial window is one segment (establish).
    if (req.backoff === 0) this.sampleRtt(now - req.sentAt);
    this.backoff = req.backoff;
    this.establish(now);
  }

  private takeSynOptions(seg: TcpRepr, now: number): void {
    const cfg = this.layer.config;
    this.peerMss = seg.mss > 0 ? seg.mss : 536; // RFC 9293 3.7.1 default
    this.wsOk = seg.wscale >= 0 && cfg.windowScale >= 0 && !this.layer.suppressSynOptions(this);
    if (this.wsOk) {
      this.sndWscale = Math.min(seg.wscale, 14); // RFC 7323 2.3
      this.rcvWscale = cfg.windowScale;
    } else { this.sndWscale = 0; this.rcvWscale = 0; }
    this.sackOk = seg.sackPermitted && cfg.sack;
    this.tsOk = seg.hasTimestamp && cfg.timestamps;
    if (this.tsOk) { this.tsRecent = seg.tsVal; this.tsRecentAt = now; }
    this.updateMss();
  }

  /** Effective send MSS: the peer's MSS, the path MTU, and the timestamp option's 12 bytes. */
  updateMss(): void {
    let pathMtu = this.layer.pathMtu(this.remoteAddr);
    if (this.blackHoleMtu > 0 && this.blackHoleMtu < pathMtu) pathMtu = this.blackHoleMtu;
    let mss = Math.min(this.peerMss, pathMtu - 40);
    if (this.tsOk) mss -= 12;
    mss = Math.max(mss, 64);
    if (mss !== this.mss) {
      this.mss = mss;
      this.cc.setMss(mss);
      if (this.sndMax === this.iss || this.state <= State.SynReceived) this.cc.cwnd = Math.max(this.cc.cwnd, 10 * mss);
    }
  }

  private sendSyn(now: number): void {
    const cfg = this.layer.config;
    const o = this.layer.optScratch;
    o.mss = this.layer.pathMtu(this.remoteAddr) - 40;
    const suppressed = this.layer.suppressSynOptions(this);
    const active = this.state === State.SynSent;
    // A SYN-ACK carries only the options the peer offered (RFC 7323, RFC 2018).
    o.wscale = cfg.windowScale >= 0 && !suppressed && (active || this.wsOk) ? cfg.windowScale : -1;
    o.sackPermitted = cfg.sack && (active || this.sackOk);
    o.hasTimestamp = cfg.timestamps && (active || this.tsOk);
    o.tsVal = this.tsNow(now);
    if (this.sndMax === this.iss) this.tsFlightStart = o.tsVal;
    o.tsEcr = active ? 0 : this.tsRecent;
    o.sackCount = 0;
    const flags = active ? SYN : SYN | ACK;
    this.layer.emit(this, this.iss, active ? 0 : this.rcvNxt, flags, 65535 > this.rcvBuf ? this.rcvBuf : 65535, o, 0, now);
    if (!active) { this.rcvAdvEdge = (this.rcvNxt + Math.min(this.rcvBuf, 65535)) >>> 0; this.lastAckSent = this.rcvNxt; }
    this.sndNxt = (this.iss + 1) >>> 0;
    if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    if (this.rttStart < 0 && this.retries === 0) { this.rttStart = now; this.rttSeq = this.iss; }
    this.armRto(now);
  }

  /** RFC 9293 3.10.7.3: a segment arrives in SYN-SENT. */
  inputSynSent(seg: TcpRepr, now: number): void {
    const f = seg.flags;
    if (f & ACK) {
      if (seqLe(seg.ack, this.iss) || seqGt(seg.ack, this.sndMax)) {
        if (!(f & RST)) this.layer.sendReset(this.localAddr, this.remoteAddr, this.localPort, this.remotePort, seg.ack, 0, false);
        return;
      }
    }
    if (f & RST) {
      if (f & ACK) {
        // SYN-SENT -> CLOSED counts as a failed attempt (RFC 4022 tcpAttemptFails).
        this.layer.counters.TcpAttemptFails++;
        this.fail('ECONNREFUSED', `connect ECONNREFUSED ${this.layer.describePeer(this)}`, now);
      }
      return;
    }
    if (!(f & SYN)) return;
    this.irs = seg.seq;
    this.rcvNxt = (seg.seq + 1) >>> 0;
    // Our SYN offered min(rcvBuf, 65535) bytes, unscaled (RFC 7323 2.2): the right
    // edge we are committed to from here on (RFC 9293 3.8.6.2.2 never moves it left).
    this.rcvAdvEdge = (this.rcvNxt + Math.min(this.rcvBuf, 65535)) >>> 0;
    this.takeSynOptions(seg, now);
    if (f & ACK) {
      this.sndUna = seg.ack;
      this.sndWnd = seg.window; // SYN-ACK windows are not scaled
      this.sndWl1 = seg.seq; this.sndWl2 = seg.ack;
      this.maxSndWnd = this.sndWnd;
      if (this.rttStart >= 0 && this.retries === 0) this.sampleRtt(now - this.rttStart);
      this.rttStart = -1;
      this.establish(now);
      if (this.isClosed()) return;
      this.ackNow = true;
      if (this.finAfterConnect) this.shutdownWrite(now);
      this.output(now);
    } else {
      // Simultaneous open (RFC 9293 3.5, figure 8): answer with SYN-ACK.
      this.state = State.SynReceived;
      this.sndWnd = seg.window;
      this.sndWl1 = seg.seq;
      this.retries = 0;
      this.sendSyn(now); // in SYN-RECEIVED: a SYN-ACK with the options both SYNs agreed on
    }
  }

  private establish(now: number): void {
    // Our SYN or SYN-ACK had to be resent: the initial window is one segment
    // (RFC 5681 3.1, RFC 6928 2; Linux's tcp_init_transfer alike), not ten.
    const synLost = this.backoff > 0;
    this.state = State.Established;
    this.retries = 0;
    this.backoff = 0;
    this.rto = this.computeRto();
    this.layer.counters.TcpCurrEstab++;
    this.cc.cwnd = (synLost ? 1 : 10) * this.mss;
    this.lastRecvAt = now;
    this.disarmRto();
    if (this.keepaliveEnabled) this.keepaliveAt = now + this.keepaliveIdleMs;
    this.rearm();
    // A passive open joins its listener's accept queue in HalfOpen.establish.
    this.owner?.onEstablished();
  }

  // ---------------------------------------------------------------- input

  /** RFC 9293 3.10.7.4: a segment arrives in a synchronized state or SYN-RECEIVED. */
  input(seg: TcpRepr, buf: Buffer, now: number): void {
    const c = this.layer.counters;
    const f = seg.flags;
    // PAWS (RFC 7323 5.3).
    if (this.tsOk && seg.hasTimestamp && !(f & RST) && seqLt(seg.tsVal, this.tsRecent) && now - this.tsRecentAt < TS_MAX_AGE_MS) {
      c.TcpExtPAWSEstab++;
      this.sendAck(now);
      return;
    }
    // The peer's SYN again in SYN-RECEIVED: our SYN-ACK was lost. Resend it now (as
    // Linux's tcp_check_req does); the acceptability check below would answer with a
    // bare ACK, which the peer in SYN-SENT drops, leaving it to our slower SYN-ACK timer.
    if (this.state === State.SynReceived && (f & (SYN | ACK | RST)) === SYN && seg.seq === this.irs) {
      this.retransmitSynAck(now);
      return;
    }
    let seq = seg.seq;
    let len = seg.payloadLength;
    let dataOff = seg.payloadOffset;
    let fin = (f & FIN) !== 0;
    const rcvWnd = Math.max(0, (this.rcvAdvEdge - this.rcvNxt) | 0);
    const segLen = len + (f & SYN ? 1 : 0) + (fin ? 1 : 0);
    // Acceptability (RFC 9293 3.10.7.4, first check).
    let acceptable: boolean;
    if (segLen === 0) acceptable = rcvWnd === 0 ? seq === this.rcvNxt : seqGe(seq, this.rcvNxt) && seqLt(seq, this.rcvNxt + rcvWnd);
    else if (rcvWnd === 0) acceptable = seq === this.rcvNxt; // data is dropped below but ACK/RST/FIN still count
    else {
      const last = (seq + segLen - 1) >>> 0;
      acceptable = (seqGe(seq, this.rcvNxt) && seqLt(seq, this.rcvNxt + rcvWnd)) || (seqGe(last, this.rcvNxt) && seqLt(last, this.rcvNxt + rcvWnd));
    }
    if (!acceptable) {
      if (!(f & RST)) this.sendAck(now);
      // The peer's FIN again in TIME-WAIT (our last ACK was lost): ACK it and restart the
      // 2 MSL timeout (RFC 9293 3.10.7.4), so we are still there if that ACK is lost too.
      if (this.state === State.TimeWait && (f & FIN)) { this.lingerAt = now + this.layer.config.timeWaitMs; this.rearm(); }
      return;
    }
    // TS.Recent is updated further down, once the segment has passed the RST, SYN and
    // ACK checks: a segment that fails them must not move it (see updateTsRecent).
    // RST (RFC 5961 3.2): exact match resets; anything else in the window is challenged.
    if (f & RST) {
      if (seq === this.rcvNxt) this.onReset(now);
      else this.challengeAck(now);
      return;
    }
    // SYN in a synchronized state (RFC 5961 4.2): challenge ACK.
    if (f & SYN) {
      this.challengeAck(now);
      return;
    }
    if (!(f & ACK)) return;
    // Trim to the window: drop what is below RCV.NXT and above the right edge.
    if (seqLt(seq, this.rcvNxt)) {
      const drop = (this.rcvNxt - seq) >>> 0;
      if (drop >= len) { if (len > 0) this.ackNow = true; dataOff += len; len = 0; if (fin && drop > seg.payloadLength) fin = false; }
      else { dataOff += drop; len -= drop; }
      seq = this.rcvNxt;
    }
    // Room up to the right edge from where this segment starts (it may start above
    // RCV.NXT: an out-of-order segment straddling the edge keeps only its in-window part).
    const room = Math.max(0, (this.rcvNxt + rcvWnd - seq) | 0);
    if (len > room) {
      // Data beyond the window is not acceptable and is answered with an ACK at once
      // (RFC 9293 3.10.7.4): that ACK is what answers a zero-window probe carrying a
      // byte of data (RFC 1122 4.2.2.17), telling the prober the window is still shut.
      len = room; fin = false;
      this.ackNow = true;
    }
    this.lastRecvAt = now;
    this.keepaliveProbes = 0;
    if (this.keepaliveEnabled) { this.keepaliveAt = now + this.keepaliveIdleMs; }

    // ACK processing. (Only a simultaneous open reaches SYN-RECEIVED as a connection:
    // a passive open is a listener's half-open entry until its handshake completes.)
    if (this.state === State.SynReceived) {
      if (seqLt(this.sndUna, seg.ack) && seqLe(seg.ack, this.sndMax)) {
        this.updateTsRecent(seg, now);
        this.sndUna = seg.ack;
        this.sndWnd = seg.window << this.sndWscale;
        this.maxSndWnd = this.sndWnd;
        this.sndWl1 = seg.seq; this.sndWl2 = seg.ack;
        if (this.rttStart >= 0 && this.retries === 0) this.sampleRtt(now - this.rttStart);
        this.rttStart = -1;
        this.establish(now);
        if (this.isClosed()) return;
        // A close that came while the handshake was still under way (RFC 9293 3.10.4).
        if (this.finAfterConnect) this.shutdownWrite(now);
      } else {
        this.layer.sendReset(this.localAddr, this.remoteAddr, this.localPort, this.remotePort, seg.ack, 0, false);
        return;
      }
    } else {
      if (seqGt(seg.ack, this.sndMax)) { this.sendAck(now); return; } // acks data we never sent
      if (seqLt(seg.ack, (this.sndUna - this.maxSndWnd) >>> 0)) { this.challengeAck(now); return; } // RFC 5961 5.2
      this.updateTsRecent(seg, now);
      this.processAck(seg, seq, len, now);
      if (this.state === State.Closed) return;
    }

    // Segment text (RFC 9293 3.10.7.4, seventh).
    if (len > 0) {
      if (this.state === State.Established || this.state === State.FinWait1 || this.state === State.FinWait2) {
        if (this.orphaned && this.layer.config.resetOnOrphanData) {
          // The application is gone and cannot read it (Linux: TCPAbortOnData).
          c.TcpExtTCPAbortOnData++;
          this.layer.sendReset(this.localAddr, this.remoteAddr, this.localPort, this.remotePort, this.sndNxt, 0, false);
          this.destroy(null, now);
          return;
        }
        this.receiveData(seq, buf, dataOff, len, now);
        if (this.isClosed()) return; // the application closed it from its data handler
      } else if (this.state !== State.TimeWait) this.ackNow = true;
    }
    // FIN (eighth).
    if (fin) {
      const finAt = (seq + len) >>> 0;
      if (finAt === this.rcvNxt) this.receiveFin(now);
      else if (seqGt(finAt, this.rcvNxt)) { this.oooFinSeq = finAt; this.ackNow = true; }
      if (this.isClosed()) return;
    }
    this.output(now);
  }

  /**
   * TS.Recent follows segments at or below Last.ACK.sent (RFC 7323 4.3): with a delayed
   * ACK the echo is the TSval of the first segment it covers, so the peer's RTT sample
   * includes the delay. Only a segment that was found acceptable and passed the RST,
   * SYN and ACK checks counts (RFC 7323 5.3 R3, RFC 5961 4 and 5): a SYN at RCV.NXT with
   * a TSval far ahead is answered with a challenge ACK and must leave TS.Recent alone,
   * or every real segment after it fails PAWS and the connection stalls for good.
   */
  private updateTsRecent(seg: TcpRepr, now: number): void {
    if (this.tsOk && seg.hasTimestamp && seqLe(seg.seq, this.lastAckSent) && seqGe(seg.tsVal, this.tsRecent)) {
      this.tsRecent = seg.tsVal; this.tsRecentAt = now;
    }
  }

  private processAck(seg: TcpRepr, seq: number, len: number, now: number): void {
    const c = this.layer.counters;
    const ack = seg.ack;
    const acked = (ack - this.sndUna) | 0;
    const wnd = seg.window << this.sndWscale;
    const outstanding = this.sndMax !== this.sndUna;
    const isDup = acked === 0 && len === 0 && !(seg.flags & (SYN | FIN)) && wnd === this.sndWnd && outstanding;
    if (len === 0 && acked <= 0) c.TcpExtTCPPureAcks++;
    // SACK blocks (RFC 2018), ignoring those outside (SND.UNA, SND.MAX].
    let newSack = false;
    if (this.sackOk && seg.sackCount > 0) {
      for (let i = 0; i < seg.sackCount; i++) {
        const l = seg.sack[i * 2], r = seg.sack[i * 2 + 1];
        if (seqLe(r, ack)) { c.TcpExtTCPDSACKRecv++; continue; }
        if (seqLt(l, this.sndUna) || seqGt(r, this.sndMax)) { c.TcpExtTCPSACKDiscard++; continue; }
        if (this.scoreboard.add(l, r)) newSack = true;
      }
    }
    // Window update (RFC 9293 3.10.7.4, fifth, SND.WL1/SND.WL2 rule).
    if (seqLt(this.sndWl1, seq) || (this.sndWl1 === seq && seqLe(this.sndWl2, ack))) {
      const opened = this.sndWnd === 0 && wnd > 0;
      this.sndWnd = wnd;
      this.sndWl1 = seq; this.sndWl2 = ack;
      if (wnd > this.maxSndWnd) this.maxSndWnd = wnd;
      if (opened) { this.persistAt = Infinity; this.persistBackoff = 0; }
    }
    if (acked > 0) {
      // RTT sample (RFC 7323 4.1 with timestamps; RFC 6298 / Karn otherwise). The TSecr
      // must be a TSval this connection could have sent for the data it acknowledges: not
      // after our clock now, not before the first segment of the flight now being
      // acknowledged. Anything else (a forged or corrupted TSecr) is not a round trip:
      // one TSecr far in the past once made SRTT 268 million ms.
      if (this.tsOk && seg.hasTimestamp && seg.tsEcr !== 0) {
        const tsNow = this.tsNow(now);
        if (seqLe(seg.tsEcr, tsNow) && seqGe(seg.tsEcr, this.tsFlightStart)) this.sampleRtt((tsNow - seg.tsEcr) >>> 0);
        else this.layer.counters.FsTsEcrImplausible++;
      } else if (this.rttStart >= 0 && seqGt(ack, this.rttSeq)) {
        this.sampleRtt(now - this.rttStart);
        this.rttStart = -1;
      }
      // Release acknowledged data (our FIN takes one sequence number, not a byte).
      let dataAcked = acked;
      if (this.finSeq >= 0 && seqGt(ack, this.finSeq)) dataAcked -= 1;
      if (dataAcked > 0) {
        this.sendQueue.consume(dataAcked);
        this.bytesAcked += dataAcked;
      }
      this.sndUna = ack;
      if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
      this.scoreboard.advance(ack);
      this.backoff = 0;
      this.retries = 0;
      this.rto = this.computeRto();
      this.dupAcks = 0;
      if (this.rtoRecovery && seqGt(ack, this.recoverPoint)) this.rtoRecovery = false;
      if (this.inRecovery) {
        if (seqGe(ack, this.recoverPoint)) {
          this.inRecovery = false;
          this.cc.onRecoveryExit(this.flight);
        } else if (!this.sackOk) {
          // NewReno partial ACK (RFC 6582 3.2 step 5): retransmit the next hole, deflate.
          this.retransmitAt(this.sndUna, now);
          this.cc.cwnd = Math.max(this.mss, this.cc.cwnd - acked + (acked >= this.mss ? this.mss : 0));
        }
      } else {
        this.cc.onAck(dataAcked > 0 ? dataAcked : acked, this.flight, now, this.srtt);
      }
      if (this.sndUna === this.sndMax) this.disarmRto();
      else this.armRto(now);
      if (this.finSeq >= 0 && seqGt(ack, this.finSeq)) this.ourFinAcked(now);
      else if (dataAcked > 0 && this.owner && this.sendQueue.length < this.sndBuf) this.owner.onSendSpace();
    } else if (isDup || (newSack && outstanding && acked === 0)) {
      this.dupAcks++;
      // No new fast recovery for data sent before an RTO until it is acknowledged
      // (RFC 6582 3.2 step 2, RFC 6675 5.1: RecoveryPoint = HighData at the timeout).
      if (!this.inRecovery && !(this.rtoRecovery && seqLe(this.sndUna, this.recoverPoint))) {
        // RFC 6675 IsLost for the first unacknowledged byte, or DupThresh duplicate ACKs.
        const sackLoss = this.sackOk && seqGt(this.scoreboard.lossBoundary(this.mss, DUP_THRESH, this.sndUna), this.sndUna);
        if (this.dupAcks >= DUP_THRESH || sackLoss) this.enterRecovery(now);
      } else if (!this.sackOk) {
        this.cc.cwnd += this.mss; // RFC 6582 3.2 step 4: inflate by one segment per dupack
      }
    }
  }

  private enterRecovery(now: number): void {
    const c = this.layer.counters;
    this.inRecovery = true;
    this.recoverPoint = this.sndMax;
    const ssthresh = this.cc.onCongestionEvent(this.flight, now);
    c.TcpExtTCPFastRetrans++;
    this.rttStart = -1; // Karn
    if (this.sackOk) {
      c.TcpExtTCPSackRecovery++;
      this.cc.cwnd = ssthresh;
      // RFC 6675 5 (4.2): retransmit the first segment presumed dropped at once;
      // further holes follow as IsLost marks them.
      this.highRxt = this.sndUna;
      const n = Math.min(this.mss, (this.scoreboard.nextSackedStart(this.sndUna, this.sndMax) - this.sndUna) >>> 0);
      if (n > 0) {
        this.retransmitAt(this.sndUna, now);
        this.highRxt = (this.sndUna + n) >>> 0;
      }
    } else {
      c.TcpExtTCPRenoRecovery++;
      this.retransmitAt(this.sndUna, now);
      this.cc.cwnd = ssthresh + 3 * this.mss;
    }
  }

  private receiveData(seq: number, buf: Buffer, off: number, len: number, now: number): void {
    const c = this.layer.counters;
    this.layer.noteQueueUse(this, now);
    if (seq === this.rcvNxt) {
      const hadHole = !this.ooo.empty;
      this.rcvNxt = (this.rcvNxt + len) >>> 0;
      this.bytesReceived += len;
      this.tuneRcvWindow(now);
      // The ACK this data is owed is decided before the application sees the data: a
      // reply written from its data handler (an HTTP response) carries the ACK and
      // settles what is owed (afterSend). Arming the delayed ACK after delivery instead
      // sent, 40 ms later, a pure ACK repeating the one the reply had carried.
      this.segsSinceAck += Math.max(1, Math.round(len / this.mss));
      // Every second full segment is ACKed (RFC 5681 4.2); within a receive burst the ACK
      // waits for the burst's end, so that one ACK covers what arrived together (as a
      // GRO receiver's does), not one per GSO packet.
      if (hadHole) { /* ACKed at once below, once the queue is pulled */ }
      else if (this.segsSinceAck >= 2) {
        if (this.layer.inBurst) this.layer.deferAck(this);
        else this.ackNow = true;
      }
      else if (!this.ackNow && this.delackAt === Infinity) { this.delackAt = now + this.layer.config.delayedAckMs; this.rearm(); }
      // The device's buffer is only valid during this call: a large segment (a GSO
      // super-segment) keeps the device's buffer when it gives it away, anything else
      // is copied, the small ones into a shared chunk.
      const host = this.layer.host;
      if (len >= ZERO_COPY_MIN && host.claimPacket !== undefined && host.claimPacket(buf)) this.deliver(buf.subarray(off, off + len));
      else this.deliver(copyOut(buf, off, len));
      // Delivery may close the connection (a data handler that destroys the socket, a
      // delayed indication that resets it); destroy() disarmed every timer.
      if (this.isClosed()) return;
      if (hadHole) {
        const parts: Buffer[] = [];
        const nxt = this.ooo.pull(this.rcvNxt, parts);
        for (const p of parts) { this.bytesReceived += p.length; this.deliver(p); }
        this.rcvNxt = nxt;
        // RFC 5681 4.2: ACK at once when a gap is filled; within a burst, once at its end
        // (the same instant), covering whatever else the burst brought.
        if (this.layer.inBurst) this.layer.deferAck(this);
        else this.ackNow = true;
      }
      if (this.oooFinSeq >= 0 && this.oooFinSeq === this.rcvNxt) this.receiveFin(now);
    } else {
      c.TcpExtTCPOFOQueue++;
      // Bounded in bytes and in entries: a peer sending tiny segments with gaps must not
      // make every insert walk millions of entries.
      if (this.ooo.bytes + len > this.rcvBuf || this.ooo.segs.length >= MAX_OOO_SEGMENTS) { c.TcpExtTCPOFODrop++; }
      else this.ooo.insert(seq, buf.subarray(off, off + len));
      // A duplicate ACK with SACK blocks, at once (RFC 5681 4.2). With SACK, the
      // out-of-order segments of one receive burst get one ACK at the burst's end (the
      // same instant) whose blocks say everything they brought, as a GRO receiver's
      // does: after a loss the rest of the window arrives out of order, and an ACK per
      // segment (each a TUN write the kernel processes in our thread) slowed the stack
      // until the TUN queue overflowed again. Without SACK the sender counts duplicate
      // ACKs (RFC 5681 3.2), so each still leaves at once.
      if (this.sackOk && this.layer.inBurst) { this.dupAckOwed = true; this.layer.deferAck(this); }
      else this.ackNow = true;
    }
  }

  private deliver(data: Buffer): void {
    if (this.owner) this.owner.onData(data);
    else {
      this.pending.push(data);
      this.pendingBytes += data.length;
      // Not accepted yet: the listener's policy may be waiting for this (a delayed indication).
      if (this.listener !== null) this.listener.dataBeforeAccept(this, this.lastRecvAt);
    }
  }

  /** Hands data that arrived before the application accepted to the new owner. */
  attach(owner: ConnectionOwner): void {
    this.owner = owner;
    const pending = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    for (const d of pending) owner.onData(d);
    if (this.pendingFin) owner.onPeerFin();
    if (this.state === State.Closed) owner.onClosed(this.error);
  }

  private receiveFin(now: number): void {
    this.rcvNxt = (this.rcvNxt + 1) >>> 0;
    this.oooFinSeq = -1;
    this.ackNow = true;
    switch (this.state) {
      // TcpCurrEstab counts ESTABLISHED and CLOSE-WAIT (RFC 4022 tcpCurrEstab; Linux alike).
      case State.SynReceived: this.state = State.CloseWait; this.layer.counters.TcpCurrEstab++; break;
      case State.Established: this.state = State.CloseWait; break;
      case State.FinWait1:
        // Our FIN not yet acked: simultaneous close (RFC 9293 figure 13).
        this.state = State.Closing; break;
      case State.FinWait2: this.enterTimeWait(now); break;
      default: break;
    }
    if (this.owner) this.owner.onPeerFin();
    else this.pendingFin = true;
  }

  private ourFinAcked(now: number): void {
    switch (this.state) {
      case State.FinWait1:
        this.state = State.FinWait2;
        if (this.orphaned) { this.lingerAt = now + this.layer.config.finWait2TimeoutMs; this.rearm(); }
        break;
      case State.Closing: this.enterTimeWait(now); break;
      case State.LastAck: this.destroy(null, now); break;
      default: break;
    }
  }

  private enterTimeWait(now: number): void {
    this.state = State.TimeWait;
    this.disarmRto();
    this.delackAt = Infinity; this.persistAt = Infinity; this.keepaliveAt = Infinity;
    this.sendQueue.clear();
    this.ooo.clear();
    this.layer.enterTimeWait(this, now);
  }

  private onReset(now: number): void {
    const c = this.layer.counters;
    if (this.state === State.Established || this.state === State.CloseWait) c.TcpEstabResets++;
    this.destroy(new CodedError('ECONNRESET', 'read ECONNRESET'), now);
  }

  private challengeAck(now: number): void {
    if (this.layer.allowChallengeAck(now)) {
      this.layer.counters.TcpExtTCPChallengeACK++;
      this.sendAck(now);
    }
  }

  // ---------------------------------------------------------------- output

  /** Sends whatever the windows allow, then a pure ACK if one is owed. */
  output(now: number): void {
    if (this.state < State.Established || this.state === State.TimeWait) {
      if (this.ackNow && this.state === State.TimeWait) this.sendAck(now);
      return;
    }
    let sentAny = false;
    const mss = this.mss;
    const tsoMax = this.layer.tsoMaxSegments(this) * mss;
    // No more in flight than our share of the device queue the peer answers into.
    const cwnd = Math.min(this.cc.cwnd, this.layer.sndShare(mss));
    for (let guard = 0; guard < 100000; guard++) {
      // RFC 6675 NextSeg: retransmit lost holes first while in SACK recovery.
      let pipe = -1;
      if (this.inRecovery && this.sackOk) {
        pipe = this.pipe();
        if (cwnd - pipe < mss) break;
        const hole = this.nextHole();
        if (hole >= 0) {
          const holeEnd = this.scoreboard.nextSackedStart(hole, this.sndMax);
          const n = Math.min(mss, (holeEnd - hole) >>> 0);
          this.sendDataSegment(hole, n, now, true);
          this.highRxt = (hole + n) >>> 0;
          sentAny = true;
          continue;
        }
      }
      const dataLeft = this.dataLimit() - this.sndNxt | 0;
      const wndRight = (this.sndUna + this.sndWnd) >>> 0;
      const wndLeft = (wndRight - this.sndNxt) | 0;
      // Nothing was sent since the pipe was measured above, so it still holds.
      const inFlight = pipe >= 0 ? pipe : this.flight;
      const cwndLeft = cwnd - inFlight;
      let n = Math.min(dataLeft, wndLeft, cwndLeft);
      if (dataLeft <= 0) {
        // Only the FIN may remain.
        if (this.finSeq >= 0 && this.sndNxt === this.finSeq) {
          // Below SND.MAX it went out before (an RTO pulled SND.NXT back): count it as resent.
          const again = seqLt(this.finSeq, this.sndMax);
          this.sendFin(now);
          if (again) { this.layer.counters.TcpRetransSegs++; this.retransSegs++; }
          sentAny = true;
        }
        break;
      }
      if (n <= 0) {
        if (this.sndWnd === 0 && this.flight === 0 && this.persistAt === Infinity) this.armPersist(now);
        break;
      }
      if (n > tsoMax) n = tsoMax;
      else if (n > mss && tsoMax === mss) n = mss;
      if (n < mss && n < dataLeft) {
        // Sender SWS avoidance (RFC 9293 3.8.6.2.1): wait for a full segment unless
        // the peer's window will never allow one.
        if (!(n >= this.maxSndWnd / 2 && this.maxSndWnd > 0) && this.flight > 0) break;
        if (this.flight === 0 && n < dataLeft && n < this.maxSndWnd / 2 && wndLeft < mss && !this.swsOverride) { this.armPersist(now); break; }
      }
      if (n < mss && n === dataLeft && !this.noDelay && this.flight > 0 && this.finSeq < 0) break; // Nagle (RFC 896)
      if (tsoMax > mss && n > mss) n -= n % mss || 0;
      const retrans = seqLt(this.sndNxt, this.sndMax);
      const withFin = this.finSeq >= 0 && ((this.sndNxt + n) >>> 0) === this.finSeq;
      this.sendDataSegment(this.sndNxt, n, now, retrans, withFin);
      this.sndNxt = (this.sndNxt + n + (withFin ? 1 : 0)) >>> 0;
      if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
      sentAny = true;
      if (withFin) break;
    }
    if (sentAny) return;
    if (this.ackNow) this.sendAck(now);
  }

  /** Sequence number just past the last queued data byte. */
  private dataLimit(): number {
    return this.finSeq >= 0 ? this.finSeq : (this.sndUna + this.sendQueue.length) >>> 0;
  }

  /** RFC 6675 pipe: bytes in flight, not counting SACKed data or holes deemed lost and not yet resent. */
  private pipe(): number {
    const sb = this.scoreboard;
    const out = (this.sndMax - this.sndUna) >>> 0;
    if (sb.empty) return out;
    const high = sb.lossBoundary(this.mss, DUP_THRESH, this.sndUna);
    const from = seqGt(this.highRxt, this.sndUna) ? this.highRxt : this.sndUna;
    const lostNotResent = seqLt(from, high) ? sb.holeBytes(from, high) : 0;
    return Math.max(0, out - sb.sackedBytes - lostNotResent);
  }

  /** First un-SACKed byte at or above HighRxt that RFC 6675 IsLost deems lost, or -1. */
  private nextHole(): number {
    const sb = this.scoreboard;
    if (sb.empty) return -1;
    let s = seqGt(this.highRxt, this.sndUna) ? this.highRxt : this.sndUna;
    const high = sb.lossBoundary(this.mss, DUP_THRESH, this.sndUna);
    while (seqLt(s, high)) {
      if (!sb.isSacked(s)) return s;
      s = sb.sackedEnd(s);
    }
    return -1;
  }

  private retransmitAt(seq: number, now: number): void {
    const left = (this.dataLimit() - seq) | 0;
    if (left <= 0) {
      if (this.finSeq >= 0 && seq === this.finSeq) this.sendFin(now, true);
      return;
    }
    const n = Math.min(this.mss, left);
    const withFin = this.finSeq >= 0 && ((seq + n) >>> 0) === this.finSeq;
    this.sendDataSegment(seq, n, now, true, withFin);
  }

  private sendDataSegment(seq: number, len: number, now: number, retransmission: boolean, withFin = false): void {
    this.layer.noteQueueUse(this, now);
    const o = this.fillOptions(now);
    if (this.sndUna === this.sndMax) this.tsFlightStart = o.tsVal;
    let flags = ACK;
    if (withFin) flags |= FIN;
    if (((seq + len) >>> 0) === this.dataLimit() || withFin) flags |= PSH;
    const win = this.advertiseWindow();
    this.layer.emit(this, seq, this.rcvNxt, flags, win, o, len, now, (seq - this.sndUna) >>> 0);
    if (retransmission) {
      const segs = Math.ceil(len / this.mss);
      this.layer.counters.TcpRetransSegs += segs;
      this.retransSegs += segs;
      if (this.rttStart >= 0 && seqLe(seq, this.rttSeq)) this.rttStart = -1; // Karn
    } else if (this.rttStart < 0 && !this.tsOk) {
      this.rttStart = now; this.rttSeq = seq;
    }
    this.afterSend(now);
    if (this.rtoAt === Infinity) this.armRto(now);
  }

  private sendFin(now: number, retransmission = false): void {
    const o = this.fillOptions(now);
    if (this.sndUna === this.sndMax) this.tsFlightStart = o.tsVal;
    this.layer.emit(this, this.finSeq, this.rcvNxt, FIN | ACK, this.advertiseWindow(), o, 0, now);
    if (!retransmission) {
      this.sndNxt = (this.finSeq + 1) >>> 0;
      if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    } else this.layer.counters.TcpRetransSegs++;
    this.afterSend(now);
    if (this.rtoAt === Infinity) this.armRto(now);
  }

  /** A pure ACK carrying the current window and SACK blocks. */
  sendAck(now: number): void {
    if (this.state === State.Closed || this.state === State.SynSent) return;
    const o = this.fillOptions(now);
    this.layer.emit(this, this.sndNxt, this.rcvNxt, ACK, this.advertiseWindow(), o, 0, now);
    this.afterSend(now);
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
  private tuneRcvWindow(now: number): void {
    if (this.stalledEdge >= 0 && this.stalledAt >= 0 && seqGt(this.rcvNxt, this.stalledEdge)) {
      const m = now - this.stalledAt;
      this.rcvRtt = this.rcvRtt === 0 || m < this.rcvRtt ? m : this.rcvRtt + (m - this.rcvRtt) / 8;
      this.stalledEdge = -1; this.stalledAt = -1;
    }
    // Filled: less than a segment of the window left (the sender's SWS avoidance keeps a
    // smaller tail back).
    if (this.stalledEdge < 0 && ((this.rcvAdvEdge - this.rcvNxt) | 0) < this.mss) { this.stalledEdge = this.rcvAdvEdge; this.stalledAt = -1; }
    if (this.rcvRateAt < 0) { this.rcvRateAt = now; this.rcvRateSeq = this.rcvNxt; return; }
    const dt = now - this.rcvRateAt;
    if (dt < RCV_RATE_INTERVAL_MS) return;
    const rate = ((this.rcvNxt - this.rcvRateSeq) >>> 0) / dt;
    this.rcvRate = Math.max(rate, this.rcvRate * 0.75);
    this.rcvRateAt = now; this.rcvRateSeq = this.rcvNxt;
    if (this.rcvRtt > 0) {
      const want = 2 * this.rcvRate * this.rcvRtt + 16 * this.mss;
      this.rcvWndCap = Math.min(this.rcvBuf, Math.max(RCV_WINDOW_MIN, want));
    }
  }

  /** Data or a FIN arrived that no segment we sent has acknowledged yet, or out-of-order data no SACK block has reported. */
  ackOwed(): boolean { return this.rcvNxt !== this.lastAckSent || this.dupAckOwed; }

  private afterSend(now: number): void {
    // The segment just sent opened the window past where the peer had stopped: the
    // receiver's round trip runs from here (tuneRcvWindow).
    if (this.stalledEdge >= 0 && this.stalledAt < 0 && seqGt(this.rcvAdvEdge, this.stalledEdge)) this.stalledAt = now;
    this.lastAckSent = this.rcvNxt;
    this.dupAckOwed = false;
    this.ackNow = false;
    this.segsSinceAck = 0;
    if (this.delackAt !== Infinity) { this.delackAt = Infinity; this.rearm(); }
  }

  private fillOptions(now: number): TcpOptionsOut {
    const o = this.layer.optScratch;
    o.mss = -1; o.wscale = -1; o.sackPermitted = false;
    o.hasTimestamp = this.tsOk;
    if (this.tsOk) { o.tsVal = this.tsNow(now); o.tsEcr = this.tsRecent; }
    o.sackCount = this.sackOk && !this.ooo.empty ? this.ooo.sackBlocks(this.rcvNxt, o.sack!, this.tsOk ? 3 : 4) : 0;
    return o;
  }

  /**
   * The window to advertise (already shifted). Never moves the right edge left
   * (RFC 9293 3.8.6.2.2) and avoids advertising tiny openings (receiver SWS).
   */
  advertiseWindow(): number {
    let space = this.rcvSpace();
    const committed = (this.rcvAdvEdge - this.rcvNxt) | 0;
    // Receiver SWS avoidance (RFC 9293 3.8.6.2.2, RFC 1122 4.2.3.3): move the right edge
    // only by at least min(RCV.BUFF/2, MSS); never move it left.
    if (space > committed && space - committed < Math.min(this.rcvBuf >> 1, this.mss)) space = committed;
    if (space < committed) space = Math.max(committed, 0);
    let win = space >>> this.rcvWscale;
    if (win > 65535) win = 65535;
    const edge = (this.rcvNxt + (win << this.rcvWscale)) >>> 0;
    if (seqGt(edge, this.rcvAdvEdge)) this.rcvAdvEdge = edge;
    return win;
  }

  /**
   * Room to offer beyond RCV.NXT: the receive buffer less what the application has not
   * read and what waits out of order, and no more than this connection's share of the
   * device's receive queue (TcpLayer.rcvShare).
   */
  private rcvSpace(): number {
    const unread = this.owner ? this.owner.unreadBytes() : this.pendingBytes;
    const space = Math.min(this.rcvBuf - unread - this.ooo.bytes, this.rcvWndCap, this.layer.rcvShare(this.mss));
    return space > 0 ? space : 0;
  }

  /** The application read data: open the window if that is worth a segment (RFC 9293 3.8.6.2.2). */
  onAppRead(now: number): void {
    if (this.state < State.Established || this.state > State.FinWait2) return;
    // Only room the 16-bit window field can carry (RFC 7323 2.2: shifted by our scale)
    // counts: an ACK that cannot move the right edge is a duplicate ACK to the peer
    // (RFC 5681 2), e.g. on every read when window scaling was not negotiated.
    const space = Math.min(this.rcvSpace(), 65535 << this.rcvWscale);
    const committed = (this.rcvAdvEdge - this.rcvNxt) | 0;
    if (space - committed >= Math.min(this.rcvBuf >> 1, 2 * this.mss)) {
      this.sendAck(now);
      this.layer.flushSoon();
    }
  }

  // ---------------------------------------------------------------- application calls

  /** Queues application data and sends what the windows allow. The socket applies backpressure using `sendQueue.length`. */
  send(data: Buffer, now: number): void {
    if (this.enqueue(data)) this.output(now);
  }

  /** Queues application data without sending (the caller runs `output` after the last chunk of a writev). */
  enqueue(data: Buffer): boolean {
    if (this.finSeq >= 0) return false;
    this.sendQueue.push(data);
    return this.state >= State.Established;
  }

  /** The application ended its side: queue our FIN (RFC 9293 3.10.4 CLOSE). */
  shutdownWrite(now: number): void {
    if (this.finSeq >= 0) return;
    switch (this.state) {
      case State.SynSent:
      case State.SynReceived:
        // A close before the handshake finished: the FIN goes out once it has (RFC 9293
        // 3.10.4 queues it in SYN-RECEIVED; Node's end() before connect does the same).
        this.finAfterConnect = true;
        return;
      case State.Established:
        this.finSeq = (this.sndUna + this.sendQueue.length) >>> 0;
        if (this.state === State.Established) { this.state = State.FinWait1; this.layer.counters.TcpCurrEstab--; }
        break;
      case State.CloseWait:
        this.finSeq = (this.sndUna + this.sendQueue.length) >>> 0;
        this.state = State.LastAck;
        this.layer.counters.TcpCurrEstab--;
        break;
      default: return;
    }
    this.output(now);
  }

  /** The application let go: finish the close in the background (like close(2) on a socket). */
  release(now: number): void {
    this.orphaned = true;
    this.owner = null;
    if (this.state === State.FinWait2) { this.lingerAt = now + this.layer.config.finWait2TimeoutMs; this.rearm(); }
    if (this.state === State.Closed) return;
    if (this.state === State.SynSent) { this.destroy(null, now); return; }
    this.shutdownWrite(now);
  }

  /** Abortive close: RST and forget (RFC 9293 3.10.5 ABORT). */
  abort(now: number, err: CodedError | null = null): void {
    if (this.state === State.Closed) return;
    if (this.state >= State.SynReceived && this.state !== State.TimeWait) {
      this.layer.sendReset(this.localAddr, this.remoteAddr, this.localPort, this.remotePort, this.sndNxt, 0, false);
      if (this.state === State.Established || this.state === State.CloseWait) this.layer.counters.TcpEstabResets++;
    }
    this.destroy(err, now);
  }

  setKeepAlive(enable: boolean, idleMs: number, now: number): void {
    this.keepaliveEnabled = enable;
    if (idleMs > 0) this.keepaliveIdleMs = idleMs;
    this.keepaliveAt = enable && this.state >= State.Established ? now + this.keepaliveIdleMs : Infinity;
    this.rearm();
  }

  // ---------------------------------------------------------------- timers

  sampleRtt(rttMs: number): void {
    // RFC 6298 2.2 and 2.3, alpha 1/8, beta 1/4.
    if (this.srtt === 0) { this.srtt = Math.max(rttMs, 0.01); this.rttvar = rttMs / 2; }
    else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rttMs);
      this.srtt = 0.875 * this.srtt + 0.125 * rttMs;
    }
    this.rto = this.computeRto();
  }

  private computeRto(): number {
    const cfg = this.layer.config;
    if (this.srtt === 0) return cfg.initialRtoMs;
    const g = cfg.clockGranularityMs;
    const rto = this.srtt + Math.max(g, 4 * this.rttvar);
    return Math.min(cfg.maxRtoMs, Math.max(cfg.minRtoMs, rto));
  }

  armRto(now: number): void {
    const base = this.state === State.SynSent || this.state === State.SynReceived ? this.layer.synRto(this) : this.rto;
    const at = now + Math.min(base * Math.pow(2, this.backoff), this.layer.config.maxRtoMs);
    this.rtoAt = at;
    this.rearm();
  }
  private disarmRto(): void { this.rtoAt = Infinity; this.rearm(); }
  private armPersist(now: number): void {
    this.persistAt = now + Math.min(this.rto * Math.pow(2, this.persistBackoff), 60_000);
    this.rearm();
  }

  /** Re-arms the connection's single heap timer at the earliest deadline. */
  rearm(): void {
    const at = Math.min(this.rtoAt, this.delackAt, this.persistAt, this.keepaliveAt, this.lingerAt);
    if (at === this.timer.at) return;
    if (at === Infinity) this.layer.timers.disarm(this.timer);
    else this.layer.timers.arm(this.timer, at);
  }

  private onTimer(now: number): void {
    if (this.state === State.Closed) return;
    if (this.lingerAt <= now) {
      this.lingerAt = Infinity;
      if (this.state === State.TimeWait || this.state === State.FinWait2) { this.destroy(null, now); return; }
    }
    if (this.rtoAt <= now) { this.rtoAt = Infinity; this.onRto(now); if (this.isClosed()) return; }
    if (this.delackAt <= now) {
      this.delackAt = Infinity;
      // Owed only if nothing sent since carried RCV.NXT: never a pure ACK that repeats one.
      if (this.ackOwed()) {
        this.layer.counters.TcpExtDelayedACKs++;
        this.ackNow = true;
        this.output(now);
      }
    }
    if (this.persistAt <= now) {
      this.persistAt = Infinity;
      if (this.sndWnd === 0 && this.dataLimit() !== this.sndNxt) {
        // Zero-window probe: an old sequence number forces the peer to ACK with its window.
        this.layer.counters.TcpExtTCPWinProbe++;
        const o = this.fillOptions(now);
        this.layer.emit(this, (this.sndUna - 1) >>> 0, this.rcvNxt, ACK, this.advertiseWindow(), o, 0, now);
        this.persistBackoff = Math.min(this.persistBackoff + 1, 10);
        this.armPersist(now);
      } else {
        // The window is open but smaller than a segment and sender SWS avoidance is
        // holding data back: the override timeout has expired, so send what the
        // window allows (RFC 9293 3.8.6.2.1). Waiting again instead would never learn
        // of a window update that was lost, and the connection would stall for good.
        this.swsOverride = true;
        this.output(now);
        this.swsOverride = false;
      }
    }
    if (this.keepaliveAt <= now) {
      this.keepaliveAt = Infinity;
      this.onKeepalive(now);
      if (this.isClosed()) return;
    }
    this.rearm();
  }

  private onKeepalive(now: number): void {
    const cfg = this.layer.config;
    if (!this.keepaliveEnabled || this.state < State.Established || this.state === State.TimeWait) return;
    // Keepalives are for an idle connection (RFC 1122 4.2.3.6). With data in flight or
    // queued, the retransmission or persist timer is watching the peer already (Linux's
    // tcp_keepalive_timer only reschedules then); probing too would cut the connection
    // after the keepalive count instead of after dataRetries.
    if (this.sndMax !== this.sndUna || this.sendQueue.length > 0) {
      this.keepaliveProbes = 0;
      this.keepaliveAt = now + this.keepaliveIdleMs;
      return;
    }
    const idle = now - this.lastRecvAt;
    if (idle < this.keepaliveIdleMs && this.keepaliveProbes === 0) { this.keepaliveAt = this.lastRecvAt + this.keepaliveIdleMs; return; }
    if (this.keepaliveProbes >= cfg.keepaliveProbes) {
      this.layer.counters.TcpExtTCPAbortOnTimeout++;
      this.abort(now, new CodedError('ETIMEDOUT', 'read ETIMEDOUT (keepalive)'));
      return;
    }
    this.keepaliveProbes++;
    this.layer.counters.TcpExtTCPKeepAlive++;
    const o = this.fillOptions(now);
    this.layer.emit(this, (this.sndUna - 1) >>> 0, this.rcvNxt, ACK, this.advertiseWindow(), o, 0, now);
    this.keepaliveAt = now + cfg.keepaliveIntervalMs;
  }

  private onRto(now: number): void {
    const c = this.layer.counters;
    const cfg = this.layer.config;
    if (this.state === State.SynSent) {
      this.retries++;
      if (this.retries > this.layer.synRetries(this)) {
        c.TcpAttemptFails++;
        this.layer.onConnectTimeout(this, now);
        return;
      }
      c.TcpExtTCPSynRetrans++;
      c.TcpRetransSegs++;
      this.backoff++;
      this.rttStart = -1;
      this.sendSyn(now);
      return;
    }
    if (this.state === State.SynReceived) {
      this.retries++;
      if (this.retries > this.layer.synAckRetries(this)) {
        c.TcpAttemptFails++;
        this.destroy(new CodedError('ETIMEDOUT', 'handshake timed out'), now);
        return;
      }
      this.retransmitSynAck(now);
      return;
    }
    if (this.sndUna === this.sndMax) return;
    this.retries++;
    if (this.retries > cfg.dataRetries) {
      c.TcpExtTCPAbortOnTimeout++;
      this.abort(now, new CodedError('ETIMEDOUT', 'read ETIMEDOUT'));
      return;
    }
    c.TcpExtTCPTimeouts++;
    if (this.retries > BLACK_HOLE_RETRIES && this.blackHoleMtu === 0 && this.mss > BLACK_HOLE_MTU - 40 - (this.tsOk ? 12 : 0) &&
        this.layer.blackHoleDetection()) {
      // EnablePMTUBHDetect: full-size segments keep vanishing and no ICMP says why
      // (a router that drops DF packets silently, or filters its ICMP: RFC 2923 2.1).
      // Fall back to the size every IPv4 path carries (RFC 879/1122: 576, MSS 536).
      this.blackHoleMtu = BLACK_HOLE_MTU;
      c.FsPmtuBlackHoleDetected++;
      this.updateMss();
    }
    // RFC 6298 5.5-5.7 and RFC 5681 eq. 4: back off, collapse cwnd, resend from SND.UNA.
    // ssthresh is set only when the segment "has not yet been resent by way of the
    // retransmission timer" (RFC 5681 3.1): on later timeouts it is held (FlightSize
    // is then one segment and would drag it down to 2*SMSS).
    if (this.backoff === 0) this.cc.onTimeout(this.flight, now);
    else this.cc.cwnd = this.mss;
    this.inRecovery = false;
    this.dupAcks = 0;
    this.rtoRecovery = true;
    this.recoverPoint = this.sndMax;
    this.scoreboard.clear();
    this.sndNxt = this.sndUna;
    this.rttStart = -1;
    this.backoff = Math.min(this.backoff + 1, 16);
    this.armRto(now);
    c.TcpExtTCPSlowStartRetrans++;
    this.output(now);
  }

  /** Resends the SYN-ACK (SYN-RECEIVED retransmission, or a retransmitted SYN from the peer). */
  retransmitSynAck(now: number): void {
    this.layer.counters.FsSynAckRetrans++;
    this.layer.counters.TcpRetransSegs++;
    this.backoff++;
    this.rttStart = -1;
    this.sendSyn(now);
  }

  // ---------------------------------------------------------------- teardown

  /** Idempotent: leaves every queue and timer, tells the owner once. */
  destroy(err: CodedError | null, now: number): void {
    if (this.state === State.Closed) return;
    const wasEstab = this.state === State.Established || this.state === State.CloseWait;
    if (wasEstab) this.layer.counters.TcpCurrEstab--;
    if (this.state === State.TimeWait) this.layer.leftTimeWait();
    this.state = State.Closed;
    this.error = err;
    this.rtoAt = this.delackAt = this.persistAt = this.keepaliveAt = this.lingerAt = Infinity;
    this.layer.timers.disarm(this.timer);
    this.layer.remove(this, now);
    this.sendQueue.clear();
    this.ooo.clear();
    this.scoreboard.clear();
    const owner = this.owner;
    this.owner = null;
    owner?.onClosed(err);
  }

  /** Called when connect() fails for good (timeout, unreachable, refused). */
  fail(code: string, message: string, now: number): void {
    this.destroy(new CodedError(code, message), now);
  }

  /** Our timestamp clock: ms, offset per connection (RFC 7323 5.4). */
  tsNow(now: number): number {
    return (Math.floor(now) + this.tsOffset) >>> 0;
  }
}
