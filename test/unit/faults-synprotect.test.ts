/**
 * KB 903927 on the virtual clock: the Windows listener (stack/faults/kb903927/)
 * installed on stack B with installFaults, clients on stack A (and SYNs from spoofed
 * lab sources injected through the tap, whose SYN-ACKs go nowhere).
 *
 * What is checked, in the article's and KB 142641's terms:
 * - each threshold (TcpMaxHalfOpen, TcpMaxHalfOpenRetried, TcpMaxPortsExhausted)
 *   triggers protection when exceeded, and the event names it;
 * - protection acts only with TcpMaxConnectResponseRetransmissions >= 2;
 * - the SYN-ACK retransmission schedule: 3 s, then 6 s later, give up 12 s after that
 *   (21 s in all) with TcpMaxConnectResponseRetransmissions 2;
 * - protection off: RST at the SYN when the backlog is full (ECONNREFUSED);
 * - protection on (SynAttackProtect 2): the handshake completes, the client sends its
 *   first flight, then RST (connect succeeded, then ECONNRESET);
 * - buggy: the reset connection, its first flight and its application state stay
 *   reachable (proved with WeakRefs and a forced GC); hotfixed: all of it is freed.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, test } from 'vitest';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventKind, EventLog } from '../../stack/faults/events';
import { installFaults } from '../../stack/faults/install';
import type { LeakedConnection } from '../../stack/faults/kb903927/leak';
import { NegotiationState } from '../../stack/services/mtls';
import type { FsSocket } from '../../stack/api/net';
import { State, TcpConnection } from '../../stack/tcp/connection';
import { parseIpv4 } from '../../stack/wire/addr';
import { ACK, RST, SYN } from '../../stack/wire/tcp';
import { A_IP, B_ADDR, B_IP, makePair, runFor, runUntil, watch } from './helpers/pair';
import { craftTcp, Tap } from './helpers/tap';

const PORT = 5061;

type Params = Record<string, number | string>;

/**
 * Stack B is a Windows Server 2003 SP1 listener on 5061 with `backlog`, whose
 * application never accepts unless the test calls `acceptOne()`. Every connection it is
 * told of gets a NegotiationState (the mtls service's per-connection state).
 */
function rig(opts: { mode?: 'buggy' | 'hotfixed'; params?: Params; backlog?: number } = {}) {
  const p = makePair();
  const cfg = buildFaultConfig({
    profile: 'win2003-sp1',
    faults: [`kb903927=${opts.mode ?? 'hotfixed'}`],
    params: Object.entries(opts.params ?? {}).map(([k, v]) => `${k}=${v}`),
  });
  const events = new EventLog();
  const installed = installFaults(p.b, cfg, events);
  const tap = new Tap(p);
  // Spoofed sources do not exist: their SYN-ACKs are lost (A would answer them with RSTs).
  tap.drop = (s) => s.dir === 'b->a' && s.dst !== A_IP;
  const l = p.b.tcp.listen(PORT, 0, opts.backlog ?? 5);
  const indicated: WeakRef<NegotiationState>[] = [];
  const indicatedConns: WeakRef<TcpConnection>[] = [];
  l.application = {
    indicated: (conn) => {
      const st = new NegotiationState(`${conn.remoteAddr}:${conn.remotePort}`);
      indicated.push(new WeakRef(st));
      indicatedConns.push(new WeakRef(conn));
      return st;
    },
  };
  let spoofed = 0;
  /** A SYN from a spoofed lab source (198.18.100.x): half-open for good. */
  const spoofSyn = () => {
    spoofed++;
    tap.inject(
      'b',
      craftTcp({
        src: parseIpv4(`198.18.100.${spoofed}`)!,
        dst: B_IP,
        sport: 40000 + spoofed,
        dport: PORT,
        seq: (spoofed * 7919 * 65537) >>> 0,
        flags: SYN,
        mss: 1460,
        wscale: 7,
      }),
    );
  };
  /** A real client on A: records connect, data, error. */
  const client = (firstFlight?: string) => {
    const s = p.netA.connect({ host: B_ADDR, port: PORT }) as FsSocket;
    const sink = watch(s);
    const r = { s, sink, connected: false, connectedAt: -1 };
    s.on('connect', () => {
      r.connected = true;
      r.connectedAt = p.clock.now;
      if (firstFlight !== undefined) s.write(firstFlight);
    });
    return r;
  };
  const ofKind = (kind: string) => events.recent().filter((e) => e.kind === kind);
  const kb = installed.faults.kb903927;
  return { p, cfg, events, installed, kb, tap, l, indicated, indicatedConns, spoofSyn, client, ofKind };
}

