/**
 * What a router does to a datagram it forwards, on the bytes: incremental checksum
 * updates (RFC 1624), TTL decrement (RFC 1812 5.3.1), source/destination rewriting
 * for NAT (RFC 3022) with the transport checksum kept right whether it is complete
 * or an offloaded partial one, and fragmentation (RFC 791 3.2). No allocation except
 * where a new packet is made (fragments).
 *
 * An offloaded partial checksum (virtio NEEDS_CSUM, Linux's CHECKSUM_PARTIAL) holds
 * the folded pseudo-header sum, not complemented; the device adds the transport
 * header and data to it. Changing an address (part of the pseudo-header) therefore
 * changes that seed, while changing a port (in the summed data) changes nothing.
 */
import { IP_FLAG_DF, IP_FLAG_MF, PROTO_ICMP, PROTO_TCP, PROTO_UDP } from '../wire/ipv4';
import { readU16, readU32, writeU16, writeU32 } from '../wire/bytes';
import { internetChecksum } from '../wire/checksum';

function fold(s: number): number {
  s = (s & 0xffff) + (s >>> 16);
  return (s & 0xffff) + (s >>> 16);
}

/** RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one 16-bit word changing from m to m'. */
export function csumReplace16(csum: number, from: number, to: number): number {
  return ~fold((~csum & 0xffff) + (~from & 0xffff) + (to & 0xffff)) & 0xffff;
}

/** The same for a 32-bit field (an address): two words. */
export function csumReplace32(csum: number, from: number, to: number): number {
  return csumReplace16(csumReplace16(csum, from >>> 16, to >>> 16), from & 0xffff, to & 0xffff);
}

/** A partial checksum's seed (not complemented) after a pseudo-header word changes. */
export function seedReplace32(seed: number, from: number, to: number): number {
  return fold(seed + (~(from >>> 16) & 0xffff) + (to >>> 16) + (~from & 0xffff) + (to & 0xffff));
}

/** Offset of the transport checksum field from the transport header, or -1. */
export function l4ChecksumOffset(protocol: number): number {
  return protocol === PROTO_TCP ? 16 : protocol === PROTO_UDP ? 6 : protocol === PROTO_ICMP ? 2 : -1;
}

/** Does the transport part of this datagram start here (not a non-first fragment) and hold `need` bytes? */
export function hasL4(pkt: Buffer, ihl: number, total: number, need: number): boolean {
  return (readU16(pkt, 6) & 0x1fff) === 0 && total >= ihl + need;
}

/** TTL minus one, header checksum updated (RFC 1812 5.3.1, RFC 1624). */
export function decrementTtl(pkt: Buffer): void {
  const before = readU16(pkt, 8);
  pkt[8] = pkt[8] - 1;
  writeU16(pkt, 10, csumReplace16(readU16(pkt, 10), before, readU16(pkt, 8)));
}

/**
 * Rewrites the source (`which` 0) or destination (1) address and transport port of a
 * datagram: TCP/UDP ports, or the ICMP echo identifier (which stands for the source port
 * in either direction: an echo reply carries the request's identifier). `partial`: the
 * transport checksum is an offloaded seed. `port` -1 keeps the port. `ip` is where the
 * header starts (a datagram quoted in an ICMP error starts inside another one) and `end`
 * where the bytes end: a field past it (the TCP checksum of an 8-byte quote) is left alone.
 */
