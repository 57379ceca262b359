/**
 * AES-GCM, and AES-CBC with HMAC, with one cipher context per key, for ESP's data path: the addon in
 * stack/ipsec/aead/src/aead.cc (OpenSSL, the one node is built with). node:crypto has no
 * context that can be given a new nonce, so with it every packet pays for a new cipher
 * context (an algorithm fetch and a key schedule), several times the cost of encrypting
 * 1.4 KB; here each packet only sets its nonce (or IV) and runs in place in the packet's
buffer, and the HMAC key is set up once.
 *
 * When the addon is not built (`make addon`), `newGcm` and `newCbcHmac` return null and esp.ts uses
 * node:crypto per packet: the same bytes, slower. `aeadAddon()` says which is in use.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

export interface GcmContext {
  /** Encrypts buf[off, off+len) in place and writes the 16-byte tag at buf[tagOff]. */
  seal(nonce: Buffer, aad: Buffer, aadLen: number, buf: Buffer, off: number, len: number, tagOff: number): boolean;
  /** Decrypts src[off, off+len) into dst[dstOff..] (dst may be src); false when the tag at src[tagOff] does not match. */
  open(nonce: Buffer, aad: Buffer, aadLen: number, src: Buffer, off: number, len: number, tagOff: number, dst: Buffer, dstOff: number): boolean;
}

export interface CbcHmacContext {
  /** Encrypts buf[ctOff, ctOff+len) in place (IV at buf[ivOff]), then writes HMAC(buf[hdrOff, ctOff+len) | seqHigh) cut to icvLen at buf[icvOff]; seqHigh < 0: none. */
  seal(buf: Buffer, hdrOff: number, ivOff: number, ctOff: number, len: number, icvOff: number, icvLen: number, seqHigh: number): boolean;
  /** Checks the ICV (constant time), then decrypts src[ctOff, ctOff+len) into dst[dstOff..]; false when the ICV is wrong. */
  open(
    src: Buffer,
    hdrOff: number,
    ivOff: number,
    ctOff: number,
    len: number,
    icvOff: number,
    icvLen: number,
    seqHigh: number,
    dst: Buffer,
    dstOff: number,
  ): boolean;
}

interface NativeAead {
  Gcm: new (key: Buffer) => GcmContext;
  CbcHmac: new (encKey: Buffer, hash: string, integKey: Buffer) => CbcHmacContext;
}

const ADDON = 'faultstack_aead.node';
let native: NativeAead | null | undefined;

function load(): NativeAead | null {
  if (native !== undefined) return native;
  native = null;
  const req = createRequire(__filename);
  // Source layout (stack/ipsec/aead.ts) and compiled layout (dist/stack/ipsec/aead.js).
  for (const c of [
    path.join(__dirname, 'aead', 'build', 'Release', ADDON),
    path.join(__dirname, '..', '..', '..', 'stack', 'ipsec', 'aead', 'build', 'Release', ADDON),
  ]) {
    if (fs.existsSync(c)) {
      native = req(c) as NativeAead;
      break;
    }
  }
  return native;
}

/** A reusable AES-GCM context for `key` (16, 24 or 32 bytes), or null without the addon. */
export function newGcm(key: Buffer): GcmContext | null {
  const n = load();
  return n ? new n.Gcm(key) : null;
}

/** A reusable AES-CBC + HMAC-`hash` context, or null without the addon. */
export function newCbcHmac(encKey: Buffer, hash: string, integKey: Buffer): CbcHmacContext | null {
  const n = load();
  return n ? new n.CbcHmac(encKey, hash, integKey) : null;
}

/** Which implementation ESP's ciphers run on. */
export function aeadAddon(): 'native' | 'node:crypto' {
  return load() ? 'native' : 'node:crypto';
}
