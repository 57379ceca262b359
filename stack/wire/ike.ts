/**
 * IKEv2 messages (RFC 7296 3): the header, the payload chain and each payload's
 * body, parsed into representations with every length checked before it is used,
 * and emitted from representations.
 *
 *   header (3.1, 28 bytes): SPIi(8) SPIr(8) Next Payload(1) Version(1) Exchange(1) Flags(1) Message ID(4) Length(4)
 *   generic payload header (3.2): Next Payload(1) C|RESERVED(1) Payload Length(2)
 *
 * The Encrypted payload (SK, 3.14) is kept as bytes here: decrypting it is the
 * protocol's business (stack/ipsec/ike/sk.ts); its plaintext is another payload chain
 * that `parsePayloadChain` reads, starting with the SK payload's Next Payload value.
 * A malformed message raises IkeSyntaxError, which the responder counts and answers
 * (INVALID_SYNTAX) or drops; it never escapes to the stack.
 */
import { readU16, readU32, writeU16, writeU32 } from './bytes';

export const IKE_HEADER = 28;
export const IKE_VERSION = 0x20;

/** Exchange types (3.1). */
export const Exchange = { IKE_SA_INIT: 34, IKE_AUTH: 35, CREATE_CHILD_SA: 36, INFORMATIONAL: 37 } as const;
/** Header flags (3.1). */
export const IkeFlag = { INITIATOR: 0x08, VERSION: 0x10, RESPONSE: 0x20 } as const;

/** Payload types (3.2). */
export const Payload = {
  NONE: 0,
  SA: 33,
  KE: 34,
  IDi: 35,
  IDr: 36,
  CERT: 37,
  CERTREQ: 38,
  AUTH: 39,
  NONCE: 40,
  NOTIFY: 41,
  DELETE: 42,
  VENDOR: 43,
  TSi: 44,
  TSr: 45,
  SK: 46,
  CP: 47,
  EAP: 48,
  SKF: 53,
} as const;

/** Protocol IDs in proposals, notifies and deletes (3.3.1). */
export const ProtocolId = { IKE: 1, AH: 2, ESP: 3 } as const;

/** Notify message types (3.10.1) that faultstack sends or acts on. */
export const Notify = {
  UNSUPPORTED_CRITICAL_PAYLOAD: 1,
  INVALID_IKE_SPI: 4,
  INVALID_MAJOR_VERSION: 5,
  INVALID_SYNTAX: 7,
  INVALID_MESSAGE_ID: 9,
  INVALID_SPI: 11,
  NO_PROPOSAL_CHOSEN: 14,
  INVALID_KE_PAYLOAD: 17,
  AUTHENTICATION_FAILED: 24,
  SINGLE_PAIR_REQUIRED: 34,
  NO_ADDITIONAL_SAS: 35,
  INTERNAL_ADDRESS_FAILURE: 36,
  FAILED_CP_REQUIRED: 37,
  TS_UNACCEPTABLE: 38,
  INVALID_SELECTORS: 39,
  TEMPORARY_FAILURE: 43,
  CHILD_SA_NOT_FOUND: 44,
  INITIAL_CONTACT: 16384,
  SET_WINDOW_SIZE: 16385,
  ADDITIONAL_TS_POSSIBLE: 16386,
  IPCOMP_SUPPORTED: 16387,
  NAT_DETECTION_SOURCE_IP: 16388,
  NAT_DETECTION_DESTINATION_IP: 16389,
  COOKIE: 16390,
  USE_TRANSPORT_MODE: 16391,
  REKEY_SA: 16393,
  ESP_TFC_PADDING_NOT_SUPPORTED: 16394,
  NON_FIRST_FRAGMENTS_ALSO: 16395,
  MOBIKE_SUPPORTED: 16396,
  IKEV2_FRAGMENTATION_SUPPORTED: 16430,
  SIGNATURE_HASH_ALGORITHMS: 16431,
} as const;

