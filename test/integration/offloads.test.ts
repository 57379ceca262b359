/**
 * The TUN offload paths with real traffic: the kernel in a namespace the test creates
 * sends and receives through faultstack's TUN device.
 *
 *  - offloads on: the kernel's GSO super-segments arrive as one unit
 *    (TcpExtTCPGSOSegsIn), the stack sends TSO super-segments (TcpExtTCPGSOSegsOut) that
 *    the kernel cuts and checksums, and the data is intact both ways;
 *  - checksum flags: segments the kernel vouched for are not checked again and none
 *    fails; a segment with a bad checksum and no flag (a raw socket's, which the kernel
 *    passes on as it is) is still caught, with offloads on and off;
 *  - offloads off (plain TUN): the addon checks receive checksums and joins the kernel's
 *    MSS-sized segments of a flow that arrive together (receive coalescing, rxGroMerged),
 *    data intact, also with iperf3 -P 4; `--gro off` hands every packet on as it came;
 *  - fallback: --offloads off (plain TUN), and a kernel that refuses TUNSETOFFLOAD or
 *    accepts checksum offload only (FAULTSTACK_TUN_OFFLOAD_MASK stands in for it): the
 *    stack works with MSS-sized segments (tsoSegments 1).
 */
import { afterAll, describe, expect, test } from 'vitest';
import * as path from 'node:path';
import { repoRoot } from '../../lab/lab';
import { HOST, STACK, startTunLab, type TunLab } from './helpers/tun-lab';

const clients = path.join(repoRoot(), 'lab', 'clients');
const MB = 1000 * 1000;

const labs: TunLab[] = [];

afterAll(async () => {
  for (const l of labs) await l.cleanup();
});

type Env = TunLab;

async function startEnv(tag: string, runArgs: string[], env: NodeJS.ProcessEnv = {}): Promise<Env> {
  const t = await startTunLab(tag, { services: 'echo,discard,http,iperf3', args: runArgs, env });
  labs.push(t);
  return t;
}

