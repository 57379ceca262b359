/**
 * The TCP layer: the connection table (conntable.ts), demultiplexing, listeners,
 * active opens, segment emission, resets for closed ports, SYN cookies, TIME-WAIT
 * bookkeeping and ICMP errors for connections, and the hooks (TcpHooks) through which
 * a fault module changes what it may change.
 */
import { VirtioNetHdr, type OffloadMeta } from '../../drivers/device';
import type { Counters } from '../counters';
import type { TimerQueue } from '../timers';
import { formatIpv4 } from '../wire/addr';
import { readU16 } from '../wire/bytes';
import { type ChecksumCaps, DeviceChecksum, deviceFills } from '../wire/checksum';
import { IPV4_MIN_HEADER, PROTO_TCP, type Ipv4Packet } from '../wire/ipv4';
import { ACK, FIN, RST, SYN, TcpField, TcpRepr, clearTcpOptions, emitTcp, newTcpRepr, parseTcp, tcpHeaderLength, TcpError } from '../wire/tcp';
import { type Seq, asSeq, readSeq, seqAdd, seqGe, seqGt, seqLt, seqValue } from '../wire/seq';
import { CodedError } from '../util/errors';
import { KeyedHash } from '../util/hash';
import { RxBufferPool } from './buffers';
import { ConnTable } from './conntable';
import { State, TcpConnection } from './connection';
import { Listener, type ApplicationState } from './listener';
import type { BacklogPolicy } from './backlog';

export interface TcpConfig {
  rcvBuf: number;
  sndBuf: number;
  /** Our window scale shift (RFC 7323); -1 disables the option. */
  windowScale: number;
  sack: boolean;
  timestamps: boolean;
  congestionControl: 'newreno' | 'cubic';
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  clockGranularityMs: number;
  /** Retransmissions of data before the connection is aborted (Linux tcp_retries2 is 15). */
  dataRetries: number;
  /** SYN retransmissions of an active open (Linux tcp_syn_retries 6; NT4 TcpMaxConnectRetransmissions 2). */
  synRetries: number;
  /** First SYN retransmission timeout of an active open, ms (Linux 1000, Windows 3000). */
  synRtoMs: number;
  delayedAckMs: number;
  timeWaitMs: number;
  finWait2TimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveProbes: number;
  resetOnOrphanData: boolean;
  maxTimeWait: number;
  challengeAcksPerSec: number;
  ephemeralLow: number;
  ephemeralHigh: number;
  /**
   * Half-open entries one listener keeps (our choice, docs/design.md): past it a SYN
   * recycles the listener's oldest entry (RFC 4987 3.3), counted in FsHalfOpenRecycled.
   */
  synQueueCapPerListener: number;
  /** Half-open entries in the whole stack (our choice, docs/design.md); recycled the same way. */
  synQueueCapGlobal: number;
}

export function defaultTcpConfig(): TcpConfig {
  return {
    rcvBuf: 4 * 1024 * 1024,
    sndBuf: 4 * 1024 * 1024,
    windowScale: 7,
    sack: true,
    timestamps: true,
    congestionControl: 'cubic',
    initialRtoMs: 1000,
    minRtoMs: 200,
    maxRtoMs: 120_000,
    clockGranularityMs: 1,
    dataRetries: 8,
    synRetries: 6,
    synRtoMs: 1000,
    delayedAckMs: 40,
    timeWaitMs: 60_000,
    finWait2TimeoutMs: 60_000,
    keepaliveIntervalMs: 75_000,
    keepaliveProbes: 9,
    resetOnOrphanData: true,
    maxTimeWait: 65_536,
    challengeAcksPerSec: 1000,
    ephemeralLow: 32768,
    ephemeralHigh: 60999,
    synQueueCapPerListener: 65_536,
    synQueueCapGlobal: 262_144,
  };
}

