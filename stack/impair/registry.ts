/**
 * The impairments of a running stack: ids, the packet ones on the ImpairDevice, the
 * connection ones in the ToxicRegistry, their counters, and an event for each addition
 * and removal. What `faultstack impair add|list|del|clear` and `run --impair` drive.
 *
 * A spec without `seed` gets one drawn here; it is part of the words `list` shows, so any
 * run can be repeated exactly by adding the same words again.
 */
import type { ImpairDevice, PacketStage } from './device';
import { CodedError } from '../util/errors';
import type { NetemCounters } from './netem';
import { ImpairSpec, ImpairSpecError, formatImpairment, parseImpairment } from './spec';
import type { Toxic, ToxicCounters, ToxicRegistry } from './toxics';

export const ImpairEvent = {
  /** data: ImpairmentEventData */
  Added: 'impairment-added',
  /** data: ImpairmentEventData (with the final counters) */
  Removed: 'impairment-removed',
} as const;

export interface ImpairEventSink {
  emit(e: { kind: string; message: string; data?: object }): unknown;
}

export interface ImpairmentRow {
  id: number;
  kind: 'packet' | 'toxic';
  /** in / out for packets, upstream / downstream for toxics. */
  direction: string;
  /** The canonical words, seed included: `impair add` takes them back as they are. */
  spec: string;
  seed: number;
  /** How long ago it was added, ms. */
  ageMs: number;
  counters: (NetemCounters & { queued: number }) | ToxicCounters;
}

export interface ImpairmentsOptions {
  device?: ImpairDevice | null;
  toxics?: ToxicRegistry | null;
  /** The stack's time (ms). */
  now: () => number;
  events?: ImpairEventSink | null;
  /** Seeds for specs that give none (default: Math.random). */
  newSeed?: () => number;
  /** Why packet impairments are unavailable, when there is no device. */
  noDeviceReason?: string;
}

interface Entry {
  id: number;
  spec: ImpairSpec;
  seed: number;
  addedAt: number;
}

export class Impairments {
  private nextId = 1;
  private readonly entries = new Map<number, Entry>();
  private readonly newSeed: () => number;

  constructor(private readonly o: ImpairmentsOptions) {
    this.newSeed = o.newSeed ?? (() => Math.floor(Math.random() * 4294967296));
  }

  /** Adds one impairment from its words (or one string of words); throws ImpairSpecError. */
  add(words: string | readonly string[]): ImpairmentRow {
    const parsed = parseImpairment(words);
    const seed = parsed.seed ?? this.newSeed();
    const spec: ImpairSpec = { ...parsed, seed };
    const id = this.nextId;
    if (spec.kind === 'packet') {
      if (!this.o.device)
        throw new CodedError('ENOTSUP', this.o.noDeviceReason ?? 'packet impairments need the impairment device, which this stack was started without');
      this.o.device.add(id, spec, seed);
    } else {
      if (!this.o.toxics) throw new CodedError('ENOTSUP', 'connection toxics need the toxic layer, which this stack was started without');
      this.o.toxics.add(id, spec, seed);
    }
    this.nextId++;
    this.entries.set(id, { id, spec, seed, addedAt: this.o.now() });
    const row = this.row(id)!;
    this.o.events?.emit({
      kind: ImpairEvent.Added,
      message: `impairment ${id} added: ${row.spec}`,
      data: { id, kind: row.kind, direction: row.direction, spec: row.spec, seed },
    });
    return row;
  }

  list(): ImpairmentRow[] {
    return [...this.entries.keys()].sort((a, b) => a - b).map((id) => this.row(id)!);
  }

  /** Removes one; what it holds goes on at once. Throws ENOENT naming the ids there are. */
  del(id: number): ImpairmentRow {
    if (!Number.isInteger(id) || !this.entries.has(id)) {
      const ids = [...this.entries.keys()];
      throw new ImpairSpecError(`no impairment ${String(id)}: ${ids.length ? `the ids are ${ids.join(', ')}` : 'there are none'} (faultstack impair list)`);
    }
    const e = this.entries.get(id)!;
    // The counters after the removal: what it held has gone on (counted as sent).
    const stage = e.spec.kind === 'packet' ? (this.o.device?.remove(id) ?? null) : null;
    const toxic = e.spec.kind === 'toxic' ? (this.o.toxics?.remove(id) ?? null) : null;
    const row = this.row(id, stage, toxic)!;
    this.entries.delete(id);
    this.o.events?.emit({
      kind: ImpairEvent.Removed,
      message: `impairment ${id} removed: ${row.spec}`,
      data: { id, kind: row.kind, direction: row.direction, spec: row.spec, seed: row.seed, counters: row.counters },
    });
    return row;
  }

  clear(): ImpairmentRow[] {
    return [...this.entries.keys()].sort((a, b) => a - b).map((id) => this.del(id));
  }

  get size(): number {
    return this.entries.size;
  }

  private row(id: number, removedStage: PacketStage | null = null, removedToxic: Toxic | null = null): ImpairmentRow | null {
    const e = this.entries.get(id);
    if (!e) return null;
    const base = { id, spec: formatImpairment(e.spec), seed: e.seed, ageMs: this.o.now() - e.addedAt };
    if (e.spec.kind === 'packet') {
      const st = removedStage ?? this.o.device?.list().find((s) => s.id === id);
      const counters = st ? { ...st.queue.counters, queued: st.queue.queued } : { ...zeroNetem(), queued: 0 };
      return { ...base, kind: 'packet', direction: e.spec.direction, counters };
    }
    const t = removedToxic ?? this.o.toxics?.toxics().find((x) => x.id === id);
    return { ...base, kind: 'toxic', direction: e.spec.stream, counters: t ? { ...t.counters } : zeroToxic() };
  }
}

function zeroNetem(): NetemCounters {
  return { matched: 0, dropped: 0, marked: 0, delayed: 0, reordered: 0, duplicated: 0, corrupted: 0, rateQueued: 0, queueDrops: 0, sent: 0 };
}
function zeroToxic(): ToxicCounters {
  return { connections: 0, affected: 0, bytes: 0, delayed: 0, dropped: 0, closed: 0, resets: 0 };
}
