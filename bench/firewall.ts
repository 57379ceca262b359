/**
 * `--only firewall`: faultstack as a firewall (lab/firewall-lab.ts) against the
 * kernel forwarding the same traffic between the same namespaces, in the same run.
 *
 *   ns in ==TUN== [faultstack firewall: filter + SecureNAT] ==TUN== ns out     target 198.19.0.2
 *   ns in --veth-- [ns kr: Linux ip_forward + nft masquerade] --veth-- ns out  target 198.19.2.2
 *
 * The client (iperf3 -c) is in "in", the server (iperf3 -s) in "out", for both paths;
 * only the router differs. TCP throughput both ways (iperf3, -R for external -> internal)
 * and UDP packets per second both ways (iperf3 -u -b 0 -l 64: as many small datagrams as
 * the sender can make; the figure is what the router delivered per second, counted on the
 * receiving host's interface, so that the receiving iperf3's own losses do not count;
 * the datagrams the firewall's TUN queue dropped are in the note). Each repetition measures
 * the firewall and the kernel back to back in the same direction. Goal (issue 13):
 * >= 0.5 of the kernel. min/median/max, the firewall's CPU share and the load average in
 * the notes.
 *
 * Then KB 319381 per mode: the lab's player through the Firewall Client, buggy and
 * hotfixed: items that stall, datagrams dropped, WSAEADDRINUSE answers, port-scan
 * events; drawn in bench/results/firewall-kb319381.svg.
 *   node dist/bench/firewall.js [--quick] [--reps N] [--seconds S]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { figure, fmt, fmtRatio, type Figure } from './figures';
import { barChart } from './svg';
import { FirewallLab, FW_IN, KOUT, MEDIA } from '../lab/firewall-lab';
import { parseFlags } from '../lab/flags';
import { UsageError } from '../stack/util/errors';

export interface FirewallBenchOptions {
  quick?: boolean;
  progress?: (line: string) => void;
  reps?: number;
  seconds?: number;
  outDir?: string;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mmm = (xs: number[]) => `${fmt(Math.min(...xs))}/${fmt(median(xs))}/${fmt(Math.max(...xs))}`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function cpuSeconds(pid: number): number {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

interface Sample {
  value: number;
  cpu: number;
  queueDrops?: number;
}
type Dir = 'i2e' | 'e2i';

export interface FaultRun {
  mode: string;
  played: number;
  stalled: number;
  dropped: number;
  addrInUse: number;
  events15104: number;
  events15105: number;
  seconds: number;
}

export async function runFirewallBench(opts: FirewallBenchOptions = {}): Promise<Figure[]> {
  const log = opts.progress ?? ((s: string) => process.stderr.write(s + '\n'));
  const reps = opts.reps ?? (opts.quick ? 3 : 5);
  const seconds = opts.seconds ?? (opts.quick ? 2 : 5);
  const load0 = os.loadavg()[0]!;
  const fl = await FirewallLab.create({ tag: 'bfw', kernelPath: true });
  const tcp: Record<Dir, { fw: Sample[]; kernel: Sample[] }> = { i2e: { fw: [], kernel: [] }, e2i: { fw: [], kernel: [] } };
  const udp: Record<Dir, { fw: Sample[]; kernel: Sample[] }> = { i2e: { fw: [], kernel: [] }, e2i: { fw: [], kernel: [] } };
  const faults: FaultRun[] = [];
  let offloads = '';
  try {
    const stack = await fl.startFirewall({ mode: 'hotfixed' });
    offloads = /offloads ([a-z0-9,]+)/.exec(stack.readyLine)?.[1] ?? 'none';
    const server = fl.lab.spawn(fl.ns.out, 'iperf3', ['-s', '-p', '5201']);
    for (let i = 0; i < 50; i++) {
      const a = await fl.lab.exec(fl.ns.in, 'ping', ['-c', '1', '-W', '1', MEDIA], { timeoutMs: 5000 });
      const b = await fl.lab.exec(fl.ns.in, 'ping', ['-c', '1', '-W', '1', KOUT], { timeoutMs: 5000 });
      if (a.code === 0 && b.code === 0) break;
      await sleep(100);
    }
    await sleep(300);
    log(
      `firewall: iperf3 from ns in to ns out through the firewall (${MEDIA}, TUN offloads ${offloads}) and through the kernel (${KOUT}); ${reps} x ${seconds} s per figure; load ${load0.toFixed(2)}`,
    );
    const once = async (target: string, reverse: boolean, udpMode: boolean): Promise<Sample> => {
      const cpu0 = cpuSeconds(stack.pid);
      const t0 = Date.now();
      // UDP: what the router delivered, on the receiving host's interface (out: i2e, in: e2i).
      const viaFw = target === MEDIA;
      const kd = fl.kernelDevs!;
      const rxNs = reverse ? fl.ns.in : fl.ns.out;
      const rxDev = viaFw ? (reverse ? fl.tunIn : fl.tunOut) : reverse ? kd.in : kd.out;
      const txNs = reverse ? fl.ns.out : fl.ns.in;
      const txDev = viaFw ? (reverse ? fl.tunOut : fl.tunIn) : reverse ? kd.out : kd.in;
      const before = udpMode ? await fl.linkStats(rxNs, rxDev) : null;
      const beforeTx = udpMode ? await fl.linkStats(txNs, txDev) : null;
      const args = ['-c', target, '-t', String(seconds), '-J', ...(reverse ? ['-R'] : []), ...(udpMode ? ['-u', '-b', '0', '-l', '64'] : [])];
      const r = await fl.lab.exec(fl.ns.in, 'iperf3', args, { timeoutMs: (seconds + 30) * 1000 });
      const cpu = (cpuSeconds(stack.pid) - cpu0) / ((Date.now() - t0) / 1000);
      type Doc = { error?: string; end?: { sum_received?: { bits_per_second: number }; sum?: { packets?: number; lost_packets?: number; seconds?: number } } };
      let doc: Doc;
      try {
        doc = JSON.parse(r.stdout) as Doc;
      } catch {
        throw new Error(`iperf3 ${args.join(' ')}: exit ${r.code}: ${r.stderr.slice(0, 200)}`);
      }
      if (doc.error) throw new Error(`iperf3 ${args.join(' ')}: ${doc.error}`);
      if (udpMode) {
        const after = await fl.linkStats(rxNs, rxDev);
        const afterTx = await fl.linkStats(txNs, txDev);
        await sleep(200);
        const secs = doc.end?.sum?.seconds || seconds;
        return { value: (after.rxPackets - before!.rxPackets) / secs / 1000, cpu, queueDrops: afterTx.txDropped - beforeTx!.txDropped };
      }
      await sleep(200);
      return { value: (doc.end?.sum_received?.bits_per_second ?? NaN) / 1e9, cpu };
    };
    for (let i = 0; i < reps; i++) {
      for (const dir of ['i2e', 'e2i'] as const) {
        const rev = dir === 'e2i';
        const f = await once(MEDIA, rev, false),
          k = await once(KOUT, rev, false);
        tcp[dir].fw.push(f);
        tcp[dir].kernel.push(k);
        const fu = await once(MEDIA, rev, true),
          ku = await once(KOUT, rev, true);
        udp[dir].fw.push(fu);
        udp[dir].kernel.push(ku);
        log(
          `  rep ${i + 1} ${dir === 'i2e' ? 'internal -> external' : 'external -> internal'}: TCP firewall ${fmt(f.value)} Gbit/s (CPU ${(f.cpu * 100).toFixed(0)}%), kernel ${fmt(k.value)}; UDP firewall ${fmt(fu.value)} kpps (CPU ${(fu.cpu * 100).toFixed(0)}%), kernel ${fmt(ku.value)} kpps`,
        );
      }
    }
    await server.kill(2000);

    // KB 319381 per mode: the player through the Firewall Client.
    await fl.startMediaServer();
    for (const mode of ['buggy', 'hotfixed'] as const) {
      await fl.startFirewall({ mode });
      const t0 = Date.now();
      const r = await fl.play(['--server', MEDIA, '--via', 'fwc', '--firewall', FW_IN]);
      const secs = (Date.now() - t0) / 1000;
      const s = await fl.fw<{ drops: Record<string, number> }>('summary');
      const ev = await fl.events();
      const run: FaultRun = {
        mode,
        played: r.played,
        stalled: r.stalled,
        dropped: s.drops['media-port-closed'] ?? 0,
        addrInUse: r.addrInUse,
        events15104: ev.filter((e) => e.data?.eventId === 15104).length,
        events15105: ev.filter((e) => e.data?.eventId === 15105).length,
        seconds: secs,
      };
      faults.push(run);
      log(
        `  KB 319381 ${mode}: ${run.played} of ${run.played + run.stalled} items played, ${run.stalled} stalled, ${run.dropped} datagrams dropped, ${run.addrInUse} WSAEADDRINUSE, events 15104 x${run.events15104} 15105 x${run.events15105} (${secs.toFixed(1)} s)`,
      );
    }
  } finally {
    await fl.cleanup();
  }
  const load1 = os.loadavg()[0]!;
  const figures: Figure[] = [];
  const target = { kind: 'ratio' as const, op: '>=' as const, value: 0.5, text: '>= 50% of kernel' };
  const dirName = { i2e: 'internal -> external', e2i: 'external -> internal' };
  for (const dir of ['i2e', 'e2i'] as const) {
    for (const [kind, set, unit, what] of [
      ['tcp', tcp, 'Gbit/s', `TCP (iperf3${dir === 'e2i' ? ' -R' : ''})`],
      ['udp', udp, 'kpps', `UDP 64-byte datagrams (iperf3 -u -b 0 -l 64${dir === 'e2i' ? ' -R' : ''})`],
    ] as const) {
      const fw = set[dir].fw.map((x) => x.value),
        k = set[dir].kernel.map((x) => x.value);
      const f = figure({
        group: 'firewall',
        key: `firewall.${kind}.${dir}`,
        name: `${dirName[dir]} through the firewall, ${what}, median of ${fw.length}`,
        value: median(fw),
        unit,
        baseline: median(k),
        target,
        note:
          `firewall min/med/max ${mmm(fw)}, kernel forwarding (ip_forward + masquerade over veth) ${mmm(k)}; firewall CPU ${(median(set[dir].fw.map((x) => x.cpu)) * 100).toFixed(0)}%` +
          `${kind === 'udp' ? `; datagrams dropped at the firewall's TUN queue per run ${set[dir].fw.map((x) => x.queueDrops ?? 0).join('/')}` : ''}; TUN offloads ${offloads}; load ${load0.toFixed(2)} -> ${load1.toFixed(2)}`,
      });
      figures.push(f);
      log(`  ${f.name}: ${fmt(f.value)} ${unit}, kernel ${fmt(f.baseline)} (${fmtRatio(f.ratio)}), target ${target.text}: ${f.met ? 'met' : 'NOT met'}`);
    }
  }
  for (const r of faults) {
    const note = `${r.played + r.stalled} playlist items through the Firewall Client; ${r.addrInUse} WSAEADDRINUSE, events 15104 x${r.events15104}, 15105 x${r.events15105}`;
    figures.push(
      figure({
        group: 'kb319381',
        key: `kb319381.${r.mode}.stalled`,
        name: `${r.mode}: playlist items that stall`,
        value: r.stalled,
        unit: 'items',
        better: 'lower',
        note,
      }),
    );
    figures.push(
      figure({
        group: 'kb319381',
        key: `kb319381.${r.mode}.dropped`,
        name: `${r.mode}: media datagrams dropped by the packet filter`,
        value: r.dropped,
        unit: 'datagrams',
        better: 'lower',
        note,
      }),
    );
    figures.push(
      figure({
        group: 'kb319381',
        key: `kb319381.${r.mode}.events`,
        name: `${r.mode}: port-scan events (15104 + 15105)`,
        value: r.events15104 + r.events15105,
        unit: 'events',
        better: 'lower',
        note,
      }),
    );
  }
  if (faults.length === 2) {
    const outDir = opts.outDir ?? path.join(__dirname, '..', '..', 'bench', 'results');
    fs.mkdirSync(outDir, { recursive: true });
    const [b, h] = faults as [FaultRun, FaultRun];
    const svg = barChart({
      title: 'KB 319381: a playlist of 6 items through the Firewall Client',
      unit: 'count',
      series: ['buggy', 'hotfixed'],
      rows: [
        { label: 'items that play', values: [b.played, h.played] },
        { label: 'items that stall', values: [b.stalled, h.stalled] },
        { label: 'WSAEADDRINUSE answers', values: [b.addrInUse, h.addrInUse] },
        { label: 'port-scan events (15104 + 15105)', values: [b.events15104 + b.events15105, h.events15104 + h.events15105] },
        { label: 'datagrams dropped (tens)', values: [b.dropped / 10, h.dropped / 10] },
      ],
      format: (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)),
    });
    const file = path.join(outDir, 'firewall-kb319381.svg');
    fs.writeFileSync(file, svg);
    fs.writeFileSync(path.join(outDir, 'firewall-kb319381.json'), JSON.stringify({ faults, load: [load0, load1] }, null, 2) + '\n');
    log(`  wrote ${file}`);
  }
  return figures;
}

if (require.main === module) {
  const { values: f } = parseFlags('firewall bench', process.argv.slice(2), {
    quick: { type: 'boolean' },
    reps: { type: 'string' },
    seconds: { type: 'string' },
  });
  const count = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`firewall bench: --${name} must be a whole number of at least 1, not ${JSON.stringify(v)}`);
    return n;
  };
  Promise.resolve()
    .then(() => runFirewallBench({ quick: f.quick === true, reps: count('reps', f.reps), seconds: count('seconds', f.seconds) }))
    .then(
      (r) => {
        process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      },
      (e: Error) => {
        process.stderr.write(e instanceof UsageError ? `${e.message}\n` : `bench firewall: ${e.message}\n`);
        process.exit(e instanceof UsageError ? 2 : 1);
      },
    );
}
