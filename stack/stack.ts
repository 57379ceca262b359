/**
 * The interface: one IPv4 address (and, by default, any address routed to the
 * device), IP input and output, ICMP, and the glue between the device, the
 * transport layers and time.
 *
 * Packet path in: device burst -> `input` (IP header validated, reassembly) ->
 * ICMP / UDP / TCP input -> segments queued on the device -> one `flush` per burst.
 * Time is passed in: the stack reads it from its scheduler once per burst or timer
 * run, never deep inside a layer.
 */
import { VirtioNetHdr, type Device, type OffloadMeta } from '../drivers/device';
import { newCounters, Counters } from './counters';
import { Reassembler } from './iface/reassembly';
import { RouteTable } from './iface/routing';
import { PathMtu, PmtuParams, PmtuEvents, HostRouteAccounting, CREATIONS_AND_REMOVALS } from './iface/pmtu';
import { TimerQueue, Timer } from './timers';
import { TcpLayer, TcpConfig, defaultTcpConfig } from './tcp/tcp';
import { LinuxBacklog, BacklogPolicy, LINUX_BACKLOG_DEFAULTS } from './tcp/backlog';
import { UdpLayer } from './udp/udp';
import type { IpsecHook } from './iface/ipsec-hook';
import type { IpInputHook } from './iface/ip-input-hook';
import { CodedError } from './util/errors';
import { formatIpv4, prefixMask } from './wire/addr';
import { type ChecksumCaps, DeviceChecksum } from './wire/checksum';
import {
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_HEADER_LEN,
  ICMP_TIME_EXCEEDED,
  ICMP_PARAM_PROBLEM,
  ICMP_SOURCE_QUENCH,
  IcmpError,
  UNREACH_FRAG_NEEDED,
  UNREACH_PORT,
  emitIcmp,
  newIcmpRepr,
  parseIcmp,
} from './wire/icmp';
import { IPV4_MIN_HEADER, Ipv4Error, Ipv4Field, Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP, emitIpv4Header, newIpv4Repr, parseIpv4Header } from './wire/ipv4';
import { readU16, readU32, writeU16 } from './wire/bytes';
import { UdpField } from './wire/udp';

/** Where time comes from and how deferred work is scheduled (real or virtual). */
export interface Scheduler {
  now(): number;
  /** Runs `fn` at time `at` (ms); returns a handle. */
  at(at: number, fn: () => void): unknown;
  cancel(handle: unknown): void;
  /** Runs `fn` soon, after the current burst of work (used to coalesce flushes). */
  soon(fn: () => void): void;
}

export interface StackOptions {
  device: Device;
  scheduler: Scheduler;
  address: number;
  prefix: number;
  /** Interface MTU; defaults to the device's. */
  mtu?: number;
  tcp?: Partial<TcpConfig>;
  backlog?: BacklogPolicy;
  /** Answer for any unicast address routed to the device, not only `address` (default true). */
  acceptAnyAddress?: boolean;
  /**
   * More addresses that are ours (on Ethernet: those the interface answers ARP for, see
   * stack/iface/ethernet.ts), checked before acceptAnyAddress.
   */
  ownsAddress?: (addr: number) => boolean;
  /** Default route via this neighbour (Ethernet); 0 or absent: every destination is on-link. */
  gateway?: number;
  /** ICMP error messages per second (token bucket). */
  icmpErrorsPerSec?: number;
  pmtu?: () => PmtuParams;
  /** How host routes count against MaxIcmpHostRoutes; default CREATIONS_AND_REMOVALS (iface/pmtu.ts). */
  hostRouteAccounting?: HostRouteAccounting;
  pmtuEvents?: PmtuEvents;
  /** Largest TSO super-segment in MSS units; 1 disables segmentation offload. */
  tsoSegments?: number;
  txChecksumOffload?: boolean;
  /**
   * Payload bytes the device queues for us before it drops (a TUN device: txqueuelen
   * packets); the receive windows of all connections share it. Unbounded when omitted.
   */
  rxQueueBytes?: number;
}

