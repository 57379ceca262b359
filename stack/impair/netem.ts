/**
 * One packet-level impairment: netem's behaviour for the packets its matcher takes, in the
 * order sch_netem's enqueue applies it (the kernel's code was read for the behaviour, this
 * is written from that description):
 *
 *   1. duplicate: with its probability the packet counts twice;
 *   2. loss (random / 4-state / Gilbert-Elliott): one count less, or with `ecn` a CE mark on
 *      an ECN-capable packet instead; no count left: dropped;
 *   3. the duplicate (if any) is copied here, before corruption, and goes through this
 *      impairment again without being duplicated once more (netem re-enqueues it at the root);
 *   4. corrupt: one random bit of the packet flipped (a checksum left to the device is
 *      completed first, so the receiver can see the damage);
 *   5. limit: a full queue drops the packet (queue drop);
 *   6. reorder / delay: with reordering on (reorder P gap N), once N-1 packets have been
 *      delayed the next goes at once with probability P ("reordered"); every other packet
 *      waits `delay` (jitter drawn from the distribution). With a rate, the packet's time is
 *      max(now + delay, the last queued packet's time) + its transmission time at the rate,
 *      as netem computes it; the transmission time counts PACKETOVERHEAD and cells.
 *   7. the queue is ordered by time to send (netem's tfifo: a packet with a shorter delay
 *      overtakes, so jitter reorders), ties in arrival order; with `slot`, packets leave
 *      only within slots (a slot opens after a random delay and carries at most `packets`
 *      packets / `bytes` bytes), netem's dequeue rule.
 *
 * Time is passed in (`now`, ms); waiting packets are released by the scheduler the stack
 * runs on (one wake-up per impairment, at its earliest due time). The queue holds at most
 * `limit` packets (netem's default 1000), so memory is bounded.
 */
import { VirtioNetHdr, type OffloadMeta } from '../../drivers/device';
import { completeChecksum } from '../../drivers/gso';
import { internetChecksum } from '../wire/checksum';
import { CorrelatedEvent, CorrelatedUniform, Rng, distributionT } from './random';
import type { LossSpec, NetemSpec, SlotSpec } from './spec';

export interface NetemCounters {
  /** Packets this impairment took (its matcher said yes). */
  matched: number;
  /** Lost to the loss model. */
  dropped: number;
  /** ECN: marked CE instead of dropped. */
  marked: number;
  /** Waited (time to send later than their arrival). */
  delayed: number;
  /** Sent at once by the reorder rule, ahead of the waiting ones. */
  reordered: number;
  /** Extra copies made. */
  duplicated: number;
  /** Packets with a flipped bit. */
  corrupted: number;
  /** Packets that queued behind earlier ones for the rate. */
  rateQueued: number;
  /** Dropped because `limit` packets were waiting. */
  queueDrops: number;
  /** Packets passed on (at once or after waiting). */
  sent: number;
}

export function newNetemCounters(): NetemCounters {
  return { matched: 0, dropped: 0, marked: 0, delayed: 0, reordered: 0, duplicated: 0, corrupted: 0, rateQueued: 0, queueDrops: 0, sent: 0 };
}

/** The scheduler the stack runs on (real or virtual): only what a release needs. */
export interface ReleaseScheduler {
  now(): number;
  at(at: number, fn: () => void): unknown;
  cancel(handle: unknown): void;
}

interface Waiting {
  t: number;
  seq: number;
  pkt: Buffer;
  meta: OffloadMeta | null;
}

/** Random streams: one per option, so each option's pattern depends only on the seed. */
const STREAM = { loss: 1, duplicate: 2, corrupt: 3, corruptPos: 4, reorder: 5, delay: 6, slot: 7 } as const;

interface LossModel {
  next(): boolean;
}