async function stats(e: Env): Promise<{
  counters: Record<string, number>;
  device: Record<string, number>;
  offloads: { accepted: string[]; vnetHdr: boolean; tsoSegments: number; txChecksumOffload: boolean };
}> {
  const r = await e.lab.cli(e.ns, ['stats', '--json', '--control', e.stack.controlPath], { timeoutMs: 20_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** The kernel's TCP counters in the namespace (Tcp: InCsumErrors and friends). */
async function kernelTcp(e: Env): Promise<Record<string, number>> {
  const r = await e.lab.exec(e.ns, 'cat', ['/proc/net/snmp'], { check: true });
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('Tcp:'));
  const h = lines[0]!.split(/\s+/).slice(1);
  const v = lines[1]!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(h.map((k, i) => [k, v[i]!]));
}

/** Sends `bytes` random bytes to the echo service and hashes what comes back. */
async function echoRoundTrip(e: Env, bytes: number): Promise<{ sentSha: string; receivedSha: string; receivedBytes: number; error?: string }> {
  const r = await e.lab.exec(e.ns, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', String(bytes)], { timeoutMs: 90_000 });
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
}

/** The echo round trip of `bytes`, asserted whole: no error, every byte back, the same hash. */
async function expectEchoIntact(e: Env, bytes: number): Promise<void> {
  const r = await echoRoundTrip(e, bytes);
  expect(r.error).toBeUndefined();
  expect(r.receivedBytes).toBe(bytes);
  expect(r.receivedSha).toBe(r.sentSha);
}

/**
 * A TCP SYN to the stack's http port with a checksum that is wrong by one, from a raw
 * socket (IP_HDRINCL): the kernel routes it to the TUN device as it is, with no
 * checksum flag, so only the stack's own check can catch it.
 */
async function sendBadChecksumSyn(e: Env, count: number): Promise<void> {
  const py = `
import socket, struct
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = socket.inet_aton('${HOST}'), socket.inet_aton('${STACK}')
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(${count}):
    sport = 40000 + i
    tcp = struct.pack('!HHIIBBHHH', sport, 80, 1000 + i, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = src + dst + struct.pack('!BBH', 0, 6, len(tcp))
    good = csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack('!H', (good + 1) & 0xffff) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), i, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    s.sendto(ip + tcp, ('${STACK}', 0))
`;
  const r = await e.lab.exec(e.ns, 'python3', ['-c', py], { timeoutMs: 20_000 });
  expect(r.code, r.stderr).toBe(0);
}

async function expectBadChecksumCaught(e: Env): Promise<void> {
  const before = (await stats(e)).counters;
  await sendBadChecksumSyn(e, 5);
  let after = before;
  for (let i = 0; i < 50 && after.TcpInCsumErrors < before.TcpInCsumErrors + 5; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = (await stats(e)).counters;
  }
  expect(after.TcpInCsumErrors - before.TcpInCsumErrors).toBe(5);
  // Dropped, not answered: no connection was opened for them.
  expect(after.TcpPassiveOpens).toBe(before.TcpPassiveOpens);
}

describe('offloads on: large segments both ways', () => {
  let e: Env;
  test('the kernel accepted checksum and TSO offloads', async () => {
    e = await startEnv('offon', []);
    expect(e.stack.readyLine).toMatch(/offloads csum,tso4/);
    const s = await stats(e);
    expect(s.offloads.vnetHdr).toBe(true);
    expect(s.offloads.tsoSegments).toBeGreaterThan(1);
    expect(s.offloads.txChecksumOffload).toBe(true);
  }, 60_000);

  test('GSO super-segments in, TSO super-segments out, data intact, no checksum errors', async () => {
    const k0 = await kernelTcp(e);
    const before = (await stats(e)).counters;
    await expectEchoIntact(e, 20 * MB);
    const s = await stats(e);
    const d = (k: string) => s.counters[k]! - before[k]!;
    // In: the kernel's GSO packets were taken as single segments larger than the MSS.
    expect(d('TcpExtTCPGSOSegsIn')).toBeGreaterThan(0);
    expect(s.device.rxOffloadPackets).toBeGreaterThan(0);
    expect(s.device.rxBytes / s.device.rxPackets).toBeGreaterThan(1500);
    // Out: the echo went back as super-segments the kernel cut (each counts its MSS pieces).
    expect(d('TcpExtTCPGSOSegsOut')).toBeGreaterThan(0);
    expect(s.device.txBytes / s.device.txPackets).toBeGreaterThan(1500);
    // ... written by the device's writer thread (--tx-thread on, the default), nothing lost.
    expect(s.device.txDeferred).toBeGreaterThan(100);
    expect(s.device.txDrops + s.device.txErrors).toBe(0);
    // Checksums: nothing failed on either side.
    expect(d('TcpInCsumErrors')).toBe(0);
    expect(d('IpInHdrErrors')).toBe(0);
    const k1 = await kernelTcp(e);
    expect(k1.InCsumErrors - k0.InCsumErrors).toBe(0);
    expect(k1.InErrs - k0.InErrs).toBe(0);
  }, 120_000);

  test('HTTP download as TSO super-segments arrives complete', async () => {
    const r = await e.lab.exec(
      e.ns,
      'curl',
      ['-sS', '--max-time', '30', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://${STACK}/bytes/5000000`],
      { timeoutMs: 40_000 },
    );
    expect(r.stdout.trim()).toBe('200 5000000');
  }, 60_000);

  test('--tx-thread off: every write from the stack thread, data intact', async () => {
    const t = await startEnv('txoff', ['--tx-thread', 'off']);
    await expectEchoIntact(t, 10 * MB);
    const s = await stats(t);
    expect(s.device.txDeferred).toBe(0);
    expect(s.device.txBytes / s.device.txPackets).toBeGreaterThan(1500);
    expect(s.device.txDrops + s.device.txErrors).toBe(0);
  }, 120_000);

  test("a bad checksum without the kernel's flag is still caught", async () => {
    await expectBadChecksumCaught(e);
  }, 60_000);
});

describe('offloads off: plain TUN, MSS-sized segments, software checksums', () => {
  let e: Env;
  test('no virtio header, no TSO', async () => {
    e = await startEnv('offoff', ['--offloads', 'off']);
    expect(e.stack.readyLine).toMatch(/offloads none/);
    const s = await stats(e);
    expect(s.offloads.vnetHdr).toBe(false);
    expect(s.offloads.tsoSegments).toBe(1);
    expect(s.offloads.txChecksumOffload).toBe(false);
  }, 60_000);

  test('data intact both ways; the stack sends nothing larger than the MTU, and joins what arrives together (receive coalescing)', async () => {
    const before = await stats(e);
    await expectEchoIntact(e, 10 * MB);
    const s = await stats(e);
    expect(s.counters.TcpExtTCPGSOSegsOut - before.counters.TcpExtTCPGSOSegsOut).toBe(0);
    // The kernel's MSS-sized segments of one flow that one read burst found together were
    // joined in the addon: the stack saw super-segments (GSO TCPv4) where the kernel sent many.
    const merged = s.device.rxGroMerged - before.device.rxGroMerged;
    console.log(`offloads off, 10 MB each way: ${merged} segments joined into ${s.device.rxOffloadPackets - before.device.rxOffloadPackets} packets`);
    expect(merged).toBeGreaterThan(1000);
    expect(s.device.rxOffloadPackets - before.device.rxOffloadPackets).toBeGreaterThan(0);
    expect(s.counters.TcpExtTCPGSOSegsIn - before.counters.TcpExtTCPGSOSegsIn).toBeGreaterThan(0);
    expect(s.counters.TcpInCsumErrors - before.counters.TcpInCsumErrors).toBe(0);
  }, 120_000);

  test('iperf3 -P 4 through receive coalescing: the streams flow, no checksum error', async () => {
    const before = await stats(e);
    const r = await e.lab.exec(e.ns, 'iperf3', ['-c', STACK, '-p', '5201', '-t', '2', '-P', '4', '-J'], { timeoutMs: 60_000 });
    expect(r.code, r.stdout.slice(-400) + r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { end: { sum_sent: { bytes: number; retransmits: number }; sum_received: { bytes: number } } };
    const s = await stats(e);
    console.log(
      `offloads off, iperf3 -P 4: ${j.end.sum_received.bytes} bytes, ${j.end.sum_sent.retransmits} retransmits, ${s.device.rxGroMerged - before.device.rxGroMerged} joined`,
    );
    expect(j.end.sum_received.bytes).toBeGreaterThan(50 * MB);
    expect(s.device.rxGroMerged - before.device.rxGroMerged).toBeGreaterThan(1000);
    expect(s.counters.TcpInCsumErrors - before.counters.TcpInCsumErrors).toBe(0);
  }, 90_000);

  test('a segment with a corrupted checksum is counted and dropped', async () => {
    await expectBadChecksumCaught(e);
  }, 60_000);

  test('--gro off: every packet reaches the stack as the kernel sent it, data intact', async () => {
    const g = await startEnv('grooff', ['--offloads', 'off', '--gro', 'off']);
    await expectEchoIntact(g, 5 * MB);
    const s = await stats(g);
    expect(s.device.rxGroMerged).toBe(0);
    expect(s.device.rxOffloadPackets).toBe(0);
    expect(s.counters.TcpExtTCPGSOSegsIn).toBe(0);
    expect(s.device.rxCsumVerified).toBeGreaterThan(1000);
  }, 120_000);

  test('joined segments through an inbound impairment: cut back into segments before it, some dropped, data intact', async () => {
    const g = await startEnv('groimp', ['--offloads', 'off', '--impair', 'in --proto tcp loss 1% seed 3']);
    await expectEchoIntact(g, 5 * MB);
    const s = await stats(g);
    console.log(
      `offloads off, GRO, in loss 1%: ${s.device.rxGroMerged} joined, ${s.device.gsoSegmentedIn} segments cut back, ${s.counters.TcpRetransSegs} resent by the stack`,
    );
    expect(s.device.rxGroMerged).toBeGreaterThan(1000);
    // The impairment saw the kernel's segments, not the super-segments: it cut them back.
    expect(s.device.gsoSegmentedIn).toBeGreaterThan(1000);
    expect(s.counters.TcpInCsumErrors).toBe(0);
    // ... and dropped some of them (the kernel sent those again).
    const l = await g.lab.cli(g.ns, ['impair', 'list', '--json', '--control', g.stack.controlPath], { timeoutMs: 20_000 });
    const rows = (JSON.parse(l.stdout) as { impairments: { counters: Record<string, number> }[] }).impairments;
    expect(rows[0]!.counters.dropped).toBeGreaterThan(0);
  }, 120_000);

  test('a bad --gro value: one line saying what is valid, exit 2', async () => {
    const r = await e.lab.cli(e.ns, ['run', '--tun', 'x0', '--addr', `${STACK}/24`, '--gro', 'maybe']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--gro/);
    expect(r.stderr).toMatch(/on.*off/);
  }, 30_000);
});

describe('fallback when the kernel refuses or limits TUNSETOFFLOAD', () => {
  for (const [what, mask, expectNames] of [
    ['refused entirely', 0, /offloads none/],
    ['checksum only', 1, /offloads csum\)/],
  ] as const) {
    test(`${what}: the stack sends MSS-sized segments and the data arrives intact`, async () => {
      const e = await startEnv(mask === 0 ? 'offr' : 'offl', [], { FAULTSTACK_TUN_OFFLOAD_MASK: String(mask) });
      expect(e.stack.readyLine).toMatch(expectNames);
      const s0 = await stats(e);
      expect(s0.offloads.vnetHdr).toBe(true);
      expect(s0.offloads.tsoSegments).toBe(1);
      expect(s0.offloads.txChecksumOffload).toBe(mask === 1);
      const k0 = await kernelTcp(e);
      await expectEchoIntact(e, 10 * MB);
      const s = await stats(e);
      // Without TSO4 the kernel segments before the TUN device and so do we.
      expect(s.counters.TcpExtTCPGSOSegsIn).toBe(0);
      expect(s.counters.TcpExtTCPGSOSegsOut).toBe(0);
      expect(s.device.rxBytes / s.device.rxPackets).toBeLessThanOrEqual(1500);
      expect(s.device.txBytes / s.device.txPackets).toBeLessThanOrEqual(1500);
      expect(s.counters.TcpInCsumErrors).toBe(0);
      const k1 = await kernelTcp(e);
      expect(k1.InCsumErrors - k0.InCsumErrors).toBe(0);
      await expectBadChecksumCaught(e);
    }, 120_000);
  }
});
