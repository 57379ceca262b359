/**
 * A Network Load Balancing cluster of three faultstack hosts on a real Linux bridge,
 * with real Linux clients: 30 client addresses whose connections each land on exactly
 * one host (the owner of the address's bucket); a host killed with SIGKILL, the others
 * converging without it while their connections carry on; tshark decoding the
 * heartbeats as MS NLB; and, per cluster mode, what this kernel's bridge does with the
 * frames to the cluster (a bystander's tcpdump counts what reaches a port that is no host).
 *
 *   ns cl: bridge <- TAPs of hosts 1-3 (198.18.70.11-13, cluster 198.18.70.100)
 *                 <- veth -- ns cli: 198.18.70.5 and 30 client addresses 198.18.70.130-159
 *                 <- veth -- ns by:  198.18.70.6, a bystander (tcpdump)
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, type LabProcess, type StackProcess } from '../../lab/lab';
import { AffinityCode, bucketOf } from '../../stack/nlb/hash';
import { parseIpv4 } from '../../stack/wire/addr';

const VIP = '198.18.70.100';
const CLIENTS = Array.from({ length: 30 }, (_, i) => `198.18.70.${130 + i}`);
const hostAddr = (h: number) => `198.18.70.${10 + h}`;

let lab: Lab;
let tmp: string;
let br: string;
let byDev: string;
let hosts: StackProcess[] = [];
const ctl = (h: number) => path.join(tmp, `h${h}.sock`);

/** Holds 3 connections per client address to the cluster's echo port; "echo WORD" on stdin sends WORD on each and reports who answered. */
const HOLDER = `
const net = require('net'), rl = require('readline');
const [vip, ...addrs] = process.argv.slice(1);
const socks = [];
let open = 0;
for (const a of addrs) for (let k = 0; k < 3; k++) {
  const s = net.connect({ host: vip, port: 7, localAddress: a }, () => { if (++open === addrs.length * 3) console.log(JSON.stringify({ ready: open })); });
  s.on('error', (e) => { s.err = e.code; });
  s.on('close', () => { s.closed = true; });
  s.buf = '';
  s.on('data', (d) => { s.buf += d; });
  s.addr = a;
  socks.push(s);
}
rl.createInterface({ input: process.stdin }).on('line', (l) => {
  const [cmd, word] = l.split(' ');
  if (cmd !== 'echo') return;
  for (const s of socks) if (!s.closed) s.write(word);
  setTimeout(() => console.log(JSON.stringify({ echoed: socks.map((s) => ({ addr: s.addr, ok: s.buf.includes(word), closed: !!s.closed, err: s.err || null })) })), 1500);
});
`;

async function startHosts(mode: string, extra: string[] = []): Promise<void> {
  hosts = await Promise.all(
    [1, 2, 3].map((h) =>
      lab.startStack('cl', [
        '--tap',
        lab.ifname(`t${h}`),
        '--bridge',
        br,
        '--addr',
        `${hostAddr(h)}/24`,
        '--nlb',
        VIP,
        '--nlb-priority',
        String(h),
        '--nlb-mode',
        mode,
        '--services',
        'echo,http',
        '--control',
        ctl(h),
        ...extra,
      ]),
    ),
  );
  await waitFor(async () => (await Promise.all([1, 2, 3].map((h) => query(h)))).every((q) => q.state.startsWith('Converged') && q.hosts.length === 3), 15_000);
}

async function stopHosts(): Promise<void> {
  await Promise.all(hosts.map((h) => h.kill(5000)));
  hosts = [];
}

