/**
 * IKE identities (RFC 7296 3.5) as users write them, in strongSwan's notation (which
 * is what a swanctl.conf `id =` holds), and as they travel in ID payloads:
 *
 *   198.18.50.1     ID_IPV4_ADDR
 *   client1@lab     ID_RFC822_ADDR (an @ inside)
 *   @host.example   ID_FQDN (the leading @ forces FQDN)   host.example  ID_FQDN
 *   @#0a0b0c        ID_KEY_ID (hex)
 *   %any            any identity (configuration only)
 */
import { formatIpv4, parseIpv4 } from '../../wire/addr';
import { IdType } from '../../wire/ike';
import type { PeerIdentity } from '../sad';

export interface WireId {
  idType: number;
  data: Buffer;
}

export const ANY_ID = '%any';

/** Parses a configured identity; throws RangeError with what is valid. */
export function parseIdentity(text: string): WireId {
  const t = text.trim();
  if (t === '') throw new RangeError('is empty');
  if (t.startsWith('@#')) {
    const hex = t.slice(2);
    if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new RangeError(`"${t}": @# must be followed by hex bytes (a KEY_ID)`);
    return { idType: IdType.KEY_ID, data: Buffer.from(hex, 'hex') };
  }
  if (t.startsWith('@')) return { idType: IdType.FQDN, data: Buffer.from(t.slice(1), 'utf8') };
  const ip = parseIpv4(t);
  if (ip !== null) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(ip);
    return { idType: IdType.IPV4_ADDR, data: b };
  }
  if (t.includes('='))
    throw new RangeError(`"${t}": distinguished names (certificate identities) are not supported; use an FQDN, an e-mail style name or an IPv4 address`);
  if (t.includes('@')) return { idType: IdType.RFC822_ADDR, data: Buffer.from(t, 'utf8') };
  return { idType: IdType.FQDN, data: Buffer.from(t, 'utf8') };
}

/** The text form of a received identity. */
export function identityText(idType: number, data: Buffer): string {
  switch (idType) {
    case IdType.IPV4_ADDR:
      return data.length === 4 ? formatIpv4(data.readUInt32BE(0)) : `ipv4:${data.toString('hex')}`;
    case IdType.FQDN:
    case IdType.RFC822_ADDR:
      return data.toString('utf8');
    case IdType.KEY_ID:
      return `@#${data.toString('hex')}`;
    case IdType.DER_ASN1_DN:
      return `dn:${data.toString('hex')}`;
    default:
      return `id${idType}:${data.toString('hex')}`;
  }
}

export function peerIdentity(idType: number, data: Buffer): PeerIdentity {
  return { type: idType, value: identityText(idType, data) };
}

/** Does a configured identity (or %any) match a received one? Type and bytes must agree; FQDN and RFC822 text also matches across the two types. */
export function identityMatches(configured: string, idType: number, data: Buffer): boolean {
  if (configured.trim() === ANY_ID) return true;
  let want: WireId;
  try {
    want = parseIdentity(configured);
  } catch {
    return false;
  }
  if (want.idType === idType && want.data.equals(data)) return true;
  const texty = (t: number) => t === IdType.FQDN || t === IdType.RFC822_ADDR;
  return texty(want.idType) && texty(idType) && want.data.equals(data);
}
