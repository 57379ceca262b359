/**
 * Receive-window autotuning (issue 8, item 6): the window offered starts at 128 KiB and
 * grows to about twice what arrives per round trip (Linux's tcp_rcv_space_adjust), the
 * round trip measured from the segment that opened a filled window to the data beyond
 * it. A long path gets the megabytes it needs; a near peer that trickles data is not
 * offered the whole 4 MiB buffer (with it, a small-write sender sent every MSS of data
 * at once, in 1,448-byte packets, instead of queueing it into super-segments).
 */
import { describe, expect, test } from 'vitest';
import { B_ADDR, connOf, makePair, runFor, runUntil, sha256, sinkServer, testData } from './helpers/pair';
import { Tap } from './helpers/tap';
import type { FsSocket } from '../../stack/api/net';

function windows(tap: Tap): number[] {
  return tap.tcp('b->a', (t) => (t.flags & 0x02) === 0).map((s) => s.tcp.window << 7);
}

describe('receive-window autotuning', () => {
  test('a 20 ms path: the window starts at 128 KiB and then stays ahead of the sender (twice its flight), 16 MB intact', async () => {
    const p = makePair({ latencyMs: 10 });
    const tap = new Tap(p);
    const { sinks } = sinkServer(p, 9000);
    const data = testData(16 * 1024 * 1024, 3);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    c.end(data);
    expect(await runUntil(p.clock, () => sinks.length === 1 && sinks[0].ended, 60_000)).toBe(true);
    expect(sha256(sinks[0].data())).toBe(sha256(data));
    const w = windows(tap);
    expect(w[1]).toBeLessThanOrEqual(128 * 1024 + 128);
    // A's flight (sent beyond the latest ACK that reached it) against the windows B offered.
    let ack = 0,
      flight = 0;
    const events = tap
      .tcp()
      .map((x) => ({ x, at: x.dir === 'b->a' ? x.t + 10 : x.t }))
      .sort((u, v) => u.at - v.at);
    for (const { x } of events) {
      if (x.dir === 'b->a') ack = x.tcp.ack;
      else if (x.tcp.len > 0 && ack !== 0) flight = Math.max(flight, (x.tcp.seq + x.tcp.len - ack) >>> 0);
    }
    expect(flight).toBeGreaterThan(256 * 1024);
    expect(Math.max(...w)).toBeGreaterThan(1.5 * flight);
    expect(connOf(p.b)?.rcvRtt ?? 20).toBeGreaterThan(15);
  });

  test('a near peer writing 1 KiB at a time, slowly: the window stays at its start, far below the buffer', async () => {
    const p = makePair({ latencyMs: 0.02 });
    const tap = new Tap(p);
    const { sinks } = sinkServer(p, 9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    let up = false;
    c.on('connect', () => {
      up = true;
    });
    expect(await runUntil(p.clock, () => up, 100)).toBe(true);
    const data = testData(2 * 1024 * 1024, 4);
    // 2 MiB in 1 KiB writes, 16 writes per virtual millisecond (16 MB/s).
    for (let off = 0; off < data.length; off += 16 * 1024) {
      for (let k = 0; k < 16; k++) c.write(data.subarray(off + k * 1024, off + (k + 1) * 1024));
      await runFor(p.clock, 1);
    }
    c.end();
    expect(await runUntil(p.clock, () => sinks[0]?.ended === true, 5000)).toBe(true);
    expect(sha256(sinks[0].data())).toBe(sha256(data));
    expect(Math.max(...windows(tap))).toBeLessThanOrEqual(256 * 1024);
  });
});
