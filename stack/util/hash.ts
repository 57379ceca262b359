/**
 * A keyed 32-bit hash for sequence numbers and SYN cookies (RFC 6528 asks for a
 * pseudorandom function of the connection id and a secret). This follows the
 * structure of HalfSipHash-2-4 (32-bit words, ARX rounds), written for four words
 * of input so that the hot path allocates nothing.
 */
import { randomBytes } from 'node:crypto';

/** HalfSipHash's state (v0..v3) as int32 words: no closure, no allocation, no doubles per call. */
const v = new Int32Array(4);

/** One SipRound on 32-bit words (rotations 5, 16, 8, 7, 13, 16). */
function sipRound(): void {
  let v0 = v[0]!,
    v1 = v[1]!,
    v2 = v[2]!,
    v3 = v[3]!;
  v0 = (v0 + v1) | 0;
  v1 = (v1 << 5) | (v1 >>> 27);
  v1 ^= v0;
  v0 = (v0 << 16) | (v0 >>> 16);
  v2 = (v2 + v3) | 0;
  v3 = (v3 << 8) | (v3 >>> 24);
  v3 ^= v2;
  v0 = (v0 + v3) | 0;
  v3 = (v3 << 7) | (v3 >>> 25);
  v3 ^= v0;
  v2 = (v2 + v1) | 0;
  v1 = (v1 << 13) | (v1 >>> 19);
  v1 ^= v2;
  v2 = (v2 << 16) | (v2 >>> 16);
  v[0] = v0;
  v[1] = v1;
  v[2] = v2;
  v[3] = v3;
}

/** Absorbs one message word: two compression rounds (HalfSipHash-2-4). */
function sipWord(m: number): void {
  v[3] ^= m;
  sipRound();
  sipRound();
  v[0] ^= m;
}

export class KeyedHash {
  private k0: number;
  private k1: number;
  constructor(key?: Buffer) {
    const k = key ?? randomBytes(8);
    this.k0 = k.readInt32LE(0);
    this.k1 = k.readInt32LE(4);
  }

  hash4(a: number, b: number, c: number, d: number): number {
    v[0] = this.k0;
    v[1] = this.k1;
    v[2] = 0x6c796765 ^ this.k0;
    v[3] = 0x74656462 ^ this.k1;
    sipWord(a | 0);
    sipWord(b | 0);
    sipWord(c | 0);
    sipWord(d | 0);
    const fin = 16 << 24;
    v[3] ^= fin;
    sipRound();
    sipRound();
    v[0] ^= fin;
    v[2] ^= 0xff;
    sipRound();
    sipRound();
    sipRound();
    sipRound();
    return (v[1]! ^ v[3]!) >>> 0;
  }
}
