/**
 * The cryptographic transforms faultstack negotiates and runs, by their IANA numbers
 * (RFC 7296 3.3.2, IKEv2 registry), and their node:crypto names. One table for IKE
 * and ESP: a proposal string such as "aes128gcm16-prfsha256-ecp256" (strongSwan's
 * spelling, which is what swanctl.conf users write) is parsed against it.
 */

export const TransformType = { ENCR: 1, PRF: 2, INTEG: 3, DH: 4, ESN: 5 } as const;

/** Encryption algorithms (RFC 7296 3.3.2; AES-GCM RFC 4106/5282; AES-CBC RFC 3602). */
export const Encr = { AES_CBC: 12, AES_GCM_16: 20 } as const;
/** Pseudorandom functions (RFC 4868 for SHA-2). */
export const Prf = { HMAC_SHA1: 2, HMAC_SHA2_256: 5, HMAC_SHA2_384: 6, HMAC_SHA2_512: 7 } as const;
/** Integrity algorithms (RFC 2404, RFC 4868). */
export const Integ = { NONE: 0, HMAC_SHA1_96: 2, HMAC_SHA2_256_128: 12, HMAC_SHA2_384_192: 13, HMAC_SHA2_512_256: 14 } as const;
/** Diffie-Hellman groups (RFC 3526 MODP, RFC 5903 ECP, RFC 8031 Curve25519/448). */
export const DhGroup = { MODP2048: 14, MODP3072: 15, MODP4096: 16, ECP256: 19, ECP384: 20, ECP521: 21, CURVE25519: 31, CURVE448: 32 } as const;
/** Key Length attribute of an ENCR transform (RFC 7296 3.3.5). */
export const ATTR_KEY_LENGTH = 14;

export interface PrfInfo {
  id: number;
  name: string;
  hash: string;
  /** Output and preferred key size in bytes. */ size: number;
}
export interface IntegInfo {
  id: number;
  name: string;
  hash: string;
  keySize: number;
  icvSize: number;
}
export interface EncrInfo {
  id: number;
  name: string;
  aead: boolean;
  block: number;
  ivSize: number;
  icvSize: number;
  /** Salt bytes taken from the key material (RFC 4106 8.1: 4 for GCM). */ saltSize: number;
}
export interface DhInfo {
  id: number;
  name: string;
  kind: 'modp' | 'ecp' | 'x';
  /** node:crypto name: getDiffieHellman group, ECDH curve, or the X25519/X448 key type. */ node: string;
  /** Length of the key exchange data (RFC 7296 3.4, RFC 5903 7). */ keLength: number;
}

export const PRFS: Record<number, PrfInfo> = {
  [Prf.HMAC_SHA1]: { id: Prf.HMAC_SHA1, name: 'PRF_HMAC_SHA1', hash: 'sha1', size: 20 },
  [Prf.HMAC_SHA2_256]: { id: Prf.HMAC_SHA2_256, name: 'PRF_HMAC_SHA2_256', hash: 'sha256', size: 32 },
  [Prf.HMAC_SHA2_384]: { id: Prf.HMAC_SHA2_384, name: 'PRF_HMAC_SHA2_384', hash: 'sha384', size: 48 },
  [Prf.HMAC_SHA2_512]: { id: Prf.HMAC_SHA2_512, name: 'PRF_HMAC_SHA2_512', hash: 'sha512', size: 64 },
};

export const INTEGS: Record<number, IntegInfo> = {
  [Integ.HMAC_SHA1_96]: { id: Integ.HMAC_SHA1_96, name: 'HMAC_SHA1_96', hash: 'sha1', keySize: 20, icvSize: 12 },
  [Integ.HMAC_SHA2_256_128]: { id: Integ.HMAC_SHA2_256_128, name: 'HMAC_SHA2_256_128', hash: 'sha256', keySize: 32, icvSize: 16 },
  [Integ.HMAC_SHA2_384_192]: { id: Integ.HMAC_SHA2_384_192, name: 'HMAC_SHA2_384_192', hash: 'sha384', keySize: 48, icvSize: 24 },
  [Integ.HMAC_SHA2_512_256]: { id: Integ.HMAC_SHA2_512_256, name: 'HMAC_SHA2_512_256', hash: 'sha512', keySize: 64, icvSize: 32 },
};

export const ENCRS: Record<number, EncrInfo> = {
  [Encr.AES_CBC]: { id: Encr.AES_CBC, name: 'AES_CBC', aead: false, block: 16, ivSize: 16, icvSize: 0, saltSize: 0 },
  [Encr.AES_GCM_16]: { id: Encr.AES_GCM_16, name: 'AES_GCM_16', aead: true, block: 4, ivSize: 8, icvSize: 16, saltSize: 4 },
};

