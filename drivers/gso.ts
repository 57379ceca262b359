/**
 * What a device does to an offloaded packet, done in software, in one place for whoever
 * needs the wire's packets: an impairment that works per wire packet (loss, corruption,
 * rate: stack/impair), ESP, which hides the transport header from any later offload
 * (stack/ipsec), and a capture of what the wire carries (drivers/pcap.ts).
 *
 * Segmentation of a TCP/IPv4 GSO super-segment (virtio-net GSO_TCPV4), what the kernel
 * does for a device without TSO: a 64 KiB super-segment becomes the MSS-sized packets the
 * wire would carry.
 *
 * Each segment gets the IP and TCP headers of the original (options included) with: total
 * length of its own; IP identification incremented per segment (Linux's TSO without
 * mangleid); sequence number advanced by the payload before it; CWR only on the first
 * segment and FIN and PSH only on the last (RFC 9293 3.1 flags; Linux's tcp_gso_segment
 * does the same); complete IP and TCP checksums. A packet that is not a well-formed
 * GSO TCPv4 packet is returned as it is.
 */
import { VirtioNetHdr, type OffloadMeta } from './device';
import { checksumAdd, checksumFinish, internetChecksum, pseudoHeaderSum } from '../stack/wire/checksum';

const FIN = 0x01,
  PSH = 0x08,
  CWR = 0x80;

/** Is this a GSO TCPv4 super-segment that needs cutting? */
export function isGsoTcp4(pkt: Buffer, meta: OffloadMeta | null | undefined): boolean {
  return !!meta && meta.gsoType === VirtioNetHdr.GSO_TCPV4 && meta.gsoSize > 0 && pkt.length >= 40 && pkt[0]! >> 4 === 4 && pkt[9] === 6;
}

/**
 * Where the segments of a TCP/IPv4 super-segment come from: read once per super-segment
 * (parseTcp4Gso), then each segment is written straight to where its user wants it
 * (writeTcp4Segment), e.g. into the plaintext of an ESP packet, so cutting costs one copy
 * of the payload and no buffer of its own.
 */
export interface Tcp4GsoLayout {
  ihl: number;
  thl: number;
  /** IP + TCP header bytes (copied into every segment). */
  hdr: number;
  payload: number;
  mss: number;
  /** Number of segments. */
  count: number;
  id0: number;
  seq0: number;
  flags0: number;
  src: number;
  dst: number;
}

export function newTcp4GsoLayout(): Tcp4GsoLayout {
  return { ihl: 0, thl: 0, hdr: 0, payload: 0, mss: 0, count: 0, id0: 0, seq0: 0, flags0: 0, src: 0, dst: 0 };
}

/** Fills `l` for `pkt`; false when it is not a well-formed TCP/IPv4 packet (use it as it is). */
export function parseTcp4Gso(pkt: Buffer, meta: OffloadMeta, l: Tcp4GsoLayout): boolean {
  if (pkt.length < 20 || pkt[0]! >> 4 !== 4 || pkt[9] !== 6) return false;
  const ihl = (pkt[0]! & 15) * 4;
  let total = (pkt[2]! << 8) | pkt[3]!;
  // The kernel may hand over a GSO packet with total length 0: the buffer says how long it is.
  if (total === 0 || total > pkt.length) total = pkt.length;
  if (ihl < 20 || total < ihl + 20) return false;
  const thl = (pkt[ihl + 12]! >> 4) * 4;
  const hdr = ihl + thl;
  if (thl < 20 || hdr > total) return false;
  const payload = total - hdr;
  l.ihl = ihl;
  l.thl = thl;
  l.hdr = hdr;
  l.payload = payload;
  // No segment size: one segment of the whole payload (its checksums completed).
  l.mss = meta.gsoSize > 0 ? meta.gsoSize : Math.max(1, payload);
  l.count = Math.max(1, Math.ceil(payload / l.mss));
  l.id0 = (pkt[4]! << 8) | pkt[5]!;
  l.seq0 = pkt.readUInt32BE(ihl + 4);
  l.flags0 = pkt[ihl + 13]!;
  l.src = pkt.readUInt32BE(12);
  l.dst = pkt.readUInt32BE(16);
  return true;
}

/** Length of segment `i` (headers included). */
export function tcp4SegmentLength(l: Tcp4GsoLayout, i: number): number {
  return l.hdr + Math.min(l.mss, l.payload - i * l.mss);
}

/** Writes segment `i` of `pkt` at `seg[at..]`, complete with checksums; returns its length. */
export function writeTcp4Segment(pkt: Buffer, l: Tcp4GsoLayout, i: number, seg: Buffer, at: number): number {
  const { ihl, thl, hdr, mss } = l;
  const off = i * mss;
  const len = Math.min(mss, l.payload - off);
  pkt.copy(seg, at, 0, hdr);
  pkt.copy(seg, at + hdr, hdr + off, hdr + off + len);
  const segTotal = hdr + len;
  seg[at + 2] = segTotal >> 8;
  seg[at + 3] = segTotal & 255;
  const id = (l.id0 + i) & 0xffff;
  seg[at + 4] = id >> 8;
  seg[at + 5] = id & 255;
  seg[at + 10] = 0;
  seg[at + 11] = 0;
  const ipc = internetChecksum(seg, at, ihl);
  seg[at + 10] = ipc >> 8;
  seg[at + 11] = ipc & 255;
  const t = at + ihl;
  seg.writeUInt32BE((l.seq0 + off) >>> 0, t + 4);
  let f = l.flags0;
  if (i > 0) f &= ~CWR;
  if (i < l.count - 1) f &= ~(FIN | PSH);
  seg[t + 13] = f;
  seg[t + 16] = 0;
  seg[t + 17] = 0;
  const tlen = thl + len;
  const c = checksumFinish(checksumAdd(seg, t, tlen, pseudoHeaderSum(l.src, l.dst, 6, tlen)));
  seg[t + 16] = c >> 8;
  seg[t + 17] = c & 255;
  return segTotal;
}

const layout = newTcp4GsoLayout();

/**
 * Cuts `pkt` into segments of at most `meta.gsoSize` payload bytes; each segment is a
 * new buffer with complete checksums. The original is returned alone when it already fits.
 */
export function segmentTcp4(pkt: Buffer, meta: OffloadMeta): Buffer[] {
  if (!parseTcp4Gso(pkt, meta, layout)) return [pkt];
  const out: Buffer[] = [];
  for (let i = 0; i < layout.count; i++) {
    const seg = Buffer.allocUnsafe(tcp4SegmentLength(layout, i));
    writeTcp4Segment(pkt, layout, i, seg, 0);
    out.push(seg);
  }
  return out;
}

/**
 * Completes, in place, a transport checksum left to the device (virtio NEEDS_CSUM): the
 * field at csumStart + csumOffset holds the pseudo-header sum, and the sum over the rest
 * of the packet from csumStart completes it.
 */
export function completeChecksum(pkt: Buffer, meta: OffloadMeta): void {
  const start = meta.csumStart,
    field = meta.csumStart + meta.csumOffset;
  if (field + 2 > pkt.length) return;
  const c = internetChecksum(pkt, start, pkt.length - start);
  pkt[field] = c >> 8;
  pkt[field + 1] = c & 255;
}
