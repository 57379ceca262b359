/**
 * The send queue holds application bytes from SND.UNA onward as the chunks the
 * application wrote (no copy on write); segments copy out of it at any offset, and
 * acknowledged bytes are released from the front.
 *
 * The reassembly queue holds out-of-order segments above RCV.NXT as sorted,
 * non-overlapping ranges; it produces the SACK blocks we advertise (RFC 2018 4:
 * the block holding the most recently received segment first).
 */
import { type Seq, asSeq, seqAdd, seqGe, seqGt, seqLe, seqLt, seqSize, seqValue } from '../wire/seq';

const SEQ0: Seq = asSeq(0);

export class SendQueue {
  private chunks: Buffer[] = [];
  private head = 0; // index of the first live chunk
  private headOff = 0; // bytes already consumed from chunks[head]
  length = 0; // bytes queued (from SND.UNA)
  // Cursor cache for sequential copy-outs: chunk index and the queue offset at its start.
  private curIdx = 0;
  private curStart = 0;

  push(buf: Buffer): void {
    if (buf.length === 0) return;
    this.chunks.push(buf);
    this.length += buf.length;
  }

  /** Copies `len` bytes starting `offset` bytes after SND.UNA into dst[dstOff..]. */
  copyOut(offset: number, dst: Uint8Array, dstOff: number, len: number): void {
    let idx: number, start: number;
    if (this.curIdx >= this.head && this.curIdx < this.chunks.length && this.curStart <= offset) {
      idx = this.curIdx;
      start = this.curStart;
    } else {
      idx = this.head;
      start = -this.headOff;
    }
    while (idx < this.chunks.length && start + this.chunks[idx].length <= offset) {
      start += this.chunks[idx].length;
      idx++;
    }
    this.curIdx = idx;
    this.curStart = start;
    while (len > 0 && idx < this.chunks.length) {
      const c = this.chunks[idx];
      const from = offset - start;
      const n = Math.min(len, c.length - from);
      c.copy(dst, dstOff, from, from + n);
      dstOff += n;
      offset += n;
      len -= n;
      if (from + n === c.length) {
        start += c.length;
        idx++;
      }
    }
  }

  /** Releases `n` acknowledged bytes from the front. */
  consume(n: number): void {
    n = Math.min(n, this.length);
    this.length -= n;
    while (n > 0) {
      const c = this.chunks[this.head];
      const left = c.length - this.headOff;
      if (n < left) {
        this.headOff += n;
        break;
      }
      n -= left;
      this.chunks[this.head] = EMPTY;
      this.head++;
      this.headOff = 0;
    }
    // The cursor is relative to SND.UNA: shift it by what was consumed.
    this.curIdx = this.head;
    this.curStart = -this.headOff;
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
      this.curIdx = 0;
    }
    if (this.length === 0) {
      this.chunks.length = 0;
      this.head = 0;
      this.headOff = 0;
      this.curIdx = 0;
      this.curStart = 0;
    }
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.headOff = 0;
    this.length = 0;
    this.curIdx = 0;
    this.curStart = 0;
  }
}
const EMPTY = Buffer.alloc(0);

interface OooSegment {
  seq: Seq;
  end: Seq;
  data: Buffer;
}

export class ReassemblyQueue {
  segs: OooSegment[] = [];
  bytes = 0;
  /** Most recently touched range, reported first in SACK. */
  private lastSeq = SEQ0;
  private lastEnd = SEQ0;

  get empty(): boolean {
    return this.segs.length === 0;
  }

