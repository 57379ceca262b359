/**
 * faultstack's own impairments against real Linux peers through a real TUN device, in
 * namespaces the test creates: the kernel's TCP, ping, curl and nc see what the words say.
 *  - a 10 MB SHA-checked transfer each way survives 5% loss with reordering both ways
 *    (`run --impair`), and `impair list` counts the drops and reorders;
 *  - `impair add` on a running stack changes ping's loss and round trip, `impair clear`
 *    takes it back;
 *  - toxics seen by curl and nc: latency adds delay, limit_data cuts the connection after
 *    its bytes, reset_peer resets;
 *  - the captures on both sides of the impairments (--pcap, --pcap-wire), read by tshark;
 *  - bad specs: one line, exit 2.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as path from 'node:path';
import { type Lab, type StackProcess, repoRoot } from '../../lab/lab';
import { STACK, startTunLab, type TunLab } from './helpers/tun-lab';

const clients = path.join(repoRoot(), 'lab', 'clients');
const MB10 = 10 * 1000 * 1000;

let t: TunLab;
let lab: Lab;
let ns: string;
let stack: StackProcess;
let tmp: string;

beforeAll(async () => {
  t = await startTunLab('impair', { services: 'echo,discard,http' });
  ({ lab, ns, stack, tmp } = t);
}, 60_000);

afterAll(async () => {
  await t?.cleanup();
});

async function sh(n: string, cmd: string, timeoutMs = 60_000) {
  return lab.exec(n, 'bash', ['-c', cmd], { timeoutMs });
}

async function cli(args: string[], control = stack.controlPath) {
  return lab.cli(ns, [...args, '--control', control], { timeoutMs: 20_000 });
}

interface Row {
  id: number;
  spec: string;
  kind: string;
  counters: Record<string, number>;
}

async function impairAdd(words: string, control = stack.controlPath): Promise<Row> {
  const r = await cli(['impair', 'add', ...words.split(' '), '--json'], control);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Row;
}

async function impairList(control = stack.controlPath): Promise<Row[]> {
  const r = await cli(['impair', 'list', '--json'], control);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { impairments: Row[] }).impairments;
}

interface Ping {
  transmitted: number;
  received: number;
  min: number;
  avg: number;
  max: number;
}

/**
 * ping -c N -i 0.01 -W 1 (no -w: with a deadline ping keeps sending until N replies came),
 * bounded by the exec timeout; the summary lines parsed.
 */
async function ping(count: number): Promise<Ping> {
  const r = await sh(ns, `ping -n -q -c ${count} -i 0.01 -W 1 ${STACK}`, 30_000);
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  expect(m, r.stdout + r.stderr).not.toBeNull();
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)/.exec(r.stdout);
  return {
    transmitted: Number(m![1]),
    received: Number(m![2]),
    min: rtt ? Number(rtt[1]) : NaN,
    avg: rtt ? Number(rtt[2]) : NaN,
    max: rtt ? Number(rtt[3]) : NaN,
  };
}

