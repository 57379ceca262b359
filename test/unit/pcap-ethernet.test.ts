/**
 * pcap on an Ethernet device: the PcapDevice takes DLT_EN10MB (1) from the device's
 * linkType, records the frames the EthernetInterface sends (gathered header + packet)
 * and receives, and tshark reads ARP, IGMP, IP, ICMP and TCP in it with nothing
 * malformed. Two stacks on a memory segment on virtual time make the traffic.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LINKTYPE_ETHERNET, PcapDevice } from '../../drivers/pcap';
import { EthernetSegment } from '../../drivers/memory-ethernet';
import { VirtualClock } from '../../drivers/memory';
import { EthernetInterface } from '../../stack/iface/ethernet';
import { Stack } from '../../stack/stack';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { createNetApi } from '../../stack/api/net';
import { macFromIpv4 } from '../../stack/wire/ethernet';
import { runFor, runUntil, testData } from './helpers/pair';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-pcap-eth-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function tshark(args: string[]): string {
  const r = spawnSync('tshark', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw new Error(`tshark could not run (${r.error.message}): it is a test dependency, installed by scripts/deps.sh`);
  if (r.status !== 0) throw new Error(`tshark ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

describe('pcap with the Ethernet link type', () => {
  test('a TAP-like device records DLT_EN10MB; tshark reads ARP, IGMP, IP, ICMP and TCP, nothing malformed', async () => {
    const file = path.join(dir, 'eth.pcap');
    const clock = new VirtualClock(1_700_000_000_000);
    const seg = new EthernetSegment({ clock, latencyMs: 0.05 });
    const sched = new VirtualScheduler(clock);
    const mk = (name: string, addr: number, pcap: boolean) => {
      const port = seg.port(name);
      const lower = pcap ? new PcapDevice(port, { path: file, now: () => clock.now }) : port;
      const eth = new EthernetInterface({ lower, scheduler: sched, mac: macFromIpv4(addr), address: addr, prefix: 24, random: () => 0.5 });
      const stack = new Stack({ device: eth, scheduler: sched, address: addr, prefix: 24, acceptAnyAddress: false, ownsAddress: (a) => eth.ownsAddress(a) });
      eth.useRoutes(stack.routes);
      eth.start();
      return { eth, stack, lower, net: createNetApi(stack) };
    };
    const a = mk('a', 0xc6120001, true);
    const b = mk('b', 0xc6120002, false);
    expect((a.lower as PcapDevice).linkType).toBe('ethernet');
    a.eth.joinGroup(0xef010203);
    let got = 0;
    b.net
      .createServer((s) =>
        s.on('data', (d: Buffer) => {
          got += d.length;
        }),
      )
      .listen(9000);
    a.net.connect({ host: '198.18.0.2', port: 9000 }).end(testData(300_000));
    expect(await runUntil(clock, () => got === 300_000, 20_000)).toBe(true);
    const u = a.net.createUdpSocket();
    u.on('error', () => {});
    u.bind(5000);
    await runFor(clock, 1);
    u.send(Buffer.from('to a closed port'), 4444, '198.18.0.2'); // b answers with ICMP port unreachable
    await runFor(clock, 3000, 10);
    (a.lower as PcapDevice).close();

    const hdr = fs.readFileSync(file).subarray(0, 24);
    expect(hdr.readUInt32LE(0)).toBe(0xa1b2c3d4);
    expect(hdr.readUInt32LE(20)).toBe(LINKTYPE_ETHERNET);

    const phs = tshark(['-r', file, '-q', '-z', 'io,phs']);
    for (const proto of ['eth', 'arp', 'ip', 'igmp', 'icmp', 'tcp', 'udp']) expect(phs).toMatch(new RegExp(`^\\s*${proto}\\s+frames:\\d+`, 'm'));
    const bad = tshark(['-r', file, '-Y', '_ws.malformed || _ws.expert.severity >= error']);
    expect(bad.trim()).toBe('');
    const lines = tshark(['-r', file, '-Y', 'arp || igmp || icmp', '-T', 'fields', '-e', '_ws.col.Protocol', '-e', '_ws.col.Info']);
    expect(lines).toMatch(/ARP\tARP Announcement for 198\.18\.0\.1/);
    expect(lines).toMatch(/ARP\tWho has 198\.18\.0\.2\? Tell 198\.18\.0\.1/);
    expect(lines).toMatch(/ARP\t198\.18\.0\.2 is at 02:00:c6:12:00:02/);
    expect(lines).toMatch(/IGMPv2\tMembership Report group 239\.1\.2\.3/);
    expect(lines).toMatch(/ICMP\tDestination unreachable \(Port unreachable\)/);
    // TCP segments the stack sent with partial checksums are recorded completed: tshark verifies them.
    const tcpBad = tshark(['-r', file, '-o', 'tcp.check_checksum:TRUE', '-Y', 'tcp.checksum.status == 0']);
    expect(tcpBad.trim()).toBe('');
  }, 60_000);
});