/** Identification types (3.5). */
export const IdType = { IPV4_ADDR: 1, FQDN: 2, RFC822_ADDR: 3, IPV6_ADDR: 5, DER_ASN1_DN: 9, DER_ASN1_GN: 10, KEY_ID: 11 } as const;
/** Authentication methods (3.8; 14 from RFC 7427). */
export const AuthMethod = { RSA_SIG: 1, SHARED_KEY_MIC: 2, DSS_SIG: 3, ECDSA_256: 9, ECDSA_384: 10, ECDSA_521: 11, DIGITAL_SIGNATURE: 14 } as const;
/** Traffic selector types (3.13.1). */
export const TS_IPV4_ADDR_RANGE = 7;
export const TS_IPV6_ADDR_RANGE = 8;

export class IkeSyntaxError extends Error {
  /** Set for a message whose integrity was verified before its payloads failed to parse (it may be answered INVALID_SYNTAX, RFC 7296 2.21.3). */
  afterIntegrity = false;
  constructor(message: string) {
    super(message);
    this.name = 'IkeSyntaxError';
  }
}

export interface IkeHeader {
  spiI: Buffer;
  spiR: Buffer;
  nextPayload: number;
  /** Major version (high nibble of the version byte); 2 for IKEv2. */
  major: number;
  minor: number;
  exchange: number;
  flags: number;
  messageId: number;
  length: number;
}

export interface TransformRepr {
  type: number;
  id: number;
  /** Key Length attribute in bits (3.3.5), when present. */
  keyLength?: number;
}

export interface ProposalRepr {
  num: number;
  protocol: number;
  spi: Buffer;
  transforms: TransformRepr[];
}

export interface TrafficSelectorRepr {
  /** TS_IPV4_ADDR_RANGE; IPv6 selectors are kept with `start`/`end` 0 and `raw` set. */
  type: number;
  /** IP protocol, 0 = any. */
  protocol: number;
  startPort: number;
  endPort: number;
  /** IPv4 addresses as unsigned 32-bit numbers. */
  start: number;
  end: number;
}

export type PayloadRepr =
  | { type: typeof Payload.SA; critical?: boolean; proposals: ProposalRepr[] }
  | { type: typeof Payload.KE; critical?: boolean; group: number; data: Buffer }
  | { type: typeof Payload.IDi | typeof Payload.IDr; critical?: boolean; idType: number; data: Buffer }
  | { type: typeof Payload.AUTH; critical?: boolean; method: number; data: Buffer }
  | { type: typeof Payload.NONCE; critical?: boolean; data: Buffer }
  | { type: typeof Payload.NOTIFY; critical?: boolean; protocol: number; spi: Buffer; notifyType: number; data: Buffer }
  | { type: typeof Payload.DELETE; critical?: boolean; protocol: number; spiSize: number; spis: Buffer[] }
  | { type: typeof Payload.VENDOR; critical?: boolean; data: Buffer }
  | { type: typeof Payload.TSi | typeof Payload.TSr; critical?: boolean; selectors: TrafficSelectorRepr[] }
  | { type: typeof Payload.CERT | typeof Payload.CERTREQ; critical?: boolean; encoding: number; data: Buffer }
  | { type: typeof Payload.CP; critical?: boolean; cfgType: number; data: Buffer }
  /** SK: `body` is IV | ciphertext | ICV; `innerFirst` the type of the first inner payload; `offset` where its generic header starts in the message. */
  | { type: typeof Payload.SK; critical?: boolean; innerFirst: number; body: Buffer; offset: number }
  /** Any other type (EAP, SKF, unknown): kept raw. */
  | { type: number; critical: boolean; raw: Buffer; unknown: true };

/** The member of PayloadRepr whose `type` admits T (IDi and IDr share one shape, so do TSi/TSr and CERT/CERTREQ). */
type Known = Exclude<PayloadRepr, { unknown: true }>;
export type PayloadOf<T extends number> = Known extends infer P ? (P extends { type: infer U } ? (T extends U ? P : never) : never) : never;

