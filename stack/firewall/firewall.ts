/**
 * faultstack as a firewall between two networks (KB 319381's ISA Server): one Stack per
 * interface and a forwarding plane between them.
 *
 *   internal device -> internal Stack --IP input hook--> Firewall.fromInside
 *        local to 198.18.1.1: the stack's own TCP/UDP (Firewall Client control channel
 *        on 1745, relays)                       not local: route, TTL, MTU/DF, packet
 *                                               filter (rules, session), SecureNAT,
 *                                               application filters -> external.sendRaw
 *   external device -> external Stack --IP input hook--> Firewall.fromOutside
 *        to the external address: a SecureNAT session or an application filter's
 *        opening -> translate, forward inside; a port of the firewall's own (a Firewall
 *        Client binding or connection) that admits it -> the external stack delivers it;
 *        else default deny: dropped, counted by reason, fed to port-scan detection
 *
 * The core knows nothing of this: the Stack calls an IpInputHook (stack/iface/) and
 * sends with `sendRaw`. Forwarded datagrams keep their offload metadata (a TSO
 * super-segment crosses as one packet, its partial checksum seed fixed for the
 * translated addresses); an egress device that cannot take them gets segments or
 * complete checksums made in software. Time is passed in; housekeeping runs from a
 * timer in the internal stack's queue.
 */
import type { OffloadMeta } from '../../drivers/device';
import { segmentTcp4 } from '../../drivers/gso';
import type { Stack } from '../stack';
import { Timer } from '../timers';
import { Reassembler } from '../iface/reassembly';
import { formatIpv4, prefixMask } from '../wire/addr';
import { internetChecksum } from '../wire/checksum';
import {
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_PARAM_PROBLEM,
  ICMP_SOURCE_QUENCH,
  ICMP_TIME_EXCEEDED,
  UNREACH_ADMIN_PROHIBITED,
  UNREACH_FRAG_NEEDED,
  emitIcmp,
  newIcmpRepr,
} from '../wire/icmp';
import { IP_FLAG_DF, IP_FLAG_MF, PROTO_ICMP, PROTO_TCP, PROTO_UDP, emitIpv4Header, newIpv4Repr } from '../wire/ipv4';
import { readU16, readU32, writeU16, writeU32 } from '../wire/bytes';
import { decrementTtl, finishPartialChecksum, fragment, rewriteEndpoint } from './packet';
import { PortScanDetector, type PortScanEvent, type PortScanOptions, type PortScanThresholds } from './portscan';
import { RuleSet } from './rules';
import { DEFAULT_TIMEOUTS, DROP_REASONS, SessionTable, type DropReason, type NatPayloadFilter, type NatSession, type SessionTimeouts } from './sessions';

export type { DropReason } from './sessions';

/** A router's counters (ours; Linux's forwarding ones are IpForwDatagrams and friends). */
export function newFirewallCounters() {
  return {
    FwForwardedOut: 0,
    FwForwardedIn: 0,
    FwForwardedBytesOut: 0,
    FwForwardedBytesIn: 0,
    FwTtlExceeded: 0,
    FwFragNeeded: 0,
    FwFragmentedDatagrams: 0,
    FwFragmentsCreated: 0,
    FwReassembled: 0,
    FwReassemblyPending: 0,
    FwReassemblyFails: 0,
    FwIcmpErrorsSent: 0,
    FwIcmpRateLimited: 0,
    FwIcmpErrorsTranslated: 0,
    FwSessionsCreated: 0,
    FwSessionsExpired: 0,
    FwSessionsClosed: 0,
    FwSoftwareSegmented: 0,
    FwSoftwareChecksums: 0,
    FwDropped: 0,
  };
}
export type FirewallCounters = ReturnType<typeof newFirewallCounters>;

export type FirewallEvent =
  | { kind: 'port-scan'; scan: PortScanEvent }
  | { kind: 'media'; action: 'opened' | 'closed' | 'reopened' | 'left-closed' | 'addr-in-use' | 'released'; message: string; data: Record<string, unknown> }
  | { kind: 'fwc'; action: string; message: string; data: Record<string, unknown> };

/** What a Firewall Client binding looks like to a hook (stack/faults/kb319381/). */
export interface BindingInfo {
  readonly session: number;
  readonly client: string;
  readonly bindId: number;
  readonly externalPort: number;
  /** The streaming-media filter's opening for this port, if it made one. */
  readonly media: { server: string; state: 'open' | 'closed' } | null;
}