function lossModel(l: LossSpec, seed: number): LossModel {
  const rng = new Rng(seed, STREAM.loss);
  if (l.model === 'random') return new CorrelatedEvent(rng, l.p, l.corr);
  if (l.model === 'state') {
    // tc-netem(8)'s states: 1 good reception, 2 good reception within a burst, 3 burst
    // loss, 4 isolated loss. Each packet draws once; the state it moves to says whether it
    // is lost (netem's 4-state generator).
    let state = 1;
    return {
      next(): boolean {
        const u = rng.next();
        switch (state) {
          case 1:
            if (u < l.p14) {
              state = 4;
              return true;
            }
            if (u < l.p13 + l.p14) {
              state = 3;
              return true;
            }
            return false;
          case 2:
            if (u < l.p23) {
              state = 3;
              return true;
            }
            return false;
          case 3:
            if (u < l.p32) {
              state = 2;
              return false;
            }
            if (u < l.p31 + l.p32) {
              state = 1;
              return false;
            }
            return true;
          default: // 4: an isolated loss is followed by a good packet
            state = 1;
            return false;
        }
      },
    };
  }
  // Gilbert-Elliott, two draws per packet as netem does: the state's loss probability
  // decides this packet, the transition (p good->bad, r bad->good) the next one's state.
  let bad = false;
  return {
    next(): boolean {
      const move = rng.next(),
        lose = rng.next();
      const lost = lose < (bad ? l.lossBad : l.lossGood);
      if (bad ? move < l.r : move < l.p) bad = !bad;
      return lost;
    },
  };
}

export interface NetemOptions {
  spec: NetemSpec;
  seed: number;
  /** When the impairment was added (its slot clock starts here). */
  now: number;
  scheduler: ReleaseScheduler;
  /**
   * Where released packets go (the next impairment, or the device). `owned` false: the
   * buffer is the caller's (a receive slab), valid only during the current input call.
   */
  output: (pkt: Buffer, meta: OffloadMeta | null, now: number, owned: boolean) => void;
  /** Called after a timed release, so the device can write what was released. */
  released: (now: number) => void;
}

export class NetemQueue {
  readonly counters = newNetemCounters();
  private readonly spec: NetemSpec;
  private readonly heap: Waiting[] = [];
  private seq = 0;
  /** Latest time to send among waiting packets (netem's "last" for the rate). */
  private lastTime = -Infinity;
  private counter = 0; // packets delayed since the last reordered one (netem's q->counter)
  private readonly loss: LossModel | null;
  private readonly dup: CorrelatedEvent | null;
  private readonly corrupt: CorrelatedEvent | null;
  private readonly corruptPos: Rng;
  private readonly reorder: CorrelatedEvent | null;
  private readonly delayU: CorrelatedUniform | null;
  private readonly slotRng: Rng;
  private slotNext = 0;
  private slotPackets = Infinity;
  private slotBytes = Infinity;
  private handle: unknown = null;
  private handleAt = Infinity;
  private closed = false;
  private readonly output: NetemOptions['output'];
  private readonly releasedFn: NetemOptions['released'];
  private readonly sched: ReleaseScheduler;

  constructor(o: NetemOptions) {
    const n = o.spec;
    this.spec = n;
    this.sched = o.scheduler;
    this.output = o.output;
    this.releasedFn = o.released;
    this.loss = n.loss ? lossModel(n.loss, o.seed) : null;
    this.dup = n.duplicate && n.duplicate.p > 0 ? new CorrelatedEvent(new Rng(o.seed, STREAM.duplicate), n.duplicate.p, n.duplicate.corr) : null;
    this.corrupt = n.corrupt && n.corrupt.p > 0 ? new CorrelatedEvent(new Rng(o.seed, STREAM.corrupt), n.corrupt.p, n.corrupt.corr) : null;
    this.corruptPos = new Rng(o.seed, STREAM.corruptPos);
    this.reorder = n.reorder && n.reorder.p > 0 ? new CorrelatedEvent(new Rng(o.seed, STREAM.reorder), n.reorder.p, n.reorder.corr) : null;
    this.delayU = n.delay && n.delay.jitterMs > 0 ? new CorrelatedUniform(new Rng(o.seed, STREAM.delay), n.delay.corr) : null;
    this.slotRng = new Rng(o.seed, STREAM.slot);
    if (n.slot) this.slotNext = o.now;
  }