/** Parses and checks the header of `buf[0, len)`. The header's Length must not exceed the datagram. */
export function parseIkeHeader(buf: Buffer, len = buf.length): IkeHeader {
  if (len < IKE_HEADER) throw new IkeSyntaxError(`message of ${len} bytes is shorter than the ${IKE_HEADER}-byte IKE header`);
  const length = readU32(buf, 24);
  if (length < IKE_HEADER || length > len) throw new IkeSyntaxError(`header length ${length} does not fit the ${len}-byte datagram`);
  return {
    spiI: Buffer.from(buf.subarray(0, 8)),
    spiR: Buffer.from(buf.subarray(8, 16)),
    nextPayload: buf[16],
    major: buf[17] >> 4,
    minor: buf[17] & 15,
    exchange: buf[18],
    flags: buf[19],
    messageId: readU32(buf, 20),
    length,
  };
}

export function emitIkeHeader(buf: Buffer, h: IkeHeader): void {
  h.spiI.copy(buf, 0, 0, 8);
  h.spiR.copy(buf, 8, 0, 8);
  buf[16] = h.nextPayload;
  buf[17] = (h.major << 4) | (h.minor & 15);
  buf[18] = h.exchange;
  buf[19] = h.flags;
  writeU32(buf, 20, h.messageId >>> 0);
  writeU32(buf, 24, h.length);
}

/**
 * Parses the payload chain in `buf[off, end)` that starts with type `first`. An SK
 * payload ends the chain (3.14: it must be last). Unknown payloads with the critical
 * bit are returned as unknown; the caller answers UNSUPPORTED_CRITICAL_PAYLOAD (2.5).
 */
export function parsePayloadChain(buf: Buffer, off: number, end: number, first: number): PayloadRepr[] {
  const out: PayloadRepr[] = [];
  let type = first;
  let p = off;
  while (type !== Payload.NONE) {
    if (end - p < 4) throw new IkeSyntaxError(`payload ${type} header truncated at offset ${p}`);
    const next = buf[p];
    const critical = (buf[p + 1] & 0x80) !== 0;
    const plen = readU16(buf, p + 2);
    if (plen < 4 || p + plen > end) throw new IkeSyntaxError(`payload ${type} at offset ${p} claims ${plen} bytes, ${end - p} remain`);
    const body = buf.subarray(p + 4, p + plen);
    if (type === Payload.SK) {
      out.push({ type: Payload.SK, critical, innerFirst: next, body: Buffer.from(body), offset: p });
      p += plen;
      if (p !== end) throw new IkeSyntaxError(`${end - p} bytes follow the Encrypted payload, which must be last`);
      return out;
    }
    out.push(parseBody(type, critical, body));
    p += plen;
    type = next;
  }
  if (p !== end) throw new IkeSyntaxError(`${end - p} bytes after the last payload`);
  return out;
}

function need(body: Buffer, n: number, what: string): void {
  if (body.length < n) throw new IkeSyntaxError(`${what} payload of ${body.length} bytes is shorter than ${n}`);
}

function parseBody(type: number, critical: boolean, body: Buffer): PayloadRepr {
  switch (type) {
    case Payload.SA:
      return { type, critical, proposals: parseProposals(body) };
    case Payload.KE:
      need(body, 4, 'KE');
      return { type, critical, group: readU16(body, 0), data: Buffer.from(body.subarray(4)) };
    case Payload.IDi:
    case Payload.IDr:
      need(body, 4, 'ID');
      return { type, critical, idType: body[0], data: Buffer.from(body.subarray(4)) };
    case Payload.AUTH:
      need(body, 4, 'AUTH');
      return { type, critical, method: body[0], data: Buffer.from(body.subarray(4)) };
    case Payload.NONCE:
      return { type, critical, data: Buffer.from(body) };
    case Payload.NOTIFY: {
      need(body, 4, 'Notify');
      const spiSize = body[1];
      need(body, 4 + spiSize, 'Notify');
      return {
        type,
        critical,
        protocol: body[0],
        notifyType: readU16(body, 2),
        spi: Buffer.from(body.subarray(4, 4 + spiSize)),
        data: Buffer.from(body.subarray(4 + spiSize)),
      };
    }
    case Payload.DELETE: {
      need(body, 4, 'Delete');
      const protocol = body[0],
        spiSize = body[1],
        n = readU16(body, 2);
      if (body.length !== 4 + spiSize * n) throw new IkeSyntaxError(`Delete payload of ${body.length} bytes does not hold ${n} SPIs of ${spiSize} bytes`);
      const spis: Buffer[] = [];
      for (let i = 0; i < n; i++) spis.push(Buffer.from(body.subarray(4 + i * spiSize, 4 + (i + 1) * spiSize)));
      return { type, critical, protocol, spiSize, spis };
    }
    case Payload.VENDOR:
      return { type, critical, data: Buffer.from(body) };
    case Payload.TSi:
    case Payload.TSr:
      return { type, critical, selectors: parseSelectors(body) };
    case Payload.CERT:
    case Payload.CERTREQ:
      need(body, 1, 'CERT');
      return { type, critical, encoding: body[0], data: Buffer.from(body.subarray(1)) };
    case Payload.CP:
      need(body, 4, 'CP');
      return { type, critical, cfgType: body[0], data: Buffer.from(body.subarray(4)) };
    default:
      return { type, critical, raw: Buffer.from(body), unknown: true };
  }
}

