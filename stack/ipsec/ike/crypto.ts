/**
 * IKEv2's cryptography around the key derivation: Diffie-Hellman (RFC 7296 2.14;
 * MODP groups RFC 3526, ECP RFC 5903, Curve25519/448 RFC 8031), the Encrypted payload
 * (3.14; AES-GCM inside IKE per RFC 5282) and pre-shared-key authentication (2.15).
 */
import {
  createCipheriv,
  createDecipheriv,
  createDiffieHellmanGroup,
  createECDH,
  createHmac,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { IKE_HEADER, IkeSyntaxError, emitIkeHeader, parsePayloadChain, type IkeHeader, type PayloadRepr, emitPayloadChain, Payload } from '../../wire/ike';
import { DH_GROUPS, ENCRS, INTEGS, Integ, cipherName, type ChosenSuite } from '../transforms';
import { prf } from '../keys';

// ---------------------------------------------------------------- Diffie-Hellman

/** One side of a Diffie-Hellman exchange in a given group. */
export class KeyExchange {
  readonly group: number;
  /** Key exchange data for the KE payload (3.4): padded to the group's length. */
  readonly publicKey: Buffer;
  private readonly compute: (peer: Buffer) => Buffer;

  constructor(group: number) {
    const g = DH_GROUPS[group];
    if (!g) throw new RangeError(`unsupported Diffie-Hellman group ${group}`);
    this.group = group;
    if (g.kind === 'modp') {
      const dh = createDiffieHellmanGroup(g.node);
      dh.generateKeys();
      const prime = dh.getPrime();
      this.publicKey = leftPad(dh.getPublicKey(), g.keLength);
      this.compute = (peer) => {
        // RFC 6989 2.1: 1 < y < p - 1, or the shared secret is predictable.
        if (!modpPublicValid(peer, prime)) throw new IkeSyntaxError('MODP public value out of range (RFC 6989)');
        return leftPad(dh.computeSecret(peer), g.keLength);
      };
    } else if (g.kind === 'ecp') {
      const ec = createECDH(g.node);
      ec.generateKeys();
      // RFC 5903 7: x | y without the 0x04 prefix; the shared secret is x alone.
      this.publicKey = ec.getPublicKey().subarray(1);
      this.compute = (peer) => {
        try {
          return ec.computeSecret(Buffer.concat([Buffer.from([4]), peer]));
        } catch {
          throw new IkeSyntaxError('ECP public value is not a point on the curve');
        }
      };
    } else {
      const { privateKey, publicKey } = generateKeyPairSync(g.node as 'x25519');
      this.publicKey = rawX(publicKey);
      this.compute = (peer) => {
        const pub = xPublicKey(g.node, peer);
        const s = diffieHellman({ privateKey, publicKey: pub });
        // RFC 8031 2.3: an all-zero secret means a low-order point.
        if (s.every((b) => b === 0)) throw new IkeSyntaxError(`${g.name} public value gives an all-zero secret`);
        return s;
      };
    }
  }

  /** g^ir (2.14: big-endian, padded to the modulus length for MODP). Throws IkeSyntaxError for a bad peer value. */
  sharedSecret(peer: Buffer): Buffer {
    const g = DH_GROUPS[this.group]!;
    if (peer.length !== g.keLength) throw new IkeSyntaxError(`KE data of ${peer.length} bytes for ${g.name} (${g.keLength} expected)`);
    return this.compute(peer);
  }
}

function leftPad(b: Buffer, n: number): Buffer {
  if (b.length >= n) return b;
  return Buffer.concat([Buffer.alloc(n - b.length), b]);
}

function modpPublicValid(y: Buffer, p: Buffer): boolean {
  const yy = BigInt('0x' + (y.toString('hex') || '0'));
  const pp = BigInt('0x' + p.toString('hex'));
  return yy > 1n && yy < pp - 1n;
}

// DER prefixes of SubjectPublicKeyInfo for X25519 / X448 (RFC 8410): the raw key follows.
const X_SPKI: Record<string, Buffer> = {
  x25519: Buffer.from('302a300506032b656e032100', 'hex'),
  x448: Buffer.from('3042300506032b656f033900', 'hex'),
};

function rawX(k: KeyObject): Buffer {
  const der = k.export({ type: 'spki', format: 'der' });
  return der.subarray(der.length - (k.asymmetricKeyType === 'x448' ? 56 : 32));
}

function xPublicKey(type: string, raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([X_SPKI[type]!, raw]), format: 'der', type: 'spki' });
}

