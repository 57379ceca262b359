/**
 * TSO super-segments fit one IPv4 packet whatever the MTU (issue 8, item 3): the
 * device's limit (44 MSS) is also bounded by the 16-bit total length, so with a
 * jumbo MTU a super-segment carries fewer MSS-sized pieces, never more than 65,535
 * bytes. The memory link here carries super-segments as they are (link MTU 65,535,
 * offload metadata passed along), so a packet past 64 KiB is lost as on a TUN device.
 */
import { describe, expect, test } from 'vitest';
import { makePair, sha256, testData, transfer } from './helpers/pair';
import { Tap } from './helpers/tap';

describe('TSO super-segment size', () => {
  for (const mtu of [1500, 4000, 9000, 16000, 65535]) {
    test(`interface MTU ${mtu}: 4 MB arrive intact in packets of at most 65,535 bytes`, async () => {
      const p = makePair({ mtu: 65535 }, { mtu, tsoSegments: 44, txChecksumOffload: true }, { mtu });
      const tap = new Tap(p);
      const data = testData(4 * 1024 * 1024, mtu);
      const r = await transfer(p, data, { maxMs: 20_000 });
      expect(r.done).toBe(true);
      expect(sha256(r.got)).toBe(sha256(data));
      const sizes = tap.tcp('a->b').map((s) => s.raw.length);
      expect(Math.max(...sizes)).toBeLessThanOrEqual(65535);
      // Super-segments were used where more than one MSS fits in 64 KiB.
      if (mtu <= 16000) expect(Math.max(...sizes)).toBeGreaterThan(mtu);
      expect(p.a.counters.TcpRetransSegs).toBe(0);
      expect(p.link.counters['a->b'].droppedMtu).toBe(0);
    });
  }
});
