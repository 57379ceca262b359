/**
 * `--only nlb`: an NLB cluster of faultstack hosts on a Linux bridge.
 *   - connections per second and download throughput through the cluster with 1, 2 and 3
 *     hosts, against one faultstack host without NLB on the same bridge (the baseline of
 *     the ratio), with the Linux kernel's figure over the same bridge in the note;
 *   - how long the cluster takes to converge after a host is killed (SIGKILL), and how
 *     long until a client of the dead host connects again.
 *
 *   ns cl: bridge <- TAPs of the hosts (198.18.70.11-13, cluster 198.18.70.100)
 *                 <- veth -- ns cli: 198.18.70.5 + 30 client addresses (the load)
 *                 <- veth -- ns ks:  198.18.70.250, the kernel (iperf3 -s, a Node discard server)
 * The load comes from 30 client addresses, so that single affinity spreads it over the
 * hosts. Each repetition measures every configuration back to back; the figure is the
 * median, min/median/max in the note, with the load average. On a 2-core machine the
 * hosts share the cores with the load, so more hosts cannot mean more CPU: the ratio
 * says what NLB costs and what the spreading buys when the CPU is shared.
 *   node dist/bench/nlb.js [--quick]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { figure, fmt, type Figure } from './figures';
import { Lab, type StackProcess } from '../lab/lab';
import { ControlClient } from '../stack/control/client';

export interface NlbBenchOptions {
  quick?: boolean;
  progress?: (line: string) => void;
}

const VIP = '198.18.70.100';
const KERNEL = '198.18.70.250';
const CLIENTS = Array.from({ length: 30 }, (_, i) => `198.18.70.${130 + i}`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mmm = (xs: number[]) => `${fmt(Math.min(...xs))}/${fmt(median(xs))}/${fmt(Math.max(...xs))}`;

/** Connections per second: `conc` workers, each from the client addresses in turn, connect to port 9, close, again, for `ms`. */
const CONNRATE = `
const net = require('net');
const [host, ms, conc, ...addrs] = process.argv.slice(1);
let done = 0, errors = 0, k = 0; const end = Date.now() + Number(ms);
function one() {
  if (Date.now() >= end) return finish();
  const s = net.connect({ host, port: 9, localAddress: addrs[k++ % addrs.length] });
  let ok = false;
  s.setTimeout(3000, () => s.destroy());
  s.on('connect', () => { ok = true; done++; s.destroy(); });
  s.on('error', () => { errors++; });
  s.on('close', () => { if (!ok) errors++; one(); });
}
let live = Number(conc);
function finish() { if (--live === 0) { console.log(JSON.stringify({ connections: done, errors, seconds: Number(ms) / 1000 })); process.exit(0); } }
for (let i = 0; i < Number(conc); i++) one();
`;

/** The kernel's side of the baseline: a discard server on 9 and /bytes/N over HTTP on 80, in Node on Linux TCP. */
const KERNEL_SERVERS = `
const net = require('net'), http = require('http');
net.createServer((s) => { s.on('data', () => {}); s.on('end', () => s.end()); s.on('error', () => {}); }).listen(9);
const chunk = Buffer.alloc(65536, 0x61);
http.createServer((req, res) => {
  let left = Number((/^\\/bytes\\/(\\d+)/.exec(req.url) || [])[1] || 0);
  res.writeHead(200, { 'content-length': left });
  const pump = () => { while (left > 0) { const n = Math.min(left, chunk.length); left -= n; if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { res.once('drain', pump); return; } } res.end(); };
  res.on('error', () => {}); pump();
}).listen(80);
`;