/** A full garbage collection (after the current job, so that WeakRefs can be cleared). */
let gcFn: (() => void) | null = null;
async function collect(): Promise<void> {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  await new Promise((r) => setImmediate(r));
  gcFn();
  await new Promise((r) => setImmediate(r));
  gcFn();
}

describe('KB 903927: the thresholds that trigger SYN attack protection', () => {
  test('TcpMaxHalfOpen: the fourth half-open connection over a limit of 3 triggers; from then on SYN-ACKs carry no window scale', async () => {
    const r = rig({ params: { TcpMaxHalfOpen: 3, TcpMaxHalfOpenRetried: 1000, TcpMaxPortsExhausted: 1000 }, backlog: 100 });
    for (let i = 0; i < 3; i++) r.spoofSyn();
    await runFor(r.p.clock, 5);
    expect(r.l.synQueue.size).toBe(3);
    expect(r.kb.listener.isTriggered(r.l)).toBe(false);
    expect(r.ofKind(EventKind.SynProtectionTriggered)).toEqual([]);
    r.spoofSyn();
    await runFor(r.p.clock, 5);
    expect(r.kb.listener.isTriggered(r.l)).toBe(true);
    const [ev] = r.ofKind(EventKind.SynProtectionTriggered);
    expect(ev.fault).toBe('kb903927');
    expect(ev.data).toMatchObject({ threshold: 'TcpMaxHalfOpen', value: 4, limit: 3, port: PORT });
    expect(ev.message).toMatch(/TcpMaxHalfOpen exceeded \(4 > 3\)/);
    expect(r.p.b.counters.FsSynProtectTriggered).toBe(1);
    // The SYN-ACKs sent before protection had the window scale option; the one after it
    // has none (the route cache entry is not consulted before it is sent).
    r.spoofSyn();
    await runFor(r.p.clock, 5);
    const synAcks = r.tap.tcp('b->a', (t) => t.flags === (SYN | ACK));
    expect(synAcks.length).toBe(5);
    expect(synAcks.slice(0, 4).map((s) => s.tcp.wscale)).toEqual([7, 7, 7, 7]);
    expect(synAcks[4].tcp.wscale).toBe(-1);
  });

  test('TcpMaxHalfOpenRetried: half-open connections that had a SYN-ACK retransmission trigger it at 3 s, not before', async () => {
    const r = rig({ params: { TcpMaxHalfOpen: 1000, TcpMaxHalfOpenRetried: 2, TcpMaxPortsExhausted: 1000 }, backlog: 100 });
    for (let i = 0; i < 3; i++) r.spoofSyn();
    await runFor(r.p.clock, 2990);
    expect(r.kb.listener.isTriggered(r.l)).toBe(false);
    await runFor(r.p.clock, 20);
    expect(r.p.b.counters.FsSynAckRetrans).toBe(3);
    expect(r.kb.listener.isTriggered(r.l)).toBe(true);
    const [ev] = r.ofKind(EventKind.SynProtectionTriggered);
    expect(ev.data).toMatchObject({ threshold: 'TcpMaxHalfOpenRetried', value: 3, limit: 2 });
  });

  test('TcpMaxPortsExhausted: refusals for a full backlog count, the one past the limit triggers and protection stays on while the backlog is full', async () => {
    const r = rig({ params: { TcpMaxPortsExhausted: 2, TcpMaxHalfOpen: 1000, TcpMaxHalfOpenRetried: 1000 }, backlog: 1 });
    const first = r.client();
    expect(await runUntil(r.p.clock, () => first.connected && r.l.acceptQueue.length === 1, 100)).toBe(true);
    // Two refusals: still under the limit; RST at the SYN.
    const refused = [r.client(), r.client()];
    expect(await runUntil(r.p.clock, () => refused.every((c) => c.sink.error !== null), 100)).toBe(true);
    expect(refused.map((c) => c.sink.error!.code)).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
    expect(r.kb.listener.isTriggered(r.l)).toBe(false);
    // The third refusal exceeds TcpMaxPortsExhausted=2: protection triggers, and with
    // SynAttackProtect 2 that SYN is accepted for a delayed indication instead.
    const third = r.client('first flight');
    expect(await runUntil(r.p.clock, () => third.connected, 100)).toBe(true);
    const [ev] = r.ofKind(EventKind.SynProtectionTriggered);
    expect(ev.data).toMatchObject({ threshold: 'TcpMaxPortsExhausted', value: 3, limit: 2 });
    expect(r.kb.listener.isTriggered(r.l)).toBe(true);
    // More clients while the backlog stays full: protection stays on, each one connects
    // and is reset after its first flight; no "cleared" event in between.
    const more = [r.client('x'), r.client('y')];
    expect(await runUntil(r.p.clock, () => [third, ...more].every((c) => c.sink.error !== null), 1000)).toBe(true);
    expect([third, ...more].map((c) => [c.connected, c.sink.error!.code])).toEqual([
      [true, 'ECONNRESET'],
      [true, 'ECONNRESET'],
      [true, 'ECONNRESET'],
    ]);
    expect(r.ofKind(EventKind.SynProtectionTriggered).length).toBe(1);
    expect(r.ofKind(EventKind.SynProtectionCleared)).toEqual([]);
    expect(r.l.refusedSyns).toBe(2);
    expect(r.l.resetAfterHandshake).toBe(3);
    // The application accepts: the backlog has room, the count starts again, protection clears.
    expect(r.l.accept()).toBeTruthy();
    expect(r.kb.listener.isTriggered(r.l)).toBe(false);
    const [cleared] = r.ofKind(EventKind.SynProtectionCleared);
    expect(cleared.data).toMatchObject({ portsExhausted: 0 });
  });

  test('protection never acts with TcpMaxConnectResponseRetransmissions < 2, whatever is exceeded', async () => {
    const r = rig({ params: { TcpMaxHalfOpen: 2, TcpMaxHalfOpenRetried: 1, TcpMaxPortsExhausted: 0, TcpMaxConnectResponseRetransmissions: 1 }, backlog: 100 });
    for (let i = 0; i < 6; i++) r.spoofSyn();
    await runFor(r.p.clock, 3100); // past the first SYN-ACK retransmission too
    expect(r.p.b.counters.FsSynAckRetrans).toBe(6);
    expect(r.kb.listener.isTriggered(r.l)).toBe(false);
    expect(r.ofKind(EventKind.SynProtectionTriggered)).toEqual([]);
    expect(r.p.b.counters.FsSynProtectTriggered).toBe(0);
    // Every SYN-ACK kept its options.
    expect(r.tap.tcp('b->a', (t) => t.flags === (SYN | ACK)).every((s) => s.tcp.wscale === 7)).toBe(true);
    // Raised to 2 at run time: the next SYN finds the limits exceeded and protection acts.
    r.cfg.setParam('TcpMaxConnectResponseRetransmissions', 2);
    r.spoofSyn();
    await runFor(r.p.clock, 5);
    expect(r.kb.listener.isTriggered(r.l)).toBe(true);
    expect(r.ofKind(EventKind.SynProtectionTriggered)[0].data).toMatchObject({ threshold: 'TcpMaxHalfOpen' });
  });

  test('SynAttackProtect 0: nothing triggers, however far the limits are exceeded', async () => {
    const r = rig({ params: { SynAttackProtect: 0, TcpMaxHalfOpen: 2 }, backlog: 100 });
    for (let i = 0; i < 5; i++) r.spoofSyn();
    await runFor(r.p.clock, 5);
    expect(r.l.synQueue.size).toBe(5);
    expect(r.kb.listener.isTriggered(r.l)).toBe(false);
    expect(r.ofKind(EventKind.SynProtectionTriggered)).toEqual([]);
  });
});

