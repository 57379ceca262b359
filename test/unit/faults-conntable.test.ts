/**
 * KB 297040 on the virtual clock: stack A is the NT4 host (faults installed with
 * installFaults), stack B a peer on the same link. A opens a connection to
 * 198.18.0.99, an address nothing answers for (the tap drops what A sends there).
 *
 * - The active open's schedule with TcpMaxConnectRetransmissions 2 and TcpInitialRttMs
 *   3000: SYN at 0, 3 s and 9 s (the timeout doubles), the attempt fails at 21 s.
 * - Buggy with SynAttackProtect set: the failure path takes the connection-table lock
 *   and never releases it: ping is not answered, an established connection stalls,
 *   new connections are not answered, the failed connect reports nothing. `unlock()`
 *   releases it, delivers the stuck ETIMEDOUT, and everything resumes.
 * - Hotfixed (or SynAttackProtect 0): ETIMEDOUT at 21 s and everything keeps working.
 * - The same for the ICMP unreachable path (EHOSTUNREACH).
 */
import { describe, expect, test } from 'vitest';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventKind, EventLog } from '../../stack/faults/events';
import { installFaults } from '../../stack/faults/install';
import type { FsSocket } from '../../stack/api/net';
import { parseIpv4 } from '../../stack/wire/addr';
import { emitIcmp, newIcmpRepr, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, UNREACH_HOST } from '../../stack/wire/icmp';
import { SYN } from '../../stack/wire/tcp';
import { A_ADDR, A_IP, B_IP, makePair, runFor, runUntil, watch } from './helpers/pair';
import { craftIp, PROTO_ICMP, Tap } from './helpers/tap';

const NOWHERE = '198.18.0.99';
const NOWHERE_IP = parseIpv4(NOWHERE)!;

type Params = Record<string, number | string>;

function rig(opts: { mode: 'buggy' | 'hotfixed'; params?: Params }) {
  const p = makePair();
  const cfg = buildFaultConfig({
    profile: 'nt4-sp6a',
    faults: [`kb297040=${opts.mode}`],
    params: Object.entries({ SynAttackProtect: 1, TcpMaxConnectRetransmissions: 2, TcpInitialRttMs: 3000, ...opts.params }).map(([k, v]) => `${k}=${v}`),
  });
  const events = new EventLog();
  const installed = installFaults(p.a, cfg, events);
  const tap = new Tap(p);
  // Nothing exists at 198.18.0.99 (B would otherwise answer for it with a RST).
  tap.drop = (s) => s.dir === 'a->b' && s.dst === NOWHERE_IP;
  const kb = installed.faults.kb297040;
  const lock = kb.lock;

  /** A's application opens a connection to the address that does not answer. */
  const connectNowhere = (port = 80) => {
    const s = p.netA.connect({ host: NOWHERE, port }) as FsSocket;
    const sink = watch(s);
    let connected = false;
    s.on('connect', () => {
      connected = true;
    });
    return {
      s,
      sink,
      get connected() {
        return connected;
      },
    };
  };

  let pingSeq = 0;
  /** B pings A; returns a function telling whether the echo reply came back. */
  const ping = () => {
    const seq = ++pingSeq;
    const body = Buffer.from(`ping ${seq}`);
    const icmp = Buffer.alloc(8 + body.length);
    body.copy(icmp, 8);
    emitIcmp(icmp, 0, { ...newIcmpRepr(), type: ICMP_ECHO_REQUEST, ident: 0x297, seq, bodyLength: body.length });
    tap.inject('a', craftIp({ src: B_IP, dst: A_IP, protocol: PROTO_ICMP, payload: icmp }));
    return () => tap.seen.some((s) => s.dir === 'a->b' && s.protocol === PROTO_ICMP && s.raw[20] === ICMP_ECHO_REPLY && s.raw.readUInt16BE(26) === seq);
  };

  /** A connection from B to a server on A, established, with A's side recording what it gets. */
  const establishedFromB = async () => {
    const got: Buffer[] = [];
    let serverSide: FsSocket | null = null;
    p.netA
      .createServer((s) => {
        serverSide = s as FsSocket;
        s.on('data', (d: Buffer) => got.push(d));
      })
      .listen(7000);
    const c = p.netB.connect({ host: A_ADDR, port: 7000 }) as FsSocket;
    const sink = watch(c);
    expect(await runUntil(p.clock, () => serverSide !== null, 100)).toBe(true);
    return { c, sink, got, server: () => serverSide!, text: () => Buffer.concat(got).toString() };
  };

  const ofKind = (kind: string) => events.recent().filter((e) => e.kind === kind);
  return { p, cfg, events, installed, kb, tap, lock, connectNowhere, ping, establishedFromB, ofKind };
}

