/**
 * ESP processing (RFC 4303 3.3 outbound, 3.4 inbound) for one SA and one direction:
 * AES-GCM with a 16-byte ICV (RFC 4106) and AES-CBC with an HMAC (RFC 3602, RFC 2404,
 * RFC 4868), from node:crypto.
 *
 *   GCM:  nonce = salt(4) | IV(8); AAD = SPI | seq (| seq-high before it with ESN, RFC 4106 5)
 *   CBC:  ICV = HMAC(SPI | seq | IV | ciphertext (| seq-high, RFC 4303 2.2.1)) truncated
 *
 * The GCM IV is the 64-bit sequence number: unique per key, which is all RFC 4106 3.1
 * asks. The CBC IV must be unpredictable (RFC 3602 2.3): it comes from a pool of
 * random bytes refilled 4 KiB at a time.
 */
import { createCipheriv, createDecipheriv, createHmac, randomFillSync, timingSafeEqual } from 'node:crypto';
import {
  ESP_HEADER,
  ESP_TRAILER,
  EspTrailerError,
  emitEspHeader,
  emitEspTrailer,
  espPadLength,
  newEspRepr,
  parseEspTrailer,
  type EspTrailerRepr,
} from '../wire/esp';
import { readU32 } from '../wire/bytes';
import { ReplayVerdict, ReplayWindow } from './replay';
import { ENCRS, Encr, INTEGS, Integ, cipherName } from './transforms';
import { newCbcHmac, newGcm, type CbcHmacContext, type GcmContext } from './aead';

const TWO32 = 0x1_0000_0000;

/** Keys and algorithms of one direction of an ESP SA. */
export interface EspKeys {
  encr: number;
  keyBits: number;
  integ: number;
  esn: boolean;
  /** Cipher key; for GCM followed by the 4-byte salt (RFC 4106 8.1): keyBits/8 + 4 bytes. */
  encKey: Buffer;
  integKey: Buffer;
}

/** Per-SA counters: what `faultstack ipsec` shows per child SA and direction. */
export interface EspSaStats {
  packets: number;
  bytes: number;
  replayDrops: number;
  integrityFailures: number;
  /** Decrypted, but the trailer (padding) was wrong. */
  badTrailers: number;
}

/**
 * One direction of an ESP SA: its SPI, keys, sequence counter (outbound) or replay
 * window (inbound), and counters. AES-GCM runs on one context per SA that only takes a
 * new nonce per packet, AES-CBC + HMAC on one cipher and one HMAC context (aead.ts);
 * without the addon node:crypto contexts are created per packet (node:crypto has no
 * context that takes a new IV).
 */
export class EspSa {
  readonly cipher: string;
  readonly aead: boolean;
  readonly key: Buffer;
  readonly salt: Buffer;
  readonly integHash: string;
  readonly icvSize: number;
  readonly ivSize: number;
  readonly block: number;
  /** Outbound: the last sequence number sent (the next is seq + 1). */
  seq = 0;
  readonly replay: ReplayWindow | null;
  readonly stats: EspSaStats = { packets: 0, bytes: 0, replayDrops: 0, integrityFailures: 0, badTrailers: 0 };
  /** Time of the last packet (either direction), for idle checks. */
  lastUsed = 0;
  /** Scratch GCM nonce (salt | IV) and AAD: node:crypto copies both, so one per SA serves every packet. */
  readonly nonce = Buffer.alloc(12);
  readonly aadBuf: Buffer;
  /** The reusable AES-GCM context (null: CBC, or the addon is not built). */
  readonly gcm: GcmContext | null;
  /** The reusable AES-CBC + HMAC context (null: GCM, or the addon is not built). */
  readonly cbc: CbcHmacContext | null;

