/**
 * Ethernet II frames (IEEE 802.3 clause 3 with the EtherType interpretation of the
 * length/type field, RFC 894 for IPv4 over Ethernet) and 48-bit MAC addresses.
 *
 * A MAC address travels through the stack as a plain number (48 bits fit exactly in a
 * double): comparisons, Map keys and copies cost nothing. Strings exist at the edges
 * (CLI, `faultstack neigh`, logs) only.
 *
 * `parseEthernet` checks the length before any field is read and refuses what is not
 * an Ethernet II frame (a type/length field below 0x0600 is an IEEE 802.3 length, i.e.
 * an LLC frame, which nothing above us speaks). `emitEthernet` writes a header from a
 * representation. No FCS: Linux hands TAP devices frames without it, and takes them
 * back the same way; nor does it pad short frames on virtual links (a 42-byte ARP
 * frame stays 42 bytes on a veth or a bridge), so no minimum length beyond the header
 * is enforced on input, and we send unpadded frames as Linux does.
 */

export const ETHERNET_HEADER_LEN = 14;
/** Smallest value of the type/length field that is an EtherType (IEEE 802.3 3.2.6). */
export const ETHERTYPE_MIN = 0x0600;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;
/** Microsoft Network Load Balancing heartbeats (Wireshark's "MS NLB" dissector). */
export const ETHERTYPE_MS_NLB = 0x886f;

/** A MAC address as an unsigned 48-bit integer (01:02:03:04:05:06 === 0x010203040506). */
export type MacAddr = number;

export const BROADCAST_MAC: MacAddr = 0xffffffffffff;
export const ZERO_MAC: MacAddr = 0;

const TWO32 = 0x100000000;

export function readMac(b: Uint8Array, o: number): MacAddr {
  return ((b[o] << 8) | b[o + 1]) * TWO32 + (((b[o + 2] << 24) | (b[o + 3] << 16) | (b[o + 4] << 8) | b[o + 5]) >>> 0);
}

export function writeMac(b: Uint8Array, o: number, mac: MacAddr): void {
  const hi = Math.floor(mac / TWO32);
  const lo = mac >>> 0; // ToUint32 of a number below 2^48 is its low 32 bits
  b[o] = hi >>> 8;
  b[o + 1] = hi & 255;
  b[o + 2] = lo >>> 24;
  b[o + 3] = (lo >>> 16) & 255;
  b[o + 4] = (lo >>> 8) & 255;
  b[o + 5] = lo & 255;
}

/** The I/G bit (IEEE 802 8.2): the least significant bit of the first octet; broadcast included. */
export function isMulticastMac(mac: MacAddr): boolean {
  return (Math.floor(mac / 0x10000000000) & 1) === 1;
}

/** The U/L bit: set in addresses that are locally administered (RFC 7042 2.1). */
export function isLocallyAdministered(mac: MacAddr): boolean {
  return (Math.floor(mac / 0x10000000000) & 2) === 2;
}

/** "02:00:c6:12:00:02" */
export function formatMac(mac: MacAddr): string {
  const b = new Uint8Array(6);
  writeMac(b, 0, mac);
  let s = '';
  for (let i = 0; i < 6; i++) s += (i ? ':' : '') + b[i].toString(16).padStart(2, '0');
  return s;
}

/** Six hex octets separated by ':' or '-' (as Linux and Windows write them); null otherwise. */
export function parseMac(text: string): MacAddr | null {
  const m = /^([0-9a-f]{1,2})([:-])([0-9a-f]{1,2})\2([0-9a-f]{1,2})\2([0-9a-f]{1,2})\2([0-9a-f]{1,2})\2([0-9a-f]{1,2})$/i.exec(text.trim());
  if (!m) return null;
  let v = 0;
  for (const i of [1, 3, 4, 5, 6, 7]) v = v * 256 + parseInt(m[i]!, 16);
  return v;
}

/**
 * RFC 1112 6.4: an IPv4 host group maps to the Ethernet multicast address 01-00-5E-00-00-00
 * plus the low-order 23 bits of the group (so 32 groups share each MAC address).
 */
export function ipv4MulticastMac(group: number): MacAddr {
  return 0x01005e000000 + (group & 0x7fffff);
}

/**
 * faultstack's default MAC for a stack address: 02:00 followed by the four octets of
 * the IPv4 address (198.18.0.2 -> 02:00:c6:12:00:02). 0x02 sets the U/L bit (locally
 * administered, RFC 7042 2.1) and clears the I/G bit (unicast); the second octet 0x00
 * keeps clear of the addresses NLB derives from a cluster address (02-BF-w-x-y-z for the
 * cluster, 02-h-w-x-y-z with h the host priority 1..32). Two stacks with different
 * addresses on one segment get different MACs, and the MAC says whose it is.
 */
export function macFromIpv4(addr: number): MacAddr {
  return 0x020000000000 + (addr >>> 0);
}

/** Byte offsets of the header's fields. */
export const enum EthernetField {
  DST = 0,
  SRC = 6,
  ETHERTYPE = 12,
  PAYLOAD = 14,
}

/** Why a frame was refused; each maps to a counter of the Ethernet interface. */
export const enum EthernetError {
  None = 0,
  /** Shorter than the 14-byte header. */
  Truncated = 1,
  /** The type/length field holds an IEEE 802.3 length (< 0x0600): not Ethernet II. */
  NotEthernetII = 2,
}

export interface EthernetRepr {
  dst: MacAddr;
  src: MacAddr;
  etherType: number;
}

export function newEthernetRepr(): EthernetRepr {
  return { dst: 0, src: 0, etherType: 0 };
}

/**
 * Validates and parses the header of `buf[off, off+len)` into `out`. The payload starts
 * at `off + ETHERNET_HEADER_LEN` and runs to the end of the frame.
 */
export function parseEthernet(buf: Uint8Array, off: number, len: number, out: EthernetRepr): EthernetError {
  if (len < ETHERNET_HEADER_LEN) return EthernetError.Truncated;
  const type = (buf[off + EthernetField.ETHERTYPE] << 8) | buf[off + EthernetField.ETHERTYPE + 1];
  if (type < ETHERTYPE_MIN) return EthernetError.NotEthernetII;
  out.dst = readMac(buf, off + EthernetField.DST);
  out.src = readMac(buf, off + EthernetField.SRC);
  out.etherType = type;
  return EthernetError.None;
}

/** Writes the 14-byte header at `off`; returns its length. */
export function emitEthernet(buf: Uint8Array, off: number, r: EthernetRepr): number {
  writeMac(buf, off + EthernetField.DST, r.dst);
  writeMac(buf, off + EthernetField.SRC, r.src);
  buf[off + EthernetField.ETHERTYPE] = r.etherType >>> 8;
  buf[off + EthernetField.ETHERTYPE + 1] = r.etherType & 255;
  return ETHERNET_HEADER_LEN;
}
