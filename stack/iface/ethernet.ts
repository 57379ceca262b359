/**
 * The Ethernet interface: what sits between a frame device (TAP, the memory Ethernet
 * segment) and the stack's IP layer. To the stack it is an ordinary 'ip' Device: IPv4
 * packets go down through `send`, come up through `onReceive`. Below, it speaks frames.
 *
 *   in:  device burst -> for each frame: length, acceptance (is it ours?), EtherType
 *          0x0800 IPv4 -> IGMP (to a multicast group) is handled here; an IPv4 filter
 *                         registered for the destination may drop it; the rest goes up,
 *                         the whole burst in one onReceive call (header stripped, no copy)
 *          0x0806 ARP  -> the neighbour table learns; requests for our addresses are answered
 *          0x86DD IPv6 -> up (the stack counts and drops it, as over TUN)
 *          others      -> a registered EtherType handler (NLB heartbeats), else counted, dropped
 *   out: stack.send(IPv4 packet) -> next hop from the route table (on-link: the destination;
 *          else the gateway), multicast -> RFC 1112 MAC, broadcast -> ff:ff:ff:ff:ff:ff,
 *          unicast -> the neighbour table: the MAC, or the packet waits for ARP -> the
 *          14-byte header goes in front with a gather write (no copy of the packet)
 *
 * Which frames are ours: our MAC; broadcast; the multicast MACs of the groups joined
 * (IGMP, 224.0.0.1 always) and of `addMulticastMac`; the extra unicast MACs of
 * `addUnicastMac`; with `promiscuous`, everything (frames for other hosts are then handed
 * up as well, and the IP layer keeps what is addressed to our addresses; Linux instead
 * marks them PACKET_OTHERHOST and IP drops them). Everything else is counted by reason.
 *
 * ARP (RFC 826): requests for one of our addresses are answered (our own and those added
 * with addAddress, each with the MAC ARP gives for it, and every host address of a
 * proxy-ARP subnet, answered at once: we are the hosts of that subnet, so there is no
 * real owner to wait for, unlike Linux's proxy_delay). Start-up sends RFC 5227 2.3 ARP
 * Announcements (2, 2 s apart); another host's ARP packet claiming one of our addresses
 * is a conflict (RFC 5227 2.4): counted, reported, and defended with one announcement at
 * most every 10 s (DEFEND_INTERVAL). ARP probes (sender 0.0.0.0) for our addresses get a
 * reply, as Linux sends one (RFC 5227 2.1.1 lets the prober see it).
 *
 * When the neighbour table gives up on an address, each packet that waited for it is
 * answered, as Linux's arp_error_report does, with an ICMP host unreachable from us to us
 * quoting it, handed up like a received packet: TCP's connect fails with EHOSTUNREACH and
 * a UDP socket gets an EHOSTUNREACH error, through the stack's own ICMP error path.
 *
 * The seam for NLB (docs/design.md, "The Ethernet seam"): addUnicastMac /
 * addMulticastMac, sourceMac (the source of every frame we send), addAddress with an
 * arpMac, onEtherType + sendFrame, setIpv4Filter.
 *
 * Time: read from the scheduler once per burst, per timer run and per send; the
 * neighbour table and IGMP take it as an argument.
 */
import type { Device, OffloadMeta, ReceiveHandler } from '../../drivers/device';
import type { Scheduler } from '../stack';
import { formatIpv4, prefixMask } from '../wire/addr';
import { ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST, ArpError, ArpRepr, emitArp, isGratuitous, isProbe, newArpRepr, parseArp } from '../wire/arp';
import {
  BROADCAST_MAC,
  ETHERNET_HEADER_LEN,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_MIN,
  MacAddr,
  formatMac,
  ipv4MulticastMac,
  isMulticastMac,
  readMac,
  writeMac,
} from '../wire/ethernet';
import { ICMP_DEST_UNREACH, ICMP_HEADER_LEN, UNREACH_HOST, emitIcmp, newIcmpRepr } from '../wire/icmp';
import {
  ALL_ROUTERS,
  ALL_SYSTEMS,
  IGMP_LEAVE_GROUP,
  IGMP_MEMBERSHIP_QUERY,
  IGMP_V1_MEMBERSHIP_REPORT,
  IGMP_V2_MEMBERSHIP_REPORT,
  IgmpError,
  PROTO_IGMP,
  buildIgmpDatagram,
  newIgmpRepr,
  parseIgmp,
} from '../wire/igmp';
import { IPV4_MIN_HEADER, Ipv4Error, Ipv4Field, Ipv4Packet, PROTO_ICMP, emitIpv4Header, newIpv4Repr, parseIpv4Header } from '../wire/ipv4';
import { readU32 } from '../wire/bytes';
import { Timer, TimerQueue } from '../timers';
import { IgmpMembership, IgmpParams } from './igmp';
import { NeighbourParams, NeighbourTable } from './neighbour';