  constructor(
    readonly spi: number,
    readonly direction: 'in' | 'out',
    readonly keys: EspKeys,
    replayWindow = 128,
  ) {
    const e = ENCRS[keys.encr];
    if (!e) throw new RangeError(`unsupported ESP encryption ${keys.encr}`);
    this.cipher = cipherName(keys.encr, keys.keyBits);
    this.aead = e.aead;
    const kb = keys.keyBits / 8;
    if (keys.encKey.length !== kb + e.saltSize)
      throw new RangeError(`ESP ${e.name}_${keys.keyBits} needs ${kb + e.saltSize} key bytes, got ${keys.encKey.length}`);
    this.key = keys.encKey.subarray(0, kb);
    this.salt = keys.encKey.subarray(kb);
    this.ivSize = e.ivSize;
    this.block = e.block;
    if (e.aead) {
      this.integHash = '';
      this.icvSize = e.icvSize;
    } else {
      const i = INTEGS[keys.integ];
      if (!i) throw new RangeError(`unsupported ESP integrity algorithm ${keys.integ}`);
      if (keys.integKey.length !== i.keySize) throw new RangeError(`ESP ${i.name} needs a ${i.keySize}-byte key, got ${keys.integKey.length}`);
      this.integHash = i.hash;
      this.icvSize = i.icvSize;
    }
    this.replay = direction === 'in' ? new ReplayWindow(replayWindow, keys.esn) : null;
    this.salt.copy(this.nonce, 0);
    this.aadBuf = Buffer.alloc(keys.esn ? 12 : 8);
    this.gcm = e.aead ? newGcm(this.key) : null;
    this.cbc = e.aead ? null : newCbcHmac(this.key, this.integHash, keys.integKey);
  }

  /** Where espSealAlloc's buffer wants the payload: after headroom, the ESP header and the IV. */
  payloadOffset(headroom: number): number {
    return headroom + ESP_HEADER + this.ivSize;
  }

  /** Bytes ESP adds around a payload of `len` bytes (header, IV, padding, trailer, ICV). */
  overhead(len: number): number {
    return ESP_HEADER + this.ivSize + espPadLength(len, this.block) + ESP_TRAILER + this.icvSize;
  }

  /** The most ESP may add to any payload. */
  maxOverhead(): number {
    return ESP_HEADER + this.ivSize + (Math.max(this.block, 4) - 1) + ESP_TRAILER + this.icvSize;
  }
}

export const enum SealResult {
  Ok = 0,
  SeqOverflow = 1,
}

let ivPool = Buffer.alloc(0);
let ivPoolOff = 0;
function randomIv(dst: Buffer, off: number, n: number): void {
  if (ivPoolOff + n > ivPool.length) {
    ivPool = randomFillSync(Buffer.allocUnsafe(4096));
    ivPoolOff = 0;
  }
  ivPool.copy(dst, off, ivPoolOff, ivPoolOff + n);
  ivPoolOff += n;
}

/** What espSeal writes, one of each reused (no allocation per packet). */
const sealHeader = newEspRepr();
const sealTrailer: EspTrailerRepr = { padLength: 0, nextHeader: 0, payloadLength: 0 };

function writeSeq64(buf: Buffer, off: number, seq: number): void {
  const hi = Math.floor(seq / TWO32);
  buf.writeUInt32BE(hi, off);
  buf.writeUInt32BE(seq % TWO32, off + 4);
}

/**
 * Encrypts `payload[off, off+len)` (an IP packet in tunnel mode, a transport payload in
 * transport mode) into a new buffer: `headroom` free bytes (for the outer IP and UDP
 * headers) and then the ESP packet. Returns null when the sequence number would cycle
 * (RFC 4303 3.3.3: without ESN the SA must be rekeyed before 2^32 packets).
 */
export function espSeal(sa: EspSa, nextHeader: number, payload: Uint8Array, off: number, len: number, headroom: number): Buffer | null {
  const out = espSealAlloc(sa, len, headroom);
  if (!out) return null;
  out.set(payload.subarray(off, off + len), sa.payloadOffset(headroom));
  espSealFinish(sa, nextHeader, out, len, headroom);
  return out;
}

/**
 * The buffer for an ESP packet of a `len`-byte payload, with its sequence number
 * taken: the caller writes the payload at `sa.payloadOffset(headroom)` (so it is copied
 * once, from wherever it is, e.g. a segment of a super-segment) and calls espSealFinish.
 * Null when the sequence number would cycle.
 */
