/**
 * What an idle connection does not allocate (issue 16: JS heap per idle connection): no
 * loss recovery until it is first needed, no
 * out-of-order queue of its own until a segment arrives out of order, no array for data
 * before accept once accepted (the shared frozen NO_PENDING), and data before accept
 * still reaches the application.
 */
import { describe, expect, test } from 'vitest';
import { NO_PENDING } from '../../stack/tcp/buffers';
import type { FsSocket } from '../../stack/api/net';
import { B_ADDR, connOf, makePair, runUntil, sinkServer } from './helpers/pair';

describe('idle connection allocations', () => {
  test('an accepted idle connection shares the empty out-of-order queue and NO_PENDING', async () => {
    const p = makePair();
    let server: FsSocket | null = null;
    sinkServer(p, 80, (s) => {
      server = s;
    });
    const c = p.netA.connect({ host: B_ADDR, port: 80 });
    expect(await runUntil(p.clock, () => server !== null)).toBe(true);
    const a = connOf(p.a)!,
      b = connOf(p.b)!;
    // The server's side received and sent nothing since the handshake: no loss recovery made yet.
    expect((b as unknown as { lossRecovery: unknown }).lossRecovery).toBeNull();
    expect(b.recovery?.kind).toBe('sack'); // made on first use, of the kind the handshake agreed
    expect((b as unknown as { lossRecovery: unknown }).lossRecovery).not.toBeNull();
    for (const conn of [a, b]) {
      expect((conn as unknown as { oooQueue: unknown }).oooQueue).toBeNull();
      expect(conn.ooo.empty).toBe(true);
      expect(conn.pending).toBe(NO_PENDING);
    }
    expect(Object.isFrozen(NO_PENDING)).toBe(true);
    c.destroy();
  });

  test('data that arrives before accept is kept per connection and delivered on accept', async () => {
    const p = makePair();
    const got: string[] = [];
    // A server that accepts late: the listener holds the connections (and their first data) meanwhile.
    const server = p.netB.createServer((s) => {
      s.on('data', (d: Buffer) => got.push(d.toString()));
    });
    server.listen(81);
    const l = p.b.tcp.listeners.get(81)!;
    const onAcceptable = l.onAcceptable;
    l.onAcceptable = null; // nobody takes the connections yet
    for (const word of ['one', 'two']) {
      const c = p.netA.connect({ host: B_ADDR, port: 81 });
      c.on('connect', () => c.write(word));
    }
    expect(await runUntil(p.clock, () => l.acceptQueue.length === 2 && l.acceptQueue.every((x) => x.pendingBytes === 3))).toBe(true);
    const [x, y] = l.acceptQueue;
    expect(x!.pending).not.toBe(NO_PENDING);
    expect(x!.pending).not.toBe(y!.pending);
    l.onAcceptable = onAcceptable;
    onAcceptable?.();
    expect(await runUntil(p.clock, () => got.length === 2)).toBe(true);
    expect(got.sort()).toEqual(['one', 'two']);
    expect(x!.pending).toBe(NO_PENDING);
  });
});
