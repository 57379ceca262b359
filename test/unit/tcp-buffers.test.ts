/**
 * The TCP buffers against simple reference models, with seeded random operations:
 * the send queue (copy out at any offset, release from the front), the reassembly
 * queue (out-of-order data, first copy wins, SACK blocks per RFC 2018 4) and the
 * sender's SACK scoreboard (RFC 6675), including across the sequence-number wrap.
 */
import { describe, expect, test } from 'vitest';
import { ReassemblyQueue, Scoreboard, SendQueue } from '../../stack/tcp/buffers';
import { asSeq, seqSub } from '../../stack/wire/seq';
import { SeededRandom } from '../../drivers/memory';

describe('SendQueue', () => {
  test('random pushes, copy-outs at any offset and releases match a flat reference buffer', () => {
    const rnd = new SeededRandom(99);
    const int = (n: number) => Math.floor(rnd.next() * n);
    const q = new SendQueue();
    let ref = Buffer.alloc(0);
    let counter = 0;
    let bad: string | null = null;
    for (let step = 0; step < 2000; step++) {
      const op = int(10);
      if (op < 4) {
        const chunk = Buffer.alloc(1 + int(1500));
        for (let i = 0; i < chunk.length; i++) chunk[i] = counter++ & 255;
        q.push(chunk);
        ref = Buffer.concat([ref, chunk]);
      } else if (op < 8 && ref.length > 0) {
        // Sequential copy-outs (the cursor cache) and random ones.
        const off = op < 6 ? int(ref.length) : Math.min(ref.length - 1, int(64));
        const len = 1 + int(Math.min(4000, ref.length - off));
        const out = Buffer.alloc(len + 4, 0xaa);
        q.copyOut(off, out, 2, len);
        if (!out.subarray(2, 2 + len).equals(ref.subarray(off, off + len)) || out[0] !== 0xaa || out[len + 3] !== 0xaa) {
          bad ??= `step ${step}: copyOut(${off}, ${len}) differs`;
        }
      } else if (ref.length > 0) {
        const n = int(ref.length + 1);
        q.consume(n);
        ref = ref.subarray(n);
      }
      if (q.length !== ref.length) bad ??= `step ${step}: length ${q.length} != ${ref.length}`;
    }
    expect(bad).toBeNull();
    // Consuming more than is queued empties it.
    q.consume(q.length + 100);
    expect(q.length).toBe(0);
  });

  test('empty pushes are ignored; clear empties', () => {
    const q = new SendQueue();
    q.push(Buffer.alloc(0));
    expect(q.length).toBe(0);
    q.push(Buffer.from('abc'));
    q.clear();
    expect(q.length).toBe(0);
    q.push(Buffer.from('xyz'));
    const out = Buffer.alloc(3);
    q.copyOut(0, out, 0, 3);
    expect(out.toString()).toBe('xyz');
  });
});

/** The reassembly queue's reference: a byte map above `base`, first write wins. */
class RefReasm {
  bytes = new Map<number, number>();
  insert(off: number, data: Buffer): boolean {
    let stored = false;
    for (let i = 0; i < data.length; i++)
      if (!this.bytes.has(off + i)) {
        this.bytes.set(off + i, data[i]);
        stored = true;
      }
    return stored;
  }
  /** Contiguous blocks [lo, hi) of offsets. */
  blocks(from: number): [number, number][] {
    const keys = [...this.bytes.keys()].filter((k) => k >= from).sort((a, b) => a - b);
    const out: [number, number][] = [];
    for (const k of keys) {
      const last = out[out.length - 1];
      if (last && last[1] === k) last[1] = k + 1;
      else out.push([k, k + 1]);
    }
    return out;
  }
}

