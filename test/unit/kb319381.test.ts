/**
 * KB 319381 on the virtual clock: the lab's media server (lab/media/mms-server.ts) on
 * host B, the lab's player (lab/media/mms-player.ts) on host A, the firewall between
 * them with the fault module installed (test/unit/helpers/firewall.ts). The same
 * programs run on kernel sockets in the integration test; here every step is exact.
 */
import { describe, expect, it } from 'vitest';
import { MediaServer, type PlaylistItem } from '../../lab/media/mms-server';
import { MmsPlayer, type PlayResult } from '../../lab/media/mms-player';
import { B_ADDR, FI_ADDR, makeFirewall, runPromise, runUntil, type FirewallRig, type FirewallRigOptions } from './helpers/firewall';

const PLAYLIST: PlaylistItem[] = [1, 2, 3, 4, 5, 6].map((i) => ({ name: `item${i}.wmv`, datagrams: 20, size: 600 }));

async function rigWithServer(o: FirewallRigOptions) {
  const rig = await makeFirewall(o);
  const server = new MediaServer({ net: rig.netB, playlist: PLAYLIST, timers: rig.timers });
  await runPromise(rig.clock, server.start(), 100);
  return { rig, server };
}

function play(
  rig: FirewallRig,
  via: 'fwc' | 'securenat',
  transport: 'udp' | 'tcp' = 'udp',
  extra: Partial<ConstructorParameters<typeof MmsPlayer>[0]> = {},
): Promise<PlayResult> {
  const p = new MmsPlayer({ server: B_ADDR, via, transport, firewall: FI_ADDR, net: rig.netA, timers: rig.timers, ...extra });
  return runPromise(rig.clock, p.play(), 120_000);
}

const events = (rig: FirewallRig) => rig.fwEvents.map((e) => (e.kind === 'port-scan' ? `port-scan ${e.scan.id}` : `${e.kind} ${e.action}`));

describe('KB 319381 with the lab player and media server', () => {
  it('buggy: item 1 plays; the re-bind races the release (WSAEADDRINUSE), then the port stays closed and every later item stalls; the drops look like a port scan', async () => {
    const { rig, server } = await rigWithServer({ mode: 'buggy' });
    const r = await play(rig, 'fwc');
    expect(r.error).toBeUndefined();
    expect(r.items.map((i) => i.ok)).toEqual([true, false, false, false, false, false]);
    expect(r.items[1]).toMatchObject({ attempts: 4, received: 0, receivedTotal: 0, expected: 20 });
    expect(r.addrInUse).toBeGreaterThanOrEqual(5); // once per item change, retried every 100 ms for 500 ms
    expect(r.bindErrors.every((e) => e === 'WSAEADDRINUSE')).toBe(true);
    // Every later datagram was dropped at the packet filter, for the reason the article gives.
    expect(rig.fw.drops['media-port-closed']).toBe(5 * 4 * 20);
    expect(rig.media.counters).toMatchObject({ MediaPortsOpened: 1, MediaPortsClosed: 1, MediaPortsLeftClosed: 5, MediaPortsReopened: 0 });
    // The server sent each play from a new port, 1025 upward: 21 ports.
    expect(server.stats.sourcePorts).toEqual(Array.from({ length: 21 }, (_, i) => 1025 + i));
    const ev = events(rig);
    expect(ev).toContain('port-scan 15104');
    expect(ev).toContain('port-scan 15105');
    const scans = rig.fwEvents.filter((e) => e.kind === 'port-scan');
    for (const e of scans) if (e.kind === 'port-scan') expect(e.scan.address).toBe(0xc6130002); // the media server
    expect(rig.fault.stats!()).toMatchObject({ addrInUse: r.addrInUse, leftClosed: 5 });
  });

  it('buggy with no release delay: no WSAEADDRINUSE, the port is simply left closed', async () => {
    const { rig } = await rigWithServer({ mode: 'buggy', params: { MediaPortReleaseDelayMs: 0 } });
    const r = await play(rig, 'fwc');
    expect(r.addrInUse).toBe(0);
    expect(r.played).toBe(1);
    expect(r.stalled).toBe(5);
    expect(rig.fw.drops['media-port-closed']).toBe(400);
  });

  it('hotfixed: every item plays, no datagram dropped, no WSAEADDRINUSE, no port-scan event', async () => {
    const { rig, server } = await rigWithServer({ mode: 'hotfixed' });
    const r = await play(rig, 'fwc');
    expect(r.items.map((i) => [i.ok, i.attempts])).toEqual(Array.from({ length: 6 }, () => [true, 1]));
    expect(r.addrInUse).toBe(0);
    expect(rig.fw.counters.FwDropped).toBe(0);
    expect(rig.media.counters).toMatchObject({ MediaPortsClosed: 6, MediaPortsReopened: 5, MediaDatagramsAdmitted: 120 });
    expect(events(rig).filter((e) => e.startsWith('port-scan'))).toEqual([]);
    expect(rig.fault.stats!()).toMatchObject({ releasesCompletedFirst: 5, addrInUse: 0, reopened: 5 });
    expect(server.stats.sourcePorts).toHaveLength(6);
  });

  for (const mode of ['buggy', 'hotfixed'] as const) {
    it(`${mode}: a SecureNAT client and an MMST client play every item`, async () => {
      const { rig } = await rigWithServer({ mode });
      const nat = await play(rig, 'securenat');
      expect(nat.items.map((i) => i.ok)).toEqual([true, true, true, true, true, true]);
      // The filter read the negotiation in the translated session and rewrote it.
      expect(rig.media.counters.MediaAlgRewrites).toBe(1);
      // The opening made for it (external port 7000) went when its control connection closed:
      // a Firewall Client may bind 7000 now and plays its first item.
      await runUntil(rig.clock, () => rig.fw.sessions.expectations().length === 0, 1000);
      expect(rig.fw.sessions.expectations()).toEqual([]);
      const fwcAfter = await play(rig, 'fwc');
      expect(fwcAfter.items[0]!.ok).toBe(true);
      const dropsBefore = rig.fw.counters.FwDropped;
      const mmstFwc = await play(rig, 'fwc', 'tcp');
      expect(mmstFwc.played).toBe(6);
      const mmstNat = await play(rig, 'securenat', 'tcp');
      expect(mmstNat.played).toBe(6);
      expect(rig.fw.counters.FwDropped).toBe(dropsBefore);
    });
  }

  it('off: without the streaming-media filter MMSU fails for both kinds of client; MMST still plays', async () => {
    const { rig } = await rigWithServer({ mode: 'off' });
    const fwc = await play(rig, 'fwc', 'udp', { retries: 0 });
    expect(fwc.played).toBe(0);
    const nat = await play(rig, 'securenat', 'udp', { retries: 0 });
    expect(nat.played).toBe(0);
    expect(rig.fw.drops['binding-not-open'] + rig.fw.drops['inbound-no-rule']).toBeGreaterThan(0);
    expect((await play(rig, 'fwc', 'tcp')).played).toBe(6);
  });
});