// ---------------------------------------------------------------- the Encrypted payload

/** One direction's keys for SK payloads: encryption key (with salt for GCM) and integrity key. */
export interface SkKeys {
  encr: Buffer;
  integ: Buffer;
}

export interface SkSuite {
  encr: number;
  keyBits: number;
  integ: number;
}

function skParams(s: SkSuite) {
  const e = ENCRS[s.encr]!;
  const i = s.integ === Integ.NONE ? null : INTEGS[s.integ]!;
  return { e, i, icv: e.aead ? e.icvSize : i!.icvSize, cipher: cipherName(s.encr, s.keyBits), kb: s.keyBits / 8 };
}

/**
 * A whole protected message (3.14): the header, then an SK payload holding `inner`
 * encrypted. Length fields are final before the ICV (or the AEAD tag over the header
 * and the SK payload header, RFC 5282 5.1) is computed.
 */
export function sealMessage(h: Omit<IkeHeader, 'nextPayload' | 'length'>, inner: PayloadRepr[], suite: SkSuite, keys: SkKeys): Buffer {
  const { e, i, icv, cipher, kb } = skParams(suite);
  const chain = emitPayloadChain(inner);
  const block = e.aead ? 1 : e.block;
  // Pad Length counts the padding bytes; padding + 1 makes the plaintext a whole number of blocks.
  const padLen = (block - ((chain.bytes.length + 1) % block)) % block;
  const pt = Buffer.alloc(chain.bytes.length + padLen + 1);
  chain.bytes.copy(pt, 0);
  pt[pt.length - 1] = padLen;
  const ivLen = e.ivSize;
  const skLen = 4 + ivLen + pt.length + icv;
  const msg = Buffer.alloc(IKE_HEADER + skLen);
  emitIkeHeader(msg, { ...h, nextPayload: Payload.SK, length: msg.length });
  msg[IKE_HEADER] = chain.first;
  msg.writeUInt16BE(skLen, IKE_HEADER + 2);
  const ivOff = IKE_HEADER + 4;
  const iv = randomBytes(ivLen);
  iv.copy(msg, ivOff);
  const ctOff = ivOff + ivLen;
  if (e.aead) {
    const nonce = Buffer.concat([keys.encr.subarray(kb), iv]);
    const c = createCipheriv(cipher as 'aes-128-gcm', keys.encr.subarray(0, kb), nonce, { authTagLength: 16 });
    c.setAAD(msg.subarray(0, ivOff));
    c.update(pt).copy(msg, ctOff);
    c.final();
    c.getAuthTag().copy(msg, ctOff + pt.length);
  } else {
    const c = createCipheriv(cipher, keys.encr.subarray(0, kb), iv);
    c.setAutoPadding(false);
    const ct = Buffer.concat([c.update(pt), c.final()]);
    ct.copy(msg, ctOff);
    createHmac(i!.hash, keys.integ)
      .update(msg.subarray(0, ctOff + ct.length))
      .digest()
      .copy(msg, ctOff + ct.length, 0, icv);
  }
  return msg;
}

/** Why an SK payload could not be opened. */
export class SkIntegrityError extends Error {
  constructor() {
    super('integrity check of the Encrypted payload failed');
    this.name = 'SkIntegrityError';
  }
}

/**
 * Verifies and decrypts the SK payload of `msg` (whose generic header starts at
 * `skOffset`); returns the inner payload chain. Throws SkIntegrityError on a bad ICV
 * (the message is then dropped silently, 2.21) and IkeSyntaxError for a bad layout.
 */
