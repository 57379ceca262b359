/**
 * One host of a Network Load Balancing cluster, on an Ethernet interface.
 *
 * Every host of the cluster receives every frame sent to the cluster (the mode's MAC
 * rules make the segment flood them) and keeps only the packets whose client maps to a
 * bucket it owns; nothing is said between hosts about single packets. What the host does:
 *
 *   the seam (stack/iface/ethernet.ts): the cluster MAC accepted, the cluster address
 *     answered in ARP with the cluster MAC, the source MAC masked in unicast mode, the
 *     IGMP group joined in IGMP mode; an IPv4 filter on the cluster address (this file's
 *     `filter`) before IP input; heartbeats (EtherType 0x886F) sent and received;
 *   filter: port rule -> bucket of the client (hash.ts, by the rule's affinity) -> the
 *     bucket's owner in the current map (buckets.ts) -> pass or drop; connection
 *     descriptors (descriptors.ts) keep a host's TCP connections on it after a
 *     convergence; IPsec (IKE on UDP 500/4500 and ESP) is balanced by the client's
 *     outer address, with an IPsec descriptor per tunnel, keyed by the IKE peer identity;
 *   heartbeats every AliveMsgPeriod; a host not heard for AliveMsgTolerance periods is
 *     dropped, a new one joins, and the cluster converges (below);
 *   control: query / display / params / drainstop / stop / start, counters and events.
 *
 * Convergence (ours: Windows' protocol is not public). Every host computes the same
 * proposal from the same inputs (the hosts it sees, their weights or handling
 * priorities, the map the cluster last agreed on) and publishes its part of it in its
 * heartbeats' new maps, with the set of hosts it sees in the reserved word. When every
 * host it sees publishes the same view and new maps that are exactly its proposal, a
 * host sets its ready maps; when every host shows ready, it switches its current maps
 * to the proposal. Hosts keep serving with the current maps meanwhile. A host whose
 * unique host code (a hash of its port rules, bucket count and hash seed) differs stops
 * the cluster from converging, as Windows does for conflicting port rules.
 *
 * Time is passed in: the filter gets the burst's time, the timers run from the stack's
 * timer queue. Nothing here reads a clock.
 */
import type { MacAddr } from '../wire/ethernet';
import { ETHERTYPE_MS_NLB, formatMac } from '../wire/ethernet';
import { formatIpv4 } from '../wire/addr';
import { PROTO_ICMP, PROTO_TCP, PROTO_UDP } from '../wire/ipv4';
import { readU16, readU32 } from '../wire/bytes';
import { IKE_PORT, NAT_T_PORT, PROTO_ESP } from '../wire/esp';
import {
  NLB_MEMBERSHIP_LEN,
  NLB_SIGNATURE_EXTENDED,
  NLB_SIGNATURE_MEMBERSHIP,
  NLB_VERSION,
  NlbConvergenceState,
  NlbError,
  emitExtended,
  emitMembership,
  newExtendedRepr,
  newMembershipRepr,
  nlbSignature,
  parseExtended,
  parseMembership,
  tunnelsPerFrame,
  NLB_STICKY_ENTRY_LEN,
  NLB_TUNNEL_ENTRY_LEN,
  NLB_MAX_BUCKETS,
  type NlbRuleSlot,
  type NlbStickyEntry,
  type NlbTunnelEntry,
} from '../wire/nlb';
import { Timer, type TimerQueue } from '../timers';
import { clusterMac, heartbeatMac, igmpGroup, maskedSourceMac, describeRule, type NlbConfig, type NlbParams, type PortRule } from './config';
import { AffinityCode, affinityCode, affinityKey, bucketOf, fmix32, identityHash } from './hash';
import { bitsOf, computeMap, countOf, formatBuckets, singleOwnerMap, type BucketMap, type Candidate } from './buckets';
import { DescriptorTable, type TcpDescriptor } from './descriptors';
import type { IkeSaView, IpsecEvent } from '../ipsec/ipsec';
import type { IkeSa } from '../ipsec/ike/ike-sa';

// ------------------------------------------------------------------ what the host needs around it

/** The part of the Ethernet interface NLB uses (stack/iface/ethernet.ts, "the seam"). */
export interface NlbLink {
  readonly mac: MacAddr;
  readonly mtu: number;
  sourceMac: MacAddr;
  addUnicastMac(mac: MacAddr): void;
  removeUnicastMac(mac: MacAddr): boolean;
  addMulticastMac(mac: MacAddr): void;
  removeMulticastMac(mac: MacAddr): boolean;
  joinGroup(group: number): boolean;
  leaveGroup(group: number): boolean;
  addAddress(addr: number, opts?: { arpMac?: MacAddr; announce?: boolean; solicitFromPrimary?: boolean }): void;
  removeAddress(addr: number): boolean;
  onEtherType(etherType: number, handler: (frame: Buffer, src: MacAddr, dst: MacAddr, now: number) => void): void;
  offEtherType(etherType: number): boolean;
  sendFrame(header: { dst: MacAddr; etherType: number; src?: MacAddr }, payload: Buffer): void;
  setIpv4Filter(addr: number, filter: ((packet: Buffer, now: number) => boolean) | null): void;
}

/** The part of the stack NLB uses: its timers, its time, its TCP table (to free descriptors of connections that ended). */
export interface NlbStack {
  readonly timers: TimerQueue;
  clock(): number;
  flushSoon(): void;
  readonly tcp: {
    readonly table: { lookup(localAddr: number, localPort: number, remoteAddr: number, remotePort: number): unknown };
    readonly listeners: ReadonlyMap<number, { findHalfOpen(localAddr: number, remoteAddr: number, remotePort: number): unknown }>;
  };
}

/** The part of the IPsec module NLB uses (stack/ipsec/ipsec.ts): its events and its IKE SAs. */
export interface NlbIpsec {
  subscribe(fn: (e: IpsecEvent) => void): () => void;
  readonly ike: { all(): IkeSa[]; deleteIke(sa: IkeSa, reason: string, now: number): void };
}

// ------------------------------------------------------------------ events, hooks, counters

export type NlbEvent =
  | { kind: 'convergence-started'; reason: string; hosts: number[] }
  | { kind: 'convergence-finished'; ms: number; hosts: number[]; buckets: number; defaultHost: number }
  | { kind: 'host-joined'; host: number; dedicatedIp: string }
  | { kind: 'host-lost'; host: number; dedicatedIp: string; reason: string }
  | { kind: 'not-owner-dropped'; client: string; rule: number; bucket: number; owner: number; what: string }
  | { kind: 'descriptor-block-allocated'; blocks: number; perAlloc: number; capacity: number }
  | { kind: 'descriptors-exhausted'; client: string; inUse: number; capacity: number }
  | { kind: 'tunnel-opened'; identity: string; client: string; host: number; local: boolean }
  | { kind: 'tunnel-state-dropped'; identity: string; client: string; ikeSa: number; reason: string }
  | { kind: 'state-changed'; from: string; to: string }
  | { kind: 'rule-conflict'; host: number; dedicatedIp: string; theirs: number; ours: number }
  | { kind: 'duplicate-priority'; host: number; dedicatedIp: string };

/** A tunnel (IKE SA) opened for an identity, on this host or on another. */
export interface TunnelOpened {
  identityHash: Buffer;
  /** The identity's text, when this host knows it (its own tunnels). */
  identity: string | null;
  /** The client's outer address. */
  clientAddr: number;
  /** The host it opened on (our priority for a local one). */
  host: number;
  /** When it opened, in this host's time (a remote one: now less the age its heartbeat gave). */
  openedAt: number;
  local: boolean;
  /** The bucket of the client's outer address (IPsec is balanced by address). */
  bucket: number;
  /** Does this host own that bucket? */
  ownsBucket: boolean;
}

/** Where a fault may change what the host does (stack/faults/kb972183 implements it). */
export interface NlbHooks {
  /**
   * A tunnel opened for an identity. Default: the correct behaviour (the hotfix's): a
   * host that does not own the bucket of the new tunnel's client address destroys the
   * state of its own older tunnels of that identity, and the owner keeps only the newest
   * one, so that a client has one active tunnel on one host.
   */
  tunnelOpened(t: TunnelOpened, now: number): void;
}