/** What the TCP layer needs from the stack around it. */
export interface TcpHost {
  readonly counters: Counters;
  readonly timers: TimerQueue;
  sendIp(packet: Buffer, meta: OffloadMeta | null): void;
  /** A stateless reply, which the device may write off the stack's thread (absent: sendIp). */
  sendIpStateless?(packet: Buffer): void;
  /** `addr` completed a handshake with one of our listeners (the device's early SYN drop spares it). */
  sourceVerified?(addr: number): void;
  nextIpId(): number;
  /** Writes the IPv4 header of an unfragmented packet that fills `pkt`. */
  writeIpHeader(pkt: Buffer, src: number, dst: number, protocol: number, df: boolean): void;
  pathMtu(dst: number): number;
  flushSoon(): void;
  /** Largest TSO super-segment in MSS units (1 without segmentation offload). */
  tsoSegments(): number;
  /** What the device does with the checksums of what we send (TCP: it fills them, virtio NEEDS_CSUM, when offloads are on). */
  readonly checksumCaps: ChecksumCaps;
  /** PMTU black-hole detection on (EnablePMTUBHDetect); absent means off. */
  blackHoleDetection?(): boolean;
  /** Keep a received packet's buffer (zero-copy) instead of copying out of it; false: copy. */
  claimPacket?(pkt: Buffer): boolean;
  /** Payload bytes the device queues for us before it drops (Infinity: no such limit). */
  rxQueueBytes?(): number;
}

/**
 * Where a fault module (stack/faults/) may change TCP's behaviour. Each hook's default
 * is the correct behaviour (docs/design.md, "Hooks"); a module replaces a hook in its
 * install() and puts the previous one back in uninstall(). The layer never imports a
 * fault: it only calls what is here.
 */
export interface TcpHooks {
  /**
   * Listener admission and backlog overflow: what a listener does with a SYN and with the
   * final ACK when its queues are full, and when the application hears of a connection.
   * Default: Linux's policy (backlog.ts). KB 903927's Windows listener replaces it.
   */
  listenerAdmission: BacklogPolicy;
  /**
   * The failure path of an active open: SYN retransmissions exhausted ('timeout') or an
   * ICMP unreachable ('unreachable'). Default: `failConnect`, the attempt fails and
   * nothing else changes. KB 297040 replaces it.
   */
  activeOpenFailed(conn: TcpConnection, reason: 'timeout' | 'unreachable', now: number): void;
  /**
   * Service level: a listener reset a connection after its application had been told of
   * it (and had allocated its per-connection state) but before the application accepted
   * it. `reset` holds what the connection had: the client's first flight and the
   * application's state. Default: `releaseResetBeforeAccept`, all of it is let go.
   * KB 903927 replaces it.
   */
  resetBeforeAccept(reset: ResetBeforeAccept, now: number): void;
  /** Observation: a connection left the table. Default: nothing. */
  connectionRemoved(conn: TcpConnection, now: number): void;
  /** Observation: a connection entered the table (an active open, or a passive one completing). Default: nothing. */
  connectionCreated(conn: TcpConnection, now: number): void;
}

/** What a connection reset before its application accepted it still held (TcpHooks.resetBeforeAccept). */
export interface ResetBeforeAccept {
  /** The connection, closed by now. */
  readonly conn: TcpConnection;
  readonly listener: Listener;
  /** Data the client sent before the reset (its first flight), no longer on the connection. */
  readonly firstFlight: Buffer[];
  readonly firstFlightBytes: number;
  /** What the application allocated when it was told of the connection; null: nothing. */
  readonly state: ApplicationState | null;
}

/** The correct end of a connection reset before accept: its application state is released, the rest is garbage. */
export function releaseResetBeforeAccept(reset: ResetBeforeAccept): void {
  reset.state?.release();
}

const SEQ0: Seq = asSeq(0);
/** A TSO super-segment's checksum is always the device's to complete (with the segmentation). */
const TSO_CHECKSUMS: ChecksumCaps = Object.freeze({
  ipv4: DeviceChecksum.None,
  icmp: DeviceChecksum.None,
  tcp: DeviceChecksum.Fills,
  udp: DeviceChecksum.None,
});
const COOKIE_MSS = [536, 1200, 1360, 1400, 1440, 1452, 1460, 8960];
/** The most payload one IPv4 TCP packet carries: 65,535 less a 20-byte IP and a 60-byte TCP header (RFC 791, RFC 9293 3.1). */
const MAX_TSO_PAYLOAD = 65535 - 20 - 60;
/** Connections that moved data in the last epoch or two share the device's receive queue (rcvShare, sndShare). */
const RX_EPOCH_MS = 100;

