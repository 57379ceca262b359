/**
 * Network Load Balancing on the virtual clock: the bucket map, the hash and affinities,
 * port rules, heartbeats on the wire, convergence on loss and join, descriptors that keep
 * connections on their host through a convergence, descriptor blocks and their
 * exhaustion, extended affinity, drainstop/stop/start, and the MAC rules of the modes.
 */
import { describe, expect, test } from 'vitest';
import { bitsOf, computeMap, countOf, formatBuckets, quotas } from '../../stack/nlb/buckets';
import { AffinityCode, bucketOf, fmix32 } from '../../stack/nlb/hash';
import { PortRuleError, checkRules, clusterMac, defaultRule, igmpGroup, maskedSourceMac, parsePortRule } from '../../stack/nlb/config';
import { formatIpv4, parseIpv4 } from '../../stack/wire/addr';
import { ETHERTYPE_MS_NLB, formatMac, readMac, writeMac } from '../../stack/wire/ethernet';
import { F, tcp } from './helpers/packets';
import { NLB_MEMBERSHIP_LEN, NLB_SIGNATURE_MEMBERSHIP, newMembershipRepr, parseMembership } from '../../stack/wire/nlb';
import { CLUSTER_IP, clientAddr, echoAll, kill, makeCluster, open, waitConverged, type Cluster } from './helpers/nlb-cluster';
import { runFor, runUntil } from './helpers/pair';

const ip = (s: string) => parseIpv4(s)!;

describe('NLB: buckets and the hash', () => {
  test('quotas follow the load weights; the remainder goes to the largest fractions, then the lower host', () => {
    expect([
      ...quotas(60, [
        { id: 1, weight: 50 },
        { id: 2, weight: 50 },
        { id: 3, weight: 50 },
      ]).values(),
    ]).toEqual([20, 20, 20]);
    expect([
      ...quotas(60, [
        { id: 1, weight: 50 },
        { id: 2, weight: 50 },
        { id: 3, weight: 50 },
        { id: 4, weight: 50 },
        { id: 5, weight: 50 },
        { id: 6, weight: 50 },
        { id: 7, weight: 50 },
      ]).entries(),
    ]).toEqual([
      [1, 9],
      [2, 9],
      [3, 9],
      [4, 9],
      [5, 8],
      [6, 8],
      [7, 8],
    ]);
    expect([
      ...quotas(60, [
        { id: 1, weight: 100 },
        { id: 2, weight: 0 },
      ]).values(),
    ]).toEqual([60, 0]);
    expect([
      ...quotas(60, [
        { id: 1, weight: 75 },
        { id: 2, weight: 25 },
      ]).values(),
    ]).toEqual([45, 15]);
  });

  test('a cold start deals buckets out round-robin; a host that leaves gives up only its own buckets', () => {
    const three = computeMap(
      60,
      [
        { id: 1, weight: 50 },
        { id: 2, weight: 50 },
        { id: 3, weight: 50 },
      ],
      null,
    );
    expect(Array.from(three.subarray(0, 6))).toEqual([1, 2, 3, 1, 2, 3]);
    expect([countOf(three, 1), countOf(three, 2), countOf(three, 3)]).toEqual([20, 20, 20]);
    const two = computeMap(
      60,
      [
        { id: 1, weight: 50 },
        { id: 3, weight: 50 },
      ],
      three,
    );
    for (let b = 0; b < 60; b++) if (three[b] !== 2) expect(two[b]).toBe(three[b]);
    expect([countOf(two, 1), countOf(two, 3)]).toEqual([30, 30]);
    // A host that joins takes only what the others must shed.
    const back = computeMap(
      60,
      [
        { id: 1, weight: 50 },
        { id: 2, weight: 50 },
        { id: 3, weight: 50 },
      ],
      two,
    );
    let moved = 0;
    for (let b = 0; b < 60; b++)
      if (back[b] !== two[b]) {
        moved++;
        expect(back[b]).toBe(2);
      }
    expect(moved).toBe(20);
  });

  test('the bucket map as 64-bit heartbeat maps and as ranges', () => {
    const m = computeMap(
      8,
      [
        { id: 1, weight: 50 },
        { id: 2, weight: 50 },
      ],
      null,
    );
    expect(bitsOf(m, 1)).toBe(0b01010101n);
    expect(formatBuckets(0b1110_0111n, 8)).toBe('0-2,5-7');
  });

  test("fmix32 is MurmurHash3's finalizer; buckets spread consecutive addresses evenly", () => {
    expect(fmix32(0)).toBe(0);
    expect(fmix32(1)).toBe(0x514e28b7);
    const counts = new Array(60).fill(0);
    const base = ip('198.18.60.0');
    for (let i = 0; i < 6000; i++) counts[bucketOf(AffinityCode.Single, base + i, 0, 60)]++;
    // 100 per bucket expected; a uniform hash stays well within +-40% at n = 6000.
    expect(Math.min(...counts)).toBeGreaterThan(60);
    expect(Math.max(...counts)).toBeLessThan(140);
  });

  test('affinities: single ignores the port, none hashes it, network groups the /24', () => {
    const a = ip('198.18.60.10');
    const single = new Set(Array.from({ length: 50 }, (_, p) => bucketOf(AffinityCode.Single, a, 40000 + p, 60)));
    expect(single.size).toBe(1);
    const none = new Set(Array.from({ length: 50 }, (_, p) => bucketOf(AffinityCode.None, a, 40000 + p, 60)));
    expect(none.size).toBeGreaterThan(20);
    const net = new Set(Array.from({ length: 200 }, (_, i) => bucketOf(AffinityCode.Network, ip('198.18.61.0') + i, 0, 60)));
    expect(net.size).toBe(1);
    // A seed reshuffles.
    expect(bucketOf(AffinityCode.Single, a, 0, 60, 0)).not.toBe(bucketOf(AffinityCode.Single, a, 0, 60, 12345));
  });
});