export function rewriteEndpoint(pkt: Buffer, ip: number, which: 0 | 1, addr: number, port: number, partial: boolean, end = pkt.length): void {
  const ihl = ip + (pkt[ip] & 15) * 4;
  const aOff = ip + (which === 0 ? 12 : 16);
  const oldAddr = readU32(pkt, aOff);
  const proto = pkt[ip + 9];
  const first = (readU16(pkt, ip + 6) & 0x1fff) === 0;
  if (oldAddr !== addr) {
    writeU32(pkt, aOff, addr);
    writeU16(pkt, ip + 10, csumReplace32(readU16(pkt, ip + 10), oldAddr, addr));
  }
  if (!first) return;
  if (proto === PROTO_TCP || proto === PROTO_UDP) {
    const cOff = ihl + (proto === PROTO_TCP ? 16 : 6);
    let c = cOff + 2 <= end ? readU16(pkt, cOff) : 0;
    const udpNone = proto === PROTO_UDP && c === 0 && !partial; // RFC 768: no checksum, keep it so
    const pOff = ihl + which * 2;
    if (pOff + 2 > end) return;
    const oldPort = readU16(pkt, pOff);
    if (port >= 0) writeU16(pkt, pOff, port);
    if (udpNone || cOff + 2 > end) return;
    if (partial) {
      if (oldAddr !== addr) c = seedReplace32(c, oldAddr, addr);
    } else {
      if (oldAddr !== addr) c = csumReplace32(c, oldAddr, addr);
      if (port >= 0 && port !== oldPort) c = csumReplace16(c, oldPort, port);
      if (proto === PROTO_UDP && c === 0) c = 0xffff;
    }
    writeU16(pkt, cOff, c);
  } else if (proto === PROTO_ICMP && port >= 0 && ihl + 6 <= end) {
    const old = readU16(pkt, ihl + 4);
    if (old === port) return;
    writeU16(pkt, ihl + 4, port);
    writeU16(pkt, ihl + 2, csumReplace16(readU16(pkt, ihl + 2), old, port));
  }
}

/** Writes a complete transport checksum in place of an offloaded seed (for a device without checksum offload). */
export function finishPartialChecksum(pkt: Buffer, csumStart: number, csumOffset: number, total: number): void {
  const at = csumStart + csumOffset;
  // The seed is in the field already: summing the region with it in place gives the checksum.
  let c = internetChecksum(pkt, csumStart, total - csumStart);
  if (pkt[9] === PROTO_UDP && c === 0) c = 0xffff;
  writeU16(pkt, at, c);
}

/**
 * Cuts a datagram into fragments that fit `mtu` (RFC 791 3.2): each fragment repeats the
 * base header and the options whose copy flag is set (3.1); the first keeps all options.
 * The datagram may itself be a fragment (its offset and MF carry over). Returns new
 * buffers; `pkt` is left as it was.
 */
export function fragment(pkt: Buffer, mtu: number): Buffer[] {
  const ihl = (pkt[0] & 15) * 4;
  const total = readU16(pkt, 2);
  const ff = readU16(pkt, 6);
  const baseOff = (ff & 0x1fff) * 8;
  const lastMf = (ff & IP_FLAG_MF) !== 0;
  const copied = copiedOptions(pkt, ihl);
  const out: Buffer[] = [];
  let off = 0;
  const data = total - ihl;
  while (off < data) {
    const hl = off === 0 ? ihl : 20 + copied.length;
    const room = (mtu - hl) & ~7;
    const n = Math.min(room, data - off);
    const mf = off + n < data || lastMf;
    const f = Buffer.allocUnsafe(hl + n);
    pkt.copy(f, 0, 0, 20);
    if (off === 0) pkt.copy(f, 20, 20, ihl);
    else f.set(copied, 20);
    pkt.copy(f, hl, ihl + off, ihl + off + n);
    f[0] = 0x40 | (hl >> 2);
    writeU16(f, 2, hl + n);
    writeU16(f, 6, (ff & IP_FLAG_DF) | (mf ? IP_FLAG_MF : 0) | (((baseOff + off) >> 3) & 0x1fff));
    writeU16(f, 10, 0);
    writeU16(f, 10, internetChecksum(f, 0, hl));
    out.push(f);
    off += n;
  }
  return out;
}

/** Options of a header that go on every fragment (copy flag 0x80), padded to 4 bytes. */
function copiedOptions(pkt: Buffer, ihl: number): Buffer {
  const keep: number[] = [];
  for (let i = 20; i < ihl;) {
    const t = pkt[i];
    if (t === 0) break;
    if (t === 1) {
      i++;
      continue;
    }
    const l = pkt[i + 1];
    if (l < 2 || i + l > ihl) break;
    if (t & 0x80) for (let k = 0; k < l; k++) keep.push(pkt[i + k]);
    i += l;
  }
  while (keep.length % 4 !== 0) keep.push(0);
  return Buffer.from(keep);
}