export class TcpLayer {
  readonly table = new ConnTable();
  readonly listeners = new Map<number, Listener>();
  /** Where received payload is copied to (receive.ts). */
  readonly rxBuffers = new RxBufferPool();
  /** Every segment we send is built in this one representation (filled, emitted, reused: nothing allocated per segment but its packet). */
  readonly out: TcpRepr = newTcpRepr();
  /** And every segment received is parsed into this one. */
  private readonly seg: TcpRepr = newTcpRepr();
  private readonly isnHash = new KeyedHash();
  private readonly cookieHash = new KeyedHash();
  private nextEphemeral: number;
  private challengeWindowStart = 0;
  private challengeCount = 0;
  timeWaitCount = 0;
  /** When any listener last answered a SYN with a cookie (-Infinity: never): the stack is under a SYN flood. */
  lastCookieAt = -Infinity;
  /** Half-open entries in every listener's SYN queue (bounded by config.synQueueCapGlobal). */
  halfOpenCount = 0;
  /** True while the stack processes a burst from the device (see deferAck). */
  inBurst = false;
  private readonly deferredAcks: TcpConnection[] = [];
  /** Connections that sent or received data in the current and the previous epoch (see noteQueueUse). */
  private rxEpoch = -1;
  private rxEpochCount = 0;
  private rxPrevCount = 0;
  /** The core's own listener policy (Linux's, or the one given to the stack): the default of hooks.listenerAdmission. */
  readonly defaultListenerAdmission: BacklogPolicy;
  readonly hooks: TcpHooks;

  constructor(
    readonly host: TcpHost,
    readonly config: TcpConfig,
    backlog: BacklogPolicy,
  ) {
    this.nextEphemeral = config.ephemeralLow + Math.floor(Math.random() * (config.ephemeralHigh - config.ephemeralLow));
    this.defaultListenerAdmission = backlog;
    this.hooks = {
      listenerAdmission: backlog,
      activeOpenFailed: (conn, reason, now) => this.failConnect(conn, reason, now),
      resetBeforeAccept: releaseResetBeforeAccept,
      connectionRemoved: () => {},
      connectionCreated: () => {},
    };
  }

  get counters(): Counters {
    return this.host.counters;
  }
  get timers(): TimerQueue {
    return this.host.timers;
  }

  // ---------------------------------------------------------------- input

  /** A segment `buf[off, off+len)` from `src` to `dst`; `caps`: what the device verified of it. */
  input(src: number, dst: number, buf: Buffer, off: number, len: number, caps: ChecksumCaps, now: number): void {
    const c = this.host.counters;
    const seg = this.seg;
    const err = parseTcp(buf, off, len, src, dst, seg, caps);
    if (err !== TcpError.None) {
      c.TcpInErrs++;
      if (err === TcpError.BadChecksum) c.TcpInCsumErrors++;
      return;
    }
    c.TcpInSegs++;
    const conn = this.table.lookup(dst, seg.dstPort, src, seg.srcPort);
    if (conn) {
      if (conn.state === State.TimeWait && (seg.flags & (SYN | ACK | RST)) === SYN && seqGt(seg.seq, conn.rcvNxt)) {
        // A new incarnation may reuse a TIME-WAIT pair if its SYN is above the old
        // sequence space (RFC 9293 3.10.7.4, RFC 6191).
        conn.destroy(null, now);
      } else {
        if (conn.state === State.SynSent) conn.inputSynSent(seg, now);
        else conn.input(seg, buf, now);
        return;
      }
    }
    const l = this.listeners.get(seg.dstPort);
    if (l && (l.addr === 0 || l.addr === dst) && !l.closed) {
      // SYN-RECEIVED: a compact half-open entry, not a connection (halfopen.ts).
      const req = l.synQueue.size > 0 ? l.findHalfOpen(dst, src, seg.srcPort) : undefined;
      if (req) {
        req.input(seg, buf, now);
        return;
      }
      const f = seg.flags;
      if (f & RST) return;
      if (f & ACK) {
        if (!(f & SYN) && this.acceptCookie(l, seg, src, dst, buf, now)) return;
        c.FsListenStrayAcks++;
        this.sendReset(dst, src, seg.dstPort, seg.srcPort, seg.ack, true);
        return;
      }
      // A SYN with FIN is no connection request (RFC 9293 3.10.7.2 leaves it to the
      // implementation; Linux's tcp_rcv_state_process discards it, as scanners send it).
      if (f & SYN && !(f & FIN)) {
        l.onSyn(seg, src, dst, now);
        return;
      }
      return;
    }
    this.refuse(seg, src, dst);
  }