export function newNlbCounters() {
  return {
    NlbPacketsIn: 0,
    NlbAccepted: 0,
    NlbAcceptedByDescriptor: 0,
    NlbAcceptedBySticky: 0,
    NlbAcceptedIcmpAllHosts: 0,
    NlbDroppedNotOwner: 0,
    NlbDroppedDirtyBucket: 0,
    NlbDroppedStickyElsewhere: 0,
    NlbDroppedByRule: 0,
    NlbDroppedStopped: 0,
    NlbDroppedNotDefaultHost: 0,
    NlbDroppedConverging: 0,
    NlbDescriptorsAllocated: 0,
    NlbDescriptorsFreed: 0,
    NlbDescriptorsExhausted: 0,
    NlbDescriptorBlocks: 0,
    NlbIpsecDescriptors: 0,
    NlbTunnelsOpened: 0,
    NlbTunnelsHeardOpened: 0,
    NlbTunnelStateDropped: 0,
    NlbHeartbeatsOut: 0,
    NlbHeartbeatsIn: 0,
    NlbExtendedHeartbeatsOut: 0,
    NlbExtendedHeartbeatsIn: 0,
    NlbHeartbeatErrors: 0,
    NlbHeartbeatsForeign: 0,
    NlbConvergences: 0,
    NlbHostsJoined: 0,
    NlbHostsLost: 0,
    NlbStickyClients: 0,
    NlbTunnelListTruncated: 0,
  };
}
export type NlbCounters = ReturnType<typeof newNlbCounters>;

// ------------------------------------------------------------------ state

export type NlbRole = 'active' | 'draining' | 'stopped';

interface Member {
  id: number;
  incarnation: number;
  dedicatedIp: number;
  hostName: string | null;
  lastHeard: number;
  state: number;
  view: number;
  hostCode: number;
  packetsHandled: number;
  rules: NlbRuleSlot[];
  /** IPsec descriptors the host announced, by part of its extended heartbeat. */
  tunnelParts: NlbTunnelEntry[][];
  stickyParts: NlbStickyEntry[][];
  /** Highest tunnel sequence number heard from it: a higher one is a new tunnel. */
  maxSeq: number;
  conflictReported: boolean;
}

/** An IPsec descriptor: one tunnel (IKE SA) this host holds. */
interface IpsecDescriptor {
  ikeSaId: number;
  identity: string;
  hash: Buffer;
  clientAddr: number;
  rule: number;
  bucket: number;
  openSeq: number;
  openedAt: number;
  /** The 48 high bits of the initiator's SPI: IKE packets find it by them. */
  spiKey: number;
  spiI: Buffer;
  /** Inbound ESP SPIs of its child SAs. */
  espSpis: Set<number>;
}

interface StickyRecord {
  rule: number;
  key: number;
  bucket: number;
  connections: number;
  /** When the timer runs out (Infinity while a connection is open). */
  expiresAt: number;
}

export interface NlbHostOptions {
  config: NlbConfig;
  params: () => NlbParams;
  link: NlbLink;
  stack: NlbStack;
  ipsec?: NlbIpsec | null;
  /** The incarnation number (unique host id); tests pass a fixed one. */
  incarnation?: number;
  onEvent?: (e: NlbEvent) => void;
}

const NO_RULE = 255;
/** Extra heartbeats (state changes) are at least this far apart. */
const SOON_MIN_GAP_MS = 20;
/** Descriptors looked at per heartbeat for connections that ended. */
const RECONCILE_PER_TICK = 8192;
/** A new descriptor is not looked at before this age (its connection may still be forming). */
const RECONCILE_MIN_AGE_MS = 2000;
/** not-owner-dropped events: at most this many per heartbeat period. */
const DROP_EVENTS_PER_PERIOD = 4;
/** A half-open IKE SA is remembered this long (the IPsec module's half_open_timeout default, 30 s). */
const HALF_OPEN_IKE_MS = 30_000;
const HALF_OPEN_IKE_MAX = 65_536;

function ipHeaderLength(pkt: Buffer): number {
  return (pkt[0]! & 15) * 4;
}

export class NlbHost {
  readonly counters: NlbCounters = newNlbCounters();
  readonly config: NlbConfig;
  readonly id: number;
  readonly incarnation: number;
  readonly clusterMac: MacAddr;
  readonly hooks: NlbHooks;
  role: NlbRole;
  converged = false;
  private readonly params: () => NlbParams;
  private readonly link: NlbLink;
  private readonly stack: NlbStack;
  private readonly ipsec: NlbIpsec | null;
  private readonly onEvent: (e: NlbEvent) => void;
  private readonly rules: PortRule[];
  private readonly ruleAff: AffinityCode[];
  private readonly ruleCodes: number[];
  private readonly hostCode: number;
  /** Port -> rule index, per protocol (NO_RULE: the default host's). */
  private readonly tcpRule = new Uint8Array(65536).fill(NO_RULE);
  private readonly udpRule = new Uint8Array(65536).fill(NO_RULE);
  /** The rule IPsec (IKE on UDP 500, and ESP with it) falls under. */
  private readonly ipsecRule: number;
  /** Current owner per bucket, per rule; null before the first convergence. */
  private current: BucketMap[] | null = null;
  private proposal: BucketMap[] | null = null;
  private proposalKey = '';
  private ready = false;
  private convergingSince = 0;
  /** Per rule, per bucket: another live host holds something there (its idle bit is clear). */
  private readonly dirty: Uint8Array[];
  readonly members = new Map<number, Member>();
  readonly descriptors: DescriptorTable;
  private readonly tunnels = new Map<number, IpsecDescriptor>();
  private readonly tunnelBySpiKey = new Map<number, IpsecDescriptor>();
  private readonly tunnelByEsp = new Map<number, IpsecDescriptor>();
  /** IKE SAs being set up here (IKE_SA_INIT passed, IKE_AUTH to come), by the initiator SPI's key. */
  private readonly halfOpenIke = new Map<number, { expiresAt: number }>();
  private readonly sticky = new Map<number, StickyRecord>();
  /** Clients other hosts keep (extended affinity), per rule: key -> host. */
  private stickyElsewhere = new Map<number, number>();
  private localSeq = 0;
  private readonly heartbeatTimer: Timer;
  private readonly soonTimer: Timer;
  private lastSent = -Infinity;
  private readonly startedAt: number;
  private dropEvents = 0;
  private reconcileCursor: TcpDescriptor[] = [];
  private unsubscribeIpsec: (() => void) | null = null;
  private readonly hbBuf = Buffer.alloc(NLB_MEMBERSHIP_LEN);
  private readonly hbRepr = newMembershipRepr();
  private readonly hbIn = newMembershipRepr();
  private readonly extIn = newExtendedRepr();
  private closed = false;
  /** Names of identities whose hashes this host has seen (for display). */
  private readonly names = new Map<string, string>();

  constructor(o: NlbHostOptions) {
    const c = o.config;
    this.config = c;
    this.id = c.priority;
    this.params = o.params;
    this.link = o.link;
    this.stack = o.stack;
    this.ipsec = o.ipsec ?? null;
    this.onEvent = o.onEvent ?? (() => {});
    this.incarnation = (o.incarnation ?? 1) >>> 0;
    this.rules = c.rules;
    this.ruleAff = c.rules.map((r) => affinityCode(r.affinity));
    this.ruleCodes = c.rules.map(
      (r) =>
        fmix32(
          ((r.start << 16) | r.end) ^
            fmix32(
              (['tcp', 'udp', 'both'].indexOf(r.protocol) << 8) |
                (['multiple', 'single', 'disabled'].indexOf(r.mode) << 4) |
                ['none', 'single', 'network'].indexOf(r.affinity),
            ),
        ) >>> 0,
    );
    this.hostCode = this.ruleCodes.reduce((h, x) => fmix32((h ^ x) >>> 0), fmix32((c.buckets << 16) ^ c.hashSeed)) >>> 0;
    c.rules.forEach((r, i) => {
      for (let p = r.start; p <= r.end; p++) {
        if (r.protocol !== 'udp') this.tcpRule[p] = i;
        if (r.protocol !== 'tcp') this.udpRule[p] = i;
      }
    });
    this.ipsecRule = this.udpRule[IKE_PORT]!;
    this.dirty = c.rules.map(() => new Uint8Array(NLB_MAX_BUCKETS));
    this.descriptors = new DescriptorTable(
      () => ({ perAlloc: this.params().DescriptorsPerAlloc, maxAllocs: this.params().MaxDescriptorAllocs }),
      (blocks, perAlloc, capacity) => {
        this.counters.NlbDescriptorBlocks = blocks;
        this.onEvent({ kind: 'descriptor-block-allocated', blocks, perAlloc, capacity });
      },
    );
    this.clusterMac = clusterMac(c.mode, c.clusterIp);
    this.hooks = { tunnelOpened: (t, now) => this.defaultTunnelOpened(t, now) };
    this.role = c.initialState === 'stopped' ? 'stopped' : 'active';
    this.heartbeatTimer = new Timer((now) => this.onHeartbeatTimer(now));
    this.soonTimer = new Timer((now) => this.sendHeartbeats(now));
    this.startedAt = this.stack.clock();
    this.attachLink();
    if (this.ipsec) this.unsubscribeIpsec = this.ipsec.subscribe((e) => this.onIpsecEvent(e));
    if (this.role === 'active') this.beginConvergence('host started', this.startedAt);
    this.stack.timers.arm(this.heartbeatTimer, this.startedAt);
    this.stack.flushSoon();
  }