describe('KB 142641: the SYN-ACK retransmission schedule', () => {
  /** Times (relative to the SYN) of every SYN-ACK for one spoofed SYN, and when the half-open entry went. */
  async function schedule(params: Params) {
    const r = rig({ params: { TcpMaxHalfOpen: 1000, TcpMaxHalfOpenRetried: 1000, ...params }, backlog: 10 });
    const t0 = r.p.clock.now;
    r.spoofSyn();
    let goneAt = -1;
    await runUntil(
      r.p.clock,
      () => {
        if (goneAt < 0 && r.l.synQueue.size === 0 && r.p.clock.now > t0 + 1) goneAt = r.p.clock.now - t0;
        return goneAt >= 0;
      },
      60_000,
      10,
    );
    await runFor(r.p.clock, 30_000, 100); // nothing more after the give-up
    const times = r.tap.tcp('b->a', (t) => t.flags === (SYN | ACK)).map((s) => Math.round(s.t - t0));
    return { r, times, goneAt: Math.round(goneAt) };
  }

  test('TcpMaxConnectResponseRetransmissions 2: SYN-ACK at 0, 3 s, 9 s (3 s then 6 s), half-open dropped at 21 s', async () => {
    const { r, times, goneAt } = await schedule({ TcpMaxConnectResponseRetransmissions: 2 });
    expect(times.length).toBe(3);
    expect(times[0]).toBeLessThanOrEqual(1);
    expect(Math.abs(times[1] - 3000)).toBeLessThanOrEqual(10);
    expect(Math.abs(times[2] - 9000)).toBeLessThanOrEqual(10);
    expect(Math.abs(goneAt - 21_000)).toBeLessThanOrEqual(10);
    expect(r.p.b.counters.FsSynAckRetrans).toBe(2);
  });

  test('TcpMaxConnectResponseRetransmissions 3: a fourth SYN-ACK at 21 s, dropped at 45 s', async () => {
    const { times, goneAt } = await schedule({ TcpMaxConnectResponseRetransmissions: 3 });
    expect(times.map((t) => Math.round(t / 100) * 100)).toEqual([0, 3000, 9000, 21_000]);
    expect(Math.abs(goneAt - 45_000)).toBeLessThanOrEqual(10);
  });

  test('while protection is on, a half-open connection gets one retransmission (our choice) and is dropped at 9 s', async () => {
    const r = rig({ params: { TcpMaxHalfOpen: 1, TcpMaxHalfOpenRetried: 1000, TcpMaxConnectResponseRetransmissions: 2 }, backlog: 10 });
    r.spoofSyn();
    r.spoofSyn(); // 2 > 1: protection on
    await runFor(r.p.clock, 5);
    expect(r.kb.listener.isTriggered(r.l)).toBe(true);
    const t0 = r.p.clock.now;
    await runFor(r.p.clock, 8_900, 10);
    expect(r.l.synQueue.size).toBe(2);
    await runFor(r.p.clock, 200, 10);
    expect(r.l.synQueue.size).toBe(0);
    const retrans = r.tap.tcp('b->a', (t) => t.flags === (SYN | ACK)).filter((s) => s.t > t0);
    expect(retrans.length).toBe(2); // one retransmission each, at 3 s
    expect(r.p.b.counters.FsSynAckRetrans).toBe(2);
  });
});

