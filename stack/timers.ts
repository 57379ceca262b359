/**
 * A min-heap of deadlines with lazy cancellation. Time is passed in (ms, float);
 * nothing here reads a clock. Owners keep the handle's `at`; re-arming a timer
 * updates the same entry in place.
 */
/**
 * What the queue orders: a deadline, the entry's position in the heap and what to do when
 * it is due. A Timer is one; an owner with many instances may be its own entry instead
 * (a TCP connection is: no Timer and no closure per connection, issue 16).
 */
export interface TimerEntry {
  /** Deadline; Infinity when disarmed. */
  at: number;
  /** Position in the heap, -1 when not queued. */
  index: number;
  fire(now: number): void;
}

export class Timer implements TimerEntry {
  at = Infinity;
  index = -1;
  constructor(readonly fire: (now: number) => void) {}
}

export class TimerQueue {
  private heap: TimerEntry[] = [];

  get size(): number {
    return this.heap.length;
  }

  /** Earliest deadline, or Infinity. */
  next(): number {
    return this.heap.length ? this.heap[0].at : Infinity;
  }

  arm(t: TimerEntry, at: number): void {
    const old = t.at;
    t.at = at;
    if (t.index < 0) {
      t.index = this.heap.length;
      this.heap.push(t);
      this.up(t.index);
    } else if (at < old) this.up(t.index);
    else if (at > old) this.down(t.index);
  }

  disarm(t: TimerEntry): void {
    if (t.index < 0) {
      t.at = Infinity;
      return;
    }
    const i = t.index;
    const last = this.heap.pop()!;
    if (last !== t) {
      this.heap[i] = last;
      last.index = i;
      this.up(i);
      this.down(last.index);
    }
    t.index = -1;
    t.at = Infinity;
  }

  /** Fires every timer due at `now`, in deadline order. */
  run(now: number): number {
    let n = 0;
    while (this.heap.length && this.heap[0].at <= now) {
      const t = this.heap[0];
      this.disarm(t);
      n++;
      t.fire(now);
    }
    return n;
  }

  private up(i: number): void {
    const h = this.heap;
    const t = h[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].at <= t.at) break;
      h[i] = h[p];
      h[i].index = i;
      i = p;
    }
    h[i] = t;
    t.index = i;
  }

  private down(i: number): void {
    const h = this.heap;
    const n = h.length;
    const t = h[i];
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1].at < h[c].at) c++;
      if (h[c].at >= t.at) break;
      h[i] = h[c];
      h[i].index = i;
      i = c;
    }
    h[i] = t;
    t.index = i;
  }
}