export async function runNlbBench(opts: NlbBenchOptions = {}): Promise<Figure[]> {
  const log = opts.progress ?? ((s: string) => process.stderr.write(s + '\n'));
  const reps = opts.quick ? 3 : 5;
  const seconds = opts.quick ? 2 : 5;
  const load0 = os.loadavg()[0]!;
  const lab = await Lab.create('bnl');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-bnlb-'));
  const rate: Record<string, number[]> = {},
    tput: Record<string, number[]> = {};
  const conv: number[] = [],
    back: number[] = [];
  let hosts: StackProcess[] = [];
  try {
    await lab.addNamespace('cl');
    await lab.addNamespace('cli');
    await lab.addNamespace('ks');
    const br = await lab.bridge('cl');
    const { dev } = await lab.vethToBridge('cli', 'cl', br, { addr: '198.18.70.5/24' });
    for (const a of CLIENTS) await lab.ip('cli', 'addr', 'add', `${a}/24`, 'dev', dev);
    await lab.vethToBridge('ks', 'cl', br, { addr: `${KERNEL}/24` });
    const kernelServers = lab.spawn('ks', process.execPath, ['-e', KERNEL_SERVERS]);

    const start = async (n: number, nlb: boolean) => {
      hosts = await Promise.all(
        Array.from({ length: n }, (_, k) =>
          lab.startStack('cl', [
            '--tap',
            lab.ifname(`t${k + 1}`),
            '--bridge',
            br,
            '--addr',
            nlb ? `198.18.70.${11 + k}/24` : `${VIP}/24`,
            '--services',
            'discard,http',
            '--control',
            path.join(tmp, `h${k + 1}.sock`),
            ...(nlb ? ['--nlb', VIP, '--nlb-priority', String(k + 1)] : []),
          ]),
        ),
      );
      if (nlb) await converged(n);
      // The client resolves the address afresh.
      await lab.exec('cli', 'ip', ['neigh', 'flush', 'all']);
      for (let i = 0; i < 50; i++) {
        if ((await lab.exec('cli', 'ping', ['-c', '1', '-W', '1', VIP])).code === 0) break;
        await sleep(100);
      }
    };
    const stop = async () => {
      await Promise.all(hosts.map((h) => h.kill(5000)));
      hosts = [];
    };
    const converged = async (n: number, timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const q = await Promise.all(
          hosts
            .filter((h) => h.running)
            .map((h) => ControlClient.call<{ state: string; hosts: number[] }>(h.controlPath, 'nlb.query', {}, { timeoutMs: 3000 }).catch(() => null)),
        );
        if (q.every((x) => x && x.state.startsWith('Converged') && x.hosts.length === n)) return;
        if (Date.now() > deadline) throw new Error(`no convergence with ${n} hosts: ${JSON.stringify(q)}`);
        await sleep(50);
      }
    };
    const connRate = async (target: string) => {
      const r = await lab.exec('cli', process.execPath, ['-e', CONNRATE, target, String(seconds * 1000), '32', ...CLIENTS], {
        timeoutMs: (seconds + 20) * 1000,
      });
      if (!r.stdout.trim()) throw new Error(`the connection-rate client printed nothing (exit ${r.code}): ${r.stderr.slice(0, 300)}`);
      const j = JSON.parse(r.stdout) as { connections: number; errors: number; seconds: number };
      return j.connections / j.seconds;
    };
    const download = async (target: string) => {
      // Six HTTP downloads at once, from six client addresses (spread over the hosts by their buckets), cut at `seconds`.
      const runs = await Promise.all(
        CLIENTS.slice(0, 6).map((a) =>
          lab.exec(
            'cli',
            'curl',
            [
              '-s',
              '-o',
              '/dev/null',
              '--interface',
              a,
              '--max-time',
              String(seconds),
              '-w',
              '%{size_download} %{time_total}',
              `http://${target}/bytes/1073741824`,
            ],
            { timeoutMs: (seconds + 30) * 1000 },
          ),
        ),
      );
      let bits = 0;
      for (const r of runs) {
        const [size] = r.stdout.trim().split(' ').map(Number);
        if (!(size! > 0))
          throw new Error(
            `curl from ${target} got nothing (exit ${r.code}): ${r.stderr.slice(0, 200)}${target === KERNEL ? ` (kernel servers ${kernelServers.running ? 'running' : 'exited'}: ${kernelServers.output.slice(-300)})` : ''}`,
          );
        bits += size! * 8;
      }
      return bits / seconds / 1e9;
    };
    const configs: { key: string; n: number; nlb: boolean }[] = [
      { key: 'single', n: 1, nlb: false },
      { key: 'nlb1', n: 1, nlb: true },
      { key: 'nlb2', n: 2, nlb: true },
      { key: 'nlb3', n: 3, nlb: true },
    ];
    for (const c of [...configs.map((x) => x.key), 'kernel']) {
      rate[c] = [];
      tput[c] = [];
    }
    log(`nlb: ${reps} x (${configs.map((c) => c.key).join(', ')}, kernel), ${seconds} s each; load ${load0.toFixed(2)}`);
    for (let i = 0; i < reps; i++) {
      for (const c of configs) {
        await start(c.n, c.nlb);
        rate[c.key]!.push(await connRate(VIP));
        tput[c.key]!.push(await download(VIP));
        await stop();
        log(`  rep ${i + 1} ${c.key}: ${fmt(rate[c.key]!.at(-1)!)} conn/s, ${fmt(tput[c.key]!.at(-1)!)} Gbit/s`);
      }
      rate.kernel!.push(await connRate(KERNEL));
      tput.kernel!.push(await download(KERNEL));
      log(`  rep ${i + 1} kernel: ${fmt(rate.kernel!.at(-1)!)} conn/s, ${fmt(tput.kernel!.at(-1)!)} Gbit/s`);
    }
    // Convergence after a host dies: three hosts, SIGKILL host 3, time until hosts 1 and 2 agree without it.
    for (let i = 0; i < reps; i++) {
      await start(3, true);
      const map = (await ControlClient.call<{ rules: { map: number[] }[] }>(hosts[0]!.controlPath, 'nlb.display', {}, { timeoutMs: 3000 })).rules[0]!.map;
      const { bucketOf, AffinityCode } = await import('../stack/nlb/hash');
      const orphan = CLIENTS.find(
        (a) =>
          map[
            bucketOf(
              AffinityCode.Single,
              a.split('.').reduce((x, o) => x * 256 + Number(o), 0),
              0,
              map.length,
            )
          ] === 3,
      )!;
      const t0 = Date.now();
      hosts[2]!.signal('SIGKILL');
      await sleep(100);
      const alive = hosts.slice(0, 2);
      hosts = alive;
      await converged(2, 30_000);
      conv.push((Date.now() - t0) / 1000);
      for (;;) {
        const r = await lab.exec(
          'cli',
          process.execPath,
          [
            '-e',
            `const s=require('net').connect({host:'${VIP}',port:9,localAddress:'${orphan}'},()=>{s.destroy();process.exit(0)});s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(1),500)`,
          ],
          { timeoutMs: 5000 },
        );
        if (r.code === 0) break;
        if (Date.now() - t0 > 30_000) throw new Error("the dead host's client never got in again");
      }
      back.push((Date.now() - t0) / 1000);
      await stop();
      log(`  convergence after a kill: ${fmt(conv.at(-1)!)} s; the dead host's client connected again after ${fmt(back.at(-1)!)} s`);
    }
  } finally {
    await lab.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const load1 = os.loadavg()[0]!;
  const note = (xs: Record<string, number[]>, k: string) =>
    `min/med/max ${mmm(xs[k]!)}; one host without NLB ${mmm(xs.single!)}; the kernel over the same bridge ${mmm(xs.kernel!)}; load ${load0.toFixed(2)} -> ${load1.toFixed(2)}, ${os.cpus().length} cores`;
  const figures: Figure[] = [];
  for (const k of ['nlb1', 'nlb2', 'nlb3']) {
    const n = k.slice(3);
    figures.push(
      figure({
        group: 'nlb',
        key: `nlb.connrate.${n}`,
        name: `connections/s through an NLB cluster of ${n} host(s), 30 client addresses`,
        value: median(rate[k]!),
        unit: 'conn/s',
        baseline: median(rate.single!),
        note: note(rate, k),
      }),
    );
    figures.push(
      figure({
        group: 'nlb',
        key: `nlb.download.${n}`,
        name: `download through an NLB cluster of ${n} host(s), 6 HTTP downloads`,
        value: median(tput[k]!),
        unit: 'Gbit/s',
        baseline: median(tput.single!),
        note: note(tput, k),
      }),
    );
  }
  figures.push(
    figure({
      group: 'nlb',
      key: 'nlb.convergence',
      name: 'convergence after a host is killed (3 hosts, AliveMsgPeriod 1 s, AliveMsgTolerance 5)',
      value: median(conv),
      unit: 's',
      better: 'lower',
      note: `min/med/max ${mmm(conv)}; load ${load0.toFixed(2)} -> ${load1.toFixed(2)}`,
    }),
  );
  figures.push(
    figure({
      group: 'nlb',
      key: 'nlb.recovery',
      name: 'until a client of the killed host connects again',
      value: median(back),
      unit: 's',
      better: 'lower',
      note: `min/med/max ${mmm(back)}`,
    }),
  );
  for (const f of figures) log(`  ${f.name}: ${fmt(f.value)} ${f.unit}${f.ratio !== null ? ` (${fmt(f.ratio)}x one host without NLB)` : ''}`);
  return figures;
}

if (require.main === module) {
  runNlbBench({ quick: process.argv.includes('--quick') }).then(
    (f) => {
      process.stdout.write(JSON.stringify(f, null, 2) + '\n');
    },
    (e: Error) => {
      process.stderr.write(`bench nlb: ${e.message}\n`);
      process.exit(1);
    },
  );
}