/** RFC 5227 section 1.1 constants. */
export const ANNOUNCE_NUM = 2;
export const ANNOUNCE_INTERVAL_MS = 2000;
export const DEFEND_INTERVAL_MS = 10_000;

const ALL_SYSTEMS_MAC = ipv4MulticastMac(ALL_SYSTEMS);

/** What the interface asks of the IP layer above: the next hop toward a destination. */
export interface NextHopSource {
  nextHop(dst: number): number;
}

/** A handler for frames of one EtherType (the whole frame, header included; valid during the call). */
export type EtherTypeHandler = (frame: Buffer, src: MacAddr, dst: MacAddr, now: number) => void;

/** Sees an IPv4 packet for one destination before IP input; false drops it. */
export type Ipv4InputFilter = (packet: Buffer, now: number) => boolean;

export type LinkEvent = { kind: 'arp-conflict'; address: string; mac: string; defended: boolean } | { kind: 'neigh-failed'; address: string; dropped: number };

export interface EthernetInterfaceOptions {
  /** The frame device below (linkType 'ethernet'). */
  lower: Device;
  scheduler: Scheduler;
  mac: MacAddr;
  address: number;
  prefix: number;
  promiscuous?: boolean;
  /** Subnets whose every host address the interface answers ARP for (and the stack accepts). */
  proxyArp?: { addr: number; prefix: number }[];
  neighbour?: Partial<NeighbourParams>;
  igmp?: Partial<IgmpParams>;
  /** Source of randomness for reachable_time and IGMP delays (tests pass a fixed one). */
  random?: () => number;
  /** ARP Announcements per address at start (RFC 5227 ANNOUNCE_NUM, default 2; 0: none). */
  announcements?: number;
  onEvent?: (e: LinkEvent) => void;
}

interface Pending {
  pkt: Buffer;
  meta: OffloadMeta | null;
}

interface OwnAddress {
  addr: number;
  /** What ARP answers for it. */
  arpMac: MacAddr;
  /** Resolutions for packets from it are asked from the interface's own address and MAC instead. */
  solicitFromPrimary: boolean;
  announceLeft: number;
  readonly timer: Timer;
}

export function newLinkCounters() {
  return {
    EthInFrames: 0,
    EthInOctets: 0,
    EthInRunts: 0,
    EthInBadSource: 0,
    EthInNotEthernetII: 0,
    EthInUnknownEtherType: 0,
    EthInOtherHost: 0,
    EthInMcastNotJoined: 0,
    EthInBroadcast: 0,
    EthInMulticast: 0,
    EthInPromiscuous: 0,
    EthInIpv4: 0,
    EthInIpv6: 0,
    EthInArp: 0,
    EthInHandled: 0,
    EthInIpv4Filtered: 0,
    EthInNoHandler: 0,
    EthOutFrames: 0,
    EthOutOctets: 0,
    EthOutDiscards: 0,
    ArpInRequests: 0,
    ArpInReplies: 0,
    ArpInErrors: 0,
    ArpInTruncated: 0,
    ArpInBadLengths: 0,
    ArpInUnsupported: 0,
    ArpInBadOperation: 0,
    ArpInIgnored: 0,
    ArpInProbes: 0,
    ArpInConflicts: 0,
    ArpOutRequests: 0,
    ArpOutReplies: 0,
    ArpOutAnnouncements: 0,
    IgmpInMsgs: 0,
    IgmpInErrors: 0,
    IgmpInQueries: 0,
    IgmpInReports: 0,
    IgmpInLeaves: 0,
    IgmpInOther: 0,
    IgmpOutReports: 0,
    IgmpOutLeaves: 0,
    NeighUnreachReported: 0,
    EthLoopback: 0,
  };
}
export type LinkCounters = ReturnType<typeof newLinkCounters>;

export class EthernetInterface implements Device {
  readonly linkType = 'ip' as const;
  onReceive: ReceiveHandler | null = null;
  readonly counters: LinkCounters = newLinkCounters();
  readonly neighbours: NeighbourTable<Pending>;
  readonly igmp: IgmpMembership;
  readonly lower: Device;
  readonly mac: MacAddr;
  readonly address: number;
  readonly prefix: number;
  promiscuous: boolean;
  private readonly scheduler: Scheduler;
  private routes: NextHopSource | null = null;
  private readonly timers = new TimerQueue();
  private readonly own = new Map<number, OwnAddress>();
  private readonly proxy: { net: number; mask: number; prefix: number }[] = [];
  private readonly unicastMacs = new Set<MacAddr>();
  private readonly mcastMacs = new Map<MacAddr, number>();
  private readonly etherHandlers = new Map<number, EtherTypeHandler>();
  private readonly ipv4Filters = new Map<number, Ipv4InputFilter>();
  private readonly announceCount: number;
  private readonly onEvent: (e: LinkEvent) => void;
  /** The header of every IPv4 frame we send: the destination is written per packet, the source when sourceMac changes. */
  private readonly hdr = Buffer.alloc(ETHERNET_HEADER_LEN);
  /** The destination now in `hdr` (consecutive packets mostly go to the same neighbour). */
  private hdrDst: MacAddr = 0;
  private srcMac: MacAddr;
  private readonly arp: ArpRepr = newArpRepr();
  private readonly ipIn = newIpv4Repr();
  /** reportUnreachable's view of the packet that could not go, and its ICMP error. */
  private readonly unreachableView = new Ipv4Packet();
  private readonly unreachableIcmp = newIcmpRepr();
  private readonly igmpIn = newIgmpRepr();
  private readonly upPkts: Buffer[] = [];
  private readonly upFrames: Buffer[] = [];
  private readonly upMetas: (OffloadMeta | null)[] = [];
  private upCount = 0;
  private inBurst = false;
  private readonly subnetMask: number;
  private readonly subnetBroadcast: number;
  private timerHandle: unknown = null;
  private timerAt = Infinity;
  /** Packets to hand up after the current work: ICMP reports of failed resolutions, loopback. */
  private readonly upLater: Buffer[] = [];
  private readonly upLaterMeta: (OffloadMeta | null)[] = [];
  private upLaterQueued = false;
  private lastDefend = -Infinity;
  private started = false;
  private closed = false;

