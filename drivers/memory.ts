/**
 * Deterministic in-process link for unit tests.
 *
 * `VirtualClock` is a discrete-event clock: time (ms, float) only moves when a test calls
 * `advance` / `runUntil` / `runUntilIdle`; nothing here reads the wall clock. Callbacks run in
 * time order, ties in the order they were scheduled.
 *
 * `MemoryLink` joins two Devices (`a` and `b`). `send` copies the packet (the receiver gets its
 * own bytes) and queues it; `flush` transmits the queue: each packet goes through, in order,
 *   1. the MTU check (bigger than `mtu`: dropped, reason 'mtu'),
 *   2. `dropFilter(pkt, dir, index)` (true: dropped, reason 'filter'; `index` counts the packets
 *      transmitted in that direction from 0, so a test can drop exactly the nth segment),
 *   3. random loss with probability `lossRate` (reason 'loss'),
 *   4. `corrupt(pkt, dir, index)` (mutate in place and return true, or return a new Buffer),
 *   5. random reordering with probability `reorderRate`: the packet is held back and delivered
 *      right after the next packet of the same direction (or `reorderDelayMs` after its own
 *      arrival time if no other packet comes).
 * It then arrives `latencyMs` later. Packets arriving at the same virtual time in the same
 * direction are delivered as one burst (one `onReceive` call); a whole flush is one burst.
 * Randomness comes from a seeded PRNG per direction (seed, seed + 1), drawn for every
 * transmitted packet: the same sends with the same seed give the same losses, whatever the
 * other direction, the drop filter or the MTU drops do.
 */
import type { Device, OffloadMeta, ReceiveHandler } from './device';

// ---------------------------------------------------------------------------------------------
// virtual clock

export interface ClockHandle {
  readonly at: number;
  /** @internal */ readonly seq: number;
  /** @internal */ fn: (() => void) | null;
}

export class VirtualClock {
  private t: number;
  private heap: ClockHandle[] = [];
  private seq = 0;
  private live = 0;
  /** Guard against a callback that keeps rescheduling itself at the same instant. */
  maxCallbacksPerRun = 10_000_000;

  constructor(startMs = 0) {
    if (!Number.isFinite(startMs)) throw new RangeError(`VirtualClock: bad start time ${startMs}`);
    this.t = startMs;
  }

  /** Current virtual time in ms (float). */
  get now(): number {
    return this.t;
  }

  /** Number of scheduled, not yet run or cancelled, callbacks. */
  get pending(): number {
    return this.live;
  }

  /** Time of the next live callback, or Infinity. */
  nextAt(): number {
    this.prune();
    return this.heap.length ? this.heap[0]!.at : Infinity;
  }

  /** Runs `fn` at virtual time `atMs` (a time in the past means "at the next run, now"). */
  schedule(atMs: number, fn: () => void): ClockHandle {
    if (Number.isNaN(atMs)) throw new RangeError('VirtualClock.schedule: time is NaN');
    const h: ClockHandle = { at: Math.max(atMs, this.t), seq: this.seq++, fn };
    this.push(h);
    this.live++;
    return h;
  }

  /** schedule(now + delayMs, fn) */
  after(delayMs: number, fn: () => void): ClockHandle {
    return this.schedule(this.t + delayMs, fn);
  }

  /** Cancels a scheduled callback; no effect if it already ran or was cancelled. */
  cancel(h: ClockHandle | null | undefined): void {
    if (!h || !h.fn) return;
    h.fn = null;
    this.live--;
  }

  /** runUntil(now + ms) */
  advance(ms: number): number {
    if (!(ms >= 0)) throw new RangeError(`VirtualClock.advance: bad duration ${ms}`);
    return this.runUntil(this.t + ms);
  }

  /** Runs every callback due at or before `ms`, then sets now = max(now, ms). Returns how many ran. */
  runUntil(ms: number): number {
    if (Number.isNaN(ms)) throw new RangeError('VirtualClock.runUntil: time is NaN');
    let n = 0;
    for (;;) {
      this.prune();
      const top = this.heap[0];
      if (!top || top.at > ms) break;
      this.runTop();
      if (++n > this.maxCallbacksPerRun)
        throw new Error(`VirtualClock: more than ${this.maxCallbacksPerRun} callbacks in one run (a timer loop at t=${this.t}?)`);
    }
    if (ms > this.t) this.t = ms;
    return n;
  }