describe('NLB: configuration', () => {
  test('port rules: the WMI defaults, every key, and one-line errors', () => {
    expect(parsePortRule('')).toEqual(defaultRule());
    expect(parsePortRule('ports=80,proto=tcp,mode=single,affinity=none,weight=30,priority=2,timeout=20')).toEqual({
      start: 80,
      end: 80,
      protocol: 'tcp',
      mode: 'single',
      affinity: 'none',
      weight: 30,
      priority: 2,
      timeoutMs: 20 * 60_000,
    });
    expect(parsePortRule('ports=1000-2000,timeout=30s').timeoutMs).toBe(30_000);
    expect(() => parsePortRule('ports=90-80')).toThrow(PortRuleError);
    expect(() => parsePortRule('weight=101')).toThrow(/0 to 100/);
    expect(() => parsePortRule('colour=blue')).toThrow(/unknown key "colour"/);
    expect(() => checkRules([parsePortRule('ports=80-90'), parsePortRule('ports=85,proto=tcp')])).toThrow(/overlap/);
    expect(() => checkRules([parsePortRule('ports=80,proto=tcp'), parsePortRule('ports=80,proto=udp')])).not.toThrow();
  });

  test('the MAC rules: 02-BF, 03-BF, 239.255.y.z, and the masked source 02-h', () => {
    const c = ip('198.18.70.100');
    expect(formatMac(clusterMac('unicast', c))).toBe('02:bf:c6:12:46:64');
    expect(formatMac(clusterMac('multicast', c))).toBe('03:bf:c6:12:46:64');
    expect(formatIpv4(igmpGroup(c))).toBe('239.255.70.100');
    expect(formatMac(clusterMac('igmp', c))).toBe('01:00:5e:7f:46:64');
    expect(formatMac(maskedSourceMac(c, 3))).toBe('02:03:c6:12:46:64');
  });
});

async function converge(c: Cluster): Promise<void> {
  expect(await waitConverged(c)).toBe(true);
}

