/**
 * IKEv2 key derivation (RFC 7296 2.13, 2.14, 2.17, 2.18).
 *
 *   prf+(K, S) = T1 | T2 | ...,  T1 = prf(K, S | 0x01),  Tn = prf(K, Tn-1 | S | n)
 *   SKEYSEED = prf(Ni | Nr, g^ir)
 *   SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
 *   rekeyed IKE SA: SKEYSEED = prf(SK_d(old), g^ir(new) | Ni | Nr)
 *   child SA: KEYMAT = prf+(SK_d, [g^ir(new) |] Ni | Nr), taken as
 *             encryption then integrity key for initiator-to-responder, then the same for the reverse
 *
 * For an AEAD cipher there are no SK_a keys and each SK_e carries the salt after the
 * key (RFC 5282 7.1: 4 bytes for GCM).
 */
import { createHmac } from 'node:crypto';
import { ENCRS, INTEGS, Integ, PRFS, type ChosenSuite } from './transforms';

export function prf(prfId: number, key: Buffer, data: Buffer): Buffer {
  const p = PRFS[prfId];
  if (!p) throw new RangeError(`unsupported PRF ${prfId}`);
  return createHmac(p.hash, key).update(data).digest();
}

export function prfPlus(prfId: number, key: Buffer, seed: Buffer, length: number): Buffer {
  const size = PRFS[prfId]!.size;
  // The counter is one byte (2.13): at most 255 blocks.
  if (length > 255 * size) throw new RangeError(`prf+ cannot produce ${length} bytes`);
  const out = Buffer.alloc(length);
  let t: Buffer = Buffer.alloc(0);
  for (let n = 1, off = 0; off < length; n++) {
    t = prf(prfId, key, Buffer.concat([t, seed, Buffer.from([n])]));
    t.copy(out, off, 0, Math.min(t.length, length - off));
    off += t.length;
  }
  return out;
}

/** Key sizes of an IKE or child suite: encryption key (with salt) and integrity key. */
export function keySizes(s: ChosenSuite): { encr: number; integ: number } {
  const e = ENCRS[s.encr]!;
  return { encr: s.keyBits / 8 + e.saltSize, integ: s.integ === Integ.NONE ? 0 : INTEGS[s.integ]!.keySize };
}

export interface IkeKeys {
  skeyseed: Buffer;
  d: Buffer;
  ai: Buffer;
  ar: Buffer;
  ei: Buffer;
  er: Buffer;
  pi: Buffer;
  pr: Buffer;
}

/** SKEYSEED and the seven SK_* keys of an IKE SA (2.14), or of a rekeyed one (2.18) when `oldSkD` is given. */
export function deriveIkeKeys(suite: ChosenSuite, ni: Buffer, nr: Buffer, sharedSecret: Buffer, spiI: Buffer, spiR: Buffer, oldSkD?: Buffer): IkeKeys {
  const prfId = suite.prf!;
  const skeyseed = oldSkD ? prf(prfId, oldSkD, Buffer.concat([sharedSecret, ni, nr])) : prf(prfId, Buffer.concat([ni, nr]), sharedSecret);
  const ps = PRFS[prfId]!.size;
  const { encr, integ } = keySizes(suite);
  const total = ps + 2 * integ + 2 * encr + 2 * ps;
  const km = prfPlus(prfId, skeyseed, Buffer.concat([ni, nr, spiI, spiR]), total);
  let o = 0;
  const take = (n: number) => {
    const b = km.subarray(o, o + n);
    o += n;
    return Buffer.from(b);
  };
  return { skeyseed, d: take(ps), ai: take(integ), ar: take(integ), ei: take(encr), er: take(encr), pi: take(ps), pr: take(ps) };
}

export interface ChildKeys {
  /** Initiator to responder: encryption key (with salt) and integrity key. */
  encI: Buffer;
  integI: Buffer;
  /** Responder to initiator. */
  encR: Buffer;
  integR: Buffer;
}

/** KEYMAT of a child SA (2.17); `sharedSecret` when the exchange carried a KE (PFS). */
export function deriveChildKeys(prfId: number, skD: Buffer, suite: ChosenSuite, ni: Buffer, nr: Buffer, sharedSecret?: Buffer): ChildKeys {
  const { encr, integ } = keySizes(suite);
  const seed = sharedSecret ? Buffer.concat([sharedSecret, ni, nr]) : Buffer.concat([ni, nr]);
  const km = prfPlus(prfId, skD, seed, 2 * (encr + integ));
  let o = 0;
  const take = (n: number) => {
    const b = km.subarray(o, o + n);
    o += n;
    return Buffer.from(b);
  };
  const encI = take(encr),
    integI = take(integ),
    encR = take(encr),
    integR = take(integ);
  return { encI, integI, encR, integR };
}
