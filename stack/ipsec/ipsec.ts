/**
 * IPsec for the stack: the SAD, the SPD, ESP processing and the IKEv2 engine behind
 * the core's IpsecHook (stack/iface/ipsec-hook.ts).
 *
 *   in:  UDP 4500 -> non-ESP marker? IKE : ESP -> SAD by SPI -> replay window, ICV,
 *        decrypt (esp.ts) -> inner IPv4 packet -> Stack.input again -> selector check ->
 *        TCP/UDP/ICMP.  Protocol 50 joins at "ESP", UDP 500 at "IKE".
 *   out: Stack.sendIp -> SAD (the negotiated SAs' selectors) or SPD -> protect:
 *        software TSO/checksum, ESP, outer header, UDP 4500 -> device; bypass: as is;
 *        discard: dropped.
 *
 * The peer identity IKE proved is on every IKE and child SA; `sasByIdentity()` and
 * `subscribe()` are the typed API other modules (the NLB fault) build on.
 */
import { VirtioNetHdr, type OffloadMeta } from '../../drivers/device';
import type { IpsecHook } from '../iface/ipsec-hook';
import { Timer, type TimerQueue } from '../timers';
import { formatIpv4 } from '../wire/addr';
import {
  ESP_NEXT_IPV4,
  ESP_NEXT_NONE,
  EspError,
  IKE_PORT,
  NAT_T_PORT,
  NON_ESP_MARKER,
  PROTO_ESP,
  UdpEncapKind,
  classifyUdpEncap,
  newEspRepr,
  parseEsp,
} from '../wire/esp';
import { type ChecksumCaps, internetChecksum } from '../wire/checksum';
import { PROTO_TCP, PROTO_UDP, type Ipv4Repr } from '../wire/ipv4';
import { readU16, writeU16 } from '../wire/bytes';
import { UDP_HEADER, UdpError, UdpField, emitUdp, newUdpRepr, parseUdp } from '../wire/udp';
import type { IpsecConfig } from './config';
import { OpenResult, espOpen, type OpenedPacket } from './esp';
import { IkeEngine, newIkeCounters, type InitiateOptions, type IpsecEvent } from './ike/engine';
import type { IkeSa, IkeSaView } from './ike/ike-sa';
import type { KeyLog } from './keylog';
import { protectOverhead, protectPacket, protectTcpSegment, type OuterSpec } from './packet';
import { Sad, type ChildSa, type Endpoint } from './sad';
import { completeChecksum, newTcp4GsoLayout, parseTcp4Gso, segmentTcp4 } from '../../drivers/gso';
import { Spd } from './spd';
import { randomBytes } from 'node:crypto';

/** What IPsec needs from the stack around it (the Stack satisfies it). */
export interface IpsecStackHost {
  readonly timers: TimerQueue;
  /** Re-enters IP input with a decrypted packet. */
  input(pkt: Buffer, meta: null, now: number): void;
  /** Sends an IPv4 packet; IPsec sees it in output() again (and lets its own through). */
  sendIp(pkt: Buffer, meta: OffloadMeta | null): void;
  /** Sends a transport payload in as many IP fragments as the MTU needs. */
  sendDatagram(protocol: number, src: number, dst: number, payload: Buffer, dontFragment: boolean): boolean;
  nextIpId(): number;
  pathMtu(dst: number): number;
  flushSoon(): void;
}

/** Counters named as Linux's /proc/net/xfrm_stat names them, where one fits, and faultstack's own (Fs*). */
export function newXfrmCounters() {
  return {
    XfrmInError: 0,
    XfrmInHdrError: 0,
    XfrmInNoStates: 0,
    XfrmInStateProtoError: 0,
    XfrmInStateModeError: 0,
    XfrmInStateSeqError: 0,
    XfrmInStateExpired: 0,
    XfrmInStateMismatch: 0,
    XfrmInTmplMismatch: 0,
    XfrmInNoPols: 0,
    XfrmInPolBlock: 0,
    XfrmOutError: 0,
    XfrmOutNoStates: 0,
    XfrmOutStateSeqError: 0,
    XfrmOutPolBlock: 0,
    FsEspInPackets: 0,
    FsEspOutPackets: 0,
    FsEspInUdpEncap: 0,
    FsEspDummyPackets: 0,
    FsNatKeepalives: 0,
    FsIpsecUdpErrors: 0,
    FsIpsecSoftwareSegments: 0,
    FsIpsecOuterFragmented: 0,
  };
}
export type IpsecCounters = ReturnType<typeof newXfrmCounters> & ReturnType<typeof newIkeCounters>;

