/**
 * `faultstack run --queues 2 --shards`: one stack shard per TUN queue, each in a worker
 * thread. The kernel in a namespace the test creates spreads 16 TCP flows over the two
 * queues by their hash; every flow must come back intact, and both shards must have had
 * passive opens.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, StackProcess } from '../../lab/lab';

const STACK = '198.18.0.2';

let lab: Lab;
let ns: string;
let stack: StackProcess;
let tmp: string;

beforeAll(async () => {
  lab = await Lab.create('shards');
  ns = await lab.addNamespace('k');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-shards-'));
  stack = await lab.startStack(ns, [
    '--tun',
    lab.ifname('t'),
    '--addr',
    `${STACK}/24`,
    '--host-addr',
    '198.18.0.1/24',
    '--queues',
    '2',
    '--shards',
    '--services',
    'echo,discard,http',
    '--control',
    path.join(tmp, 'ctl.sock'),
  ]);
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// 16 concurrent connections from 16 kernel-chosen source ports, 1 MB each through echo.
const MULTI_ECHO = `
const net = require('net'), crypto = require('crypto');
const N = 16, SIZE = 1000000;
function one(i) {
  return new Promise((resolve) => {
    const data = crypto.randomBytes(SIZE);
    const sent = crypto.createHash('sha256').update(data).digest('hex');
    const got = crypto.createHash('sha256');
    let n = 0;
    const s = net.connect({ host: '${STACK}', port: 7 }, () => { s.end(data); });
    s.on('data', (d) => { got.update(d); n += d.length; });
    s.on('end', () => resolve({ i, localPort: s.localPort, bytes: n, ok: got.digest('hex') === sent }));
    s.on('error', (e) => resolve({ i, error: e.message }));
    s.setTimeout(30000, () => { s.destroy(); resolve({ i, error: 'timeout', bytes: n }); });
  });
}
Promise.all(Array.from({ length: N }, (_, i) => one(i))).then((r) => console.log(JSON.stringify(r)));
`;

describe('--queues 2 --shards', () => {
  test('the ready line says 2 shards', () => {
    expect(stack.readyLine).toMatch(/2 shards/);
  });

  test('ping answers', async () => {
    const r = await lab.exec(ns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', STACK], { timeoutMs: 20_000 });
    expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
  }, 30_000);

  test('16 echo connections carry 1 MB each intact, spread over both shards', async () => {
    const r = await lab.exec(ns, process.execPath, ['-e', MULTI_ECHO], { timeoutMs: 90_000 });
    const rows = JSON.parse(r.stdout.trim().split('\n').pop()!) as { i: number; localPort?: number; bytes?: number; ok?: boolean; error?: string }[];
    expect(rows).toHaveLength(16);
    for (const row of rows) {
      expect(row.error, JSON.stringify(row)).toBeUndefined();
      expect(row.bytes).toBe(1_000_000);
      expect(row.ok).toBe(true);
    }
    expect(new Set(rows.map((x) => x.localPort)).size).toBe(16);

    const st = JSON.parse((await lab.cli(ns, ['stats', '--json', '--gc', '--control', stack.controlPath])).stdout);
    expect(st.shards).toHaveLength(2);
    const opens = st.shards.map((s: { counters: Record<string, number> }) => s.counters.TcpPassiveOpens);
    console.log(`passive opens per shard: ${opens.join(', ')}`);
    for (const o of opens) expect(o).toBeGreaterThan(0);
    expect(st.counters.TcpPassiveOpens).toBe(opens[0] + opens[1]);
    expect(st.heapUsedAfterGc).toBeGreaterThan(0);
  }, 120_000);

  test('the control plane reaches every shard: fault and param changes, unlock, routes; neigh says why not', async () => {
    const cli = async (...args: string[]) => {
      const r = await lab.cli(ns, [...args, '--json', '--control', stack.controlPath]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    };
    expect(await cli('fault', 'set', 'kb297040', 'buggy')).toMatchObject({ id: 'kb297040', mode: 'buggy', shards: 2 });
    expect(await cli('param', 'set', 'TcpMaxHalfOpen', '123')).toMatchObject({ name: 'TcpMaxHalfOpen', value: 123, previous: 500, shards: 2 });
    const st = await cli('stats');
    expect((st.faults as Record<string, string>).kb297040).toBe('buggy');
    expect((st.params as Record<string, number>).TcpMaxHalfOpen).toBe(123);
    expect((st.listeners as { shard: number }[]).map((l) => l.shard).sort()).toEqual([0, 0, 0, 1, 1, 1]);
    const u = await cli('unlock');
    expect(u.released).toBe(false);
    expect(u.shards).toHaveLength(2);
    expect((await cli('routes')).note).toMatch(/^shard 0 of 2/);
    const neigh = await lab.cli(ns, ['neigh', '--control', stack.controlPath]);
    expect(neigh.code).not.toBe(0);
    expect(neigh.stderr).toMatch(/no link layer/);
    // Each shard's status page: its own counts, the fault modes the change gave it.
    const pages = new Set<number>();
    for (let i = 0; i < 12 && pages.size < 2; i++) {
      const r = await lab.exec(ns, 'curl', ['-sS', '--max-time', '5', '-H', 'Accept: application/json', `http://${STACK}/`], { timeoutMs: 10_000 });
      expect(r.code, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout) as { stack: { shard: number; faults: Record<string, string> } };
      expect(doc.stack.faults.kb297040).toBe('buggy');
      pages.add(doc.stack.shard);
    }
    expect([...pages].sort()).toEqual([0, 1]);
  }, 60_000);

  test('shutdown leaves no device', async () => {
    const tun = stack.tun;
    const ex = await stack.kill(8000);
    expect(ex.code).toBe(0);
    const r = await lab.exec(ns, 'ip', ['link', 'show', 'dev', tun], { timeoutMs: 10_000 });
    expect(r.code).not.toBe(0);
  }, 30_000);
});
