/**
 * IPv4 fragment reassembly (RFC 791 3.2, with RFC 815's hole bookkeeping reduced to
 * a sorted list of received ranges). Bounded in memory and time: at most
 * `maxDatagrams` in progress, `maxBytes` buffered in all, and each datagram is
 * dropped `timeoutMs` after its first fragment. Overlaps keep the first copy.
 */
export interface ReassemblyLimits {
  maxDatagrams: number;
  maxBytes: number;
  timeoutMs: number;
}

interface Pending {
  key: string;
  firstAt: number;
  /** Payload bytes [offset, offset+data.length), sorted by offset, non-overlapping. */
  parts: { offset: number; data: Buffer }[];
  totalLength: number; // -1 until the last fragment arrives
  bytes: number;
  header: Buffer; // the first fragment's IP header (offset 0), for the result
}

/** Pieces one datagram may be made of (a 64 KiB datagram in 576-byte fragments needs 118). */
const MAX_PARTS = 256;

export type ReassemblyResult = { done: false } | { done: true; header: Buffer; payload: Buffer };

export class Reassembler {
  private pending = new Map<string, Pending>();
  private bytes = 0;
  timeouts = 0;
  evictions = 0;
  /** Datagrams given up for cause: refused, inconsistent, or evicted for room (not timeouts: see expire). */
  failures = 0;

  constructor(readonly limits: ReassemblyLimits = { maxDatagrams: 64, maxBytes: 4 * 1024 * 1024, timeoutMs: 30_000 }) {}

  get inProgress(): number {
    return this.pending.size;
  }
  get bufferedBytes(): number {
    return this.bytes;
  }

  /**
   * Adds one fragment. `header` is its IP header bytes, `data` the fragment payload.
   * Returns the whole datagram when complete; null when the fragment was refused
   * (inconsistent, too large, or over the limits).
   */
  add(key: string, now: number, header: Buffer, offset: number, moreFragments: boolean, data: Buffer): ReassemblyResult | null {
    if (offset + data.length > 65535 - 20) {
      this.failures++;
      return null;
    }
    let p = this.pending.get(key);
    if (!p) {
      if (this.pending.size >= this.limits.maxDatagrams) this.evictOldest();
      p = { key, firstAt: now, parts: [], totalLength: -1, bytes: 0, header: Buffer.from(header) };
      this.pending.set(key, p);
    }
    if (!moreFragments) {
      const end = offset + data.length;
      if (p.totalLength >= 0 && p.totalLength !== end) {
        this.fail(p);
        return null;
      }
      p.totalLength = end;
    } else if (data.length % 8 !== 0) {
      this.fail(p);
      return null;
    }
    if (offset === 0) p.header = Buffer.from(header);
    // Bounded in pieces too: 8-byte fragments must not make one datagram thousands of parts.
    if (p.parts.length >= MAX_PARTS) {
      this.fail(p);
      return null;
    }
    if (!this.insert(p, offset, data)) return { done: false };
    while (this.bytes > this.limits.maxBytes && this.pending.size > 0) this.evictOldest();
    if (!this.pending.has(key)) return null;
    if (p.totalLength < 0) return { done: false };
    // Complete when the parts cover [0, totalLength) without a gap.
    let covered = 0;
    for (const part of p.parts) {
      if (part.offset > covered) return { done: false };
      covered = Math.max(covered, part.offset + part.data.length);
    }
    if (covered < p.totalLength) return { done: false };
    const payload = Buffer.allocUnsafe(p.totalLength);
    for (const part of p.parts) part.data.copy(payload, part.offset);
    this.drop(p);
    return { done: true, header: p.header, payload };
  }

  /** Drops datagrams older than the timeout; returns how many. */
  expire(now: number): number {
    let n = 0;
    for (const p of this.pending.values()) {
      if (now - p.firstAt >= this.limits.timeoutMs) {
        this.drop(p);
        n++;
      }
    }
    this.timeouts += n;
    return n;
  }

  private insert(p: Pending, offset: number, data: Buffer): boolean {
    // Trim the new fragment against what we already hold (first copy wins).
    const end = offset + data.length;
    const pieces: { offset: number; data: Buffer }[] = [];
    let cursor = offset;
    for (const part of p.parts) {
      const pe = part.offset + part.data.length;
      if (pe <= cursor || part.offset >= end) continue;
      if (part.offset > cursor) pieces.push({ offset: cursor, data: Buffer.from(data.subarray(cursor - offset, part.offset - offset)) });
      cursor = Math.max(cursor, pe);
    }
    if (cursor < end) pieces.push({ offset: cursor, data: Buffer.from(data.subarray(cursor - offset, end - offset)) });
    if (pieces.length === 0) return false;
    for (const piece of pieces) {
      p.parts.push(piece);
      p.bytes += piece.data.length;
      this.bytes += piece.data.length;
    }
    p.parts.sort((a, b) => a.offset - b.offset);
    return true;
  }

  private evictOldest(): void {
    let oldest: Pending | null = null;
    for (const p of this.pending.values()) if (!oldest || p.firstAt < oldest.firstAt) oldest = p;
    if (oldest) {
      this.fail(oldest);
      this.evictions++;
    }
  }

  private fail(p: Pending): void {
    this.failures++;
    this.drop(p);
  }

  private drop(p: Pending): void {
    if (this.pending.get(p.key) === p) {
      this.pending.delete(p.key);
      this.bytes -= p.bytes;
    }
  }
}