export interface IpsecOptions {
  keylog?: KeyLog | null;
  /** How often lifetimes, retransmissions and liveness are looked at (ms). */
  tickMs?: number;
  /**
   * Wall-clock time (ms since the epoch), for certificate validity only: passed in like
   * every time source. Without it no certificate is valid (PSK works regardless).
   */
  wallClock?: () => number;
}

/** Everything known about one identity's SAs (what `sasByIdentity()` returns per identity). */
export interface IdentitySas {
  identity: string;
  ike: IkeSaView[];
  children: ChildSa[];
}

export class Ipsec implements IpsecHook {
  readonly counters: IpsecCounters = { ...newXfrmCounters(), ...newIkeCounters() };
  readonly sad = new Sad(() => randomBytes(4).readUInt32BE(0));
  readonly spd: Spd;
  readonly ike: IkeEngine;
  private readonly listeners = new Set<(e: IpsecEvent) => void>();
  private readonly esp = newEspRepr();
  private readonly udp = newUdpRepr();
  private readonly udpOut = newUdpRepr();
  private readonly opened: OpenedPacket = { payload: Buffer.alloc(0), nextHeader: 0, seq: 0 };
  /** The SA the packet now re-entering IP input was decrypted with. */
  private via: ChildSa | null = null;
  /** Our own outer packets pass output() untouched. */
  private emitting = false;
  private readonly timer: Timer;
  private readonly tickMs: number;
  private keylog: KeyLog | null;
  private closed = false;
  now = 0;

  constructor(
    private readonly host: IpsecStackHost,
    private config: IpsecConfig,
    opts: IpsecOptions = {},
  ) {
    this.spd = new Spd(config.defaultPolicy);
    for (const p of config.policies) this.spd.add(p);
    this.keylog = opts.keylog ?? null;
    this.tickMs = opts.tickMs ?? 250;
    this.ike = new IkeEngine(
      {
        send: (msg, local, remote) => this.sendIke(msg, local, remote),
        sad: this.sad,
        counters: this.counters,
        event: (e) => this.emit(e),
        ...(opts.wallClock ? { wallClock: opts.wallClock } : {}),
        keysKnown: (ike, child) => {
          if (!this.keylog) return;
          if (child) this.keylog.child(child);
          else this.keylog.ikeSa(ike);
        },
      },
      () => this.config,
    );
    this.timer = new Timer((now) => this.onTick(now));
  }

  /** Starts the periodic work (lifetimes, liveness, retransmissions) at `now`. */
  start(now: number): void {
    this.now = now;
    this.host.timers.arm(this.timer, now + this.tickMs);
  }

  close(): void {
    this.closed = true;
    this.host.timers.disarm(this.timer);
    this.ike.clear();
  }

  private onTick(now: number): void {
    if (this.closed) return;
    this.now = now;
    this.ike.tick(now);
    this.host.timers.arm(this.timer, now + this.tickMs);
    this.host.flushSoon();
  }

  // ------------------------------------------------------------------ the typed API

  /** Every SA by the identity the peer proved (IDi): what the NLB fault keys on. */
  sasByIdentity(): Map<string, IdentitySas> {
    const out = new Map<string, IdentitySas>();
    const get = (id: string) => {
      let e = out.get(id);
      if (!e) {
        e = { identity: id, ike: [], children: [] };
        out.set(id, e);
      }
      return e;
    };
    for (const sa of this.ike.all()) if (sa.identity && (sa.state === 'established' || sa.state === 'rekeyed')) get(sa.identity.value).ike.push(sa);
    for (const c of this.sad.all()) if (c.identity.value) get(c.identity.value).children.push(c);
    return out;
  }

  /** The child SA an inbound or outbound packet of this flow would use, with its identity. */
  childFor(protocol: number, local: number, localPort: number, remote: number, remotePort: number): ChildSa | null {
    return this.sad.outbound(protocol, local, localPort, remote, remotePort);
  }