export const DH_GROUPS: Record<number, DhInfo> = {
  [DhGroup.MODP2048]: { id: DhGroup.MODP2048, name: 'MODP_2048', kind: 'modp', node: 'modp14', keLength: 256 },
  [DhGroup.MODP3072]: { id: DhGroup.MODP3072, name: 'MODP_3072', kind: 'modp', node: 'modp15', keLength: 384 },
  [DhGroup.MODP4096]: { id: DhGroup.MODP4096, name: 'MODP_4096', kind: 'modp', node: 'modp16', keLength: 512 },
  [DhGroup.ECP256]: { id: DhGroup.ECP256, name: 'ECP_256', kind: 'ecp', node: 'prime256v1', keLength: 64 },
  [DhGroup.ECP384]: { id: DhGroup.ECP384, name: 'ECP_384', kind: 'ecp', node: 'secp384r1', keLength: 96 },
  [DhGroup.ECP521]: { id: DhGroup.ECP521, name: 'ECP_521', kind: 'ecp', node: 'secp521r1', keLength: 132 },
  [DhGroup.CURVE25519]: { id: DhGroup.CURVE25519, name: 'CURVE_25519', kind: 'x', node: 'x25519', keLength: 32 },
  [DhGroup.CURVE448]: { id: DhGroup.CURVE448, name: 'CURVE_448', kind: 'x', node: 'x448', keLength: 56 },
};

/** node:crypto cipher name for an ENCR transform and key size. */
export function cipherName(encr: number, keyBits: number): string {
  if (encr === Encr.AES_GCM_16) return `aes-${keyBits}-gcm`;
  if (encr === Encr.AES_CBC) return `aes-${keyBits}-cbc`;
  throw new RangeError(`no cipher for ENCR ${encr}`);
}

/** One transform as negotiated: type, id and (for ENCR) key length in bits. */
export interface Transform {
  type: number;
  id: number;
  keyBits?: number;
}

/** A proposal as configured: alternatives for each transform type, in preference order. */
export interface ProposalSpec {
  /** The text it was parsed from (for messages). */
  text: string;
  encr: { id: number; keyBits: number }[];
  prf: number[];
  integ: number[];
  dh: number[];
  esn: number[];
}

/** What one negotiated suite is, resolved: the chosen transform of each type. */
export interface ChosenSuite {
  encr: number;
  keyBits: number;
  /** PRF (IKE SAs only). */
  prf?: number;
  /** Integ.NONE for an AEAD cipher. */
  integ: number;
  /** 0 for none (ESP without PFS). */
  dh: number;
  /** Extended sequence numbers (ESP only). */
  esn: boolean;
}

const ENCR_TOKENS: [RegExp, (m: RegExpMatchArray) => { id: number; keyBits: number }][] = [
  [/^aes(128|192|256)gcm(16|128)$/, (m) => ({ id: Encr.AES_GCM_16, keyBits: Number(m[1]) })],
  [/^aes(128|192|256)$/, (m) => ({ id: Encr.AES_CBC, keyBits: Number(m[1]) })],
  [/^aes$/, () => ({ id: Encr.AES_CBC, keyBits: 128 })],
];
const PRF_TOKENS: Record<string, number> = {
  prfsha1: Prf.HMAC_SHA1,
  prfsha256: Prf.HMAC_SHA2_256,
  prfsha384: Prf.HMAC_SHA2_384,
  prfsha512: Prf.HMAC_SHA2_512,
};
const INTEG_TOKENS: Record<string, number> = {
  sha1: Integ.HMAC_SHA1_96,
  sha: Integ.HMAC_SHA1_96,
  sha256: Integ.HMAC_SHA2_256_128,
  sha384: Integ.HMAC_SHA2_384_192,
  sha512: Integ.HMAC_SHA2_512_256,
};
const INTEG_TO_PRF: Record<number, number> = {
  [Integ.HMAC_SHA1_96]: Prf.HMAC_SHA1,
  [Integ.HMAC_SHA2_256_128]: Prf.HMAC_SHA2_256,
  [Integ.HMAC_SHA2_384_192]: Prf.HMAC_SHA2_384,
  [Integ.HMAC_SHA2_512_256]: Prf.HMAC_SHA2_512,
};
const DH_TOKENS: Record<string, number> = {
  modp2048: DhGroup.MODP2048,
  modp3072: DhGroup.MODP3072,
  modp4096: DhGroup.MODP4096,
  ecp256: DhGroup.ECP256,
  ecp384: DhGroup.ECP384,
  ecp521: DhGroup.ECP521,
  curve25519: DhGroup.CURVE25519,
  x25519: DhGroup.CURVE25519,
  curve448: DhGroup.CURVE448,
  x448: DhGroup.CURVE448,
};