  /**
   * Runs callbacks until none is left, but not past now + maxMs of virtual time. Returns true
   * when idle (then `now` is the time of the last callback), false when it stopped at the limit
   * with callbacks still pending (then `now` = start + maxMs).
   */
  runUntilIdle(maxMs = 60_000): boolean {
    const limit = this.t + maxMs;
    let n = 0;
    for (;;) {
      this.prune();
      const top = this.heap[0];
      if (!top) return true;
      if (top.at > limit) {
        this.t = Math.max(this.t, limit);
        return false;
      }
      this.runTop();
      if (++n > this.maxCallbacksPerRun)
        throw new Error(`VirtualClock: more than ${this.maxCallbacksPerRun} callbacks in one run (a timer loop at t=${this.t}?)`);
    }
  }

  private runTop(): void {
    const h = this.pop();
    const fn = h.fn!;
    h.fn = null;
    this.live--;
    if (h.at > this.t) this.t = h.at;
    fn();
  }

  private prune(): void {
    while (this.heap.length && this.heap[0]!.fn === null) this.pop();
  }

  private less(x: ClockHandle, y: ClockHandle): boolean {
    return x.at < y.at || (x.at === y.at && x.seq < y.seq);
  }

  private push(h: ClockHandle): void {
    const a = this.heap;
    let i = a.length;
    a.push(h);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h, a[p]!)) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = h;
  }

  private pop(): ClockHandle {
    const a = this.heap;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      const n = a.length;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && this.less(a[c + 1]!, a[c]!)) c++;
        if (!this.less(a[c]!, last)) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

// ---------------------------------------------------------------------------------------------
// PRNG: a counter run through a 32-bit integer mixer; deterministic for a given seed.

export class SeededRandom {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x9e3779b9) >>> 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    z ^= z >>> 15;
    return (z >>> 0) / 4294967296;
  }
}

// ---------------------------------------------------------------------------------------------
// link

export type LinkDir = 'a->b' | 'b->a';
export type DropReason = 'mtu' | 'filter' | 'loss' | 'closed';

export interface LinkLogEntry {
  /** index of the packet among those transmitted in this direction (0-based) */
  index: number;
  /** virtual time of the event (transmit time for drops, arrival time for deliveries) */
  t: number;
  len: number;
  event: 'delivered' | 'dropped';
  reason?: DropReason;
  reordered?: boolean;
  corrupted?: boolean;
  /** a copy of the bytes, only with `logPackets` */
  packet?: Buffer;
}

export interface LinkDirStats {
  transmitted: number;
  delivered: number;
  deliveredBytes: number;
  dropped: number;
  droppedMtu: number;
  droppedFilter: number;
  droppedLoss: number;
  droppedClosed: number;
  reordered: number;
  corrupted: number;
  bursts: number;
}

export interface MemoryLinkOptions {
  /** The clock deliveries run on; a new VirtualClock(0) when omitted (see `link.clock`). */
  clock?: VirtualClock;
  mtu?: number;
  latencyMs?: number;
  lossRate?: number;
  seed?: number;
  reorderRate?: number;
  /** How long a reordered packet waits for a later one to overtake it (default max(1, latencyMs)). */
  reorderDelayMs?: number;
  dropFilter?: (pkt: Buffer, dir: LinkDir, index: number) => boolean;
  corrupt?: (pkt: Buffer, dir: LinkDir, index: number) => Buffer | boolean | void;
  /** Keep a per-direction event log (default true), at most `logLimit` entries each (default 100000). */
  log?: boolean;
  logLimit?: number;
  /** Also keep a copy of each packet in the log (default false). */
  logPackets?: boolean;
  names?: [string, string];
}

interface InFlight {
  pkt: Buffer;
  meta: OffloadMeta | null;
  index: number;
  reordered: boolean;
  corrupted: boolean;
}

interface Burst {
  at: number;
  items: InFlight[];
  handle: ClockHandle;
}

interface Held {
  item: InFlight;
  handle: ClockHandle;
}

function newDirStats(): LinkDirStats {
  return {
    transmitted: 0,
    delivered: 0,
    deliveredBytes: 0,
    dropped: 0,
    droppedMtu: 0,
    droppedFilter: 0,
    droppedLoss: 0,
    droppedClosed: 0,
    reordered: 0,
    corrupted: 0,
    bursts: 0,
  };
}

export class MemoryDevice implements Device {
  onReceive: ReceiveHandler | null = null;
  /** @internal */ txQueue: { pkt: Buffer; meta: OffloadMeta | null }[] = [];
  /** @internal */ closed = false;
  /** @internal */ counters = {
    rxPackets: 0,
    rxBytes: 0,
    rxBursts: 0,
    rxNoHandler: 0,
    txPackets: 0,
    txBytes: 0,
    txDrops: 0,
    txFlushes: 0,
  };

