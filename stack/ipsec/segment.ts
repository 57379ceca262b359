/**
 * What the device would have done to an offloaded packet, done in software before
 * ESP hides it: cutting a TSO super-segment into MSS-sized TCP segments, and
 * completing a partial checksum (virtio NEEDS_CSUM). ESP encrypts the transport
 * header, so nothing after it can finish these (RFC 4303 has no offload hook).
 */
import type { OffloadMeta } from '../../drivers/device';
import { CHECKSUMS_VERIFIED, checksumAdd, checksumFinish, pseudoHeaderSum } from '../wire/checksum';
import { PROTO_TCP, emitIpv4Header, newIpv4Repr, parseIpv4Header } from '../wire/ipv4';
import { readU32, writeU16, writeU32 } from '../wire/bytes';
import { CWR, FIN, PSH, TcpField } from '../wire/tcp';

const ip = newIpv4Repr();

/** Completes a CHECKSUM_PARTIAL packet in place: the field holds the pseudo-header sum. */
export function completeChecksum(pkt: Buffer, meta: OffloadMeta): void {
  const at = meta.csumStart + meta.csumOffset;
  if (at + 2 > pkt.length) return;
  writeU16(pkt, at, checksumFinish(checksumAdd(pkt, meta.csumStart, pkt.length - meta.csumStart)));
}

/** Splits a TCPv4 super-segment into segments of `meta.gsoSize` payload bytes, each with correct headers and checksums. */
export function segmentTcp(pkt: Buffer, meta: OffloadMeta): Buffer[] {
  // Our own packet, its TCP checksum partial: the IP header is all that is read.
  if (parseIpv4Header(pkt, 0, pkt.length, ip, CHECKSUMS_VERIFIED) !== 0 || ip.protocol !== PROTO_TCP) return [pkt];
  const ihl = ip.headerLength;
  const thl = (pkt[ihl + TcpField.DATA_OFF] >> 4) * 4;
  const hdr = ihl + thl;
  const payload = ip.totalLength - hdr;
  const mss = meta.gsoSize > 0 ? meta.gsoSize : payload;
  const seq0 = readU32(pkt, ihl + TcpField.SEQ_NUM);
  const flags = pkt[ihl + TcpField.FLAGS];
  const out: Buffer[] = [];
  for (let o = 0, i = 0; o < payload || (payload === 0 && i === 0); o += mss, i++) {
    const n = Math.min(mss, payload - o);
    const seg = Buffer.allocUnsafe(hdr + n);
    pkt.copy(seg, 0, 0, hdr);
    pkt.copy(seg, hdr, hdr + o, hdr + o + n);
    const last = o + n >= payload;
    ip.totalLength = hdr + n;
    // Linux gives each segment of a TSO burst the next IP ID.
    const ident = ip.ident;
    ip.ident = (ident + i) & 0xffff;
    emitIpv4Header(seg, 0, ip);
    ip.ident = ident;
    writeU32(seg, ihl + TcpField.SEQ_NUM, (seq0 + o) >>> 0);
    // FIN and PSH belong to the last segment, CWR to the first (RFC 3168 6.1.2 for CWR).
    seg[ihl + TcpField.FLAGS] = last ? (i === 0 ? flags : flags & ~CWR) : (i === 0 ? flags : flags & ~CWR) & ~(FIN | PSH);
    writeU16(seg, ihl + TcpField.CHECKSUM, 0);
    const tlen = thl + n;
    writeU16(seg, ihl + TcpField.CHECKSUM, checksumFinish(checksumAdd(seg, ihl, tlen, pseudoHeaderSum(ip.src, ip.dst, PROTO_TCP, tlen))));
    out.push(seg);
    if (payload === 0) break;
  }
  return out;
}

