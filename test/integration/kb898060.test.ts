/**
 * KB 898060 under real traffic: faultstack behind real Linux routers (the PMTU lab,
 * lab/pmtu-lab.ts). Clients at their own addresses download /bytes/N; the
 * routers' links are smaller than 1500 bytes, so every download depends on real ICMP
 * fragmentation-needed messages reaching the stack and on the host routes it makes
 * from them.
 *
 * The scenario of the article: eight destinations are served over path A (one
 * smaller hop, 1400); then the route changes to path B (1280, then a 1000-byte
 * tunnel) and the same destinations are served again, each host route being
 * lowered twice. Buggy: each lowering counts as a new route, the count passes
 * MaxIcmpHostRoutes=20 with eight real routes, from then on ICMP is ignored and
 * downloads connect and hang. Hotfixed: nothing stalls. Then the workaround.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PmtuLab, RoutesReply, HOPS } from '../../lab/pmtu-lab';

const BYTES = 200_000;
const LIMIT = 20;
/** The first eight client addresses are the known destinations; the next ones are new. */
const KNOWN = 8;

let pl: PmtuLab;

beforeAll(async () => {
  pl = await PmtuLab.create({ tag: 'kb8', clients: 40 });
}, 120_000);

afterAll(async () => {
  await pl?.cleanup();
});

function host(r: RoutesReply, dest: string) {
  return r.hosts.find((h) => h.dest === dest);
}

/** Downloads with curl from each address in turn; returns the results. */
async function curlEach(addrs: string[], maxTimeS = 4) {
  const out = [];
  for (const a of addrs) out.push({ addr: a, ...(await pl.curl(a, BYTES, maxTimeS)) });
  return out;
}

const completed = (r: { exit: number | null; httpCode: number; bytes: number }) => r.exit === 0 && r.httpCode === 200 && r.bytes === BYTES;