function parseProposals(body: Buffer): ProposalRepr[] {
  const out: ProposalRepr[] = [];
  let p = 0;
  for (;;) {
    if (body.length - p < 8) throw new IkeSyntaxError(`proposal truncated at offset ${p} of the SA payload`);
    const last = body[p];
    const plen = readU16(body, p + 2);
    if (plen < 8 || p + plen > body.length) throw new IkeSyntaxError(`proposal length ${plen} does not fit the SA payload`);
    const num = body[p + 4],
      protocol = body[p + 5],
      spiSize = body[p + 6],
      nTransforms = body[p + 7];
    if (8 + spiSize > plen) throw new IkeSyntaxError(`proposal SPI of ${spiSize} bytes does not fit`);
    const spi = Buffer.from(body.subarray(p + 8, p + 8 + spiSize));
    const transforms: TransformRepr[] = [];
    let t = p + 8 + spiSize;
    const pend = p + plen;
    for (let i = 0; i < nTransforms; i++) {
      if (pend - t < 8) throw new IkeSyntaxError(`transform ${i + 1} of proposal ${num} truncated`);
      const tlen = readU16(body, t + 2);
      if (tlen < 8 || t + tlen > pend) throw new IkeSyntaxError(`transform length ${tlen} does not fit proposal ${num}`);
      const tr: TransformRepr = { type: body[t + 4], id: readU16(body, t + 6) };
      let a = t + 8;
      while (a < t + tlen) {
        if (t + tlen - a < 4) throw new IkeSyntaxError('transform attribute truncated');
        const at = readU16(body, a);
        if (at & 0x8000) {
          if ((at & 0x7fff) === 14) tr.keyLength = readU16(body, a + 2);
          a += 4;
        } else {
          const alen = readU16(body, a + 2);
          if (a + 4 + alen > t + tlen) throw new IkeSyntaxError('transform attribute value does not fit');
          a += 4 + alen;
        }
      }
      transforms.push(tr);
      t += tlen;
      if (i < nTransforms - 1 && body[t - tlen] !== 3) throw new IkeSyntaxError(`transform ${i + 1} of proposal ${num} says it is the last of ${nTransforms}`);
    }
    if (t !== pend) throw new IkeSyntaxError(`proposal ${num} has ${pend - t} bytes after its transforms`);
    out.push({ num, protocol, spi, transforms });
    p = pend;
    if (last === 0) break;
    if (last !== 2) throw new IkeSyntaxError(`proposal ${num} has Last Substruc ${last} (0 or 2 are valid)`);
  }
  if (p !== body.length) throw new IkeSyntaxError(`${body.length - p} bytes after the last proposal`);
  return out;
}

