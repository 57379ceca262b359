/**
 * The two schedulers a stack runs on: wall-clock time for real devices, and a
 * virtual clock (drivers/memory.ts) for deterministic tests.
 */
import { performance } from 'node:perf_hooks';
import type { Scheduler } from '../stack';
import type { VirtualClock, ClockHandle } from '../../drivers/memory';

export class RealScheduler implements Scheduler {
  now(): number {
    return performance.now();
  }
  at(at: number, fn: () => void): unknown {
    const t = setTimeout(fn, Math.max(0, at - performance.now()));
    return t;
  }
  cancel(handle: unknown): void {
    clearTimeout(handle as NodeJS.Timeout);
  }
  soon(fn: () => void): void {
    queueMicrotask(fn);
  }
}

export class VirtualScheduler implements Scheduler {
  constructor(readonly clock: VirtualClock) {}
  now(): number {
    return this.clock.now;
  }
  at(at: number, fn: () => void): unknown {
    return this.clock.schedule(Math.max(at, this.clock.now), fn);
  }
  cancel(handle: unknown): void {
    this.clock.cancel(handle as ClockHandle);
  }
  soon(fn: () => void): void {
    this.clock.schedule(this.clock.now, fn);
  }
}