/**
 * The input/output gate (Stack.hooks.gate): whether the stack processes what arrives
 * and sends at all. Default OPEN_GATE. KB 297040 closes it while the emulated
 * connection-table lock is held.
 */
export interface IoGate {
  /** True: this received packet (its IPv4 header checked) is refused; the gate counts it. */
  refuseInput(): boolean;
  /** True: nothing is sent and timers wait. */
  refuseOutput(): boolean;
  /** Why the gate is closed, for an error message; null while it is open. */
  reason(): string | null;
}

export const OPEN_GATE: IoGate = { refuseInput: () => false, refuseOutput: () => false, reason: () => null };

/** Where a fault module may change the stack's own behaviour (docs/design.md, "Hooks"). */
export interface StackHooks {
  gate: IoGate;
}

export const DEFAULT_PMTU: PmtuParams = {
  EnablePMTUDiscovery: 1,
  MaxIcmpHostRoutes: 1000,
  PMTUFloor: 68,
  HostRouteAgingSec: 600,
  EnablePMTUBHDetect: 0,
};

/** How long after the last SYN cookie the device's early SYN drop stays on (Stack.updateSynPressure). */
const COOKIE_PRESSURE_MS = 3000;
/** Bare SYNs of unverified sources handed to the stack per backlogged burst of 64 (the rest dropped early). */
const EARLY_SYN_BUDGET = 48;

export class Stack {
  readonly counters: Counters = newCounters();
  readonly timers = new TimerQueue();
  readonly routes: RouteTable;
  readonly pmtu: PathMtu;
  readonly reassembler = new Reassembler();
  readonly tcp: TcpLayer;
  readonly udp: UdpLayer;
  readonly device: Device;
  readonly scheduler: Scheduler;
  readonly address: number;
  readonly prefix: number;
  acceptAnyAddress: boolean;
  private readonly ownsAddress: ((addr: number) => boolean) | null;
  tsoSegmentsMax: number;
  txCsumOffload: boolean;
  /** Time to live of what we send (the profile's DefaultTTL: Windows 128, Linux 64). */
  ttl = 64;
  readonly rxQueueLimit: number;
  now = 0;
  private ipId = Math.floor(Math.random() * 65536);
  private readonly ip = newIpv4Repr();
  /** Output header fields; no options, never a fragment (see writeIpHeader). */
  private readonly ipOut = newIpv4Repr();
  private readonly icmp = newIcmpRepr();
  private readonly icmpOut = newIcmpRepr();
  /** The first fragment's header, when a reassembled datagram's header is written again. */
  private readonly reasmIp = newIpv4Repr();
  /** The IPv4 header an ICMP error quotes. */
  private readonly quoted = new Ipv4Packet();
  /**
   * What the device does with checksums: `checksumCaps` for packets it did not vouch
   * for (and for what we send), `checksumCapsVerified` for those it did (virtio
   * DATA_VALID or NEEDS_CSUM on receive: their TCP and UDP checksums are not checked).
   */
  readonly checksumCaps: ChecksumCaps;
  private readonly checksumCapsVerified: ChecksumCaps;
  private icmpTokens: number;
  private icmpRefillAt = 0;
  private readonly icmpRate: number;
  private timerHandle: unknown = null;
  private timerAt = Infinity;
  private serviceQueued = false;
  /** Nesting depth of stack work under way (a receive burst, a timer run); see clock(). */
  private busy = 0;
  private readonly housekeeping: Timer;
  /** The device's early SYN drop is on (updateSynPressure). */
  private synPressure = false;
  private closed = false;
  /** The stack's hooks; each default is the correct behaviour (the TCP layer's are tcp.hooks, PMTU's pmtu.hooks). */
  readonly hooks: StackHooks = { gate: OPEN_GATE };
  /** IPsec (stack/iface/ipsec-hook.ts): set by the runtime when --ipsec is given. */
  ipsec: IpsecHook | null = null;
  /**
   * A router's view of IP input (stack/iface/ip-input-hook.ts): set by a forwarding plane
   * (the firewall, stack/firewall/) that sits on this stack's interface.
   */
  ipInputHook: IpInputHook | null = null;

