/**
 * TCP sequence numbers (RFC 9293 3.4): 32-bit values that wrap, compared modulo 2^32.
 * `a < b` on two sequence numbers is wrong as soon as the space wraps between them, and
 * so is `a + n` without folding the sum back into 32 bits. The type below makes both
 * impossible to write by mistake.
 *
 * At run time a `Seq` is a plain number in [0, 2^32). To the type checker it is a
 * branded symbol: it refuses `<`, `>`, `+`, `-` and comparisons with plain numbers on
 * it, so every comparison and every step goes through the functions here (gVisor's
 * seqnum.Value has the same role). They are one or two machine operations each and V8
 * inlines them: the typing costs nothing at run time. `===` between two `Seq` is fine.
 *
 * Timestamps (RFC 7323) wrap the same way but are another quantity: they stay numbers
 * and have their own comparisons (tsLt & co.).
 */

declare const seqBrand: unique symbol;
/** A TCP sequence (or acknowledgment) number. */
export type Seq = symbol & { readonly [seqBrand]: true };

/** `n` (any integer) as a sequence number, taken modulo 2^32. */
export function asSeq(n: number): Seq {
  return (n >>> 0) as unknown as Seq;
}
/** The sequence number as the unsigned 32-bit value the header carries. */
export function seqValue(s: Seq): number {
  return s as unknown as number;
}

/** s + n, modulo 2^32 (n may be negative). */
export function seqAdd(s: Seq, n: number): Seq {
  return (((s as unknown as number) + n) >>> 0) as unknown as Seq;
}
/** The signed distance a - b, in (-2^31, 2^31]: positive when a is after b. */
export function seqSub(a: Seq, b: Seq): number {
  return ((a as unknown as number) - (b as unknown as number)) | 0;
}
/** The number of sequence numbers from `from` up to `to` (unsigned: `to` is taken to be at or after `from`). */
export function seqSize(from: Seq, to: Seq): number {
  return ((to as unknown as number) - (from as unknown as number)) >>> 0;
}

export function seqLt(a: Seq, b: Seq): boolean {
  return (((a as unknown as number) - (b as unknown as number)) | 0) < 0;
}
export function seqLe(a: Seq, b: Seq): boolean {
  return (((a as unknown as number) - (b as unknown as number)) | 0) <= 0;
}
export function seqGt(a: Seq, b: Seq): boolean {
  return (((a as unknown as number) - (b as unknown as number)) | 0) > 0;
}
export function seqGe(a: Seq, b: Seq): boolean {
  return (((a as unknown as number) - (b as unknown as number)) | 0) >= 0;
}
/** The later of two sequence numbers. */
export function seqMax(a: Seq, b: Seq): Seq {
  return seqGt(a, b) ? a : b;
}
/** left <= s < left + size: `s` lies in the window of `size` numbers starting at `left` (RFC 9293 3.4). */
export function seqInWindow(s: Seq, left: Seq, size: number): boolean {
  const d = ((s as unknown as number) - (left as unknown as number)) | 0;
  return d >= 0 && d < size;
}

/** Timestamp values (RFC 7323 5.3 R1, 4.3): compared modulo 2^32 as sequence numbers are. */
export function tsLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
export function tsLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
export function tsGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** Reads a sequence number stored big-endian at b[o] (a header's SEQ or ACK field). */
export function readSeq(b: Uint8Array, o: number): Seq {
  return (((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0) as unknown as Seq;
}
/** Writes `s` big-endian at b[o]. */
export function writeSeq(b: Uint8Array, o: number, s: Seq): void {
  const v = s as unknown as number;
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 255;
  b[o + 2] = (v >>> 8) & 255;
  b[o + 3] = v & 255;
}