  /** Packets waiting. */
  get queued(): number {
    return this.heap.length;
  }

  /** A matched packet. `owned`: the buffer is ours to keep and change (otherwise copy first). */
  input(pkt: Buffer, meta: OffloadMeta | null, now: number, owned: boolean): void {
    this.enqueue(pkt, meta, now, owned, false);
  }

  private enqueue(pkt: Buffer, meta: OffloadMeta | null, now: number, owned: boolean, isCopy: boolean): void {
    const c = this.counters;
    const n = this.spec;
    if (!isCopy) c.matched++;
    let count = 1;
    if (this.dup && !isCopy && this.dup.next()) count++;
    if (this.loss && this.loss.next()) {
      if (n.ecn && ecnCapable(pkt)) {
        if (!owned) {
          pkt = Buffer.from(pkt);
          owned = true;
        }
        markCe(pkt);
        c.marked++;
      } else {
        count--;
        c.dropped++;
      }
    }
    if (count === 0) return;
    // The copy is taken before corruption touches the original.
    let copy: Buffer | null = null;
    if (count > 1) copy = Buffer.from(pkt);
    if (this.corrupt && this.corrupt.next()) {
      if (!owned) {
        pkt = Buffer.from(pkt);
        owned = true;
      }
      if (meta && (meta.flags & VirtioNetHdr.F_NEEDS_CSUM) !== 0) completeChecksum(pkt, meta);
      if (pkt.length > 0) pkt[this.corruptPos.below(pkt.length)]! ^= 1 << this.corruptPos.below(8);
      // Whatever the device was told about checksums no longer holds: let the receiver check.
      meta = null;
      c.corrupted++;
    }
    if (this.heap.length >= n.limit) {
      c.queueDrops++;
      return;
    }
    if (copy) {
      c.duplicated++;
      this.enqueue(copy, meta ? { ...meta } : null, now, true, true);
    }
    const gap = n.gap ?? 0;
    if (this.reorder === null || gap === 0 || this.counter < gap - 1 || !this.reorder.next()) {
      let delay = n.delay ? n.delay.ms : 0;
      if (this.delayU) delay += n.delay!.jitterMs * distributionT(n.distribution ?? 'uniform', this.delayU.next());
      if (delay < 0) delay = 0;
      let t = now;
      if (n.rate) {
        if (this.heap.length > 0 && this.lastTime > -Infinity) {
          // The last waiting packet is the reference: its remaining wait is a head start.
          delay = Math.max(0, delay - (this.lastTime - now));
          if (this.lastTime > now) c.rateQueued++;
          t = this.lastTime;
        }
        delay += this.transmitMs(pkt.length);
      }
      this.counter++;
      const at = t + delay;
      if (at <= now && this.heap.length === 0 && !n.slot) {
        // Nothing to wait for and nobody ahead: straight on (no copy of a borrowed buffer).
        c.sent++;
        this.output(pkt, meta, now, owned);
        return;
      }
      if (at > now) c.delayed++;
      this.push(at, owned ? pkt : Buffer.from(pkt), meta && !owned ? { ...meta } : meta);
      this.release(now);
    } else {
      // Reordered: out at once, ahead of everything waiting (netem's head of queue).
      this.counter = 0;
      c.reordered++;
      c.sent++;
      this.output(pkt, meta, now, owned);
    }
  }

  /** netem's packet_time_ns, in ms: (len + overhead) rounded up to cells, at the rate. */
  private transmitMs(len: number): number {
    const r = this.spec.rate!;
    let l = len + r.packetOverhead;
    if (r.cellSize > 0) {
      const cells = Math.ceil(Math.max(l, 0) / r.cellSize);
      l = cells * (r.cellSize + r.cellOverhead);
    }
    return (Math.max(l, 0) * 1000) / r.bytesPerSec;
  }

  private push(t: number, pkt: Buffer, meta: OffloadMeta | null): void {
    if (t > this.lastTime) this.lastTime = t;
    const w: Waiting = { t, seq: this.seq++, pkt, meta };
    const h = this.heap;
    let i = h.length;
    h.push(w);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(w, h[p]!)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = w;
  }

