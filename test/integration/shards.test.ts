/**
 * `faultstack run --queues 2 --shards`: one stack shard per TUN queue, each in a worker
 * thread, with the default client steering (drivers/tun/steering.ts: an eBPF program picks
 * the queue by the peer's address). From a namespace the test creates, with extra host
 * addresses on the device:
 *   - 16 echo connections from 8 source addresses come back intact, and each shard had
 *     exactly the passive opens of the addresses clientQueue() gives it;
 *   - iperf3 -P 4 (a control and four data connections, one client) completes: with the
 *     kernel's flow hash its connections landed on different shards and it failed;
 *   - an active open from the control plane reaches a kernel listener whose address
 *     steers to shard 1 (the replies come back to the shard that opened it);
 *   - the control plane reaches every shard.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Lab, StackProcess } from '../../lab/lab';
import { STACK, startTunLab, type TunLab } from './helpers/tun-lab';
import { clientQueue } from '../../drivers/tun/steering';
import { parseIpv4 } from '../../stack/wire/addr';

let t: TunLab;
let lab: Lab;
let ns: string;
let stack: StackProcess;

beforeAll(async () => {
  t = await startTunLab('shards', { services: 'echo,discard,http,iperf3', args: ['--queues', '2', '--shards'] });
  ({ lab, ns, stack } = t);
  // Source addresses for the clients, on the kernel's side of the device.
  for (const a of SOURCES) await lab.ip(ns, 'addr', 'add', `${a}/24`, 'dev', stack.tun);
}, 60_000);

const shardOf = (a: string) => clientQueue(parseIpv4(a)!, 2);
// Eight client addresses, five that steer to shard 0 and three to shard 1: an uneven split
// that the kernel's flow hash would not give by chance.
const CANDIDATES = Array.from({ length: 40 }, (_, i) => `198.18.0.${11 + i}`);
const SOURCES = [...CANDIDATES.filter((a) => shardOf(a) === 0).slice(0, 5), ...CANDIDATES.filter((a) => shardOf(a) === 1).slice(0, 3)];

afterAll(async () => {
  await t?.cleanup();
});

// 16 concurrent connections, two from each source address, 1 MB each through echo.
const MULTI_ECHO = `
const net = require('net'), crypto = require('crypto');
const N = 16, SIZE = 1000000, SOURCES = ${JSON.stringify(SOURCES)};
function one(i) {
  return new Promise((resolve) => {
    const data = crypto.randomBytes(SIZE);
    const sent = crypto.createHash('sha256').update(data).digest('hex');
    const got = crypto.createHash('sha256');
    let n = 0;
    const src = SOURCES[i % SOURCES.length];
    const s = net.connect({ host: '${STACK}', port: 7, localAddress: src }, () => { s.end(data); });
    s.on('data', (d) => { got.update(d); n += d.length; });
    s.on('end', () => resolve({ i, src, localPort: s.localPort, bytes: n, ok: got.digest('hex') === sent }));
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

  test('16 echo connections from 8 addresses carry 1 MB each intact, each on the shard its address steers to', async () => {
    expect(SOURCES.map(shardOf)).toEqual([0, 0, 0, 0, 0, 1, 1, 1]);
    const r = await lab.exec(ns, process.execPath, ['-e', MULTI_ECHO], { timeoutMs: 90_000 });
    const rows = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      i: number;
      src: string;
      localPort?: number;
      bytes?: number;
      ok?: boolean;
      error?: string;
    }[];
    expect(rows).toHaveLength(16);
    for (const row of rows) {
      expect(row.error, JSON.stringify(row)).toBeUndefined();
      expect(row.bytes).toBe(1_000_000);
      expect(row.ok).toBe(true);
    }
    expect(new Set(rows.map((x) => `${x.src}:${x.localPort}`)).size).toBe(16);

    const st = JSON.parse((await lab.cli(ns, ['stats', '--json', '--gc', '--control', stack.controlPath])).stdout);
    expect(st.shards).toHaveLength(2);
    const opens = st.shards.map((s: { counters: Record<string, number> }) => s.counters.TcpPassiveOpens);
    console.log(`passive opens per shard: ${opens.join(', ')}`);
    // Exactly the connections of the addresses that steer to each shard: 10 and 6.
    const expected = [0, 1].map((k) => rows.filter((x) => shardOf(x.src) === k).length);
    expect(expected).toEqual([10, 6]);
    expect(opens).toEqual(expected);
    for (const o of opens) expect(o).toBeGreaterThan(0);
    expect(st.counters.TcpPassiveOpens).toBe(opens[0] + opens[1]);
    expect(st.heapUsedAfterGc).toBeGreaterThan(0);
  }, 120_000);

  test('iperf3 -P 4 completes: its control and data connections share the shard of the client', async () => {
    const r = await lab.exec(ns, 'iperf3', ['-c', STACK, '-P', '4', '-t', '2', '--connect-timeout', '5000', '--json'], { timeoutMs: 60_000 });
    const j = JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bytes: number } } };
    expect(j.error, r.stdout.slice(0, 400)).toBeUndefined();
    expect(r.code).toBe(0);
    expect(j.end?.sum_received?.bytes ?? 0).toBeGreaterThan(1_000_000);
  }, 90_000);

  test('an active open to an address that steers to shard 1 goes out from shard 1 and connects', async () => {
    const target = SOURCES.find((a) => shardOf(a) === 1)!;
    const srv = lab.spawn(ns, 'nc', ['-l', '-k', '-s', target, '-p', '7777']);
    try {
      let last = '';
      const ok = await (async () => {
        for (let i = 0; i < 50; i++) {
          const r = await lab.cli(ns, ['connect', `${target}:7777`, '--json', '--control', stack.controlPath], { timeoutMs: 20_000 });
          last = r.stdout + r.stderr;
          if (r.code === 0) return JSON.parse(r.stdout) as { connected: boolean };
          if (!/ECONNREFUSED/.test(last)) break; // nc not listening yet: try again
          await new Promise((res) => setTimeout(res, 100));
        }
        return null;
      })();
      expect(ok, last).toMatchObject({ connected: true });
    } finally {
      await srv.kill();
    }
  }, 60_000);

  test("a router's ICMP fragmentation-needed reaches the shard of the client whose flow it quotes", async () => {
    // The router's own address steers to the other shard: the program must look inside.
    const client = SOURCES.find((a) => shardOf(a) === 1)!;
    const router = CANDIDATES.find((a) => shardOf(a) === 0 && !SOURCES.includes(a))!;
    await lab.ip(ns, 'addr', 'add', `${router}/24`, 'dev', stack.tun);
    const per = async () => {
      const st = JSON.parse((await lab.cli(ns, ['stats', '--json', '--control', stack.controlPath])).stdout) as {
        shards: { counters: Record<string, number> }[];
      };
      return st.shards.map((x) => ({ icmp: x.counters.IcmpInDestUnreachs ?? 0, fragNeeded: x.counters.TcpExtPMTUFragNeeded ?? 0 }));
    };
    const before = await per();
    const py = [
      'from scapy.all import IP, ICMP, TCP, send, conf',
      'conf.verb = 0',
      `q = IP(src="${STACK}", dst="${client}", len=1500, flags="DF")/TCP(sport=80, dport=40000, flags="A")`,
      `send([IP(src="${router}", dst="${STACK}")/ICMP(type=3, code=4, nexthopmtu=1200)/bytes(q)[:28] for _ in range(3)])`,
    ].join('\n');
    const r = await lab.exec(ns, '/usr/bin/python3', ['-c', py], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    let after = before;
    for (let i = 0; i < 50; i++) {
      after = await per();
      if (after[1]!.icmp - before[1]!.icmp >= 3) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(after[1]!.icmp - before[1]!.icmp).toBe(3);
    console.log(`ICMP per shard before ${JSON.stringify(before)} after ${JSON.stringify(after)}`);
    expect(after[0]!.icmp - before[0]!.icmp).toBe(0);
  }, 60_000);

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
    expect((st.listeners as { shard: number }[]).map((l) => l.shard).sort()).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    const u = await cli('unlock');
    expect(u.released).toBe(false);
    expect(u.shards).toHaveLength(2);
    expect((await cli('routes')).note).toMatch(/^shard 0 of 2/);
    const neigh = await lab.cli(ns, ['neigh', '--control', stack.controlPath]);
    expect(neigh.code).not.toBe(0);
    expect(neigh.stderr).toMatch(/no link layer/);
    // Each shard's status page: its own counts, the fault modes the change gave it; from
    // each source address, the page of the shard the address steers to.
    for (const src of [SOURCES.find((a) => shardOf(a) === 0)!, SOURCES.find((a) => shardOf(a) === 1)!]) {
      const r = await lab.exec(ns, 'curl', ['-sS', '--max-time', '5', '--interface', src, '-H', 'Accept: application/json', `http://${STACK}/`], {
        timeoutMs: 10_000,
      });
      expect(r.code, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout) as { stack: { shard: number; faults: Record<string, string> } };
      expect(doc.stack.faults.kb297040).toBe('buggy');
      expect(doc.stack.shard).toBe(shardOf(src));
    }
  }, 60_000);

  test('shutdown leaves no device', async () => {
    const tun = stack.tun;
    const ex = await stack.kill(8000);
    expect(ex.code).toBe(0);
    const r = await lab.exec(ns, 'ip', ['link', 'show', 'dev', tun], { timeoutMs: 10_000 });
    expect(r.code).not.toBe(0);
  }, 30_000);
});
