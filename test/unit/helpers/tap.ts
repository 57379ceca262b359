/**
 * A tap on the memory link: sees every packet as it is transmitted (parsed, with
 * the virtual time it left), can drop packets by what they are rather than by
 * index, and injects hand-made segments into either stack through the link.
 */
import type { LinkDir } from '../../../drivers/memory';
import { emitIpv4Header, newIpv4Repr, parseIpv4Header, Ipv4Error, PROTO_ICMP, PROTO_TCP, PROTO_UDP } from '../../../stack/wire/ipv4';
import { asSeq, seqValue } from '../../../stack/wire/seq';
import { emitTcp, newTcpRepr, parseTcp, tcpHeaderLength, TcpError, FIN, SYN, RST, ACK, PSH } from '../../../stack/wire/tcp';
import { CHECKSUMS_VERIFIED } from '../../../stack/wire/checksum';
import { A_IP, B_IP, Pair } from './pair';

export interface TcpSeen {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** Payload bytes. */
  len: number;
  mss: number;
  wscale: number;
  sackPermitted: boolean;
  hasTimestamp: boolean;
  tsVal: number;
  tsEcr: number;
  /** SACK blocks as [left, right] pairs. */
  sack: [number, number][];
  payload: Buffer;
}

export interface Seen {
  dir: LinkDir;
  /** Virtual time the packet left its sender. */
  t: number;
  /** Index among packets sent in that direction (as the link counts them). */
  index: number;
  src: number;
  dst: number;
  protocol: number;
  /** More fragments / fragment offset. */
  mf: boolean;
  fragOffset: number;
  tcp: TcpSeen | null;
  /** The packet's bytes (a copy). */
  raw: Buffer;
  dropped: boolean;
  injected: boolean;
}

export function flagsText(f: number): string {
  return [
    [SYN, 'S'],
    [FIN, 'F'],
    [RST, 'R'],
    [PSH, 'P'],
    [ACK, '.'],
  ]
    .filter(([b]) => f & (b as number))
    .map(([, s]) => s)
    .join('');
}

export class Tap {
  readonly seen: Seen[] = [];
  /** Return true to drop the packet (after it is recorded). */
  drop: ((s: Seen) => boolean) | null = null;
  private injecting = false;

  constructor(readonly p: Pair) {
    p.link.dropFilter = (pkt, dir, index) => {
      const s = this.parse(pkt, dir, index);
      this.seen.push(s);
      if (!s.injected && this.drop && this.drop(s)) {
        s.dropped = true;
        return true;
      }
      return false;
    };
  }

  private parse(pkt: Buffer, dir: LinkDir, index: number): Seen {
    const ip = newIpv4Repr();
    const s: Seen = {
      dir,
      t: this.p.clock.now,
      index,
      src: 0,
      dst: 0,
      protocol: -1,
      mf: false,
      fragOffset: 0,
      tcp: null,
      raw: Buffer.from(pkt),
      dropped: false,
      injected: this.injecting,
    };
    if (parseIpv4Header(pkt, 0, pkt.length, ip, CHECKSUMS_VERIFIED) !== Ipv4Error.None) return s;
    s.src = ip.src;
    s.dst = ip.dst;
    s.protocol = ip.protocol;
    s.mf = ip.moreFragments;
    s.fragOffset = ip.fragmentOffset;
    if (ip.protocol === PROTO_TCP && !ip.moreFragments && ip.fragmentOffset === 0) {
      const t = newTcpRepr();
      if (parseTcp(pkt, ip.headerLength, ip.totalLength - ip.headerLength, ip.src, ip.dst, t, CHECKSUMS_VERIFIED) === TcpError.None) {
        const sack: [number, number][] = [];
        for (let i = 0; i < t.sackCount; i++) sack.push([t.sack[i * 2], t.sack[i * 2 + 1]]);
        s.tcp = {
          sport: t.srcPort,
          dport: t.dstPort,
          seq: seqValue(t.seq),
          ack: seqValue(t.ack),
          flags: t.flags,
          window: t.window,
          len: t.payloadLength,
          mss: t.mss,
          wscale: t.wscale,
          sackPermitted: t.sackPermitted,
          hasTimestamp: t.hasTimestamp,
          tsVal: t.tsVal,
          tsEcr: t.tsEcr,
          sack,
          payload: Buffer.from(pkt.subarray(t.payloadOffset, t.payloadOffset + t.payloadLength)),
        };
      }
    }
    return s;
  }