function parseSelectors(body: Buffer): TrafficSelectorRepr[] {
  need(body, 4, 'TS');
  const n = body[0];
  const out: TrafficSelectorRepr[] = [];
  let p = 4;
  for (let i = 0; i < n; i++) {
    if (body.length - p < 8) throw new IkeSyntaxError(`traffic selector ${i + 1} of ${n} truncated`);
    const type = body[p];
    const slen = readU16(body, p + 2);
    if (slen < 8 || p + slen > body.length) throw new IkeSyntaxError(`traffic selector length ${slen} does not fit`);
    if (type === TS_IPV4_ADDR_RANGE) {
      if (slen !== 16) throw new IkeSyntaxError(`IPv4 traffic selector of ${slen} bytes (16 is valid)`);
      out.push({
        type,
        protocol: body[p + 1],
        startPort: readU16(body, p + 4),
        endPort: readU16(body, p + 6),
        start: readU32(body, p + 8),
        end: readU32(body, p + 12),
      });
    } else {
      // IPv6 (or unknown) selectors: kept so the count is right, never matched (IPv4 only).
      out.push({ type, protocol: body[p + 1], startPort: readU16(body, p + 4), endPort: readU16(body, p + 6), start: 0, end: 0 });
    }
    p += slen;
  }
  if (p !== body.length) throw new IkeSyntaxError(`${body.length - p} bytes after the last traffic selector`);
  return out;
}

// ---------------------------------------------------------------- emission

function bodyOf(p: PayloadRepr): Buffer {
  switch (p.type) {
    case Payload.SA:
      return emitProposals((p as PayloadOf<typeof Payload.SA>).proposals);
    case Payload.KE: {
      const k = p as PayloadOf<typeof Payload.KE>;
      const b = Buffer.alloc(4 + k.data.length);
      writeU16(b, 0, k.group);
      k.data.copy(b, 4);
      return b;
    }
    case Payload.IDi:
    case Payload.IDr: {
      const k = p as PayloadOf<typeof Payload.IDi>;
      const b = Buffer.alloc(4 + k.data.length);
      b[0] = k.idType;
      k.data.copy(b, 4);
      return b;
    }
    case Payload.AUTH: {
      const k = p as PayloadOf<typeof Payload.AUTH>;
      const b = Buffer.alloc(4 + k.data.length);
      b[0] = k.method;
      k.data.copy(b, 4);
      return b;
    }
    case Payload.NONCE:
    case Payload.VENDOR:
      return (p as PayloadOf<typeof Payload.NONCE>).data;
    case Payload.NOTIFY: {
      const k = p as PayloadOf<typeof Payload.NOTIFY>;
      const b = Buffer.alloc(4 + k.spi.length + k.data.length);
      b[0] = k.protocol;
      b[1] = k.spi.length;
      writeU16(b, 2, k.notifyType);
      k.spi.copy(b, 4);
      k.data.copy(b, 4 + k.spi.length);
      return b;
    }
    case Payload.DELETE: {
      const k = p as PayloadOf<typeof Payload.DELETE>;
      const b = Buffer.alloc(4 + k.spiSize * k.spis.length);
      b[0] = k.protocol;
      b[1] = k.spiSize;
      writeU16(b, 2, k.spis.length);
      k.spis.forEach((s, i) => s.copy(b, 4 + i * k.spiSize));
      return b;
    }
    case Payload.TSi:
    case Payload.TSr: {
      const k = p as PayloadOf<typeof Payload.TSi>;
      const v4 = k.selectors.filter((s) => s.type === TS_IPV4_ADDR_RANGE);
      const b = Buffer.alloc(4 + 16 * v4.length);
      b[0] = v4.length;
      v4.forEach((s, i) => {
        const o = 4 + 16 * i;
        b[o] = TS_IPV4_ADDR_RANGE;
        b[o + 1] = s.protocol;
        writeU16(b, o + 2, 16);
        writeU16(b, o + 4, s.startPort);
        writeU16(b, o + 6, s.endPort);
        writeU32(b, o + 8, s.start);
        writeU32(b, o + 12, s.end);
      });
      return b;
    }
    case Payload.CERT:
    case Payload.CERTREQ: {
      const k = p as PayloadOf<typeof Payload.CERT>;
      const b = Buffer.alloc(1 + k.data.length);
      b[0] = k.encoding;
      k.data.copy(b, 1);
      return b;
    }
    case Payload.CP: {
      const k = p as PayloadOf<typeof Payload.CP>;
      const b = Buffer.alloc(4 + k.data.length);
      b[0] = k.cfgType;
      k.data.copy(b, 4);
      return b;
    }
    case Payload.SK:
      return (p as PayloadOf<typeof Payload.SK>).body;
    default:
      return (p as { raw: Buffer }).raw;
  }
}