  constructor(opts: EthernetInterfaceOptions) {
    this.lower = opts.lower;
    this.scheduler = opts.scheduler;
    this.mac = opts.mac;
    this.srcMac = opts.mac;
    this.address = opts.address >>> 0;
    this.prefix = opts.prefix;
    this.promiscuous = opts.promiscuous ?? false;
    this.announceCount = opts.announcements ?? ANNOUNCE_NUM;
    this.onEvent = opts.onEvent ?? (() => {});
    this.subnetMask = prefixMask(opts.prefix);
    this.subnetBroadcast = opts.prefix < 31 ? (this.address | ~this.subnetMask) >>> 0 : 0;
    writeMac(this.hdr, 0, 0);
    writeMac(this.hdr, 6, this.srcMac);
    this.hdr[12] = ETHERTYPE_IPV4 >> 8;
    this.hdr[13] = ETHERTYPE_IPV4 & 255;
    const random = opts.random ?? Math.random;
    const now = this.scheduler.now();
    this.neighbours = new NeighbourTable<Pending>(
      {
        solicit: (target, unicastTo, about, t) => this.sendArpRequest(target, unicastTo, about, t),
        transmit: (p, mac) => this.transmitIp(p.pkt, p.meta, mac),
        unreachable: (p, target, t) => this.reportUnreachable(p.pkt, target, t),
        sizeOf: (p) => p.pkt.length,
        resolutionFailed: (target, waiting) => this.onEvent({ kind: 'neigh-failed', address: formatIpv4(target), dropped: waiting }),
      },
      now,
      opts.neighbour,
      random,
    );
    this.igmp = new IgmpMembership(
      {
        sendReport: (g) => this.sendIgmp(IGMP_V2_MEMBERSHIP_REPORT, g, g),
        sendLeave: (g) => this.sendIgmp(IGMP_LEAVE_GROUP, g, ALL_ROUTERS),
      },
      this.timers,
      opts.igmp,
      random,
    );
    for (const p of opts.proxyArp ?? []) this.addProxySubnet(p.addr, p.prefix);
    this.addOwn(this.address, this.mac);
    this.lower.onReceive = (frames, count, metas) => this.onFrames(frames, count, metas);
  }

  get name(): string {
    return this.lower.name;
  }
  get mtu(): number {
    return this.lower.mtu;
  }

  /** The source MAC of every frame we send (NLB unicast mode masks it); default: our MAC. */
  get sourceMac(): MacAddr {
    return this.srcMac;
  }
  set sourceMac(mac: MacAddr) {
    this.srcMac = mac;
    writeMac(this.hdr, 6, mac);
  }

  /** The route table the next hop comes from (the stack's); without one, every destination is on-link. */
  useRoutes(routes: NextHopSource): void {
    this.routes = routes;
  }

  /** Starts the RFC 5227 announcements of every address added so far. Call once the stack above is attached. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    const now = this.scheduler.now();
    for (const a of this.own.values()) this.scheduleAnnouncements(a, now);
    this.afterWork();
  }

  // ------------------------------------------------------------------ addresses

  /** True for an address the interface answers ARP for: the stack accepts IP to it too. */
  ownsAddress(addr: number): boolean {
    if (this.own.has(addr)) return true;
    for (const p of this.proxy) {
      if ((addr & p.mask) >>> 0 !== p.net) continue;
      // Not the subnet's network or broadcast address (below /31).
      if (p.prefix < 31 && (addr === p.net || (addr | ~p.mask) >>> 0 === addr)) return false;
      return true;
    }
    return false;
  }