export function openMessage(msg: Buffer, msgLength: number, skOffset: number, innerFirst: number, suite: SkSuite, keys: SkKeys): PayloadRepr[] {
  const { e, i, icv, cipher, kb } = skParams(suite);
  const ivOff = skOffset + 4;
  const ctOff = ivOff + e.ivSize;
  const ctLen = msgLength - ctOff - icv;
  if (ctLen < 1 || (!e.aead && ctLen % e.block !== 0))
    throw new IkeSyntaxError(`Encrypted payload of ${msgLength - skOffset} bytes is too short or not whole blocks`);
  let pt: Buffer;
  if (e.aead) {
    const nonce = Buffer.concat([keys.encr.subarray(kb), msg.subarray(ivOff, ivOff + e.ivSize)]);
    const d = createDecipheriv(cipher as 'aes-128-gcm', keys.encr.subarray(0, kb), nonce, { authTagLength: 16 });
    d.setAAD(msg.subarray(0, ivOff));
    d.setAuthTag(msg.subarray(ctOff + ctLen, ctOff + ctLen + icv));
    pt = d.update(msg.subarray(ctOff, ctOff + ctLen));
    try {
      d.final();
    } catch {
      throw new SkIntegrityError();
    }
  } else {
    const mac = createHmac(i!.hash, keys.integ)
      .update(msg.subarray(0, ctOff + ctLen))
      .digest()
      .subarray(0, icv);
    if (!timingSafeEqual(mac, msg.subarray(ctOff + ctLen, ctOff + ctLen + icv))) throw new SkIntegrityError();
    const d = createDecipheriv(cipher, keys.encr.subarray(0, kb), msg.subarray(ivOff, ctOff));
    d.setAutoPadding(false);
    pt = Buffer.concat([d.update(msg.subarray(ctOff, ctOff + ctLen)), d.final()]);
  }
  try {
    const padLen = pt[pt.length - 1];
    if (padLen + 1 > pt.length) throw new IkeSyntaxError(`Encrypted payload pad length ${padLen} exceeds its ${pt.length} bytes`);
    return parsePayloadChain(pt, 0, pt.length - 1 - padLen, innerFirst);
  } catch (e) {
    if (e instanceof IkeSyntaxError) e.afterIntegrity = true;
    throw e;
  }
}

// ---------------------------------------------------------------- pre-shared key authentication

const KEY_PAD = Buffer.from('Key Pad for IKEv2', 'ascii');

/**
 * AUTH for a shared key (2.15): prf(prf(secret, "Key Pad for IKEv2"), <SignedOctets>), where
 * SignedOctets = the sender's first message | the peer's nonce | prf(SK_p, ID payload body).
 */
export function pskAuth(prfId: number, secret: Buffer, firstMessage: Buffer, peerNonce: Buffer, skP: Buffer, idBody: Buffer): Buffer {
  return prf(prfId, prf(prfId, secret, KEY_PAD), signedOctets(prfId, firstMessage, peerNonce, skP, idBody));
}

/** The octets AUTH covers (2.15): the sender's first message | the peer's nonce | prf(SK_p, ID payload body). */
export function signedOctets(prfId: number, firstMessage: Buffer, peerNonce: Buffer, skP: Buffer, idBody: Buffer): Buffer {
  return Buffer.concat([firstMessage, peerNonce, prf(prfId, skP, idBody)]);
}

/** The body of an ID payload (ID type, three reserved bytes, data): what AUTH signs (2.15 "RestOfIDPayload"). */
export function idBody(idType: number, data: Buffer): Buffer {
  const b = Buffer.alloc(4 + data.length);
  b[0] = idType;
  data.copy(b, 4);
  return b;
}

export function equalConstantTime(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A COOKIE (2.6): version | SHA-256-HMAC(secret, Ni | IPi | SPIi), 1 + 16 bytes. */
export function makeCookie(version: number, secret: Buffer, ni: Buffer, ipi: number, spiI: Buffer): Buffer {
  const ip = Buffer.alloc(4);
  ip.writeUInt32BE(ipi >>> 0);
  const h = createHmac('sha256', secret).update(ni).update(ip).update(spiI).digest();
  return Buffer.concat([Buffer.from([version & 255]), h.subarray(0, 16)]);
}

export type { ChosenSuite };
