/**
 * IPv4 addresses are carried through the stack as unsigned 32-bit numbers in host
 * arithmetic (198.18.0.2 === 0xc6120002), which makes comparisons, hashing and
 * prefix matching cheap. Strings exist only at the API edge.
 */
export type Ipv4Addr = number;

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Parses dotted-quad notation; returns null when it is not a valid IPv4 address. */
export function parseIpv4(text: string): Ipv4Addr | null {
  const m = DOTTED.exec(text.trim());
  if (!m) return null;
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const o = Number(m[i]);
    if (o > 255) return null;
    v = v * 256 + o;
  }
  return v >>> 0;
}

export function formatIpv4(a: Ipv4Addr): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

export interface Ipv4Cidr {
  addr: Ipv4Addr;
  prefix: number;
}

/** Parses "198.18.0.2/24"; null when malformed (address or prefix 0..32). */
export function parseCidr(text: string): Ipv4Cidr | null {
  const slash = text.indexOf('/');
  if (slash < 0) return null;
  const addr = parseIpv4(text.slice(0, slash));
  const ptext = text.slice(slash + 1);
  if (addr === null || !/^\d{1,2}$/.test(ptext)) return null;
  const prefix = Number(ptext);
  if (prefix > 32) return null;
  return { addr, prefix };
}

export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function sameSubnet(a: Ipv4Addr, b: Ipv4Addr, prefix: number): boolean {
  const m = prefixMask(prefix);
  return (a & m) >>> 0 === (b & m) >>> 0;
}
