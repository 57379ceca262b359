/**
 * `make demo` / `faultstack demo`: the whole stack under real Linux traffic, in a
 * throwaway network namespace. Starts `faultstack run` on a TUN device, then drives
 * it from the kernel side with ping, curl, a 10 MB TCP echo with a SHA-256 check,
 * iperf3 both ways, UDP echo and `faultstack stats`; then the L2 step: a second stack
 * on a TAP device as a port of a Linux bridge, used by a namespace (a "VM") with a veth
 * into the bridge, no routes; then the PMTU lab. Prints a summary table; exits 1 if any
 * step failed. Always cleans up (namespaces, devices, processes).
 */
import { PmtuLab, HOPS } from '../lab/pmtu-lab';
import { FirewallLab, FW_IN, MEDIA } from '../lab/firewall-lab';
import { NlbLab } from '../lab/nlb-lab';
import * as fs from 'node:fs';
import { defineCommand, parseArgs, printHelp, switchFlag } from './cli/args';
import { table } from './cli/format';
import { Lab, StackProcess, StackStartError } from '../lab/lab';
import { curl, iperf3, ping, requireInLab, udpEcho } from '../lab/traffic';

const STACK = '198.18.0.2';
const PCAP = '/tmp/faultstack-demo.pcap';
const STACK_ARGS = ['--tun', 'fsdemo0', '--addr', `${STACK}/24`, '--host-addr', '198.18.0.1/24', '--services', 'all', '--pcap', PCAP, '--pcap-snaplen', '128'];
const ECHO_BYTES = 10 * 1000 * 1000;
/** The L2 step: a stack on a TAP device, a port of a bridge, and a namespace on the same bridge. */
const L2_STACK = '198.18.2.2';
const L2_VM = '198.18.2.1';

export const DEMO_SPEC = defineCommand({
  name: 'demo',
  summary: 'Run the stack in a throwaway network namespace and drive it with real Linux tools.',
  details: `Steps: start, ping, HTTP, 10 MB TCP echo with SHA-256, iperf3 both ways, UDP echo, stats, then the L2\nstep (a stack on a TAP device in a Linux bridge; a namespace on the bridge pings, curls and runs iperf3),\nthen the PMTU lab (KB 898060 hotfixed and buggy behind real Linux routers), then the firewall\n(KB 319381: a playlist through the Firewall Client, buggy and hotfixed), then a short NLB lab\n(KB 972183: two hosts, one strongSwan client moving to another network, buggy and hotfixed).\nPackets are written to ${PCAP} (headers only). Needs root.`,
  flags: {
    json: switchFlag('print the summary as JSON on stdout (progress goes to stderr)'),
    'skip-l2': switchFlag('leave out the L2 (TAP and bridge) steps'),
    'skip-pmtu': switchFlag('leave out the PMTU lab steps'),
    'skip-firewall': switchFlag('leave out the firewall step (KB 319381)'),
    'skip-nlb': switchFlag('leave out the NLB lab steps (KB 972183)'),
  },
});

interface StepOutcome {
  /** Short result for the summary, e.g. "5/5 replies, avg 0.2 ms". */
  figure: string;
  ok?: boolean;
  /** More lines for the progress log. */
  detail?: string;
}

interface StepRecord {
  step: string;
  result: 'ok' | 'FAILED' | 'skipped';
  figure: string;
  ms: number;
}

/** Node script: sends N random bytes to an echo port, hashes both directions. */
const TCP_ECHO_SCRIPT = `
const net = require('net'), crypto = require('crypto');
const host = process.argv[1], port = +process.argv[2], total = +process.argv[3];
const hs = crypto.createHash('sha256'), hr = crypto.createHash('sha256');
let sent = 0, recv = 0, done = false; const t0 = Date.now();
const out = (o) => { if (done) return; done = true; process.stdout.write(JSON.stringify(o) + '\\n'); process.exit(o.error ? 1 : 0); };
const s = net.connect({ host, port }, () => {
  const pump = () => {
    while (sent < total) {
      const b = crypto.randomBytes(Math.min(65536, total - sent));
      hs.update(b); sent += b.length;
      if (!s.write(b)) { s.once('drain', pump); return; }
    }
  };
  pump();
});
s.on('data', (d) => {
  hr.update(d); recv += d.length;
  if (recv >= total) {
    const ms = Date.now() - t0; s.destroy();
    out({ sent, received: recv, match: recv === total && hs.digest('hex') === hr.digest('hex'), ms });
  }
});
s.on('error', (e) => out({ error: e.code || e.message, sent, received: recv }));
s.on('close', () => out({ error: 'connection closed early', sent, received: recv }));
setTimeout(() => out({ error: 'timed out', sent, received: recv }), +process.argv[4]);
`;