/** Connections from `n` client addresses, `per` each; returns the host each landed on. */
async function spread(c: Cluster, n: number, per: number, port = 80) {
  const opened: { client: number; o: ReturnType<typeof open> }[] = [];
  for (let i = 0; i < n; i++) for (let k = 0; k < per; k++) opened.push({ client: i, o: open(c, clientAddr(i), port) });
  await runUntil(c.clock, () => opened.every((x) => x.o.host !== null || x.o.error !== null), 20_000, 5);
  return opened;
}

describe('NLB: a cluster on a learning bridge', () => {
  test('three hosts converge; every bucket has exactly one owner; heartbeats are 0x886F frames in the MS NLB layout', async () => {
    const c = makeCluster(3);
    await converge(c);
    await runFor(c.clock, 3000, 10);
    const maps = c.hosts.map((h) => h.nlb.display(c.clock.now).rules[0]!.map!);
    for (const m of maps) expect(m).toEqual(maps[0]);
    expect(c.hosts.map((h) => h.nlb.display(c.clock.now).rules[0]!.ownedCount)).toEqual([20, 20, 20]);
    expect(c.hosts[0]!.nlb.stateName()).toBe('Converged as DEFAULT');
    expect(c.hosts[1]!.nlb.stateName()).toBe('Converged');
    const hb = c.seg.seen.filter((f) => f.frame.readUInt16BE(12) === ETHERTYPE_MS_NLB && f.from === 'h2');
    const membership = hb.filter((f) => f.frame.readUInt32LE(14) === NLB_SIGNATURE_MEMBERSHIP);
    expect(membership.length).toBeGreaterThan(2);
    const last = membership[membership.length - 1]!.frame;
    expect(last.length).toBe(14 + NLB_MEMBERSHIP_LEN);
    // Unicast mode: heartbeats are broadcast from the masked source 02-h-w-x-y-z.
    expect(formatMac(readMac(last, 0))).toBe('ff:ff:ff:ff:ff:ff');
    expect(formatMac(readMac(last, 6))).toBe('02:02:c6:12:46:64');
    const r = newMembershipRepr();
    expect(parseMembership(last, 14, last.length - 14, r)).toBe(0);
    expect(r).toMatchObject({
      hostId: 2,
      defaultHostId: 1,
      convergenceState: 2,
      clusterIp: CLUSTER_IP,
      dedicatedIp: ip('198.18.70.12'),
      view: 0b111,
      uniqueHostId: 1002,
    });
    expect(r.rules).toHaveLength(1);
    expect(r.rules[0]!.currentMap).toBe(bitsOf(Uint8Array.from(maps[0]!), 2));
    expect(r.rules[0]!.loadWeight).toBe(50);
    // Heartbeats every AliveMsgPeriod (1000 ms) once converged.
    const times = membership.slice(-3).map((f) => f.t);
    expect(times[2]! - times[1]!).toBe(1000);
  });

  test("30 client addresses: each client's connections all land on one host, the owner of its bucket", async () => {
    const c = makeCluster(3);
    await converge(c);
    const opened = await spread(c, 30, 3);
    expect(opened.every((x) => x.o.host !== null)).toBe(true);
    const map = c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.map!;
    const perClient = new Map<number, Set<number>>();
    for (const x of opened) {
      const s = perClient.get(x.client) ?? new Set();
      s.add(x.o.host!);
      perClient.set(x.client, s);
    }
    for (const [i, hosts] of perClient) {
      expect(hosts.size).toBe(1);
      expect([...hosts][0]).toBe(map[bucketOf(AffinityCode.Single, ip(clientAddr(i)), 0, 60)]);
    }
    // Every host got some, and the others dropped what was not theirs.
    expect(new Set([...perClient.values()].map((s) => [...s][0])).size).toBe(3);
    for (const h of c.hosts) {
      expect(h.accepted.length).toBeGreaterThan(0);
      expect(h.nlb.counters.NlbDroppedNotOwner).toBeGreaterThan(0);
      expect(h.nlb.descriptors.inUse).toBe(h.accepted.length);
    }
    expect(c.hosts.reduce((a, h) => a + h.accepted.length, 0)).toBe(90);
  });

  test("affinity none spreads one client's connections by port; network keeps a /24 together", async () => {
    const none = makeCluster(3, { rules: [parsePortRule('affinity=none')] });
    await converge(none);
    const o1 = await spread(none, 1, 24);
    expect(new Set(o1.map((x) => x.o.host)).size).toBeGreaterThan(1);
    const net = makeCluster(3, { rules: [parsePortRule('affinity=network')] });
    await converge(net);
    const o2 = await spread(net, 20, 1);
    expect(new Set(o2.map((x) => x.o.host)).size).toBe(1);
  });

  test('port rules: single-host mode by handling priority, disabled, uncovered ports to the default host, weights', async () => {
    const c = makeCluster(3, {
      rules: [parsePortRule('ports=80,proto=tcp'), parsePortRule('ports=81,proto=tcp,mode=single'), parsePortRule('ports=82,proto=tcp,mode=disabled')],
      serve: [81, 82, 83],
    });
    // Handling priorities for port 81: host 1 has 3, host 2 its default (2), host 3 has 1: host 3 takes it all.
    c.hosts[0]!.nlb.config.rules[1]!.priority = 3;
    c.hosts[2]!.nlb.config.rules[1]!.priority = 1;
    await converge(c);
    const single = await spread(c, 10, 1, 81);
    expect(new Set(single.map((x) => x.o.host))).toEqual(new Set([3]));
    const uncovered = await spread(c, 10, 1, 83);
    expect(new Set(uncovered.map((x) => x.o.host))).toEqual(new Set([1]));
    const disabled = open(c, clientAddr(0), 82);
    await runFor(c.clock, 3000);
    expect(disabled.host).toBeNull();
    expect(c.hosts.every((h) => h.nlb.counters.NlbDroppedByRule > 0)).toBe(true);
    // Weights: 100 / 0 / 0 sends every bucket of port 80 to host 1.
    const w = makeCluster(3, { rules: [parsePortRule('ports=80,proto=tcp,weight=0')] });
    w.hosts[0]!.nlb.config.rules[0]!.weight = 100;
    await converge(w);
    expect(w.hosts.map((h) => h.nlb.display(w.clock.now).rules[0]!.ownedCount)).toEqual([60, 0, 0]);
  });
});

