/**
 * A half-open connection: what a listener remembers of a SYN it answered, until the
 * handshake completes (RFC 9293 3.5: the passive side in SYN-RECEIVED).
 *
 * Not a TcpConnection. Like Linux's request_sock (net/ipv4/tcp_input.c
 * tcp_conn_request, tcp_minisocks.c tcp_check_req), the entry holds only what the
 * SYN-ACK retransmissions and the final ACK need: the four-tuple, both initial
 * sequence numbers, the options the SYN offered and its timestamp, and the
 * retransmission count. It is one small object with its timer built in (the entry is
 * its own heap timer), a few hundred bytes. The full connection, with its send and
 * receive queues, scoreboard and congestion state, is built when the final ACK
 * arrives (`establish`). A SYN flood therefore costs the stack a bounded table of
 * these entries (Listener: per-listener and global caps), not a table of connections.
 *
 * Numbers above 2^31 (addresses, sequence numbers, timestamps) are kept as signed
 * 32-bit values (`| 0`), so that V8 stores them inline instead of as boxed doubles;
 * `>>> 0` turns them back where they are used.
 */
import { formatIpv4 } from '../wire/addr';
import { ACK, FIN, RST, SYN, type TcpRepr, clearTcpOptions } from '../wire/tcp';
import { type Seq, asSeq, seqAdd, seqInWindow, seqValue, tsLt } from '../wire/seq';
import { Timer } from '../timers';
import type { Listener } from './listener';

/** Bits of HalfOpen.flags. */
export const HalfOpenFlag = {
  /** Window scaling agreed (RFC 7323 2): the SYN offered it and our SYN-ACK carries it. */
  WindowScale: 1,
  /** SACK permitted by both (RFC 2018). */
  Sack: 2,
  /** Timestamps on both (RFC 7323 3). */
  Timestamps: 4,
  /** At least one SYN-ACK retransmission (counted in Listener.halfOpenRetried). */
  Retried: 8,
  /** A backlog policy counted this entry as holding a backlog slot (Windows: told to the application at its SYN). */
  HoldsSlot: 16,
  /** A backlog policy will tell the application only after the handshake (Windows SynAttackProtect 2). */
  DelayedIndication: 32,
  /** In its listener's SYN queue. */
  Queued: 64,
} as const;

/** The heap timer's callback: `this` is the entry (TimerQueue calls t.fire(now)). */
function fireHalfOpen(this: HalfOpen, now: number): void {
  this.onTimer(now);
}

export class HalfOpen extends Timer {
  /** Signed 32-bit copies of the addresses (see the module comment). */
  private readonly local: number;
  private readonly remote: number;
  readonly remotePort: number;
  private readonly irs32: number;
  private readonly iss32: number;
  /** The SYN's TSval (TS.Recent, RFC 7323 4.3), signed 32-bit. */
  private tsRecent32: number;
  /** MSS option of the SYN (536 without one, RFC 9293 3.7.1). */
  readonly peerMss: number;
  /** The peer's window shift (RFC 7323 2.3), 0 without window scaling. */
  readonly sndWscale: number;
  flags: number;
  /** SYN-ACK retransmissions by the timer (counted against the policy's limit). */
  retries = 0;
  /** SYN-ACKs sent again for any reason (timer or the peer's repeated SYN): the RTO's exponent. */
  backoff = 0;
  /** When the first SYN-ACK went out (the handshake's RTT sample, RFC 6298, if none was resent). */
  readonly sentAt: number;
  /**
   * The listener's SYN queue in arrival order, oldest first (an intrusive list: a Map
   * iterated from its start after many deletions walks their tombstones every time).
   */
  older: HalfOpen | null = null;
  newer: HalfOpen | null = null;
  /** The next entry from the same remote address and port (to another of our addresses): a hash chain. */
  samePeer: HalfOpen | null = null;