/** Send times of A's SYNs to 198.18.0.99, relative to `t0`. */
function synTimes(r: ReturnType<typeof rig>, t0: number): number[] {
  return r.tap.tcp('a->b', (t, s) => s.dst === NOWHERE_IP && t.flags === SYN).map((s) => Math.round(s.t - t0));
}

describe('the active open schedule (TcpMaxConnectRetransmissions, TcpInitialRttMs)', () => {
  test('2 retransmissions from 3 s: SYN at 0, 3 s and 9 s (3 s, then 6 s), ETIMEDOUT at 21 s', async () => {
    const r = rig({ mode: 'hotfixed' });
    const t0 = r.p.clock.now;
    const c = r.connectNowhere();
    let failedAt = -1;
    expect(
      await runUntil(
        r.p.clock,
        () => {
          if (failedAt < 0 && c.sink.error) failedAt = r.p.clock.now - t0;
          return failedAt >= 0;
        },
        30_000,
        10,
      ),
    ).toBe(true);
    expect(synTimes(r, t0)).toEqual([0, 3000, 9000]);
    expect(Math.abs(failedAt - 21_000)).toBeLessThanOrEqual(10);
    expect(c.sink.error!.code).toBe('ETIMEDOUT');
    expect(c.sink.error!.message).toContain(`${NOWHERE}:80`);
    expect(c.connected).toBe(false);
    expect(r.p.a.counters.TcpAttemptFails).toBe(1);
    expect(r.p.a.counters.TcpExtTCPSynRetrans).toBe(2);
  });

  test('short lab timers: TcpInitialRttMs 100 and TcpMaxConnectRetransmissions 3: SYN at 0, 100, 300, 700 ms, failure at 1.5 s', async () => {
    const r = rig({ mode: 'hotfixed', params: { TcpInitialRttMs: 100, TcpMaxConnectRetransmissions: 3 } });
    const t0 = r.p.clock.now;
    const c = r.connectNowhere();
    expect(await runUntil(r.p.clock, () => c.sink.error !== null, 5_000)).toBe(true);
    expect(synTimes(r, t0)).toEqual([0, 100, 300, 700]);
    expect(Math.round(r.p.clock.now - t0)).toBe(1500);
  });

  test('parameters changed at run time apply to the next attempt', async () => {
    const r = rig({ mode: 'hotfixed' });
    r.cfg.setParam('TcpInitialRttMs', 200);
    r.cfg.setParam('TcpMaxConnectRetransmissions', 1);
    const t0 = r.p.clock.now;
    const c = r.connectNowhere();
    expect(await runUntil(r.p.clock, () => c.sink.error !== null, 5_000)).toBe(true);
    expect(synTimes(r, t0)).toEqual([0, 200]);
    expect(Math.round(r.p.clock.now - t0)).toBe(600);
  });
});

