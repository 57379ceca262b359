/**
 * A firewall between two memory links on one virtual clock, the unit-test rig of
 * stack/firewall/:
 *
 *   A 198.18.1.2/24 --link in-- FI 198.18.1.1/24 [Firewall] FE 198.19.0.1/24 --link out-- B 198.19.0.2/24
 *
 * A is an internal host (its default route: the link), B an external one (the media
 * server's place). The Firewall Client service listens on FI:1745; KB 319381's module is
 * installed on a FaultConfig the test can switch.
 */
import { MemoryLink, VirtualClock, type MemoryLinkOptions } from '../../../drivers/memory';
import { Stack } from '../../../stack/stack';
import { VirtualScheduler } from '../../../stack/runtime/scheduler';
import { createNetApi } from '../../../stack/api/net';
import { parseIpv4 } from '../../../stack/wire/addr';
import { Firewall } from '../../../stack/firewall/firewall';
import { StreamingMediaFilter } from '../../../stack/firewall/media';
import { FwcService } from '../../../stack/firewall/fwc-service';
import { FaultConfig } from '../../../stack/faults/config';
import { EventLog } from '../../../stack/faults/events';
import { kb319381 } from '../../../stack/faults/kb319381/index';
import type { Timers } from '../../../lab/media/mms-server';

export const A_ADDR = '198.18.1.2',
  FI_ADDR = '198.18.1.1',
  FE_ADDR = '198.19.0.1',
  B_ADDR = '198.19.0.2';
export const A_IP = parseIpv4(A_ADDR)!,
  FI_IP = parseIpv4(FI_ADDR)!,
  FE_IP = parseIpv4(FE_ADDR)!,
  B_IP = parseIpv4(B_ADDR)!;

export interface FirewallRigOptions {
  inside?: MemoryLinkOptions;
  outside?: MemoryLinkOptions;
  rules?: string[];
  mode?: 'off' | 'buggy' | 'hotfixed';
  params?: Record<string, number>;
  /** Start the Firewall Client service (default true). */
  fwc?: boolean;
}

export async function makeFirewall(o: FirewallRigOptions = {}) {
  const clock = new VirtualClock(1000);
  const sched = new VirtualScheduler(clock);
  const inside = new MemoryLink({ latencyMs: 0.2, log: false, ...o.inside, clock, names: ['a', 'fi'] });
  const outside = new MemoryLink({ latencyMs: 0.2, log: false, ...o.outside, clock, names: ['fe', 'b'] });
  const a = new Stack({ device: inside.a, scheduler: sched, address: A_IP, prefix: 24 });
  const fi = new Stack({ device: inside.b, scheduler: sched, address: FI_IP, prefix: 24 });
  const fe = new Stack({ device: outside.a, scheduler: sched, address: FE_IP, prefix: 24 });
  const b = new Stack({ device: outside.b, scheduler: sched, address: B_IP, prefix: 24 });
  const fw = new Firewall({ internal: fi, external: fe, ...(o.rules ? { rules: o.rules } : {}) });
  const media = new StreamingMediaFilter(fw);
  const fwc = new FwcService({ firewall: fw, media });
  const config = new FaultConfig();
  config.setMode('kb319381', o.mode ?? 'hotfixed');
  for (const [k, v] of Object.entries(o.params ?? {})) config.setParam(k, v);
  const events = new EventLog();
  const fault = kb319381.install({ stack: fi, config, events, features: { firewall: fw } });
  const fwEvents: import('../../../stack/firewall/firewall').FirewallEvent[] = [];
  fw.subscribe((e) => fwEvents.push(e));
  if (o.fwc !== false) {
    const started = fwc.start();
    await runUntil(clock, () => fwc['server'] !== null, 10);
    await started;
  }
  const timers: Timers = {
    setTimeout: (fn, ms) => clock.schedule(clock.now + ms, fn),
    clearTimeout: (h) => clock.cancel(h as ReturnType<VirtualClock['schedule']>),
  };
  return {
    clock,
    sched,
    inside,
    outside,
    a,
    fi,
    fe,
    b,
    fw,
    media,
    fwc,
    config,
    events,
    fault,
    fwEvents,
    timers,
    netA: createNetApi(a),
    netB: createNetApi(b),
  };
}
export type FirewallRig = Awaited<ReturnType<typeof makeFirewall>>;

/** Runs the virtual clock until `cond` holds or `maxMs` pass; lets microtasks and nextTicks run between steps. */
export async function runUntil(clock: VirtualClock, cond: () => boolean, maxMs = 60_000, stepMs = 1): Promise<boolean> {
  const end = clock.now + maxMs;
  while (clock.now < end) {
    if (cond()) return true;
    clock.advance(Math.min(stepMs, end - clock.now));
    await new Promise((r) => setImmediate(r));
  }
  return cond();
}

/** Resolves a promise while the clock runs. */
export async function runPromise<T>(clock: VirtualClock, p: Promise<T>, maxMs = 60_000): Promise<T> {
  let done = false,
    value: T | undefined,
    error: unknown = null;
  p.then(
    (v) => {
      done = true;
      value = v;
    },
    (e) => {
      done = true;
      error = e ?? new Error('rejected');
    },
  );
  await runUntil(clock, () => done, maxMs);
  if (!done) throw new Error(`not settled within ${maxMs} ms of virtual time`);
  if (error !== null) throw error;
  return value as T;
}