  // ================================================================== the seam

  private attachLink(): void {
    const c = this.config,
      l = this.link;
    if (c.mode === 'unicast') {
      // The adapter's MAC becomes the cluster MAC: the dedicated address answers with it too.
      l.addUnicastMac(this.clusterMac);
      l.addAddress(c.dedicatedIp, { arpMac: this.clusterMac, announce: false });
      this.applySourceMac();
    } else if (c.mode === 'multicast') {
      l.addMulticastMac(this.clusterMac);
    } else {
      l.joinGroup(igmpGroup(c.clusterIp));
    }
    // In the multicast modes the cluster MAC is a group MAC: our own resolutions ask from the dedicated address
    // (a group sender MAC is refused by RFC 1812 routers; our own MAC for the cluster address would draw its traffic to us).
    l.addAddress(c.clusterIp, { arpMac: this.clusterMac, solicitFromPrimary: c.mode !== 'unicast' });
    l.setIpv4Filter(c.clusterIp, (pkt, now) => this.filter(pkt, now));
    l.onEtherType(ETHERTYPE_MS_NLB, (frame, src, _dst, now) => this.onHeartbeatFrame(frame, src, now));
  }

  private applySourceMac(): void {
    if (this.config.mode !== 'unicast') return;
    this.link.sourceMac = this.params().MaskSourceMAC !== 0 ? maskedSourceMac(this.config.clusterIp, this.id) : this.clusterMac;
  }

  close(): void {
    if (this.closed) return;
    const now = this.stack.clock();
    if (this.role !== 'stopped') this.sendHeartbeatNow(now, NlbConvergenceState.Stopped);
    this.closed = true;
    this.stack.timers.disarm(this.heartbeatTimer);
    this.stack.timers.disarm(this.soonTimer);
    this.unsubscribeIpsec?.();
    const c = this.config,
      l = this.link;
    l.setIpv4Filter(c.clusterIp, null);
    l.offEtherType(ETHERTYPE_MS_NLB);
    l.removeAddress(c.clusterIp);
    if (c.mode === 'unicast') {
      l.removeUnicastMac(this.clusterMac);
      l.sourceMac = l.mac;
      l.addAddress(c.dedicatedIp, { arpMac: l.mac, announce: false });
    } else if (c.mode === 'multicast') l.removeMulticastMac(this.clusterMac);
    else l.leaveGroup(igmpGroup(c.clusterIp));
  }

  // ================================================================== the filter

  /**
   * Every IPv4 packet to the cluster address, before IP input: true passes it up.
   * The hot path: no allocation, a table lookup for the rule, a hash for the bucket.
   */
  filter(pkt: Buffer, now: number): boolean {
    const c = this.counters;
    c.NlbPacketsIn++;
    if (this.role === 'stopped') {
      c.NlbDroppedStopped++;
      return false;
    }
    if (pkt.length < 20) return false;
    const ihl = ipHeaderLength(pkt);
    const proto = pkt[9]!;
    const src = readU32(pkt, 12);
    const frag = readU16(pkt, 6);
    const later = (frag & 0x1fff) !== 0;
    const fragmented = later || (frag & 0x2000) !== 0;
    if (proto === PROTO_TCP || proto === PROTO_UDP) {
      if (later || pkt.length < ihl + 4) return this.byAddress(proto === PROTO_TCP ? this.tcpRule[0]! : this.udpRule[0]!, src, 'a later fragment', now);
      const sport = readU16(pkt, ihl),
        dport = readU16(pkt, ihl + 2);
      if (proto === PROTO_UDP && (dport === NAT_T_PORT || dport === IKE_PORT)) return this.ipsecFilter(pkt, ihl, src, dport, now);
      const r = proto === PROTO_TCP ? this.tcpRule[dport]! : this.udpRule[dport]!;
      if (r === NO_RULE) return this.defaultHostOnly();
      const rule = this.rules[r]!;
      if (rule.mode === 'disabled') {
        c.NlbDroppedByRule++;
        return false;
      }
      const aff = fragmented && this.ruleAff[r] === AffinityCode.None ? AffinityCode.Single : this.ruleAff[r]!;
      const b = bucketOf(aff, src, sport, this.config.buckets, this.config.hashSeed);
      if (proto === PROTO_UDP) return this.ownerPasses(r, b, src, 'UDP', now, false);
      return this.tcpFilter(pkt, ihl, src, sport, dport, r, aff, b, now);
    }
    if (proto === PROTO_ESP) return this.ipsecFilter(pkt, ihl, src, -1, now);
    if (proto === PROTO_ICMP) {
      // FilterICMP 0 (Windows' default): every host takes ICMP to the cluster address (a ping gets one answer per host).
      if (this.params().FilterICMP === 0) {
        c.NlbAcceptedIcmpAllHosts++;
        c.NlbAccepted++;
        return true;
      }
      return this.byAddress(this.rules.length > 0 ? 0 : NO_RULE, src, 'ICMP', now);
    }
    return this.defaultHostOnly();
  }

  private defaultHostOnly(): boolean {
    if (this.current !== null && this.role === 'active' && this.defaultHost() === this.id) {
      this.counters.NlbAccepted++;
      return true;
    }
    this.counters.NlbDroppedNotDefaultHost++;
    return false;
  }

  /** By client address alone (fragments, ICMP with FilterICMP=1) in rule r's map. */
  private byAddress(r: number, src: number, what: string, now: number): boolean {
    if (r === NO_RULE) return this.defaultHostOnly();
    if (this.rules[r]!.mode === 'disabled') {
      this.counters.NlbDroppedByRule++;
      return false;
    }
    return this.ownerPasses(r, bucketOf(AffinityCode.Single, src, 0, this.config.buckets, this.config.hashSeed), src, what, now, false);
  }

  /** Does this host own bucket b of rule r (and, when `clean`, may it take non-new traffic there)? */
  private ownerPasses(r: number, b: number, src: number, what: string, now: number, clean: boolean): boolean {
    const cur = this.current;
    if (cur === null) {
      this.counters.NlbDroppedConverging++;
      return false;
    }
    const owner = cur[r]![b]!;
    if (owner !== this.id) {
      this.notOwner(src, r, b, owner, what, now);
      return false;
    }
    if (clean && this.dirty[r]![b] !== 0) {
      this.counters.NlbDroppedDirtyBucket++;
      return false;
    }
    this.counters.NlbAccepted++;
    return true;
  }

  private notOwner(src: number, r: number, b: number, owner: number, what: string, _now: number): void {
    this.counters.NlbDroppedNotOwner++;
    if (this.dropEvents < DROP_EVENTS_PER_PERIOD) {
      this.dropEvents++;
      this.onEvent({ kind: 'not-owner-dropped', client: formatIpv4(src), rule: r, bucket: b, owner, what });
    }
  }

