/**
 * One TCP connection (RFC 9293): its control block and its life from open to close.
 *
 * The control block is the fields of this class, named as RFC 9293 3.3.1 names them
 * (SND.UNA is `sndUna`, RCV.NXT is `rcvNxt`). What the connection does with them is
 * split by concern, as gVisor's transport/tcp is (docs/design.md lists which file holds
 * which RFC rule):
 *   handshake.ts  opening: active open, SYN-SENT, the passive and SYN-cookie completions
 *   receive.ts    segment arrival in synchronized states (RFC 9293 3.10.7.4), RFC 5961
 *                 checks, reassembly, delivery, the window we advertise
 *   send.ts       ACK processing, the output loop: segmentation, Nagle, SWS, TSO
 *   rtt.ts        RTT and RTO (RFC 6298, Karn), our timestamp clock (RFC 7323)
 *   timer.ts      the connection's deadlines behind its one heap entry; RTO, persist,
 *                 keepalive, delayed ACK and linger expiry
 *   recovery.ts   loss recovery (RFC 6675 with SACK, RFC 6582 without)
 * This file keeps the state transitions and the calls the socket layer makes.
 * Fields are written by the TCP modules only; code outside TCP calls methods.
 *
 * Time is passed in (`now`, ms). The connection never touches a device: it asks its
 * layer (`TcpLayer`) to emit segments and to arm its one timer.
 */
import { CodedError } from '../util/errors';
import type { TcpRepr } from '../wire/tcp';
import { type Seq, asSeq, seqAdd, seqSize, seqValue } from '../wire/seq';
import { NO_PENDING, ReassemblyQueue, SendQueue } from './buffers';
import { CongestionControl, makeCongestionControl } from './congestion';
import type { TimerEntry } from '../timers';
import type { TcpLayer } from './tcp';
import type { Listener } from './listener';
import type { HalfOpen } from './halfopen';
import { State, STATE_NAMES } from './state';
import { establishPassive, openActive, openFromCookie, retransmitSyn, retransmitSynAck, synSentArrives } from './handshake';
import { RCV_WINDOW_MIN, advertiseWindow, ackOwed, onAppRead, segmentArrives, sendDeferredAck } from './receive';
import { dataLimit, output, processAck, sendAck, sendProbe, updateMss } from './send';
import { sampleRtt, computeRto, tsNow } from './rtt';
import { armPersist, armRto, disarmRto, onTimer, rearm } from './timer';
import type { LossRecovery } from './recovery';
import { NewRenoRecovery } from './newreno-recovery';
import { SackRecovery } from './sack-recovery';
import type { ConnectionObserver } from './observer';

export { State, STATE_NAMES } from './state';

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

/** The initial value of every sequence-number field, until the handshake sets it. */

/** Which loss recovery establish() chose (TcpConnection.recovery). */
const enum RecoveryKind {
  None,
  Sack,
  NewReno,
}

/** The send queue of every connection that has written nothing: never pushed to. */
const EMPTY_SEND_QUEUE = new SendQueue();
/** The out-of-order queue of every connection that has had no out-of-order segment: never inserted into. */
const EMPTY_OOO = new ReassemblyQueue();
/**
 * The control block. Sequence numbers, timestamps and addresses are 32-bit unsigned, and
 * half of them are above 2^31: a field holding such a value is a heap number of its own
 * (16 bytes more per field and connection, issue 16). They are kept as int32 (`x32 = v | 0`,
 * a small integer inside the object) behind accessors that give the uint32 back, as the
 * half-open entries do (halfopen.ts).
 */
export class TcpConnection implements TimerEntry {
  /**
   * The connection's yes/no fields, one bit each behind their accessors (orphaned, wsOk,
   * tsOk, sackOk, finQueued, finAfterConnect, oooFin, pendingFin, ackDeferred, dupAckOwed,
   * stalled, ackNow, swsOverride, keepaliveEnabled, nagleOff): one slot instead of fifteen.
   */
  private bits = 0;
  state = State.Closed;
  /** The socket above (null until accepted, and after the application let go): `owner`. */
  private ownedBy: ConnectionOwner | null = null;
  listener: Listener | null = null;
  /** Set when the application let go (closed or destroyed) but the protocol goes on. */
  get orphaned(): boolean {
    return (this.bits & 1) !== 0;
  }
  set orphaned(on: boolean) {
    this.bits = on ? this.bits | 1 : this.bits & ~1;
  }

