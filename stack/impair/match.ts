/**
 * Which packets an impairment takes: the match part of its spec, tested against the raw
 * IPv4 header and the first bytes of the transport header (no parse, no allocation).
 * A packet that is not IPv4 never matches (the stack drops IPv6 anyway). Ports and TCP
 * flags exist only in the first fragment of a datagram: a later fragment never matches a
 * port or flag criterion, as a tc u32 port filter would not either.
 *
 * --nth and --every count the packets that pass every other criterion; the time window
 * is relative to `addedAt` (the impairment's creation, in the stack's time).
 */
import type { PacketMatch, Prefix, PortRange } from './spec';
import { prefixMask } from '../wire/addr';

function inPrefix(a: number, p: Prefix): boolean {
  return (a & prefixMask(p.prefix)) >>> 0 === p.addr;
}
function inRange(port: number, r: PortRange): boolean {
  return port >= r.lo && port <= r.hi;
}

export class PacketMatcher {
  /** Packets that passed every criterion but --nth/--every. */
  counted = 0;
  private readonly needsPorts: boolean;

  constructor(
    readonly m: PacketMatch,
    readonly addedAt: number,
  ) {
    this.needsPorts = !!(m.sport || m.dport || m.port || m.conn || m.tcpFlags);
  }

  /**
   * Everything but the TCP flags and the packet counting: what a GSO super-segment is
   * tested with before it is cut (its segments share addresses and ports, not flags).
   */
  headerMatch(pkt: Uint8Array, now: number): boolean {
    const m = this.m;
    if (pkt.length < 20 || pkt[0]! >> 4 !== 4) return false;
    const rel = now - this.addedAt;
    if (m.fromMs !== undefined && rel < m.fromMs) return false;
    if (m.untilMs !== undefined && rel >= m.untilMs) return false;
    const proto = pkt[9]!;
    if (m.proto !== undefined && proto !== m.proto) return false;
    const src = ((pkt[12]! << 24) | (pkt[13]! << 16) | (pkt[14]! << 8) | pkt[15]!) >>> 0;
    const dst = ((pkt[16]! << 24) | (pkt[17]! << 16) | (pkt[18]! << 8) | pkt[19]!) >>> 0;
    if (m.src && !inPrefix(src, m.src)) return false;
    if (m.dst && !inPrefix(dst, m.dst)) return false;
    if (!this.needsPorts) return true;
    const ihl = (pkt[0]! & 15) * 4;
    const fragOff = ((pkt[6]! & 0x1f) << 8) | pkt[7]!;
    if (fragOff !== 0 || (proto !== 6 && proto !== 17) || pkt.length < ihl + 4) return false;
    if (m.tcpFlags && (proto !== 6 || pkt.length < ihl + 14)) return false;
    const sport = (pkt[ihl]! << 8) | pkt[ihl + 1]!;
    const dport = (pkt[ihl + 2]! << 8) | pkt[ihl + 3]!;
    if (m.sport && !inRange(sport, m.sport)) return false;
    if (m.dport && !inRange(dport, m.dport)) return false;
    if (m.port && !inRange(sport, m.port) && !inRange(dport, m.port)) return false;
    if (m.conn) {
      const c = m.conn;
      const fwd = src === c.a && sport === c.aPort && dst === c.b && dport === c.bPort;
      const rev = src === c.b && sport === c.bPort && dst === c.a && dport === c.aPort;
      if (!fwd && !rev) return false;
    }
    return true;
  }

  /** The whole test, counting for --nth/--every. */
  test(pkt: Uint8Array, now: number): boolean {
    if (!this.headerMatch(pkt, now)) return false;
    const m = this.m;
    if (m.tcpFlags) {
      const ihl = (pkt[0]! & 15) * 4;
      if ((pkt[ihl + 13]! & m.tcpFlags.mask) !== m.tcpFlags.value) return false;
    }
    if (m.nth === undefined && m.every === undefined) return true;
    const k = ++this.counted;
    if (m.nth !== undefined) return k === m.nth;
    return k % m.every! === 0;
  }
}