  private tcpFilter(pkt: Buffer, ihl: number, src: number, sport: number, dport: number, r: number, aff: AffinityCode, b: number, now: number): boolean {
    const c = this.counters;
    const flags = pkt.length >= ihl + 14 ? pkt[ihl + 13]! : 0;
    const d = this.descriptors.find(src, sport, dport);
    if (d !== undefined) {
      c.NlbAcceptedByDescriptor++;
      c.NlbAccepted++;
      if ((flags & 0x04) !== 0)
        this.freeDescriptor(d, now); // RST: the connection is gone
      else if ((flags & 0x01) !== 0) d.finSeen = true;
      return true;
    }
    const syn = (flags & 0x12) === 0x02;
    const cur = this.current;
    if (cur === null) {
      c.NlbDroppedConverging++;
      return false;
    }
    const owner = cur[r]![b]!;
    const key = affinityKey(aff === AffinityCode.Network ? AffinityCode.Network : AffinityCode.Single, src);
    const rule = this.rules[r]!;
    if (syn) {
      if (owner === this.id) {
        if (rule.timeoutMs > 0 && this.dirty[r]![b] !== 0 && this.stickyElsewhere.has(r * 4294967296 + key)) {
          c.NlbDroppedStickyElsewhere++;
          return false;
        }
        return this.newConnection(src, sport, dport, r, b, key, now);
      }
      if (rule.timeoutMs > 0 && this.role === 'active') {
        const s = this.sticky.get(r * 4294967296 + key);
        if (s !== undefined && (s.connections > 0 || s.expiresAt > now)) {
          c.NlbAcceptedBySticky++;
          return this.newConnection(src, sport, dport, r, b, key, now);
        }
      }
      this.notOwner(src, r, b, owner, 'TCP SYN', now);
      return false;
    }
    return this.ownerPasses(r, b, src, 'TCP', now, true);
  }

  private newConnection(src: number, sport: number, dport: number, r: number, b: number, key: number, now: number): boolean {
    const c = this.counters;
    const d = this.descriptors.alloc(src, sport, dport, r, b, key, now);
    if (d === null) {
      c.NlbDescriptorsExhausted++;
      if (c.NlbDescriptorsExhausted === 1 || (c.NlbDescriptorsExhausted & 1023) === 0) {
        this.onEvent({
          kind: 'descriptors-exhausted',
          client: `${formatIpv4(src)}:${sport}`,
          inUse: this.descriptors.inUse,
          capacity: this.descriptors.capacity,
        });
      }
      return false;
    }
    c.NlbDescriptorsAllocated++;
    c.NlbAccepted++;
    if (this.rules[r]!.timeoutMs > 0) this.stickyOpen(r, key, b);
    return true;
  }

  private freeDescriptor(d: TcpDescriptor, now: number): void {
    const r = d.rule,
      key = d.key;
    this.descriptors.release(d);
    this.counters.NlbDescriptorsFreed++;
    if (this.rules[r]!.timeoutMs > 0) this.stickyClose(r, key, now);
    if (this.role === 'draining') this.checkDrained(now);
  }

  // ------------------------------------------------------------------ extended affinity

  private stickyOpen(r: number, key: number, b: number): void {
    const k = r * 4294967296 + key;
    let s = this.sticky.get(k);
    if (s === undefined) {
      s = { rule: r, key, bucket: b, connections: 0, expiresAt: Infinity };
      this.sticky.set(k, s);
      this.descriptors.held[r * NLB_MAX_BUCKETS + b]++;
      this.counters.NlbStickyClients = this.sticky.size;
    }
    s.connections++;
    s.expiresAt = Infinity;
  }

  /** The client's last connection of the rule closed: the timer starts (and restarts on its next connection). */
  private stickyClose(r: number, key: number, now: number): void {
    const s = this.sticky.get(r * 4294967296 + key);
    if (s === undefined) return;
    if (--s.connections <= 0) {
      s.connections = 0;
      s.expiresAt = now + this.rules[r]!.timeoutMs;
    }
  }

  private expireSticky(now: number): void {
    for (const [k, s] of this.sticky) {
      if (s.connections === 0 && s.expiresAt <= now) {
        this.sticky.delete(k);
        this.descriptors.held[s.rule * NLB_MAX_BUCKETS + s.bucket]--;
      }
    }
    this.counters.NlbStickyClients = this.sticky.size;
  }

  // ------------------------------------------------------------------ IPsec

  /**
   * IKE (UDP 500/4500) and ESP, balanced at the IP level by the client's outer address:
   * NLB cannot see the connections inside a tunnel. A packet of a tunnel this host holds
   * (its IKE SPIs, its child SAs' SPIs) passes on the IPsec descriptor; a new IKE SA
   * (IKE_SA_INIT, responder SPI zero) goes to the owner of the address's bucket.
   */
  private ipsecFilter(pkt: Buffer, ihl: number, src: number, dport: number, now: number): boolean {
    const c = this.counters;
    const r = this.ipsecRule;
    if (r !== NO_RULE && this.rules[r]!.mode === 'disabled') {
      c.NlbDroppedByRule++;
      return false;
    }
    let ikeOff = -1;
    if (dport === -1) {
      // ESP: the SPI is the first word.
      if (pkt.length >= ihl + 4 && this.tunnelByEsp.has(readU32(pkt, ihl))) {
        c.NlbAcceptedByDescriptor++;
        c.NlbAccepted++;
        return true;
      }
    } else {
      const u = ihl + 8;
      if (dport === NAT_T_PORT) {
        if (pkt.length >= u + 4 && readU32(pkt, u) === 0)
          ikeOff = u + 4; // the non-ESP marker: IKE follows
        else if (pkt.length >= u + 4 && this.tunnelByEsp.has(readU32(pkt, u))) {
          c.NlbAcceptedByDescriptor++;
          c.NlbAccepted++;
          return true;
        }
      } else ikeOff = u;
    }
    let newSa = false;
    if (ikeOff >= 0 && pkt.length >= ikeOff + 16) {
      const k = readU32(pkt, ikeOff) * 65536 + readU16(pkt, ikeOff + 4);
      const t = this.tunnelBySpiKey.get(k);
      if (t !== undefined && pkt.compare(t.spiI, 0, 8, ikeOff, ikeOff + 8) === 0) {
        c.NlbAcceptedByDescriptor++;
        c.NlbAccepted++;
        return true;
      }
      const h = this.halfOpenIke.get(k);
      if (h !== undefined && h.expiresAt > now) {
        c.NlbAcceptedByDescriptor++;
        c.NlbAccepted++;
        return true;
      }
      newSa = readU32(pkt, ikeOff + 8) === 0 && readU32(pkt, ikeOff + 12) === 0;
      if (newSa) {
        if (
          r === NO_RULE
            ? !this.defaultHostOnly()
            : !this.ownerPasses(r, bucketOf(AffinityCode.Single, src, 0, this.config.buckets, this.config.hashSeed), src, 'IKE_SA_INIT', now, false)
        )
          return false;
        // The IKE_AUTH that follows has our SPI but no descriptor yet: remember the initiator's SPI until the SA is up.
        if (this.halfOpenIke.size < HALF_OPEN_IKE_MAX) this.halfOpenIke.set(k, { expiresAt: now + HALF_OPEN_IKE_MS });
        return true;
      }
    }
    if (r === NO_RULE) return this.defaultHostOnly();
    const b = bucketOf(AffinityCode.Single, src, 0, this.config.buckets, this.config.hashSeed);
    return this.ownerPasses(r, b, src, dport === -1 ? 'ESP' : 'IKE', now, true);
  }

  private onIpsecEvent(e: IpsecEvent): void {
    if (this.closed) return;
    const now = this.stack.clock();
    switch (e.kind) {
      case 'ike-sa-up':
        this.tunnelUp(e.ike, now);
        break;
      case 'ike-sa-rekeyed': {
        const t = this.tunnels.get(e.old.id);
        if (!t) {
          this.tunnelUp(e.ike, now);
          break;
        }
        // A rekey keeps the client and its identity: the descriptor carries over (RFC 7296 2.18).
        this.tunnels.delete(e.old.id);
        this.tunnelBySpiKey.delete(t.spiKey);
        t.ikeSaId = e.ike.id;
        t.spiI = Buffer.from(e.ike.spiI);
        t.spiKey = spiKeyOf(t.spiI);
        this.tunnels.set(t.ikeSaId, t);
        this.tunnelBySpiKey.set(t.spiKey, t);
        for (const ch of e.ike.children) {
          t.espSpis.add(ch.inbound.spi);
          this.tunnelByEsp.set(ch.inbound.spi, t);
        }
        break;
      }
      case 'ike-sa-down':
        this.tunnelDown(e.ike.id, now);
        break;
      case 'child-sa-up':
      case 'child-sa-rekeyed': {
        const t = this.tunnels.get(e.ike.id);
        if (t) {
          t.espSpis.add(e.child.inbound.spi);
          this.tunnelByEsp.set(e.child.inbound.spi, t);
        }
        break;
      }
      case 'child-sa-down': {
        const t = this.tunnelByEsp.get(e.child.inbound.spi);
        if (t) {
          t.espSpis.delete(e.child.inbound.spi);
          this.tunnelByEsp.delete(e.child.inbound.spi);
        }
        break;
      }
      default:
        break;
    }
  }