describe('KB 297040 buggy, SynAttackProtect set: the connection-table lock is never released', () => {
  test('the failed connect leaves the lock held: ping is not answered, an established connection stalls, new ones are not answered; unlock brings everything back', async () => {
    const r = rig({ mode: 'buggy', params: { TcpInitialRttMs: 200 } });
    const est = await r.establishedFromB();
    est.c.write('before ');
    expect(await runUntil(r.p.clock, () => est.text() === 'before ', 100)).toBe(true);
    expect(
      await (async () => {
        const ok = r.ping();
        return runUntil(r.p.clock, ok, 100);
      })(),
    ).toBe(true);

    const t0 = r.p.clock.now;
    const c = r.connectNowhere();
    // 200 + 400 + 800 ms: the third timeout ends the attempt at 1.4 s and takes the lock.
    expect(await runUntil(r.p.clock, () => r.lock.held, 5_000)).toBe(true);
    expect(Math.round(r.p.clock.now - t0)).toBe(1400);
    expect(r.lock.holder).toBe(`failure path of the active open to ${NOWHERE}:80 (SYN retransmissions exhausted)`);
    const [ev] = r.ofKind(EventKind.LockTakenNotReleased);
    expect(ev.fault).toBe('kb297040');
    expect(ev.data).toMatchObject({ lock: 'tcp-connection-table', holder: r.lock.holder });
    // The attempt's own failure is stuck on the same path: the application hears nothing.
    await runFor(r.p.clock, 5_000, 10);
    expect(c.sink.error).toBeNull();
    expect(c.sink.closed).toBe(false);

    // Ping: not answered, counted as dropped because of the lock.
    const drops0 = r.p.a.counters.FsConnTableLockedDrops;
    const discards0 = r.p.a.counters.IpInDiscards;
    const pinged = r.ping();
    await runFor(r.p.clock, 1_000, 10);
    expect(pinged()).toBe(false);
    expect(r.p.a.counters.FsConnTableLockedDrops).toBeGreaterThan(drops0);
    // The IP layer's own count of packets discarded for no fault of theirs moves with it.
    expect(r.p.a.counters.IpInDiscards - discards0).toBe(r.p.a.counters.FsConnTableLockedDrops - drops0);
    // The established connection stalls: B's data is neither delivered nor acknowledged.
    est.c.write('during the hang');
    const newClient = r.p.netB.connect({ host: A_ADDR, port: 7000 }) as FsSocket;
    let newConnected = false;
    newClient.on('connect', () => {
      newConnected = true;
    });
    await runFor(r.p.clock, 3_000, 10);
    expect(est.text()).toBe('before ');
    expect(r.p.b.counters.TcpRetransSegs).toBeGreaterThan(0);
    expect(newConnected).toBe(false);
    // A's own output is frozen too: nothing at all left A during the hang.
    const lockedAt = t0 + 1400;
    expect(r.tap.seen.filter((s) => s.dir === 'a->b' && !s.injected && s.t > lockedAt + 1)).toEqual([]);
    const describe = r.lock.describe(r.p.a.now);
    expect(describe).toMatchObject({ held: true, holder: r.lock.holder });
    expect(describe.heldForMs).toBeGreaterThan(8_000);
    expect(describe.blockedPackets).toBeGreaterThan(0);

    // Released by hand: the stuck failure is delivered, and everything resumes.
    const u = r.kb.unlock();
    expect(u).toMatchObject({ released: true, holder: `failure path of the active open to ${NOWHERE}:80 (SYN retransmissions exhausted)` });
    expect(u.heldMs).toBeGreaterThan(8_000);
    expect(r.ofKind(EventKind.LockReleased).length).toBe(1);
    expect(await runUntil(r.p.clock, () => c.sink.error !== null, 100)).toBe(true);
    expect(c.sink.error!.code).toBe('ETIMEDOUT');
    expect(r.lock.held).toBe(false);
    const pingedAgain = r.ping();
    expect(await runUntil(r.p.clock, pingedAgain, 100)).toBe(true);
    // B's retransmission timer brings the stalled data; the new client's SYN retry gets in.
    expect(await runUntil(r.p.clock, () => est.text() === 'before during the hang' && newConnected, 20_000, 10)).toBe(true);
    expect(r.kb.unlock()).toEqual({ released: false });
  });

  test('the ICMP unreachable path holds the lock as well; unlock delivers EHOSTUNREACH', async () => {
    const r = rig({ mode: 'buggy' });
    const c = r.connectNowhere(23);
    await runFor(r.p.clock, 5);
    const [syn] = r.tap.tcp('a->b', (t, s) => s.dst === NOWHERE_IP && t.flags === SYN);
    // A router on the way answers host unreachable, quoting the SYN's IP header and 8 bytes.
    const quote = syn.raw.subarray(0, 28);
    const icmp = Buffer.alloc(8 + quote.length);
    quote.copy(icmp, 8);
    emitIcmp(icmp, 0, { ...newIcmpRepr(), type: ICMP_DEST_UNREACH, code: UNREACH_HOST, bodyLength: quote.length });
    r.tap.inject('a', craftIp({ src: B_IP, dst: A_IP, protocol: PROTO_ICMP, payload: icmp }));
    await runFor(r.p.clock, 5);
    expect(r.lock.held).toBe(true);
    expect(r.lock.holder).toBe(`failure path of the active open to ${NOWHERE}:23 (ICMP unreachable)`);
    expect(c.sink.error).toBeNull();
    const pinged = r.ping();
    await runFor(r.p.clock, 500);
    expect(pinged()).toBe(false);
    r.kb.unlock();
    expect(await runUntil(r.p.clock, () => c.sink.error !== null, 100)).toBe(true);
    expect(c.sink.error!.code).toBe('EHOSTUNREACH');
    expect(await runUntil(r.p.clock, r.ping(), 100)).toBe(true);
  });
});