/**
 * Where a fault may change the firewall's behaviour (KB 319381). Each default is the
 * correct, hotfixed behaviour.
 */
export interface FirewallHooks {
  /** A Firewall Client released a UDP binding; the streaming-media filter has just closed its opening. */
  mediaPortReleased(b: BindingInfo, now: number): void;
  /** How long a released port stays bound before it is free (ms). Default 0. */
  releaseDelayMs(): number;
  /**
   * The same client binds a port whose release is still under way. 'complete-release'
   * (default: release and re-bind are ordered) finishes the release first and binds;
   * 'address-in-use' refuses the bind with WSAEADDRINUSE.
   */
  rebindWhileReleasing(b: BindingInfo, now: number): 'complete-release' | 'address-in-use';
  /** A client re-bound a port whose media opening was closed on release: re-open it? Default true. */
  reopenOnRebind(b: BindingInfo, now: number): boolean;
}

export function defaultFirewallHooks(): FirewallHooks {
  return {
    mediaPortReleased: () => {},
    releaseDelayMs: () => 0,
    rebindWhileReleasing: () => 'complete-release',
    reopenOnRebind: () => true,
  };
}

export interface FirewallOptions {
  internal: Stack;
  external: Stack;
  rules?: readonly string[];
  timeouts?: Partial<SessionTimeouts>;
  natPorts?: readonly [number, number];
  icmpErrorsPerSec?: number;
  portScan?: PortScanOptions & { thresholds?: () => PortScanThresholds };
}

const SYN = 0x02;
/** Datagrams at least this long are kept zero-copy (Stack.claimPacket); shorter ones are copied. */
const CLAIM_MIN = 16 * 1024;

/** inboundFit's verdicts. */
const DROPPED = 0,
  FITS = 1,
  TOO_BIG = 2;
type InboundFit = typeof DROPPED | typeof FITS | typeof TOO_BIG;

export class Firewall {
  readonly internal: Stack;
  readonly external: Stack;
  readonly counters: FirewallCounters = newFirewallCounters();
  readonly drops: Record<DropReason, number>;
  readonly rules: RuleSet;
  readonly sessions: SessionTable;
  readonly scan: PortScanDetector;
  hooks: FirewallHooks = defaultFirewallHooks();
  /** Application filters on SecureNAT TCP sessions. */
  readonly natFilters: NatPayloadFilter[] = [];
  /** The streaming-media filter, once one is made (stack/firewall/media.ts); a fault switches it on and off. */
  media: { enabled: boolean } | null = null;
  private readonly reasm = new Reassembler();
  private readonly listeners = new Set<(e: FirewallEvent) => void>();
  private readonly housekeeping: Timer;
  private icmpTokens: number;
  private icmpRefillAt = 0;
  private readonly icmpRate: number;
  private readonly ipScratch = newIpv4Repr();
  private closed = false;
  /** Port-scan thresholds (a fault module sets them from its parameters). */
  thresholds: () => PortScanThresholds;

  constructor(opts: FirewallOptions) {
    this.internal = opts.internal;
    this.external = opts.external;
    this.drops = Object.fromEntries(Object.keys(DROP_REASONS).map((k) => [k, 0])) as Record<DropReason, number>;
    this.rules = new RuleSet(opts.rules);
    this.sessions = new SessionTable({ ...DEFAULT_TIMEOUTS, ...(opts.timeouts ?? {}) }, opts.natPorts ?? [10000, 29999], (proto, port) =>
      this.externalSocketHolds(proto, port),
    );
    this.thresholds = opts.portScan?.thresholds ?? (() => ({ wellKnown: 10, allPorts: 20 }));
    this.scan = new PortScanDetector(
      () => this.thresholds(),
      (e) => this.emit({ kind: 'port-scan', scan: e }),
      opts.portScan,
    );
    this.icmpRate = opts.icmpErrorsPerSec ?? 1000;
    this.icmpTokens = this.icmpRate;
    this.internal.acceptAnyAddress = false;
    this.external.acceptAnyAddress = false;
    this.internal.ipInputHook = { input: (pkt, _ip, meta, local, now) => this.fromInside(pkt, meta, local, now) };
    this.external.ipInputHook = { input: (pkt, _ip, meta, local, now) => this.fromOutside(pkt, meta, local, now) };
    this.housekeeping = new Timer((now) => this.onHousekeeping(now));
    this.internal.timers.arm(this.housekeeping, this.internal.now + 1000);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.internal.ipInputHook = null;
    this.external.ipInputHook = null;
    this.internal.timers.disarm(this.housekeeping);
    this.listeners.clear();
  }