describe('NLB: convergence', () => {
  test("a host that dies is dropped after AliveMsgTolerance periods; its buckets move; the others' connections are untouched", async () => {
    const c = makeCluster(3);
    await converge(c);
    const before = c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.map!;
    const opened = await spread(c, 30, 2);
    expect(opened.every((x) => x.o.host !== null)).toBe(true);
    const t0 = c.clock.now;
    kill(c.hosts[1]!);
    const survivors = [c.hosts[0]!, c.hosts[2]!];
    expect(await runUntil(c.clock, () => survivors.every((h) => h.nlb.converged && h.nlb.members.size === 1), 20_000, 10)).toBe(true);
    const ms = c.clock.now - t0;
    // Not before 5 missed periods, and converged within two more.
    expect(ms).toBeGreaterThan(5000);
    expect(ms).toBeLessThan(8000);
    for (const h of survivors) {
      expect(h.events.some((e) => e.kind === 'host-lost' && e.host === 2 && /missed 5 heartbeats/.test(e.reason))).toBe(true);
      expect(h.events.filter((e) => e.kind === 'convergence-finished').pop()).toMatchObject({ hosts: [1, 3] });
    }
    const after = c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.map!;
    expect(c.hosts[2]!.nlb.display(c.clock.now).rules[0]!.map).toEqual(after);
    for (let b = 0; b < 60; b++) {
      if (before[b] === 2) expect([1, 3]).toContain(after[b]);
      else expect(after[b]).toBe(before[b]);
    }
    // The connections on hosts 1 and 3 still carry data.
    const kept = opened.filter((x) => x.o.host !== 2).map((x) => x.o);
    expect(kept.length).toBeGreaterThan(10);
    expect(await echoAll(c, kept, 'still-there')).toEqual([]);
    // Host 2's clients connect again, to the new owners.
    const again = await spread(c, 30, 1);
    for (const x of again) expect(x.o.host).toBe(after[bucketOf(AffinityCode.Single, ip(clientAddr(x.client)), 0, 60)]);
  });

  test("a host that joins takes its share; descriptors keep the moved buckets' connections on their old hosts", async () => {
    const c = makeCluster(2);
    await converge(c);
    const opened = await spread(c, 30, 1);
    expect(opened.every((x) => x.o.host !== null)).toBe(true);
    const before = c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.map!;
    c.addHost(3);
    expect(await runUntil(c.clock, () => c.converged() && c.hosts.every((h) => h.nlb.members.size === 2), 20_000, 10)).toBe(true);
    const after = c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.map!;
    expect(c.hosts.map((h) => h.nlb.display(c.clock.now).rules[0]!.ownedCount)).toEqual([20, 20, 20]);
    // Only the buckets host 3 took moved.
    for (let b = 0; b < 60; b++) if (after[b] !== 3) expect(after[b]).toBe(before[b]);
    const moved = opened.filter((x) => after[bucketOf(AffinityCode.Single, ip(clientAddr(x.client)), 0, 60)] === 3);
    expect(moved.length).toBeGreaterThan(3);
    // Their buckets are not idle on the old hosts, so host 3 leaves their segments alone.
    expect(c.hosts[2]!.nlb.display(c.clock.now).rules[0]!.dirty).not.toBe('-');
    expect(
      await echoAll(
        c,
        opened.map((x) => x.o),
        'descriptor',
      ),
    ).toEqual([]);
    expect(opened.every((x) => !x.o.closed && x.o.error === null)).toBe(true);
    expect(c.hosts[2]!.nlb.counters.NlbDroppedDirtyBucket).toBeGreaterThan(0);
    // A new connection from a moved client goes to its new owner (classic affinity: no timeout).
    const fresh = open(c, clientAddr(moved[0]!.client));
    await runUntil(c.clock, () => fresh.host !== null, 5000, 5);
    expect(fresh.host).toBe(3);
    // When the old connections end, the buckets become idle and clean.
    for (const x of opened) x.o.sock.end();
    await runFor(c.clock, 6000, 10);
    expect(c.hosts[2]!.nlb.display(c.clock.now).rules[0]!.dirty).toBe('-');
    expect(c.hosts[0]!.nlb.descriptors.inUse + c.hosts[1]!.nlb.descriptors.inUse).toBe(0);
  });

  test('hosts with other port rules do not converge with each other, and say why', async () => {
    const c = makeCluster(1);
    c.addHost(2, { rules: [parsePortRule('ports=80,proto=tcp')] });
    await runFor(c.clock, 6000, 10);
    expect(c.hosts[0]!.nlb.converged).toBe(false);
    expect(c.hosts[0]!.events.some((e) => e.kind === 'rule-conflict' && e.host === 2)).toBe(true);
  });
});