  /**
   * Another address of ours (NLB's cluster address): answered in ARP with `arpMac`
   * (default our MAC), accepted by the stack, announced (RFC 5227) unless `announce` is false.
   * `solicitFromPrimary`: ARP requests for packets sent from this address name our own
   * address and MAC (Linux's arp_announce 2), for an address whose `arpMac` is a group MAC
   * (NLB's multicast modes): routers must not believe a group MAC as a sender address
   * (RFC 1812 3.3.2; this interface refuses it too), and a request naming the address with
   * our own MAC would teach the neighbour to send that address's traffic to us alone.
   */
  addAddress(addr: number, opts: { arpMac?: MacAddr; announce?: boolean; solicitFromPrimary?: boolean } = {}): void {
    addr >>>= 0;
    const a = this.own.get(addr) ?? this.addOwn(addr, opts.arpMac ?? this.mac);
    a.arpMac = opts.arpMac ?? a.arpMac;
    if (opts.solicitFromPrimary !== undefined) a.solicitFromPrimary = opts.solicitFromPrimary;
    if (this.started && opts.announce !== false) {
      this.scheduleAnnouncements(a, this.scheduler.now());
      this.afterWork();
    }
  }

  removeAddress(addr: number): boolean {
    addr >>>= 0;
    if (addr === this.address) return false;
    const a = this.own.get(addr);
    if (!a) return false;
    this.timers.disarm(a.timer);
    this.own.delete(addr);
    return true;
  }

  addProxySubnet(addr: number, prefix: number): void {
    const mask = prefixMask(prefix);
    this.proxy.push({ net: (addr & mask) >>> 0, mask, prefix });
  }

  // ------------------------------------------------------------------ which frames are ours

  addUnicastMac(mac: MacAddr): void {
    this.unicastMacs.add(mac);
  }
  removeUnicastMac(mac: MacAddr): boolean {
    return this.unicastMacs.delete(mac);
  }

  /** Accepts frames to a multicast MAC (counted references: two users, two removes). */
  addMulticastMac(mac: MacAddr): void {
    if (!isMulticastMac(mac)) throw new RangeError(`${formatMac(mac)} is not a multicast MAC address (the I/G bit of the first octet is clear)`);
    this.mcastMacs.set(mac, (this.mcastMacs.get(mac) ?? 0) + 1);
  }

  removeMulticastMac(mac: MacAddr): boolean {
    const n = this.mcastMacs.get(mac);
    if (n === undefined) return false;
    if (n <= 1) this.mcastMacs.delete(mac);
    else this.mcastMacs.set(mac, n - 1);
    return true;
  }

  /** Joins an IPv4 group: its RFC 1112 MAC is accepted, IGMPv2 reports it and answers queries for it. */
  joinGroup(group: number): boolean {
    group >>>= 0;
    if (group >>> 28 !== 0xe) throw new RangeError(`${formatIpv4(group)} is not an IPv4 multicast group (224.0.0.0/4)`);
    const now = this.scheduler.now();
    if (!this.igmp.join(group, now)) return false;
    this.addMulticastMac(ipv4MulticastMac(group));
    this.afterWork();
    return true;
  }

  leaveGroup(group: number): boolean {
    group >>>= 0;
    if (!this.igmp.leave(group, this.scheduler.now())) return false;
    this.removeMulticastMac(ipv4MulticastMac(group));
    this.afterWork();
    return true;
  }

  /** Frames of `etherType` go to `handler` (one per type). */
  onEtherType(etherType: number, handler: EtherTypeHandler): void {
    if (etherType === ETHERTYPE_IPV4 || etherType === ETHERTYPE_ARP || etherType < ETHERTYPE_MIN) {
      throw new RangeError(`EtherType 0x${etherType.toString(16)} is not free for a handler`);
    }
    if (this.etherHandlers.has(etherType)) throw new RangeError(`EtherType 0x${etherType.toString(16)} already has a handler`);
    this.etherHandlers.set(etherType, handler);
  }

  offEtherType(etherType: number): boolean {
    return this.etherHandlers.delete(etherType);
  }

  /** Sends a frame of our own: `payload` after a header to `dst` (source: sourceMac unless given). */
  sendFrame(header: { dst: MacAddr; etherType: number; src?: MacAddr }, payload: Buffer): void {
    const frame = Buffer.allocUnsafe(ETHERNET_HEADER_LEN + payload.length);
    writeMac(frame, 0, header.dst);
    writeMac(frame, 6, header.src ?? this.srcMac);
    frame[12] = header.etherType >> 8;
    frame[13] = header.etherType & 255;
    payload.copy(frame, ETHERNET_HEADER_LEN);
    this.emitFrame(frame);
    // Inside a burst the burst's end writes it; from anywhere else (a heartbeat timer), now.
    if (!this.inBurst) this.lower.flush();
  }

  /** IPv4 packets to `addr` pass `filter` before IP input (null removes it). */
  setIpv4Filter(addr: number, filter: Ipv4InputFilter | null): void {
    if (filter) this.ipv4Filters.set(addr >>> 0, filter);
    else this.ipv4Filters.delete(addr >>> 0);
  }

  // ------------------------------------------------------------------ receive