  /** TCP segments seen in `dir` (both directions when omitted), not counting injected ones. */
  tcp(dir?: LinkDir, pred: (t: TcpSeen, s: Seen) => boolean = () => true): (Seen & { tcp: TcpSeen })[] {
    return this.seen.filter((s): s is Seen & { tcp: TcpSeen } => s.tcp !== null && !s.injected && (!dir || s.dir === dir) && pred(s.tcp, s));
  }

  /** Segments carrying payload. */
  data(dir: LinkDir): (Seen & { tcp: TcpSeen })[] {
    return this.tcp(dir, (t) => t.len > 0);
  }

  /** Pure ACKs (no payload, no SYN/FIN/RST). */
  pureAcks(dir: LinkDir): (Seen & { tcp: TcpSeen })[] {
    return this.tcp(dir, (t) => t.len === 0 && (t.flags & (SYN | FIN | RST)) === 0 && (t.flags & ACK) !== 0);
  }

  /** Sends a raw IPv4 packet through the link to stack `to` (it arrives after the link latency). */
  inject(to: 'a' | 'b', pkt: Buffer): void {
    const dev = to === 'b' ? this.p.link.a : this.p.link.b;
    // Anything the sender's stack queued goes out first, so the order is what the test wrote.
    dev.flush();
    this.injecting = true;
    try {
      dev.send(pkt);
      dev.flush();
    } finally {
      this.injecting = false;
    }
  }
}

export interface CraftTcp {
  src?: number;
  dst?: number;
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  payload?: Buffer;
  ts?: [number, number];
  sack?: [number, number][];
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
}

/** An IPv4+TCP packet with correct checksums; by default from A to B. */
export function craftTcp(c: CraftTcp): Buffer {
  const src = c.src ?? A_IP,
    dst = c.dst ?? B_IP;
  const payload = c.payload ?? Buffer.alloc(0);
  const sack = c.sack ?? [];
  const r = newTcpRepr();
  Object.assign(r, {
    srcPort: c.sport,
    dstPort: c.dport,
    seq: asSeq(c.seq),
    ack: asSeq(c.ack ?? 0),
    flags: c.flags,
    window: c.window ?? 65535,
    mss: c.mss ?? -1,
    wscale: c.wscale ?? -1,
    sackPermitted: c.sackPermitted ?? false,
    hasTimestamp: !!c.ts,
    tsVal: c.ts ? c.ts[0] : 0,
    tsEcr: c.ts ? c.ts[1] : 0,
    sackCount: sack.length,
    payloadLength: payload.length,
  });
  r.sack.set(sack.flat());
  // The payload must already sit after where the header goes.
  const hlen = tcpHeaderLength(r);
  const pkt = Buffer.alloc(20 + hlen + payload.length);
  payload.copy(pkt, 20 + hlen);
  emitTcp(pkt, 20, r, src, dst);
  emitIpv4Header(pkt, 0, { ...newIpv4Repr(), src, dst, protocol: PROTO_TCP, ttl: 64, ident: 4242, dontFragment: true, totalLength: pkt.length });
  return pkt;
}

/** An IPv4 packet (any protocol) with the given payload and fragment fields; by default from A to B. */
export function craftIp(o: {
  src?: number;
  dst?: number;
  protocol: number;
  payload: Buffer;
  ident?: number;
  mf?: boolean;
  fragOffset?: number;
  df?: boolean;
  ttl?: number;
}): Buffer {
  const pkt = Buffer.alloc(20 + o.payload.length);
  o.payload.copy(pkt, 20);
  emitIpv4Header(pkt, 0, {
    ...newIpv4Repr(),
    src: o.src ?? A_IP,
    dst: o.dst ?? B_IP,
    protocol: o.protocol,
    ttl: o.ttl ?? 64,
    ident: o.ident ?? 1,
    moreFragments: o.mf ?? false,
    fragmentOffset: o.fragOffset ?? 0,
    dontFragment: o.df ?? false,
    totalLength: pkt.length,
  });
  return pkt;
}

export { PROTO_ICMP, PROTO_TCP, PROTO_UDP };
