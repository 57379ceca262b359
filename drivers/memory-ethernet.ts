/**
 * An in-memory Ethernet segment for unit tests, on the VirtualClock of drivers/memory.ts:
 * any number of ports (Devices of linkType 'ethernet') joined either by a hub (every
 * frame to every other port: "every host sees every frame", as NLB needs) or by a
 * learning bridge (IEEE 802.1D 7.8 in miniature, as a Linux bridge does it: it learns
 * source MACs per port, sends a frame to a known unicast address out of that port only,
 * and floods broadcast, multicast and unknown unicast to every other port; entries age
 * out after 300 s, the bridge's default ageing_time).
 *
 * `send` copies the frame; `flush` hands the port's queue to the segment; frames arrive
 * `latencyMs` later, one burst per port per arrival time. A frame longer than mtu + 14
 * is dropped (counted), as a bridge port drops what exceeds its MTU. `inject` puts raw
 * bytes on the segment from no port (crafted or malformed frames), and `tap` sees every
 * frame transmitted (what tcpdump on the bridge would show).
 */
import type { Device, OffloadMeta, ReceiveHandler } from './device';
import { VirtualClock, type ClockHandle } from './memory';

const AGEING_MS = 300_000;

export interface EthernetSegmentOptions {
  clock?: VirtualClock;
  /** IP MTU of every port (frames may be 14 bytes longer). */
  mtu?: number;
  latencyMs?: number;
  mode?: 'hub' | 'bridge';
}

export interface SegmentFrame {
  t: number;
  from: string;
  frame: Buffer;
}

function macAt(b: Buffer, o: number): number {
  return ((b[o]! << 8) | b[o + 1]!) * 0x100000000 + (((b[o + 2]! << 24) | (b[o + 3]! << 16) | (b[o + 4]! << 8) | b[o + 5]!) >>> 0);
}

export class EthernetPort implements Device {
  readonly linkType = 'ethernet' as const;
  onReceive: ReceiveHandler | null = null;
  /** @internal */ queue: { frame: Buffer; meta: OffloadMeta | null }[] = [];
  /** @internal */ closed = false;
  /** @internal */ readonly counters = { rxFrames: 0, rxBytes: 0, rxBursts: 0, rxNoHandler: 0, txFrames: 0, txBytes: 0, txDrops: 0 };

  constructor(
    readonly name: string,
    private readonly segment: EthernetSegment,
  ) {}

  get mtu(): number {
    return this.segment.mtu;
  }

  send(frame: Buffer, meta?: OffloadMeta | null): void {
    if (this.closed) {
      this.counters.txDrops++;
      return;
    }
    this.queue.push({ frame: Buffer.from(frame), meta: meta ? { ...meta } : null });
  }

  sendWithHeader(header: Uint8Array, headerLength: number, packet: Buffer, meta?: OffloadMeta | null): void {
    if (this.closed) {
      this.counters.txDrops++;
      return;
    }
    const frame = Buffer.allocUnsafe(headerLength + packet.length);
    frame.set(header.subarray(0, headerLength), 0);
    packet.copy(frame, headerLength);
    this.queue.push({ frame, meta: meta ? { ...meta } : null });
  }

  flush(): void {
    if (this.closed || this.queue.length === 0) return;
    const q = this.queue;
    this.queue = [];
    this.segment.transmit(this, q);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.counters.txDrops += this.queue.length;
    this.queue = [];
  }

  stats(): Record<string, number> {
    return { ...this.counters, txQueued: this.queue.length };
  }
}

export class EthernetSegment {
  readonly clock: VirtualClock;
  readonly mtu: number;
  readonly latencyMs: number;
  readonly mode: 'hub' | 'bridge';
  readonly ports: EthernetPort[] = [];
  /** Every frame transmitted, in order (also dropped ones are not here). */
  readonly seen: SegmentFrame[] = [];
  readonly counters = { frames: 0, oversize: 0, flooded: 0, forwarded: 0, filtered: 0 };
  /** Called with every frame as it is transmitted. */
  tap: ((f: SegmentFrame) => void) | null = null;
  /** Return true to drop a frame (loss on the segment). */
  dropFilter: ((frame: Buffer, from: string) => boolean) | null = null;
  private readonly fdb = new Map<number, { port: EthernetPort; at: number }>();
  private readonly pending = new Map<string, { port: EthernetPort; at: number; items: { frame: Buffer; meta: OffloadMeta | null }[]; handle: ClockHandle }>();