  constructor(
    readonly listener: Listener,
    localAddr: number,
    remoteAddr: number,
    remotePort: number,
    seg: TcpRepr,
    iss: Seq,
    now: number,
  ) {
    super(fireHalfOpen);
    const layer = listener.layer;
    const cfg = layer.config;
    this.local = localAddr | 0;
    this.remote = remoteAddr | 0;
    this.remotePort = remotePort;
    this.irs32 = seqValue(seg.seq) | 0;
    this.iss32 = seqValue(iss) | 0;
    this.peerMss = seg.mss > 0 ? seg.mss : 536;
    let flags = 0;
    // With SYN attack protection on, Windows sends the SYN-ACK without consulting the
    // route (no window scaling): decided once, at the SYN, for the whole connection.
    if (seg.wscale >= 0 && cfg.windowScale >= 0 && !layer.hooks.listenerAdmission.suppressSynOptions(listener)) flags |= HalfOpenFlag.WindowScale;
    this.sndWscale = flags & HalfOpenFlag.WindowScale ? Math.min(seg.wscale, 14) : 0;
    if (seg.sackPermitted && cfg.sack) flags |= HalfOpenFlag.Sack;
    if (seg.hasTimestamp && cfg.timestamps) flags |= HalfOpenFlag.Timestamps;
    this.flags = flags;
    this.tsRecent32 = seg.hasTimestamp ? seg.tsVal | 0 : 0;
    this.sentAt = now;
  }

  get localAddr(): number {
    return this.local >>> 0;
  }
  get localPort(): number {
    return this.listener.port;
  }
  get remoteAddr(): number {
    return this.remote >>> 0;
  }
  get irs(): Seq {
    return asSeq(this.irs32);
  }
  get iss(): Seq {
    return asSeq(this.iss32);
  }
  get rcvNxt(): Seq {
    return asSeq(this.irs32 + 1);
  }
  get tsRecent(): number {
    return this.tsRecent32 >>> 0;
  }
  has(flag: number): boolean {
    return (this.flags & flag) !== 0;
  }
  /** The SYN queue's hash key: remote address and port (< 2^48, exact in a double). */
  get key(): number {
    return HalfOpen.keyOf(this.remoteAddr, this.remotePort);
  }
  static keyOf(remoteAddr: number, remotePort: number): number {
    return remoteAddr * 65536 + remotePort;
  }
  get queued(): boolean {
    return (this.flags & HalfOpenFlag.Queued) !== 0;
  }

  /** Our window in the SYN-ACK (never scaled, RFC 7323 2.2), and thus RCV.WND until the handshake completes. */
  private get synWindow(): number {
    return Math.min(this.listener.layer.config.rcvBuf, 65535);
  }

  /** Sends (or resends) the SYN-ACK with the options the SYN offered (RFC 7323, RFC 2018), and arms the timer. */
  sendSynAck(now: number): void {
    const layer = this.listener.layer;
    const cfg = layer.config;
    const r = layer.out;
    const remote = this.remoteAddr,
      local = this.localAddr;
    r.mss = layer.pathMtu(remote) - 40;
    r.wscale = this.has(HalfOpenFlag.WindowScale) ? cfg.windowScale : -1;
    r.sackPermitted = this.has(HalfOpenFlag.Sack);
    r.hasTimestamp = this.has(HalfOpenFlag.Timestamps);
    r.tsVal = (Math.floor(now) + layer.tsOffsetFor(local, this.localPort, remote, this.remotePort)) >>> 0;
    r.tsEcr = this.tsRecent;
    r.sackCount = 0;
    r.srcPort = this.localPort;
    r.dstPort = this.remotePort;
    r.seq = this.iss;
    r.ack = this.rcvNxt;
    r.flags = SYN | ACK;
    r.window = this.synWindow;
    layer.emitSegment(local, remote, r);
    this.arm(now);
  }

  private arm(now: number): void {
    const layer = this.listener.layer;
    const base = layer.hooks.listenerAdmission.synAckRto(this.listener);
    layer.timers.arm(this, now + Math.min(base * Math.pow(2, this.backoff), layer.config.maxRtoMs));
  }