describe('NLB: descriptors', () => {
  test('descriptors come in blocks of DescriptorsPerAlloc; past MaxDescriptorAllocs new connections are dropped, visibly', async () => {
    const c = makeCluster(1, { params: { DescriptorsPerAlloc: 16, MaxDescriptorAllocs: 2 } });
    await converge(c);
    const h = c.hosts[0]!;
    const first = await spread(c, 1, 16);
    expect(first.every((x) => x.o.host === 1)).toBe(true);
    expect(h.nlb.descriptors.blocks).toBe(1);
    const second = await spread(c, 1, 16);
    expect(second.every((x) => x.o.host === 1)).toBe(true);
    expect(h.nlb.descriptors.blocks).toBe(2);
    expect(h.events.filter((e) => e.kind === 'descriptor-block-allocated').map((e) => (e as { capacity: number }).capacity)).toEqual([16, 32]);
    const over = open(c, clientAddr(1));
    await runFor(c.clock, 2000, 10);
    expect(over.host).toBeNull();
    expect(h.nlb.counters.NlbDescriptorsExhausted).toBeGreaterThan(0);
    expect(h.events.some((e) => e.kind === 'descriptors-exhausted')).toBe(true);
    // Connections that end give their descriptors back (the stack no longer has them), and the waiting one gets in.
    for (const x of first) x.o.sock.end();
    expect(await runUntil(c.clock, () => over.host === 1, 30_000, 10)).toBe(true);
    expect(h.nlb.descriptors.blocks).toBe(2);
  });

  test('a RST frees the descriptor at once', async () => {
    const c = makeCluster(1);
    await converge(c);
    const [x] = await spread(c, 1, 1);
    expect(c.hosts[0]!.nlb.descriptors.inUse).toBe(1);
    x!.o.sock.resetAndDestroy();
    await runFor(c.clock, 100, 5);
    expect(c.hosts[0]!.nlb.descriptors.inUse).toBe(0);
  });
});

