/**
 * The anti-replay window of an inbound SA (RFC 4303 3.4.3), with the extended
 * sequence number inference of RFC 4303 Appendix A2.
 *
 * The window is a bitmap of `size` bits (a multiple of 32, at least 64) kept as a
 * ring: the bit for sequence number s lives at s mod size. `top` is the highest
 * sequence number authenticated so far. A packet is checked before its ICV is
 * verified (cheap rejection), and the window moves only after the ICV was good
 * (3.4.3: otherwise forged packets could move the window and lock out real ones).
 * Sequence numbers are 64-bit values held in a JS number: exact up to 2^53, more
 * packets than an SA carries in its lifetime.
 */

export const MIN_REPLAY_WINDOW = 64;
export const MAX_REPLAY_WINDOW = 4096;
const TWO32 = 0x1_0000_0000;

/** Why `check` refused a sequence number. */
export const enum ReplayVerdict {
  Ok = 0,
  /** The bit is already set: the packet was seen. */
  Replay = 1,
  /** Older than the window's left edge. */
  TooOld = 2,
  /** Sequence number 0 without ESN: never sent (RFC 4303 3.3.3 starts at 1). */
  Zero = 3,
}

export class ReplayWindow {
  readonly size: number;
  /** Highest sequence number authenticated so far (0: none yet). */
  top = 0;
  private readonly bits: Uint32Array;
  /** Set by check(): the full 64-bit sequence number of the packet checked last. */
  seq = 0;

  constructor(
    size = 128,
    readonly esn = false,
  ) {
    if (!Number.isInteger(size) || size < MIN_REPLAY_WINDOW || size > MAX_REPLAY_WINDOW || size % 32 !== 0) {
      throw new RangeError(`replay window must be a multiple of 32 from ${MIN_REPLAY_WINDOW} to ${MAX_REPLAY_WINDOW}, got ${size}`);
    }
    this.size = size;
    this.bits = new Uint32Array(size / 32);
  }

  /**
   * Checks the low 32 bits of a received sequence number; on Ok, `this.seq` holds the
   * full value (with ESN, the inferred high half, RFC 4303 A2.2) for the ICV check and
   * for `update`.
   */
  check(seqLow: number): ReplayVerdict {
    const w = this.size;
    let full: number;
    if (!this.esn) {
      if (seqLow === 0) return ReplayVerdict.Zero;
      full = seqLow;
    } else {
      const tl = this.top % TWO32;
      const th = Math.floor(this.top / TWO32);
      let seqh: number;
      if (tl >= w - 1) {
        // Case A: the window lies within one subspace of 2^32.
        seqh = seqLow >= tl - w + 1 ? th : th + 1;
      } else {
        // Case B: the window spans two subspaces.
        const bottom = (tl - w + 1 + TWO32) % TWO32;
        seqh = seqLow >= bottom ? th - 1 : th;
      }
      if (seqh < 0) return ReplayVerdict.TooOld;
      full = seqh * TWO32 + seqLow;
      if (full === 0) return ReplayVerdict.Zero;
    }
    this.seq = full;
    if (full > this.top) return ReplayVerdict.Ok;
    if (this.top - full >= w) return ReplayVerdict.TooOld;
    const i = full % w;
    return (this.bits[i >>> 5] & (1 << (i & 31))) !== 0 ? ReplayVerdict.Replay : ReplayVerdict.Ok;
  }

  /** Records `seq` (a value `check` accepted and whose ICV was verified). */
  update(seq: number): void {
    const w = this.size;
    if (seq > this.top) {
      const advance = seq - this.top;
      if (advance >= w) this.bits.fill(0);
      else
        for (let s = this.top + 1; s < seq; s++) {
          const i = s % w;
          this.bits[i >>> 5] &= ~(1 << (i & 31));
        }
      this.top = seq;
    }
    const i = seq % w;
    this.bits[i >>> 5] |= 1 << (i & 31);
  }
}
