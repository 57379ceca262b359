/**
 * ImpairDevice: a Device that wraps another one and applies packet-level impairments
 * (netem's, stack/impair/netem.ts) per direction: `out` to what the stack sends, `in` to
 * what the wrapped device delivers. Like the pcap wrapper it stacks with other devices,
 * so a capture can sit on either side of it:
 *
 *   Stack -> PcapDevice (--pcap: the stack's view) -> ImpairDevice -> PcapDevice (--pcap-wire) -> TUN
 *
 * The outer capture shows what the stack sent before `out` impairments and what it got
 * after `in` impairments; the inner one what went to the kernel and what came from it.
 *
 * Impairments of one direction form a chain in the order they were added: a packet is
 * tested against each in turn; the first that matches takes it, and what it lets through
 * (at once or later) continues with the next one; a packet that matches none passes
 * untouched. With no impairment in a direction the device is a plain pass-through (no
 * clock read, no copy; zero-copy receive stays available).
 *
 * GSO: a TCP super-segment (TSO from the stack, or one the kernel hands over) that an
 * impairment's addresses and ports take is cut into wire-size segments first
 * (drivers/gso.ts), so loss, corruption and rate act per packet as on a wire.
 *
 * Time is passed in through the scheduler the stack runs on: `now()` once per send and
 * per received burst, and released packets leave from scheduler callbacks.
 */
import { CHECKSUM_VERIFIED, type Device, type OffloadMeta, type ReceiveHandler } from '../../drivers/device';
import { isGsoTcp4, segmentTcp4 } from '../../drivers/gso';
import { PacketMatcher } from './match';
import { NetemQueue, ReleaseScheduler } from './netem';
import type { Direction, PacketImpairSpec } from './spec';

export type ImpairScheduler = ReleaseScheduler;

/** One installed packet impairment. */
export interface PacketStage {
  readonly id: number;
  readonly spec: PacketImpairSpec;
  readonly seed: number;
  readonly addedAt: number;
  readonly matcher: PacketMatcher;
  readonly queue: NetemQueue;
}

export class ImpairDevice implements Device {
  onReceive: ReceiveHandler | null = null;
  private readonly stages: Record<Direction, PacketStage[]> = { in: [], out: [] };
  private inPkts: Buffer[] = [];
  private inMetas: (OffloadMeta | null)[] = [];
  /** Buffers of the batch being delivered that are ours (copies, segments), for claim(). */
  private owned = new Set<Buffer>();
  private delivering = false;
  private closed = false;
  /** Packets cut from super-segments, per direction. */
  gsoSegmented = { in: 0, out: 0 };

  constructor(
    readonly inner: Device,
    private readonly scheduler: ImpairScheduler,
  ) {
    inner.onReceive = (pkts, count, metas) => this.fromInner(pkts, count, metas);
  }

  get name(): string {
    return this.inner.name;
  }

  get mtu(): number {
    return this.inner.mtu;
  }

  /** Installs an impairment at the end of its direction's chain. */
  add(id: number, spec: PacketImpairSpec, seed: number): PacketStage {
    const now = this.scheduler.now();
    const dir = spec.direction;
    // eslint-disable-next-line prefer-const -- the queue's output closes over the stage made from it
    let stage: PacketStage;
    const queue = new NetemQueue({
      spec: spec.netem,
      seed,
      now,
      scheduler: this.scheduler,
      output: (pkt, meta, t, owned) => this.forward(dir, this.stages[dir].indexOf(stage) + 1, pkt, meta, t, owned),
      released: () => this.finish(dir),
    });
    stage = { id, spec, seed, addedAt: now, matcher: new PacketMatcher(spec.match, now), queue };
    this.stages[dir].push(stage);
    return stage;
  }

  /** Removes an impairment; what it holds goes on at once, through the rest of the chain. */
  remove(id: number): PacketStage | null {
    for (const dir of ['in', 'out'] as const) {
      const list = this.stages[dir];
      const i = list.findIndex((s) => s.id === id);
      if (i < 0) continue;
      const s = list[i]!;
      const n = s.queue.drain(this.scheduler.now());
      list.splice(i, 1);
      if (n > 0) this.finish(dir);
      return s;
    }
    return null;
  }

