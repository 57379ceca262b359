/**
 * IPsec throughput: one strongSwan client (charon + kernel-libipsec) sends and
 * receives TCP (iperf3) through a tunnel to faultstack (`run --ipsec`), and through a
 * tunnel to a strongSwan responder (also kernel-libipsec) in the same run, with the
 * same client, the same proposals and the same forwarding hop:
 *
 *   [c: charon, iperf3 -c] 198.18.50.1 --veth-- [k: forwards] --TUN-- faultstack 198.18.0.2 (iperf3 service)
 *                                                 [k] --veth-- 198.18.51.2 [s: charon, iperf3 -s]
 *
 * The figure is faultstack's throughput; its baseline is the strongSwan responder's
 * (the goal: faultstack ahead of strongSwan's userspace ESP, ratio >= 1).
 * Each direction is measured `reps` times, alternating the two responders; the
 * median is the figure, min and max are in the note.
 *   node dist/bench/run.js --quick --only ipsec
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { figure, type Figure } from './figures';
import { Lab } from '../lab/lab';
import { StrongSwan, childName, type SwanctlOptions } from '../lab/strongswan';

export interface IpsecBenchOptions {
  quick?: boolean;
  progress?: (line: string) => void;
}

const STACK = '198.18.0.2';
const SWAN = '198.18.51.2';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export async function runIpsecBench(opts: IpsecBenchOptions = {}): Promise<Figure[]> {
  const say = opts.progress ?? ((l: string) => process.stderr.write(l + '\n'));
  const quick = !!opts.quick;
  const dur = quick ? 3 : 8;
  const reps = quick ? 3 : 5;
  const lab = await Lab.create('ipb');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-ipsec-bench-'));
  try {
    const nsK = await lab.addNamespace('k');
    const nsC = await lab.addNamespace('c');
    const nsS = await lab.addNamespace('s');
    await lab.veth('k', 'c', { addrA: '198.18.50.254/24', addrB: '198.18.50.1/24' });
    await lab.veth('k', 's', { addrA: '198.18.51.254/24', addrB: `${SWAN}/24` });
    await lab.sysctl(nsK, 'net.ipv4.ip_forward', 1);
    await lab.ip('c', 'route', 'add', 'default', 'via', '198.18.50.254');
    await lab.ip('s', 'route', 'add', 'default', 'via', '198.18.51.254');
    const stack = await lab.startStack(nsK, [
      '--tun',
      lab.ifname('t'),
      '--addr',
      `${STACK}/24`,
      '--host-addr',
      '198.18.0.1/24',
      '--services',
      'iperf3',
      '--control',
      path.join(tmp, 'ctl.sock'),
      '--ipsec-psk',
      'client1@lab=benchsecret',
    ]);
    void stack;
    const proposals = 'aes128-sha256-modp2048',
      espProposals = 'aes128gcm16';
    await StrongSwan.start(lab, nsS, path.join(tmp, 's'), {
      localAddr: SWAN,
      id: 'server@lab',
      psk: 'benchsecret',
      proposals,
      espProposals,
      localTs: `${SWAN}/32`,
      remoteTs: '198.18.50.1/32',
    });
    lab.spawn(nsS, 'iperf3', ['-s', '-B', SWAN, '-p', '5201']);
    const toStack: SwanctlOptions = {
      name: 'fs',
      localAddr: '198.18.50.1',
      remoteAddr: STACK,
      id: 'client1@lab',
      psk: 'benchsecret',
      proposals,
      espProposals,
      localTs: '198.18.50.1/32',
      remoteTs: `${STACK}/32`,
    };
    const toSwan: SwanctlOptions = { ...toStack, name: 'sw', remoteAddr: SWAN, remoteTs: `${SWAN}/32` };
    const client = await StrongSwan.start(lab, nsC, path.join(tmp, 'c'), [toStack, toSwan]);
    for (const c of [toStack, toSwan]) {
      const r = await client.initiate(30_000, childName(c));
      if (!/initiate completed successfully/.test(r.stdout)) throw new Error(`tunnel to ${c.remoteAddr} did not come up: ${r.stdout.slice(-1500)}`);
    }
    // The client's UDP receive-buffer drops (ESP-in-UDP arriving faster than charon reads it), from /proc/net/snmp.
    const rcvbufErrors = async (): Promise<number> => {
      const t = (await lab.exec(nsC, 'cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
      const [names, values] = t.map((l) => l.trim().split(/\s+/));
      return Number(values?.[names?.indexOf('RcvbufErrors') ?? -1] ?? NaN);
    };
    const drops = { fs: 0, sw: 0 };
    const iperf = async (host: string, reverse: boolean): Promise<number> => {
      const before = await rcvbufErrors();
      const args = ['-c', host, '-t', String(dur), '-J', '-O', '1', ...(reverse ? ['-R'] : [])];
      const r = await lab.exec(nsC, 'iperf3', args, { timeoutMs: (dur + 30) * 1000 });
      const j = JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
      if (j.error) throw new Error(`iperf3 ${args.join(' ')}: ${j.error}`);
      drops[host === STACK ? 'fs' : 'sw'] += (await rcvbufErrors()) - before;
      return (j.end?.sum_received?.bits_per_second ?? NaN) / 1e9;
    };
    const out: Figure[] = [];
    for (const [dir, reverse, label] of [
      ['up', false, 'client -> responder'],
      ['down', true, 'responder -> client (-R)'],
    ] as const) {
      const fs_: number[] = [],
        sw: number[] = [];
      drops.fs = 0;
      drops.sw = 0;
      for (let i = 0; i < reps; i++) {
        fs_.push(await iperf(STACK, reverse));
        await new Promise((r) => setTimeout(r, 300));
        sw.push(await iperf(SWAN, reverse));
        await new Promise((r) => setTimeout(r, 300));
        say(`  ipsec ${dir} #${i + 1}: faultstack ${fs_[i]!.toFixed(3)} Gbit/s, strongSwan ${sw[i]!.toFixed(3)} Gbit/s`);
      }
      const range = (x: number[]) => `min ${Math.min(...x).toFixed(3)} / median ${median(x).toFixed(3)} / max ${Math.max(...x).toFixed(3)}`;
      out.push(
        figure({
          group: 'ipsec',
          key: `ipsec.${dir}`,
          name: `strongSwan client through ESP-in-UDP, ${label}`,
          value: median(fs_),
          unit: 'Gbit/s',
          better: 'higher',
          baseline: median(sw),
          target: { kind: 'ratio', op: '>=', value: 1, text: 'ahead of a strongSwan responder' },
          note:
            `${reps} runs of ${dur} s, ${proposals} / ${espProposals}; faultstack ${range(fs_)}; strongSwan responder (kernel-libipsec) ${range(sw)}; ` +
            `client UDP receive-buffer drops: ${drops.fs} with faultstack, ${drops.sw} with strongSwan; load ${os.loadavg()[0]!.toFixed(2)}`,
        }),
      );
    }
    return out;
  } finally {
    await lab.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