  private accepts(f: Buffer): boolean {
    const c = this.counters;
    const dst = readMac(f, 0);
    if (dst === this.mac) return true;
    if (isMulticastMac(dst)) {
      if (dst === BROADCAST_MAC) {
        c.EthInBroadcast++;
        return true;
      }
      if (dst === ALL_SYSTEMS_MAC || this.mcastMacs.has(dst)) {
        c.EthInMulticast++;
        return true;
      }
      if (this.promiscuous) {
        c.EthInPromiscuous++;
        return true;
      }
      c.EthInMcastNotJoined++;
      return false;
    }
    if (this.unicastMacs.size > 0 && this.unicastMacs.has(dst)) return true;
    if (this.promiscuous) {
      c.EthInPromiscuous++;
      return true;
    }
    c.EthInOtherHost++;
    return false;
  }

  private onFrames(frames: Buffer[], count: number, metas: (OffloadMeta | null)[] | null): void {
    if (this.closed) return;
    const now = this.scheduler.now();
    const c = this.counters;
    const up = this.upPkts;
    const upFrames = this.upFrames;
    const upMetas = this.upMetas;
    let n = 0;
    let anyMeta = false;
    this.inBurst = true;
    try {
      for (let i = 0; i < count; i++) {
        const f = frames[i]!;
        const len = f.length;
        c.EthInFrames++;
        c.EthInOctets += len;
        if (len < ETHERNET_HEADER_LEN) {
          c.EthInRunts++;
          continue;
        }
        if (!this.accepts(f)) continue;
        // IEEE 802 source addresses are individual: a group address there is a forged frame.
        if ((f[6] & 1) === 1) {
          c.EthInBadSource++;
          continue;
        }
        const type = (f[12] << 8) | f[13];
        if (type === ETHERTYPE_IPV4 || type === ETHERTYPE_IPV6) {
          const pkt = f.subarray(ETHERNET_HEADER_LEN);
          if (type === ETHERTYPE_IPV4) {
            c.EthInIpv4++;
            if (pkt.length >= 20) {
              const dst = readU32(pkt, Ipv4Field.DST_ADDR);
              if (dst >>> 28 === 0xe && pkt[9] === PROTO_IGMP) {
                this.igmpInput(pkt, now);
                continue;
              }
              if (this.ipv4Filters.size > 0) {
                const filter = this.ipv4Filters.get(dst);
                if (filter !== undefined && !filter(pkt, now)) {
                  c.EthInIpv4Filtered++;
                  continue;
                }
              }
            }
          } else c.EthInIpv6++;
          const m = metas !== null ? (metas[i] ?? null) : null;
          if (m !== null) {
            // Offsets in the virtio header count from the frame's first byte; the stack's from the IP header.
            m.csumStart = Math.max(0, m.csumStart - ETHERNET_HEADER_LEN);
            m.hdrLen = Math.max(0, m.hdrLen - ETHERNET_HEADER_LEN);
            anyMeta = true;
          }
          up[n] = pkt;
          upFrames[n] = f;
          upMetas[n] = m;
          n++;
        } else if (type === ETHERTYPE_ARP) {
          c.EthInArp++;
          this.arpInput(f, now);
        } else if (type < ETHERTYPE_MIN) {
          c.EthInNotEthernetII++;
        } else {
          const h = this.etherHandlers.get(type);
          if (h !== undefined) {
            c.EthInHandled++;
            h(f, readMac(f, 6), readMac(f, 0), now);
          } else c.EthInUnknownEtherType++;
        }
      }
    } finally {
      this.inBurst = false;
    }
    if (n > 0) {
      const handler = this.onReceive;
      if (handler === null) c.EthInNoHandler += n;
      else {
        this.upCount = n;
        try {
          handler(up, n, anyMeta ? upMetas : null);
        } finally {
          this.upCount = 0;
          for (let i = 0; i < n; i++) {
            up[i] = EMPTY;
            upFrames[i] = EMPTY;
            upMetas[i] = null;
          }
        }
      }
    }
    this.afterWork();
  }

  /** During onReceive: keep a packet's buffer (the frame's slot is given away below). */
  claim(packet: Buffer): boolean {
    const claim = this.lower.claim;
    if (claim === undefined) return false;
    for (let i = 0; i < this.upCount; i++) if (this.upPkts[i] === packet) return claim.call(this.lower, this.upFrames[i]!);
    return false;
  }