describe('KB 903927: a full backlog, with protection off and on', () => {
  test('protection off: the SYN that finds the backlog full is refused with RST|ACK; the client sees ECONNREFUSED', async () => {
    const r = rig({ params: { SynAttackProtect: 0 }, backlog: 2 });
    const ok = [r.client(), r.client()];
    expect(await runUntil(r.p.clock, () => ok.every((c) => c.connected), 100)).toBe(true);
    const late = r.client('never sent');
    expect(await runUntil(r.p.clock, () => late.sink.error !== null, 100)).toBe(true);
    expect(late.connected).toBe(false);
    expect(late.sink.error!.code).toBe('ECONNREFUSED');
    // On the wire: the third SYN got no SYN-ACK, only a RST|ACK acknowledging the SYN.
    const port = late.s.localPort!;
    const toLate = r.tap.tcp('b->a', (t) => t.dport === port);
    expect(toLate.length).toBe(1);
    expect(toLate[0].tcp.flags).toBe(RST | ACK);
    const [syn] = r.tap.tcp('a->b', (t) => t.sport === port && t.flags === SYN);
    expect(toLate[0].tcp.ack).toBe((syn.tcp.seq + 1) >>> 0);
    expect(r.l.refusedSyns).toBe(1);
    expect(r.l.resetAfterHandshake).toBe(0);
    expect(r.p.b.counters.TcpExtListenOverflows).toBe(1);
    // The application was never told of it: no negotiation state allocated.
    expect(r.indicated.length).toBe(0);
  });

  test('protection on (SynAttackProtect 2): the handshake completes, the first flight arrives, then RST; the client connected and then sees ECONNRESET', async () => {
    const r = rig({ params: { SynAttackProtect: 2, TcpMaxPortsExhausted: 0 }, backlog: 1 });
    const first = r.client();
    expect(await runUntil(r.p.clock, () => first.connected, 100)).toBe(true);
    expect(r.kb.listener.isTriggered(r.l)).toBe(true); // TcpMaxPortsExhausted 0: as soon as the backlog is consumed
    expect(r.ofKind(EventKind.SynProtectionTriggered)[0].message).toBe(
      'SYN attack protection triggered on port 5061: TcpMaxPortsExhausted is 0 and the backlog of 1 is consumed; ' +
        'connections are now indicated only after the handshake completes',
    );
    const hello = 'ClientHello: sixty bytes of the start of a TLS negotiation...';
    const late = r.client(hello);
    expect(await runUntil(r.p.clock, () => late.sink.error !== null, 1000)).toBe(true);
    expect(late.connected).toBe(true);
    expect(late.sink.error!.code).toBe('ECONNRESET');
    const port = late.s.localPort!;
    const segs = r.tap.tcp(undefined, (t) => t.sport === port || t.dport === port);
    const label = (s: (typeof segs)[number]) => `${s.dir} ${s.tcp.flags & RST ? 'R' : s.tcp.flags & SYN ? 'S' : s.tcp.len > 0 ? 'data' : '.'}`;
    // Handshake, the first flight (it carries the handshake's ACK: the client writes in
    // its connect handler), then the server's RST. A pure ACK the client sends after its
    // data reaches a connection that is gone and is answered with a RST of its own.
    const firstRst = segs.findIndex((s) => s.dir === 'b->a' && (s.tcp.flags & RST) !== 0);
    expect(
      segs
        .slice(0, firstRst + 1)
        .filter((s) => label(s) !== 'a->b .')
        .map(label),
    ).toEqual(['a->b S', 'b->a S', 'a->b data', 'b->a R']);
    const synAck = segs[1].tcp;
    expect(segs[firstRst].tcp.seq).toBe((synAck.seq + 1) >>> 0);
    expect(segs[2].tcp.len).toBe(hello.length);
    // Nothing the server sent acknowledged the first flight before the RST.
    expect(segs.filter((s) => s.dir === 'b->a' && s.tcp.flags & ACK && s.tcp.ack === (segs[0].tcp.seq + 1 + hello.length) >>> 0)).toEqual([]);
    expect(r.l.resetAfterHandshake).toBe(1);
    expect(r.l.refusedSyns).toBe(0);
    expect(r.p.b.counters.FsBacklogResets).toBe(1);
    const [reset] = r.ofKind(EventKind.BacklogReset);
    expect(reset.data).toMatchObject({ backlog: 1, bytesReceived: hello.length, remote: `198.18.0.1:${port}` });
    // The application was told (after the handshake) and allocated its state for it.
    // (The first client was indicated at its SYN: the application is told early on the delayed path only.)
    expect(r.indicated.length).toBe(1);
  });

  test('protection on without data: the connection is indicated after a short delay (indicationDelayMs) and reset then', async () => {
    const r = rig({ params: { SynAttackProtect: 2, TcpMaxPortsExhausted: 0 }, backlog: 1 });
    const first = r.client();
    expect(await runUntil(r.p.clock, () => first.connected, 100)).toBe(true);
    const silent = r.client();
    expect(await runUntil(r.p.clock, () => silent.connected, 100)).toBe(true);
    const t = r.p.clock.now;
    expect(await runUntil(r.p.clock, () => silent.sink.error !== null, 1000)).toBe(true);
    expect(silent.sink.error!.code).toBe('ECONNRESET');
    expect(Math.abs(r.p.clock.now - t - r.kb.listener.indicationDelayMs)).toBeLessThanOrEqual(5);
  });

  test('SynAttackProtect 1 (no delayed indication): protection on, but a SYN for a full backlog is still refused at once', async () => {
    const r = rig({ params: { SynAttackProtect: 1, TcpMaxPortsExhausted: 0 }, backlog: 1 });
    const first = r.client();
    expect(await runUntil(r.p.clock, () => first.connected, 100)).toBe(true);
    expect(r.kb.listener.isTriggered(r.l)).toBe(true);
    const late = r.client('x');
    expect(await runUntil(r.p.clock, () => late.sink.error !== null, 100)).toBe(true);
    expect(late.connected).toBe(false);
    expect(late.sink.error!.code).toBe('ECONNREFUSED');
    expect(r.l.resetAfterHandshake).toBe(0);
  });

  test('half-open connections indicated at their SYN hold backlog slots: a delayed indication after a flood finds none and resets', async () => {
    const r = rig({ params: { SynAttackProtect: 2, TcpMaxHalfOpen: 2, TcpMaxHalfOpenRetried: 1000, TcpMaxPortsExhausted: 1000 }, backlog: 3 });
    // Three spoofed SYNs, each told to the application at once (protection is not on
    // yet): they take the three slots. The third exceeds TcpMaxHalfOpen.
    for (let i = 0; i < 3; i++) r.spoofSyn();
    await runFor(r.p.clock, 5);
    expect(r.kb.listener.isTriggered(r.l)).toBe(true);
    expect(r.l.synQueue.size).toBe(3);
    // A real client now: handshake first, then the application is told and has no slot.
    const c = r.client('hello');
    expect(await runUntil(r.p.clock, () => c.sink.error !== null, 1000)).toBe(true);
    expect(c.connected).toBe(true);
    expect(c.sink.error!.code).toBe('ECONNRESET');
    expect(r.l.acceptQueue.length).toBe(0);
    expect(r.l.resetAfterHandshake).toBe(1);
  });

  test('an accept frees a slot: the next delayed indication finds room and the client is served', async () => {
    const r = rig({ params: { SynAttackProtect: 2, TcpMaxPortsExhausted: 0 }, backlog: 1 });
    const first = r.client();
    expect(await runUntil(r.p.clock, () => first.connected && r.l.acceptQueue.length === 1, 100)).toBe(true);
    const c = r.l.accept()!;
    expect(c).toBeTruthy();
    const second = r.client('hello');
    expect(await runUntil(r.p.clock, () => second.connected, 100)).toBe(true);
    await runFor(r.p.clock, 500);
    expect(second.sink.error).toBeNull();
    expect(r.l.acceptQueue.length).toBe(1);
    expect(r.l.resetAfterHandshake).toBe(0);
  });
});