  constructor(
    readonly name: string,
    private readonly link: MemoryLink,
    /** @internal */ readonly dir: LinkDir,
  ) {}

  get mtu(): number {
    return this.link.mtu;
  }

  send(packet: Buffer, meta?: OffloadMeta | null): void {
    if (this.closed) {
      this.counters.txDrops++;
      return;
    }
    this.txQueue.push({ pkt: Buffer.from(packet), meta: meta ? { ...meta } : null });
  }

  flush(): void {
    if (this.closed || this.txQueue.length === 0) return;
    const q = this.txQueue;
    this.txQueue = [];
    this.counters.txFlushes++;
    this.link.transmit(this, q);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.counters.txDrops += this.txQueue.length;
    this.txQueue = [];
  }

  get isClosed(): boolean {
    return this.closed;
  }

  stats(): Record<string, number> {
    return { ...this.counters, txQueued: this.txQueue.length };
  }
}

export class MemoryLink {
  readonly a: MemoryDevice;
  readonly b: MemoryDevice;
  readonly clock: VirtualClock;
  readonly mtu: number;
  readonly latencyMs: number;
  readonly lossRate: number;
  readonly reorderRate: number;
  readonly reorderDelayMs: number;
  /** Per-direction counters. */
  readonly counters: Record<LinkDir, LinkDirStats> = { 'a->b': newDirStats(), 'b->a': newDirStats() };
  /** Per-direction event log (empty when `log: false`). */
  readonly log: Record<LinkDir, LinkLogEntry[]> = { 'a->b': [], 'b->a': [] };

  dropFilter: MemoryLinkOptions['dropFilter'];
  corrupt: MemoryLinkOptions['corrupt'];

  private readonly rng: Record<LinkDir, SeededRandom>;
  private readonly bursts: Record<LinkDir, Map<number, Burst>> = { 'a->b': new Map(), 'b->a': new Map() };
  private readonly held: Record<LinkDir, Held[]> = { 'a->b': [], 'b->a': [] };
  private readonly nextIndex: Record<LinkDir, number> = { 'a->b': 0, 'b->a': 0 };
  private readonly logOn: boolean;
  private readonly logLimit: number;
  private readonly logPackets: boolean;

  constructor(opts: MemoryLinkOptions = {}) {
    this.clock = opts.clock ?? new VirtualClock(0);
    this.mtu = opts.mtu ?? 1500;
    this.latencyMs = opts.latencyMs ?? 0.1;
    this.lossRate = opts.lossRate ?? 0;
    this.reorderRate = opts.reorderRate ?? 0;
    this.reorderDelayMs = opts.reorderDelayMs ?? Math.max(1, this.latencyMs);
    const rate = (r: number, what: string) => {
      if (!(r >= 0 && r <= 1)) throw new RangeError(`MemoryLink: ${what} must be in [0, 1], got ${r}`);
    };
    rate(this.lossRate, 'lossRate');
    rate(this.reorderRate, 'reorderRate');
    if (!(this.latencyMs >= 0)) throw new RangeError(`MemoryLink: latencyMs must be >= 0, got ${this.latencyMs}`);
    if (!(Number.isInteger(this.mtu) && this.mtu > 0)) throw new RangeError(`MemoryLink: bad mtu ${this.mtu}`);
    const seed = opts.seed ?? 1;
    this.rng = { 'a->b': new SeededRandom(seed), 'b->a': new SeededRandom(seed + 1) };
    this.dropFilter = opts.dropFilter;
    this.corrupt = opts.corrupt;
    this.logOn = opts.log ?? true;
    this.logLimit = opts.logLimit ?? 100_000;
    this.logPackets = opts.logPackets ?? false;
    const [na, nb] = opts.names ?? ['mem-a', 'mem-b'];
    this.a = new MemoryDevice(na, this, 'a->b');
    this.b = new MemoryDevice(nb, this, 'b->a');
  }

  /** Packets transmitted but not yet delivered (in flight or held for reordering). */
  get inFlight(): number {
    let n = 0;
    for (const d of ['a->b', 'b->a'] as const) {
      for (const b of this.bursts[d].values()) n += b.items.length;
      n += this.held[d].length;
    }
    return n;
  }