  private arpInput(f: Buffer, now: number): void {
    const c = this.counters;
    const a = this.arp;
    const err = parseArp(f, ETHERNET_HEADER_LEN, f.length - ETHERNET_HEADER_LEN, a);
    if (err !== ArpError.None) {
      c.ArpInErrors++;
      if (err === ArpError.Truncated) c.ArpInTruncated++;
      else if (err === ArpError.BadLengths) c.ArpInBadLengths++;
      else if (err === ArpError.UnsupportedType) c.ArpInUnsupported++;
      else c.ArpInBadOperation++;
      return;
    }
    if (a.operation === ARP_OP_REQUEST) c.ArpInRequests++;
    else c.ArpInReplies++;
    const sha = a.senderHardwareAddr,
      spa = a.senderProtocolAddr,
      tpa = a.targetProtocolAddr;
    // RFC 5227 2.4: someone else using one of our addresses.
    const mine = this.own.get(spa);
    if (mine !== undefined) {
      if (sha !== mine.arpMac && sha !== this.srcMac && sha !== this.mac) this.conflict(mine, sha, now);
      return; // never a neighbour entry for an address of ours
    }
    // What Linux's arp_process refuses: group sender addresses, loopback and multicast IPs.
    if (isMulticastMac(sha) || sha === 0 || tpa >>> 28 === 0xe || tpa >>> 24 === 127 || spa >>> 28 === 0xe || spa >>> 24 === 127) {
      c.ArpInIgnored++;
      return;
    }
    const frameDst = readMac(f, 0);
    if (isProbe(a)) {
      // An RFC 5227 probe for an address: if it is ours, the reply tells the prober so.
      c.ArpInProbes++;
      if (this.ownsAddress(tpa)) this.sendArpReply(sha, tpa, 0, sha);
      return;
    }
    const gratuitous = isGratuitous(a);
    const forUs = a.operation === ARP_OP_REQUEST && !gratuitous && this.ownsAddress(tpa);
    if (forUs) {
      if (frameDst === BROADCAST_MAC) this.neighbours.counters.rcv_probes_mcast++;
      else this.neighbours.counters.rcv_probes_ucast++;
    }
    const reply = a.operation === ARP_OP_REPLY && !isMulticastMac(frameDst);
    this.neighbours.learn(spa, sha, { reply, forUs, gratuitous }, now);
    if (forUs) this.sendArpReply(sha, tpa, spa, sha);
    else if (a.operation === ARP_OP_REQUEST) c.ArpInIgnored++;
  }

  private conflict(mine: OwnAddress, sha: MacAddr, now: number): void {
    this.counters.ArpInConflicts++;
    // RFC 5227 2.4 (b): defend once per DEFEND_INTERVAL with an announcement.
    const defended = now - this.lastDefend >= DEFEND_INTERVAL_MS;
    if (defended) {
      this.lastDefend = now;
      this.announce(mine);
    }
    this.onEvent({ kind: 'arp-conflict', address: formatIpv4(mine.addr), mac: formatMac(sha), defended });
  }

  private igmpInput(pkt: Buffer, now: number): void {
    const c = this.counters;
    c.IgmpInMsgs++;
    const ip = this.ipIn;
    if (parseIpv4Header(pkt, 0, pkt.length, ip) !== Ipv4Error.None || ip.moreFragments || ip.fragmentOffset !== 0) {
      c.IgmpInErrors++;
      return;
    }
    const r = this.igmpIn;
    if (parseIgmp(pkt, ip.headerLength, ip.totalLength - ip.headerLength, r) !== IgmpError.None) {
      c.IgmpInErrors++;
      return;
    }
    switch (r.type) {
      case IGMP_MEMBERSHIP_QUERY:
        c.IgmpInQueries++;
        this.igmp.query(r.maxRespTime, r.group, now);
        return;
      case IGMP_V1_MEMBERSHIP_REPORT:
      case IGMP_V2_MEMBERSHIP_REPORT:
        c.IgmpInReports++;
        this.igmp.heardReport(r.group);
        return;
      case IGMP_LEAVE_GROUP:
        c.IgmpInLeaves++;
        return; // for routers
      default:
        c.IgmpInOther++; // IGMPv3 reports (0x22) and the rest: for routers
    }
  }

  // ------------------------------------------------------------------ transmit

  /** One IPv4 packet from the stack. */
  send(pkt: Buffer, meta?: OffloadMeta | null): void {
    if (this.closed || pkt.length < 20) {
      this.counters.EthOutDiscards++;
      return;
    }
    const dst = readU32(pkt, Ipv4Field.DST_ADDR);
    let mac: MacAddr;
    if (this.own.has(dst)) {
      this.loopback(pkt, meta ?? null);
      return;
    }
    if (dst >>> 28 === 0xe) mac = ipv4MulticastMac(dst);
    else if (dst === 0xffffffff || (dst === this.subnetBroadcast && dst !== 0)) mac = BROADCAST_MAC;
    else {
      const hop = this.routes !== null ? this.routes.nextHop(dst) : dst;
      const now = this.scheduler.now();
      mac = this.neighbours.output(hop, now);
      if (mac < 0) {
        this.neighbours.enqueue(hop, { pkt, meta: meta ?? null }, now);
        this.rearm();
        return;
      }
    }
    this.transmitIp(pkt, meta ?? null, mac);
  }