  /** The SYN-ACK timer (RFC 6298 backoff from the policy's first timeout). */
  onTimer(now: number): void {
    const l = this.listener;
    if (!this.queued) return;
    this.retries++;
    if (this.retries > l.layer.hooks.listenerAdmission.synAckRetries(l)) {
      // Given up: SYN-RECEIVED -> LISTEN without a handshake (RFC 4022 tcpAttemptFails).
      l.layer.counters.TcpAttemptFails++;
      l.removeHalfOpen(this);
      return;
    }
    this.retransmit(now);
  }

  /** Resends the SYN-ACK: the timer expired, or the peer sent its SYN again (our SYN-ACK was lost). */
  retransmit(now: number): void {
    const l = this.listener;
    const c = l.layer.counters;
    c.FsSynAckRetrans++;
    c.TcpRetransSegs++;
    this.backoff++;
    l.onSynAckRetransmit(this, now);
    this.sendSynAck(now);
  }

  /**
   * A segment for this four-tuple while the handshake is incomplete: RFC 9293 3.10.7.4
   * for SYN-RECEIVED, with RFC 7323 (PAWS) and RFC 5961 (RST and SYN) checks.
   */
  input(seg: TcpRepr, buf: Buffer, now: number): void {
    const l = this.listener;
    const layer = l.layer;
    const f = seg.flags;
    const tsOk = this.has(HalfOpenFlag.Timestamps);
    // PAWS (RFC 7323 5.3): older than the SYN's TSval.
    if (tsOk && seg.hasTimestamp && !(f & RST) && tsLt(seg.tsVal, this.tsRecent)) {
      layer.counters.TcpExtPAWSEstab++;
      this.sendAck(now);
      return;
    }
    // The peer's SYN again: our SYN-ACK was lost. Resend it now, as Linux's tcp_check_req
    // does; a bare ACK would be dropped by the peer in SYN-SENT.
    if ((f & (SYN | ACK | RST)) === SYN && (seqValue(seg.seq) | 0) === this.irs32) {
      this.retransmit(now);
      return;
    }
    // Acceptability (first check): RCV.NXT = IRS+1, RCV.WND = our SYN-ACK's window.
    const rcvNxt = this.rcvNxt;
    const wnd = this.synWindow;
    const segLen = seg.payloadLength + (f & SYN ? 1 : 0) + (f & FIN ? 1 : 0);
    const acceptable = seqInWindow(seg.seq, rcvNxt, wnd) || (segLen > 0 && seqInWindow(seqAdd(seg.seq, segLen - 1), rcvNxt, wnd));
    if (!acceptable) {
      if (!(f & RST)) this.sendAck(now);
      return;
    }
    // RST (RFC 5961 3.2): the exact one sends a passive open back to LISTEN; others are challenged.
    if (f & RST) {
      if (seg.seq === rcvNxt) {
        layer.counters.TcpAttemptFails++;
        l.removeHalfOpen(this);
      } else this.challengeAck(now);
      return;
    }
    // A SYN in the window that is not the retransmitted one (RFC 5961 4.2): challenge ACK.
    if (f & SYN) {
      this.challengeAck(now);
      return;
    }
    if (!(f & ACK)) return;
    // With only our SYN outstanding, SND.UNA < SEG.ACK =< SND.NXT means SEG.ACK = ISS+1;
    // anything else is answered with <SEQ=SEG.ACK><CTL=RST>.
    if (seg.ack !== seqAdd(this.iss, 1)) {
      layer.sendReset(this.localAddr, this.remoteAddr, this.localPort, this.remotePort, seg.ack);
      return;
    }
    // The listener's backlog policy decides (Linux: drop the ACK while the accept queue
    // is full; reset with tcp_abort_on_overflow).
    const verdict = l.admit(this, now);
    if (verdict === 'drop') return;
    if (verdict === 'reset') {
      layer.sendReset(this.localAddr, this.remoteAddr, this.localPort, this.remotePort, seg.ack);
      l.removeHalfOpen(this);
      return;
    }
    this.establish(seg, buf, now);
  }