  // Send sequence space (RFC 9293 3.3.1)
  private iss32 = 0;
  get iss(): Seq {
    return asSeq(this.iss32);
  }
  set iss(v: Seq) {
    this.iss32 = seqValue(v) | 0;
  }
  private sndUna32 = 0;
  get sndUna(): Seq {
    return asSeq(this.sndUna32);
  }
  set sndUna(v: Seq) {
    this.sndUna32 = seqValue(v) | 0;
  }
  private sndNxt32 = 0;
  get sndNxt(): Seq {
    return asSeq(this.sndNxt32);
  }
  set sndNxt(v: Seq) {
    this.sndNxt32 = seqValue(v) | 0;
  }
  private sndMax32 = 0;
  get sndMax(): Seq {
    return asSeq(this.sndMax32);
  }
  set sndMax(v: Seq) {
    this.sndMax32 = seqValue(v) | 0;
  }
  sndWnd = 0;
  private sndWl132 = 0;
  get sndWl1(): Seq {
    return asSeq(this.sndWl132);
  }
  set sndWl1(v: Seq) {
    this.sndWl132 = seqValue(v) | 0;
  }
  private sndWl232 = 0;
  get sndWl2(): Seq {
    return asSeq(this.sndWl232);
  }
  set sndWl2(v: Seq) {
    this.sndWl232 = seqValue(v) | 0;
  }
  maxSndWnd = 0;
  sndWscale = 0; // shift the peer applies to its windows
  // Receive sequence space
  private irs32 = 0;
  get irs(): Seq {
    return asSeq(this.irs32);
  }
  set irs(v: Seq) {
    this.irs32 = seqValue(v) | 0;
  }
  private rcvNxt32 = 0;
  get rcvNxt(): Seq {
    return asSeq(this.rcvNxt32);
  }
  set rcvNxt(v: Seq) {
    this.rcvNxt32 = seqValue(v) | 0;
  }
  private rcvAdvEdge32 = 0;
  get rcvAdvEdge(): Seq {
    return asSeq(this.rcvAdvEdge32);
  }
  set rcvAdvEdge(v: Seq) {
    this.rcvAdvEdge32 = seqValue(v) | 0;
  }
  rcvWscale = 0; // shift we apply to ours
  rcvBuf: number;
  sndBuf: number;
  // Options
  /** Set by PMTU black-hole detection: this connection sends at most this size from then on (0: not set). */
  blackHoleMtu = 0;
  peerMss = 536;
  mss = 536;
  get wsOk(): boolean {
    return (this.bits & 2) !== 0;
  }
  set wsOk(on: boolean) {
    this.bits = on ? this.bits | 2 : this.bits & ~2;
  }
  get tsOk(): boolean {
    return (this.bits & 4) !== 0;
  }
  set tsOk(on: boolean) {
    this.bits = on ? this.bits | 4 : this.bits & ~4;
  }
  get sackOk(): boolean {
    return (this.bits & 8) !== 0;
  }
  set sackOk(on: boolean) {
    this.bits = on ? this.bits | 8 : this.bits & ~8;
  }
  private tsRecent32 = 0;
  get tsRecent(): number {
    return this.tsRecent32 >>> 0;
  }
  set tsRecent(v: number) {
    this.tsRecent32 = v | 0;
  }
  /** A time kept in whole milliseconds (a small integer in the object, not a heap number: issue 16). */
  private tsRecentAtMs = 0;
  get tsRecentAt(): number {
    return this.tsRecentAtMs;
  }
  set tsRecentAt(t: number) {
    this.tsRecentAtMs = Math.floor(t);
  }
  /** Added to our timestamp clock (RFC 7323 5.4), the same for the half-open entry and its connection. */
  private readonly tsOffset32: number;
  get tsOffset(): number {
    return this.tsOffset32 >>> 0;
  }
  /** TSval of the first segment sent while nothing was outstanding: the oldest TSecr an ACK of the flight can carry. */
  private tsFlightStart32 = 0;
  get tsFlightStart(): number {
    return this.tsFlightStart32 >>> 0;
  }
  set tsFlightStart(v: number) {
    this.tsFlightStart32 = v | 0;
  }
  // Send side data
  /**
   * What the application wrote and the peer has not acknowledged, made at the first write:
   * until then the shared empty queue (an idle connection holds none; about 100 bytes of
   * heap, issue 16). Only queueData pushes; consume and clear have nothing to do on it.
   */
  private sendQ: SendQueue | null = null;
  get sendQueue(): SendQueue {
    return this.sendQ ?? EMPTY_SEND_QUEUE;
  }
  /** The application ended its side: our FIN is queued, at finSeq. */
  get finQueued(): boolean {
    return (this.bits & 16) !== 0;
  }
  set finQueued(on: boolean) {
    this.bits = on ? this.bits | 16 : this.bits & ~16;
  }
  private finSeq32 = 0;
  get finSeq(): Seq {
    return asSeq(this.finSeq32);
  }
  set finSeq(v: Seq) {
    this.finSeq32 = seqValue(v) | 0;
  }
  get finAfterConnect(): boolean {
    return (this.bits & 32) !== 0;
  }
  set finAfterConnect(on: boolean) {
    this.bits = on ? this.bits | 32 : this.bits & ~32;
  }
  // Receive side data
  /**
   * Out-of-order segments, made at the first one: until then the shared empty queue
   * (an idle connection holds none; 70-odd bytes of heap each, issue 16).
   */
  private oooQueue: ReassemblyQueue | null = null;
  get ooo(): ReassemblyQueue {
    return this.oooQueue ?? EMPTY_OOO;
  }
  /** The connection's own out-of-order queue, to insert into. */
  oooForInsert(): ReassemblyQueue {
    return (this.oooQueue ??= new ReassemblyQueue());
  }
  /** A FIN arrived out of order, at oooFinSeq. */
  get oooFin(): boolean {
    return (this.bits & 64) !== 0;
  }
  set oooFin(on: boolean) {
    this.bits = on ? this.bits | 64 : this.bits & ~64;
  }
  private oooFinSeq32 = 0;
  get oooFinSeq(): Seq {
    return asSeq(this.oooFinSeq32);
  }
  set oooFinSeq(v: Seq) {
    this.oooFinSeq32 = seqValue(v) | 0;
  }
  /** Data (and FIN) that arrived before the application accepted the connection (NO_PENDING: none; replaced before a push). */
  pending: Buffer[] = NO_PENDING;
  pendingBytes = 0;
  get pendingFin(): boolean {
    return (this.bits & 128) !== 0;
  }
  set pendingFin(on: boolean) {
    this.bits = on ? this.bits | 128 : this.bits & ~128;
  }
  segsSinceAck = 0;
  /** On the layer's list of ACKs owed at the end of the current receive burst. */
  get ackDeferred(): boolean {
    return (this.bits & 256) !== 0;
  }
  set ackDeferred(on: boolean) {
    this.bits = on ? this.bits | 256 : this.bits & ~256;
  }
  /** Out-of-order data arrived in this burst: its duplicate ACK (with SACK) leaves at the burst's end. */
  get dupAckOwed(): boolean {
    return (this.bits & 512) !== 0;
  }
  set dupAckOwed(on: boolean) {
    this.bits = on ? this.bits | 512 : this.bits & ~512;
  }
  /** Epoch in which this connection last sent or received data (TcpLayer.noteQueueUse). */
  rxEpoch = -1;
  // Receive-window autotuning (tuneRcvWindow): the cap on what we offer, the receiver's
  // round trip (ms; 0 until measured), the delivery rate (bytes/ms) and their marks.
  rcvWndCap = RCV_WINDOW_MIN;
  rcvRtt = 0;
  rcvRate = 0;
  private rcvRateSeq32 = 0;
  get rcvRateSeq(): Seq {
    return asSeq(this.rcvRateSeq32);
  }
  set rcvRateSeq(v: Seq) {
    this.rcvRateSeq32 = seqValue(v) | 0;
  }
  rcvRateAt = -1;
  /** The peer filled our window up to stalledEdge (stalled); stalledAt: when we opened it further (-1: not yet). */
  get stalled(): boolean {
    return (this.bits & 1024) !== 0;
  }
  set stalled(on: boolean) {
    this.bits = on ? this.bits | 1024 : this.bits & ~1024;
  }
  private stalledEdge32 = 0;
  get stalledEdge(): Seq {
    return asSeq(this.stalledEdge32);
  }
  set stalledEdge(v: Seq) {
    this.stalledEdge32 = seqValue(v) | 0;
  }
  stalledAt = -1;
  get ackNow(): boolean {
    return (this.bits & 2048) !== 0;
  }
  set ackNow(on: boolean) {
    this.bits = on ? this.bits | 2048 : this.bits & ~2048;
  }
  // RTT (RFC 6298)
  srtt = 0;
  rttvar = 0;
  rto: number;
  private rttSeq32 = 0;
  get rttSeq(): Seq {
    return asSeq(this.rttSeq32);
  }
  set rttSeq(v: Seq) {
    this.rttSeq32 = seqValue(v) | 0;
  }
  rttStart = -1;
  backoff = 0;
  retries = 0;
  // Congestion control and loss recovery
  cc: CongestionControl & { setMss(mss: number): void };
  /**
   * SACK (RFC 6675) or NewReno (RFC 6582) recovery, chosen once in establish() and made
   * at its first use (an idle connection never needs one: about 140 B of heap, issue
   * 16); null before establish().
   */
  get recovery(): LossRecovery | null {
    if (this.lossRecovery === null && this.recoveryKind !== RecoveryKind.None) {
      this.lossRecovery = this.recoveryKind === RecoveryKind.Sack ? new SackRecovery(this) : new NewRenoRecovery(this);
    }
    return this.lossRecovery;
  }
  private lossRecovery: LossRecovery | null = null;
  private recoveryKind = RecoveryKind.None;
  /** RCV.NXT carried by the last segment we sent (RFC 7323 Last.ACK.sent). */
  private lastAckSent32 = 0;
  get lastAckSent(): Seq {
    return asSeq(this.lastAckSent32);
  }
  set lastAckSent(v: Seq) {
    this.lastAckSent32 = seqValue(v) | 0;
  }
  // Timers: one heap entry per connection, the earliest of these deadlines. The connection
  // is its own entry (TimerEntry: at, index, fire), so an idle one holds no Timer object and
  // no closure for it.
  /** The heap entry's deadline (timer.ts rearm keeps it at the earliest below). */
  at = Infinity;
  /** The heap entry's position (-1: not queued). */
  index = -1;
  /** The heap entry is due (timer.ts onTimer runs whatever deadlines have passed). */
  fire(now: number): void {
    onTimer(this, now);
    if (this.observer !== null) this.observer.update(this, now);
  }
  rtoAt = Infinity;
  delackAt = Infinity;
  persistAt = Infinity;
  keepaliveAt = Infinity;
  lingerAt = Infinity;
  persistBackoff = 0;
  /** Set while the persist timer's override lets a sub-MSS segment through (RFC 9293 3.8.6.2.1). */
  get swsOverride(): boolean {
    return (this.bits & 4096) !== 0;
  }
  set swsOverride(on: boolean) {
    this.bits = on ? this.bits | 4096 : this.bits & ~4096;
  }
  // Keepalive
  get keepaliveEnabled(): boolean {
    return (this.bits & 8192) !== 0;
  }
  set keepaliveEnabled(on: boolean) {
    this.bits = on ? this.bits | 8192 : this.bits & ~8192;
  }
  keepaliveIdleMs = 7_200_000;
  keepaliveProbes = 0;
  /** A time kept in whole milliseconds (a small integer in the object, not a heap number: issue 16). */
  private lastRecvAtMs = 0;
  get lastRecvAt(): number {
    return this.lastRecvAtMs;
  }
  set lastRecvAt(t: number) {
    this.lastRecvAtMs = Math.floor(t);
  }
  /** TCP_NODELAY: Nagle's algorithm off (`noDelay`). */
  private get nagleOff(): boolean {
    return (this.bits & 16384) !== 0;
  }
  private set nagleOff(on: boolean) {
    this.bits = on ? this.bits | 16384 : this.bits & ~16384;
  }
  // Bookkeeping
  bytesAcked = 0;
  bytesReceived = 0;
  retransSegs = 0;
  error: CodedError | null = null;
  /** The next connection in the same bucket of the connection table (conntable.ts). */
  chainNext: TcpConnection | null = null;
  /** A trace of this connection (observer.ts), attached on request; null: nobody watches, and nothing is recorded. */
  observer: ConnectionObserver | null = null;