  private tunnelUp(ike: IkeSaView, now: number): void {
    if (!ike.identity || this.tunnels.has(ike.id)) return;
    const identity = ike.identity.value;
    const hash = identityHash(identity);
    this.names.set(hash.toString('hex'), identity);
    const r = this.ipsecRule === NO_RULE ? 0 : this.ipsecRule;
    const bucket = bucketOf(AffinityCode.Single, ike.remote.addr, 0, this.config.buckets, this.config.hashSeed);
    const t: IpsecDescriptor = {
      ikeSaId: ike.id,
      identity,
      hash,
      clientAddr: ike.remote.addr,
      rule: r,
      bucket,
      openSeq: ++this.localSeq,
      openedAt: now,
      spiI: Buffer.from(ike.spiI),
      spiKey: spiKeyOf(ike.spiI),
      espSpis: new Set(),
    };
    for (const ch of ike.children) {
      t.espSpis.add(ch.inbound.spi);
      this.tunnelByEsp.set(ch.inbound.spi, t);
    }
    this.tunnels.set(ike.id, t);
    this.tunnelBySpiKey.set(t.spiKey, t);
    this.halfOpenIke.delete(t.spiKey);
    this.descriptors.held[r * NLB_MAX_BUCKETS + bucket]++;
    this.counters.NlbTunnelsOpened++;
    this.counters.NlbIpsecDescriptors = this.tunnels.size;
    this.onEvent({ kind: 'tunnel-opened', identity, client: formatIpv4(ike.remote.addr), host: this.id, local: true });
    this.hooks.tunnelOpened(
      {
        identityHash: hash,
        identity,
        clientAddr: ike.remote.addr,
        host: this.id,
        openedAt: now,
        local: true,
        bucket,
        ownsBucket: this.ownsIpsecBucket(bucket),
      },
      now,
    );
    // The others learn of it from the next heartbeat: send it now rather than within a period.
    this.heartbeatSoon(now);
  }

  private tunnelDown(ikeSaId: number, now: number): void {
    const t = this.tunnels.get(ikeSaId);
    if (!t) return;
    this.tunnels.delete(ikeSaId);
    if (this.tunnelBySpiKey.get(t.spiKey) === t) this.tunnelBySpiKey.delete(t.spiKey);
    for (const s of t.espSpis) if (this.tunnelByEsp.get(s) === t) this.tunnelByEsp.delete(s);
    this.descriptors.held[t.rule * NLB_MAX_BUCKETS + t.bucket]--;
    this.counters.NlbIpsecDescriptors = this.tunnels.size;
    this.heartbeatSoon(now);
    if (this.role === 'draining') this.checkDrained(now);
  }

  /** Does this host own bucket b of the IPsec rule now? */
  ownsIpsecBucket(b: number): boolean {
    const r = this.ipsecRule;
    if (this.current === null) return false;
    if (r === NO_RULE) return this.defaultHost() === this.id;
    return this.current[r]![b] === this.id;
  }

  /** This host's tunnels of an identity (by its hash) that opened before `before` (default: all), oldest first. */
  localTunnels(hash: Buffer, before = Infinity): { ikeSaId: number; identity: string; clientAddr: number; openSeq: number; openedAt: number }[] {
    return [...this.tunnels.values()]
      .filter((t) => t.hash.equals(hash) && t.openedAt < before)
      .sort((a, b) => a.openSeq - b.openSeq)
      .map((t) => ({ ikeSaId: t.ikeSaId, identity: t.identity, clientAddr: t.clientAddr, openSeq: t.openSeq, openedAt: t.openedAt }));
  }

  /**
   * Destroys the state of one of this host's tunnels: its IKE SA and child SAs go (the
   * peer is told with an INFORMATIONAL Delete, which it may never get: it has moved).
   */
  dropTunnelState(ikeSaId: number, reason: string, now: number): boolean {
    const t = this.tunnels.get(ikeSaId);
    const sa = this.ipsec?.ike.all().find((s) => s.id === ikeSaId);
    if (!t || !sa || !this.ipsec) return false;
    this.counters.NlbTunnelStateDropped++;
    this.onEvent({ kind: 'tunnel-state-dropped', identity: t.identity, client: formatIpv4(t.clientAddr), ikeSa: ikeSaId, reason });
    this.ipsec.ike.deleteIke(sa, reason, now);
    // deleteIke removes the children at once and the IKE SA when the peer answers or gives up: the descriptor goes now.
    this.tunnelDown(ikeSaId, now);
    this.stack.flushSoon();
    return true;
  }

  /** The hook's default: the hotfix's behaviour (see NlbHooks.tunnelOpened). */
  defaultTunnelOpened(t: TunnelOpened, now: number): void {
    // Only tunnels older than the new one go: two hosts hearing of each other's tunnels at once keep the newer.
    const mine = this.localTunnels(t.identityHash, t.local ? Infinity : t.openedAt);
    if (t.local) {
      // One active tunnel per identity on this host: the new one replaces the older ones.
      for (const x of mine)
        if (x.openSeq !== this.localSeq)
          this.dropTunnelState(x.ikeSaId, `${x.identity} opened a new tunnel from ${formatIpv4(t.clientAddr)} on this host: one active tunnel per client`, now);
      return;
    }
    if (t.ownsBucket) return;
    for (const x of mine) {
      this.dropTunnelState(
        x.ikeSaId,
        `host ${t.host} opened a new tunnel for ${x.identity} from ${formatIpv4(t.clientAddr)} (bucket ${t.bucket}), ` +
          `a bucket this host does not own: DropStateIfNotBucketOwner`,
        now,
      );
    }
  }

  // ================================================================== heartbeats

  private period(): number {
    return this.params().AliveMsgPeriod;
  }

  private onHeartbeatTimer(now: number): void {
    if (this.closed) return;
    this.dropEvents = 0;
    this.expireMembers(now);
    this.expireSticky(now);
    for (const [k, h] of this.halfOpenIke) if (h.expiresAt <= now) this.halfOpenIke.delete(k);
    this.reconcile(now);
    if (this.role === 'stopped') {
      this.stack.timers.arm(this.heartbeatTimer, now + this.period());
      return;
    }
    this.checkConvergence(now);
    this.sendHeartbeats(now);
    this.stack.timers.arm(this.heartbeatTimer, now + this.period());
  }

  /** An extra heartbeat soon (a state change the others should hear before the next period). */
  private heartbeatSoon(now: number): void {
    if (this.closed || this.role === 'stopped') return;
    this.stack.timers.arm(this.soonTimer, Math.max(now, this.lastSent + SOON_MIN_GAP_MS));
    this.stack.flushSoon();
  }

  private stateWord(): number {
    if (this.role === 'stopped') return NlbConvergenceState.Stopped;
    if (this.role === 'draining') return NlbConvergenceState.Draining;
    return this.converged ? NlbConvergenceState.Converged : NlbConvergenceState.Converging;
  }

  private sendHeartbeats(now: number): void {
    if (this.closed || this.role === 'stopped') return;
    this.applySourceMac();
    this.sendHeartbeatNow(now, this.stateWord());
  }

  private sendHeartbeatNow(now: number, state: number): void {
    this.lastSent = now;
    const r = this.hbRepr;
    const c = this.config;
    r.uniqueHostId = this.incarnation;
    r.clusterIp = c.clusterIp;
    r.dedicatedIp = c.dedicatedIp;
    r.hostId = this.id;
    r.defaultHostId = this.defaultHost();
    r.convergenceState = state;
    r.uniqueHostCode = this.hostCode;
    r.packetsHandled = this.counters.NlbAccepted >>> 0;
    r.teaming = 0;
    r.view = this.viewBits();
    r.rules = this.rules.map((rule, i) => ({
      code: this.ruleCodes[i]!,
      currentMap: this.current ? bitsOf(this.current[i]!, this.id) : 0n,
      newMap: this.proposal ? bitsOf(this.proposal[i]!, this.id) : 0n,
      idleMap: this.descriptors.idleBits(i, c.buckets),
      readyMap: this.ready && this.proposal ? bitsOf(this.proposal[i]!, this.id) : 0n,
      // Single-host rules carry the handling priority in the weight slot (ours).
      loadWeight: rule.mode === 'single' ? rule.priority || this.id : this.candidateWeight(rule),
    }));
    emitMembership(this.hbBuf, 0, r);
    const dst = heartbeatMac(c.mode, c.clusterIp);
    this.link.sendFrame({ dst, etherType: ETHERTYPE_MS_NLB }, this.hbBuf);
    this.counters.NlbHeartbeatsOut++;
    if (state === NlbConvergenceState.Stopped) return;
    this.sendExtended(dst);
  }

