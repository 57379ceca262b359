/**
 * ESP around whole IP packets: tunnel mode (RFC 4303 3.1.2: the inner packet whole,
 * Next Header 4, a new outer header) and transport mode (3.1.1: the transport payload,
 * Next Header = its protocol, the original header kept), as IP protocol 50 or inside
 * UDP to port 4500 (RFC 3948 2.1). Outer header rules from RFC 4301 5.1.2.1: TTL
 * fresh, DSCP copied, DF copied from the inner header in tunnel mode.
 */
import { ESP_NEXT_IPV4, NAT_T_PORT, PROTO_ESP } from '../wire/esp';
import { PROTO_UDP, emitIpv4Header, newIpv4Repr } from '../wire/ipv4';
import { readU16, writeU16 } from '../wire/bytes';
import { espSeal, type EspSa } from './esp';

export interface OuterSpec {
  mode: 'tunnel' | 'transport';
  src: number;
  dst: number;
  /** UDP encapsulation ports, or null for protocol 50. */
  encap: { sport: number; dport: number } | null;
  ident: number;
}

const outer = newIpv4Repr();

/**
 * Protects the IPv4 packet `pkt` (a complete one, checksums done) with `sa`; returns the
 * outer packet, or null when the SA's sequence number space is exhausted.
 */
export function protectPacket(sa: EspSa, pkt: Buffer, spec: OuterSpec): Buffer | null {
  const ihl = (pkt[0] & 15) * 4;
  const total = readU16(pkt, 2);
  const udp = spec.encap ? 8 : 0;
  let out: Buffer | null;
  if (spec.mode === 'tunnel') {
    out = espSeal(sa, ESP_NEXT_IPV4, pkt, 0, total, 20 + udp);
    if (!out) return null;
    outer.dontFragment = (pkt[6] & 0x40) !== 0;
  } else {
    out = espSeal(sa, pkt[9], pkt, ihl, total - ihl, 20 + udp);
    if (!out) return null;
    outer.dontFragment = (pkt[6] & 0x40) !== 0;
  }
  outer.src = spec.src;
  outer.dst = spec.dst;
  outer.tos = pkt[1] & 0xfc; // DSCP copied, ECN not (RFC 4301 5.1.2.1, ECN out of scope)
  outer.ttl = 64;
  outer.ident = spec.ident;
  outer.protocol = spec.encap ? PROTO_UDP : PROTO_ESP;
  outer.totalLength = out.length;
  outer.moreFragments = false;
  outer.fragmentOffset = 0;
  emitIpv4Header(out, 0, outer);
  if (spec.encap) {
    // RFC 3948 2.1: the checksum of ESP-in-UDP SHOULD be sent as zero (ESP has its ICV).
    const ulen = out.length - 20;
    writeU16(out, 20, spec.encap.sport);
    writeU16(out, 22, spec.encap.dport);
    writeU16(out, 24, ulen);
    writeU16(out, 26, 0);
  }
  return out;
}

/** Bytes protectPacket adds at most to a packet under `sa`. */
export function protectOverhead(sa: EspSa, mode: 'tunnel' | 'transport', encap: boolean): number {
  return sa.maxOverhead() + (mode === 'tunnel' ? 20 : 0) + (encap ? 8 : 0);
}

export { NAT_T_PORT };