  /** The addresses as int32 (see the top of the class), read as the uint32 they are. */
  private readonly local32: number;
  private readonly remote32: number;
  get localAddr(): number {
    return this.local32 >>> 0;
  }
  get remoteAddr(): number {
    return this.remote32 >>> 0;
  }

  constructor(
    readonly layer: TcpLayer,
    localAddr: number,
    readonly localPort: number,
    remoteAddr: number,
    readonly remotePort: number,
    now: number,
  ) {
    const cfg = layer.config;
    this.local32 = localAddr | 0;
    this.remote32 = remoteAddr | 0;
    this.rcvBuf = cfg.rcvBuf;
    this.sndBuf = cfg.sndBuf;
    this.rto = cfg.initialRtoMs;
    this.cc = makeCongestionControl(cfg.congestionControl, 536);
    this.tsOffset32 = layer.tsOffsetFor(localAddr, localPort, remoteAddr, remotePort) | 0;
    this.lastRecvAt = now;
  }

  get stateName(): string {
    return STATE_NAMES[this.state];
  }
  /** The socket above, if any. */
  get owner(): ConnectionOwner | null {
    return this.ownedBy;
  }
  /** TCP_NODELAY (Nagle off). */
  get noDelay(): boolean {
    return this.nagleOff;
  }
  /** Bytes the application wrote that are not acknowledged yet (Send-Q in ss). */
  get sendQueued(): number {
    return this.sendQueue.length;
  }
  /** Bytes received in order and not read by the application yet (Recv-Q in ss). */
  get receiveQueued(): number {
    return this.ownedBy ? this.ownedBy.unreadBytes() : this.pendingBytes;
  }
  /** Room in the send buffer: a write may complete (the socket's backpressure). */
  hasSendSpace(): boolean {
    return this.sendQueue.length < this.sndBuf;
  }
  get flight(): number {
    return seqSize(this.sndUna, this.sndNxt);
  }
  get synchronized(): boolean {
    return this.state >= State.Established;
  }
  /** A method, not a narrowed field read: callbacks may have closed the connection. */
  isClosed(): boolean {
    return this.state === State.Closed;
  }