  constructor(opts: StackOptions) {
    this.device = opts.device;
    this.scheduler = opts.scheduler;
    this.address = opts.address;
    this.prefix = opts.prefix;
    this.acceptAnyAddress = opts.acceptAnyAddress ?? true;
    this.ownsAddress = opts.ownsAddress ?? null;
    this.icmpRate = opts.icmpErrorsPerSec ?? 1000;
    this.icmpTokens = this.icmpRate;
    this.tsoSegmentsMax = opts.tsoSegments ?? 1;
    this.txCsumOffload = opts.txChecksumOffload ?? false;
    // Only TCP sends with the offload meta (tcp.ts), so only TCP checksums are left to the
    // device; UDP and ICMP are checksummed here. The IPv4 header checksum always is.
    const tcpTx = this.txCsumOffload ? DeviceChecksum.Fills : DeviceChecksum.None;
    this.checksumCaps = Object.freeze({ ipv4: DeviceChecksum.None, icmp: DeviceChecksum.None, tcp: tcpTx, udp: DeviceChecksum.None });
    this.checksumCapsVerified = Object.freeze({
      ipv4: DeviceChecksum.None,
      icmp: DeviceChecksum.None,
      tcp: tcpTx | DeviceChecksum.Verified,
      udp: DeviceChecksum.Verified,
    });
    this.rxQueueLimit = opts.rxQueueBytes ?? Infinity;
    const mtu = opts.mtu ?? opts.device.mtu;
    this.routes = new RouteTable(mtu);
    this.routes.addNetRoute(opts.address, opts.prefix, 'connected');
    this.routes.addNetRoute(0, 0, 'default', opts.gateway ?? 0);
    const pmtuParams = opts.pmtu ?? (() => DEFAULT_PMTU);
    this.pmtu = new PathMtu(
      this.routes,
      this.counters,
      pmtuParams,
      opts.hostRouteAccounting ?? CREATIONS_AND_REMOVALS,
      opts.pmtuEvents ?? { limitReached: () => {}, ignoredAtLimit: () => {} },
    );
    const tcpConfig = { ...defaultTcpConfig(), ...(opts.tcp ?? {}) };
    const backlog = opts.backlog ?? new LinuxBacklog(() => LINUX_BACKLOG_DEFAULTS);
    this.tcp = new TcpLayer(this, tcpConfig, backlog);
    this.udp = new UdpLayer(this);
    this.housekeeping = new Timer((now) => this.onHousekeeping(now));
    this.now = this.scheduler.now();
    this.timers.arm(this.housekeeping, this.now + 1000);
    this.device.onReceive = (packets, count, metas) => this.onBurst(packets, count, metas);
    this.reschedule();
  }

  // ---------------------------------------------------------------- time and service

  /**
   * The time for a call into the stack from outside (an application's write, read or
   * close, a control command). While a burst or a timer run is under way (the call came
   * from one of its callbacks: a data handler that writes, a drained write that queues
   * more) it is that run's time, so that one run sends with one clock; otherwise the
   * scheduler's, and never earlier than a time already handed out. An application
   * write re-entered from an ACK's callback used to read a later clock than the rest
   * of the burst: its segments carried a TSval that the burst's next segments undercut,
   * and the peer dropped those by PAWS (RFC 7323 5.3, TSval must not go backwards: 5.4).
   */
  clock(): number {
    if (this.busy > 0) return this.now;
    const t = this.scheduler.now();
    if (t > this.now) this.now = t;
    return this.now;
  }

  private onBurst(packets: Buffer[], count: number, metas: (OffloadMeta | null)[] | null): void {
    if (this.closed) return;
    const now = this.clock();
    this.busy++;
    this.tcp.beginBurst();
    try {
      for (let i = 0; i < count; i++) this.input(packets[i], metas ? metas[i] : null, now);
    } finally {
      this.tcp.endBurst(now);
      this.busy--;
    }
    if (!this.synPressure && this.tcp.lastCookieAt === now) this.updateSynPressure(now);
    this.service();
  }