  subscribe(fn: (e: FirewallEvent) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  emit(e: FirewallEvent): void {
    for (const fn of this.listeners) {
      try {
        fn(e);
      } catch {
        /* an observer must not break forwarding */
      }
    }
  }

  /** The routing table: a connected route per interface and the default route out of the external one. */
  routes(): { destination: string; interface: 'internal' | 'external'; mtu: number; kind: string }[] {
    const net = (s: Stack) => `${formatIpv4((s.address & prefixMask(s.prefix)) >>> 0)}/${s.prefix}`;
    return [
      { destination: net(this.internal), interface: 'internal', mtu: this.internal.routes.interfaceMtu, kind: 'connected' },
      { destination: net(this.external), interface: 'external', mtu: this.external.routes.interfaceMtu, kind: 'connected' },
      { destination: '0.0.0.0/0', interface: 'external', mtu: this.external.routes.interfaceMtu, kind: 'default' },
    ];
  }

  drop(reason: DropReason): true {
    this.drops[reason]++;
    this.counters.FwDropped++;
    return true;
  }

  /** A drop of something that came from outside: counted, and seen by port-scan detection. */
  private dropInbound(reason: DropReason, src: number, sport: number, dport: number, now: number): true {
    this.drop(reason);
    this.scan.dropped(src, sport, dport, now);
    return true;
  }

  private externalSocketHolds(proto: number, port: number): boolean {
    const e = this.external;
    if (proto === PROTO_UDP) return e.udp.endpoints.has(port);
    if (proto === PROTO_TCP) return e.tcp.listeners.has(port);
    return false;
  }

  private onHousekeeping(now: number): void {
    this.sessions.expire(now, (s, why) => {
      if (why === 'closed') this.counters.FwSessionsClosed++;
      else this.counters.FwSessionsExpired++;
      s.filter?.ended(s);
    });
    const gone = this.reasm.expire(now);
    if (gone) this.counters.FwReassemblyFails += gone;
    this.scan.sweep(now);
    this.internal.timers.arm(this.housekeeping, now + 1000);
  }

  private inInternal(a: number): boolean {
    const m = prefixMask(this.internal.prefix);
    return (a & m) >>> 0 === (this.internal.address & m) >>> 0;
  }

  private isMartianDst(a: number, s: Stack): boolean {
    if (a === 0 || a === 0xffffffff || a >>> 28 === 0xe) return true;
    const m = prefixMask(s.prefix);
    return s.prefix < 31 && (a & m) >>> 0 === (s.address & m) >>> 0 && (a | m) >>> 0 === 0xffffffff;
  }

  // ------------------------------------------------------------------ from the internal network

  private fromInside(pkt: Buffer, meta: OffloadMeta | null, local: boolean, now: number): boolean {
    const src = readU32(pkt, 12),
      dst = readU32(pkt, 16);
    if (!this.inInternal(src) || src === this.internal.address) return this.drop('spoofed');
    // The firewall's own services on its internal address (Firewall Client control channel, relays).
    if (local) return false;
    if (this.isMartianDst(dst, this.internal) || dst === this.external.address) return this.drop('martian');
    const whole = this.defragment(pkt, now);
    if (whole === null) return true;
    if (whole !== pkt) {
      pkt = whole;
      meta = null;
    }
    return this.outbound(pkt, meta, now);
  }

  /** Reassembles a fragment (SecureNAT needs the ports); the datagram itself when it is none, null while incomplete. */
  private defragment(pkt: Buffer, now: number): Buffer | null {
    const ff = readU16(pkt, 6);
    if ((ff & (IP_FLAG_MF | 0x1fff)) === 0) return pkt;
    const ihl = (pkt[0] & 15) * 4,
      total = readU16(pkt, 2);
    const key = `${readU32(pkt, 12)}/${readU32(pkt, 16)}/${pkt[9]}/${readU16(pkt, 4)}`;
    const r = this.reasm.add(key, now, pkt.subarray(0, ihl), (ff & 0x1fff) * 8, (ff & IP_FLAG_MF) !== 0, pkt.subarray(ihl, total));
    if (r === null) {
      this.counters.FwReassemblyFails++;
      return null;
    }
    if (!r.done) {
      this.counters.FwReassemblyPending++;
      return null;
    }
    this.counters.FwReassembled++;
    const out = Buffer.allocUnsafe(20 + r.payload.length);
    r.header.copy(out, 0, 0, 20);
    out[0] = 0x45;
    r.payload.copy(out, 20);
    writeU16(out, 2, out.length);
    writeU16(out, 6, readU16(out, 6) & IP_FLAG_DF);
    writeU16(out, 10, 0);
    writeU16(out, 10, internetChecksum(out, 0, 20));
    return out;
  }

  private outbound(pkt: Buffer, meta: OffloadMeta | null, now: number): boolean {
    const ihl = (pkt[0] & 15) * 4,
      total = readU16(pkt, 2),
      proto = pkt[9];
    const src = readU32(pkt, 12),
      dst = readU32(pkt, 16);
    const egress = this.inInternal(dst) ? this.internal : this.external;
    if (pkt[8] <= 1) {
      this.icmpError(this.internal, pkt, ICMP_TIME_EXCEEDED, 0, 0);
      this.counters.FwTtlExceeded++;
      return this.drop('ttl-exceeded');
    }
    const mtu = egress.routes.interfaceMtu;
    const tooBig = this.exceedsMtu(pkt, ihl, total, meta, mtu);
    if (tooBig && readU16(pkt, 6) & IP_FLAG_DF) {
      this.icmpError(this.internal, pkt, ICMP_DEST_UNREACH, UNREACH_FRAG_NEEDED, mtu & 0xffff);
      this.counters.FwFragNeeded++;
      return this.drop('frag-needed');
    }
    if (egress === this.internal) {
      // Back out where it came from (RFC 1812 5.2.7.2 would add a redirect; a point-to-point link has no better next hop).
      decrementTtl(pkt);
      return this.send(this.internal, this.internal, pkt, meta, total, tooBig, mtu);
    }
    let sport: number, dport: number;
    if (proto === PROTO_TCP || proto === PROTO_UDP) {
      if (total < ihl + (proto === PROTO_TCP ? 20 : 8)) return this.drop('bad-header');
      sport = readU16(pkt, ihl);
      dport = readU16(pkt, ihl + 2);
    } else if (proto === PROTO_ICMP) {
      if (total < ihl + 8) return this.drop('bad-header');
      const type = pkt[ihl];
      if (type === ICMP_DEST_UNREACH || type === ICMP_TIME_EXCEEDED || type === ICMP_PARAM_PROBLEM || type === ICMP_SOURCE_QUENCH) {
        return this.icmpErrorFromInside(pkt, ihl, total, meta, now);
      }
      if (type !== ICMP_ECHO_REQUEST) return this.drop('unsupported-protocol');
      sport = readU16(pkt, ihl + 4);
      dport = 0;
    } else {
      return this.drop('unsupported-protocol');
    }
    const st = this.sessions;
    let s = st.lookupOut(proto, src, sport, dst, dport);
    const flags = proto === PROTO_TCP ? pkt[ihl + 13] : 0;
    if (s === undefined || (s.tcp === 'closed' && (flags & SYN) !== 0)) {
      if (s !== undefined) this.endSession(s); // a new connection on the same four-tuple
      // An internal server's answer to what a rule let in untranslated (a published
      // server): it goes back the same way, untranslated.
      if (this.rules.match('in', proto, dst, src, sport, false) === 'allow') {
        decrementTtl(pkt);
        this.counters.FwForwardedOut++;
        this.counters.FwForwardedBytesOut += total;
        return this.send(this.internal, this.external, pkt, meta, total, tooBig, mtu);
      }
      if (proto === PROTO_TCP && (flags & (SYN | 0x10)) !== SYN) return this.drop('tcp-no-session');
      const verdict = this.rules.match('out', proto, src, dst, dport) ?? 'deny';
      if (verdict === 'deny') {
        // RFC 1812 5.2.7.1: a router that refuses for administrative reasons may say so
        // (code 13); the internal client learns at once instead of timing out. From
        // outside nothing is answered: what is not let in is dropped silently.
        this.icmpError(this.internal, pkt, ICMP_DEST_UNREACH, UNREACH_ADMIN_PROHIBITED, 0);
        return this.drop('rule-deny');
      }
      s = st.create(proto, src, sport, dst, dport, now) ?? undefined;
      if (s === undefined) return this.drop('nat-exhausted');
      this.counters.FwSessionsCreated++;
      if (proto === PROTO_TCP) s.clientIsn = (readU32(pkt, ihl + 4) + 1) >>> 0;
      for (const f of this.natFilters) if (s.filter === null && f.wants(s)) s.filter = f;
    }
    s.lastSeen = now;
    s.packetsOut++;
    s.bytesOut += total;
    const partial = meta !== null && (meta.flags & 1) !== 0;
    if (proto === PROTO_TCP) {
      st.trackTcp(s, flags, true);
      if (s.filter !== null && total > ihl + (pkt[ihl + 12] >> 4) * 4) s.filter.clientSegment(s, pkt, ihl, total - ihl, partial, now);
    }
    rewriteEndpoint(pkt, 0, 0, this.external.address, s.extPort, partial);
    decrementTtl(pkt);
    this.counters.FwForwardedOut++;
    this.counters.FwForwardedBytesOut += total;
    return this.send(this.internal, this.external, pkt, meta, total, tooBig, mtu);
  }

  private endSession(s: NatSession): void {
    this.sessions.remove(s);
    this.counters.FwSessionsClosed++;
    s.filter?.ended(s);
  }

  /** An ICMP error from an internal host about a datagram that came in through a session: translate it back out. */
  private icmpErrorFromInside(pkt: Buffer, ihl: number, total: number, meta: OffloadMeta | null, now: number): boolean {
    const q = ihl + 8;
    if (total < q + 20) return this.drop('bad-header');
    const qihl = (pkt[q] & 15) * 4,
      qproto = pkt[q + 9];
    if (total < q + qihl + 8) return this.drop('bad-header');
    const qsrc = readU32(pkt, q + 12),
      qdst = readU32(pkt, q + 16);
    let qsport: number, qdport: number;
    if (qproto === PROTO_ICMP) {
      qsport = 0;
      qdport = readU16(pkt, q + qihl + 4);
    } else {
      qsport = readU16(pkt, q + qihl);
      qdport = readU16(pkt, q + qihl + 2);
    }
    // The quoted datagram went remote -> client: its session is (client:qdport -> remote:qsport).
    const s = this.sessions.lookupOut(qproto, qdst, qdport, qsrc, qproto === PROTO_ICMP ? 0 : qsport);
    if (s === undefined) return this.drop('icmp-no-session');
    s.lastSeen = now;
    rewriteEndpoint(pkt, q, 1, this.external.address, s.extPort, false, total);
    writeU32(pkt, 12, this.external.address);
    this.finishTranslatedIcmp(pkt, ihl, total);
    decrementTtl(pkt);
    this.counters.FwIcmpErrorsTranslated++;
    this.counters.FwForwardedOut++;
    return this.send(this.internal, this.external, pkt, meta, total, false, this.external.routes.interfaceMtu);
  }

  // ------------------------------------------------------------------ from the external network

  private fromOutside(pkt: Buffer, meta: OffloadMeta | null, local: boolean, now: number): boolean {
    const src = readU32(pkt, 12),
      dst = readU32(pkt, 16);
    if (this.inInternal(src) || src === this.external.address) return this.drop('spoofed');
    const whole = this.defragment(pkt, now);
    if (whole === null) return true;
    if (whole !== pkt) {
      pkt = whole;
      meta = null;
    }
    const ihl = (pkt[0] & 15) * 4,
      total = readU16(pkt, 2),
      proto = pkt[9];
    let sport = -1,
      dport = -1;
    if (proto === PROTO_TCP || proto === PROTO_UDP) {
      if (total < ihl + (proto === PROTO_TCP ? 20 : 8)) return this.drop('bad-header');
      sport = readU16(pkt, ihl);
      dport = readU16(pkt, ihl + 2);
    }
    if (!local) {
      if (this.inInternal(dst) && !this.isMartianDst(dst, this.internal)) {
        // Routed to the internal network without translation: only a rule lets it in.
        if (this.rules.match('in', proto, src, dst, dport) === 'allow') return this.forwardIn(pkt, meta, ihl, total);
        return this.dropInbound('inbound-no-rule', src, sport, dport, now);
      }
      return this.drop('martian');
    }
    let key = dport;
    if (proto === PROTO_ICMP) {
      if (total < ihl + 8) return this.drop('bad-header');
      const type = pkt[ihl];
      if (type === ICMP_DEST_UNREACH || type === ICMP_TIME_EXCEEDED || type === ICMP_PARAM_PROBLEM || type === ICMP_SOURCE_QUENCH) {
        return this.icmpErrorFromOutside(pkt, ihl, total, meta, now);
      }
      if (type === ICMP_ECHO_REPLY) key = readU16(pkt, ihl + 4);
      else {
        if (this.rules.match('in', proto, src, dst, 0) === 'allow') return false;
        return this.dropInbound('inbound-no-rule', src, -1, -1, now);
      }
    } else if (proto !== PROTO_TCP && proto !== PROTO_UDP) {
      if (this.rules.match('in', proto, src, dst, 0) === 'allow') return false;
      return this.dropInbound('inbound-no-rule', src, -1, -1, now);
    }
    const e = this.sessions.lookupExt(proto, key);
    if (e === undefined) {
      // A connection of the firewall's own whose opening is gone (it is closing, or in
      // TIME-WAIT): its segments belong to it, as a stateful filter lets them.
      if (proto === PROTO_TCP && this.external.tcp.table.lookup(dst, dport, src, sport) !== undefined) return false;
      if (this.rules.match('in', proto, src, dst, dport) === 'allow') return false;
      return this.dropInbound('inbound-no-rule', src, sport, dport, now);
    }
    if (e.kind === 'local') {
      const why = e.admit(src, sport, now);
      if (why === null) return false;
      return this.dropInbound(why, src, sport, dport, now);
    }
    if (e.kind === 'session') {
      if (e.remoteAddr !== src || (proto !== PROTO_ICMP && e.remotePort !== sport)) return this.dropInbound('session-mismatch', src, sport, dport, now);
      const fit = this.inboundFit(pkt, ihl, total, meta);
      if (fit === DROPPED) return true;
      e.lastSeen = now;
      e.packetsIn++;
      e.bytesIn += total;
      if (proto === PROTO_TCP) this.sessions.trackTcp(e, pkt[ihl + 13], false);
      rewriteEndpoint(pkt, 0, 1, e.inAddr, e.inPort, meta !== null && (meta.flags & 1) !== 0);
      return this.sendIn(pkt, meta, total, fit === TOO_BIG);
    }
    // An application filter's opening for a SecureNAT client.
    if (e.remoteAddr !== src || sport < e.remotePorts[0] || sport > e.remotePorts[1]) return this.dropInbound('binding-not-open', src, sport, dport, now);
    e.lastSeen = now;
    e.owner.lastSeen = now;
    e.packetsIn++;
    e.bytesIn += total;
    const fit = this.inboundFit(pkt, ihl, total, meta);
    if (fit === DROPPED) return true;
    rewriteEndpoint(pkt, 0, 1, e.inAddr, e.inPort, meta !== null && (meta.flags & 1) !== 0);
    return this.sendIn(pkt, meta, total, fit === TOO_BIG);
  }

  /** Forwards a datagram that needs no translation to the internal network: TTL, MTU, send. */
  private forwardIn(pkt: Buffer, meta: OffloadMeta | null, ihl: number, total: number): boolean {
    const fit = this.inboundFit(pkt, ihl, total, meta);
    if (fit === DROPPED) return true;
    return this.sendIn(pkt, meta, total, fit === TOO_BIG);
  }

  /**
   * The TTL and the internal MTU for a datagram from outside, checked on the datagram as its
   * sender sent it (before any translation, so that an ICMP error quotes what the sender
   * knows): DROPPED when it was dropped and answered with time exceeded or fragmentation
   * needed, else whether it fits the internal interface's MTU.
   */
  private inboundFit(pkt: Buffer, ihl: number, total: number, meta: OffloadMeta | null): InboundFit {
    if (pkt[8] <= 1) {
      this.icmpError(this.external, pkt, ICMP_TIME_EXCEEDED, 0, 0);
      this.counters.FwTtlExceeded++;
      this.drop('ttl-exceeded');
      return DROPPED;
    }
    const mtu = this.internal.routes.interfaceMtu;
    if (!this.exceedsMtu(pkt, ihl, total, meta, mtu)) return FITS;
    if (readU16(pkt, 6) & IP_FLAG_DF) {
      this.icmpError(this.external, pkt, ICMP_DEST_UNREACH, UNREACH_FRAG_NEEDED, mtu & 0xffff);
      this.counters.FwFragNeeded++;
      this.drop('frag-needed');
      return DROPPED;
    }
    return TOO_BIG;
  }

  /** A checked (and, where needed, translated) datagram goes inside: TTL less one, counted, sent (fragmented when too big). */
  private sendIn(pkt: Buffer, meta: OffloadMeta | null, total: number, tooBig: boolean): boolean {
    decrementTtl(pkt);
    this.counters.FwForwardedIn++;
    this.counters.FwForwardedBytesIn += total;
    return this.send(this.external, this.internal, pkt, meta, total, tooBig, this.internal.routes.interfaceMtu);
  }

  /** An ICMP error from outside about a datagram we sent out: to the session's client, or to the firewall's own socket. */
  private icmpErrorFromOutside(pkt: Buffer, ihl: number, total: number, meta: OffloadMeta | null, now: number): boolean {
    const src = readU32(pkt, 12);
    const q = ihl + 8;
    if (total < q + 20) return this.drop('bad-header');
    const qihl = (pkt[q] & 15) * 4,
      qproto = pkt[q + 9];
    if (total < q + qihl + 8) return this.drop('bad-header');
    if (readU32(pkt, q + 12) !== this.external.address) return this.dropInbound('icmp-no-session', src, -1, -1, now);
    const qport = qproto === PROTO_ICMP ? readU16(pkt, q + qihl + 4) : readU16(pkt, q + qihl);
    const e = this.sessions.lookupExt(qproto, qport);
    if (e === undefined) return this.dropInbound('icmp-no-session', src, -1, -1, now);
    if (e.kind === 'local') return false; // the external stack's own ICMP error handling (PMTU, port unreachable)
    if (e.kind !== 'session') return this.drop('icmp-no-session');
    e.lastSeen = now;
    rewriteEndpoint(pkt, q, 0, e.inAddr, e.inPort, false, total);
    writeU32(pkt, 16, e.inAddr);
    this.finishTranslatedIcmp(pkt, ihl, total);
    this.counters.FwIcmpErrorsTranslated++;
    return this.forwardIn(pkt, meta, ihl, total);
  }

  /** After a quoted header was rewritten: its header checksum, the outer header's, the ICMP checksum. */
  private finishTranslatedIcmp(pkt: Buffer, ihl: number, total: number): void {
    const q = ihl + 8,
      qihl = (pkt[q] & 15) * 4;
    if (q + qihl <= total) {
      writeU16(pkt, q + 10, 0);
      writeU16(pkt, q + 10, internetChecksum(pkt, q, qihl));
    }
    writeU16(pkt, 10, 0);
    writeU16(pkt, 10, internetChecksum(pkt, 0, ihl));
    writeU16(pkt, ihl + 2, 0);
    writeU16(pkt, ihl + 2, internetChecksum(pkt, ihl, total - ihl));
  }

  // ------------------------------------------------------------------ output

  private exceedsMtu(pkt: Buffer, ihl: number, total: number, meta: OffloadMeta | null, mtu: number): boolean {
    if (meta !== null && meta.gsoType !== 0 && meta.gsoSize > 0 && pkt[9] === PROTO_TCP) {
      // A super-segment crosses as one packet; what the wire carries is segments of gso_size
      // (Linux's skb_gso_validate_network_len).
      const thl = (pkt[ihl + 12] >> 4) * 4;
      return ihl + thl + meta.gsoSize > mtu;
    }
    return total > mtu;
  }

  /**
   * Sends a forwarded datagram on `egress`: ours after a claim of the device's buffer
   * (or a copy), offloads kept where the egress device takes them, fragmented when it is
   * larger than the MTU and DF is clear.
   */
  private send(ingress: Stack, egress: Stack, pkt: Buffer, meta: OffloadMeta | null, total: number, tooBig: boolean, mtu: number): boolean {
    // Keep the device's buffer only for a large datagram (a TSO super-segment): claiming
    // costs the device a new 64 KiB slot, far more than copying a small one.
    let own = total >= CLAIM_MIN && ingress.claimPacket(pkt) ? pkt : Buffer.from(pkt.subarray(0, total));
    if (own.length > total) own = own.subarray(0, total);
    if (meta !== null) {
      const gso = meta.gsoType !== 0;
      if (gso && (egress.tsoSegmentsMax <= 1 || tooBig)) {
        this.counters.FwSoftwareSegmented++;
        for (const seg of segmentTcp4(own, meta)) this.emitOut(egress, seg, null, mtu);
        return true;
      }
      if ((meta.flags & 1) !== 0 && !egress.txCsumOffload) {
        this.counters.FwSoftwareChecksums++;
        finishPartialChecksum(own, meta.csumStart, meta.csumOffset, total);
        meta = null;
      } else if (!gso && (meta.flags & 1) === 0) {
        // DATA_VALID only: what the kernel verified, we changed; let the next receiver check.
        meta = null;
      }
    }
    this.emitOut(egress, own, meta, mtu);
    return true;
  }

  private emitOut(egress: Stack, pkt: Buffer, meta: OffloadMeta | null, mtu: number): void {
    if (meta === null && pkt.length > mtu) {
      if (readU16(pkt, 6) & IP_FLAG_DF) {
        this.drop('frag-needed');
        return;
      }
      const frags = fragment(pkt, mtu);
      this.counters.FwFragmentedDatagrams++;
      this.counters.FwFragmentsCreated += frags.length;
      for (const f of frags) egress.sendRaw(f, null);
      return;
    }
    egress.sendRaw(pkt, meta);
  }

  /**
   * An ICMP error from the firewall about `orig` (RFC 1812 4.3.2): from the address of the
   * interface it came in on, quoting as much of it as fits in 576 bytes (4.3.2.3), never
   * about an ICMP error, a non-first fragment or a datagram from no single host
   * (RFC 1122 3.2.2), rate-limited (4.3.2.8).
   */
  private readonly icmpScratch = newIcmpRepr();

  icmpError(ingress: Stack, orig: Buffer, type: number, code: number, nextHopMtu: number): void {
    const ihl = (orig[0] & 15) * 4,
      total = readU16(orig, 2);
    if ((readU16(orig, 6) & 0x1fff) !== 0) return;
    if (orig[9] === PROTO_ICMP && total >= ihl + 1) {
      const t = orig[ihl];
      if (t !== ICMP_ECHO_REQUEST && t !== ICMP_ECHO_REPLY && t !== 13 && t !== 14) return;
    }
    const from = readU32(orig, 12);
    if (from === 0 || from >>> 24 === 127 || from >>> 28 >= 0xe) return;
    const now = ingress.now;
    if (now - this.icmpRefillAt >= 1000) {
      this.icmpTokens = this.icmpRate;
      this.icmpRefillAt = now;
    }
    if (this.icmpTokens <= 0) {
      this.counters.FwIcmpRateLimited++;
      return;
    }
    this.icmpTokens--;
    const quote = Math.min(total, 576 - 28);
    const out = Buffer.allocUnsafe(28 + quote);
    orig.copy(out, 28, 0, quote);
    const icmp = this.icmpScratch;
    icmp.type = type;
    icmp.code = code;
    icmp.nextHopMtu = nextHopMtu;
    icmp.bodyOffset = 8;
    icmp.bodyLength = quote;
    emitIcmp(out, 20, icmp);
    const r = this.ipScratch;
    r.src = ingress.address;
    r.dst = from;
    r.protocol = PROTO_ICMP;
    r.ttl = ingress.ttl;
    r.tos = 0xc0;
    r.ident = ingress.nextIpId();
    r.dontFragment = false;
    r.moreFragments = false;
    r.fragmentOffset = 0;
    r.headerLength = 20;
    r.totalLength = out.length;
    emitIpv4Header(out, 0, r);
    this.counters.FwIcmpErrorsSent++;
    ingress.counters.IcmpOutMsgs++;
    if (type === ICMP_DEST_UNREACH) ingress.counters.IcmpOutDestUnreachs++;
    ingress.sendIp(out, null);
    ingress.flushSoon();
  }

  // ------------------------------------------------------------------ what `faultstack fw` shows

  describeSessions(now: number): Record<string, unknown>[] {
    const ext = this.external.address;
    const rows: Record<string, unknown>[] = this.sessions.sessions().map((s) => this.sessions.describeSession(s, ext, now));
    for (const e of this.sessions.expectations()) {
      rows.push({
        kind: 'filter-opening',
        proto: 'udp',
        internal: `${formatIpv4(e.inAddr)}:${e.inPort}`,
        external: `${formatIpv4(ext)}:${e.extPort}`,
        remote: `${formatIpv4(e.remoteAddr)}:${e.remotePorts[0]}-${e.remotePorts[1]}`,
        why: e.why,
        idleMs: Math.round(now - e.lastSeen),
        packetsIn: e.packetsIn,
        bytesIn: e.bytesIn,
        session: e.owner.id,
      });
    }
    return rows;
  }

  describeDrops(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.drops)) out[k] = v;
    return out;
  }
}