  // ---------------------------------------------------------------- opening (handshake.ts)

  /** Active open (RFC 9293 3.10.1): send SYN. */
  openActive(now: number): void {
    openActive(this, now);
  }

  /** A passive open whose handshake just completed (halfopen.ts): the connection starts ESTABLISHED. */
  establishPassive(req: HalfOpen, ack: TcpRepr, now: number): void {
    establishPassive(this, req, ack, now);
  }

  /** RFC 9293 3.10.7.3: a segment arrives in SYN-SENT. */
  inputSynSent(seg: TcpRepr, now: number): void {
    synSentArrives(this, seg, now);
  }

  /** Resends the SYN-ACK (SYN-RECEIVED retransmission, or a retransmitted SYN from the peer). */
  retransmitSynAck(now: number): void {
    retransmitSynAck(this, now);
  }

  /** A passive open completed by a returning SYN cookie (tcp.ts): the connection starts ESTABLISHED. */
  openFromCookie(l: Listener, ack: TcpRepr, iss: Seq, peerMss: number, now: number): void {
    openFromCookie(this, l, ack, iss, peerMss, now);
  }

  /** Effective send MSS: the peer's MSS, the path MTU, and the timestamp option's 12 bytes. */
  updateMss(): void {
    updateMss(this);
  }