describe('packet impairments with real peers', () => {
  test('10 MB each way, SHA-checked, through 5% loss with reordering both ways (run --impair)', async () => {
    const ns2 = await lab.addNamespace('l');
    const control = path.join(tmp, 'lossy.sock');
    const lossy = await lab.startStack(ns2, [
      '--tun',
      lab.ifname('l'),
      '--addr',
      `${STACK}/24`,
      '--services',
      'echo',
      '--control',
      control,
      '--impair',
      'in loss 5% delay 2ms 1ms reorder 25% 50% seed 1',
      '--impair',
      'out loss 5% delay 2ms 1ms reorder 25% 50% seed 2',
    ]);
    const r = await lab.exec(ns2, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', String(MB10)], { timeoutMs: 240_000 });
    const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
    if (j.error !== undefined) {
      // Say why before failing: the stack's TCP counters and the kernel's view of the same link.
      const st = JSON.parse((await lab.cli(ns2, ['stats', '--json', '--control', control])).stdout) as { counters: Record<string, number> };
      const tcp = Object.fromEntries(Object.entries(st.counters).filter(([k, v]) => /^(Tcp|Ip|Fs)/.test(k) && v !== 0));
      const nstat = await lab.exec(ns2, 'nstat', ['-a', '-z', '-j']);
      const imp = (await lab.cli(ns2, ['impair', 'list', '--json', '--control', control])).stdout;
      console.log(
        `transfer failed: ${JSON.stringify(j)}; stack counters ${JSON.stringify(tcp)}; impairments ${imp}; kernel nstat ${nstat.stdout.slice(0, 4000)}; ` +
          `stack output (tail): ${lossy.output.slice(-3000)}`,
      );
    }
    expect(j.error, r.stdout + r.stderr).toBeUndefined();
    expect(j.receivedBytes).toBe(MB10);
    expect(j.receivedSha).toBe(j.sentSha);
    const rows = (JSON.parse((await lab.cli(ns2, ['impair', 'list', '--json', '--control', control])).stdout) as { impairments: Row[] }).impairments;
    expect(rows.map((x) => x.spec)).toEqual(['in delay 2ms 1ms loss 5% reorder 25% 50% seed 1', 'out delay 2ms 1ms loss 5% reorder 25% 50% seed 2']);
    for (const row of rows) {
      const c = row.counters;
      console.log(`${row.spec}: matched ${c.matched}, dropped ${c.dropped}, reordered ${c.reordered}, delayed ${c.delayed}`);
      expect(c.dropped / c.matched).toBeGreaterThan(0.035);
      expect(c.dropped / c.matched).toBeLessThan(0.065);
      expect(c.reordered).toBeGreaterThan(0);
    }
    const stats = JSON.parse((await lab.cli(ns2, ['stats', '--json', '--control', control])).stdout);
    expect(stats.counters.TcpRetransSegs).toBeGreaterThan(0);
    console.log(`10 MB each way through 5% loss both ways: ${j.ms} ms, ${stats.counters.TcpRetransSegs} segments retransmitted by the stack`);
  }, 300_000);

  test("impair add changes ping's round trip and loss on a running stack; impair clear takes it back", async () => {
    // Round trips on a busy 2-core machine vary; the minimum is what a delay moves.
    const base = await ping(20);
    expect(base.received).toBe(20);
    expect(base.min).toBeLessThan(20);

    const delay = await impairAdd('out --proto icmp delay 50ms');
    expect(delay.spec).toMatch(/^out --proto icmp delay 50ms seed \d+$/);
    const slow = await ping(20);
    expect(slow.received).toBe(20);
    expect(slow.min).toBeGreaterThanOrEqual(50);
    expect(slow.avg).toBeLessThan(base.avg + 50 + 40);

    const loss = await impairAdd('in --proto icmp loss 50% seed 5');
    const lossy = await ping(200);
    expect(lossy.transmitted).toBe(200);
    // 200 draws at 50%: 35%..65% is more than four standard deviations either way.
    expect(lossy.received).toBeGreaterThan(70);
    expect(lossy.received).toBeLessThan(130);
    const rows = await impairList();
    const inRow = rows.find((x) => x.id === loss.id)!;
    // Every echo request the in impairment dropped is a reply ping never got.
    expect(inRow.counters.matched).toBe(200);
    expect(lossy.received).toBe(200 - inRow.counters.dropped);
    expect(rows.find((x) => x.id === delay.id)!.counters.delayed).toBeGreaterThanOrEqual(20 + lossy.received);

    const cleared = await cli(['impair', 'clear']);
    expect(cleared.code).toBe(0);
    expect(cleared.stdout).toMatch(new RegExp(`impairment ${delay.id} removed: .*\\(matched \\d+, dropped 0, delayed \\d+`));
    expect(await impairList()).toEqual([]);
    const after = await ping(20);
    expect(after.received).toBe(20);
    expect(after.min).toBeLessThan(20);

    const ev = await cli(['events']);
    expect(ev.stdout).toContain(`impairment ${delay.id} added: ${delay.spec}`);
    expect(ev.stdout).toContain(`impairment ${loss.id} removed: ${loss.spec}`);
  }, 120_000);

  test('tshark sees both sides: --pcap has what the stack sent, --pcap-wire what the kernel got 100 ms later (and the dropped request is only on the wire)', async () => {
    const ns3 = await lab.addNamespace('p');
    const stackPcap = path.join(tmp, 'stack.pcap'),
      wirePcap = path.join(tmp, 'wire.pcap');
    const p = await lab.startStack(ns3, [
      '--tun',
      lab.ifname('p'),
      '--addr',
      `${STACK}/24`,
      '--services',
      'none',
      '--control',
      path.join(tmp, 'pcap.sock'),
      '--pcap',
      stackPcap,
      '--pcap-wire',
      wirePcap,
      '--impair',
      'out --proto icmp delay 100ms',
      '--impair',
      'in --proto icmp --nth 2 loss 100%',
    ]);
    const r = await sh(ns3, `ping -n -c 4 -i 0.3 -W 2 ${STACK}`);
    expect(r.stdout).toMatch(/4 packets transmitted, 3 received/);
    await p.kill(5000); // SIGTERM: both captures flushed and closed
    const fields = async (file: string, filter: string) =>
      (await sh(ns3, `tshark -r ${file} -Y '${filter}' -T fields -e icmp.seq -e frame.time_epoch 2>/dev/null`)).stdout
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t'))
        .map(([seq, t]) => ({ seq: Number(seq), t: Number(t) }));
    const wireReq = await fields(wirePcap, 'icmp.type == 8'),
      stackReq = await fields(stackPcap, 'icmp.type == 8');
    expect(wireReq.map((x) => x.seq)).toEqual([1, 2, 3, 4]);
    expect(stackReq.map((x) => x.seq)).toEqual([1, 3, 4]);
    const wireRep = await fields(wirePcap, 'icmp.type == 0'),
      stackRep = await fields(stackPcap, 'icmp.type == 0');
    expect(stackRep.map((x) => x.seq)).toEqual([1, 3, 4]);
    expect(wireRep.map((x) => x.seq)).toEqual([1, 3, 4]);
    for (let k = 0; k < 3; k++) {
      const lag = (wireRep[k]!.t - stackRep[k]!.t) * 1000;
      expect(lag).toBeGreaterThanOrEqual(99.5);
      expect(lag).toBeLessThan(300); // a real timer, on a shared machine
    }
  }, 60_000);
});

describe('toxics seen by curl and nc', () => {
  test("latency: curl's transfer takes 300 ms more; removing the toxic takes it back", async () => {
    const time = async () => {
      const r = await sh(ns, `curl -sS --max-time 10 -o /dev/null -w '%{time_total} %{http_code}' http://${STACK}/`);
      expect(r.code, r.stderr).toBe(0);
      const [t, codeText] = r.stdout.trim().split(' ');
      expect(codeText).toBe('200');
      return Number(t);
    };
    const base = await time();
    const t = await impairAdd('downstream --port 80 latency latency=300');
    const slow = await time();
    expect(slow).toBeGreaterThanOrEqual(0.3);
    expect(slow).toBeLessThan(base + 0.3 + 0.5);
    const row = (await impairList()).find((x) => x.id === t.id)!;
    expect(row.counters.connections).toBe(1);
    expect(row.counters.delayed).toBeGreaterThan(0);
    expect((await cli(['impair', 'del', String(t.id)])).code).toBe(0);
    expect(await time()).toBeLessThan(0.3);
  }, 60_000);

  test('latency on echo, seen by nc: the reply comes half a second late', async () => {
    const t = await impairAdd('downstream --port 7 latency latency=500');
    const r = await sh(ns, `start=$(date +%s%N); printf 'hello\\n' | nc -N -w 5 ${STACK} 7; end=$(date +%s%N); echo "ms=$(( (end - start) / 1000000 ))"`);
    expect(r.stdout).toMatch(/^hello\n/);
    const ms = Number(/ms=(\d+)/.exec(r.stdout)![1]);
    expect(ms).toBeGreaterThanOrEqual(500);
    expect(ms).toBeLessThan(3000);
    await cli(['impair', 'del', String(t.id)]);
  }, 30_000);

  test('limit_data: curl gets the first 2000 bytes and a closed connection (exit 18, partial file)', async () => {
    const t = await impairAdd('downstream --port 80 limit_data bytes=2000');
    const r = await sh(ns, `curl -sS --max-time 10 -o /dev/null -w '%{size_header} %{size_download}' http://${STACK}/bytes/100000`);
    expect(r.code).toBe(18);
    expect(r.stderr).toMatch(/transfer closed with \d+ bytes remaining/);
    const [hdr, body] = r.stdout.trim().split(' ').map(Number);
    expect(hdr! + body!).toBe(2000);
    const row = (await impairList()).find((x) => x.id === t.id)!;
    expect(row.counters.closed).toBe(1);
    await cli(['impair', 'del', String(t.id)]);
  }, 30_000);

  test('limit_data upstream on echo, seen by nc: 10 bytes reach the service and come back, then the connection closes', async () => {
    const t = await impairAdd('upstream --port 7 limit_data bytes=10');
    const r = await sh(ns, `printf '0123456789abcdefghij' | nc -N -w 5 ${STACK} 7; echo " rc=$?"`);
    expect(r.stdout).toBe('0123456789 rc=0\n');
    await cli(['impair', 'del', String(t.id)]);
  }, 30_000);

  test('reset_peer: curl sees "Connection reset by peer"', async () => {
    const t = await impairAdd('downstream --port 80 reset_peer timeout=0');
    const r = await sh(ns, `curl -sS --max-time 10 -o /dev/null http://${STACK}/`);
    expect(r.code).toBe(56);
    expect(r.stderr).toMatch(/reset by peer/i);
    const row = (await impairList()).find((x) => x.id === t.id)!;
    expect(row.counters.resets).toBe(1);
    await cli(['impair', 'del', String(t.id)]);
    const ok = await sh(ns, `curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://${STACK}/`);
    expect(ok.stdout).toBe('200');
  }, 30_000);
});

describe('bad specs', () => {
  test('impair add with a bad word: one line naming it and what is valid, exit 2', async () => {
    const r = await cli(['impair', 'add', 'out', 'lose', '3%']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^faultstack impair add: "lose" is not a netem word \(did you mean loss\?\); .*netem words: limit, delay/);
    const pct = await cli(['impair', 'add', 'in', 'loss', '300%']);
    expect(pct.code).toBe(2);
    expect(pct.stderr).toMatch(/"300%": must be a percentage from 0 to 100/);
    const del = await cli(['impair', 'del', '999']);
    expect(del.code).toBe(2);
    expect(del.stderr.trim()).toMatch(/^faultstack impair del: no impairment 999: /);
  });

  test('run --impair with a bad spec never starts a stack: exit 2, one line', async () => {
    const r = await lab.cli(ns, ['run', '--tun', lab.ifname('x'), '--addr', '198.18.9.2/24', '--impair', 'out delay 20'], { timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^faultstack run: --impair is not a valid impairment: delay "20": must be a time with a unit: s, ms, us or ns/);
    expect(r.stdout).not.toMatch(/ready/);
  });
});