  list(): PacketStage[] {
    return [...this.stages.out, ...this.stages.in].sort((a, b) => a.id - b.id);
  }

  // ------------------------------------------------------------------------------ out

  send(packet: Buffer, meta?: OffloadMeta | null): void {
    if (this.stages.out.length === 0 || this.closed) {
      this.inner.send(packet, meta);
      return;
    }
    // The stack gives the buffer away with send(): it is ours to queue and change.
    this.forward('out', 0, packet, meta ?? null, this.scheduler.now(), true);
  }

  /** A stateless reply (Device.sendDetached): through the inner device's detached path unless an outbound stage must see it. */
  sendDetached(packet: Buffer): void {
    if (this.stages.out.length === 0 && !this.closed && this.inner.sendDetached !== undefined) this.inner.sendDetached(packet);
    else this.send(packet, null);
  }

  setSynBudget(n: number): void {
    this.inner.setSynBudget?.(n);
  }
  allowSource(addr: number): void {
    this.inner.allowSource?.(addr);
  }

  flush(): void {
    this.inner.flush();
  }

  // ------------------------------------------------------------------------------ in

  private fromInner(pkts: Buffer[], count: number, metas: (OffloadMeta | null)[] | null): void {
    const h = this.onReceive;
    if (!h) return;
    if (this.stages.in.length === 0 || this.closed) {
      h(pkts, count, metas);
      return;
    }
    const now = this.scheduler.now();
    // The burst's buffers are valid during this call only: a packet that waits is copied.
    for (let i = 0; i < count; i++) this.forward('in', 0, pkts[i]!, metas ? (metas[i] ?? null) : null, now, false);
    this.deliver();
  }

  claim(packet: Buffer): boolean {
    if (this.delivering && this.owned.has(packet)) return true;
    return this.inner.claim !== undefined && this.inner.claim(packet);
  }

  private deliver(): void {
    if (this.inPkts.length === 0) return;
    const pkts = this.inPkts,
      metas = this.inMetas;
    this.inPkts = [];
    this.inMetas = [];
    const h = this.onReceive;
    if (!h) {
      this.owned.clear();
      return;
    }
    this.delivering = true;
    try {
      h(pkts, pkts.length, metas);
    } finally {
      this.delivering = false;
      this.owned.clear();
    }
  }

  // ------------------------------------------------------------------------------ the chain

  /** Runs a packet through the chain from stage `from` on; what passes goes to the sink. */
  private forward(dir: Direction, from: number, pkt: Buffer, meta: OffloadMeta | null, now: number, owned: boolean): void {
    const list = this.stages[dir];
    for (let k = from; k < list.length; k++) {
      const s = list[k]!;
      if (isGsoTcp4(pkt, meta)) {
        if (!s.matcher.headerMatch(pkt, now)) continue;
        const segs = segmentTcp4(pkt, meta!);
        this.gsoSegmented[dir] += segs.length;
        const m = dir === 'in' ? CHECKSUM_VERIFIED : null; // the segments we cut carry complete checksums
        for (const seg of segs) this.forward(dir, k, seg, m, now, true);
        return;
      }
      if (s.matcher.test(pkt, now)) {
        s.queue.input(pkt, meta, now, owned);
        return;
      }
    }
    if (dir === 'out') {
      this.inner.send(pkt, meta);
    } else {
      this.inPkts.push(pkt);
      this.inMetas.push(meta);
      if (owned) this.owned.add(pkt);
    }
  }

  /** After a timed release or a removal: write out, or hand the received ones to the stack. */
  private finish(dir: Direction): void {
    if (this.closed) return;
    if (dir === 'out') this.inner.flush();
    else this.deliver();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const dir of ['in', 'out'] as const) for (const s of this.stages[dir]) s.queue.close();
    this.inner.close();
  }

  stats(): Record<string, number> {
    let queued = 0;
    for (const s of this.list()) queued += s.queue.queued;
    return {
      ...this.inner.stats(),
      impairments: this.list().length,
      impairQueued: queued,
      gsoSegmentedIn: this.gsoSegmented.in,
      gsoSegmentedOut: this.gsoSegmented.out,
    };
  }
}