describe('ReassemblyQueue', () => {
  for (const base of [1000, 0xffffff00]) {
    test(`random out-of-order inserts and in-order pulls match a byte map (base ${base.toString(16)})`, () => {
      const rnd = new SeededRandom(base & 0xffff);
      const int = (n: number) => Math.floor(rnd.next() * n);
      const q = new ReassemblyQueue();
      const ref = new RefReasm();
      const stream = Buffer.alloc(20000);
      for (let i = 0; i < stream.length; i++) stream[i] = (i * 7 + 3) & 255;
      let nxt = 0; // offset of RCV.NXT from base
      const delivered: Buffer[] = [];
      for (let step = 0; step < 3000 && nxt < stream.length; step++) {
        const off = nxt + 1 + int(3000);
        const len = Math.min(1 + int(1500), stream.length - off);
        if (len <= 0) continue;
        // Sometimes a corrupt copy of bytes we already hold: it must not replace them.
        const data = Buffer.from(stream.subarray(off, off + len));
        const stale = int(4) === 0;
        if (stale) data.fill(0xee);
        if (stale) {
          // Only insert corrupt data over ranges fully held already.
          let held = true;
          for (let i = 0; i < len; i++)
            if (!ref.bytes.has(off + i)) {
              held = false;
              break;
            }
          if (!held) continue;
          expect(q.insert(asSeq(base + off), data)).toBe(false);
          continue;
        }
        expect(q.insert(asSeq(base + off), data)).toBe(ref.insert(off, data));
        expect(q.bytes).toBe(ref.bytes.size);
        // SACK blocks: the block with the newest data first, all of them real blocks.
        const out = new Uint32Array(8);
        const n = q.sackBlocks(asSeq(base + nxt), out, 4);
        const blocks = ref.blocks(nxt + 1);
        expect(n).toBe(Math.min(4, blocks.length));
        const newest = blocks.find(([lo, hi]) => lo <= off && hi >= off + len)!;
        expect([out[0], out[1]]).toEqual([(base + newest[0]) >>> 0, (base + newest[1]) >>> 0]);
        const asOffsets = blocks.map(([lo, hi]) => `${(base + lo) >>> 0}-${(base + hi) >>> 0}`);
        for (let b = 0; b < n; b++) expect(asOffsets).toContain(`${out[b * 2]}-${out[b * 2 + 1]}`);
        // Every so often the hole at RCV.NXT is filled: pull what follows.
        if (int(3) === 0) {
          const fill = 1 + int(2000);
          const fillLen = Math.min(fill, stream.length - nxt);
          delivered.push(stream.subarray(nxt, nxt + fillLen));
          for (let i = 0; i < fillLen; i++) ref.bytes.delete(nxt + i);
          nxt += fillLen;
          const parts: Buffer[] = [];
          const newNxt = q.pull(asSeq(base + nxt), parts);
          let got = 0;
          for (const part of parts) {
            expect(part).toEqual(stream.subarray(nxt + got, nxt + got + part.length));
            got += part.length;
          }
          for (let i = 0; i < got; i++) ref.bytes.delete(nxt + i);
          // Anything at or below the new RCV.NXT is gone from the reference too.
          for (const k of [...ref.bytes.keys()]) if (k < nxt + got) ref.bytes.delete(k);
          nxt += got;
          expect(newNxt).toBe((base + nxt) >>> 0);
          expect(q.bytes).toBe(ref.bytes.size);
        }
      }
      expect(nxt).toBeGreaterThan(1000);
    });
  }

  test('SACK blocks: the most recent arrival first (RFC 2018 4), at most `max`, none at or below RCV.NXT', () => {
    const q = new ReassemblyQueue();
    const d = (n: number) => Buffer.alloc(n, 1);
    q.insert(asSeq(2000), d(100));
    q.insert(asSeq(3000), d(100));
    q.insert(asSeq(4000), d(100));
    q.insert(asSeq(5000), d(100));
    q.insert(asSeq(1000), d(100)); // newest
    const out = new Uint32Array(8);
    expect(q.sackBlocks(asSeq(500), out, 3)).toBe(3);
    expect([out[0], out[1]]).toEqual([1000, 1100]);
    // Extending a block makes that block the first.
    q.insert(asSeq(3100), d(50));
    expect(q.sackBlocks(asSeq(500), out, 4)).toBe(4);
    expect([out[0], out[1]]).toEqual([3000, 3150]);
    // After the first hole is filled and pulled, blocks below RCV.NXT are not reported.
    const parts: Buffer[] = [];
    expect(q.pull(asSeq(1000), parts)).toBe(1100);
    expect(q.sackBlocks(asSeq(1100), out, 4)).toBe(4);
    expect(Array.from(out.subarray(0, 8)).every((v, i) => i % 2 === 1 || v > 1100)).toBe(true);
  });
});