/**
 * What each leaked entry holds. A plain function, so that no loop variable of an async
 * test stays behind in its suspended frame and keeps an entry alive across a GC.
 */
function checkLeaks(leaked: readonly LeakedConnection[], flight: string): void {
  for (const leak of leaked) {
    expect(Buffer.concat(leak.firstFlight).toString()).toBe(flight);
    expect(leak.conn.state).toBe(State.Closed);
    expect(leak.appState).toBeInstanceOf(NegotiationState);
    expect((leak.appState as NegotiationState).released).toBe(false);
    expect(leak.bytes).toBe(1200 + flight.length + (leak.appState as NegotiationState).bytes);
  }
}

describe('KB 903927: what the reset path leaves allocated', () => {
  async function resets(mode: 'buggy' | 'hotfixed', n: number) {
    const r = rig({ mode, params: { SynAttackProtect: 2, TcpMaxPortsExhausted: 0 }, backlog: 1 });
    const first = r.client();
    expect(await runUntil(r.p.clock, () => first.connected, 100)).toBe(true);
    const firstIndicated = r.indicated.length;
    const flight = 'C'.repeat(517); // the size of a typical TLS 1.3 ClientHello
    for (let i = 0; i < n; i++) {
      const c = r.client(flight);
      expect(await runUntil(r.p.clock, () => c.connected, 100)).toBe(true);
      expect(await runUntil(r.p.clock, () => c.sink.error !== null, 1000)).toBe(true);
      expect(c.sink.error!.code).toBe('ECONNRESET');
    }
    const states = r.indicated.slice(firstIndicated);
    const conns = r.indicatedConns.slice(firstIndicated);
    expect(states.length).toBe(n);
    return { r, states, conns, flight };
  }

  test('buggy: every reset connection keeps its control block, first flight and negotiation state; events and counters say so', async () => {
    const { r, states, conns, flight } = await resets('buggy', 5);
    const w = r.kb.leak;
    expect(w.leaked.length).toBe(5);
    expect(w.freed).toBe(0);
    checkLeaks(w.leaked, flight);
    expect(r.p.b.counters.FsLeakedConnections).toBe(5);
    expect(r.p.b.counters.FsLeakedBytes).toBe(w.leakedBytes);
    expect(w.leakedBytes).toBe(w.leaked.reduce((s, l) => s + l.bytes, 0));
    expect(r.kb.leakReport()).toEqual({ connections: 5, bytes: w.leakedBytes, resets: 5, freed: 0 });
    const leaks = r.ofKind(EventKind.LeakRetained);
    expect(leaks.length).toBe(5);
    expect(leaks[4].data).toMatchObject({ totalBytes: w.leakedBytes, what: ['control block', 'receive buffer', 'application state'] });
    // The connections left the table (the client was reset), yet nothing was collected.
    expect([...r.p.b.tcp.table.all()].length).toBe(1);
    await collect();
    expect(states.every((s) => s.deref() !== undefined)).toBe(true);
    expect(conns.every((c) => c.deref() !== undefined)).toBe(true);
    // Releasing by hand (the teaching aid) makes them collectable.
    expect(w.releaseLeaks()).toBe(5);
    await collect();
    expect(states.every((s) => s.deref() === undefined)).toBe(true);
  });

  test('hotfixed: the same resets free everything; after a GC nothing of them is reachable', async () => {
    const { r, states, conns } = await resets('hotfixed', 5);
    const w = r.kb.leak;
    expect(w.leaked.length).toBe(0);
    expect(w.freed).toBe(5);
    expect(r.p.b.counters.FsBacklogResets).toBe(5);
    expect(r.p.b.counters.FsLeakedConnections).toBe(0);
    expect(r.ofKind(EventKind.LeakRetained)).toEqual([]);
    expect(r.ofKind(EventKind.BacklogReset).length).toBe(5);
    await collect();
    expect(states.filter((s) => s.deref() !== undefined).length).toBe(0);
    expect(conns.filter((c) => c.deref() !== undefined).length).toBe(0);
  });

  test('switching the mode at run time: resets after the switch follow the new mode', async () => {
    const { r } = await resets('hotfixed', 2);
    r.cfg.setMode('kb903927', 'buggy');
    const c = r.client('after the switch');
    expect(await runUntil(r.p.clock, () => c.sink.error !== null, 1000)).toBe(true);
    expect(r.kb.leak.leaked.length).toBe(1);
    expect(r.kb.leak.freed).toBe(2);
  });
});
