/**
 * ARP for IPv4 over Ethernet (RFC 826), the only hardware/protocol pair we speak:
 *
 *   0      hardware type (1, Ethernet)       2  protocol type (0x0800, IPv4)
 *   4      hardware length (6)  5 protocol length (4)  6  operation (1 request, 2 reply)
 *   8      sender hardware address (6)       14 sender protocol address (4)
 *   18     target hardware address (6)       24 target protocol address (4)   = 28 bytes
 *
 * `parseArp` checks the fixed part first (8 bytes), then that the lengths are the ones
 * this pair implies and that the packet holds all 28 bytes, before it reads an address.
 * RFC 826 lets a receiver skip packets whose hardware or protocol type it does not
 * know; a packet claiming Ethernet/IPv4 with other lengths is malformed, and counted so.
 * Anything after byte 28 (link padding, Habets' arping pads to 44) is ignored.
 */
import { readU32, writeU16, writeU32 } from './bytes';
import { MacAddr, readMac, writeMac } from './ethernet';

export const ARP_LEN = 28;
export const ARP_FIXED_LEN = 8;
export const ARP_HTYPE_ETHERNET = 1;
export const ARP_PTYPE_IPV4 = 0x0800;
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;

/** Byte offsets of the packet's fields (RFC 826, for Ethernet and IPv4). */
export const enum ArpField {
  HTYPE = 0,
  PTYPE = 2,
  HLEN = 4,
  PLEN = 5,
  OPER = 6,
  SHA = 8,
  SPA = 14,
  THA = 18,
  TPA = 24,
}

export const enum ArpError {
  None = 0,
  /** Fewer than the 8 bytes of the fixed part, or fewer than the 28 its lengths call for. */
  Truncated = 1,
  /** Not Ethernet (1) / IPv4 (0x0800): not for us to interpret (RFC 826 "?Do I have the hardware type"). */
  UnsupportedType = 2,
  /** Ethernet/IPv4 but a hardware length other than 6 or a protocol length other than 4. */
  BadLengths = 3,
  /** An operation other than request (1) or reply (2) (RARP and InARP live elsewhere). */
  BadOperation = 4,
}

export interface ArpRepr {
  operation: number;
  senderHardwareAddr: MacAddr;
  senderProtocolAddr: number;
  targetHardwareAddr: MacAddr;
  targetProtocolAddr: number;
}

export function newArpRepr(): ArpRepr {
  return { operation: 0, senderHardwareAddr: 0, senderProtocolAddr: 0, targetHardwareAddr: 0, targetProtocolAddr: 0 };
}

export function parseArp(buf: Uint8Array, off: number, len: number, out: ArpRepr): ArpError {
  if (len < ARP_FIXED_LEN) return ArpError.Truncated;
  const htype = (buf[off + ArpField.HTYPE] << 8) | buf[off + ArpField.HTYPE + 1];
  const ptype = (buf[off + ArpField.PTYPE] << 8) | buf[off + ArpField.PTYPE + 1];
  if (htype !== ARP_HTYPE_ETHERNET || ptype !== ARP_PTYPE_IPV4) return ArpError.UnsupportedType;
  if (buf[off + ArpField.HLEN] !== 6 || buf[off + ArpField.PLEN] !== 4) return ArpError.BadLengths;
  if (len < ARP_LEN) return ArpError.Truncated;
  const op = (buf[off + ArpField.OPER] << 8) | buf[off + ArpField.OPER + 1];
  if (op !== ARP_OP_REQUEST && op !== ARP_OP_REPLY) return ArpError.BadOperation;
  out.operation = op;
  out.senderHardwareAddr = readMac(buf, off + ArpField.SHA);
  out.senderProtocolAddr = readU32(buf, off + ArpField.SPA);
  out.targetHardwareAddr = readMac(buf, off + ArpField.THA);
  out.targetProtocolAddr = readU32(buf, off + ArpField.TPA);
  return ArpError.None;
}

/** Writes the 28-byte packet at `off`; returns its length. */
export function emitArp(buf: Uint8Array, off: number, r: ArpRepr): number {
  writeU16(buf, off + ArpField.HTYPE, ARP_HTYPE_ETHERNET);
  writeU16(buf, off + ArpField.PTYPE, ARP_PTYPE_IPV4);
  buf[off + ArpField.HLEN] = 6;
  buf[off + ArpField.PLEN] = 4;
  writeU16(buf, off + ArpField.OPER, r.operation);
  writeMac(buf, off + ArpField.SHA, r.senderHardwareAddr);
  writeU32(buf, off + ArpField.SPA, r.senderProtocolAddr);
  writeMac(buf, off + ArpField.THA, r.targetHardwareAddr);
  writeU32(buf, off + ArpField.TPA, r.targetProtocolAddr);
  return ARP_LEN;
}

/**
 * RFC 5227 2.3 / RFC 5944 4.6: an ARP Announcement (gratuitous ARP) is a request whose
 * sender and target protocol addresses are both the announced address. An ARP Probe
 * (RFC 5227 2.1.1) has sender protocol address 0; neither asks anyone to reply.
 */
export function isGratuitous(r: ArpRepr): boolean {
  return r.senderProtocolAddr === r.targetProtocolAddr && r.senderProtocolAddr !== 0;
}

export function isProbe(r: ArpRepr): boolean {
  return r.operation === ARP_OP_REQUEST && r.senderProtocolAddr === 0;
}
