/**
 * A keyed 32-bit hash for sequence numbers and SYN cookies (RFC 6528 asks for a
 * pseudorandom function of the connection id and a secret). This follows the
 * structure of HalfSipHash-2-4 (32-bit words, ARX rounds), written for four words
 * of input so that the hot path allocates nothing.
 */
import { randomBytes } from 'node:crypto';

function rotl(x: number, b: number): number { return ((x << b) | (x >>> (32 - b))) >>> 0; }

export class KeyedHash {
  private k0: number;
  private k1: number;
  constructor(key?: Buffer) {
    const k = key ?? randomBytes(8);
    this.k0 = k.readUInt32LE(0);
    this.k1 = k.readUInt32LE(4);
  }

  hash4(a: number, b: number, c: number, d: number): number {
    let v0 = this.k0, v1 = this.k1, v2 = (0x6c796765 ^ this.k0) >>> 0, v3 = (0x74656462 ^ this.k1) >>> 0;
    const round = () => {
      v0 = (v0 + v1) >>> 0; v1 = rotl(v1, 5); v1 = (v1 ^ v0) >>> 0; v0 = rotl(v0, 16);
      v2 = (v2 + v3) >>> 0; v3 = rotl(v3, 8); v3 = (v3 ^ v2) >>> 0;
      v0 = (v0 + v3) >>> 0; v3 = rotl(v3, 7); v3 = (v3 ^ v0) >>> 0;
      v2 = (v2 + v1) >>> 0; v1 = rotl(v1, 13); v1 = (v1 ^ v2) >>> 0; v2 = rotl(v2, 16);
    };
    const word = (m: number) => { v3 = (v3 ^ m) >>> 0; round(); round(); v0 = (v0 ^ m) >>> 0; };
    word(a >>> 0); word(b >>> 0); word(c >>> 0); word(d >>> 0);
    const fin = (16 << 24) >>> 0;
    v3 = (v3 ^ fin) >>> 0; round(); round(); v0 = (v0 ^ fin) >>> 0;
    v2 = (v2 ^ 0xff) >>> 0; round(); round(); round(); round();
    return (v1 ^ v3) >>> 0;
  }
}