  /** The handshake completed: the full connection is built now, and takes the rest of the segment. */
  private establish(seg: TcpRepr, buf: Buffer, now: number): void {
    const l = this.listener;
    const layer = l.layer;
    l.removeHalfOpen(this, true);
    const conn = layer.createConnection(this.localAddr, this.localPort, this.remoteAddr, this.remotePort, now);
    conn.establishPassive(this, seg, now);
    l.onEstablished(conn, now, this);
    if (conn.isClosed()) return;
    if (seg.payloadLength > 0 || seg.flags & FIN) conn.input(seg, buf, now);
  }

  /** <SEQ=ISS+1><ACK=RCV.NXT><CTL=ACK>, with our timestamp echoing TS.Recent. */
  private sendAck(now: number): void {
    const layer = this.listener.layer;
    const r = clearTcpOptions(layer.out);
    const local = this.localAddr,
      remote = this.remoteAddr;
    r.hasTimestamp = this.has(HalfOpenFlag.Timestamps);
    r.tsVal = (Math.floor(now) + layer.tsOffsetFor(local, this.localPort, remote, this.remotePort)) >>> 0;
    r.tsEcr = this.tsRecent;
    r.srcPort = this.localPort;
    r.dstPort = this.remotePort;
    r.seq = seqAdd(this.iss, 1);
    r.ack = this.rcvNxt;
    r.flags = ACK;
    r.window = this.synWindow;
    layer.emitSegment(local, remote, r);
  }

  private challengeAck(now: number): void {
    const layer = this.listener.layer;
    if (!layer.allowChallengeAck(now)) return;
    layer.counters.TcpExtTCPChallengeACK++;
    this.sendAck(now);
  }

  /** For `stats` rows: the same fields a connection row has. */
  describe(): { state: string; local: string; peer: string; retrans: number } {
    return {
      state: 'SYN-RECEIVED',
      local: `${formatIpv4(this.localAddr)}:${this.localPort}`,
      peer: `${formatIpv4(this.remoteAddr)}:${this.remotePort}`,
      retrans: this.backoff,
    };
  }
}

/**
 * A listener's SYN queue: its half-open entries found by four-tuple (a Map keyed by the
 * remote address and port, chained for the rare peer half-open towards two of our
 * addresses: a client may use one source port towards several destinations), and kept
 * in arrival order (an intrusive list: the oldest is the next to recycle, and a Map
 * iterated from its start after many deletions would walk their tombstones each time).
 */
export class SynQueue {
  private readonly byPeer = new Map<number, HalfOpen>();
  size = 0;
  oldest: HalfOpen | null = null;
  private newest: HalfOpen | null = null;

  find(localAddr: number, remoteAddr: number, remotePort: number): HalfOpen | undefined {
    let r = this.byPeer.get(HalfOpen.keyOf(remoteAddr, remotePort));
    while (r && r.localAddr !== localAddr) r = r.samePeer ?? undefined;
    return r;
  }

  add(req: HalfOpen): void {
    const key = req.key;
    req.samePeer = this.byPeer.get(key) ?? null;
    this.byPeer.set(key, req);
    req.older = this.newest;
    if (this.newest) this.newest.newer = req;
    else this.oldest = req;
    this.newest = req;
    req.flags |= HalfOpenFlag.Queued;
    this.size++;
  }

  /** False when it was not queued. */
  remove(req: HalfOpen): boolean {
    if (!req.queued) return false;
    const key = req.key;
    let r = this.byPeer.get(key)!;
    if (r === req) {
      if (req.samePeer) this.byPeer.set(key, req.samePeer);
      else this.byPeer.delete(key);
    } else {
      while (r.samePeer !== req) r = r.samePeer!;
      r.samePeer = req.samePeer;
    }
    req.samePeer = null;
    if (req.older) req.older.newer = req.newer;
    else this.oldest = req.newer;
    if (req.newer) req.newer.older = req.older;
    else this.newest = req.older;
    req.older = req.newer = null;
    req.flags &= ~HalfOpenFlag.Queued;
    this.size--;
    return true;
  }

  /** Oldest first. An entry removed while iterating does not end the walk. */
  *values(): IterableIterator<HalfOpen> {
    let r = this.oldest;
    while (r) {
      const next = r.newer;
      yield r;
      r = r.queued ? r.newer : next;
    }
  }
}