describe('KB 898060 with real Linux routers', () => {
  test("hotfixed: downloads over path A, then path B, succeed through real ICMP; host routes carry each path's MTU and the count is the real one", async () => {
    await pl.startStack({ mode: 'hotfixed', params: { MaxIcmpHostRoutes: LIMIT } });
    await pl.usePath('A');
    const known = pl.clients.slice(0, KNOWN);
    const overA = await curlEach(known);
    expect(overA.filter(completed).map((r) => r.addr)).toEqual(known);
    let r = await pl.routes();
    for (const a of known) expect(host(r, a)?.mtu, a).toBe(HOPS.pathA);
    expect(r).toMatchObject({ hostRouteCount: KNOWN, hostRoutesReal: KNOWN, atLimit: false, countRule: 'hotfixed' });

    await pl.usePath('B');
    const overB = await curlEach(known);
    expect(overB.filter(completed).map((r) => r.addr)).toEqual(known);
    r = await pl.routes();
    for (const a of known) expect(host(r, a), a).toMatchObject({ mtu: HOPS.tunnel, updates: 2 });
    expect(r).toMatchObject({ hostRouteCount: KNOWN, hostRoutesReal: KNOWN, atLimit: false });

    const fresh = pl.clients.slice(KNOWN, KNOWN + 3);
    const overBNew = await curlEach(fresh);
    expect(overBNew.filter(completed).map((r) => r.addr)).toEqual(fresh);
    const c = await pl.counters();
    expect(c.FsIcmpIgnoredAtLimit).toBe(0);
    expect(c.FsHostRoutesCreated).toBe(KNOWN + 3);
    expect(c.FsHostRoutesUpdated).toBe(2 * KNOWN + 3);
    expect(c.TcpExtPMTUFragNeeded).toBeGreaterThanOrEqual(3 * KNOWN + 2 * 3);
    // With the TUN offloads on, the stack sent TSO super-segments that the kernel cut at
    // gso_size = MSS: the downloads over the 1000-byte hop worked only because the MSS
    // (and with it gso_size) shrank with each ICMP.
    expect(c.TcpExtTCPGSOSegsOut).toBeGreaterThan(0);
    expect((await pl.routes()).hostRouteCount).toBe(KNOWN + 3);
  }, 180_000);

  test('buggy: the count passes MaxIcmpHostRoutes with eight real routes; from then on downloads connect and hang, and the counters and events say why', async () => {
    await pl.startStack({ mode: 'buggy', params: { MaxIcmpHostRoutes: LIMIT } });
    await pl.usePath('A');
    const known = pl.clients.slice(0, KNOWN);
    const overA = await curlEach(known);
    expect(overA.filter(completed).map((r) => r.addr)).toEqual(known);
    expect(await pl.routes()).toMatchObject({ hostRouteCount: KNOWN, hostRoutesReal: KNOWN });

    // Path B: each known destination's route is lowered twice (1280 by r1, 1000 by
    // r3); the buggy rule counts 2 per destination: 8 + 2 * 6 = 20 at the sixth.
    await pl.usePath('B');
    const overB = await curlEach(known);
    const okB = overB.filter(completed).map((r) => r.addr);
    expect(okB).toEqual(known.slice(0, 6));
    const r = await pl.routes();
    expect(r).toMatchObject({ hostRouteCount: LIMIT, hostRoutesReal: KNOWN, atLimit: true, countRule: 'buggy' });
    // The two destinations after the limit keep path A's 1400: r1's 1280 was ignored.
    for (const a of known.slice(6)) expect(host(r, a)?.mtu, a).toBe(HOPS.pathA);

    // New destinations: the TCP handshake completes (small packets), the full-size
    // data segments die at r1, and the ICMP that says so is ignored.
    const fresh = pl.clients.slice(KNOWN, KNOWN + 3);
    const overBNew = await Promise.all(fresh.map(async (a) => ({ addr: a, ...(await pl.curl(a, BYTES, 4)) })));
    for (const x of [...overB.slice(6), ...overBNew]) {
      expect(x.exit, `${x.addr}: ${x.stderr}`).toBe(28); // curl: operation timed out
      expect(x.connectS, x.addr).toBeGreaterThan(0); // ...after connecting
      expect(x.bytes, x.addr).toBeLessThan(BYTES / 10);
    }
    const after = await pl.routes();
    expect(after.hostRoutesReal).toBe(KNOWN);
    for (const a of fresh) expect(host(after, a), a).toBeUndefined();

    const c = await pl.counters();
    expect(c.FsHostRoutesCreated).toBe(KNOWN);
    expect(c.FsHostRoutesUpdated).toBe(2 * 6);
    expect(c.FsIcmpIgnoredAtLimit).toBeGreaterThanOrEqual(5);
    const ev = (await pl.events()).filter((e) => e.fault === 'kb898060');
    const limit = ev.filter((e) => e.kind === 'hostroute-limit-reached');
    expect(limit.length).toBe(1);
    expect(limit[0]!.data).toMatchObject({ count: LIMIT, routes: KNOWN, limit: LIMIT });
    const ignored = ev.filter((e) => e.kind === 'icmp-ignored-at-limit');
    const ignoredFor = new Set(ignored.map((e) => e.data?.destination));
    for (const a of [...known.slice(6), ...fresh]) expect(ignoredFor.has(a), a).toBe(true);
    expect(new Set(ignored.map((e) => e.data?.nextHopMtu))).toEqual(new Set([HOPS.pathB]));
  }, 180_000);

  test('buggy at the limit, the workaround: interface MTU 576 makes new destinations work again, with about twice the packets per byte', async () => {
    // Continues from the buggy test's state: the count is at the limit.
    expect((await pl.routes()).atLimit).toBe(true);
    const before = await pl.counters();
    const learned = await pl.curl(pl.clients[0]!, BYTES); // a destination whose route is at 1000
    expect(completed(learned)).toBe(true);
    const mid = await pl.counters();

    await pl.setParam('MTU', 576);
    expect((await pl.routes()).interfaceMtu).toBe(576);
    const fresh = pl.clients.slice(KNOWN + 3, KNOWN + 6);
    const results = await curlEach(fresh, 10);
    expect(results.filter(completed).map((r) => r.addr)).toEqual(fresh);
    const end = await pl.counters();
    // Nothing learned, nothing needed: no new ICMP was accepted.
    expect(end.FsHostRoutesCreated).toBe(before.FsHostRoutesCreated);
    // The cost: segments per byte at 576 (MSS 524 with timestamps) against a 1000-byte path (MSS 948).
    const segsAt1000 = (mid.TcpOutSegs - before.TcpOutSegs) / BYTES;
    const segsAt576 = (end.TcpOutSegs - mid.TcpOutSegs) / (fresh.length * BYTES);
    expect(segsAt576 / segsAt1000).toBeGreaterThan(1.6);
  }, 120_000);

  test('buggy at the limit with EnablePMTUBHDetect=1: black-hole detection rescues new destinations after a few retransmissions', async () => {
    await pl.setParam('MTU', 0);
    expect((await pl.routes()).atLimit).toBe(true);
    await pl.setParam('EnablePMTUBHDetect', 1);
    const before = await pl.counters();
    const fresh = pl.clients.slice(KNOWN + 6, KNOWN + 8);
    const results = await curlEach(fresh, 15);
    expect(results.filter(completed).map((r) => r.addr)).toEqual(fresh);
    const c = await pl.counters();
    // (Connections the buggy test left retransmitting into the black hole may be rescued too.)
    expect(c.FsPmtuBlackHoleDetected - before.FsPmtuBlackHoleDetected).toBeGreaterThanOrEqual(fresh.length);
    expect(c.FsIcmpIgnoredAtLimit).toBeGreaterThan(before.FsIcmpIgnoredAtLimit);
    // Each took the retransmission timer's time (three timeouts), not a round trip.
    for (const r of results) expect(r.totalS, r.addr).toBeGreaterThan(0.5);
  }, 120_000);
});