  private candidateWeight(rule: PortRule): number {
    if (this.role !== 'active') return 0;
    return rule.weight === null ? 50 : rule.weight;
  }

  /** The extended heartbeats: our host name, our IPsec descriptors and our sticky clients outside our buckets. */
  private sendExtended(dst: MacAddr): void {
    const c = this.config;
    const maxLen = Math.min(this.link.mtu, 1500);
    const now = this.stack.clock();
    const tunnels: NlbTunnelEntry[] = [...this.tunnels.values()].map((t) => ({
      identityHash: t.hash,
      clientAddr: t.clientAddr,
      openSeq: t.openSeq,
      ageMs: now - t.openedAt,
    }));
    const sticky: NlbStickyEntry[] = [];
    if (this.current) {
      for (const s of this.sticky.values()) if (this.current[s.rule]![s.bucket] !== this.id) sticky.push({ key: s.key, rule: s.rule });
    }
    const per = tunnelsPerFrame(c.hostName, maxLen);
    const perSticky = Math.floor((per * NLB_TUNNEL_ENTRY_LEN) / NLB_STICKY_ENTRY_LEN);
    const partsNeeded = Math.max(1, Math.ceil(tunnels.length / per), Math.ceil(sticky.length / perSticky));
    const parts = Math.min(16, partsNeeded);
    if (partsNeeded > parts) this.counters.NlbTunnelListTruncated++;
    for (let p = 0; p < parts; p++) {
      const tl = tunnels.slice(p * per, (p + 1) * per);
      const room = Math.floor(((per - tl.length) * NLB_TUNNEL_ENTRY_LEN) / NLB_STICKY_ENTRY_LEN);
      const sl = sticky.slice(p * perSticky, p * perSticky + Math.min(room, perSticky));
      const e = newExtendedRepr();
      e.uniqueHostId = this.incarnation;
      e.clusterIp = c.clusterIp;
      e.dedicatedIp = c.dedicatedIp;
      e.hostName = c.hostName;
      e.faultstack = { part: p, parts, tunnels: tl, sticky: sl };
      const buf = Buffer.alloc(maxLen);
      const n = emitExtended(buf, 0, e);
      this.link.sendFrame({ dst, etherType: ETHERTYPE_MS_NLB }, buf.subarray(0, n));
      this.counters.NlbExtendedHeartbeatsOut++;
    }
  }

  private onHeartbeatFrame(frame: Buffer, _src: MacAddr, now: number): void {
    if (this.closed) return;
    const off = 14,
      len = frame.length - 14;
    const sig = nlbSignature(frame, off, len);
    if (sig === NLB_SIGNATURE_MEMBERSHIP) this.onMembership(frame, off, len, now);
    else if (sig === NLB_SIGNATURE_EXTENDED) this.onExtended(frame, off, len, now);
    else this.counters.NlbHeartbeatErrors++;
  }

  private onMembership(frame: Buffer, off: number, len: number, now: number): void {
    const h = this.hbIn;
    if (parseMembership(frame, off, len, h) !== NlbError.None) {
      this.counters.NlbHeartbeatErrors++;
      return;
    }
    if (h.clusterIp !== this.config.clusterIp) {
      this.counters.NlbHeartbeatsForeign++;
      return;
    }
    this.counters.NlbHeartbeatsIn++;
    if (h.hostId === this.id) {
      if (h.uniqueHostId !== this.incarnation || h.dedicatedIp !== this.config.dedicatedIp) {
        this.onEvent({ kind: 'duplicate-priority', host: h.hostId, dedicatedIp: formatIpv4(h.dedicatedIp) });
      }
      return;
    }
    if (h.hostId < 1 || h.hostId > 32) {
      this.counters.NlbHeartbeatErrors++;
      return;
    }
    let m = this.members.get(h.hostId);
    if (m && m.incarnation !== h.uniqueHostId) {
      // The same priority with a new incarnation: that host restarted.
      this.removeMember(m, 'restarted', now);
      m = undefined;
    }
    if (h.convergenceState === NlbConvergenceState.Stopped) {
      if (m) this.removeMember(m, 'stopped', now);
      return;
    }
    if (this.role === 'stopped') {
      // A stopped host listens (query shows the cluster) but takes no part.
      this.upsertMember(m, h, now, false);
      return;
    }
    const isNew = m === undefined;
    const before = m ? { state: m.state, weights: m.rules.map((r) => r.loadWeight).join(',') } : null;
    m = this.upsertMember(m, h, now, true);
    if (m.hostCode !== this.hostCode) {
      if (!m.conflictReported) {
        m.conflictReported = true;
        this.onEvent({ kind: 'rule-conflict', host: m.id, dedicatedIp: formatIpv4(m.dedicatedIp), theirs: m.hostCode, ours: this.hostCode });
      }
    }
    if (isNew) {
      this.counters.NlbHostsJoined++;
      this.onEvent({ kind: 'host-joined', host: m.id, dedicatedIp: formatIpv4(m.dedicatedIp) });
      this.beginConvergence(`host ${m.id} (${formatIpv4(m.dedicatedIp)}) joined`, now);
    } else if (
      before &&
      ((before.state === NlbConvergenceState.Draining) !== (m.state === NlbConvergenceState.Draining) ||
        before.weights !== m.rules.map((r) => r.loadWeight).join(','))
    ) {
      this.beginConvergence(`host ${m.id} ${m.state === NlbConvergenceState.Draining ? 'is draining' : 'changed its load'}`, now);
    }
    this.updateDirty();
    this.checkConvergence(now);
  }

  private upsertMember(m: Member | undefined, h: ReturnType<typeof newMembershipRepr>, now: number, _active: boolean): Member {
    if (!m) {
      m = {
        id: h.hostId,
        incarnation: h.uniqueHostId,
        dedicatedIp: h.dedicatedIp,
        hostName: null,
        lastHeard: now,
        state: h.convergenceState,
        view: h.view,
        hostCode: h.uniqueHostCode,
        packetsHandled: h.packetsHandled,
        rules: h.rules,
        tunnelParts: [],
        stickyParts: [],
        maxSeq: 0,
        conflictReported: false,
      };
      this.members.set(m.id, m);
    }
    m.lastHeard = now;
    m.state = h.convergenceState;
    m.view = h.view;
    m.hostCode = h.uniqueHostCode;
    m.packetsHandled = h.packetsHandled;
    m.rules = h.rules;
    m.dedicatedIp = h.dedicatedIp;
    return m;
  }

  private onExtended(frame: Buffer, off: number, len: number, now: number): void {
    const e = this.extIn;
    if (parseExtended(frame, off, len, e) !== NlbError.None) {
      this.counters.NlbHeartbeatErrors++;
      return;
    }
    if (e.clusterIp !== this.config.clusterIp) {
      this.counters.NlbHeartbeatsForeign++;
      return;
    }
    this.counters.NlbExtendedHeartbeatsIn++;
    const id = [...this.members.values()].find((m) => m.incarnation === e.uniqueHostId && m.dedicatedIp === e.dedicatedIp)?.id;
    const m = id === undefined ? undefined : this.members.get(id);
    if (!m || this.role === 'stopped') return;
    m.hostName = e.hostName;
    const f = e.faultstack;
    if (!f) return;
    m.tunnelParts.length = f.parts;
    m.stickyParts.length = f.parts;
    m.tunnelParts[f.part] = f.tunnels;
    m.stickyParts[f.part] = f.sticky;
    let changedSticky = false;
    for (const t of f.tunnels) {
      if (t.openSeq <= m.maxSeq) continue;
      this.counters.NlbTunnelsHeardOpened++;
      const hex = t.identityHash.toString('hex');
      const b = bucketOf(AffinityCode.Single, t.clientAddr, 0, this.config.buckets, this.config.hashSeed);
      this.onEvent({ kind: 'tunnel-opened', identity: this.names.get(hex) ?? hex, client: formatIpv4(t.clientAddr), host: m.id, local: false });
      this.hooks.tunnelOpened(
        {
          identityHash: t.identityHash,
          identity: this.names.get(hex) ?? null,
          clientAddr: t.clientAddr,
          host: m.id,
          openedAt: now - t.ageMs,
          local: false,
          bucket: b,
          ownsBucket: this.ownsIpsecBucket(b),
        },
        now,
      );
    }
    for (const t of f.tunnels) if (t.openSeq > m.maxSeq) m.maxSeq = t.openSeq;
    if (f.sticky.length > 0 || m.stickyParts.some((p) => p && p.length > 0)) changedSticky = true;
    if (changedSticky) this.rebuildStickyElsewhere();
  }

