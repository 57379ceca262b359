/** Hand-made IPv4 packets for impairment tests: UDP, TCP with flags, ICMP; checksums computed. */
import { internetChecksum, checksumAdd, checksumFinish, pseudoHeaderSum } from '../../../stack/wire/checksum';
import { parseIpv4 } from '../../../stack/wire/addr';

export interface PacketOptions {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  /** IP identification: tests use it to tell packets apart. */
  id?: number;
  payload?: number | Buffer;
  tos?: number;
}

function ip(proto: number, o: PacketOptions, l4: Buffer): Buffer {
  const b = Buffer.alloc(20 + l4.length);
  b[0] = 0x45;
  b[1] = o.tos ?? 0;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE((o.id ?? 1) & 0xffff, 4);
  b[6] = 0x40;
  b[8] = 64;
  b[9] = proto;
  b.writeUInt32BE(parseIpv4(o.src ?? '198.18.0.2')!, 12);
  b.writeUInt32BE(parseIpv4(o.dst ?? '198.18.0.1')!, 16);
  b.writeUInt16BE(internetChecksum(b, 0, 20), 10);
  l4.copy(b, 20);
  return b;
}

function body(o: PacketOptions): Buffer {
  if (Buffer.isBuffer(o.payload)) return o.payload;
  const n = o.payload ?? 32;
  const p = Buffer.alloc(n);
  for (let i = 0; i < n; i++) p[i] = (i * 7 + (o.id ?? 0)) & 255;
  return p;
}

export function udp(o: PacketOptions = {}): Buffer {
  const data = body(o);
  const u = Buffer.alloc(8 + data.length);
  u.writeUInt16BE(o.sport ?? 5000, 0);
  u.writeUInt16BE(o.dport ?? 9, 2);
  u.writeUInt16BE(u.length, 4);
  data.copy(u, 8);
  const pkt = ip(17, o, u);
  const c = checksumFinish(checksumAdd(pkt, 20, u.length, pseudoHeaderSum(pkt.readUInt32BE(12), pkt.readUInt32BE(16), 17, u.length)));
  pkt.writeUInt16BE(c === 0 ? 0xffff : c, 26);
  return pkt;
}

export const F = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export function tcp(o: PacketOptions & { flags?: number; seq?: number } = {}): Buffer {
  const data = o.payload === undefined ? Buffer.alloc(0) : body(o);
  const t = Buffer.alloc(20 + data.length);
  t.writeUInt16BE(o.sport ?? 40000, 0);
  t.writeUInt16BE(o.dport ?? 80, 2);
  t.writeUInt32BE((o.seq ?? 1000) >>> 0, 4);
  t.writeUInt32BE(0, 8);
  t[12] = 5 << 4;
  t[13] = o.flags ?? F.ACK;
  t.writeUInt16BE(65535, 14);
  data.copy(t, 20);
  const pkt = ip(6, o, t);
  const c = checksumFinish(checksumAdd(pkt, 20, t.length, pseudoHeaderSum(pkt.readUInt32BE(12), pkt.readUInt32BE(16), 6, t.length)));
  pkt.writeUInt16BE(c, 36);
  return pkt;
}

export function icmpEcho(o: PacketOptions = {}): Buffer {
  const data = body(o);
  const m = Buffer.alloc(8 + data.length);
  m[0] = 8;
  m.writeUInt16BE(1, 4);
  m.writeUInt16BE(o.id ?? 1, 6);
  data.copy(m, 8);
  m.writeUInt16BE(internetChecksum(m, 0, m.length), 2);
  return ip(1, o, m);
}

export const ipId = (p: Buffer) => p.readUInt16BE(4);

/** True when the IPv4 header checksum and the TCP/UDP/ICMP checksum hold. */
export function checksumsOk(p: Buffer): boolean {
  const ihl = (p[0]! & 15) * 4;
  if (internetChecksum(p, 0, ihl) !== 0) return false;
  const len = p.readUInt16BE(2) - ihl;
  const proto = p[9]!;
  if (proto === 1) return internetChecksum(p, ihl, len) === 0;
  return checksumFinish(checksumAdd(p, ihl, len, pseudoHeaderSum(p.readUInt32BE(12), p.readUInt32BE(16), proto, len))) === 0;
}