describe('KB 297040 hotfixed, or without its precondition: the failure is reported and nothing hangs', () => {
  for (const [name, mode, sap] of [
    ['hotfixed, SynAttackProtect 1', 'hotfixed', 1],
    ['buggy, SynAttackProtect 0', 'buggy', 0],
  ] as const) {
    test(`${name}: ETIMEDOUT, the lock was taken and released, ping and the established connection keep working`, async () => {
      const r = rig({ mode, params: { SynAttackProtect: sap, TcpInitialRttMs: 200 } });
      const est = await r.establishedFromB();
      const c = r.connectNowhere();
      const acquisitions0 = r.lock.acquisitions;
      expect(await runUntil(r.p.clock, () => c.sink.error !== null, 5_000)).toBe(true);
      expect(c.sink.error!.code).toBe('ETIMEDOUT');
      expect(r.lock.held).toBe(false);
      expect(r.lock.acquisitions).toBe(acquisitions0 + 1);
      expect(r.ofKind(EventKind.LockTakenNotReleased)).toEqual([]);
      expect(await runUntil(r.p.clock, r.ping(), 100)).toBe(true);
      est.c.write('after the failure');
      expect(await runUntil(r.p.clock, () => est.text() === 'after the failure', 100)).toBe(true);
      expect(r.p.a.counters.FsConnTableLockedDrops).toBe(0);
      expect(r.kb.unlock()).toEqual({ released: false });
    });
  }

  test('switching to hotfixed while hung does not release the lock by itself (the hang already happened); unlock does', async () => {
    const r = rig({ mode: 'buggy', params: { TcpInitialRttMs: 100 } });
    const c = r.connectNowhere();
    expect(await runUntil(r.p.clock, () => r.lock.held, 5_000)).toBe(true);
    r.cfg.setMode('kb297040', 'hotfixed');
    await runFor(r.p.clock, 500);
    expect(r.lock.held).toBe(true);
    r.kb.unlock();
    expect(await runUntil(r.p.clock, () => c.sink.error !== null, 100)).toBe(true);
    // The next failed attempt follows the new mode.
    const c2 = r.connectNowhere(81);
    expect(await runUntil(r.p.clock, () => c2.sink.error !== null, 5_000)).toBe(true);
    expect(c2.sink.error!.code).toBe('ETIMEDOUT');
    expect(r.lock.held).toBe(false);
  });
});