  /** Runs due timers, writes queued packets, re-arms the wake-up. */
  service(): void {
    if (this.closed) return;
    const now = this.clock();
    if (this.hooks.gate.refuseOutput()) {
      // Hung: nothing runs; look again later instead of spinning on overdue timers.
      this.device.flush();
      if (this.timerHandle !== null) this.scheduler.cancel(this.timerHandle);
      this.timerAt = now + 100;
      this.timerHandle = this.scheduler.at(this.timerAt, () => {
        this.timerHandle = null;
        this.timerAt = Infinity;
        this.service();
      });
      return;
    }
    this.busy++;
    try {
      this.timers.run(now);
    } finally {
      this.busy--;
    }
    this.device.flush();
    this.reschedule();
  }

  /** Coalesces output caused by application calls into one flush. */
  flushSoon(): void {
    if (this.serviceQueued || this.closed) return;
    this.serviceQueued = true;
    this.scheduler.soon(() => {
      this.serviceQueued = false;
      this.service();
    });
  }

  private reschedule(): void {
    const next = this.timers.next();
    // A wake-up armed at or before the next deadline stays: when it fires, service()
    // runs what is due (perhaps nothing) and arms the one after. Only an earlier deadline
    // replaces it. A stream of small bursts moves the delayed-ACK deadline to and fro on
    // every burst, and cancelling and re-creating the scheduler's timer each time was a
    // fixed cost per burst.
    if (this.timerHandle !== null && this.timerAt <= next) return;
    if (next === this.timerAt) return;
    if (this.timerHandle !== null) this.scheduler.cancel(this.timerHandle);
    this.timerHandle = null;
    this.timerAt = next;
    if (next !== Infinity)
      this.timerHandle = this.scheduler.at(next, () => {
        this.timerHandle = null;
        this.timerAt = Infinity;
        this.service();
      });
  }

  /** TcpHost.sourceVerified: the device's early SYN drop (if any) spares `addr`. */
  sourceVerified(addr: number): void {
    this.device.allowSource?.(addr);
  }

  /**
   * The device's early SYN drop is on while the stack answers with SYN cookies (a flood
   * overflowed a SYN queue within the last COOKIE_PRESSURE_MS): then, while the device is
   * backlogged, SYNs of sources that never completed a handshake beyond
   * EARLY_SYN_BUDGET per burst are dropped before any JavaScript (drivers/tun, tun.cc),
   * so that the queue drains and the packets of established connections and of known
   * clients are not lost behind the flood. Checked once a second and when cookies start.
   */
  private updateSynPressure(now: number): void {
    const on = now - this.tcp.lastCookieAt < COOKIE_PRESSURE_MS;
    if (on === this.synPressure) return;
    this.synPressure = on;
    this.device.setSynBudget?.(on ? EARLY_SYN_BUDGET : 0);
  }