/** The tokens a proposal may contain, for error messages. */
export const PROPOSAL_TOKENS =
  'aes128|aes192|aes256 (CBC), aes128gcm16|aes192gcm16|aes256gcm16, sha1|sha256|sha384|sha512 (integrity), prfsha1|prfsha256|prfsha384|prfsha512, modp2048|modp3072|modp4096|ecp256|ecp384|ecp521|curve25519|curve448, esn|noesn';

/**
 * Parses a strongSwan-style proposal ("aes128-sha256-modp2048", "aes256gcm16-prfsha384-ecp384",
 * ESP: "aes128gcm16", "aes256-sha256-modp2048-esn"). For IKE without a prf token, the
 * PRF follows the integrity algorithm, as strongSwan does. Throws RangeError naming the
 * bad token.
 */
export function parseProposal(text: string, kind: 'ike' | 'esp'): ProposalSpec {
  const spec: ProposalSpec = { text, encr: [], prf: [], integ: [], dh: [], esn: [] };
  const tokens = text.trim().toLowerCase().split('-').filter(Boolean);
  if (tokens.length === 0) throw new RangeError('is empty');
  for (const t of tokens) {
    let hit = false;
    for (const [re, f] of ENCR_TOKENS) {
      const m = t.match(re);
      if (m) {
        spec.encr.push(f(m));
        hit = true;
        break;
      }
    }
    if (hit) continue;
    if (t in PRF_TOKENS) {
      if (kind === 'esp') throw new RangeError(`"${t}": a PRF belongs to IKE proposals only`);
      spec.prf.push(PRF_TOKENS[t]!);
      continue;
    }
    if (t in INTEG_TOKENS) {
      spec.integ.push(INTEG_TOKENS[t]!);
      continue;
    }
    if (t in DH_TOKENS) {
      spec.dh.push(DH_TOKENS[t]!);
      continue;
    }
    if (t === 'esn' || t === 'noesn') {
      if (kind === 'ike') throw new RangeError(`"${t}": ESN belongs to ESP proposals only`);
      spec.esn.push(t === 'esn' ? 1 : 0);
      continue;
    }
    throw new RangeError(`unknown algorithm "${t}" (known: ${PROPOSAL_TOKENS})`);
  }
  if (spec.encr.length === 0) throw new RangeError('names no encryption algorithm (e.g. aes128 or aes128gcm16)');
  const aead = spec.encr.every((e) => ENCRS[e.id]!.aead);
  const mixed = spec.encr.some((e) => ENCRS[e.id]!.aead) && !aead;
  if (mixed) throw new RangeError('mixes AEAD (gcm) and non-AEAD ciphers in one proposal: make two proposals');
  if (aead && spec.integ.length > 0) throw new RangeError('gives an integrity algorithm with an AEAD cipher (gcm authenticates by itself)');
  if (!aead && spec.integ.length === 0) throw new RangeError('needs an integrity algorithm with a CBC cipher (e.g. sha256)');
  if (kind === 'ike') {
    if (spec.prf.length === 0) {
      if (aead) throw new RangeError('needs a PRF with an AEAD cipher (e.g. prfsha256)');
      spec.prf = spec.integ.map((i) => INTEG_TO_PRF[i]!);
    }
    if (spec.dh.length === 0) throw new RangeError('needs a Diffie-Hellman group for IKE (e.g. modp2048 or ecp256)');
  }
  if (kind === 'esp' && spec.esn.length === 0) spec.esn.push(0);
  return spec;
}

/** Human name of a suite, as strongSwan logs it: "AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256". */
export function suiteName(s: ChosenSuite): string {
  const parts = [`${ENCRS[s.encr]?.name ?? `ENCR${s.encr}`}_${s.keyBits}`];
  if (s.integ !== Integ.NONE) parts.push(INTEGS[s.integ]?.name ?? `INTEG${s.integ}`);
  if (s.prf !== undefined) parts.push(PRFS[s.prf]?.name ?? `PRF${s.prf}`);
  if (s.dh) parts.push(DH_GROUPS[s.dh]?.name ?? `DH${s.dh}`);
  if (s.prf === undefined) parts.push(s.esn ? 'EXT_SEQ' : 'NO_EXT_SEQ');
  return parts.join('/');
}
