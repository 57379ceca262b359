/**
 * The stack as a port of a real Linux bridge, through a real TAP device, with real
 * Linux peers on the same segment (a namespace with a veth into the bridge, like a VM's
 * NIC) and behind a Linux router: arping, ping, curl, a 10 MB SHA-checked echo, iperf3
 * both ways, the kernel's neighbour table, `faultstack neigh`, EHOSTUNREACH, the gateway
 * and PMTU through the router, malformed frames from scapy, two stacks on one bridge,
 * IGMP seen by the bridge's snooping, and tshark over the Ethernet capture.
 *
 *   ns sw:  bridge brA  <- TAP of stack 1 (198.18.0.2, --gateway 198.18.0.254, --join 239.1.2.3)
 *                       <- TAP of stack 2 (198.18.0.3)
 *                       <- veth -- ns vm: 198.18.0.1/24 (no route but the connected one)
 *                       <- veth -- ns rt: 198.18.0.254/24, forwarding -- 1280-byte link -- ns far: 198.18.5.2
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, StackProcess, repoRoot } from '../../lab/lab';

const S1 = '198.18.0.2';
const S1_MAC = '02:00:c6:12:00:02';
const S2 = '198.18.0.3';
const VM = '198.18.0.1';
const FAR = '198.18.5.2';
const clients = path.join(repoRoot(), 'lab', 'clients');
const MB10 = 10 * 1000 * 1000;
const PY = '/usr/bin/python3';

let lab: Lab;
let sw: string;
let vm: string;
let far: string;
let br: string;
let vmDev: string;
let vmPort: string;
let stack1: StackProcess;
let tmp: string;
let pcapFile: string;
const ctl1 = () => path.join(tmp, 's1.sock');
const ctl2 = () => path.join(tmp, 's2.sock');

beforeAll(async () => {
  lab = await Lab.create('eth');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-eth-'));
  pcapFile = path.join(tmp, 's1.pcap');
  sw = await lab.addNamespace('sw');
  vm = await lab.addNamespace('vm');
  await lab.addNamespace('rt');
  far = await lab.addNamespace('far');
  br = await lab.bridge('sw');
  ({ dev: vmDev, port: vmPort } = await lab.vethToBridge('vm', 'sw', br, { addr: `${VM}/24` }));
  await lab.vethToBridge('rt', 'sw', br, { addr: '198.18.0.254/24' });
  // The router's egress toward far carries 1280 bytes; far itself has 1500 (so its MSS lets the
  // stack send full-sized segments, which the router refuses with fragmentation needed).
  const toFar = await lab.veth('rt', 'far', { addrA: '198.18.5.1/24', addrB: `${FAR}/24` });
  await lab.ip('rt', 'link', 'set', toFar.devA, 'mtu', '1280');
  await lab.sysctl('rt', 'net.ipv4.ip_forward', 1);
  await lab.ip('far', 'route', 'add', 'default', 'via', '198.18.5.1');
  stack1 = await lab.startStack('sw', [
    '--tap',
    lab.ifname('t1'),
    '--bridge',
    br,
    '--addr',
    `${S1}/24`,
    '--gateway',
    '198.18.0.254',
    '--join',
    '239.1.2.3',
    '--control',
    ctl1(),
    '--pcap-wire',
    pcapFile,
    '--services',
    'echo,discard,http,iperf3',
  ]);
}, 90_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const sh = (ns: string, cmd: string, timeoutMs = 60_000) => lab.exec(ns, 'bash', ['-c', cmd], { timeoutMs });

async function stats(
  control: string,
): Promise<{ link: { counters: Record<string, number>; mac: string }; counters: Record<string, number>; device: Record<string, number> }> {
  const r = await lab.cli(sw, ['stats', '--json', '--control', control], { timeoutMs: 15_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('a faultstack on a Linux bridge, real peers on the segment', () => {
  test('the ready line says TAP, MAC and bridge; the TAP is a port of the bridge', async () => {
    expect(stack1.readyLine).toContain(`on TAP ${lab.ifname('t1')} (mac ${S1_MAC}, port of bridge ${br}, gateway 198.18.0.254`);
    const ports = await sh(sw, `ip -j link show master ${br}`);
    expect((JSON.parse(ports.stdout) as { ifname: string }[]).map((p) => p.ifname)).toContain(lab.ifname('t1'));
    // No routes on the kernel side but the connected subnet.
    const routes = await sh(vm, 'ip -4 route show');
    expect(routes.stdout.trim()).toBe(`198.18.0.0/24 dev ${vmDev} proto kernel scope link src ${VM}`);
  });

  test('arping gets ARP replies with the stack MAC', async () => {
    const r = await sh(vm, `arping -c 3 -w 5 -I ${vmDev} ${S1}`, 20_000);
    expect(r.stdout).toMatch(/3 packets transmitted, 3 packets received/);
    expect(r.stdout).toContain(`from ${S1_MAC} (${S1})`);
  }, 30_000);

  test('ping, and the kernel neighbour table shows the stack MAC', async () => {
    const r = await sh(vm, `ping -c 5 -i 0.2 -W 2 ${S1}`);
    expect(r.stdout).toMatch(/5 packets transmitted, 5 received/);
    const big = await sh(vm, `ping -c 2 -i 0.2 -W 2 -s 3000 ${S1}`); // fragmented both ways
    expect(big.stdout).toMatch(/2 packets transmitted, 2 received/);
    const n = await sh(vm, `ip -j neigh show ${S1} dev ${vmDev}`);
    const rows = JSON.parse(n.stdout) as { dst: string; lladdr?: string; state: string[] }[];
    expect(rows.length).toBe(1);
    expect(rows[0]!.lladdr).toBe(S1_MAC);
    expect(['REACHABLE', 'STALE', 'DELAY', 'PROBE']).toContain(rows[0]!.state[0]);
  }, 30_000);

  test('curl: the status page and 1 MB', async () => {
    const page = await sh(vm, `curl -sS --max-time 10 http://${S1}/`);
    expect(page.code).toBe(0);
    expect(page.stdout).toMatch(/faultstack/i);
    const bytes = await sh(vm, `curl -sS --max-time 20 -o /dev/null -w '%{http_code} %{size_download}' http://${S1}/bytes/1000000`);
    expect(bytes.stdout.trim()).toBe('200 1000000');
  }, 40_000);

  test('10 MB echoed over the bridge: no error, SHA-256 intact', async () => {
    const d0 = (await stats(ctl1())).device;
    const r = await lab.exec(vm, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', S1, '7', String(MB10)], { timeoutMs: 90_000 });
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { error?: string; receivedBytes: number; receivedSha: string; sentSha: string };
    expect(j.error).toBeUndefined();
    expect(r.code).toBe(0);
    expect(j.receivedBytes).toBe(MB10);
    expect(j.receivedSha).toBe(j.sentSha);
    // The echo's super-segments went out through the TAP's writer thread (--tx-thread on).
    const d1 = (await stats(ctl1())).device;
    expect(d1.txDeferred - d0.txDeferred).toBeGreaterThan(50);
    expect(d1.txDrops + d1.txErrors).toBe(0);
  }, 120_000);

  test('iperf3 both ways', async () => {
    for (const reverse of [false, true]) {
      const r = await sh(vm, `iperf3 -c ${S1} -t 2 -J ${reverse ? '-R' : ''}`, 40_000);
      const doc = JSON.parse(r.stdout) as { error?: string; end: { sum_received: { bits_per_second: number; bytes: number } } };
      expect(doc.error).toBeUndefined();
      expect(r.code).toBe(0);
      expect(doc.end.sum_received.bytes).toBeGreaterThan(10_000_000);
    }
  }, 90_000);

  test('faultstack neigh lists the kernel peer with its MAC, like ip neigh', async () => {
    const vmMac = JSON.parse((await sh(vm, `ip -j link show ${vmDev}`)).stdout)[0].address as string;
    const human = await lab.cli(sw, ['neigh', '--control', ctl1()]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^${VM.replace(/\./g, '\\.')} dev ${lab.ifname('t1')} lladdr ${vmMac} (REACHABLE|STALE|DELAY|PROBE)$`, 'm'));
    const json = JSON.parse((await lab.cli(sw, ['neigh', '--json', '--control', ctl1()])).stdout) as {
      mac: string;
      entries: { dst: string; lladdr: string }[];
    };
    expect(json.mac).toBe(S1_MAC);
    expect(json.entries.find((e) => e.dst === VM)?.lladdr).toBe(vmMac);
  }, 30_000);

  test('connect to an address nobody has: EHOSTUNREACH after ARP gives up (3 requests, 3 s), and a FAILED entry', async () => {
    const t0 = Date.now();
    const r = await lab.cli(sw, ['connect', '198.18.0.77:80', '--control', ctl1()], { timeoutMs: 30_000 });
    const ms = Date.now() - t0;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/EHOSTUNREACH/);
    expect(ms).toBeGreaterThanOrEqual(2900);
    expect(ms).toBeLessThan(10_000);
    const n = await lab.cli(sw, ['neigh', '--control', ctl1()]);
    expect(n.stdout).toMatch(/^198\.18\.0\.77 dev \S+ +FAILED$/m);
    const ev = await lab.cli(sw, ['events', '--json', '--control', ctl1()]);
    expect(ev.stdout).toContain('neigh-failed');
  }, 40_000);

  test('through the Linux router: the gateway is the next hop, and PMTU discovery learns the 1280-byte link', async () => {
    const p = await sh(far, `ping -c 3 -i 0.2 -W 2 ${S1}`);
    expect(p.stdout).toMatch(/3 packets transmitted, 3 received/);
    const r = await sh(far, `curl -sS --max-time 30 -o /dev/null -w '%{http_code} %{size_download}' http://${S1}/bytes/300000`, 40_000);
    expect(r.stdout.trim()).toBe('200 300000');
    const routes = JSON.parse((await lab.cli(sw, ['routes', '--json', '--control', ctl1()])).stdout) as {
      hosts: { dest: string; mtu: number }[];
      networks: { dest: string; via?: string }[];
    };
    expect(routes.hosts).toContainEqual(expect.objectContaining({ dest: FAR, mtu: 1280 }));
    expect(routes.networks).toContainEqual(expect.objectContaining({ dest: '0.0.0.0/0', via: '198.18.0.254' }));
    // The stack never asked ARP for the far host: only for its gateway.
    const n = JSON.parse((await lab.cli(sw, ['neigh', '--json', '--control', ctl1()])).stdout) as { entries: { dst: string }[] };
    expect(n.entries.map((e) => e.dst)).toContain('198.18.0.254');
    expect(n.entries.map((e) => e.dst)).not.toContain(FAR);
  }, 60_000);

  test('the bridge learnt our IGMPv2 membership (snooping) on the TAP port', async () => {
    const r = await sh(sw, `bridge -j mdb show dev ${br}`);
    const doc = JSON.parse(r.stdout) as { mdb: { port: string; grp: string }[] }[];
    const entries = doc.flatMap((d) => d.mdb ?? []);
    expect(entries).toContainEqual(expect.objectContaining({ port: lab.ifname('t1'), grp: '239.1.2.3' }));
  }, 20_000);

  test('malformed frames from scapy are counted and dropped; the stack answers afterwards', async () => {
    const st0 = await stats(ctl1());
    const before = st0.link.counters;
    const script = `
from scapy.all import Ether, ARP, IP, ICMP, Raw, sendp
import sys
iface, dst = sys.argv[1], sys.argv[2]
src = open('/sys/class/net/%s/address' % iface).read().strip()
arp = bytes(ARP(op=1, hwsrc=src, psrc='${VM}', pdst='${S1}'))
frames = [
  Ether(dst=dst, src=src, type=0x0806) / Raw(arp[:4] + bytes([8, 4]) + arp[6:]),    # hardware length 8
  Ether(dst=dst, src=src, type=0x0806) / Raw(arp[:5] + bytes([16]) + arp[6:]),      # protocol length 16
  Ether(dst=dst, src=src, type=0x0806) / Raw(arp[:20]),                              # cut short
  Ether(dst=dst, src=src, type=0x0806) / Raw(arp[:6] + bytes([0, 9]) + arp[8:]),    # operation 9
  Ether(dst=dst, src=src, type=0x0030) / Raw(b'\\xaa\\xaa\\x03' + b'x' * 45),            # IEEE 802.3 length field
  Ether(dst=dst, src=src, type=0x88b5) / Raw(b'x' * 46),                             # local experimental EtherType
  # Valid IPv4 inside (this kernel's bridge runs br_netfilter, which drops bad IPv4 headers in transit):
  Ether(dst='02:00:00:00:00:99', src=src) / IP(src='${VM}', dst='${S1}') / ICMP(),  # our address, somebody else's MAC (flooded)
  Ether(dst='01:00:5e:7f:00:01', src=src) / IP(src='${VM}', dst='239.127.0.1', ttl=1) / ICMP(),  # a group nobody here joined
]
sendp(frames, iface=iface, verbose=0)
print(len(frames))
`;
    const r = await lab.exec(vm, PY, ['-c', script, vmDev, S1_MAC], { timeoutMs: 30_000 });
    expect(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => !/WARNING|warn/i.test(l))
        .join('\n'),
    ).toBe('');
    expect(r.stdout.trim()).toBe('8');
    let after = before;
    let st = st0;
    for (let i = 0; i < 50; i++) {
      st = await stats(ctl1());
      after = st.link.counters;
      if (after.EthInOtherHost > before.EthInOtherHost && after.EthInUnknownEtherType > before.EthInUnknownEtherType) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const d = (k: string) => after[k]! - before[k]!;
    expect(d('ArpInBadLengths')).toBe(2);
    expect(d('ArpInTruncated')).toBe(1);
    expect(d('ArpInBadOperation')).toBe(1);
    expect(d('ArpInErrors')).toBe(4);
    expect(d('EthInNotEthernetII')).toBe(1);
    expect(d('EthInUnknownEtherType')).toBe(1);
    expect(d('EthInOtherHost')).toBeGreaterThanOrEqual(1);
    expect(d('EthInMcastNotJoined')).toBeGreaterThanOrEqual(1);
    expect(d('ArpOutReplies')).toBe(0);
    expect(st.counters.IcmpInEchos).toBe(st0.counters.IcmpInEchos); // the echo to another MAC was not ours
    const p = await sh(vm, `ping -c 2 -i 0.2 -W 2 ${S1}`);
    expect(p.stdout).toMatch(/2 packets transmitted, 2 received/);
  }, 60_000);

  test('two stacks on one bridge reach each other, and the kernel peer reaches both', async () => {
    const s2 = await lab.startStack('sw', ['--tap', lab.ifname('t2'), '--bridge', br, '--addr', `${S2}/24`, '--control', ctl2(), '--services', 'http']);
    try {
      expect(s2.readyLine).toContain('mac 02:00:c6:12:00:03');
      for (const addr of [S1, S2]) {
        const r = await sh(vm, `curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://${addr}/bytes/100000`);
        expect(r.stdout.trim()).toBe('200');
      }
      // Stack 2 opens a connection to stack 1 and stack 1 to stack 2: ARP between two userspace stacks.
      const c21 = await lab.cli(sw, ['connect', `${S1}:80`, '--control', ctl2(), '--json'], { timeoutMs: 20_000 });
      expect(c21.code, c21.stderr).toBe(0);
      expect(JSON.parse(c21.stdout).connected).toBe(true);
      const c12 = await lab.cli(sw, ['connect', `${S2}:80`, '--control', ctl1(), '--json'], { timeoutMs: 20_000 });
      expect(c12.code, c12.stderr).toBe(0);
      const n2 = JSON.parse((await lab.cli(sw, ['neigh', '--json', '--control', ctl2()])).stdout) as { entries: { dst: string; lladdr: string }[] };
      expect(n2.entries.find((e) => e.dst === S1)?.lladdr).toBe(S1_MAC);
    } finally {
      await s2.kill();
    }
    // Its TAP went with it; the lab's bridge stays (faultstack did not make it).
    const links = await sh(sw, 'ip -o link show');
    expect(links.stdout).not.toContain(lab.ifname('t2'));
    expect(links.stdout).toContain(br);
  }, 60_000);

  test('a multi-queue TAP (--queues 2, IFF_MULTI_QUEUE with the virtio header) carries four iperf3 streams', async () => {
    const s = await lab.startStack('sw', [
      '--tap',
      lab.ifname('t4'),
      '--bridge',
      br,
      '--addr',
      '198.18.0.4/24',
      '--queues',
      '2',
      '--control',
      path.join(tmp, 's4.sock'),
      '--services',
      'iperf3',
    ]);
    try {
      const d = await sh(sw, `ip -d link show dev ${lab.ifname('t4')}`);
      expect(d.stdout).toMatch(/tun type tap .*vnet_hdr on multi_queue numqueues 2/);
      const r = await sh(vm, 'iperf3 -c 198.18.0.4 -t 2 -P 4 -J', 40_000);
      const doc = JSON.parse(r.stdout) as { error?: string; end: { sum_received: { bytes: number } } };
      expect(doc.error).toBeUndefined();
      expect(doc.end.sum_received.bytes).toBeGreaterThan(10_000_000);
      const st = JSON.parse((await lab.cli(sw, ['stats', '--json', '--control', path.join(tmp, 's4.sock')])).stdout) as {
        device: { queues: number; rxPackets: number };
      };
      expect(st.device.queues).toBe(2);
    } finally {
      await s.kill();
    }
  }, 60_000);

  test('tshark reads the Ethernet capture: ARP, IGMP and IP, nothing malformed', async () => {
    await stack1.kill();
    const phs = await lab.exec(null, 'tshark', ['-r', pcapFile, '-q', '-z', 'io,phs'], { timeoutMs: 60_000 });
    expect(phs.code, phs.stderr).toBe(0);
    expect(phs.stdout).toMatch(/^eth\s+frames:/m);
    expect(phs.stdout).toMatch(/^\s+arp\s+frames:\d+/m);
    expect(phs.stdout).toMatch(/^\s+ip\s+frames:\d+/m);
    expect(phs.stdout).toMatch(/^\s+igmp\s+frames:\d+/m);
    expect(phs.stdout).toMatch(/^\s+tcp\s+frames:\d+/m);
    // What tshark calls malformed are only the frames scapy crafted to be so, from the VM's MAC; none of ours.
    const vmMac = JSON.parse((await sh(vm, `ip -j link show ${vmDev}`)).stdout)[0].address as string;
    const bad = await lab.exec(null, 'tshark', ['-r', pcapFile, '-Y', '_ws.malformed || _ws.expert.severity >= error', '-T', 'fields', '-e', 'eth.src'], {
      timeoutMs: 60_000,
    });
    expect(bad.code).toBe(0);
    const sources = bad.stdout.split('\n').filter(Boolean);
    expect(sources.length).toBeGreaterThanOrEqual(3); // the scapy ARP frames with bad lengths, cut short
    expect(new Set(sources)).toEqual(new Set([vmMac]));
    const mine = await lab.exec(
      null,
      'tshark',
      ['-r', pcapFile, '-Y', `eth.src == ${S1_MAC} && (arp || igmp)`, '-T', 'fields', '-e', '_ws.col.Protocol', '-e', '_ws.col.Info'],
      { timeoutMs: 60_000 },
    );
    expect(mine.stdout).toMatch(/ARP\tARP Announcement for 198\.18\.0\.2/);
    expect(mine.stdout).toMatch(/IGMPv2\tMembership Report group 239\.1\.2\.3/);
    expect(mine.stdout).toMatch(/ARP\t198\.18\.0\.2 is at 02:00:c6:12:00:02/);
  }, 90_000);

  test('--bridge naming a device that is not a bridge: one line, and no TAP left behind', async () => {
    const r = await lab.cli(sw, ['run', '--tap', lab.ifname('t5'), '--bridge', vmPort, '--addr', '198.18.8.2/24', '--control', path.join(tmp, 's5.sock')], {
      timeoutMs: 20_000,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `faultstack: cannot start the stack on ${lab.ifname('t5')}: --bridge ${vmPort}: a device of that name exists and is not a bridge (it is a veth device); pick another name or remove it\n`,
    );
    const links = await sh(sw, 'ip -o link show');
    expect(links.stdout).not.toContain(lab.ifname('t5'));
  }, 30_000);

  test('--bridge with a new name creates the bridge and removes it at shutdown', async () => {
    const name = lab.ifname('nb');
    const s = await lab.startStack('sw', [
      '--tap',
      lab.ifname('t3'),
      '--bridge',
      name,
      '--addr',
      '198.18.7.2/24',
      '--control',
      path.join(tmp, 's3.sock'),
      '--services',
      'none',
    ]);
    expect(s.readyLine).toContain(`port of bridge ${name} (created)`);
    const kind = await sh(sw, `ip -j -d link show dev ${name}`);
    expect(JSON.parse(kind.stdout)[0].linkinfo.info_kind).toBe('bridge');
    await s.kill();
    expect(s.exitCode).toBe(0);
    const gone = await sh(sw, `ip link show dev ${name}`);
    expect(gone.code).not.toBe(0);
  }, 40_000);
});