  private transmitIp(pkt: Buffer, meta: OffloadMeta | null, mac: MacAddr): void {
    const h = this.hdr;
    if (mac !== this.hdrDst) {
      writeMac(h, 0, mac);
      this.hdrDst = mac;
    }
    if (meta !== null) {
      meta.csumStart += ETHERNET_HEADER_LEN;
      if (meta.hdrLen !== 0) meta.hdrLen += ETHERNET_HEADER_LEN;
    }
    const c = this.counters;
    c.EthOutFrames++;
    c.EthOutOctets += ETHERNET_HEADER_LEN + pkt.length;
    const lower = this.lower;
    if (lower.sendWithHeader !== undefined) {
      lower.sendWithHeader(h, ETHERNET_HEADER_LEN, pkt, meta);
    } else {
      const frame = Buffer.allocUnsafe(ETHERNET_HEADER_LEN + pkt.length);
      h.copy(frame, 0);
      pkt.copy(frame, ETHERNET_HEADER_LEN);
      lower.send(frame, meta);
    }
  }

  private emitFrame(frame: Buffer): void {
    if (this.closed) {
      this.counters.EthOutDiscards++;
      return;
    }
    this.counters.EthOutFrames++;
    this.counters.EthOutOctets += frame.length;
    this.lower.send(frame, null);
  }

  private arpFrame(dst: MacAddr, r: ArpRepr): void {
    const f = Buffer.allocUnsafe(ETHERNET_HEADER_LEN + ARP_LEN);
    writeMac(f, 0, dst);
    writeMac(f, 6, this.srcMac);
    f[12] = ETHERTYPE_ARP >> 8;
    f[13] = ETHERTYPE_ARP & 255;
    emitArp(f, ETHERNET_HEADER_LEN, r);
    this.emitFrame(f);
  }

  private macFor(addr: number): MacAddr {
    return this.own.get(addr)?.arpMac ?? this.mac;
  }

  /** A request for `target`: broadcast, or unicast to the cached MAC while probing (tha 0, as Linux sends it). */
  private sendArpRequest(target: number, unicastTo: MacAddr | null, about: Pending | null, _now: number): void {
    // The sender address: the waiting packet's source when it is ours (Linux arp_announce 0), else our address.
    let spa = this.address;
    if (about !== null) {
      const src = readU32(about.pkt, 12);
      if (this.ownsAddress(src) && this.own.get(src)?.solicitFromPrimary !== true) spa = src;
    }
    this.counters.ArpOutRequests++;
    this.arpFrame(unicastTo ?? BROADCAST_MAC, {
      operation: ARP_OP_REQUEST,
      senderHardwareAddr: this.macFor(spa),
      senderProtocolAddr: spa,
      targetHardwareAddr: 0,
      targetProtocolAddr: target,
    });
  }

  private sendArpReply(to: MacAddr, spa: number, tpa: number, tha: MacAddr): void {
    this.counters.ArpOutReplies++;
    this.arpFrame(to, {
      operation: ARP_OP_REPLY,
      senderHardwareAddr: this.macFor(spa),
      senderProtocolAddr: spa,
      targetHardwareAddr: tha,
      targetProtocolAddr: tpa,
    });
  }

  private announce(a: OwnAddress): void {
    this.counters.ArpOutAnnouncements++;
    // RFC 5227 2.3: a request with sender and target protocol address both ours, target hardware address 0.
    this.arpFrame(BROADCAST_MAC, {
      operation: ARP_OP_REQUEST,
      senderHardwareAddr: a.arpMac,
      senderProtocolAddr: a.addr,
      targetHardwareAddr: 0,
      targetProtocolAddr: a.addr,
    });
  }

  private addOwn(addr: number, arpMac: MacAddr): OwnAddress {
    const a: OwnAddress = {
      addr,
      arpMac,
      announceLeft: 0,
      solicitFromPrimary: false,
      timer: new Timer(() => {
        this.announce(a);
        if (--a.announceLeft > 0) this.timers.arm(a.timer, this.scheduler.now() + ANNOUNCE_INTERVAL_MS);
      }),
    };
    this.own.set(addr, a);
    return a;
  }

  private scheduleAnnouncements(a: OwnAddress, now: number): void {
    if (this.announceCount <= 0) return;
    a.announceLeft = this.announceCount;
    this.timers.arm(a.timer, now);
  }

  private sendIgmp(type: number, group: number, to: number): void {
    if (type === IGMP_LEAVE_GROUP) this.counters.IgmpOutLeaves++;
    else this.counters.IgmpOutReports++;
    const pkt = buildIgmpDatagram(this.address, to, { type, maxRespTime: 0, group });
    this.transmitIp(pkt, null, ipv4MulticastMac(to));
  }