  /**
   * The path MTU to the peer went down to `mtu` (an ICMP fragmentation needed, RFC 1191):
   * segments are cut smaller from now on, and what is in flight at the old size is sent
   * again at once from SND.UNA, as the router dropped it (RFC 1191 6.5).
   */
  onPathMtuDecreased(mtu: number, now: number): void {
    const before = this.mss;
    updateMss(this, mtu);
    if (this.mss < before && this.sndMax !== this.sndUna) {
      this.sndNxt = this.sndUna;
      this.output(now);
    }
  }

  // ---------------------------------------------------------------- segments (receive.ts, send.ts)

  /** RFC 9293 3.10.7.4: a segment arrives in a synchronized state or SYN-RECEIVED. */
  input(seg: TcpRepr, buf: Buffer, now: number): void {
    segmentArrives(this, seg, buf, now);
    if (this.observer !== null) this.observer.update(this, now);
  }

  /** Sends whatever the windows allow, then a pure ACK if one is owed. */
  output(now: number): void {
    output(this, now);
    if (this.observer !== null) this.observer.update(this, now);
  }

  /** A pure ACK carrying the current window and SACK blocks. */
  sendAck(now: number): void {
    sendAck(this, now);
  }

  /** The receive burst ended (TcpLayer.endBurst): the ACK deferred to its end goes now, if still owed. */
  sendDeferredAck(now: number): void {
    sendDeferredAck(this, now);
  }