  constructor(opts: EthernetSegmentOptions = {}) {
    this.clock = opts.clock ?? new VirtualClock(0);
    this.mtu = opts.mtu ?? 1500;
    this.latencyMs = opts.latencyMs ?? 0.05;
    this.mode = opts.mode ?? 'hub';
  }

  port(name: string): EthernetPort {
    const p = new EthernetPort(name, this);
    this.ports.push(p);
    return p;
  }

  /** The bridge's forwarding database: MAC -> port name (bridge mode). */
  learned(): Map<number, string> {
    const out = new Map<number, string>();
    for (const [mac, e] of this.fdb) if (this.clock.now - e.at < AGEING_MS) out.set(mac, e.port.name);
    return out;
  }

  /** Raw bytes onto the segment as if from outside every port (crafted frames); delivered to all ports. */
  inject(frame: Buffer, meta: OffloadMeta | null = null): void {
    this.record('(inject)', frame);
    const at = this.clock.now + this.latencyMs;
    for (const p of this.ports) this.deliverLater(p, at, Buffer.from(frame), meta);
  }

  /** @internal */
  transmit(from: EthernetPort, q: { frame: Buffer; meta: OffloadMeta | null }[]): void {
    const at = this.clock.now + this.latencyMs;
    for (const { frame, meta } of q) {
      from.counters.txFrames++;
      from.counters.txBytes += frame.length;
      if (frame.length > this.mtu + 14) {
        this.counters.oversize++;
        from.counters.txDrops++;
        continue;
      }
      if (this.dropFilter && this.dropFilter(frame, from.name)) {
        this.counters.filtered++;
        continue;
      }
      this.record(from.name, frame);
      const dst = frame.length >= 6 ? macAt(frame, 0) : 0;
      let out: EthernetPort[];
      if (this.mode === 'bridge' && frame.length >= 14) {
        const src = macAt(frame, 6);
        if ((frame[6]! & 1) === 0) this.fdb.set(src, { port: from, at: this.clock.now });
        const known = (frame[0]! & 1) === 0 ? this.fdb.get(dst) : undefined;
        if (known && this.clock.now - known.at < AGEING_MS) {
          this.counters.forwarded++;
          out = known.port === from ? [] : [known.port];
        } else {
          this.counters.flooded++;
          out = this.ports.filter((p) => p !== from);
        }
      } else {
        out = this.ports.filter((p) => p !== from);
      }
      for (const p of out) this.deliverLater(p, at, out.length > 1 ? Buffer.from(frame) : frame, meta ? { ...meta } : null);
    }
  }

  private record(from: string, frame: Buffer): void {
    this.counters.frames++;
    const f = { t: this.clock.now, from, frame: Buffer.from(frame) };
    this.seen.push(f);
    if (this.seen.length > 100_000) this.seen.shift();
    if (this.tap) this.tap(f);
  }

  private deliverLater(p: EthernetPort, at: number, frame: Buffer, meta: OffloadMeta | null): void {
    const key = `${p.name}@${at}`;
    const b = this.pending.get(key);
    if (b) {
      b.items.push({ frame, meta });
      return;
    }
    const burst = {
      port: p,
      at,
      items: [{ frame, meta }],
      handle: this.clock.schedule(at, () => {
        this.pending.delete(key);
        if (p.closed) return;
        const frames = burst.items.map((i) => i.frame);
        const metas = burst.items.some((i) => i.meta) ? burst.items.map((i) => i.meta) : null;
        p.counters.rxFrames += frames.length;
        p.counters.rxBursts++;
        for (const f of frames) p.counters.rxBytes += f.length;
        if (!p.onReceive) {
          p.counters.rxNoHandler += frames.length;
          return;
        }
        p.onReceive(frames, frames.length, metas);
      }),
    };
    this.pending.set(key, burst);
  }
}
