/**
 * Issue 8 item 13, the packet-level ones, with scapy (/usr/bin/python3, packets crafted
 * in the lab namespace and routed to the stack through its TUN device):
 * - a SYN+FIN to a listener gets no SYN-ACK (Linux discards it in LISTEN), while the same
 *   SYN without FIN is answered;
 * - 900 incomplete fragments (first fragments of 900 datagrams): the 836 evicted past the
 *   64 kept are counted in IpReasmFails (before, it stayed 0 whatever arrived);
 * - ping's reported ttl: 128 from the Windows profile (before, 64: a profile did not set
 *   every default it implies).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Lab, StackProcess } from '../lab/lab';

const STACK = '198.18.0.2';
const PY = '/usr/bin/python3';

let lab: Lab;
let ns: string;
let stack: StackProcess;

const stats = async () => JSON.parse((await lab.cli(ns, ['stats', '--json', '--control', stack.controlPath])).stdout);

async function scapy(script: string): Promise<string> {
  const r = await lab.exec(ns, PY, ['-c', `from scapy.all import IP, TCP, UDP, Raw, send, sr1, conf\nconf.verb = 0\n${script}`], { timeoutMs: 60_000 });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  lab = await Lab.create('pk');
  ns = await lab.addNamespace('s');
  stack = await lab.startStack(ns, ['--tun', lab.ifname('t'), '--addr', `${STACK}/24`, '--services', 'http,echo', '--control', `/run/faultstack/${lab.ifname('t')}.sock`]);
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
});

describe('crafted packets', () => {
  test('SYN+FIN to a listener: no SYN-ACK, no half-open entry; a plain SYN is answered', async () => {
    const before = await stats();
    const out = await scapy(`
a = sr1(IP(dst="${STACK}")/TCP(sport=41000, dport=80, flags="SF", seq=1000, options=[("MSS", 1460)]), timeout=2)
print("SF", "none" if a is None else a[TCP].flags)
b = sr1(IP(dst="${STACK}")/TCP(sport=41001, dport=80, flags="S", seq=1000, options=[("MSS", 1460)]), timeout=2)
print("S", "none" if b is None else b[TCP].flags)
`);
    expect(out).toContain('SF none\n');
    expect(out).toContain('S SA\n');
    const after = await stats();
    expect(after.counters.TcpPassiveOpens - before.counters.TcpPassiveOpens).toBe(1); // the plain SYN only
  }, 60_000);

  test('the Windows profile answers ping with TTL 128 (DefaultTTL; Linux 64)', async () => {
    const ping = async () => (await lab.exec(ns, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', STACK], { timeoutMs: 15_000 })).stdout;
    expect(await ping()).toMatch(/64 bytes from 198\.18\.0\.2: icmp_seq=1 ttl=128 /);
    const set = await lab.cli(ns, ['param', 'set', 'DefaultTTL', '64', '--control', stack.controlPath]);
    expect(set.code, set.stderr).toBe(0);
    expect(await ping()).toMatch(/icmp_seq=1 ttl=64 /);
    expect((await lab.cli(ns, ['param', 'set', 'DefaultTTL', '128', '--control', stack.controlPath])).code).toBe(0);
    expect((await stats()).params.DefaultTTL).toBe(128);
  }, 60_000);

  test('900 incomplete fragments: the evicted ones count in IpReasmFails', async () => {
    const before = await stats();
    await scapy(`send([IP(dst="${STACK}", id=5000 + i, flags="MF", frag=0)/UDP(sport=5000, dport=7)/Raw(b"x" * 1400) for i in range(900)])`);
    const after = await stats();
    const d = (k: string) => after.counters[k] - before.counters[k];
    expect(d('IpReasmReqds')).toBe(900);
    expect(d('IpReasmOKs')).toBe(0);
    // 64 datagrams are kept in progress (docs/design.md); each one evicted for room failed.
    expect(d('IpReasmFails')).toBe(900 - 64);
  }, 60_000);
});