  /** Data or a FIN arrived that no segment we sent has acknowledged yet, or out-of-order data no SACK block has reported. */
  ackOwed(): boolean {
    return ackOwed(this);
  }

  /** The window to advertise (already shifted); see receive.ts. */
  advertiseWindow(): number {
    return advertiseWindow(this);
  }

  /** The application read data: open the window if that is worth a segment (RFC 9293 3.8.6.2.2). */
  onAppRead(now: number): void {
    onAppRead(this, now);
  }

  // ---------------------------------------------------------------- state transitions

  /** The handshake completed (RFC 9293 3.10.7.3 and 3.10.7.4 in SYN-RECEIVED): ESTABLISHED. */
  establish(now: number): void {
    // Our SYN or SYN-ACK had to be resent: the initial window is one segment
    // (RFC 5681 3.1, RFC 6928 2; Linux's tcp_init_transfer alike), not ten.
    const synLost = this.backoff > 0;
    this.state = State.Established;
    // Loss recovery by what the handshake agreed, decided here once for the connection's life.
    this.recoveryKind = this.sackOk ? RecoveryKind.Sack : RecoveryKind.NewReno;
    this.retries = 0;
    this.backoff = 0;
    this.rto = computeRto(this);
    this.layer.counters.TcpCurrEstab++;
    this.cc.cwnd = (synLost ? 1 : 10) * this.mss;
    this.lastRecvAt = now;
    disarmRto(this);
    if (this.keepaliveEnabled) this.keepaliveAt = now + this.keepaliveIdleMs;
    rearm(this);
    // A passive open joins its listener's accept queue in HalfOpen.establish.
    this.ownedBy?.onEstablished();
  }

  /** The socket above hears from now on; it gets what arrived before it accepted. `noDelay`: TCP_NODELAY from the start. */
  attach(owner: ConnectionOwner, noDelay = false): void {
    this.nagleOff = noDelay;
    this.ownedBy = owner;
    const pending = this.pending;
    this.pending = NO_PENDING;
    this.pendingBytes = 0;
    for (const d of pending) owner.onData(d);
    if (this.pendingFin) owner.onPeerFin();
    if (this.state === State.Closed) owner.onClosed(this.error);
  }

  /** Our side reached the peer's FIN (RFC 9293 3.10.7.4, eighth). */
  receiveFin(now: number): void {
    this.rcvNxt = seqAdd(this.rcvNxt, 1);
    this.oooFin = false;
    this.ackNow = true;
    switch (this.state) {
      // TcpCurrEstab counts ESTABLISHED and CLOSE-WAIT (RFC 4022 tcpCurrEstab; Linux alike).
      case State.SynReceived:
        this.state = State.CloseWait;
        this.layer.counters.TcpCurrEstab++;
        break;
      case State.Established:
        this.state = State.CloseWait;
        break;
      case State.FinWait1:
        // Our FIN not yet acked: simultaneous close (RFC 9293 figure 13).
        this.state = State.Closing;
        break;
      case State.FinWait2:
        this.enterTimeWait(now);
        break;
      default:
        break;
    }
    if (this.ownedBy) this.ownedBy.onPeerFin();
    else this.pendingFin = true;
  }