  private onHousekeeping(now: number): void {
    this.updateSynPressure(now);
    const expired = this.reassembler.expire(now);
    if (expired) {
      this.counters.IpReasmTimeout += expired;
      this.counters.IpReasmFails += expired;
    }
    if (now - this.pmtu.lastSweep >= 60_000) this.pmtu.sweep(now); // RFC 1191 6.3: once a minute
    this.timers.arm(this.housekeeping, now + 1000);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timerHandle !== null) this.scheduler.cancel(this.timerHandle);
    this.device.onReceive = null;
  }

  // ---------------------------------------------------------------- input

  /** One received IPv4 packet. `meta` carries the device's checksum/GSO information. */
  input(pkt: Buffer, meta: OffloadMeta | null, now: number): void {
    const c = this.counters;
    c.IpInReceives++;
    const ip = this.ip;
    // DATA_VALID or NEEDS_CSUM from the local kernel: the transport checksum needs no software check.
    const caps = meta !== null && (meta.flags & (VirtioNetHdr.F_DATA_VALID | VirtioNetHdr.F_NEEDS_CSUM)) !== 0 ? this.checksumCapsVerified : this.checksumCaps;
    let len = pkt.length;
    if (meta && meta.gsoType !== VirtioNetHdr.GSO_NONE && len >= 4 && readU16(pkt, Ipv4Field.LENGTH) === 0) {
      // Some GSO packets arrive with total length 0; the buffer says how long it is.
      writeU16(pkt, Ipv4Field.LENGTH, len);
    }
    if (len > 0 && pkt[Ipv4Field.VER_IHL] >> 4 === 6) {
      c.FsIpv6Ignored++;
      return;
    } // IPv6 is out of scope (docs/design.md)
    const err = parseIpv4Header(pkt, 0, len, ip, caps);
    if (err !== Ipv4Error.None) {
      c.IpInHdrErrors++;
      return;
    }
    // Refused by the gate (KB 297040's held lock): discarded for a reason that is not the
    // packet's (RFC 4293 ipSystemStatsInDiscards), whatever the fault counts on its own.
    if (this.hooks.gate.refuseInput()) {
      this.counters.IpInDiscards++;
      return;
    }
    const local = this.isLocal(ip.dst);
    // A forwarding plane sees every valid datagram before local delivery (RFC 1812 5.2.1:
    // a router decides to forward or to deliver before reassembly).
    if (this.ipInputHook !== null && this.ipInputHook.input(pkt, ip, meta, local, now)) return;
    if (!local) {
      c.IpInAddrErrors++;
      return;
    }
    len = ip.totalLength;
    let buf = pkt;
    let off = ip.headerLength;
    let plen = len - ip.headerLength;
    let ipOff = 0;
    if (ip.moreFragments || ip.fragmentOffset > 0) {
      c.IpReasmReqds++;
      const key = `${ip.src}/${ip.dst}/${ip.protocol}/${ip.ident}`;
      const failed = this.reassembler.failures;
      const r = this.reassembler.add(key, now, pkt.subarray(0, ip.headerLength), ip.fragmentOffset, ip.moreFragments, pkt.subarray(off, len));
      // Every datagram given up counts: refused fragments, and those evicted to make room
      // (too many in progress, or too many bytes), which failed as surely as a timeout
      // (RFC 2011 ipReasmFails; Linux's ip_evictor counts them too).
      c.IpReasmFails += this.reassembler.failures - failed;
      if (r === null) return;
      if (!r.done) return;
      c.IpReasmOKs++;
      // Rebuild a contiguous datagram so that transports (and ICMP quotes) see one packet.
      buf = Buffer.allocUnsafe(IPV4_MIN_HEADER + r.payload.length);
      this.reassembledHeader(r.header, buf, r.payload.length);
      r.payload.copy(buf, IPV4_MIN_HEADER);
      off = IPV4_MIN_HEADER;
      plen = r.payload.length;
      ipOff = 0;
    }
    // ESP, IKE and the inbound policy (stack/iface/ipsec-hook.ts); decrypted packets come back through input().
    if (this.ipsec !== null && this.ipsec.input(ip, buf, ipOff, off, plen, caps, now)) return;
    c.IpInDelivers++;
    switch (ip.protocol) {
      case PROTO_TCP: {
        if (meta && meta.gsoType !== VirtioNetHdr.GSO_NONE) c.TcpExtTCPGSOSegsIn++;
        this.tcp.input(ip.src, ip.dst, buf, off, plen, caps, now);
        break;
      }
      case PROTO_UDP:
        this.udp.input(ip.src, ip.dst, buf, ipOff, off, plen, caps);
        break;
      case PROTO_ICMP:
        this.icmpInput(ip.src, ip.dst, buf, off, plen, caps, now);
        break;
      default:
        c.IpInUnknownProtos++;
        this.sendIcmpError(buf, ipOff, off + plen - ipOff, ICMP_DEST_UNREACH, 2);
    }
  }

  /**
   * The header of a reassembled datagram, from its first fragment's: it must describe
   * the whole datagram, as the reassembled one does in Linux (ip_frag_reasm): the total
   * length of all of it, no MF, offset 0, a valid checksum, no options. Otherwise an
   * ICMP error quoting it (port unreachable) says "fragment of 1500".
   */
  private reassembledHeader(first: Buffer, out: Buffer, payloadLength: number): void {
    const v = this.quoted,
      r = this.reasmIp;
    v.wrap(first, 0, first.length); // validated when it arrived
    r.src = v.src;
    r.dst = v.dst;
    r.protocol = v.protocol;
    r.ttl = v.ttl;
    r.tos = v.tos;
    r.ident = v.ident;
    r.dontFragment = v.dontFragment;
    r.moreFragments = false;
    r.fragmentOffset = 0;
    r.headerLength = IPV4_MIN_HEADER;
    r.totalLength = IPV4_MIN_HEADER + payloadLength;
    emitIpv4Header(out, 0, r);
  }

  isLocal(dst: number): boolean {
    if (dst === this.address) return true;
    if (this.ownsAddress !== null && this.ownsAddress(dst)) return true;
    if (!this.acceptAnyAddress) return false;
    // Any unicast address routed to us, but not broadcast, multicast or the subnet's broadcast.
    if (dst >>> 28 === 0xe || dst === 0xffffffff || dst === 0) return false;
    const m = prefixMask(this.prefix);
    if (this.prefix < 31 && (dst & m) >>> 0 === (this.address & m) >>> 0 && (dst | m) >>> 0 === 0xffffffff) return false;
    return true;
  }

  private icmpInput(src: number, dst: number, buf: Buffer, off: number, len: number, caps: ChecksumCaps, now: number): void {
    const c = this.counters;
    const m = this.icmp;
    c.IcmpInMsgs++;
    const err = parseIcmp(buf, off, len, m, caps);
    if (err !== IcmpError.None) {
      c.IcmpInErrors++;
      if (err === IcmpError.BadChecksum) c.IcmpInCsumErrors++;
      return;
    }
    switch (m.type) {
      case ICMP_ECHO_REQUEST: {
        c.IcmpInEchos++;
        // The reply carries the request's identifier, sequence number and data (RFC 792).
        const reply = Buffer.allocUnsafe(len);
        buf.copy(reply, 0, off, off + len);
        const r = this.icmpOut;
        r.type = ICMP_ECHO_REPLY;
        r.code = 0;
        r.ident = m.ident;
        r.seq = m.seq;
        r.bodyLength = m.bodyLength;
        emitIcmp(reply, 0, r);
        c.IcmpOutMsgs++;
        c.IcmpOutEchoReps++;
        // Through the datagram path: a large echo (ping -s 3000) is fragmented like any datagram.
        this.sendDatagram(PROTO_ICMP, dst, src, reply, false);
        return;
      }
      case ICMP_ECHO_REPLY:
        c.IcmpInEchoReps++;
        return;
      case ICMP_DEST_UNREACH:
        c.IcmpInDestUnreachs++;
        this.icmpError(m.type, m.code, m.nextHopMtu, buf, m.bodyOffset, m.bodyLength, now);
        return;
      case ICMP_TIME_EXCEEDED:
        c.IcmpInTimeExcds++;
        return;
      case ICMP_SOURCE_QUENCH:
      case ICMP_PARAM_PROBLEM:
        return; // RFC 6633: ignore source quench
      default:
        return;
    }
  }

  /** An ICMP error: find what it concerns from the quoted header (RFC 5927) and tell it. */
  private icmpError(_type: number, code: number, nextHopMtu: number, buf: Buffer, qoff: number, qlen: number, now: number): void {
    // The quote: the offending datagram's IP header and at least 8 bytes after it (RFC 792).
    const q = this.quoted;
    if (qlen < IPV4_MIN_HEADER + 8 || q.wrap(buf, qoff, qlen) !== Ipv4Error.None) return;
    const proto = q.protocol;
    if (proto === PROTO_TCP) {
      const conn = this.tcp.findQuoted(q);
      if (!conn) return;
      if (code === UNREACH_FRAG_NEEDED) {
        const outcome = this.pmtu.onFragNeeded(conn.remoteAddr, nextHopMtu, q.totalLength, now);
        if (outcome === 'created' || outcome === 'updated') this.applyPathMtu(conn.remoteAddr, now);
        return;
      }
      this.tcp.onUnreachable(conn, code, now);
    } else if (proto === PROTO_UDP && q.payloadLength >= 8) {
      const u = q.payloadOffset;
      const sport = readU16(buf, u + UdpField.SRC_PORT);
      const dport = readU16(buf, u + UdpField.DST_PORT);
      const src = q.src;
      const dst = q.dst;
      // The quoted datagram must be one we could have sent (RFC 5927's check, for UDP).
      if (!this.udp.sentFrom(sport, src, (a) => this.isLocal(a))) return;
      const codeName = code === UNREACH_PORT ? 'ECONNREFUSED' : 'EHOSTUNREACH';
      this.udp.icmpError(sport, new CodedError(codeName, `send ${codeName} ${formatIpv4(dst)}:${dport}`));
    }
  }

  /** A path MTU went down: every connection to `dst` lowers its MSS and resends what the router dropped. */
  applyPathMtu(dst: number, now: number): void {
    this.tcp.onPathMtuDecreased(dst, this.pathMtu(dst), now);
    this.flushSoon();
  }

  // ---------------------------------------------------------------- output

  nextIpId(): number {
    this.ipId = (this.ipId + 1) & 0xffff;
    return this.ipId;
  }

  pathMtu(dst: number): number {
    const onLink = (dst & prefixMask(this.prefix)) >>> 0 === (this.address & prefixMask(this.prefix)) >>> 0;
    const mtu = this.pmtu.mtuFor(dst, onLink);
    return this.ipsec === null ? mtu : mtu - this.ipsec.overhead(dst);
  }

  tsoSegments(): number {
    return this.tsoSegmentsMax;
  }
  /** Keep a received packet's buffer instead of copying out of it, when the device allows. */
  claimPacket(pkt: Buffer): boolean {
    return this.device.claim !== undefined && this.device.claim(pkt);
  }
  rxQueueBytes(): number {
    return this.rxQueueLimit;
  }
  blackHoleDetection(): boolean {
    return this.pmtu.params().EnablePMTUBHDetect !== 0;
  }

  sendIp(pkt: Buffer, meta: OffloadMeta | null): void {
    if (this.hooks.gate.refuseOutput()) {
      this.counters.IpOutDiscards++;
      return;
    }
    this.counters.IpOutRequests++;
    if (this.ipsec !== null && this.ipsec.output(pkt, meta, this.now)) return;
    this.device.send(pkt, meta);
  }

  /**
   * IP output of a stateless reply (a SYN cookie, a reset for no connection: nothing
   * else is ordered after it), through the device's detached path when it has one, so
   * that the kernel's work for it is not done on the stack's thread (Device.sendDetached).
   */
  sendIpStateless(pkt: Buffer): void {
    const d = this.device;
    if (d.sendDetached === undefined || this.ipsec !== null) {
      this.sendIp(pkt, null);
      return;
    }
    if (this.hooks.gate.refuseOutput()) {
      this.counters.IpOutDiscards++;
      return;
    }
    this.counters.IpOutRequests++;
    d.sendDetached(pkt);
  }

  /**
   * Raw IP output for a datagram this stack did not originate (a router's forwarded
   * packet): no header is written, no IPsec policy applies; the output gate still does.
   * The device owns `pkt` from here on.
   */
  sendRaw(pkt: Buffer, meta: OffloadMeta | null): boolean {
    if (this.closed || this.hooks.gate.refuseOutput()) {
      this.counters.IpOutDiscards++;
      return false;
    }
    this.device.send(pkt, meta);
    this.flushSoon();
    return true;
  }

  /** Writes a 20-byte IPv4 header at the start of an unfragmented packet (one scratch repr, no allocation). */
  writeIpHeader(pkt: Buffer, src: number, dst: number, protocol: number, df: boolean): void {
    const r = this.ipOut;
    r.src = src;
    r.dst = dst;
    r.protocol = protocol;
    r.ident = this.nextIpId();
    r.dontFragment = df;
    r.ttl = this.ttl;
    r.totalLength = pkt.length;
    emitIpv4Header(pkt, 0, r);
  }

  /** Sends a transport payload, fragmenting when it does not fit the MTU (RFC 791 3.2). */
  sendDatagram(protocol: number, src: number, dst: number, payload: Buffer, dontFragment: boolean): boolean {
    const c = this.counters;
    const mtu = this.pathMtu(dst);
    if (payload.length + 20 <= mtu) {
      const pkt = Buffer.allocUnsafe(20 + payload.length);
      payload.copy(pkt, 20);
      this.writeIpHeader(pkt, src, dst, protocol, dontFragment);
      this.sendIp(pkt, null);
      return true;
    }
    if (dontFragment) {
      c.IpFragFails++;
      return false;
    }
    const step = (mtu - 20) & ~7;
    const ident = this.nextIpId();
    for (let o = 0; o < payload.length; o += step) {
      const n = Math.min(step, payload.length - o);
      const pkt = Buffer.allocUnsafe(20 + n);
      payload.copy(pkt, 20, o, o + n);
      emitIpv4Header(pkt, 0, {
        src,
        dst,
        protocol,
        ttl: this.ttl,
        tos: 0,
        ident,
        dontFragment: false,
        moreFragments: o + n < payload.length,
        fragmentOffset: o,
        headerLength: 20,
        totalLength: 20 + n,
      });
      c.IpFragCreates++;
      this.sendIp(pkt, null);
    }
    c.IpFragOKs++;
    return true;
  }

  sendPortUnreachable(original: Buffer, off: number, len: number): void {
    this.sendIcmpError(original, off, len, ICMP_DEST_UNREACH, UNREACH_PORT);
  }

  /**
   * An ICMP error about the datagram original[off, off+len) (its header validated),
   * quoting its header and 8 bytes more (RFC 792), rate-limited. `nextHopMtu` for
   * destination unreachable, fragmentation needed (RFC 1191 4).
   */
  sendIcmpError(original: Buffer, off: number, len: number, type: number, code: number, nextHopMtu = 0): void {
    // Never about a datagram whose source is not one host (RFC 1122 3.2.2): zero,
    // loopback, multicast, class E, limited or subnet broadcast.
    const from = readU32(original, off + Ipv4Field.SRC_ADDR);
    const first = from >>> 24;
    const m = prefixMask(this.prefix);
    if (from === 0 || first === 127 || first >= 224 || (this.prefix < 31 && (from & m) >>> 0 === (this.address & m) >>> 0 && (from | m) >>> 0 === 0xffffffff))
      return;
    const now = this.now;
    if (now - this.icmpRefillAt >= 1000) {
      this.icmpTokens = this.icmpRate;
      this.icmpRefillAt = now;
    }
    if (this.icmpTokens <= 0) {
      this.counters.IcmpOutRateLimited++;
      return;
    }
    this.icmpTokens--;
    const ihl = (original[off + Ipv4Field.VER_IHL] & 15) * 4;
    const quote = Math.min(len, ihl + 8);
    const body = IPV4_MIN_HEADER + ICMP_HEADER_LEN;
    const pkt = Buffer.allocUnsafe(body + quote);
    original.copy(pkt, body, off, off + quote);
    const r = this.icmpOut;
    r.type = type;
    r.code = code;
    r.nextHopMtu = nextHopMtu;
    r.bodyLength = quote;
    emitIcmp(pkt, IPV4_MIN_HEADER, r);
    // From the address it was sent to, back to its source.
    this.writeIpHeader(pkt, readU32(original, off + Ipv4Field.DST_ADDR), from, PROTO_ICMP, false);
    this.counters.IcmpOutMsgs++;
    if (type === ICMP_DEST_UNREACH) this.counters.IcmpOutDestUnreachs++;
    this.sendIp(pkt, null);
  }
}
