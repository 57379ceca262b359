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

const FIN = 0x01, PSH = 0x08, CWR = 0x80;

/** Is this a GSO TCPv4 super-segment that needs cutting? */
export function isGsoTcp4(pkt: Buffer, meta: OffloadMeta | null | undefined): boolean {
  return !!meta && meta.gsoType === VirtioNetHdr.GSO_TCPV4 && meta.gsoSize > 0 && pkt.length >= 40 && (pkt[0]! >> 4) === 4 && pkt[9] === 6;
}

/**
 * Cuts `pkt` into segments of at most `meta.gsoSize` payload bytes; each segment is a
 * new buffer with complete checksums. The original is returned alone when it already fits.
 */
export function segmentTcp4(pkt: Buffer, meta: OffloadMeta): Buffer[] {
  if (pkt.length < 20 || (pkt[0]! >> 4) !== 4 || pkt[9] !== 6) return [pkt];
  const ihl = (pkt[0]! & 15) * 4;
  let total = (pkt[2]! << 8) | pkt[3]!;
  // The kernel may hand over a GSO packet with total length 0: the buffer says how long it is.
  if (total === 0 || total > pkt.length) total = pkt.length;
  if (ihl < 20 || total < ihl + 20) return [pkt];
  const thl = (pkt[ihl + 12]! >> 4) * 4;
  const hdr = ihl + thl;
  if (thl < 20 || hdr > total) return [pkt];
  const payload = total - hdr;
  // No segment size: one segment of the whole payload (its checksums completed).
  const mss = meta.gsoSize > 0 ? meta.gsoSize : Math.max(1, payload);
  const n = Math.max(1, Math.ceil(payload / mss));
  const id0 = (pkt[4]! << 8) | pkt[5]!;
  const seq0 = pkt.readUInt32BE(ihl + 4);
  const flags0 = pkt[ihl + 13]!;
  const src = pkt.readUInt32BE(12), dst = pkt.readUInt32BE(16);
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const off = i * mss;
    const len = Math.min(mss, payload - off);
    const seg = Buffer.allocUnsafe(hdr + len);
    pkt.copy(seg, 0, 0, hdr);
    pkt.copy(seg, hdr, hdr + off, hdr + off + len);
    const segTotal = hdr + len;
    seg[2] = segTotal >> 8; seg[3] = segTotal & 255;
    const id = (id0 + i) & 0xffff;
    seg[4] = id >> 8; seg[5] = id & 255;
    seg[10] = 0; seg[11] = 0;
    const ipc = internetChecksum(seg, 0, ihl);
    seg[10] = ipc >> 8; seg[11] = ipc & 255;
    seg.writeUInt32BE((seq0 + off) >>> 0, ihl + 4);
    let f = flags0;
    if (i > 0) f &= ~CWR;
    if (i < n - 1) f &= ~(FIN | PSH);
    seg[ihl + 13] = f;
    seg[ihl + 16] = 0; seg[ihl + 17] = 0;
    const tlen = thl + len;
    const c = checksumFinish(checksumAdd(seg, ihl, tlen, pseudoHeaderSum(src, dst, 6, tlen)));
    seg[ihl + 16] = c >> 8; seg[ihl + 17] = c & 255;
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
  const start = meta.csumStart, field = meta.csumStart + meta.csumOffset;
  if (field + 2 > pkt.length) return;
  const c = internetChecksum(pkt, start, pkt.length - start);
  pkt[field] = c >> 8;
  pkt[field + 1] = c & 255;
}