  /** The peer acknowledged our FIN (RFC 9293 3.10.7.4, fifth, in FIN-WAIT-1, CLOSING and LAST-ACK). */
  ourFinAcked(now: number): void {
    switch (this.state) {
      case State.FinWait1:
        this.state = State.FinWait2;
        if (this.orphaned) {
          this.lingerAt = now + this.layer.config.finWait2TimeoutMs;
          rearm(this);
        }
        break;
      case State.Closing:
        this.enterTimeWait(now);
        break;
      case State.LastAck:
        this.destroy(null, now);
        break;
      default:
        break;
    }
  }

  /** Both FINs are acknowledged (RFC 9293 3.10.7.4): TIME-WAIT for 2 MSL (timeWaitMs), without an owner. */
  enterTimeWait(now: number): void {
    this.state = State.TimeWait;
    disarmRto(this);
    this.delackAt = Infinity;
    this.persistAt = Infinity;
    this.keepaliveAt = Infinity;
    this.sendQ?.clear();
    this.oooQueue?.clear();
    if (!this.orphaned && this.ownedBy) {
      // The owner still hears about the close; TIME-WAIT itself needs no owner.
      const owner = this.ownedBy;
      this.ownedBy = null;
      owner.onClosed(null);
    }
    if (!this.layer.admitTimeWait()) {
      this.destroy(null, now);
      return;
    }
    this.lingerAt = now + this.layer.config.timeWaitMs;
    rearm(this);
  }

  // ---------------------------------------------------------------- application calls

  /** Queues application data and sends what the windows allow. The socket applies backpressure using `sendQueue.length`. */
  send(data: Buffer, now: number): void {
    if (this.enqueue(data)) this.output(now);
  }

  /** Queues application data without sending (the caller runs `output` after the last chunk of a writev). */
  enqueue(data: Buffer): boolean {
    if (this.finQueued) return false;
    (this.sendQ ??= new SendQueue()).push(data);
    return this.state >= State.Established;
  }

  /** The application ended its side: queue our FIN (RFC 9293 3.10.4 CLOSE). */
  shutdownWrite(now: number): void {
    if (this.finQueued) return;
    switch (this.state) {
      case State.SynSent:
      case State.SynReceived:
        // A close before the handshake finished: the FIN goes out once it has (RFC 9293
        // 3.10.4 queues it in SYN-RECEIVED; Node's end() before connect does the same).
        this.finAfterConnect = true;
        return;
      case State.Established:
        this.finQueued = true;
        this.finSeq = seqAdd(this.sndUna, this.sendQueue.length);
        if (this.state === State.Established) {
          this.state = State.FinWait1;
          this.layer.counters.TcpCurrEstab--;
        }
        break;
      case State.CloseWait:
        this.finQueued = true;
        this.finSeq = seqAdd(this.sndUna, this.sendQueue.length);
        this.state = State.LastAck;
        this.layer.counters.TcpCurrEstab--;
        break;
      default:
        return;
    }
    this.output(now);
  }

  /** The application let go: finish the close in the background (like close(2) on a socket). */
  release(now: number): void {
    this.orphaned = true;
    this.ownedBy = null;
    if (this.state === State.FinWait2) {
      this.lingerAt = now + this.layer.config.finWait2TimeoutMs;
      rearm(this);
    }
    if (this.state === State.Closed) return;
    if (this.state === State.SynSent) {
      this.destroy(null, now);
      return;
    }
    this.shutdownWrite(now);
  }

  /** Abortive close: RST and forget (RFC 9293 3.10.5 ABORT). */
  abort(now: number, err: CodedError | null = null): void {
    if (this.state === State.Closed) return;
    if (this.state >= State.SynReceived && this.state !== State.TimeWait) {
      // At SND.MAX, as a pure ACK (sendAck): SND.NXT may have been pulled back below the peer's RCV.NXT.
      this.layer.sendReset(this.localAddr, this.remoteAddr, this.localPort, this.remotePort, this.sndMax);
      if (this.state === State.Established || this.state === State.CloseWait) this.layer.counters.TcpEstabResets++;
    }
    this.destroy(err, now);
  }