  /** Linux's arp_error_report: an ICMP host unreachable, from us to us, quoting what could not go. */
  private reportUnreachable(orig: Buffer, _target: number, _now: number): void {
    const v = this.unreachableView;
    if (v.wrap(orig, 0, orig.length) !== Ipv4Error.None || v.version !== 4) return;
    const ihl = v.headerLength;
    // Never an ICMP error about an ICMP error, nor about a non-first fragment (RFC 1122 3.2.2).
    if (v.fragmentOffset !== 0) return;
    if (v.protocol === PROTO_ICMP && orig.length > ihl) {
      const t = orig[ihl];
      if (t === 3 || t === 4 || t === 5 || t === 11 || t === 12) return;
    }
    const quote = Math.min(orig.length, ihl + 8);
    const pkt = Buffer.allocUnsafe(IPV4_MIN_HEADER + ICMP_HEADER_LEN + quote);
    orig.copy(pkt, IPV4_MIN_HEADER + ICMP_HEADER_LEN, 0, quote);
    const icmp = this.unreachableIcmp;
    icmp.type = ICMP_DEST_UNREACH;
    icmp.code = UNREACH_HOST;
    icmp.nextHopMtu = 0;
    icmp.bodyLength = quote;
    emitIcmp(pkt, IPV4_MIN_HEADER, icmp);
    const self = v.src;
    emitIpv4Header(pkt, 0, {
      src: self,
      dst: self,
      protocol: PROTO_ICMP,
      ttl: 64,
      tos: 0xc0,
      ident: 0,
      dontFragment: false,
      moreFragments: false,
      fragmentOffset: 0,
      headerLength: 20,
      totalLength: pkt.length,
    });
    this.counters.NeighUnreachReported++;
    this.upLater.push(pkt);
    this.upLaterMeta.push(null);
    this.queueUp();
  }

  /**
   * To one of our own addresses: back up, as Linux's loopback does (no frame, no ARP for
   * ourselves). Handed up after the current work, like the unreachables; the packet keeps
   * its offload meta (a partial checksum is then trusted, as the kernel's would be).
   */
  private loopback(pkt: Buffer, meta: OffloadMeta | null): void {
    this.counters.EthLoopback++;
    this.upLater.push(pkt);
    this.upLaterMeta.push(meta);
    this.queueUp();
  }

  private queueUp(): void {
    if (this.upLaterQueued) return;
    this.upLaterQueued = true;
    // Handed up after the current work: never inside a send() the stack is in the middle of.
    this.scheduler.soon(() => this.deliverLater());
  }

  private deliverLater(): void {
    this.upLaterQueued = false;
    const pkts = this.upLater.splice(0, this.upLater.length);
    const metas = this.upLaterMeta.splice(0, this.upLaterMeta.length);
    if (this.closed || pkts.length === 0 || this.onReceive === null) return;
    this.onReceive(pkts, pkts.length, metas.some((m) => m !== null) ? metas : null);
  }

  flush(): void {
    this.lower.flush();
  }

  // ------------------------------------------------------------------ time

  /** After a burst, a timer run or a configuration call: write what was queued, re-arm the wake-up. */
  private afterWork(): void {
    this.lower.flush();
    this.rearm();
  }

  private rearm(): void {
    if (this.closed) return;
    const next = Math.min(this.timers.next(), this.neighbours.nextDeadline());
    if (next === this.timerAt) return;
    if (this.timerHandle !== null) this.scheduler.cancel(this.timerHandle);
    this.timerHandle = null;
    this.timerAt = next;
    if (next !== Infinity) this.timerHandle = this.scheduler.at(next, () => this.onTimer());
  }

  private onTimer(): void {
    this.timerHandle = null;
    this.timerAt = Infinity;
    if (this.closed) return;
    const now = this.scheduler.now();
    this.timers.run(now);
    this.neighbours.run(now);
    this.afterWork();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timerHandle !== null) this.scheduler.cancel(this.timerHandle);
    this.timerHandle = null;
    this.lower.onReceive = null;
    this.lower.close();
  }

  stats(): Record<string, number> {
    return { ...this.lower.stats(), ...this.counters };
  }

  /** What `faultstack stats` shows under `link`, and `faultstack neigh` around its table. */
  describe(now: number) {
    return {
      type: 'ethernet',
      mac: formatMac(this.mac),
      sourceMac: formatMac(this.srcMac),
      addresses: [...this.own.values()].map((a) => ({
        address: formatIpv4(a.addr),
        arpMac: formatMac(a.arpMac),
        ...(a.solicitFromPrimary ? { solicitFromPrimary: true } : {}),
      })),
      proxyArp: this.proxy.map((p) => `${formatIpv4(p.net)}/${p.prefix}`),
      promiscuous: this.promiscuous,
      unicastMacs: [...this.unicastMacs].map(formatMac),
      multicastMacs: [...this.mcastMacs.keys()].map(formatMac),
      groups: this.igmp.rows(now),
      etherTypes: [...this.etherHandlers.keys()].map((t) => `0x${t.toString(16).padStart(4, '0')}`),
      ipv4Filters: [...this.ipv4Filters.keys()].map(formatIpv4),
      reachableTimeMs: this.neighbours.currentReachableTime,
      params: this.neighbours.params,
      counters: { ...this.counters },
      neighbourCounters: { ...this.neighbours.counters },
    };
  }
}

const EMPTY = Buffer.alloc(0);