export function espSealAlloc(sa: EspSa, len: number, headroom: number): Buffer | null {
  const next = sa.seq + 1;
  if (!sa.keys.esn && next >= TWO32) return null;
  sa.seq = next;
  return Buffer.allocUnsafe(sa.payloadOffset(headroom) + len + espPadLength(len, sa.block) + ESP_TRAILER + sa.icvSize);
}

/** Writes the header, trailer and ICV around the payload espSealAlloc's buffer holds, and encrypts it in place. */
export function espSealFinish(sa: EspSa, nextHeader: number, out: Buffer, len: number, headroom: number): void {
  const k = sa.keys;
  const next = sa.seq;
  const pad = espPadLength(len, sa.block);
  const ptLen = len + pad + ESP_TRAILER;
  const hdr = headroom;
  const ivOff = hdr + ESP_HEADER;
  const ctOff = ivOff + sa.ivSize;
  const h = sealHeader;
  h.spi = sa.spi;
  h.seq = next % TWO32;
  emitEspHeader(out, hdr, h);
  const t = sealTrailer;
  t.padLength = pad;
  t.nextHeader = nextHeader;
  t.payloadLength = len;
  emitEspTrailer(out, ctOff + len, t);
  if (sa.aead) {
    writeSeq64(out, ivOff, next);
    const nonce = sa.nonce;
    out.copy(nonce, 4, ivOff, ivOff + 8);
    const a = aad(sa, out, hdr, next);
    if (sa.gcm) {
      sa.gcm.seal(nonce, a, a.length, out, ctOff, ptLen, ctOff + ptLen);
    } else {
      const c = createCipheriv(sa.cipher as 'aes-128-gcm', sa.key, nonce, { authTagLength: 16 });
      c.setAAD(a);
      const ct = c.update(out.subarray(ctOff, ctOff + ptLen));
      c.final();
      ct.copy(out, ctOff);
      c.getAuthTag().copy(out, ctOff + ptLen);
    }
  } else {
    randomIv(out, ivOff, sa.ivSize);
    if (sa.cbc) {
      sa.cbc.seal(out, hdr, ivOff, ctOff, ptLen, ctOff + ptLen, sa.icvSize, k.esn ? Math.floor(next / TWO32) : -1);
      sa.stats.packets++;
      sa.stats.bytes += len;
      return;
    }
    const c = createCipheriv(sa.cipher, sa.key, out.subarray(ivOff, ivOff + sa.ivSize));
    c.setAutoPadding(false);
    const ct = c.update(out.subarray(ctOff, ctOff + ptLen));
    c.final();
    ct.copy(out, ctOff);
    const m = createHmac(sa.integHash, k.integKey);
    m.update(out.subarray(hdr, ctOff + ptLen));
    if (k.esn) m.update(seqHigh(next));
    m.digest().copy(out, ctOff + ptLen, 0, sa.icvSize);
  }
  sa.stats.packets++;
  sa.stats.bytes += len;
}

function seqHigh(seq: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(Math.floor(seq / TWO32), 0);
  return b;
}

/** GCM's additional authenticated data (RFC 4106 5): SPI | seq, or SPI | seq-high | seq-low with ESN. */
function aad(sa: EspSa, pkt: Uint8Array, off: number, seq: number): Buffer {
  const a = sa.aadBuf;
  a.set(pkt.subarray(off, off + 4), 0);
  if (!sa.keys.esn) a.set(pkt.subarray(off + 4, off + 8), 4);
  else writeSeq64(a, 4, seq);
  return a;
}

/** Why an inbound packet was dropped; each maps to an xfrm_stat counter. */
export const enum OpenResult {
  Ok = 0,
  /** Shorter than header + IV + trailer + ICV, or not a whole number of blocks. */
  Malformed = 1,
  Replay = 2,
  /** ICV mismatch: wrong key or a modified packet. */
  Integrity = 3,
  /** Decrypted, but the padding or pad length was wrong. */
  BadTrailer = 4,
}