function emitProposals(props: ProposalRepr[]): Buffer {
  const parts: Buffer[] = [];
  props.forEach((pr, pi) => {
    const ts = pr.transforms.map((t, ti) => {
      const b = Buffer.alloc(t.keyLength !== undefined ? 12 : 8);
      b[0] = ti === pr.transforms.length - 1 ? 0 : 3;
      writeU16(b, 2, b.length);
      b[4] = t.type;
      writeU16(b, 6, t.id);
      if (t.keyLength !== undefined) {
        writeU16(b, 8, 0x8000 | 14);
        writeU16(b, 10, t.keyLength);
      }
      return b;
    });
    const h = Buffer.alloc(8 + pr.spi.length);
    const len = h.length + ts.reduce((a, b) => a + b.length, 0);
    h[0] = pi === props.length - 1 ? 0 : 2;
    writeU16(h, 2, len);
    h[4] = pr.num;
    h[5] = pr.protocol;
    h[6] = pr.spi.length;
    h[7] = pr.transforms.length;
    pr.spi.copy(h, 8);
    parts.push(h, ...ts);
  });
  return Buffer.concat(parts);
}

/**
 * Emits a payload chain; `after` is the Next Payload value of the last payload (for
 * the plaintext inside SK it is 0; an SK payload carries its inner first type).
 * Returns the bytes and the type of the first payload.
 */
export function emitPayloadChain(payloads: PayloadRepr[]): { bytes: Buffer; first: number } {
  const parts: Buffer[] = [];
  for (let i = 0; i < payloads.length; i++) {
    const p = payloads[i]!;
    const body = bodyOf(p);
    const h = Buffer.alloc(4);
    h[0] = p.type === Payload.SK ? (p as PayloadOf<typeof Payload.SK>).innerFirst : i + 1 < payloads.length ? payloads[i + 1]!.type : Payload.NONE;
    h[1] = p.critical ? 0x80 : 0;
    if (4 + body.length > 0xffff) throw new RangeError(`payload ${p.type} of ${body.length} bytes is too long`);
    writeU16(h, 2, 4 + body.length);
    parts.push(h, body);
  }
  return { bytes: Buffer.concat(parts), first: payloads.length ? payloads[0]!.type : Payload.NONE };
}

/** A whole unencrypted message: header fields from `h` (nextPayload and length are filled in). */
export function emitIkeMessage(h: Omit<IkeHeader, 'nextPayload' | 'length'>, payloads: PayloadRepr[]): Buffer {
  const chain = emitPayloadChain(payloads);
  const buf = Buffer.alloc(IKE_HEADER + chain.bytes.length);
  emitIkeHeader(buf, { ...h, nextPayload: chain.first, length: buf.length });
  chain.bytes.copy(buf, IKE_HEADER);
  return buf;
}

/** The payloads of a parsed message, with helpers to find one by type. */
export function findPayload<T extends number>(list: PayloadRepr[], type: T): PayloadOf<T> | undefined {
  return list.find((p) => p.type === type) as PayloadOf<T> | undefined;
}

export function findNotify(list: PayloadRepr[], notifyType: number): PayloadOf<typeof Payload.NOTIFY> | undefined {
  return list.find((p) => p.type === Payload.NOTIFY && (p as PayloadOf<typeof Payload.NOTIFY>).notifyType === notifyType) as
    PayloadOf<typeof Payload.NOTIFY> | undefined;
}

/** Notify names for logs and events. */
export function notifyName(t: number): string {
  for (const [k, v] of Object.entries(Notify)) if (v === t) return k;
  return `NOTIFY_${t}`;
}

export function exchangeName(t: number): string {
  for (const [k, v] of Object.entries(Exchange)) if (v === t) return k;
  return `EXCHANGE_${t}`;
}
