/**
 * Stateless replies (a SYN cookie's SYN-ACK, a reset for a segment of no connection) go
 * through the device's detached path (Device.sendDetached: on TUN, the addon's writer
 * thread), and nothing a connection sends does: its own reset must not overtake the data
 * queued before it. On the virtual clock over the memory link, whose device gets a
 * sendDetached that records what took it.
 */
import { describe, expect, test } from 'vitest';
import { LinuxBacklog } from '../../stack/tcp/backlog';
import type { FsSocket } from '../../stack/api/net';
import { ACK, RST, SYN } from '../../stack/wire/tcp';
import { A_IP, B_ADDR, B_IP, makePair, runUntil, sinkServer } from './helpers/pair';
import { craftTcp } from './helpers/tap';

const TCP_FLAGS = 20 + 13;

describe('stateless output', () => {
  test("a cookie SYN-ACK and a reset for a closed port are detached; a connection's abort is not", async () => {
    // Cookies for every SYN: no room for half-open entries.
    const backlog = new LinuxBacklog(() => ({ maxSynBacklog: 0, syncookies: 1, abortOnOverflow: false, somaxconn: 4096, synAckRetries: 5 }));
    const p = makePair({}, {}, { backlog });
    const detached: Buffer[] = [];
    const dev = p.link.b as unknown as { send(pkt: Buffer): void; sendDetached?(pkt: Buffer): void };
    dev.sendDetached = (pkt: Buffer) => {
      detached.push(Buffer.from(pkt));
      dev.send(pkt);
    };
    let server: FsSocket | null = null;
    sinkServer(p, 80, (s) => {
      server = s;
    });
    const c = p.netA.connect({ host: B_ADDR, port: 80 });
    let connected = false;
    c.on('connect', () => {
      connected = true;
      c.write(Buffer.alloc(1000, 1));
    });
    expect(await runUntil(p.clock, () => connected && server !== null)).toBe(true);
    expect(p.b.counters.TcpExtSyncookiesSent).toBe(1);
    expect(p.b.counters.TcpExtSyncookiesRecv).toBe(1);
    // The one detached packet so far is the cookie SYN-ACK.
    expect(detached.length).toBe(1);
    expect(detached[0]![TCP_FLAGS]! & (SYN | ACK)).toBe(SYN | ACK);

    // A segment for no connection (a closed port) is answered with a detached reset.
    p.link.a.send(craftTcp({ src: A_IP, dst: B_IP, sport: 40000, dport: 81, seq: 1, flags: SYN }));
    p.link.a.flush();
    expect(await runUntil(p.clock, () => detached.length === 2)).toBe(true);
    expect(detached[1]![TCP_FLAGS]! & RST).toBe(RST);

    // The server aborts its connection: that reset goes the ordinary way.
    const rsts = p.b.counters.TcpOutRsts;
    server!.resetAndDestroy();
    expect(await runUntil(p.clock, () => p.b.counters.TcpOutRsts > rsts)).toBe(true);
    expect(detached.length).toBe(2);
  });
});

describe('early SYN drop policy', () => {
  test('on while cookies are sent (budget set on the device), off 3 s after the last; a source that completed a handshake is allowed', async () => {
    const backlog = new LinuxBacklog(() => ({ maxSynBacklog: 0, syncookies: 1, abortOnOverflow: false, somaxconn: 4096, synAckRetries: 5 }));
    const p = makePair({}, {}, { backlog });
    const budgets: number[] = [];
    const allowed: number[] = [];
    const dev = p.link.b as unknown as { setSynBudget?(n: number): void; allowSource?(a: number): void };
    dev.setSynBudget = (n) => budgets.push(n);
    dev.allowSource = (a) => allowed.push(a);
    sinkServer(p, 80);
    await runUntil(p.clock, () => false, 1500);
    expect(budgets).toEqual([]); // no cookies yet: nothing changes
    const c = p.netA.connect({ host: B_ADDR, port: 80 });
    let connected = false;
    c.on('connect', () => {
      connected = true;
    });
    expect(await runUntil(p.clock, () => connected)).toBe(true);
    expect(p.b.counters.TcpExtSyncookiesSent).toBe(1);
    expect(budgets.length).toBe(1);
    expect(budgets[0]).toBeGreaterThan(0); // on at the end of the burst that sent the cookie
    expect(await runUntil(p.clock, () => allowed.length > 0)).toBe(true);
    expect(allowed).toEqual([A_IP]);
    // No cookie since: off after COOKIE_PRESSURE_MS (3 s), at a housekeeping run.
    expect(await runUntil(p.clock, () => budgets.length === 2, 5000)).toBe(true);
    expect(budgets[1]).toBe(0);
  });
});
