/**
 * KB 297040 with real Linux peers: the stack (NT4 profile, SynAttackProtect 1) opens a
 * TCP connection itself (`faultstack connect`, the article's Telnet) to 198.18.0.99,
 * an address the kernel side of the TUN link silently drops (it is nobody's address
 * and the namespace does not forward). Short lab timers: TcpInitialRttMs 200 and
 * TcpMaxConnectRetransmissions 2, so the attempt ends after 0.2 + 0.4 + 0.8 = 1.4 s.
 *
 * Buggy: afterwards the stack answers nothing (ping from the kernel fails, a running
 * echo session stops, a new connection is not answered) while its control socket
 * still works: `stats` shows the lock, its holder and since when, `events` the
 * lock-taken-not-released event, and `unlock` brings everything back.
 * Hotfixed: `connect` reports ETIMEDOUT and ping and the echo session carry on.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, LabProcess, StackProcess, repoRoot } from '../../lab/lab';

const STACK = '198.18.0.2';
const NOWHERE = '198.18.0.99';
const clients = path.join(repoRoot(), 'lab', 'clients');
const HOLDER = `failure path of the active open to ${NOWHERE}:80 (SYN retransmissions exhausted)`;

let lab: Lab;
let tmp: string;

beforeAll(async () => {
  lab = await Lab.create('297');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-kb297040-'));
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

interface Setup {
  ns: string;
  stack: StackProcess;
  cli(args: string[], timeoutMs?: number): ReturnType<Lab['exec']>;
  stats(): Promise<Record<string, any>>;
  ping(count?: number): Promise<{ sent: number; received: number }>;
  ticker: LabProcess;
  echoes(): number[];
  ipInAddrErrors(): Promise<number>;
}

async function setup(name: string, mode: 'buggy' | 'hotfixed'): Promise<Setup> {
  const ns = await lab.addNamespace(name);
  const control = path.join(tmp, `${name}.sock`);
  const stack = await lab.startStack(ns, [
    '--tun',
    lab.ifname(name),
    '--addr',
    `${STACK}/24`,
    '--host-addr',
    '198.18.0.1/24',
    '--services',
    'echo',
    '--control',
    control,
    '--profile',
    'nt4-sp6a',
    '--fault',
    `kb297040=${mode}`,
    '--param',
    'SynAttackProtect=1',
    '--param',
    'TcpInitialRttMs=200',
    '--param',
    'TcpMaxConnectRetransmissions=2',
  ]);
  const cli = (args: string[], timeoutMs = 20_000) => lab.cli(ns, [...args, '--control', control], { timeoutMs });
  const stats = async () => {
    const r = await cli(['stats', '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Record<string, any>;
  };
  const ping = async (count = 3) => {
    const r = await lab.exec(ns, 'ping', ['-c', String(count), '-i', '0.2', '-W', '1', STACK], { timeoutMs: 15_000 });
    const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    return { sent: Number(m![1]), received: Number(m![2]) };
  };
  // An echo session from the kernel that runs through the whole test.
  const ticker = lab.spawn(ns, process.execPath, [path.join(clients, 'echo-ticker.js'), STACK, '7', '100']);
  await ticker.waitFor(/"echo":3\b/, { timeoutMs: 10_000 });
  const echoes = () => [...ticker.stdout.matchAll(/"echo":(\d+)/g)].map((m) => Number(m[1]));
  const ipInAddrErrors = async () => {
    const snmp = (await lab.exec(ns, 'cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Ip:'));
    const names = snmp[0]!.split(/\s+/),
      values = snmp[1]!.split(/\s+/);
    return Number(values[names.indexOf('InAddrErrors')]);
  };
  return { ns, stack, cli, stats, ping, ticker, echoes, ipInAddrErrors };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('KB 297040 buggy (SynAttackProtect 1): a failed connect hangs the stack', () => {
  test('connect to an address that does not answer: no outcome, ping fails, the echo session stalls, stats names the holder; unlock brings it back', async () => {
    const s = await setup('b', 'buggy');
    expect((await s.ping()).received).toBe(3);
    const dropsBefore = await s.ipInAddrErrors();

    const t0 = Date.now();
    const c = await s.cli(['connect', `${NOWHERE}:80`]);
    const took = Date.now() - t0;
    // The attempt never reports its own failure: the CLI gives up after the SYN schedule
    // (1.4 s) plus 2 s, and says why.
    expect(c.code).toBe(1);
    expect(c.stderr).toContain(`no outcome within 3400 ms (the connection-table lock is held by the ${HOLDER}`);
    expect(took).toBeGreaterThanOrEqual(3_300);
    // The kernel received the SYN and its two retransmissions for an address that is not its own, and dropped them.
    expect((await s.ipInAddrErrors()) - dropsBefore).toBeGreaterThanOrEqual(3);

    // The stack answers nothing any more.
    expect((await s.ping()).received).toBe(0);
    const before = s.echoes().length;
    await sleep(1_000);
    expect(s.echoes().length).toBe(before);
    const fresh = await lab.exec(s.ns, 'bash', ['-c', `timeout 2 bash -c '</dev/tcp/${STACK}/7' && echo connected || echo failed`]);
    expect(fresh.stdout.trim()).toBe('failed');

    // The control plane still answers, and explains it.
    const st = await s.stats();
    expect(st.lock).toMatchObject({ name: 'tcp-connection-table', held: true, holder: HOLDER });
    expect(st.lock.heldForMs).toBeGreaterThan(2_000);
    expect(Date.parse(st.lock.since)).toBeGreaterThan(t0);
    expect(st.lock.blockedPackets).toBeGreaterThan(3);
    expect(st.counters.FsConnTableLockedDrops).toBe(st.lock.blockedPackets);
    expect(st.faults.kb297040).toBe('buggy');
    const human = await s.cli(['stats']);
    expect(human.stdout).toContain(`tcp-connection-table: HELD by ${HOLDER} since`);
    const ev = await s.cli(['events', '--json']);
    const events = ev.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const taken = events.filter((e) => e.kind === 'lock-taken-not-released');
    expect(taken.length).toBe(1);
    expect(taken[0]).toMatchObject({ fault: 'kb297040', data: { lock: 'tcp-connection-table', holder: HOLDER } });

    // Released by hand: ping answers again and the echo session resumes where it stopped.
    const u = await s.cli(['unlock']);
    expect(u.code).toBe(0);
    expect(u.stdout).toContain(`released the connection-table lock held by ${HOLDER}`);
    expect((await s.ping()).received).toBe(3);
    const resumedFrom = s.echoes().length;
    await s.ticker.waitFor(new RegExp(`"echo":${Math.max(...s.echoes(), 0) + 5}\\b`), { timeoutMs: 15_000 });
    expect(s.echoes().length).toBeGreaterThan(resumedFrom);
    // Every line came back, in order, none lost in the hang.
    const got = s.echoes();
    expect(got).toEqual(got.map((_, i) => i + 1));
    expect((await s.stats()).lock.held).toBe(false);
    const after = (await s.cli(['events', '--json'])).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(after.some((e) => e.kind === 'lock-released' && e.data.holder === HOLDER)).toBe(true);
    // Unlock again: nothing to release.
    expect((await s.cli(['unlock'])).stdout).toContain('not held');
    s.ticker.end();
  }, 90_000);
});

describe('KB 297040 hotfixed: the failure is reported and nothing hangs', () => {
  test('connect reports ETIMEDOUT after the SYN schedule; ping and the echo session keep working; the lock is free', async () => {
    const s = await setup('h', 'hotfixed');
    const t0 = Date.now();
    const c = await s.cli(['connect', `${NOWHERE}:80`]);
    const took = Date.now() - t0;
    expect(c.code).toBe(1);
    expect(c.stderr.trim()).toBe(`faultstack connect ${NOWHERE}:80: connect ETIMEDOUT ${NOWHERE}:80`);
    // 0.2 + 0.4 + 0.8 s of SYN schedule, plus the CLI's own start-up.
    expect(took).toBeGreaterThanOrEqual(1_400);
    expect(took).toBeLessThan(3_300);
    expect((await s.ping()).received).toBe(3);
    const before = s.echoes().length;
    await sleep(1_000);
    expect(s.echoes().length).toBeGreaterThan(before + 5);
    const st = await s.stats();
    expect(st.lock).toMatchObject({ held: false, holder: null, acquisitions: 1, blockedPackets: 0 });
    expect(st.counters.TcpAttemptFails).toBe(1);
    expect(st.counters.FsConnTableLockedDrops).toBe(0);
    const events = (await s.cli(['events', '--json'])).stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(events.filter((e) => e.fault === 'kb297040')).toEqual([]);
    // Switched to buggy at run time, the next failed attempt hangs the stack.
    expect((await s.cli(['fault', 'set', 'conntable-hang', 'buggy'])).code).toBe(0);
    const c2 = await s.cli(['connect', `${NOWHERE}:81`, '--timeout', '3']);
    expect(c2.stderr).toContain('the connection-table lock is held');
    expect((await s.ping(2)).received).toBe(0);
    expect((await s.cli(['unlock'])).code).toBe(0);
    expect((await s.ping(2)).received).toBe(2);
    s.ticker.end();
  }, 90_000);
});