  private rebuildStickyElsewhere(): void {
    const out = new Map<number, number>();
    for (const m of this.members.values()) for (const part of m.stickyParts) for (const s of part ?? []) out.set(s.rule * 4294967296 + s.key, m.id);
    this.stickyElsewhere = out;
  }

  private removeMember(m: Member, reason: string, now: number): void {
    if (!this.members.delete(m.id)) return;
    this.counters.NlbHostsLost++;
    this.onEvent({ kind: 'host-lost', host: m.id, dedicatedIp: formatIpv4(m.dedicatedIp), reason });
    this.rebuildStickyElsewhere();
    this.updateDirty();
    if (this.role !== 'stopped') this.beginConvergence(`host ${m.id} (${formatIpv4(m.dedicatedIp)}) ${reason}`, now);
  }

  private expireMembers(now: number): void {
    const p = this.params();
    const deadline = p.AliveMsgPeriod * p.AliveMsgTolerance;
    for (const m of [...this.members.values()]) {
      if (now - m.lastHeard > deadline) this.removeMember(m, `missed ${p.AliveMsgTolerance} heartbeats`, now);
    }
  }

  /** Buckets in which another live host still holds something (its idle bit is clear). */
  private updateDirty(): void {
    for (let r = 0; r < this.rules.length; r++) {
      const d = this.dirty[r]!;
      d.fill(0);
      for (const m of this.members.values()) {
        const slot = m.rules[r];
        if (!slot) continue;
        const busy = ~slot.idleMap;
        for (let b = 0; b < this.config.buckets; b++) if (((busy >> BigInt(b)) & 1n) === 1n) d[b] = 1;
      }
    }
  }

  /** Frees descriptors of connections that ended (the stack no longer has them), a slice per heartbeat. */
  private reconcile(now: number): void {
    if (this.reconcileCursor.length === 0) this.reconcileCursor = this.descriptors.all();
    const tcp = this.stack.tcp;
    const ip = this.config.clusterIp;
    for (let n = 0; n < RECONCILE_PER_TICK && this.reconcileCursor.length > 0; n++) {
      const d = this.reconcileCursor.pop()!;
      if (!d.inUse || now - d.createdAt < RECONCILE_MIN_AGE_MS) continue;
      if (tcp.table.lookup(ip, d.localPort, d.remoteAddr, d.remotePort) !== undefined) continue;
      const l = tcp.listeners.get(d.localPort);
      if (l !== undefined && l.findHalfOpen(ip, d.remoteAddr, d.remotePort) !== undefined) continue;
      this.freeDescriptor(d, now);
    }
  }

  // ================================================================== convergence

  private viewBits(): number {
    let v = this.role === 'stopped' ? 0 : 1 << (this.id - 1);
    for (const m of this.members.values()) v |= 1 << (m.id - 1);
    return v >>> 0;
  }

  /** The live hosts that may own buckets (not draining), for rule r, with their weights. */
  private candidates(r: number): Candidate[] {
    const out: Candidate[] = [];
    const rule = this.rules[r]!;
    if (this.role === 'active') out.push({ id: this.id, weight: rule.mode === 'single' ? rule.priority || this.id : this.candidateWeight(rule) });
    for (const m of this.members.values()) {
      if (m.state === NlbConvergenceState.Draining) continue;
      out.push({ id: m.id, weight: m.rules[r]?.loadWeight ?? 50 });
    }
    return out.sort((a, b) => a.id - b.id);
  }

  /** The default host: the lowest priority among the live hosts that are not draining. */
  defaultHost(): number {
    let best = this.role === 'active' ? this.id : 99;
    for (const m of this.members.values()) if (m.state !== NlbConvergenceState.Draining && m.id < best) best = m.id;
    return best === 99 ? 0 : best;
  }

  /** The map the cluster last agreed on, as this host knows it: its own, or (a newcomer) what the converged hosts publish. */
  private previousMap(r: number): BucketMap | null {
    if (this.current) return this.current[r]!;
    let any = false;
    const prev = new Uint8Array(this.config.buckets);
    // Every host that has a current map publishes it, also while it converges again (with us).
    for (const m of [...this.members.values()].sort((a, b) => b.id - a.id)) {
      const bits = m.rules[r]?.currentMap ?? 0n;
      for (let b = 0; b < this.config.buckets; b++)
        if (((bits >> BigInt(b)) & 1n) === 1n) {
          prev[b] = m.id;
          any = true;
        }
    }
    return any ? prev : null;
  }

  private computeProposal(): BucketMap[] {
    const B = this.config.buckets;
    return this.rules.map((rule, r) => {
      const cands = this.candidates(r);
      if (rule.mode === 'disabled' || cands.length === 0) return new Uint8Array(B);
      if (rule.mode === 'single') {
        // The best (lowest) handling priority takes every bucket.
        const best = [...cands].sort((a, b) => a.weight - b.weight || a.id - b.id)[0]!;
        return singleOwnerMap(B, best.id);
      }
      return computeMap(B, cands, this.previousMap(r));
    });
  }

  private beginConvergence(reason: string, now: number): void {
    if (this.role === 'stopped' || this.closed) return;
    const wasConverged = this.converged;
    this.converged = false;
    this.ready = false;
    this.proposal = this.computeProposal();
    this.proposalKey = this.proposal.map((m) => m.join('.')).join('|');
    if (wasConverged || this.convergingSince === 0) {
      this.convergingSince = now;
      this.counters.NlbConvergences++;
      this.onEvent({ kind: 'convergence-started', reason, hosts: this.hostIds() });
    }
    this.heartbeatSoon(now);
  }

  private hostIds(): number[] {
    const ids = [...this.members.keys()];
    if (this.role !== 'stopped') ids.push(this.id);
    return ids.sort((a, b) => a - b);
  }

  /** Called on every heartbeat heard: agreement on the proposal, then readiness, then the switch. */
  private checkConvergence(now: number): void {
    if (this.role === 'stopped' || this.converged || !this.proposal) return;
    // Inputs moved under the proposal (a weight heard late): recompute.
    const fresh = this.computeProposal();
    const key = fresh.map((m) => m.join('.')).join('|');
    if (key !== this.proposalKey) {
      this.proposal = fresh;
      this.proposalKey = key;
      this.ready = false;
      this.heartbeatSoon(now);
      return;
    }
    // A newcomer listens for two periods before it may converge (others may be about to be heard).
    if (now - this.startedAt < 2 * this.period()) return;
    const view = this.viewBits();
    const p = this.proposal;
    const agrees = (m: Member, field: 'newMap' | 'readyMap') =>
      m.view === view && m.hostCode === this.hostCode && this.rules.every((_, r) => (m.rules[r]?.[field] ?? -1n) === bitsOf(p[r]!, m.id));
    const members = [...this.members.values()];
    if (!this.ready) {
      if (!members.every((m) => agrees(m, 'newMap'))) return;
      this.ready = true;
      this.heartbeatSoon(now);
    }
    if (!members.every((m) => agrees(m, 'readyMap'))) return;
    this.current = p;
    this.converged = true;
    const ms = Math.round(now - this.convergingSince);
    this.convergingSince = 0;
    const owned = p.reduce((a, m) => a + countOf(m, this.id), 0);
    this.onEvent({ kind: 'convergence-finished', ms, hosts: this.hostIds(), buckets: owned, defaultHost: this.defaultHost() });
    this.heartbeatSoon(now);
    if (this.role === 'draining') this.checkDrained(now);
  }

  // ================================================================== control

  /** drainstop: no new connections; the host stops once its last connection and tunnel are gone. */
  drainstop(now: number): { state: string; connections: number } {
    if (this.role === 'stopped') return { state: 'stopped', connections: 0 };
    const from = this.role;
    this.role = 'draining';
    if (from !== 'draining') this.onEvent({ kind: 'state-changed', from, to: 'draining' });
    this.beginConvergence('this host is draining (drainstop)', now);
    this.checkDrained(now);
    return { state: this.role, connections: this.descriptors.inUse + this.tunnels.size };
  }

