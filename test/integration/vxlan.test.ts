/**
 * How a lab outgrows one machine: two namespaces stand in for two machines joined by an
 * underlay link; each has a Linux bridge and a kernel VXLAN device (RFC 7348, VNI 42,
 * UDP 4789) in it, so the two bridges are one Ethernet segment. A client (a VM) on
 * "machine 2" uses a stack on "machine 1" as if they shared a switch.
 *
 *   ns m1 ("machine 1"): br1 <- TAP of faultstack 198.18.0.2
 *                        br1 <- vxlan x1 (local 198.19.0.1, remote 198.19.0.2)
 *                        u1 198.19.0.1/24 (MTU 1550) ==== underlay veth ====
 *   ns m2 ("machine 2"): u2 198.19.0.2/24 (MTU 1550)
 *                        br2 <- vxlan x2 (local 198.19.0.2, remote 198.19.0.1)
 *                        br2 <- veth -- ns c2: 198.18.0.1/24 (the client, no routes but its own subnet)
 *
 * The underlay carries 50 bytes more than the overlay (outer IPv4 20 + UDP 8 + VXLAN 8 +
 * inner Ethernet 14), so the segment keeps a 1500-byte MTU.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, repoRoot } from '../../lab/lab';

const STACK = '198.18.0.2';
const STACK_MAC = '02:00:c6:12:00:02';
const clients = path.join(repoRoot(), 'lab', 'clients');
const MB10 = 10 * 1000 * 1000;

let lab: Lab;
let m2: string;
let c2: string;
let u2: string;
let x2: string;
let cDev: string;
let tmp: string;

async function vxlanBridge(ns: string, underlay: string, local: string, remote: string, name: string): Promise<{ br: string; vx: string }> {
  const br = await lab.bridge(ns);
  const vx = lab.ifname(name);
  await lab.ip(ns, 'link', 'add', vx, 'type', 'vxlan', 'id', '42', 'local', local, 'remote', remote, 'dstport', '4789', 'dev', underlay);
  await lab.ip(ns, 'link', 'set', vx, 'mtu', '1500');
  await lab.ip(ns, 'link', 'set', vx, 'master', br);
  await lab.ip(ns, 'link', 'set', vx, 'up');
  return { br, vx };
}

beforeAll(async () => {
  lab = await Lab.create('vxl');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-vxlan-'));
  await lab.addNamespace('m1');
  m2 = await lab.addNamespace('m2');
  c2 = await lab.addNamespace('c2');
  const under = await lab.veth('m1', 'm2', { addrA: '198.19.0.1/24', addrB: '198.19.0.2/24', mtu: 1550 });
  u2 = under.devB;
  const one = await vxlanBridge('m1', under.devA, '198.19.0.1', '198.19.0.2', 'x1');
  const two = await vxlanBridge('m2', under.devB, '198.19.0.2', '198.19.0.1', 'x2');
  x2 = two.vx;
  cDev = (await lab.vethToBridge('c2', 'm2', two.br, { addr: '198.18.0.1/24' })).dev;
  await lab.startStack('m1', [
    '--tap',
    lab.ifname('t0'),
    '--bridge',
    one.br,
    '--addr',
    `${STACK}/24`,
    '--control',
    path.join(tmp, 's.sock'),
    '--services',
    'echo,http,iperf3',
  ]);
}, 90_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const sh = (ns: string, cmd: string, timeoutMs = 60_000) => lab.exec(ns, 'bash', ['-c', cmd], { timeoutMs });

async function underlayRxBytes(): Promise<number> {
  const j = JSON.parse((await sh(m2, `ip -j -s link show ${u2}`)).stdout) as { stats64: { rx: { bytes: number } } }[];
  return j[0]!.stats64.rx.bytes;
}

describe('VXLAN: a client on machine 2 uses a stack on machine 1', () => {
  test('the client has no route but its own subnet, and reaches the stack by ARP across the VXLAN', async () => {
    const routes = await sh(c2, 'ip -4 route show');
    expect(routes.stdout.trim()).toBe(`198.18.0.0/24 dev ${cDev} proto kernel scope link src 198.18.0.1`);
    const r = await sh(c2, `ping -c 3 -i 0.2 -W 2 ${STACK}`);
    expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
    const n = JSON.parse((await sh(c2, `ip -j neigh show ${STACK}`)).stdout) as { lladdr: string }[];
    expect(n[0]?.lladdr).toBe(STACK_MAC);
    // Machine 2's bridge learnt the stack's MAC behind its VXLAN port, the VTEP of machine 1 behind that.
    const fdb = await sh(m2, `bridge fdb show dev ${x2}`);
    expect(fdb.stdout).toMatch(new RegExp(`^${STACK_MAC} master \\S+`, 'm'));
    expect(fdb.stdout).toMatch(/dst 198\.19\.0\.1/);
  }, 30_000);

  test('curl and a 10 MB SHA-checked echo cross the underlay', async () => {
    const rx0 = await underlayRxBytes();
    const c = await sh(c2, `curl -sS --max-time 20 -o /dev/null -w '%{http_code} %{size_download}' http://${STACK}/bytes/1000000`);
    expect(c.stdout.trim()).toBe('200 1000000');
    const r = await lab.exec(c2, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', String(MB10)], { timeoutMs: 120_000 });
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { error?: string; receivedBytes: number; receivedSha: string; sentSha: string };
    expect(j.error).toBeUndefined();
    expect(j.receivedBytes).toBe(MB10);
    expect(j.receivedSha).toBe(j.sentSha);
    // It really went through the VXLAN: machine 2's underlay received the download and the echo, encapsulated.
    expect((await underlayRxBytes()) - rx0).toBeGreaterThan(MB10 + 1_000_000);
  }, 150_000);

  test('iperf3 both ways over VXLAN', async () => {
    for (const reverse of [false, true]) {
      const r = await sh(c2, `iperf3 -c ${STACK} -t 2 -J ${reverse ? '-R' : ''}`, 40_000);
      const doc = JSON.parse(r.stdout) as { error?: string; end: { sum_received: { bytes: number } } };
      expect(doc.error).toBeUndefined();
      expect(doc.end.sum_received.bytes).toBeGreaterThan(1_000_000);
    }
  }, 90_000);
});