  /** Subscribes to SA set-up, rekey and deletion; returns the unsubscribe function. */
  subscribe(fn: (e: IpsecEvent) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  private emit(e: IpsecEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        /* a subscriber's bug must not break IKE */
      }
    }
  }

  /** Replaces the configuration (identities, proposals); existing SAs keep what they negotiated. */
  reconfigure(cfg: IpsecConfig): void {
    this.config = cfg;
  }

  /** Stack to stack: IKE initiator towards `remote` (see IkeEngine.initiate). */
  initiate(o: InitiateOptions): IkeSa {
    const sa = this.ike.initiate(o, this.now);
    this.host.flushSoon();
    return sa;
  }

  /** What `faultstack ipsec` shows. */
  describe(now = this.now) {
    return {
      ikeSas: this.ike
        .all()
        .filter((s) => s.state !== 'deleted')
        .map((s) => s.describe(now)),
      childSas: this.sad.all().map((c) => c.describe(now)),
      policies: this.spd.describe(),
      halfOpen: this.ike.halfOpenCount,
      identities: [...this.sasByIdentity().values()].map((e) => ({ identity: e.identity, ikeSas: e.ike.length, childSas: e.children.length })),
      counters: { ...this.counters },
    };
  }

  // ------------------------------------------------------------------ input

  input(ip: Readonly<Ipv4Repr>, buf: Buffer, ipOff: number, off: number, len: number, caps: ChecksumCaps, now: number): boolean {
    this.now = now;
    const proto = ip.protocol;
    const via = this.via;
    if (via !== null) {
      // A decrypted packet: it must be one the SA's selectors admit (RFC 4301 5.2 step 4).
      this.via = null;
      readPorts(proto, buf, off, len, ip.fragmentOffset);
      if (!via.coversInbound(proto, ip.src, sport, ip.dst, dport)) {
        this.counters.XfrmInStateMismatch++;
        return true;
      }
      return false;
    }
    if (proto === PROTO_ESP) {
      this.espInput(buf, ipOff, off, len, false, ip.src, 0, now);
      return true;
    }
    if (proto === PROTO_UDP && len >= 8) {
      const udpDst = readU16(buf, off + UdpField.DST_PORT);
      if (udpDst === NAT_T_PORT || udpDst === IKE_PORT) {
        this.udpInput(ip, buf, ipOff, off, len, caps, udpDst, now);
        return true;
      }
    }
    // Cleartext: nothing the policy protects may come in the clear (RFC 4301 5.2).
    readPorts(proto, buf, off, len, ip.fragmentOffset);
    if (this.sad.size > 0 && this.sad.inboundCovered(proto, ip.src, sport, ip.dst, dport)) {
      this.counters.XfrmInTmplMismatch++;
      return true;
    }
    const p = this.spd.entries.length ? this.spd.lookup(proto, ip.dst, dport, ip.src, sport) : null;
    const action = p ? p.action : this.spd.defaultAction;
    if (action === 'bypass') return false;
    if (action === 'protect') this.counters.XfrmInTmplMismatch++;
    else if (p) this.counters.XfrmInPolBlock++;
    else this.counters.XfrmInNoPols++;
    return true;
  }

  private udpInput(ip: Readonly<Ipv4Repr>, buf: Buffer, ipOff: number, off: number, len: number, caps: ChecksumCaps, dport: number, now: number): void {
    const u = this.udp;
    const src = ip.src,
      dst = ip.dst;
    if (parseUdp(buf, off, len, src, dst, u, caps) !== UdpError.None) {
      this.counters.FsIpsecUdpErrors++;
      return;
    }
    const local: Endpoint = { addr: dst, port: dport };
    const remote: Endpoint = { addr: src, port: u.srcPort };
    if (dport === IKE_PORT) {
      this.ike.input(buf.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength), local, remote, now);
      return;
    }
    switch (classifyUdpEncap(buf, u.payloadOffset, u.payloadLength)) {
      case UdpEncapKind.Keepalive:
        this.counters.FsNatKeepalives++;
        return;
      case UdpEncapKind.Malformed:
        this.counters.XfrmInHdrError++;
        return;
      case UdpEncapKind.Ike:
        this.ike.input(buf.subarray(u.payloadOffset + NON_ESP_MARKER, u.payloadOffset + u.payloadLength), local, remote, now);
        return;
      default:
        this.counters.FsEspInUdpEncap++;
        this.espInput(buf, ipOff, u.payloadOffset, u.payloadLength, true, src, u.srcPort, now);
    }
  }

  /** ESP at buf[off, off+len) (RFC 4303 3.4); the IP header starts at ipOff. */
  private espInput(buf: Buffer, ipOff: number, off: number, len: number, _encap: boolean, _src: number, _sport: number, now: number): void {
    const c = this.counters;
    const e = this.esp;
    if (parseEsp(buf, off, len, e) !== EspError.None) {
      c.XfrmInHdrError++;
      return;
    }
    const child = this.sad.byInbound(e.spi);
    if (!child) {
      c.XfrmInNoStates++;
      return;
    }
    if (now >= child.expiresAt) {
      c.XfrmInStateExpired++;
      return;
    }
    const o = this.opened;
    switch (espOpen(child.inbound, buf, off, len, o)) {
      case OpenResult.Ok:
        break;
      case OpenResult.Replay:
        c.XfrmInStateSeqError++;
        return;
      case OpenResult.Malformed:
        c.XfrmInHdrError++;
        return;
      default:
        c.XfrmInStateProtoError++;
        return;
    }
    c.FsEspInPackets++;
    child.inbound.lastUsed = now;
    // The peer sends on the new SA of a rekey: we may too (RFC 7296 2.8).
    if (!child.outboundActive) this.sad.activate(child);
    let inner: Buffer;
    if (child.mode === 'tunnel') {
      if (o.nextHeader === ESP_NEXT_NONE) {
        c.FsEspDummyPackets++;
        return;
      }
      if (o.nextHeader !== ESP_NEXT_IPV4) {
        c.XfrmInStateModeError++;
        return;
      }
      inner = o.payload;
    } else {
      // Transport mode: the outer header, with the transport protocol back in it (RFC 4303 3.1.1).
      if (o.nextHeader === ESP_NEXT_NONE) {
        c.FsEspDummyPackets++;
        return;
      }
      const ihl = (buf[ipOff] & 15) * 4;
      inner = Buffer.allocUnsafe(ihl + o.payload.length);
      buf.copy(inner, 0, ipOff, ipOff + ihl);
      o.payload.copy(inner, ihl);
      writeU16(inner, 2, inner.length);
      inner[9] = o.nextHeader;
      writeU16(inner, 10, 0);
      writeU16(inner, 10, internetChecksum(inner, 0, ihl));
    }
    this.via = child;
    try {
      this.host.input(inner, null, now);
    } finally {
      this.via = null;
    }
  }

  // ------------------------------------------------------------------ output

  output(pkt: Buffer, meta: OffloadMeta | null, now: number): boolean {
    if (this.emitting) return false;
    if (pkt.length < 20) return false;
    const proto = pkt[9];
    const src = pkt.readUInt32BE(12),
      dst = pkt.readUInt32BE(16);
    const ihl = (pkt[0] & 15) * 4;
    const fragOff = (readU16(pkt, 6) & 0x1fff) * 8;
    readPorts(proto, pkt, ihl, pkt.length - ihl, fragOff);
    const child = this.sad.size > 0 ? this.sad.outbound(proto, src, sport, dst, dport) : null;
    if (child === null) {
      const p = this.spd.entries.length ? this.spd.lookup(proto, src, sport, dst, dport) : null;
      const action = p ? p.action : this.spd.defaultAction;
      if (action === 'bypass') return false;
      // Protect without an SA: a responder has nothing to negotiate with; drop (RFC 4301 5.1).
      if (action === 'protect') this.counters.XfrmOutNoStates++;
      else this.counters.XfrmOutPolBlock++;
      return true;
    }
    if (meta !== null && meta.gsoType !== VirtioNetHdr.GSO_NONE && proto === PROTO_TCP) {
      // A super-segment: in tunnel mode each segment is cut straight into its ESP packet.
      if (child.mode === 'tunnel' && parseTcp4Gso(pkt, meta, gsoLayout)) {
        this.counters.FsIpsecSoftwareSegments += gsoLayout.count;
        for (let i = 0; i < gsoLayout.count; i++) {
          if (!this.sendProtected(child, protectTcpSegment(child.outbound, pkt, gsoLayout, i, this.outerSpec(child)), now)) break;
        }
        return true;
      }
      const segs = segmentTcp4(pkt, meta);
      this.counters.FsIpsecSoftwareSegments += segs.length;
      for (const s of segs) this.protectOne(child, s, now);
    } else {
      if (meta !== null && (meta.flags & VirtioNetHdr.F_NEEDS_CSUM) !== 0) completeChecksum(pkt, meta);
      this.protectOne(child, pkt, now);
    }
    return true;
  }

  /** The outer header's fields for the next packet of `child` (one object, reused). */
  private outerSpec(child: ChildSa): OuterSpec {
    const o = this.spec;
    o.mode = child.mode;
    o.src = child.local.addr;
    o.dst = child.remote.addr;
    if (child.encap) {
      this.encapPorts.sport = child.local.port;
      this.encapPorts.dport = child.remote.port;
      o.encap = this.encapPorts;
    } else o.encap = null;
    o.ident = this.host.nextIpId();
    return o;
  }
  private readonly spec: OuterSpec = { mode: 'tunnel', src: 0, dst: 0, encap: null, ident: 0 };
  private readonly encapPorts = { sport: 0, dport: 0 };

  private protectOne(child: ChildSa, pkt: Buffer, now: number): void {
    this.sendProtected(child, protectPacket(child.outbound, pkt, this.outerSpec(child)), now);
  }

  /** Sends what protectPacket made; false when the SA ran out of sequence numbers (it is being deleted). */
  private sendProtected(child: ChildSa, out: Buffer | null, now: number): boolean {
    if (out === null) {
      // RFC 4303 3.3.3: the sequence number would cycle; the SA must go.
      this.counters.XfrmOutStateSeqError++;
      const ike = this.ike.all().find((s) => s.id === child.ikeSaId);
      if (ike && child.state === 'installed') this.ike.deleteChild(ike, child, 'sequence numbers exhausted', now);
      return false;
    }
    child.outbound.lastUsed = now;
    this.counters.FsEspOutPackets++;
    this.emitting = true;
    try {
      if (out.length <= this.host.pathMtu(child.remote.addr)) this.host.sendIp(out, null);
      else {
        // RFC 4301 8.1: fragmenting after encapsulation (the inner packet had DF clear, or an ICMP reply).
        this.counters.FsIpsecOuterFragmented++;
        this.host.sendDatagram(out[9], child.local.addr, child.remote.addr, out.subarray(20), false);
      }
    } finally {
      this.emitting = false;
    }
    return true;
  }

  overhead(dst: number): number {
    if (this.emitting || this.sad.size === 0) return 0;
    // Per destination, until the SAD changes: pathMtu is asked for every datagram.
    if (this.overheadVersion !== this.sad.version) {
      this.overheadCache.clear();
      this.overheadVersion = this.sad.version;
    }
    const hit = this.overheadCache.get(dst);
    if (hit !== undefined) return hit;
    let most = 0;
    for (const c of this.sad.all()) {
      if (!c.outboundActive) continue;
      if (c.remoteTs.some((s) => dst >= s.start && dst <= s.end)) most = Math.max(most, protectOverhead(c.outbound, c.mode, c.encap));
    }
    if (this.overheadCache.size > 4096) this.overheadCache.clear();
    this.overheadCache.set(dst, most);
    return most;
  }
  private readonly overheadCache = new Map<number, number>();
  private overheadVersion = -1;

  // ------------------------------------------------------------------ IKE transport

  private sendIke(msg: Buffer, local: Endpoint, remote: Endpoint): void {
    // On port 4500 an IKE message follows the non-ESP marker (RFC 3948 2.2).
    const marker = local.port === NAT_T_PORT ? NON_ESP_MARKER : 0;
    const udp = Buffer.alloc(UDP_HEADER + marker + msg.length);
    msg.copy(udp, UDP_HEADER + marker);
    const r = this.udpOut;
    r.srcPort = local.port;
    r.dstPort = remote.port;
    r.payloadLength = marker + msg.length;
    emitUdp(udp, 0, r, local.addr, remote.addr);
    this.emitting = true;
    try {
      this.host.sendDatagram(PROTO_UDP, local.addr, remote.addr, udp, false);
    } finally {
      this.emitting = false;
    }
    this.host.flushSoon();
  }
}

/** The super-segment being cut (output), one for all. */
const gsoLayout = newTcp4GsoLayout();

/** Transport ports of the packet looked at last (no allocation per packet): -1 when unknown. */
let sport = -1,
  dport = -1;
/** Reads the ports into `sport`/`dport`: -1 when not TCP/UDP, a later fragment, or truncated. */
function readPorts(proto: number, buf: Buffer, off: number, len: number, fragOff: number): void {
  if ((proto !== PROTO_TCP && proto !== PROTO_UDP) || fragOff !== 0 || len < 4) {
    sport = -1;
    dport = -1;
    return;
  }
  sport = readU16(buf, off);
  dport = readU16(buf, off + 2);
}

export function describeEndpoint(e: Endpoint): string {
  return `${formatIpv4(e.addr)}:${e.port}`;
}

export type { IpsecEvent, IkeSaView, ChildSa };