  /**
   * Stores data at `seq` (strictly above RCV.NXT). Keeps existing bytes where they
   * overlap. Returns false if nothing new was stored.
   */
  insert(seq: Seq, data: Buffer): boolean {
    const end = seqAdd(seq, data.length);
    let s = seq;
    let stored = false;
    let i = 0;
    // Walk the sorted list, filling the gaps the new segment covers.
    while (seqLt(s, end)) {
      while (i < this.segs.length && seqLe(this.segs[i].end, s)) i++;
      const next = i < this.segs.length ? this.segs[i] : null;
      if (next && seqLe(next.seq, s)) {
        s = next.end;
        continue;
      }
      const gapEnd = next && seqLt(next.seq, end) ? next.seq : end;
      const piece = Buffer.from(data.subarray(seqSize(seq, s), seqSize(seq, gapEnd)));
      this.segs.splice(i, 0, { seq: s, end: gapEnd, data: piece });
      this.bytes += piece.length;
      stored = true;
      i++;
      s = gapEnd;
    }
    // Report the contiguous block containing this segment first, also when it brought
    // nothing new: RFC 2018 4 says the first block MUST hold the segment that triggered
    // the ACK, and a duplicate of data we already hold triggers one too.
    let lo = seq,
      hi = end;
    for (const g of this.segs) {
      if (seqLe(g.seq, hi) && seqGe(g.end, lo)) {
        if (seqLt(g.seq, lo)) lo = g.seq;
        if (seqGt(g.end, hi)) hi = g.end;
      }
    }
    this.lastSeq = lo;
    this.lastEnd = hi;
    return stored;
  }

  /** Removes and returns the data that now starts at or below `rcvNxt`, in order. */
  pull(rcvNxt: Seq, out: Buffer[]): Seq {
    let nxt = rcvNxt;
    while (this.segs.length && seqLe(this.segs[0].seq, nxt)) {
      const g = this.segs.shift()!;
      this.bytes -= g.data.length;
      if (seqGt(g.end, nxt)) {
        const from = seqSize(g.seq, nxt);
        out.push(from === 0 ? g.data : g.data.subarray(from));
        nxt = g.end;
      }
    }
    return nxt;
  }

  /** Fills up to `max` SACK blocks (pairs) above rcvNxt; returns the count. */
  sackBlocks(rcvNxt: Seq, out: Uint32Array, max: number): number {
    if (this.segs.length === 0) return 0;
    // Merge adjacent stored segments into blocks.
    const blocks: Seq[] = [];
    let lo = this.segs[0].seq,
      hi = this.segs[0].end;
    for (let i = 1; i < this.segs.length; i++) {
      const g = this.segs[i];
      if (g.seq === hi) hi = g.end;
      else {
        blocks.push(lo, hi);
        lo = g.seq;
        hi = g.end;
      }
    }
    blocks.push(lo, hi);
    let n = 0;
    // First: the block with the most recent arrival (RFC 2018 4).
    for (let b = 0; b < blocks.length; b += 2) {
      if (seqLe(blocks[b], this.lastSeq) && seqGe(blocks[b + 1], this.lastEnd) && seqGt(blocks[b], rcvNxt)) {
        out[0] = seqValue(blocks[b]);
        out[1] = seqValue(blocks[b + 1]);
        n = 1;
        blocks.splice(b, 2);
        break;
      }
    }
    // Then the highest others.
    for (let b = blocks.length - 2; b >= 0 && n < max; b -= 2) {
      if (seqGt(blocks[b], rcvNxt)) {
        out[n * 2] = seqValue(blocks[b]);
        out[n * 2 + 1] = seqValue(blocks[b + 1]);
        n++;
      }
    }
    return n;
  }

  clear(): void {
    this.segs = [];
    this.bytes = 0;
  }
}

/**
 * The sender's SACK scoreboard (RFC 6675): SACKed ranges above SND.UNA, sorted and
 * merged, as a flat array of [left, right) pairs.
 */
export class Scoreboard {
  ranges: Seq[] = [];
  sackedBytes = 0;

  get highestSacked(): Seq {
    return this.ranges.length ? this.ranges[this.ranges.length - 1] : SEQ0;
  }

  /**
   * RFC 6675 IsLost: an un-SACKed byte is deemed lost when more than
   * (DupThresh - 1) * SMSS bytes are SACKed above it. Returns the highest such
   * boundary: holes below it are lost, holes above it may only be reordered.
   * `fallback` when nothing is lost yet.
   */
  lossBoundary(mss: number, dupThresh: number, fallback: Seq): Seq {
    const r = this.ranges;
    let above = 0;
    for (let i = r.length - 2; i >= 0; i -= 2) {
      above += seqSize(r[i], r[i + 1]);
      if (above > (dupThresh - 1) * mss) return r[i];
    }
    return fallback;
  }
  get empty(): boolean {
    return this.ranges.length === 0;
  }

