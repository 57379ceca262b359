/**
 * KB 903927 with real Linux peers: bursts of mutual-TLS clients (Node's TLS over the
 * kernel's TCP, in a lab namespace) against the stack's mtls service (TCP 5061, listen
 * backlog MtlsListenBacklog, one accept every MtlsAcceptIntervalMs), and a bounded SYN
 * flood from spoofed lab sources (lab/synflood.ts).
 *
 * - SynAttackProtect 0: the SYN that finds the backlog full is refused: clients see
 *   ECONNREFUSED; nobody is reset.
 * - SynAttackProtect 2 (Server 2003 SP1): once TcpMaxPortsExhausted is exceeded the
 *   handshake completes first and the application is told afterwards: the clients
 *   connect, send their ClientHello, and are reset.
 * - Memory: heap and Buffer memory after a forced GC (`stats --json --gc`: heapUsedAfterGc and
 *   arrayBuffersAfterGc) against the number of reset connections: a buggy slope of tens
 *   of kilobytes per reset (the connection, its first flight, two 16.5 KiB record
 *   buffers of its negotiation state), a hotfixed slope near zero.
 * - A SYN flood against a listener whose backlog is larger than TcpMaxHalfOpen triggers
 *   protection by TcpMaxHalfOpen; the flood's half-open connections hold backlog slots,
 *   and legitimate clients are reset after their handshake.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, StackProcess, repoRoot } from '../../lab/lab';

const STACK = '198.18.0.2';
const clients = path.join(repoRoot(), 'lab', 'clients');
const synflood = path.join(repoRoot(), 'dist', 'lab', 'synflood.js');

let lab: Lab;
let tmp: string;

beforeAll(async () => {
  lab = await Lab.create('903');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-kb903927-'));
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

interface Burst {
  count: number;
  refused: number;
  reset: number;
  served: number;
  other: number;
  errors: Record<string, number>;
  resetBeforeConnectEvent: number;
  resetFlightBytes: number;
  ms: number;
}

async function setup(name: string, args: string[]) {
  const ns = await lab.addNamespace(name);
  const control = path.join(tmp, `${name}.sock`);
  const certs = path.join(tmp, `${name}-certs`);
  const stack: StackProcess = await lab.startStack(
    ns,
    ['--tun', lab.ifname(name), '--addr', `${STACK}/24`, '--host-addr', '198.18.0.1/24', '--services', 'mtls', '--control', control, ...args],
    { env: { FAULTSTACK_CERT_DIR: certs } },
  );
  const cli = (a: string[], timeoutMs = 20_000) => lab.cli(ns, [...a, '--control', control], { timeoutMs });
  const stats = async () => {
    const r = await cli(['stats', '--json', '--gc']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Record<string, any>;
  };
  const events = async () => {
    const r = await cli(['events', '--json']);
    return r.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { kind: string; fault?: string; message: string; data?: any });
  };
  const burst = async (n: number): Promise<Burst> => {
    const r = await lab.exec(ns, process.execPath, [path.join(clients, 'tls-burst.js'), STACK, '5061', certs, String(n)], { timeoutMs: 60_000 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    expect(line, r.stderr).toMatch(/^\{/);
    return JSON.parse(line) as Burst;
  };
  return { ns, stack, cli, stats, events, burst };
}

/** Least-squares slope of y against x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n,
    my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0,
    den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return num / den;
}

describe('KB 903927: what a client of a full backlog sees', () => {
  test('SynAttackProtect 0: connection refused at the SYN; nothing is reset', async () => {
    const s = await setup('off', ['--param', 'SynAttackProtect=0', '--param', 'MtlsListenBacklog=4', '--param', 'MtlsAcceptIntervalMs=500']);
    const b = await s.burst(40);
    expect(b.other, JSON.stringify(b.errors)).toBe(0);
    expect(b.reset).toBe(0);
    expect(b.refused).toBeGreaterThanOrEqual(30);
    expect(b.served).toBeGreaterThanOrEqual(4);
    expect(b.refused + b.served).toBe(40);
    const st = await s.stats();
    const l = st.listeners.find((x: { port: number }) => x.port === 5061);
    expect(l).toMatchObject({ backlog: 4, refusedSyns: b.refused, resetAfterHandshake: 0 });
    expect(st.counters.FsBacklogResets).toBe(0);
    expect(st.counters.FsSynProtectTriggered).toBe(0);
    expect(st.counters.TcpExtListenOverflows).toBe(b.refused);
    expect((await s.events()).filter((e) => e.fault === 'kb903927')).toEqual([]);
  }, 60_000);

  test('SynAttackProtect 2 (Server 2003 SP1 defaults): past TcpMaxPortsExhausted the clients connect, send their ClientHello, and are reset', async () => {
    const s = await setup('on', ['--fault', 'kb903927=hotfixed', '--param', 'MtlsListenBacklog=4', '--param', 'MtlsAcceptIntervalMs=500']);
    const st0 = await s.stats();
    expect(st0.params).toMatchObject({ SynAttackProtect: 2, TcpMaxPortsExhausted: 5 });
    const b = await s.burst(40);
    expect(b.other, JSON.stringify(b.errors)).toBe(0);
    // The first SYNs that found the backlog full were refused until the count of
    // refusals exceeded TcpMaxPortsExhausted (5); from the sixth on, protection.
    expect(b.refused).toBe(5);
    expect(b.reset).toBeGreaterThanOrEqual(20);
    expect(b.served).toBeGreaterThanOrEqual(4);
    expect(b.refused + b.reset + b.served).toBe(40);
    // Most of the reset clients saw their connect succeed and wrote their ClientHello first.
    expect(b.reset - b.resetBeforeConnectEvent).toBeGreaterThan(b.reset / 2);
    expect(b.resetFlightBytes).toBeGreaterThan(200 * (b.reset - b.resetBeforeConnectEvent));
    const st = await s.stats();
    const l = st.listeners.find((x: { port: number }) => x.port === 5061);
    expect(l).toMatchObject({ refusedSyns: 5, resetAfterHandshake: b.reset });
    expect(st.counters.FsBacklogResets).toBe(b.reset);
    const ev = await s.events();
    const triggered = ev.filter((e) => e.kind === 'syn-protection-triggered');
    expect(triggered.length).toBeGreaterThanOrEqual(1);
    expect(triggered[0]!.data).toMatchObject({ threshold: 'TcpMaxPortsExhausted', value: 6, limit: 5, port: 5061 });
    const resets = ev.filter((e) => e.kind === 'backlog-reset');
    expect(resets.length).toBe(b.reset);
    expect(resets[0]!.message).toMatch(/reset after a completed handshake: backlog 4 full when the application was told/);
    // The first flight the stack had received when it reset: what the clients wrote.
    expect(resets.reduce((sum, e) => sum + e.data.bytesReceived, 0)).toBeGreaterThan(200 * (b.reset - b.resetBeforeConnectEvent));
  }, 60_000);
});

describe('KB 903927: memory against reset connections, buggy and hotfixed', () => {
  const ROUNDS = 3;
  const PER_ROUND = 150;

  async function measure(mode: 'buggy' | 'hotfixed') {
    const s = await setup(mode === 'buggy' ? 'mb' : 'mh', [
      '--fault',
      `kb903927=${mode}`,
      '--param',
      'TcpMaxPortsExhausted=0',
      '--param',
      'MtlsListenBacklog=2',
      '--param',
      'MtlsAcceptIntervalMs=500',
    ]);
    // A warm-up burst first: TLS contexts, JIT code and the like are allocated once.
    const warm = await s.burst(50);
    expect(warm.reset).toBeGreaterThan(30);
    const xs: number[] = [],
      heap: number[] = [],
      total: number[] = [];
    const sample = async () => {
      const st = await s.stats();
      xs.push(st.counters.FsBacklogResets);
      heap.push(st.heapUsedAfterGc);
      total.push(st.heapUsedAfterGc + st.arrayBuffersAfterGc);
      return st;
    };
    await sample();
    for (let i = 0; i < ROUNDS; i++) {
      const b = await s.burst(PER_ROUND);
      expect(b.refused).toBe(0);
      expect(b.reset).toBeGreaterThan(PER_ROUND * 0.8);
      await sample();
    }
    const st = await s.stats();
    const resets = xs[xs.length - 1]! - xs[0]!;
    const r = { s, st, resets, heapSlope: slope(xs, heap), totalSlope: slope(xs, total), xs, heap, total };
    console.log(
      `${mode}: ${resets} resets measured; heap after GC ${Math.round(r.heapSlope)} B/reset, heap + Buffers ${Math.round(r.totalSlope)} B/reset ` +
        `(${xs.map((x, i) => `${x}:${Math.round(total[i]! / 1024)}K`).join(' ')})`,
    );
    return r;
  }

  test('buggy: memory grows by tens of kilobytes per reset connection, and the counters and events account for it', async () => {
    const m = await measure('buggy');
    expect(m.resets).toBeGreaterThan(ROUNDS * PER_ROUND * 0.8);
    // The negotiation state's two record buffers alone are 2 x 16.5 KiB.
    expect(m.totalSlope).toBeGreaterThanOrEqual(25_000);
    expect(m.heapSlope).toBeGreaterThanOrEqual(1_500);
    const leak = m.st.leak;
    expect(leak.connections).toBe(m.st.counters.FsBacklogResets);
    expect(leak.freed).toBe(0);
    expect(m.st.counters.FsLeakedConnections).toBe(leak.connections);
    expect(m.st.counters.FsLeakedBytes).toBe(leak.bytes);
    // The stack's own account of what it keeps is close to what the heap shows.
    expect(leak.bytes / leak.connections).toBeGreaterThan(30_000);
    const ev = await m.s.events();
    const retained = ev.filter((e) => e.kind === 'leak-retained');
    expect(retained.length).toBe(leak.connections);
    expect(retained[retained.length - 1]!.data).toMatchObject({ totalBytes: leak.bytes, what: ['control block', 'receive buffer', 'application state'] });
  }, 120_000);

  test('hotfixed: the same resets leave memory flat (under a tenth of the buggy floor per reset), and nothing is kept', async () => {
    const m = await measure('hotfixed');
    expect(m.resets).toBeGreaterThan(ROUNDS * PER_ROUND * 0.8);
    expect(m.totalSlope).toBeLessThan(2_500);
    const leak = m.st.leak;
    expect(leak).toMatchObject({ connections: 0, bytes: 0 });
    expect(leak.freed).toBe(m.st.counters.FsBacklogResets);
    expect(m.st.counters.FsLeakedConnections).toBe(0);
    const ev = await m.s.events();
    expect(ev.filter((e) => e.kind === 'leak-retained')).toEqual([]);
    expect(ev.filter((e) => e.kind === 'backlog-reset').length).toBe(m.st.counters.FsBacklogResets);
  }, 120_000);
});

describe('KB 903927: a SYN flood triggers protection', () => {
  test('spoofed SYNs past TcpMaxHalfOpen: protection triggers by TcpMaxHalfOpen, the flood holds the backlog, TLS clients are reset after their handshake', async () => {
    const s = await setup('fl', [
      '--fault',
      'kb903927=buggy',
      '--param',
      'TcpMaxHalfOpen=32',
      '--param',
      'TcpMaxPortsExhausted=1000',
      '--param',
      'MtlsListenBacklog=64',
      '--param',
      'MtlsAcceptIntervalMs=200',
    ]);
    const snmp = async () => {
      const lines = (await lab.exec(s.ns, 'cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Ip:'));
      return Number(lines[1]!.split(/\s+/)[lines[0]!.split(/\s+/).indexOf('InAddrErrors')]);
    };
    const dropped0 = await snmp();
    const f = await lab.exec(
      s.ns,
      process.execPath,
      [synflood, '--target', `${STACK}:5061`, '--source', '198.18.100.0/24', '--count', '400', '--duration', '5', '--rate', '2000', '--json', '--quiet'],
      { timeoutMs: 20_000 },
    );
    expect(f.code, f.stderr).toBe(0);
    const flood = JSON.parse(f.stdout.trim().split('\n').pop()!);
    expect(flood.sent).toBe(400);
    await new Promise((r) => setTimeout(r, 300));
    const st = await s.stats();
    const l = st.listeners.find((x: { port: number }) => x.port === 5061);
    expect(l.synQueue).toBeGreaterThan(300);
    expect(st.counters.FsSynProtectTriggered).toBe(1);
    const ev = await s.events();
    const [trig] = ev.filter((e) => e.kind === 'syn-protection-triggered');
    expect(trig!.data).toMatchObject({ threshold: 'TcpMaxHalfOpen', value: 33, limit: 32, port: 5061 });
    // The SYN-ACKs went to addresses that do not exist: the kernel side dropped them.
    expect((await snmp()) - dropped0).toBeGreaterThanOrEqual(400);
    // During the flood: the 33 SYNs told to the application before protection hold
    // their slots; of 64, 31 are left for real clients; the rest are reset.
    const b = await s.burst(80);
    expect(b.other, JSON.stringify(b.errors)).toBe(0);
    expect(b.refused).toBe(0);
    expect(b.reset).toBeGreaterThanOrEqual(30);
    expect(b.served).toBeGreaterThanOrEqual(20);
    expect(b.reset + b.served).toBe(80);
    const st2 = await s.stats();
    expect(st2.listeners.find((x: { port: number }) => x.port === 5061).resetAfterHandshake).toBe(b.reset);
    expect(st2.leak.connections).toBe(b.reset);
  }, 60_000);
});