describe('NLB: extended affinity', () => {
  test('with a timeout, a client whose bucket moved keeps going to its old host until the timer runs out after its last connection', async () => {
    const c = makeCluster(2, { rules: [parsePortRule('timeout=30s')] });
    await converge(c);
    const opened = await spread(c, 30, 1);
    c.addHost(3, { rules: [parsePortRule('timeout=30s')] });
    expect(await runUntil(c.clock, () => c.converged() && c.hosts.every((h) => h.nlb.members.size === 2), 20_000, 10)).toBe(true);
    const after = c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.map!;
    const moved = opened.filter((x) => after[bucketOf(AffinityCode.Single, ip(clientAddr(x.client)), 0, 60)] === 3);
    expect(moved.length).toBeGreaterThan(3);
    const m = moved[0]!;
    // Still connected: the new connection follows the old one.
    const again = open(c, clientAddr(m.client));
    await runUntil(c.clock, () => again.host !== null, 5000, 5);
    expect(again.host).toBe(m.o.host);
    expect(c.hosts[m.o.host! - 1]!.nlb.counters.NlbAcceptedBySticky).toBeGreaterThan(0);
    expect(c.hosts[2]!.nlb.counters.NlbDroppedStickyElsewhere).toBeGreaterThan(0);
    // Both close; within the timeout the client still goes back there...
    m.o.sock.end();
    again.sock.end();
    await runFor(c.clock, 10_000, 10);
    const within = open(c, clientAddr(m.client));
    await runUntil(c.clock, () => within.host !== null, 5000, 5);
    expect(within.host).toBe(m.o.host);
    within.sock.end();
    // ...and after it, to the bucket's owner.
    await runFor(c.clock, 40_000, 20);
    const later = open(c, clientAddr(m.client));
    await runUntil(c.clock, () => later.host !== null, 5000, 5);
    expect(later.host).toBe(3);
  });
});

describe('NLB: control', () => {
  test('drainstop: no new connections, the existing ones finish, then the host stops; start brings it back', async () => {
    const c = makeCluster(2);
    await converge(c);
    const opened = await spread(c, 30, 1);
    const on2 = opened.filter((x) => x.o.host === 2).map((x) => x.o);
    expect(on2.length).toBeGreaterThan(0);
    const h2 = c.hosts[1]!;
    expect(h2.nlb.drainstop(c.clock.now).state).toBe('draining');
    expect(await runUntil(c.clock, () => c.converged() && c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.ownedCount === 60, 10_000, 10)).toBe(true);
    expect(h2.nlb.stateName()).toBe('Draining');
    expect(await echoAll(c, on2, 'draining')).toEqual([]);
    const fresh = await spread(c, 30, 1);
    expect(fresh.every((x) => x.o.host === 1)).toBe(true);
    for (const o of on2) o.sock.end();
    expect(await runUntil(c.clock, () => h2.nlb.role === 'stopped', 10_000, 10)).toBe(true);
    expect(h2.nlb.query(c.clock.now).text).toBe('Host 2 is stopped and does not participate in cluster operations.');
    // Its last heartbeat said so: host 1 did not wait for missed heartbeats.
    expect(c.hosts[0]!.events.some((e) => e.kind === 'host-lost' && e.reason === 'stopped')).toBe(true);
    h2.nlb.start(c.clock.now);
    expect(await runUntil(c.clock, () => c.converged() && h2.nlb.display(c.clock.now).rules[0]!.ownedCount === 30, 10_000, 10)).toBe(true);
    expect(c.hosts[0]!.nlb.query(c.clock.now).text).toBe('Host 1 has converged as DEFAULT with the following host(s) as part of the cluster: 1, 2');
  });
});