async function nlb<T>(h: number, sub: string): Promise<T> {
  const r = await lab.cli(null, ['nlb', sub, '--json', '--control', ctl(h)], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`nlb ${sub} on host ${h}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
const query = (h: number) => nlb<{ state: string; hosts: number[]; text: string }>(h, 'query');
const display = (h: number) => nlb<{ rules: { map: number[] }[]; counters: Record<string, number> }>(h, 'display');

async function waitFor(cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await cond()) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The client addresses each host serves on its echo port (from its connection rows). */
async function peersByHost(): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>();
  for (let h = 1; h <= 3; h++) {
    if (!hosts[h - 1]?.running) continue;
    const r = await lab.cli(null, ['stats', '--all', '--port', '7', '--json', '--control', ctl(h)], { timeoutMs: 15_000 });
    if (r.code !== 0) throw new Error(`stats on host ${h}: ${r.stderr}`);
    const rows = (JSON.parse(r.stdout) as { connections: { peer: string; state: string }[] }).connections;
    out.set(
      h,
      rows.filter((x) => x.state === 'ESTABLISHED').map((x) => x.peer.split(':')[0]!),
    );
  }
  return out;
}

function holderLines(p: LabProcess): Record<string, unknown>[] {
  return p.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  lab = await Lab.create('nlb');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-nlb-'));
  await lab.addNamespace('cl');
  await lab.addNamespace('cli');
  await lab.addNamespace('by');
  br = await lab.bridge('cl');
  const { dev } = await lab.vethToBridge('cli', 'cl', br, { addr: '198.18.70.5/24' });
  for (const a of CLIENTS) await lab.ip('cli', 'addr', 'add', `${a}/24`, 'dev', dev);
  ({ dev: byDev } = await lab.vethToBridge('by', 'cl', br, { addr: '198.18.70.6/24' }));
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('NLB: three faultstack hosts on a Linux bridge', () => {
  let holder: LabProcess;

  test('30 client addresses x 3 connections: every address on exactly one host, the owner of its bucket', async () => {
    await startHosts('unicast');
    const map = (await display(1)).rules[0]!.map;
    expect((await display(2)).rules[0]!.map).toEqual(map);
    holder = lab.spawn('cli', process.execPath, ['-e', HOLDER, VIP, ...CLIENTS]);
    await holder.waitFor(/"ready":90/, { timeoutMs: 20_000 });
    const by = await peersByHost();
    const where = new Map<string, number[]>();
    for (const [h, peers] of by) for (const a of peers) where.set(a, [...(where.get(a) ?? []), h]);
    for (const a of CLIENTS) {
      const hs = where.get(a) ?? [];
      expect(hs, a).toHaveLength(3);
      expect(new Set(hs).size, `${a} is on hosts ${hs.join(',')}`).toBe(1);
      expect(hs[0], a).toBe(map[bucketOf(AffinityCode.Single, parseIpv4(a)!, 0, map.length)]);
    }
    expect([...by.values()].every((p) => p.length > 0)).toBe(true);
  }, 60_000);

  test("host 2 killed: the others converge without it after AliveMsgTolerance heartbeats; its buckets move; the others' connections carry on", async () => {
    const before = (await display(1)).rules[0]!.map;
    const t0 = Date.now();
    hosts[1]!.signal('SIGKILL');
    await waitFor(async () => {
      const q = await Promise.all([query(1), query(3)]);
      return q.every((x) => x.state.startsWith('Converged') && x.hosts.join() === '1,3');
    }, 15_000);
    const ms = Date.now() - t0;
    expect(ms).toBeGreaterThan(4000); // 5 missed periods of 1 s (the first may be almost over)
    expect(ms).toBeLessThan(9000);
    const after = (await display(1)).rules[0]!.map;
    expect((await display(3)).rules[0]!.map).toEqual(after);
    for (let b = 0; b < after.length; b++) {
      if (before[b] === 2) expect([1, 3]).toContain(after[b]);
      else expect(after[b]).toBe(before[b]);
    }
    const q1 = await query(1);
    expect(q1.text).toBe('Host 1 has converged as DEFAULT with the following host(s) as part of the cluster: 1, 3');
    // The connections on hosts 1 and 3 still echo; host 2's are gone.
    holder.write('echo still-here\n');
    await holder.waitFor(/"echoed"/, { timeoutMs: 10_000 });
    const echoed = holderLines(holder).find((l) => l.echoed)!.echoed as { addr: string; ok: boolean }[];
    for (const e of echoed) {
      const owner = before[bucketOf(AffinityCode.Single, parseIpv4(e.addr)!, 0, before.length)];
      expect(e.ok, `${e.addr} (on host ${owner})`).toBe(owner !== 2);
    }
    holder.end();
    await holder.kill(2000);
    // Host 2's clients connect again, to the new owners.
    const again = lab.spawn('cli', process.execPath, ['-e', HOLDER, VIP, ...CLIENTS]);
    await again.waitFor(/"ready":90/, { timeoutMs: 20_000 });
    const by = await peersByHost();
    for (const [h, peers] of by) for (const a of peers) expect(after[bucketOf(AffinityCode.Single, parseIpv4(a)!, 0, after.length)], a).toBe(h);
    await again.kill(2000);
    const events = await lab.cli(null, ['events', '--json', '--control', ctl(1)], { timeoutMs: 10_000 });
    expect(events.stdout).toMatch(/host 2 \(198\.18\.70\.12\) left the cluster: missed 5 heartbeats/);
    expect(events.stdout).toMatch(/nlb-convergence-finished/);
    await stopHosts();
  }, 60_000);

  test('tshark decodes the heartbeats on the bridge as MS NLB, with nothing malformed', async () => {
    const pcap = path.join(tmp, 'hb.pcap');
    const dump = lab.spawn('by', 'tcpdump', ['-i', byDev, '-n', '-U', '-w', pcap, 'ether proto 0x886f']);
    await dump.waitFor(/listening on/, { timeoutMs: 10_000 });
    await startHosts('unicast');
    await new Promise((r) => setTimeout(r, 2500));
    await dump.kill(2000);
    const fields = await lab.exec(
      null,
      'tshark',
      [
        '-r',
        pcap,
        '-T',
        'fields',
        '-e',
        '_ws.col.Protocol',
        '-e',
        'msnlb.signature',
        '-e',
        'msnlb.my_host_ip',
        '-e',
        'msnlb.cluster_ip',
        '-e',
        'msnlb.host_name',
      ],
      { check: true },
    );
    const lines = fields.stdout.trim().split('\n');
    expect(lines.length).toBeGreaterThan(10);
    expect(lines.every((l) => l.startsWith('MS NLB\t'))).toBe(true);
    const membership = lines.filter((l) => l.includes('0xc0de01bf'));
    expect(new Set(membership.map((l) => l.split('\t')[2]))).toEqual(new Set(['1', '2', '3']));
    expect(membership.every((l) => l.split('\t')[3] === VIP)).toBe(true);
    expect(lines.some((l) => l.endsWith('\tfaultstack-2'))).toBe(true);
    const bad = await lab.exec(null, 'tshark', ['-r', pcap, '-Y', '_ws.malformed || _ws.expert.severity >= warning'], { check: true });
    expect(bad.stdout.trim()).toBe('');
    await stopHosts();
  }, 60_000);

  test("every mode reaches every host through the bridge, and the client resolves the cluster to the mode's MAC (the bystander port is recorded)", async () => {
    const seen: Record<string, { bystander: number; perHost: number[]; lladdr: string }> = {};
    for (const mode of ['unicast', 'multicast', 'igmp']) {
      await startHosts(mode);
      await lab.exec('cli', 'ip', ['neigh', 'flush', 'all']);
      const mac = mode === 'unicast' ? '02:bf:c6:12:46:64' : mode === 'multicast' ? '03:bf:c6:12:46:64' : '01:00:5e:7f:46:64';
      const pcap = path.join(tmp, `by-${mode}.pcap`);
      const dump = lab.spawn('by', 'tcpdump', ['-i', byDev, '-n', '-U', '-w', pcap, `ether dst ${mac} and tcp`]);
      await dump.waitFor(/listening on/, { timeoutMs: 10_000 });
      const before = await Promise.all([1, 2, 3].map(async (h) => (await display(h)).counters.NlbPacketsIn ?? 0));
      for (const a of CLIENTS.slice(0, 10)) {
        const r = await lab.exec('cli', 'curl', ['-s', '--max-time', '5', '--interface', a, '-o', '/dev/null', '-w', '%{http_code}', `http://${VIP}/`], {
          timeoutMs: 10_000,
        });
        expect(r.stdout, `${mode} from ${a}`).toBe('200');
      }
      await new Promise((r) => setTimeout(r, 300));
      await dump.kill(2000);
      const n = (await lab.exec(null, 'tshark', ['-r', pcap, '-T', 'fields', '-e', 'frame.number'], { check: true })).stdout
        .trim()
        .split('\n')
        .filter(Boolean).length;
      const after = await Promise.all([1, 2, 3].map(async (h) => (await display(h)).counters.NlbPacketsIn ?? 0));
      const neigh = (await lab.exec('cli', 'ip', ['-j', 'neigh', 'show', VIP], { check: true })).stdout;
      seen[mode] = { bystander: n, perHost: after.map((x, i) => x - before[i]!), lladdr: (JSON.parse(neigh) as { lladdr: string }[])[0]?.lladdr ?? '' };
      await stopHosts();
    }
    console.log(`bridge flooding per mode: ${JSON.stringify(seen)}`);
    // Linux believes an ARP reply with a group MAC (unlike RFC 1812 routers): the client resolves the cluster to it.
    expect(seen.unicast!.lladdr).toBe('02:bf:c6:12:46:64');
    expect(seen.multicast!.lladdr).toBe('03:bf:c6:12:46:64');
    expect(seen.igmp!.lladdr).toBe('01:00:5e:7f:46:64');
    for (const mode of ['unicast', 'multicast', 'igmp']) {
      const s = seen[mode]!;
      // Every host saw every client packet (10 curls, several packets each), whatever the mode.
      expect(Math.min(...s.perHost), `${mode}: ${JSON.stringify(s)}`).toBeGreaterThan(40);
      expect(Math.max(...s.perHost) - Math.min(...s.perHost), `${mode}: ${JSON.stringify(s)}`).toBeLessThan(5);
    }
    // What a bystander port of the bridge sees is the kernel bridge's business, not the
    // stack's, and it was not repeatable here (all frames in every mode in one run, none
    // in any mode in the next: docs/nlb.md): it is recorded (flooding.json, the log line
    // above), not asserted.
    fs.writeFileSync(path.join(tmp, 'flooding.json'), JSON.stringify(seen));
  }, 90_000);
});
