/**
 * KB 972183 on the virtual clock: three NLB hosts with IPsec, and a client stack that
 * opens a tunnel (IKEv2 initiator) from one address, loses it without telling anyone,
 * and opens a new one from another address whose bucket another host owns. Hotfixed,
 * the old host destroys the old tunnel's state when the new host's heartbeat says a
 * tunnel opened for the identity; buggy, the old host keeps it and the identity has
 * tunnels on two hosts. IPsec is balanced by the outer address, and the TCP inside the
 * tunnel is not seen by the filter.
 */
import { describe, expect, test } from 'vitest';
import { defaultConfig, pskPeer } from '../../stack/ipsec/config';
import { Ipsec } from '../../stack/ipsec/ipsec';
import { hostSelector } from '../../stack/ipsec/ike/negotiate';
import { AffinityCode, bucketOf } from '../../stack/nlb/hash';
import { parseIpv4 } from '../../stack/wire/addr';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventLog } from '../../stack/faults/events';
import { kb972183 } from '../../stack/faults/kb972183/index';
import type { Stack } from '../../stack/stack';
import { CLUSTER, CLUSTER_IP, clientAddr, makeCluster, waitConverged, type Cluster } from './helpers/nlb-cluster';
import { runFor, runUntil } from './helpers/pair';

const ip = (s: string) => parseIpv4(s)!;

function ipsecCluster(mode: 'buggy' | 'hotfixed', params: string[] = []) {
  const ipsecs = new Map<Stack, Ipsec>();
  const c = makeCluster(3, {
    ipsec: (stack) => {
      const cfg = defaultConfig();
      cfg.localId = 'cluster@lab';
      cfg.peers.push(pskPeer('labsecret'));
      const i = new Ipsec(stack, cfg, {});
      stack.ipsec = i;
      i.start(stack.clock());
      ipsecs.set(stack, i);
      return i;
    },
  });
  const events = new EventLog({});
  const config = buildFaultConfig({ faults: [`kb972183=${mode}`], params });
  const installed = c.hosts.map((h) =>
    kb972183.install({ stack: h.stack, config, events, features: { nlb: h.nlb, ipsec: ipsecs.get(h.stack)!, ethernet: h.eth } }),
  );
  // The client's IPsec: an initiator on the client stack.
  const cip = new Ipsec(c.client.stack, defaultConfig(), {});
  c.client.stack.ipsec = cip;
  cip.start(c.client.stack.clock());
  return { c, ipsecs, events, config, installed, cip };
}

/** Two client addresses whose buckets different hosts own, and those hosts. */
function twoAddresses(c: Cluster): { a: string; b: string; hostA: number; hostB: number } {
  const map = c.hosts[0]!.nlb.display(c.clock.now).rules[0]!.map!;
  const owner = (i: number) => map[bucketOf(AffinityCode.Single, ip(clientAddr(i)), 0, 60)]!;
  for (let j = 1; j < 100; j++) if (owner(j) !== owner(0)) return { a: clientAddr(0), b: clientAddr(j), hostA: owner(0), hostB: owner(j) };
  throw new Error('no second address on another host');
}

async function tunnel(cip: Ipsec, c: Cluster, from: string): Promise<boolean> {
  let up = false,
    failed: string | null = null;
  cip.initiate({
    local: { addr: ip(from), port: 500 },
    remote: { addr: CLUSTER_IP, port: 500 },
    id: 'client1@lab',
    psk: Buffer.from('labsecret'),
    localTs: [hostSelector(ip(from))],
    remoteTs: [hostSelector(CLUSTER_IP)],
    onEstablished: () => {
      up = true;
    },
    onFailed: (why) => {
      failed = why;
    },
  });
  await runUntil(c.clock, () => up || failed !== null, 10_000, 2);
  return up;
}

/** The hosts that hold an IKE SA of client1@lab. */
function holders(x: ReturnType<typeof ipsecCluster>): number[] {
  return x.c.hosts.filter((h) => (x.ipsecs.get(h.stack)!.sasByIdentity().get('client1@lab')?.children.length ?? 0) > 0).map((h) => h.priority);
}

async function inner(c: Cluster, from: string): Promise<number | null> {
  let host: number | null = null;
  const s = c.client.net.connect({ host: CLUSTER, port: 80, localAddress: from });
  s.on('error', () => {});
  s.on('data', (d: Buffer) => {
    const m = /^host (\d+)/.exec(d.toString());
    if (m) host = Number(m[1]);
  });
  await runUntil(c.clock, () => host !== null, 5000, 2);
  s.destroy();
  return host;
}