describe('NLB: modes on a learning bridge', () => {
  test('unicast: the masked source keeps the bridge from learning the cluster MAC, so every host sees every client frame', async () => {
    const c = makeCluster(3);
    await converge(c);
    await spread(c, 10, 1);
    const learned = [...c.seg.learned().keys()].map(formatMac);
    expect(learned).not.toContain('02:bf:c6:12:46:64');
    expect(learned).toContain('02:02:c6:12:46:64');
    // Without the mask the bridge learns the cluster MAC on one host's port and the others go blind.
    const d = makeCluster(3, { params: { MaskSourceMAC: 0 } });
    await converge(d);
    await spread(d, 10, 1);
    expect([...d.seg.learned().keys()].map(formatMac)).toContain('02:bf:c6:12:46:64');
    const seen = d.hosts.map((h) => h.nlb.counters.NlbPacketsIn);
    expect(Math.min(...seen)).toBeLessThan(Math.max(...seen) / 2);
  });

  test('multicast and IGMP modes: ARP answers the group MAC (which our own ARP refuses, as RFC 1812 routers must), frames to it reach every host, one answers', async () => {
    for (const [mode, want] of [
      ['multicast', '03:bf:c6:12:46:64'],
      ['igmp', '01:00:5e:7f:46:64'],
    ] as const) {
      const c = makeCluster(3, { mode });
      await converge(c);
      if (mode === 'igmp') for (const h of c.hosts) expect(h.eth.igmp.rows(c.clock.now).map((g) => g.group)).toContain('239.255.70.100');
      const hs = c.hosts;
      // The client asks for the cluster address; the hosts answer with the cluster's group MAC.
      const o = open(c, clientAddr(0));
      await runFor(c.clock, 200, 5);
      const replies = c.seg.seen.filter((f) => f.frame.readUInt16BE(12) === 0x0806 && f.frame.readUInt16BE(20) === 2 && f.from.startsWith('h'));
      expect(replies.length).toBeGreaterThan(0);
      expect(new Set(replies.map((f) => formatMac(readMac(f.frame, 22))))).toEqual(new Set([want]));
      // A group MAC as a sender hardware address is refused by our ARP (RFC 1812 3.3.2; Linux accepts it, test/integration/nlb.test.ts): this client cannot reach the cluster by ARP.
      expect(c.client.eth.counters.ArpInIgnored).toBeGreaterThan(0);
      expect(o.host).toBeNull();
      // A frame to the group MAC (what a host with a static neighbour entry sends) reaches every host; the bucket's owner answers.
      const src = clientAddr(3);
      const owner = hs[0]!.nlb.display(c.clock.now).rules[0]!.map![bucketOf(AffinityCode.Single, ip(src), 0, 60)]!;
      const syn = tcp({ src, dst: '198.18.70.100', sport: 41000, dport: 80, flags: F.SYN, seq: 1 });
      const frame = Buffer.alloc(14 + syn.length);
      writeMac(frame, 0, clusterMac(mode, CLUSTER_IP));
      writeMac(frame, 6, c.client.eth.mac);
      frame.writeUInt16BE(0x0800, 12);
      syn.copy(frame, 14);
      const seen0 = hs.map((h) => h.nlb.counters.NlbPacketsIn);
      const mark = c.seg.seen.length;
      c.seg.inject(frame);
      await runFor(c.clock, 50, 1);
      expect(hs.map((h, i) => h.nlb.counters.NlbPacketsIn - seen0[i]!)).toEqual([1, 1, 1]);
      const synAcks = c.seg.seen
        .slice(mark)
        .filter((f) => f.frame.readUInt16BE(12) === 0x0800 && f.frame[14 + 9] === 6 && (f.frame[14 + 20 + 13]! & 0x12) === 0x12);
      expect(synAcks.map((f) => f.from)).toEqual([`h${owner}`]);
    }
  });
});