  /** RFC 9293 3.10.7.1: a segment for no connection (or refused by a listener) is answered with a reset. */
  refuse(seg: TcpRepr, src: number, dst: number): void {
    if (seg.flags & RST) return;
    if (seg.flags & ACK) this.sendReset(dst, src, seg.dstPort, seg.srcPort, seg.ack, true);
    else {
      const segLen = seg.payloadLength + (seg.flags & SYN ? 1 : 0) + (seg.flags & 1 ? 1 : 0);
      this.sendResetAck(dst, src, seg.dstPort, seg.srcPort, seqAdd(seg.seq, segLen), true);
    }
  }

  /** An in-order ACK owed by `conn`, to be sent once at the end of the current burst. */
  deferAck(conn: TcpConnection): void {
    if (conn.ackDeferred) return;
    conn.ackDeferred = true;
    this.deferredAcks.push(conn);
  }

  beginBurst(): void {
    this.inBurst = true;
  }

  /**
   * `conn` sent or received data at `now`: it is one of the connections that share the
   * device's receive queue, with the data the peer sends or with the ACKs our own data
   * makes the peer send. Counted per epoch of RX_EPOCH_MS (no list, no allocation): the
   * users are those of the current epoch or, if more, of the previous one.
   */
  noteQueueUse(conn: TcpConnection, now: number): void {
    const e = Math.floor(now / RX_EPOCH_MS);
    if (e !== this.rxEpoch) {
      this.rxPrevCount = e === this.rxEpoch + 1 ? this.rxEpochCount : 0;
      this.rxEpochCount = 0;
      this.rxEpoch = e;
    }
    if (conn.rxEpoch !== e) {
      conn.rxEpoch = e;
      this.rxEpochCount++;
    }
  }

  /** An equal share of what the device queues for us: the queue over its users, at least 4 segments. */
  private queueShare(mss: number): number {
    const limit = this.host.rxQueueBytes?.() ?? Infinity;
    if (limit === Infinity) return Infinity;
    const users = Math.max(1, this.rxEpochCount, this.rxPrevCount);
    return Math.max(4 * mss, Math.floor(limit / users));
  }

  /**
   * The most one connection may advertise beyond RCV.NXT: its share of what the device
   * queues for us before it drops. The kernel's senders put their segments in the TUN
   * device's queue (txqueuelen packets: 500) and we drain it from one thread; with every
   * connection offering 4 MiB, 4 streams had 700 packets in flight between them and the
   * queue overflowed again and again (TX dropped 38k in 3 s, 64k retransmissions in the
   * bench, 0.83 Gbit/s against 3.05 for one stream). Windows that add up to the queue let
   * the senders fill it and no more: the queue then drains as fast as with one stream,
   * and nothing is dropped.
   */
  rcvShare(mss: number): number {
    return this.queueShare(mss);
  }

  /**
   * The most one connection may have in flight: the same share, for the other direction.
   * Every segment we send makes the peer answer through that queue (RFC 9293 3.8.6.3: an
   * ACK at least every second full-sized segment; Linux ACKs every one in quick-ACK mode),
   * and we read the queue only between our own bursts. With offloads off at --mtu 576,
   * iperf3 -R let the congestion window grow to thousands of segments: the kernel's ACKs
   * overflowed the queue (TX dropped: 40% of the segments we sent), the queue stayed full,
   * and the client's TEST_END on the control connection was dropped with them, then each
   * of its retransmissions, until the server gave up 30 s later. A flight no larger than
   * the queue cannot provoke more answers than it holds. With TSO a super-segment draws
   * one ACK and the queue counts 64 KiB per packet: no limit in practice.
   */
  sndShare(mss: number): number {
    return this.queueShare(mss);
  }