  /**
   * The application closed its socket (close(2), RFC 9293 3.10.4 CLOSE) and hears nothing
   * more. With data it has not read (`unreadByApplication`, or data still waiting here for
   * it to accept) the connection is reset (RFC 1122 4.2.2.13, as Linux does); otherwise the
   * close completes in the background.
   */
  close(now: number, unreadByApplication: boolean): void {
    this.ownedBy = null;
    if (unreadByApplication || this.pendingBytes > 0) {
      this.layer.counters.TcpExtTCPAbortOnClose++; // as Linux counts a reset on close with unread data
      this.abort(now);
    } else this.release(now);
  }

  /** Lets go of the data that arrived before the application accepted and that nobody will read. */
  releasePending(): void {
    this.pending = NO_PENDING;
    this.pendingBytes = 0;
  }

  /** The application's ABORT (RFC 9293 3.10.5, Node's resetAndDestroy): RST, and it hears nothing more. */
  abortByApplication(now: number): void {
    this.ownedBy = null;
    this.abort(now);
  }

  /** TCP_NODELAY. Turned on, it sends what Nagle was holding back at once (as Linux's setsockopt does): true when it ran the output loop. */
  setNoDelay(noDelay: boolean, now: number): boolean {
    if (noDelay === this.nagleOff) return false;
    this.nagleOff = noDelay;
    if (!noDelay) return false;
    this.output(now);
    return true;
  }

  setKeepAlive(enable: boolean, idleMs: number, now: number): void {
    this.keepaliveEnabled = enable;
    if (idleMs > 0) this.keepaliveIdleMs = idleMs;
    this.keepaliveAt = enable && this.state >= State.Established ? now + this.keepaliveIdleMs : Infinity;
    rearm(this);
  }

  // ---------------------------------------------------------------- RTT and timers (rtt.ts, timer.ts)

  /** An RTT measurement (RFC 6298 2.2, 2.3). */
  sampleRtt(rttMs: number): void {
    sampleRtt(this, rttMs);
  }

  /** (Re)starts the retransmission timer (RFC 6298 5.1, 5.3), with the backoff of 5.5. */
  armRto(now: number): void {
    armRto(this, now);
  }

  /** timer.ts: no retransmission timer until data is outstanding again. */
  disarmRto(): void {
    disarmRto(this);
  }

  /** timer.ts: the zero-window probe timer (RFC 9293 3.8.6.1). */
  armPersist(now: number): void {
    armPersist(this, now);
  }

  /** handshake.ts: our SYN again (the active open's retransmission timer fired). */
  retransmitSyn(now: number): void {
    retransmitSyn(this, now);
  }

  /** send.ts: the acknowledgment part of an arriving segment (RFC 9293 3.10.7.4, fifth). */
  processAck(seg: TcpRepr, seq: Seq, len: number, now: number): void {
    processAck(this, seg, seq, len, now);
  }

  /** send.ts: the sequence number just past the last queued byte (or our FIN). */
  dataLimit(): Seq {
    return dataLimit(this);
  }

  /** send.ts: a probe at SND.UNA-1 that the peer answers with its window (RFC 9293 3.8.6.1). */
  sendProbe(now: number): void {
    sendProbe(this, now);
  }

  /** Re-arms the connection's single heap timer at the earliest deadline. */
  rearm(): void {
    rearm(this);
  }

  /** Our timestamp clock: ms, offset per connection (RFC 7323 5.4). */
  tsNow(now: number): number {
    return tsNow(this, now);
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
    this.layer.timers.disarm(this);
    this.layer.remove(this, now);
    this.sendQ?.clear();
    this.oooQueue?.clear();
    this.lossRecovery?.clear();
    const owner = this.ownedBy;
    this.ownedBy = null;
    owner?.onClosed(err);
  }

  /** Called when connect() fails for good (timeout, unreachable, refused). */
  fail(code: string, message: string, now: number): void {
    this.destroy(new CodedError(code, message), now);
  }
}