function oneLine(s: string, max = 90): string {
  const t = s
    .split('\n')
    .map((x) => x.trim())
    .filter(Boolean)
    .join(' ');
  return t.length > max ? t.slice(0, max - 3) + '...' : t;
}

function lastLine(s: string): string {
  return s.trim().split('\n').pop()?.trim() ?? '';
}

/** The 1 MB download's figure (the TUN step and the L2 step). */
function curlMegabyte(r: { exit: number | null; httpCode: number; bytes: number; bitsPerSecond: number; stderr: string }): StepOutcome {
  if (r.exit !== 0) throw new Error(`curl exit ${r.exit}: ${r.stderr}`);
  const ok = r.httpCode === 200 && r.bytes === 1_000_000;
  return { ok, figure: `HTTP ${r.httpCode}, ${r.bytes} bytes${ok ? `, ${mbit(r.bitsPerSecond)}` : ' (expected 1000000)'}` };
}

function mbit(bps: number): string {
  return `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(DEMO_SPEC, argv);
  if (p.help) return printHelp(DEMO_SPEC);
  const json = p.flags.json;
  const log = (line: string) => (json ? process.stderr : process.stdout).write(line + '\n');

  const records: StepRecord[] = [];
  let lab: Lab | null = null;
  let stack: StackProcess | null = null;
  let ns = '';
  let blocked = '';

  const step = async (name: string, what: string, fn: () => Promise<StepOutcome>): Promise<boolean> => {
    if (blocked) {
      records.push({ step: name, result: 'skipped', figure: blocked, ms: 0 });
      log(`[demo] ${name}: skipped (${blocked})`);
      return false;
    }
    log(`[demo] ${name}: ${what}`);
    const t0 = Date.now();
    let rec: StepRecord;
    try {
      const o = await fn();
      const ok = o.ok !== false;
      rec = { step: name, result: ok ? 'ok' : 'FAILED', figure: o.figure, ms: Date.now() - t0 };
      if (o.detail) log(o.detail.replace(/^/gm, '       '));
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      // A stack that failed to start: its own last words say why.
      const said = e instanceof StackStartError ? lastLine(e.output) || e.reason : '';
      rec = { step: name, result: 'FAILED', figure: oneLine(said || msg), ms: Date.now() - t0 };
      if (msg.includes('\n')) log(msg.replace(/^/gm, '       '));
    }
    records.push(rec);
    log(`       ${rec.result}: ${rec.figure} (${(rec.ms / 1000).toFixed(1)} s)`);
    return rec.result === 'ok';
  };

  try {
    const made = await step('namespace', 'ip netns add', async () => {
      lab = await Lab.create('demo');
      ns = await lab.addNamespace('demo');
      return { figure: ns };
    });
    if (!made) blocked = 'no namespace';

    const started = await step('start stack', `faultstack run ${STACK_ARGS.join(' ')}`, async () => {
      fs.rmSync(PCAP, { force: true }); // what is reported at the end is this run's capture
      const t0 = Date.now();
      stack = await lab!.startStack(ns, STACK_ARGS, { timeoutMs: 30_000 });
      return { figure: `ready in ${Date.now() - t0} ms`, detail: stack.readyLine };
    });
    if (!started) blocked = blocked || 'the stack did not start';

    await step('ping', `ping -c 5 ${STACK}`, async () => {
      await requireInLab(lab!, 'ping');
      const r = await ping(lab!, ns, STACK, { count: 5, intervalMs: 200, waitMs: 2000 });
      return { ok: r.received === 5, figure: `${r.received}/5 replies${r.avgMs !== null ? `, avg ${r.avgMs} ms` : ''}` };
    });

    await step('http /', `curl http://${STACK}/`, async () => {
      await requireInLab(lab!, 'curl');
      const r = await curl(lab!, ns, `http://${STACK}/`, { maxTimeMs: 10_000 });
      if (r.exit !== 0) throw new Error(`curl exit ${r.exit}: ${r.stderr}`);
      return { ok: r.httpCode === 200, figure: `HTTP ${r.httpCode}, ${r.bytes} bytes` };
    });

    await step('http 1 MB', `curl http://${STACK}/bytes/1000000`, async () => {
      return curlMegabyte(await curl(lab!, ns, `http://${STACK}/bytes/1000000`, { maxTimeMs: 30_000 }));
    });

    await step('tcp echo 10 MB', `${ECHO_BYTES / 1e6} MB to ${STACK}:7 and back, SHA-256 compared`, async () => {
      const r = await lab!.exec(ns, process.execPath, ['-e', TCP_ECHO_SCRIPT, STACK, '7', String(ECHO_BYTES), '60000'], { timeoutMs: 70_000 });
      const res = JSON.parse(r.stdout.trim().split('\n').pop() || '{}') as { error?: string; sent?: number; received?: number; match?: boolean; ms?: number };
      if (res.error || !res.ms)
        throw new Error(`${res.error ?? `exit ${r.code}: ${oneLine(r.stderr)}`} (sent ${res.sent ?? 0}, got back ${res.received ?? 0} bytes)`);
      const rate = mbit((((res.sent ?? 0) + (res.received ?? 0)) * 8) / (res.ms / 1000));
      return { ok: !!res.match, figure: res.match ? `sha256 match, ${rate} both ways` : `MISMATCH: sent ${res.sent}, got back ${res.received} bytes` };
    });

    for (const reverse of [false, true]) {
      await step(reverse ? 'iperf3 download' : 'iperf3 upload', `iperf3 -c ${STACK} -t 3 -J${reverse ? ' -R' : ''}`, async () => {
        await requireInLab(lab!, 'iperf3');
        const r = await iperf3(lab!, ns, STACK, { seconds: 3, reverse });
        return { ok: r.bitsPerSecond > 0, figure: `${mbit(r.bitsPerSecond)}${r.retransmits !== null ? `, ${r.retransmits} retransmits` : ''}` };
      });
    }

    await step('udp echo', `20 datagrams of 8 to 1472 bytes to ${STACK}:7`, async () => {
      const r = await udpEcho(lab!, ns, STACK, 7, 20);
      return { ok: r.echoed === r.sent && !r.wrong, figure: `${r.echoed}/${r.sent} echoed intact${r.wrong ? `, ${r.wrong} wrong` : ''}` };
    });

    await step('stats', 'faultstack stats', async () => {
      const control = (stack as StackProcess | null)?.controlPath;
      const extra = control ? ['--control', control] : [];
      const human = await lab!.cli(ns, ['stats', ...extra], { timeoutMs: 15_000 });
      if (human.code !== 0) throw new Error(oneLine(human.stderr) || `exit ${human.code}`);
      const raw = await lab!.cli(ns, ['stats', '--json', ...extra], { timeoutMs: 15_000 });
      let figure = 'ok';
      try {
        const doc = JSON.parse(raw.stdout) as { counters?: Record<string, unknown>; connectionCount?: number; connections?: unknown[] };
        const counters = doc.counters ? (JSON.stringify(doc.counters).match(/":-?\d/g)?.length ?? 0) : 0;
        // The stack counts connections (rows only on request); a stack that lists rows is counted too.
        figure = `${counters} counters, ${doc.connectionCount ?? doc.connections?.length ?? 0} connections`;
      } catch {
        /* the human form already worked */
      }
      return { figure, detail: human.stdout.trimEnd() };
    });
    // L2: the stack as a bridge port, as a VM's NIC would be; the "VM" has no route but its subnet.
    if (!p.flags['skip-l2']) {
      let l2ns = '';
      let vm = '';
      let l2Mac = '';
      let l2Blocked = '';
      const l2Up = await step('l2 bridge', 'a bridge, a namespace with a veth into it, faultstack run --tap ... --bridge ...', async () => {
        l2ns = await lab!.addNamespace('l2');
        vm = await lab!.addNamespace('vm');
        const br = await lab!.bridge('l2');
        await lab!.vethToBridge('vm', 'l2', br, { addr: `${L2_VM}/24` });
        const s = await lab!.startStack(l2ns, ['--tap', lab!.ifname('t1'), '--bridge', br, '--addr', `${L2_STACK}/24`, '--services', 'echo,http,iperf3'], {
          timeoutMs: 30_000,
        });
        l2Mac = /\bmac ([0-9a-f:]{17})/.exec(s.readyLine)?.[1] ?? '';
        return { figure: `bridge ${br}, stack ${L2_STACK}${l2Mac ? ` at ${l2Mac}` : ''}, VM ${L2_VM}`, detail: s.readyLine };
      });
      if (!l2Up) l2Blocked = 'the L2 stack did not start';
      const l2step = (name: string, what: string, fn: () => Promise<StepOutcome>) =>
        l2Blocked && !blocked ? Promise.resolve(void records.push({ step: name, result: 'skipped', figure: l2Blocked, ms: 0 })) : step(name, what, fn);
      await l2step('l2 ping', `ping -c 5 ${L2_STACK} from the VM; its ip neigh`, async () => {
        const r = await ping(lab!, vm, L2_STACK, { count: 5, intervalMs: 200, waitMs: 2000 });
        const got = r.received;
        const avg = r.avgMs === null ? undefined : String(r.avgMs);
        const n = await lab!.exec(vm, 'ip', ['-j', 'neigh', 'show', L2_STACK], { timeoutMs: 5000 });
        const lladdr = (JSON.parse(n.stdout || '[]') as { lladdr?: string }[])[0]?.lladdr ?? '?';
        return {
          ok: got === 5 && (l2Mac === '' || lladdr === l2Mac),
          figure: `${got}/5 replies${avg ? `, avg ${avg} ms` : ''}; ip neigh: ${L2_STACK} at ${lladdr}`,
        };
      });
      await l2step('l2 http', `curl http://${L2_STACK}/bytes/1000000 from the VM`, async () => {
        return curlMegabyte(await curl(lab!, vm, `http://${L2_STACK}/bytes/1000000`, { maxTimeMs: 30_000 }));
      });
      await l2step('l2 iperf3', `iperf3 -c ${L2_STACK} -t 2, then -R, from the VM`, async () => {
        const out: string[] = [];
        for (const reverse of [false, true]) {
          const r = await iperf3(lab!, vm, L2_STACK, { seconds: 2, reverse });
          out.push(`${reverse ? 'download' : 'upload'} ${mbit(r.bitsPerSecond)}`);
          await new Promise((res) => setTimeout(res, 200)); // iperf3 -s takes a moment before the next test
        }
        return { figure: out.join(', ') };
      });
    }
    // KB 898060 on real routers: path MTU learned from real ICMP, then the buggy count.
    let pmtu: PmtuLab | null = null;
    if (!p.flags['skip-pmtu'])
      try {
        await step('pmtu lab', 'routers r1..r3 with 1400/1280/1000-byte hops, 12 client addresses', async () => {
          pmtu = await PmtuLab.create({ tag: 'dpm', clients: 12, path: 'B' });
          return { figure: `path B: ${HOPS.pathB} then a ${HOPS.tunnel}-byte tunnel hop` };
        });
        await step('pmtu hotfixed', 'downloads behind the 1000-byte hop learn it from ICMP', async () => {
          const pl = pmtu!;
          await pl.startStack({ mode: 'hotfixed' });
          const res = await pl.downloadAll(
            pl.clients.slice(0, 4).map((local) => ({ local, bytes: 300_000 })),
            { concurrency: 2, stallMs: 4000 },
          );
          const ok = res.filter((r) => r.outcome === 'ok').length;
          const routes = await pl.routes();
          const at1000 = routes.hosts.filter((h) => h.mtu === HOPS.tunnel).length;
          return { ok: ok === 4 && at1000 === 4, figure: `${ok}/4 downloads ok, ${at1000} host routes at MTU ${HOPS.tunnel}` };
        });
        await step('pmtu buggy', 'MaxIcmpHostRoutes=6, paths flapping: the count fills, new destinations stall', async () => {
          const pl = pmtu!;
          await pl.startStack({ mode: 'buggy', params: { MaxIcmpHostRoutes: 6 } });
          // Two destinations learn their MTU on both paths, again and again: each update counts.
          for (let round = 0; round < 3; round++) {
            for (const p of ['A', 'B'] as const) {
              await pl.usePath(p);
              await pl.downloadAll(
                pl.clients.slice(4, 6).map((local) => ({ local, bytes: 200_000 })),
                { concurrency: 2, stallMs: 3000 },
              );
            }
          }
          const res = await pl.downloadAll(
            pl.clients.slice(8, 11).map((local) => ({ local, bytes: 300_000 })),
            { concurrency: 3, stallMs: 3000 },
          );
          const stalled = res.filter((r) => r.outcome === 'stalled').length;
          const routes = await pl.routes();
          const c = await pl.counters();
          return {
            ok: stalled === 3 && routes.atLimit,
            figure: `count ${routes.hostRouteCount}/${routes.maxIcmpHostRoutes} with ${routes.hostRoutesReal} real routes; ${stalled}/3 new downloads stalled; ${c.FsIcmpIgnoredAtLimit ?? 0} ICMP ignored`,
          };
        });
      } finally {
        if (pmtu) await (pmtu as PmtuLab).cleanup().catch(() => {});
      }
    // KB 972183 on an NLB cluster: a strongSwan client that moves to another network.
    let nlb: NlbLab | null = null;
    if (!p.flags['skip-nlb'])
      try {
        await step('nlb lab', 'a bridge, 2 NLB hosts, routers to 2 client networks, a strongSwan client, the sticky application', async () => {
          nlb = await NlbLab.create({ hosts: 2, clients: 1, tag: 'dnl' });
          return { figure: 'cluster 198.18.70.100 (unicast), client networks 198.18.60.0/24 and 198.18.61.0/24' };
        });
        for (const fault of ['buggy', 'hotfixed'] as const) {
          await step(`nlb ${fault}`, 'the client leaves the service, moves to network B, comes back through a new tunnel', async () => {
            const r = await (nlb as NlbLab).runScenario({ fault, variant: 'ipsec', moves: 1, dpd: '4s', watchMs: 15_000 });
            const c = r.reports[0]!;
            const refused = c.events.find((e) => e.state === 'refused');
            const ok = r.served === 1 && (fault === 'buggy' ? c.refusals > 0 : c.refusals === 0);
            return {
              ok,
              figure: `${c.refusals} refusal(s), on one host ${c.oneHostMs[0] === null ? 'never' : `after ${(c.oneHostMs[0]! / 1000).toFixed(1)} s`}, connected to host ${c.events[c.events.length - 1]?.host ?? '?'}`,
              ...(refused ? { detail: `refused: ${refused.reason}` } : {}),
            };
          });
        }
      } finally {
        if (nlb) await (nlb as NlbLab).cleanup().catch(() => {});
      }

    // KB 319381: faultstack as a firewall between two namespaces, a playlist through the Firewall Client.
    let fwl: FirewallLab | null = null;
    if (!p.flags['skip-firewall'])
      try {
        await step(
          'firewall kb319381',
          'internal host | faultstack firewall | media server; 4 playlist items through the Firewall Client, buggy then hotfixed',
          async () => {
            fwl = await FirewallLab.create({ tag: 'dfw' });
            const f = fwl as FirewallLab;
            await f.startMediaServer();
            const player = ['--server', MEDIA, '--via', 'fwc', '--firewall', FW_IN, '--max-items', '4', '--grace-ms', '50'];
            await f.startFirewall({ mode: 'buggy', params: { MediaPortReleaseDelayMs: 200 } });
            const b = await f.play(player);
            const bs = await f.fw<{ drops: Record<string, number> }>('summary');
            const scans = (await f.events()).filter((e) => e.kind.startsWith('port-scan')).map((e) => String(e.data?.eventId));
            await f.startFirewall({ mode: 'hotfixed' });
            const h = await f.play(player);
            const hs = await f.fw<{ counters: Record<string, number> }>('summary');
            return {
              ok: b.played === 1 && b.stalled === 3 && b.addrInUse > 0 && h.played === 4 && hs.counters.FwDropped === 0,
              figure: `buggy: ${b.played}/4 items played, ${bs.drops['media-port-closed'] ?? 0} datagrams dropped, ${b.addrInUse} WSAEADDRINUSE, events ${scans.join(',') || 'none'}; hotfixed: ${h.played}/4 played, ${hs.counters.FwDropped} dropped`,
            };
          },
        );
      } finally {
        if (fwl) await (fwl as FirewallLab).cleanup().catch(() => {});
      }
  } finally {
    if (lab) {
      log('[demo] cleaning up ...');
      try {
        await (lab as Lab).cleanup();
      } catch (e) {
        records.push({ step: 'cleanup', result: 'FAILED', figure: oneLine((e as Error).message), ms: 0 });
      }
    }
  }

  const failed = records.filter((r) => r.result !== 'ok').length;
  if (json) {
    process.stdout.write(JSON.stringify({ ok: failed === 0, steps: records }, null, 2) + '\n');
  } else {
    log('');
    const time = (r: StepRecord) => (r.result === 'skipped' ? '-' : `${(r.ms / 1000).toFixed(1)} s`);
    log(table([['Step', 'Result', 'Time', 'Figure'], ...records.map((r) => [r.step, r.result, time(r), r.figure])], { right: [2] }).trimEnd());
    if (fs.existsSync(PCAP)) log(`\npackets: ${PCAP} (${fs.statSync(PCAP).size} bytes; open with tshark -r ${PCAP})`);
    log(failed ? `\n${failed} of ${records.length} steps did not pass` : `\nall ${records.length} steps passed`);
  }
  return failed ? 1 : 0;
}

if (require.main === module) {
  run(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`faultstack demo: ${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