  /** The burst is over: each connection that still owes an ACK sends one (or data carrying it). */
  endBurst(now: number): void {
    this.inBurst = false;
    const list = this.deferredAcks;
    for (let i = 0; i < list.length; i++) list[i]!.sendDeferredAck(now);
    list.length = 0;
  }

  // ---------------------------------------------------------------- opens

  listen(port: number, addr: number, backlog: number): Listener {
    if (this.listeners.has(port)) throw new CodedError('EADDRINUSE', `listen EADDRINUSE: port ${port} is already in use`);
    const l = new Listener(this, addr, port, Math.max(0, backlog));
    this.listeners.set(port, l);
    return l;
  }

  unlisten(l: Listener, now: number): void {
    if (this.listeners.get(l.port) === l) this.listeners.delete(l.port);
    l.close(now);
  }

  connect(localAddr: number, remoteAddr: number, remotePort: number, localPort: number, now: number): TcpConnection {
    if (localPort === 0) localPort = this.pickEphemeral(localAddr, remoteAddr, remotePort);
    else if (this.table.lookup(localAddr, localPort, remoteAddr, remotePort)) {
      throw new CodedError('EADDRINUSE', `connect EADDRINUSE ${formatIpv4(localAddr)}:${localPort}`);
    }
    const conn = this.createConnection(localAddr, localPort, remoteAddr, remotePort, now);
    this.counters.TcpActiveOpens++;
    conn.openActive(now);
    return conn;
  }

  createConnection(localAddr: number, localPort: number, remoteAddr: number, remotePort: number, now: number): TcpConnection {
    const conn = new TcpConnection(this, localAddr, localPort, remoteAddr, remotePort, now);
    this.table.insert(conn);
    this.hooks.connectionCreated(conn, now);
    return conn;
  }

  private pickEphemeral(localAddr: number, remoteAddr: number, remotePort: number): number {
    const lo = this.config.ephemeralLow,
      span = this.config.ephemeralHigh - lo + 1;
    for (let i = 0; i < span; i++) {
      const p = lo + ((this.nextEphemeral - lo + i) % span);
      if (!this.table.lookup(localAddr, p, remoteAddr, remotePort) && !this.listeners.has(p)) {
        this.nextEphemeral = p + 1;
        return p;
      }
    }
    throw new CodedError('EADDRNOTAVAIL', 'connect EADDRNOTAVAIL: no free local port');
  }

  /** RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a 4 µs clock. */
  isn(conn: TcpConnection, now: number): Seq {
    return this.isnFor(conn.localAddr, conn.localPort, conn.remoteAddr, conn.remotePort, now);
  }

  isnFor(localAddr: number, localPort: number, remoteAddr: number, remotePort: number, now: number): Seq {
    const m = Math.floor(now * 250) >>> 0;
    return asSeq(m + this.isnHash.hash4(localAddr, remoteAddr, (localPort << 16) | remotePort, 0));
  }

  /** The per-connection offset of our timestamp clock (RFC 7323 5.4), the same for a half-open entry and its connection. */
  tsOffsetFor(localAddr: number, localPort: number, remoteAddr: number, remotePort: number): number {
    return this.isnHash.hash4(localAddr, remoteAddr, (localPort << 16) | remotePort, 0x7473);
  }

  /**
   * The global cap is reached: the oldest entry of the fullest listener makes room (of
   * `l` on a tie), so that a flood on one port does not take the other ports' room.
   */
  recycleOldestHalfOpen(l: Listener): void {
    let fullest = l;
    for (const x of this.listeners.values()) if (x.synQueue.size > fullest.synQueue.size) fullest = x;
    fullest.recycleOldest();
  }

  // ---------------------------------------------------------------- SYN cookies

  private cookieMac(src: number, dst: number, ports: number, clientIsn: number, t: number): number {
    return this.cookieHash.hash4(src, dst, ports, (clientIsn ^ t) >>> 0) & 0xffffff;
  }