/** Scoreboard reference: a set of SACKed offsets. */
describe('Scoreboard', () => {
  for (const base of [5000, 0xfffff000]) {
    test(`random SACK blocks and cumulative ACKs match a bitmap (base ${base.toString(16)})`, () => {
      const rnd = new SeededRandom(base & 0xfff);
      const int = (n: number) => Math.floor(rnd.next() * n);
      const sb = new Scoreboard();
      const ref = new Set<number>();
      let una = 0;
      const S = (o: number) => asSeq(base + o);
      let bad: string | null = null;
      const check = (ok: boolean, what: string) => {
        if (!ok) bad ??= what;
      };
      for (let step = 0; step < 2000; step++) {
        if (int(5) === 0) {
          una += int(800);
          sb.advance(S(una));
          for (const k of [...ref]) if (k < una) ref.delete(k);
        } else {
          const l = una + int(4000);
          const r = l + 1 + int(1500);
          let added = false;
          for (let i = l; i < r; i++)
            if (!ref.has(i)) {
              ref.add(i);
              added = true;
            }
          check(sb.add(S(l), S(r)) === added, `step ${step}: add(${l}, ${r})`);
        }
        check(sb.sackedBytes === ref.size, `step ${step}: sackedBytes ${sb.sackedBytes} != ${ref.size}`);
        // Ranges are sorted, disjoint and not adjacent (merged).
        const rg = sb.ranges;
        for (let i = 0; i + 2 < rg.length; i += 2) check(seqSub(rg[i + 2], rg[i + 1]) > 0, `step ${step}: ranges not merged`);
        // Queries agree with the bitmap at a few points.
        for (let k = 0; k < 3; k++) {
          const o = una + int(6000);
          check(sb.isSacked(S(o)) === ref.has(o), `step ${step}: isSacked(${o})`);
          if (ref.has(o)) {
            let end = o;
            while (ref.has(end)) end++;
            check(sb.sackedEnd(S(o)) === S(end), `step ${step}: sackedEnd(${o})`);
          }
          const to = o + int(1500);
          let holes = 0;
          for (let i = o; i < to; i++) if (!ref.has(i)) holes++;
          check(sb.holeBytes(S(o), S(to)) === holes, `step ${step}: holeBytes(${o}, ${to})`);
        }
        if (ref.size && step % 50 === 0) check(sb.highestSacked === S(Math.max(...ref) + 1), `step ${step}: highestSacked`);
      }
      expect(bad).toBeNull();
    });
  }

  test('an empty or inverted block adds nothing; clear empties', () => {
    const sb = new Scoreboard();
    expect(sb.add(asSeq(100), asSeq(100))).toBe(false);
    expect(sb.add(asSeq(200), asSeq(100))).toBe(false);
    expect(sb.empty).toBe(true);
    sb.add(asSeq(100), asSeq(200));
    expect(sb.nextSackedStart(asSeq(50), asSeq(1000))).toBe(100);
    expect(sb.nextSackedStart(asSeq(150), asSeq(1000))).toBe(1000);
    expect(sb.nextSackedStart(asSeq(50), asSeq(80))).toBe(80);
    sb.clear();
    expect(sb.sackedBytes).toBe(0);
    expect(sb.empty).toBe(true);
  });
});
