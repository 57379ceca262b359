/**
 * Without window scaling (the peer offered none, or a Windows listener under SYN
 * attack protection left it out of its SYN-ACK) the window cannot grow past 65535.
 * The application's reads must then not send "window updates" that cannot move the
 * right edge: to the peer they are duplicate ACKs (RFC 5681 2).
 */
import { expect, test } from 'vitest';
import type { FsSocket } from '../../stack/api/net';
import { B_ADDR, makePair, runFor, runUntil, sinkServer, watch } from './helpers/pair';
import { Tap } from './helpers/tap';

test('no window scale: reads send no ACK that repeats the previous one; each data segment gets one (delayed) ACK', async () => {
  const p = makePair({}, {}, { tcp: { windowScale: -1 } });
  const tap = new Tap(p);
  const srv = sinkServer(p, 9000);
  const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
  const sink = watch(c);
  let up = false;
  c.on('connect', () => {
    up = true;
  });
  expect(await runUntil(p.clock, () => up && srv.sinks.length === 1, 100)).toBe(true);
  await runFor(p.clock, 100);
  for (let i = 0; i < 5; i++) {
    srv.sinks[0].socket!.write('x'.repeat(100));
    await runFor(p.clock, 100);
  }
  expect(sink.bytes).toBe(500);
  const fromA = tap.tcp('a->b');
  expect(fromA[0].tcp.wscale).toBe(7); // A offered it, B did not
  const repeats = fromA.filter((s, i) => i > 0 && s.tcp.len === 0 && s.tcp.ack === fromA[i - 1].tcp.ack && s.tcp.window === fromA[i - 1].tcp.window);
  expect(repeats.length).toBe(0);
  // SYN, the handshake's ACK, one ACK per data segment.
  expect(fromA.length).toBe(2 + 5);
});