  /** A stateless SYN-ACK whose ISN encodes time slot, MSS index and a MAC. */
  sendSynCookie(l: Listener, seg: TcpRepr, src: number, dst: number, now: number): void {
    const t = Math.floor(now / 64_000) & 31;
    const peerMss = seg.mss > 0 ? seg.mss : 536;
    let idx = 0;
    for (let i = COOKIE_MSS.length - 1; i >= 0; i--)
      if (COOKIE_MSS[i] <= peerMss) {
        idx = i;
        break;
      }
    const mac = this.cookieMac(src, dst, (seg.srcPort << 16) | l.port, seqValue(seg.seq), t);
    const r = clearTcpOptions(this.out);
    r.srcPort = l.port;
    r.dstPort = seg.srcPort;
    r.seq = asSeq((t << 27) | (idx << 24) | mac);
    r.ack = seqAdd(seg.seq, 1);
    r.flags = SYN | ACK;
    r.window = Math.min(this.config.rcvBuf, 65535);
    // Only the MSS: the cookie has no room for the other options (RFC 4987 3.6).
    r.mss = this.host.pathMtu(src) - 40;
    this.emitSegment(dst, src, r, true);
    this.counters.TcpExtSyncookiesSent++;
    l.lastCookieAt = now;
    this.lastCookieAt = now;
  }

  private acceptCookie(l: Listener, seg: TcpRepr, src: number, dst: number, buf: Buffer, now: number): boolean {
    // Only a listener that answered with cookies lately takes one back (as Linux checks
    // for a recent SYN-queue overflow): a stray ACK is not a 2^-24 lottery ticket.
    if (now - l.lastCookieAt > 128_000) return false;
    const cookie = seqValue(seqAdd(seg.ack, -1));
    const clientIsn = seqAdd(seg.seq, -1);
    const t = cookie >>> 27;
    const nowT = Math.floor(now / 64_000) & 31;
    if (t !== nowT && t !== ((nowT + 31) & 31)) return false;
    const mac = this.cookieMac(src, dst, (seg.srcPort << 16) | l.port, seqValue(clientIsn), t);
    if ((cookie & 0xffffff) !== mac) {
      this.counters.TcpExtSyncookiesFailed++;
      return false;
    }
    this.counters.TcpExtSyncookiesRecv++;
    if (l.acceptQueue.length >= l.backlog) {
      this.counters.TcpExtListenOverflows++;
      this.counters.TcpExtListenDrops++;
      return true;
    }
    const conn = this.createConnection(dst, l.port, src, seg.srcPort, now);
    conn.openFromCookie(l, seg, asSeq(cookie), COOKIE_MSS[(cookie >>> 24) & 7], now);
    this.counters.TcpPassiveOpens++;
    l.onEstablished(conn, now, null);
    if (seg.payloadLength > 0 || seg.flags & 1) conn.input(seg, buf, now);
    return true;
  }

  // ---------------------------------------------------------------- output

  /**
   * Sends one segment of `conn` built in `r` (the layer's `out`: numbers, flags, window
   * and options set; the ports are the connection's). Its `r.payloadLength` bytes come
   * from the send queue at `queueOffset` (bytes after SND.UNA). A payload larger than
   * the MSS goes out as one TSO super-segment for the kernel to cut, its checksum left
   * to the device as with checksum offload.
   */
  emit(conn: TcpConnection, r: TcpRepr, queueOffset: number): void {
    const payloadLen = r.payloadLength;
    const hdr = IPV4_MIN_HEADER + tcpHeaderLength(r);
    const pkt = Buffer.allocUnsafe(hdr + payloadLen);
    if (payloadLen > 0) conn.sendQueue.copyOut(queueOffset, pkt, hdr, payloadLen);
    const gso = payloadLen > conn.mss;
    const caps = gso ? TSO_CHECKSUMS : this.host.checksumCaps;
    r.srcPort = conn.localPort;
    r.dstPort = conn.remotePort;
    emitTcp(pkt, IPV4_MIN_HEADER, r, conn.localAddr, conn.remoteAddr, caps);
    this.host.writeIpHeader(pkt, conn.localAddr, conn.remoteAddr, PROTO_TCP, true);
    let meta: OffloadMeta | null = null;
    if (deviceFills(caps.tcp)) {
      meta = {
        flags: VirtioNetHdr.F_NEEDS_CSUM,
        gsoType: gso ? VirtioNetHdr.GSO_TCPV4 : VirtioNetHdr.GSO_NONE,
        hdrLen: hdr,
        gsoSize: gso ? conn.mss : 0,
        csumStart: IPV4_MIN_HEADER,
        csumOffset: TcpField.CHECKSUM,
        owned: true, // pkt is this segment's alone
      };
    }
    const c = this.counters;
    if (gso) {
      const n = Math.ceil(payloadLen / conn.mss);
      c.TcpOutSegs += n;
      c.TcpExtTCPGSOSegsOut += n;
    } else c.TcpOutSegs++;
    if (r.flags & RST) c.TcpOutRsts++;
    this.host.sendIp(pkt, meta);
  }