  private checkDrained(now: number): void {
    if (this.role !== 'draining' || !this.converged) return;
    if (this.descriptors.inUse === 0 && this.tunnels.size === 0) this.stop(now, 'drained: its last connection ended');
  }

  /** stop: the host leaves the cluster at once (its last heartbeat says so) and drops cluster traffic. */
  stop(now: number, why = 'stop'): { state: string } {
    if (this.role === 'stopped') return { state: 'stopped' };
    const from = this.role;
    this.sendHeartbeatNow(now, NlbConvergenceState.Stopped);
    this.role = 'stopped';
    this.converged = false;
    this.ready = false;
    this.current = null;
    this.proposal = null;
    this.convergingSince = 0;
    this.descriptors.clear();
    this.sticky.clear();
    this.stack.timers.disarm(this.soonTimer);
    this.onEvent({ kind: 'state-changed', from, to: `stopped (${why})` });
    return { state: 'stopped' };
  }

  /** start: the host joins the cluster again (or for the first time). */
  start(now: number): { state: string } {
    if (this.role === 'active') return { state: this.stateName() };
    const from = this.role;
    this.role = 'active';
    this.convergingSince = 0;
    this.onEvent({ kind: 'state-changed', from, to: 'active' });
    this.beginConvergence(from === 'draining' ? 'drainstop cancelled (start)' : 'host started', now);
    this.sendHeartbeats(now);
    return { state: this.stateName() };
  }

  stateName(): string {
    if (this.role === 'stopped') return 'Stopped';
    if (this.role === 'draining') return 'Draining';
    if (!this.converged) return 'Converging';
    return this.defaultHost() === this.id ? 'Converged as DEFAULT' : 'Converged';
  }

  /** `nlb query`: the host's state and the hosts it sees, in the words of nlb.exe. */
  query(now: number) {
    const hosts = this.hostIds();
    const state = this.stateName();
    const text =
      this.role === 'stopped'
        ? `Host ${this.id} is stopped and does not participate in cluster operations.`
        : this.role === 'draining'
          ? `Host ${this.id} is draining existing connections (${this.descriptors.inUse} connections, ${this.tunnels.size} tunnels) and takes no new ones.`
          : this.converged
            ? `Host ${this.id} has ${this.defaultHost() === this.id ? 'converged as DEFAULT' : 'entered a converged state'} with the following host(s) as part of the cluster: ${hosts.join(', ')}`
            : `Host ${this.id} is converging with the following host(s) as part of the cluster: ${hosts.join(', ')}`;
    return {
      host: this.id,
      state,
      text,
      hosts,
      defaultHost: this.defaultHost(),
      convergingForMs: this.converged || this.convergingSince === 0 ? 0 : Math.round(now - this.convergingSince),
      members: [...this.members.values()]
        .sort((a, b) => a.id - b.id)
        .map((m) => ({
          host: m.id,
          dedicatedIp: formatIpv4(m.dedicatedIp),
          hostName: m.hostName,
          state: stateLabel(m.state),
          lastHeardMs: Math.round(now - m.lastHeard),
          packetsHandled: m.packetsHandled,
          rulesMatch: m.hostCode === this.hostCode,
          tunnels: m.tunnelParts.reduce((a, p) => a + (p?.length ?? 0), 0),
        })),
    };
  }

  /** `nlb display`: configuration, state, bucket maps, descriptors, tunnels, counters. */
  display(now: number) {
    const B = this.config.buckets;
    const perRule = this.descriptors.perRule(this.rules.length);
    const clusterTunnels = new Map<string, Set<number>>();
    const add = (hex: string, host: number) => {
      let s = clusterTunnels.get(hex);
      if (!s) {
        s = new Set();
        clusterTunnels.set(hex, s);
      }
      s.add(host);
    };
    for (const t of this.tunnels.values()) add(t.hash.toString('hex'), this.id);
    for (const m of this.members.values()) for (const p of m.tunnelParts) for (const t of p ?? []) add(t.identityHash.toString('hex'), m.id);
    return {
      ...this.query(now),
      config: {
        clusterIp: `${formatIpv4(this.config.clusterIp)}/${this.config.clusterPrefix}`,
        dedicatedIp: formatIpv4(this.config.dedicatedIp),
        priority: this.id,
        mode: this.config.mode,
        clusterMac: formatMac(this.clusterMac),
        sourceMac: formatMac(this.link.sourceMac),
        heartbeatDestination: formatMac(heartbeatMac(this.config.mode, this.config.clusterIp)),
        ...(this.config.mode === 'igmp' ? { igmpGroup: formatIpv4(igmpGroup(this.config.clusterIp)) } : {}),
        buckets: B,
        hashSeed: this.config.hashSeed,
        hostName: this.config.hostName,
        uniqueHostCode: this.hostCode,
        incarnation: this.incarnation,
      },
      rules: this.rules.map((rule, r) => ({
        rule: r,
        spec: describeRule(rule),
        code: this.ruleCodes[r],
        owned: this.current ? formatBuckets(bitsOf(this.current[r]!, this.id), B) : '-',
        ownedCount: this.current ? countOf(this.current[r]!, this.id) : 0,
        proposed: this.proposal ? formatBuckets(bitsOf(this.proposal[r]!, this.id), B) : '-',
        map: this.current ? Array.from(this.current[r]!) : null,
        idle: formatBuckets(this.descriptors.idleBits(r, B), B),
        dirty: formatBuckets(
          this.dirty[r]!.reduce((bits, v, b) => (v ? bits | (1n << BigInt(b)) : bits), 0n),
          B,
        ),
        connections: perRule[r] ?? 0,
      })),
      ipsecRule: this.ipsecRule === NO_RULE ? null : this.ipsecRule,
      descriptors: {
        inUse: this.descriptors.inUse,
        capacity: this.descriptors.capacity,
        blocks: this.descriptors.blocks,
        perAlloc: this.params().DescriptorsPerAlloc,
        maxAllocs: this.params().MaxDescriptorAllocs,
        maxDescriptors: this.params().DescriptorsPerAlloc * this.params().MaxDescriptorAllocs,
        allocated: this.descriptors.allocated,
        freed: this.descriptors.freed,
        exhausted: this.descriptors.exhausted,
      },
      tunnels: [...this.tunnels.values()].map((t) => ({
        identity: t.identity,
        client: formatIpv4(t.clientAddr),
        ikeSa: t.ikeSaId,
        bucket: t.bucket,
        ownsBucket: this.ownsIpsecBucket(t.bucket),
        openSeq: t.openSeq,
        ageMs: Math.round(now - t.openedAt),
        childSas: t.espSpis.size,
      })),
      identitiesOnSeveralHosts: [...clusterTunnels.entries()]
        .filter(([, s]) => s.size > 1)
        .map(([hex, s]) => ({ identity: this.names.get(hex) ?? hex, hosts: [...s].sort((a, b) => a - b) })),
      sticky: [...this.sticky.values()].map((s) => ({
        rule: s.rule,
        client: formatIpv4(s.key),
        connections: s.connections,
        expiresInMs: s.connections > 0 ? null : Math.max(0, Math.round(s.expiresAt - now)),
      })),
      counters: { ...this.counters, NlbDescriptorsInUse: this.descriptors.inUse },
    };
  }

  /** `nlb params`: the values in force, with the registry names. */
  paramsReply() {
    const p = this.params();
    return {
      ...p,
      NumberOfBuckets: this.config.buckets,
      HashSeed: this.config.hashSeed,
      ClusterIPAddress: formatIpv4(this.config.clusterIp),
      DedicatedIPAddress: formatIpv4(this.config.dedicatedIp),
      HostPriority: this.id,
      ClusterMode: this.config.mode,
      ClusterNetworkAddress: formatMac(this.clusterMac),
      MaximumConnectionDescriptors: p.DescriptorsPerAlloc * p.MaxDescriptorAllocs,
      PortRules: this.rules.map(describeRule),
    };
  }
}

function spiKeyOf(spi: Buffer): number {
  return spi.readUInt32BE(0) * 65536 + spi.readUInt16BE(4);
}

function stateLabel(s: number): string {
  return s === NlbConvergenceState.Converging
    ? 'Converging'
    : s === NlbConvergenceState.Converged
      ? 'Converged'
      : s === NlbConvergenceState.Draining
        ? 'Draining'
        : s === NlbConvergenceState.Stopped
          ? 'Stopped'
          : `state ${s}`;
}

export { NLB_VERSION };
