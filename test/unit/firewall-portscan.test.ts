/**
 * Port-scan detection (stack/firewall/portscan.ts) on time passed in: events 15104 and
 * 15105 at their thresholds of distinct ports, once per address until it has been quiet
 * for the interval, ports forgotten after the interval, bounded memory.
 */
import { describe, expect, it } from 'vitest';
import { PortScanDetector, type PortScanEvent } from '../../stack/firewall/portscan';

const SRV = 0xc6130002;

function detector(t = { wellKnown: 10, allPorts: 20 }, opts = {}) {
  const events: PortScanEvent[] = [];
  const d = new PortScanDetector(
    () => t,
    (e) => events.push(e),
    opts,
  );
  return { d, events };
}

describe('port-scan detection', () => {
  it('a media server sending to one closed port from ports 1025.. trips 15104 at 10 well-known ports and 15105 at 20 in all', () => {
    const { d, events } = detector();
    // Each dropped datagram touches its source port and the destination 7000.
    for (let i = 0; i < 8; i++) d.dropped(SRV, 1025 + i, 7000, 1000 + i);
    expect(events).toEqual([]); // 8 well-known, 9 in all
    d.dropped(SRV, 1033, 7000, 1010);
    expect(events).toEqual([]);
    d.dropped(SRV, 1034, 7000, 1011); // the 10th well-known port
    expect(events.map((e) => e.id)).toEqual([15104]);
    expect(events[0]).toMatchObject({ address: SRV, ports: 10, threshold: 10 });
    expect(events[0]!.sample).toEqual([1025, 1026, 1027, 1028, 1029, 1030, 1031, 1032, 1033, 1034]);
    for (let i = 10; i < 19; i++) d.dropped(SRV, 1025 + i, 7000, 1012 + i);
    expect(events.map((e) => e.id)).toEqual([15104, 15105]); // 19 source ports + 7000 = 20
    expect(events[1]).toMatchObject({ id: 15105, ports: 20, threshold: 20 });
    // Once per address: more drops raise nothing more.
    for (let i = 19; i < 40; i++) d.dropped(SRV, 1025 + i, 7000, 1040 + i);
    expect(events).toHaveLength(2);
    expect(d.raised).toEqual({ 15104: 1, 15105: 1 });
  });

  it('a classic scan (one source port, many destinations) is seen too, and ports above 2048 count only for 15105', () => {
    const { d, events } = detector();
    for (let p = 3000; p < 3019; p++) d.dropped(SRV, 40000, p, 2000);
    expect(events.map((e) => e.id)).toEqual([15105]); // 19 + the source port; no well-known one
    for (let p = 20; p < 30; p++) d.dropped(SRV, 40000, p, 2001);
    expect(events.map((e) => e.id)).toEqual([15105, 15104]);
  });

  it('forgets ports after the interval, and fires again after a quiet interval', () => {
    const { d, events } = detector({ wellKnown: 3, allPorts: 100 }, { intervalMs: 60_000 });
    d.dropped(SRV, 1025, 7000, 0);
    d.dropped(SRV, 1026, 7000, 10_000);
    expect(d.describe(SRV, 10_000)).toEqual({ ports: 3, wellKnown: 2 });
    // 61 s later the first two are forgotten: two new ports make 2, not 4.
    d.dropped(SRV, 1027, 7000, 71_000);
    d.dropped(SRV, 1028, 7000, 71_500);
    expect(d.describe(SRV, 71_500)).toEqual({ ports: 3, wellKnown: 2 });
    expect(events).toEqual([]);
    d.dropped(SRV, 1029, 7000, 72_000);
    expect(events.map((e) => e.id)).toEqual([15104]);
    // Quiet for an interval, then a new burst: the event comes again.
    for (let i = 0; i < 3; i++) d.dropped(SRV, 1100 + i, 7000, 200_000 + i);
    expect(events.map((e) => e.id)).toEqual([15104, 15104]);
    d.sweep(300_000);
    expect(d.trackedAddresses).toBe(0);
  });

  it('drops without ports (ICMP) are not counted; memory is bounded in addresses and ports', () => {
    const { d, events } = detector({ wellKnown: 5, allPorts: 5 }, { maxAddresses: 4, maxPortsPerAddress: 3 });
    for (let i = 0; i < 100; i++) d.dropped(SRV, -1, -1, i);
    expect(d.trackedAddresses).toBe(0);
    for (let a = 0; a < 10; a++) d.dropped(SRV + a, 2000, 2001, 200 + a);
    expect(d.trackedAddresses).toBe(4);
    for (let p = 0; p < 50; p++) d.dropped(SRV, 1000 + p, 1000, 300 + p);
    expect(d.describe(SRV, 400)!.ports).toBe(3);
    expect(events).toEqual([]); // capped below the thresholds: nothing claimed beyond what was kept
  });
});
