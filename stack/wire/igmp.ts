/**
 * IGMP version 2 (RFC 2236), the host side: queries in, membership reports and leaves out.
 *
 *   0 type  1 max response time (1/10 s)  2 checksum  4 group address   = 8 bytes
 *
 * Types: 0x11 membership query (general: group 0, or group-specific), 0x16 version 2
 * membership report, 0x17 leave group, 0x12 version 1 membership report (RFC 1112).
 * A query longer than 8 bytes is an IGMPv3 query (RFC 3376 7.1): a version 2 host
 * treats it as a version 2 query (RFC 2236 2.5 says to ignore what follows the 8th byte).
 * A query with max response time 0 comes from an IGMPv1 router (RFC 2236 4): 10 s applies.
 *
 * The IP header of what a host sends (RFC 2236 2): TTL 1 and the Router Alert option
 * (RFC 2113). We write it as Linux does (the bytes in test/unit/ethernet-wire.test.ts):
 * TOS 0xc0 (internetwork control), DF, identification 0, a 24-byte header.
 */
import { internetChecksum } from './checksum';
import { readU32, writeU16, writeU32 } from './bytes';
import { IP_FLAG_DF, Ipv4Field } from './ipv4';

export const IGMP_LEN = 8;
export const IGMP_MEMBERSHIP_QUERY = 0x11;
export const IGMP_V1_MEMBERSHIP_REPORT = 0x12;
export const IGMP_V2_MEMBERSHIP_REPORT = 0x16;
export const IGMP_LEAVE_GROUP = 0x17;
export const PROTO_IGMP = 2;

/** 224.0.0.1, all systems on this subnet: every host is a member, none reports it (RFC 2236 6). */
export const ALL_SYSTEMS = 0xe0000001;
/** 224.0.0.2, all routers: where leaves go (RFC 2236 3). */
export const ALL_ROUTERS = 0xe0000002;

/** Byte offsets of the message's fields (RFC 2236 2). */
export const enum IgmpField {
  TYPE = 0,
  MAX_RESP = 1,
  CHECKSUM = 2,
  GROUP = 4,
}

export const enum IgmpError {
  None = 0,
  Truncated = 1,
  BadChecksum = 2,
}

export interface IgmpRepr {
  type: number;
  /** In tenths of a second, as on the wire. */
  maxRespTime: number;
  group: number;
}

export function newIgmpRepr(): IgmpRepr {
  return { type: 0, maxRespTime: 0, group: 0 };
}

/** Parses the IGMP message at `buf[off, off+len)` (the IP payload). The checksum covers all of it. */
export function parseIgmp(buf: Uint8Array, off: number, len: number, out: IgmpRepr): IgmpError {
  if (len < IGMP_LEN) return IgmpError.Truncated;
  if (internetChecksum(buf, off, len) !== 0) return IgmpError.BadChecksum;
  out.type = buf[off + IgmpField.TYPE];
  out.maxRespTime = buf[off + IgmpField.MAX_RESP];
  out.group = readU32(buf, off + IgmpField.GROUP);
  return IgmpError.None;
}

export function emitIgmp(buf: Uint8Array, off: number, r: IgmpRepr): number {
  buf[off + IgmpField.TYPE] = r.type;
  buf[off + IgmpField.MAX_RESP] = r.maxRespTime;
  writeU16(buf, off + IgmpField.CHECKSUM, 0);
  writeU32(buf, off + IgmpField.GROUP, r.group);
  writeU16(buf, off + IgmpField.CHECKSUM, internetChecksum(buf, off, IGMP_LEN));
  return IGMP_LEN;
}

/** IPv4 header length of what we send: 20 + the 4-byte Router Alert option. */
export const IGMP_IP_HEADER_LEN = 24;

/**
 * A whole IGMP datagram (IPv4 header with Router Alert, then the message), as Linux
 * writes it. `src` may be 0 (RFC 2236 leaves it to the host; we always have one).
 */
export function buildIgmpDatagram(src: number, dst: number, r: IgmpRepr): Buffer {
  const pkt = Buffer.alloc(IGMP_IP_HEADER_LEN + IGMP_LEN);
  // The IPv4 header with its option, field by field (emitIpv4Header writes none).
  pkt[Ipv4Field.VER_IHL] = 0x46; // version 4, IHL 6 (24 bytes)
  pkt[Ipv4Field.TOS] = 0xc0; // precedence internetwork control
  writeU16(pkt, Ipv4Field.LENGTH, IGMP_IP_HEADER_LEN + IGMP_LEN);
  writeU16(pkt, Ipv4Field.FLG_OFF, IP_FLAG_DF); // identification 0
  pkt[Ipv4Field.TTL] = 1; // RFC 2236 2
  pkt[Ipv4Field.PROTOCOL] = PROTO_IGMP;
  writeU32(pkt, Ipv4Field.SRC_ADDR, src);
  writeU32(pkt, Ipv4Field.DST_ADDR, dst);
  // RFC 2113 Router Alert: copied flag + option 20, length 4, value 0 ("examine packet").
  pkt[20] = 0x94;
  pkt[21] = 4;
  pkt[22] = 0;
  pkt[23] = 0;
  writeU16(pkt, Ipv4Field.CHECKSUM, internetChecksum(pkt, 0, IGMP_IP_HEADER_LEN));
  emitIgmp(pkt, IGMP_IP_HEADER_LEN, r);
  return pkt;
}