/** The decrypted payload of the last successful espOpen. */
export interface OpenedPacket {
  payload: Buffer;
  nextHeader: number;
  seq: number;
}

const trailer: EspTrailerRepr = { padLength: 0, nextHeader: 0, payloadLength: 0 };

/**
 * Checks, verifies and decrypts the ESP packet `pkt[off, off+len)` (from the SPI on)
 * with the inbound SA `sa` (RFC 4303 3.4.3 then 3.4.4): replay window first, then
 * the ICV, and only then does the window move.
 */
export function espOpen(sa: EspSa, pkt: Buffer, off: number, len: number, out: OpenedPacket): OpenResult {
  const ctOff = off + ESP_HEADER + sa.ivSize;
  const ctLen = len - ESP_HEADER - sa.ivSize - sa.icvSize;
  if (ctLen < ESP_TRAILER || (sa.block > 1 && ctLen % sa.block !== 0)) return OpenResult.Malformed;
  const replay = sa.replay!;
  const seqLow = readU32(pkt, off + 4);
  if (replay.check(seqLow) !== ReplayVerdict.Ok) {
    sa.stats.replayDrops++;
    return OpenResult.Replay;
  }
  const seq = replay.seq;
  const k = sa.keys;
  const icvOff = ctOff + ctLen;
  let pt: Buffer;
  if (sa.aead) {
    const nonce = sa.nonce;
    pkt.copy(nonce, 4, off + ESP_HEADER, off + ESP_HEADER + 8);
    const a = aad(sa, pkt, off, seq);
    if (sa.gcm) {
      pt = Buffer.allocUnsafe(ctLen);
      if (!sa.gcm.open(nonce, a, a.length, pkt, ctOff, ctLen, icvOff, pt, 0)) {
        sa.stats.integrityFailures++;
        return OpenResult.Integrity;
      }
    } else {
      const d = createDecipheriv(sa.cipher as 'aes-128-gcm', sa.key, nonce, { authTagLength: 16 });
      d.setAAD(a);
      d.setAuthTag(pkt.subarray(icvOff, icvOff + sa.icvSize));
      pt = d.update(pkt.subarray(ctOff, icvOff));
      try {
        d.final();
      } catch {
        sa.stats.integrityFailures++;
        return OpenResult.Integrity;
      }
    }
  } else if (sa.cbc) {
    pt = Buffer.allocUnsafe(ctLen);
    if (!sa.cbc.open(pkt, off, off + ESP_HEADER, ctOff, ctLen, icvOff, sa.icvSize, k.esn ? Math.floor(seq / TWO32) : -1, pt, 0)) {
      sa.stats.integrityFailures++;
      return OpenResult.Integrity;
    }
  } else {
    const h = createHmac(sa.integHash, k.integKey);
    h.update(pkt.subarray(off, icvOff));
    if (k.esn) h.update(seqHigh(seq));
    const mac = h.digest();
    if (!timingSafeEqual(mac.subarray(0, sa.icvSize), pkt.subarray(icvOff, icvOff + sa.icvSize))) {
      sa.stats.integrityFailures++;
      return OpenResult.Integrity;
    }
    const d = createDecipheriv(sa.cipher, sa.key, pkt.subarray(off + ESP_HEADER, ctOff));
    d.setAutoPadding(false);
    const a = d.update(pkt.subarray(ctOff, icvOff));
    const b = d.final();
    pt = b.length ? Buffer.concat([a, b]) : a;
  }
  if (parseEspTrailer(pt, 0, pt.length, trailer) !== EspTrailerError.None) {
    sa.stats.badTrailers++;
    return OpenResult.BadTrailer;
  }
  replay.update(seq);
  out.payload = pt.subarray(0, trailer.payloadLength);
  out.nextHeader = trailer.nextHeader;
  out.seq = seq;
  sa.stats.packets++;
  sa.stats.bytes += trailer.payloadLength;
  return OpenResult.Ok;
}

export { Encr, Integ };