  add(left: Seq, right: Seq): boolean {
    if (!seqLt(left, right)) return false;
    const r = this.ranges;
    let i = 0;
    while (i < r.length && seqLt(r[i + 1], left)) i += 2;
    let lo = left,
      hi = right;
    let j = i;
    while (j < r.length && seqLe(r[j], hi)) {
      if (seqLt(r[j], lo)) lo = r[j];
      if (seqGt(r[j + 1], hi)) hi = r[j + 1];
      j += 2;
    }
    let removed = 0;
    for (let k = i; k < j; k += 2) removed += seqSize(r[k], r[k + 1]);
    const added = seqSize(lo, hi) - removed;
    r.splice(i, j - i, lo, hi);
    this.sackedBytes += added;
    return added > 0;
  }

  /** Drops everything at or below `una`. */
  advance(una: Seq): void {
    const r = this.ranges;
    let i = 0;
    while (i < r.length && seqLe(r[i + 1], una)) {
      this.sackedBytes -= seqSize(r[i], r[i + 1]);
      i += 2;
    }
    if (i > 0) r.splice(0, i);
    if (r.length && seqLt(r[0], una)) {
      this.sackedBytes -= seqSize(r[0], una);
      r[0] = una;
    }
  }

  isSacked(seq: Seq): boolean {
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 2) {
      if (seqLt(seq, r[i])) return false;
      if (seqLt(seq, r[i + 1])) return true;
    }
    return false;
  }

  /** End of the SACKed range containing `seq` (when isSacked), else `seq`. */
  sackedEnd(seq: Seq): Seq {
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 2) if (seqGe(seq, r[i]) && seqLt(seq, r[i + 1])) return r[i + 1];
    return seq;
  }

  /** Start of the next SACKed range above `seq`, or `limit`. */
  nextSackedStart(seq: Seq, limit: Seq): Seq {
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 2) if (seqGt(r[i], seq)) return seqLt(r[i], limit) ? r[i] : limit;
    return limit;
  }

  /** Un-SACKed bytes in [from, to). */
  holeBytes(from: Seq, to: Seq): number {
    if (!seqLt(from, to)) return 0;
    let total = seqSize(from, to);
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 2) {
      const lo = seqGt(r[i], from) ? r[i] : from;
      const hi = seqLt(r[i + 1], to) ? r[i + 1] : to;
      if (seqLt(lo, hi)) total -= seqSize(lo, hi);
    }
    return total;
  }

  clear(): void {
    this.ranges = [];
    this.sackedBytes = 0;
  }
}

/** Segments at most this long are copied into slices of a shared chunk (one allocation per ~40 segments). */
const RX_CHUNK = 64 * 1024;

/**
 * Copies of received payload that must outlive the device's receive buffer (valid only
 * during its receive call). Small segments share 64 KiB chunks, 8-byte aligned slices
 * of one allocation; a chunk is let go when full and lives on while any slice of it is
 * referenced. Larger ones get their own buffer. One per TCP layer.
 */
export class RxBufferPool {
  private chunk = Buffer.allocUnsafeSlow(RX_CHUNK);
  private used = 0;

  /** A copy of buf[off, off+len). */
  copyOut(buf: Buffer, off: number, len: number): Buffer {
    if (len > RX_CHUNK / 4) {
      const b = Buffer.allocUnsafeSlow(len);
      buf.copy(b, 0, off, off + len);
      return b;
    }
    if (this.used + len > RX_CHUNK) {
      this.chunk = Buffer.allocUnsafeSlow(RX_CHUNK);
      this.used = 0;
    }
    const start = this.used;
    buf.copy(this.chunk, start, off, off + len);
    // Keep slices 8-byte aligned.
    this.used = (start + len + 7) & ~7;
    return this.chunk.subarray(start, start + len);
  }
}

/** A connection's "nothing arrived before accept": shared and frozen, so a push into it throws instead of leaking between connections. */
export const NO_PENDING: Buffer[] = Object.freeze([]) as unknown as Buffer[];