  /**
   * Sends `r` (ports set, no payload) from `src` to `dst` without a connection (resets,
   * cookies, half-open entries), checksummed here. `stateless`: nothing we send later
   * depends on its order (a cookie, a reset for no connection), so it may take the
   * device's detached path (TcpHost.sendIpStateless); a connection's own reset must not
   * overtake the data queued before it.
   */
  emitSegment(src: number, dst: number, r: TcpRepr, stateless = false): void {
    r.payloadLength = 0;
    const pkt = Buffer.allocUnsafe(IPV4_MIN_HEADER + tcpHeaderLength(r));
    emitTcp(pkt, IPV4_MIN_HEADER, r, src, dst);
    this.host.writeIpHeader(pkt, src, dst, PROTO_TCP, true);
    this.counters.TcpOutSegs++;
    if (r.flags & RST) this.counters.TcpOutRsts++;
    if (stateless && this.host.sendIpStateless !== undefined) this.host.sendIpStateless(pkt);
    else this.host.sendIp(pkt, null);
  }

  /** <SEQ=seq><CTL=RST>: the reset for a segment that carried an ACK (SEQ = its SEG.ACK), or an abort (SND.NXT). */
  sendReset(src: number, dst: number, sport: number, dport: number, seq: Seq, stateless = false): void {
    const r = clearTcpOptions(this.out);
    r.srcPort = sport;
    r.dstPort = dport;
    r.seq = seq;
    r.ack = SEQ0;
    r.flags = RST;
    r.window = 0;
    this.emitSegment(src, dst, r, stateless);
  }

  /** <SEQ=0><ACK=ack><CTL=RST,ACK>: the reset for a segment without ACK (RFC 9293 3.10.7.1). */
  sendResetAck(src: number, dst: number, sport: number, dport: number, ack: Seq, stateless = false): void {
    const r = clearTcpOptions(this.out);
    r.srcPort = sport;
    r.dstPort = dport;
    r.seq = SEQ0;
    r.ack = ack;
    r.flags = RST | ACK;
    r.window = 0;
    this.emitSegment(src, dst, r, stateless);
  }

  /** RFC 5961 7: a global limit on challenge ACKs per second. */
  allowChallengeAck(now: number): boolean {
    if (now - this.challengeWindowStart >= 1000) {
      this.challengeWindowStart = now;
      this.challengeCount = 0;
    }
    return ++this.challengeCount <= this.config.challengeAcksPerSec;
  }

  // ---------------------------------------------------------------- policy lookups

  pathMtu(dst: number): number {
    return this.host.pathMtu(dst);
  }
  /**
   * MSS-sized pieces one TSO super-segment may carry. The device's limit in segments (44
   * with the virtio header) is also bounded by what one IPv4 packet can hold: the total
   * length is 16 bits, so header (20 + up to 60) and payload stay within 65,535 bytes.
   * 44 segments of a 9,000-byte MTU's MSS are 393 KB: the length wrapped, the kernel
   * threw the packets away, and iperf3 -R at --mtu 9000 fell to 10 Mbit/s with RTOs.
   */
  tsoMaxSegments(conn: TcpConnection): number {
    return Math.max(1, Math.min(this.host.tsoSegments(), Math.floor(MAX_TSO_PAYLOAD / conn.mss)));
  }
  blackHoleDetection(): boolean {
    return this.host.blackHoleDetection?.() ?? false;
  }
  flushSoon(): void {
    this.host.flushSoon();
  }
  /** Passive opens are half-open entries (halfopen.ts): a connection's own SYN or SYN-ACK is an active or simultaneous open. */
  suppressSynOptions(_conn: TcpConnection): boolean {
    return false;
  }
  synRetries(_conn: TcpConnection): number {
    return this.config.synRetries;
  }
  synAckRetries(_conn: TcpConnection): number {
    return this.hooks.listenerAdmission.synAckRetries(null);
  }
  synRto(_conn: TcpConnection): number {
    return this.config.synRtoMs;
  }
  describePeer(conn: TcpConnection): string {
    return `${formatIpv4(conn.remoteAddr)}:${conn.remotePort}`;
  }