  private pop(): Waiting {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= h.length) break;
        if (c + 1 < h.length && less(h[c + 1]!, h[c]!)) c++;
        if (!less(h[c]!, last)) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    } else {
      this.lastTime = -Infinity;
    }
    return top;
  }

  private nextSlot(now: number): void {
    const s = this.spec.slot as SlotSpec;
    let d: number;
    if (s.dist) d = Math.max(0, s.dist.delayMs + s.dist.jitterMs * distributionT(s.dist.name, this.slotRng.next()));
    else d = s.minMs + (s.maxMs - s.minMs) * this.slotRng.next();
    this.slotNext = now + d;
    this.slotPackets = s.packets || Infinity;
    this.slotBytes = s.bytes || Infinity;
  }

  /** Passes on every packet due at `now`; arms the wake-up for the next one. */
  release(now: number): number {
    const h = this.heap;
    const slot = this.spec.slot;
    let n = 0;
    while (h.length > 0) {
      const top = h[0]!;
      if (slot && this.slotNext < top.t) this.nextSlot(now);
      if (top.t <= now && (!slot || this.slotNext <= now)) {
        this.pop();
        if (slot) {
          this.slotPackets--;
          this.slotBytes -= top.pkt.length;
          if (this.slotPackets <= 0 || this.slotBytes <= 0) this.nextSlot(now);
        }
        this.counters.sent++;
        n++;
        this.output(top.pkt, top.meta, now, true);
        continue;
      }
      this.arm(slot ? Math.max(top.t, this.slotNext) : top.t);
      return n;
    }
    this.disarm();
    return n;
  }

  private arm(at: number): void {
    if (this.closed || at === this.handleAt) return;
    this.disarm();
    this.handleAt = at;
    this.handle = this.sched.at(at, () => this.onTimer(at));
  }

  private disarm(): void {
    if (this.handle !== null) this.sched.cancel(this.handle);
    this.handle = null;
    this.handleAt = Infinity;
  }

  private onTimer(at: number): void {
    this.handle = null;
    this.handleAt = Infinity;
    if (this.closed) return;
    // Node's timers count whole milliseconds from a cached loop time, so one can fire up
    // to a millisecond before `at`: then wait again, a packet never leaves early.
    const now = this.sched.now();
    if (now < at) {
      this.arm(at);
      return;
    }
    const n = this.release(now);
    if (n > 0) this.releasedFn(now);
  }

  /** Removal: everything still waiting goes on now, in order (nothing is lost). */
  drain(now: number): number {
    this.disarm();
    let n = 0;
    while (this.heap.length > 0) {
      const w = this.pop();
      this.counters.sent++;
      n++;
      this.output(w.pkt, w.meta, now, true);
    }
    this.closed = true;
    return n;
  }

  /** Forgets every waiting packet (the device is closing). */
  close(): void {
    this.disarm();
    this.heap.length = 0;
    this.lastTime = -Infinity;
    this.closed = true;
  }

  /** For tests and `impair list`: when the next packet is due (Infinity when none). */
  nextDue(): number {
    return this.heap.length ? this.heap[0]!.t : Infinity;
  }
}

function less(a: Waiting, b: Waiting): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

/** ECT(0), ECT(1) or CE already (RFC 3168 5): the packet can carry a mark instead of being dropped. */
function ecnCapable(pkt: Buffer): boolean {
  return pkt.length >= 20 && pkt[0]! >> 4 === 4 && (pkt[1]! & 3) !== 0;
}

/** Sets CE (RFC 3168 5) and mends the header checksum. */
function markCe(pkt: Buffer): void {
  pkt[1] = pkt[1]! | 3;
  const ihl = (pkt[0]! & 15) * 4;
  pkt[10] = 0;
  pkt[11] = 0;
  const c = internetChecksum(pkt, 0, ihl);
  pkt[10] = c >> 8;
  pkt[11] = c & 255;
}