describe('KB 972183: a client that reconnects from another network', () => {
  test("IPsec is balanced by the outer address: the tunnel and the TCP inside it are on the owner of the client address's bucket", async () => {
    const x = ipsecCluster('hotfixed');
    expect(await waitConverged(x.c)).toBe(true);
    const { a, hostA } = twoAddresses(x.c);
    expect(await tunnel(x.cip, x.c, a)).toBe(true);
    expect(holders(x)).toEqual([hostA]);
    expect(await inner(x.c, a)).toBe(hostA);
    const h = x.c.hosts[hostA - 1]!;
    // The inner TCP never met the filter: the only descriptor there is the tunnel's.
    expect(h.nlb.descriptors.inUse).toBe(0);
    expect(h.nlb.display(x.c.clock.now).tunnels).toMatchObject([{ identity: 'client1@lab', client: a, ownsBucket: true }]);
    expect(h.nlb.counters.NlbAcceptedByDescriptor).toBeGreaterThan(0);
  });

  test("hotfixed: the host that does not own the new tunnel's bucket destroys the old tunnel's state; one tunnel on one host", async () => {
    const x = ipsecCluster('hotfixed');
    expect(await waitConverged(x.c)).toBe(true);
    const { a, b, hostA, hostB } = twoAddresses(x.c);
    expect(await tunnel(x.cip, x.c, a)).toBe(true);
    // The client loses its state without a word to the cluster (it left network A), then comes back from B.
    x.cip.ike.clear();
    expect(await tunnel(x.cip, x.c, b)).toBe(true);
    expect(await runUntil(x.c.clock, () => holders(x).length === 1, 5000, 2)).toBe(true);
    expect(holders(x)).toEqual([hostB]);
    const old = x.c.hosts[hostA - 1]!;
    const dropped = old.events.find((e) => e.kind === 'tunnel-state-dropped');
    expect(dropped).toMatchObject({ identity: 'client1@lab', client: a });
    expect((dropped as { reason: string }).reason).toMatch(
      new RegExp(`host ${hostB} opened a new tunnel for client1@lab from ${b.replace(/\./g, '\\.')}.*DropStateIfNotBucketOwner`),
    );
    // Quickly: the new host sent its heartbeat at once.
    expect(x.installed[hostA - 1]!.stats!()).toMatchObject({ kb972183: { hotfixActive: true, tunnelStateDropped: 1 } });
    expect(await inner(x.c, b)).toBe(hostB);
    await runFor(x.c.clock, 100, 2); // the old host's next heartbeat (sent at once) no longer lists the tunnel
    for (const h of x.c.hosts) expect(h.nlb.display(x.c.clock.now).identitiesOnSeveralHosts).toEqual([]);
  });

  test('buggy: the old host keeps the old tunnel, the identity holds state on two hosts, and the event says so', async () => {
    const x = ipsecCluster('buggy');
    expect(await waitConverged(x.c)).toBe(true);
    const { a, b, hostA, hostB } = twoAddresses(x.c);
    expect(await tunnel(x.cip, x.c, a)).toBe(true);
    x.cip.ike.clear();
    expect(await tunnel(x.cip, x.c, b)).toBe(true);
    await runFor(x.c.clock, 3000, 5);
    expect(holders(x).sort()).toEqual([hostA, hostB].sort());
    const kept = x.events.recent(100).filter((e) => e.kind === 'nlb-tunnel-state-kept');
    expect(kept).toHaveLength(1);
    expect(kept[0]!.message).toMatch(/the hotfix is not installed, so the client now has state on more than one host/);
    // Every host's display shows the identity on both hosts (from the heartbeats).
    const seen = x.c.hosts[0]!.nlb.display(x.c.clock.now).identitiesOnSeveralHosts;
    expect(seen).toHaveLength(1);
    expect(seen[0]!.hosts).toEqual([hostA, hostB].sort());
    expect(x.c.hosts.every((h) => h.nlb.counters.NlbTunnelStateDropped === 0)).toBe(true);
  });

  test('hotfixed with DropStateIfNotBucketOwner=0 behaves as buggy; switching the mode live takes effect at the next tunnel', async () => {
    const x = ipsecCluster('hotfixed', ['DropStateIfNotBucketOwner=0']);
    expect(await waitConverged(x.c)).toBe(true);
    const { a, b, hostA, hostB } = twoAddresses(x.c);
    expect(await tunnel(x.cip, x.c, a)).toBe(true);
    x.cip.ike.clear();
    expect(await tunnel(x.cip, x.c, b)).toBe(true);
    await runFor(x.c.clock, 3000, 5);
    expect(holders(x).sort()).toEqual([hostA, hostB].sort());
    expect(x.events.recent(100).find((e) => e.kind === 'nlb-tunnel-state-kept')!.message).toMatch(/DropStateIfNotBucketOwner is 0/);
    x.config.setParam('DropStateIfNotBucketOwner', 1);
    x.cip.ike.clear();
    expect(await tunnel(x.cip, x.c, a)).toBe(true);
    // The new tunnel from a is on hostA: hostB (not the owner of a's bucket) drops its tunnel; hostA keeps only the new one.
    expect(await runUntil(x.c.clock, () => holders(x).length === 1, 5000, 2)).toBe(true);
    expect(holders(x)).toEqual([hostA]);
    expect(
      x.ipsecs
        .get(x.c.hosts[hostA - 1]!.stack)!
        .sasByIdentity()
        .get('client1@lab')!.children,
    ).toHaveLength(1);
    for (const i of x.installed) i.uninstall();
  });
});