  /** The correct end of a failed active open (the default of hooks.activeOpenFailed): the attempt reports its error. */
  failConnect(conn: TcpConnection, reason: 'timeout' | 'unreachable', now: number): void {
    if (reason === 'timeout') conn.fail('ETIMEDOUT', `connect ETIMEDOUT ${this.describePeer(conn)}`, now);
    else conn.fail('EHOSTUNREACH', `connect EHOSTUNREACH ${this.describePeer(conn)}`, now);
  }

  onConnectTimeout(conn: TcpConnection, now: number): void {
    this.hooks.activeOpenFailed(conn, 'timeout', now);
  }

  /**
   * A connection entered TIME-WAIT: counted, and false when there are already
   * maxTimeWait of them (the connection then closes at once).
   */
  admitTimeWait(): boolean {
    // Counted first in every case: destroy() from TIME-WAIT uncounts it again.
    this.timeWaitCount++;
    if (this.timeWaitCount > this.config.maxTimeWait) return false;
    this.counters.TcpExtTW++;
    return true;
  }

  /** Called by a connection as it closes. */
  remove(conn: TcpConnection, now: number): void {
    this.table.remove(conn);
    if (conn.listener) conn.listener.forget(conn);
    this.hooks.connectionRemoved(conn, now);
  }

  /** Connections stop counting as TIME-WAIT when they leave it. */
  leftTimeWait(): void {
    if (this.timeWaitCount > 0) this.timeWaitCount--;
  }

  // ---------------------------------------------------------------- ICMP

  /**
   * An ICMP error quoting one of our TCP segments (RFC 5927 checks: the quoted
   * 4-tuple must be a connection we have and the quoted sequence number must be in
   * flight). Returns the connection concerned, or null when ignored.
   */
  findQuoted(quoted: Ipv4Packet): TcpConnection | null {
    // The quote holds the IP header and at least the first 8 bytes of ours (RFC 792):
    // the ports and the sequence number.
    if (quoted.protocol !== PROTO_TCP || quoted.payloadLength < 8) return null;
    const src = quoted.src,
      dst = quoted.dst;
    const t = quoted.payloadOffset,
      b = quoted.buf;
    const sport = readU16(b, t + TcpField.SRC_PORT),
      dport = readU16(b, t + TcpField.DST_PORT);
    const seq = readSeq(b, t + TcpField.SEQ_NUM);
    const conn = this.table.lookup(src, sport, dst, dport);
    if (!conn) return null;
    // RFC 5927 4.1: the quoted segment must be in flight, SND.UNA <= seq < SND.NXT.
    if (!(seqGe(seq, conn.sndUna) && seqLt(seq, conn.sndMax)) && !(conn.state === State.SynSent && seq === conn.iss)) return null;
    return conn;
  }

  /**
   * The path MTU towards `dst` went down to `mtu` (ICMP fragmentation needed, RFC 1191):
   * every connection to it sends smaller from now on.
   */
  onPathMtuDecreased(dst: number, mtu: number, now: number): void {
    for (const conn of this.table.all()) if (conn.remoteAddr === dst) conn.onPathMtuDecreased(mtu, now);
  }

  /** Destination unreachable (not fragmentation needed) for one of our connections. */
  onUnreachable(conn: TcpConnection, code: number, now: number): void {
    if (conn.state === State.SynSent) {
      this.counters.TcpAttemptFails++;
      if (code === 3) {
        conn.fail('ECONNREFUSED', `connect ECONNREFUSED ${this.describePeer(conn)}`, now);
        return;
      }
      this.hooks.activeOpenFailed(conn, 'unreachable', now);
    }
    // Established connections treat it as a soft error (RFC 1122 4.2.3.9).
  }
}