  /** @internal */
  transmit(from: MemoryDevice, q: { pkt: Buffer; meta: OffloadMeta | null }[]): void {
    const dir = from.dir;
    const st = this.counters[dir];
    const now = this.clock.now;
    const arrival = now + this.latencyMs;
    for (const { pkt: p0, meta } of q) {
      let pkt = p0;
      const index = this.nextIndex[dir]++;
      // Draw for every packet, dropped or not, so a drop filter or an MTU drop does not shift
      // the random pattern of the packets after it.
      const lossRoll = this.lossRate > 0 ? this.rng[dir].next() : 1;
      const reorderRoll = this.reorderRate > 0 ? this.rng[dir].next() : 1;
      st.transmitted++;
      from.counters.txPackets++;
      from.counters.txBytes += pkt.length;
      if (pkt.length > this.mtu) {
        from.counters.txDrops++;
        this.drop(dir, index, pkt, 'mtu', now);
        continue;
      }
      if (this.dropFilter && this.dropFilter(pkt, dir, index)) {
        this.drop(dir, index, pkt, 'filter', now);
        continue;
      }
      if (lossRoll < this.lossRate) {
        this.drop(dir, index, pkt, 'loss', now);
        continue;
      }
      let corrupted = false;
      if (this.corrupt) {
        const r = this.corrupt(pkt, dir, index);
        if (Buffer.isBuffer(r)) {
          pkt = r;
          corrupted = true;
        } else if (r === true) corrupted = true;
        if (corrupted) st.corrupted++;
      }
      const item: InFlight = { pkt, meta, index, reordered: false, corrupted };
      if (reorderRoll < this.reorderRate) {
        item.reordered = true;
        st.reordered++;
        const held: Held = {
          item,
          handle: this.clock.schedule(arrival + this.reorderDelayMs, () => {
            const list = this.held[dir];
            const i = list.indexOf(held);
            if (i >= 0) list.splice(i, 1);
            this.enqueue(dir, this.clock.now, [item]);
          }),
        };
        this.held[dir].push(held);
        continue;
      }
      // Held packets go right behind this one: it overtook them.
      const items = [item];
      const held = this.held[dir];
      if (held.length) {
        for (const h of held) {
          this.clock.cancel(h.handle);
          items.push(h.item);
        }
        held.length = 0;
      }
      this.enqueue(dir, arrival, items);
    }
  }

  private enqueue(dir: LinkDir, at: number, items: InFlight[]): void {
    const map = this.bursts[dir];
    const b = map.get(at);
    if (b) {
      b.items.push(...items);
      return;
    }
    const burst: Burst = {
      at,
      items,
      handle: this.clock.schedule(at, () => {
        map.delete(at);
        this.deliver(dir, burst);
      }),
    };
    map.set(at, burst);
  }

  private deliver(dir: LinkDir, burst: Burst): void {
    const to = dir === 'a->b' ? this.b : this.a;
    const st = this.counters[dir];
    const now = this.clock.now;
    if (to.closed) {
      for (const it of burst.items) this.drop(dir, it.index, it.pkt, 'closed', now);
      return;
    }
    const pkts: Buffer[] = [];
    let metas: (OffloadMeta | null)[] | null = null;
    let bytes = 0;
    for (const it of burst.items) {
      pkts.push(it.pkt);
      bytes += it.pkt.length;
      if (it.meta) {
        metas ??= burst.items.map(() => null);
        metas[pkts.length - 1] = it.meta;
      }
      st.delivered++;
      st.deliveredBytes += it.pkt.length;
      this.record(dir, {
        index: it.index,
        t: now,
        len: it.pkt.length,
        event: 'delivered',
        ...(it.reordered ? { reordered: true } : {}),
        ...(it.corrupted ? { corrupted: true } : {}),
        ...(this.logPackets ? { packet: Buffer.from(it.pkt) } : {}),
      });
    }
    st.bursts++;
    to.counters.rxPackets += pkts.length;
    to.counters.rxBytes += bytes;
    to.counters.rxBursts++;
    const h = to.onReceive;
    if (!h) {
      to.counters.rxNoHandler += pkts.length;
      return;
    }
    h(pkts, pkts.length, metas);
  }

  private drop(dir: LinkDir, index: number, pkt: Buffer, reason: DropReason, t: number): void {
    const st = this.counters[dir];
    st.dropped++;
    if (reason === 'mtu') st.droppedMtu++;
    else if (reason === 'filter') st.droppedFilter++;
    else if (reason === 'loss') st.droppedLoss++;
    else st.droppedClosed++;
    this.record(dir, {
      index,
      t,
      len: pkt.length,
      event: 'dropped',
      reason,
      ...(this.logPackets ? { packet: Buffer.from(pkt) } : {}),
    });
  }

  private record(dir: LinkDir, e: LinkLogEntry): void {
    if (!this.logOn) return;
    const l = this.log[dir];
    if (l.length >= this.logLimit) l.shift();
    l.push(e);
  }
}
