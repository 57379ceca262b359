/** Two stacks joined by an in-memory link on a virtual clock: the unit-test rig. */
import { MemoryLink, MemoryLinkOptions, VirtualClock } from '../../../drivers/memory';
import { Stack, StackOptions } from '../../../stack/stack';
import { VirtualScheduler } from '../../../stack/runtime/scheduler';
import { createNetApi } from '../../../stack/api/net';
import { parseIpv4 } from '../../../stack/wire/addr';

export const A_ADDR = '198.18.0.1';
export const B_ADDR = '198.18.0.2';

export function makePair(link: MemoryLinkOptions = {}, a: Partial<StackOptions> = {}, b: Partial<StackOptions> = {}) {
  const clock = new VirtualClock(1000);
  const l = new MemoryLink({ latencyMs: 0.5, ...link, clock });
  const sched = new VirtualScheduler(clock);
  const stackA = new Stack({ device: l.a, scheduler: sched, address: parseIpv4(A_ADDR)!, prefix: 24, ...a });
  const stackB = new Stack({ device: l.b, scheduler: sched, address: parseIpv4(B_ADDR)!, prefix: 24, ...b });
  return { clock, link: l, a: stackA, b: stackB, netA: createNetApi(stackA), netB: createNetApi(stackB) };
}

/** Runs the virtual clock until `cond` holds or `maxMs` of virtual time pass; also lets Node's microtasks/nextTicks run. */
export async function runUntil(clock: VirtualClock, cond: () => boolean, maxMs = 60_000, stepMs = 1): Promise<boolean> {
  const end = clock.now + maxMs;
  while (clock.now < end) {
    if (cond()) return true;
    clock.advance(stepMs);
    await new Promise((r) => setImmediate(r));
  }
  return cond();
}
