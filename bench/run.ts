/**
 * `make bench`: the benchmark suite.
 *   node dist/bench/run.js [--quick] [--json] [--only micro,bulk,...] [--out DIR]
 *
 * Sections: micro (tinybench), bulk, offoff, connrate, latency, synflood, floodmem, memory,
 * multiqueue (real traffic in lab namespaces, each against the Linux kernel over a
 * veth pair in the same run), ethernet (iperf3 through TAP + a Linux bridge against the
 * kernel over veth + the same bridge, bench/ethernet.ts), and leak / pmtu / ipsec when
 * bench/leak.ts / pmtu.ts / ipsec.ts exist (ipsec's baseline is a strongSwan responder,
 * not the kernel: this kernel has no ESP).
 * Progress goes to stderr; the report to bench/results/ (JSON, Markdown, SVG); a short
 * summary (or, with --json, the whole report) to stdout.
 * --quick: about 1 s per figure and smaller counts, for development on a busy machine.
 */
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { figure, fmtRatio, fmtSpread, progress, type Figure } from './figures';
import { machineInfo, writeReport, type Report } from './report';
import { parseFlags } from '../lab/flags';
import { UsageError } from '../stack/util/errors';

const SECTIONS = [
  'micro',
  'bulk',
  'offoff',
  'connrate',
  'latency',
  'synflood',
  'floodmem',
  'memory',
  'multiqueue',
  'ethernet',
  'leak',
  'pmtu',
  'ipsec',
  'firewall',
  'nlb',
];

interface Args {
  quick: boolean;
  json: boolean;
  only: Set<string>;
  out: string;
}

const USAGE = `usage: node dist/bench/run.js [--quick] [--json] [--only ${SECTIONS.join(',')}] [--out DIR]\n`;

function parseArgs(argv: string[]): Args | 'help' {
  const { values: v } = parseFlags('bench', argv, {
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    only: { type: 'string', multiple: true },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) return 'help';
  const only = new Set<string>();
  for (const s of (v.only ?? []).flatMap((x) => x.split(',')).filter(Boolean)) {
    if (!SECTIONS.includes(s)) throw new UsageError(`bench: unknown section ${s} (known: ${SECTIONS.join(', ')})`);
    only.add(s);
  }
  return {
    quick: v.quick === true,
    json: v.json === true,
    only,
    out: v.out !== undefined ? path.resolve(v.out) : path.join(__dirname, '..', '..', 'bench', 'results'),
  };
}

/** A section another module provides (bench/leak.ts, bench/pmtu.ts), loaded only if present. */
async function optionalSection(name: string, file: string, fn: string, quick: boolean): Promise<Figure[]> {
  try {
    require.resolve(`./${file}`);
  } catch {
    progress(`  ${name}: skipped (bench/${file}.ts is not there yet)`);
    return [];
  }
  const mod = require(`./${file}`) as Record<string, unknown>;
  const run = mod[fn];
  if (typeof run !== 'function') {
    progress(`  ${name}: skipped (bench/${file}.ts does not export ${fn})`);
    return [];
  }
  const result = await (run as (o: unknown) => Promise<unknown>)({ quick, progress });
  // Accept figures (or figure-like rows); anything else is kept as a note.
  const rows = Array.isArray(result) ? result : (result as { figures?: unknown[] } | null)?.figures;
  if (Array.isArray(rows)) {
    return rows.map((r, i) => {
      const o = r as Partial<Figure> & { name?: string; value?: number; unit?: string };
      const fig = figure({
        group: o.group ?? name,
        key: o.key ?? `${name}.${i}`,
        name: o.name ?? `${name} ${i}`,
        value: Number(o.value),
        unit: o.unit ?? '',
        better: o.better,
        baseline: o.baseline ?? null,
        target: o.target ?? null,
        note: o.note,
      });
      if (o.spread) fig.spread = o.spread;
      if (o.baselineSpread) fig.baselineSpread = o.baselineSpread;
      return fig;
    });
  }
  return [figure({ group: name, key: `${name}.result`, name: `${name} result`, value: NaN, unit: '', note: JSON.stringify(result).slice(0, 300) })];
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: path.join(__dirname, '..', '..'), encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  let args: Args | 'help';
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.message}\n${USAGE}`);
    process.exit(2);
  }
  if (args === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  const want = (s: string) => args.only.size === 0 || args.only.has(s);
  const t0 = Date.now();
  const loadBefore = os.loadavg()[0]!;
  progress(
    `faultstack bench${args.quick ? ' (quick)' : ''}: load average ${loadBefore.toFixed(2)} on ${os.cpus().length} cores${loadBefore > os.cpus().length * 0.5 ? ' -- the machine is busy, figures will be rough' : ''}`,
  );
  const figures: Figure[] = [];
  if (want('micro')) {
    progress('\n== micro (tinybench)');
    const { runMicro } = await import('./micro');
    figures.push(...(await runMicro({ quick: args.quick })));
  }
  const traffic = ['bulk', 'offoff', 'connrate', 'latency', 'synflood', 'floodmem', 'memory', 'multiqueue'].filter(want);
  if (traffic.length) {
    if (process.getuid?.() !== 0) {
      progress('\nreal-traffic sections need root (namespaces, TUN): skipped');
    } else {
      const { runTraffic } = await import('./traffic');
      figures.push(...(await runTraffic({ quick: args.quick, only: new Set(traffic) })));
    }
  }
  if (want('ethernet')) {
    progress('\n== ethernet');
    figures.push(...(await optionalSection('ethernet', 'ethernet', 'runEthernetBench', args.quick)));
  }
  if (want('leak')) {
    progress('\n== leak');
    figures.push(...(await optionalSection('leak', 'leak', 'runLeakBench', args.quick)));
  }
  if (want('pmtu')) {
    progress('\n== pmtu');
    figures.push(...(await optionalSection('pmtu', 'pmtu', 'runPmtuBench', args.quick)));
  }
  if (want('firewall')) {
    progress('\n== firewall (forwarding through faultstack vs the kernel forwarding; KB 319381 per mode)');
    figures.push(...(await optionalSection('firewall', 'firewall', 'runFirewallBench', args.quick)));
  }
  if (want('ipsec')) {
    progress('\n== ipsec (strongSwan client: faultstack vs a strongSwan responder)');
    figures.push(...(await optionalSection('ipsec', 'ipsec', 'runIpsecBench', args.quick)));
  }
  if (want('nlb')) {
    progress('\n== nlb (an NLB cluster of 1-3 hosts vs one host; convergence after a kill)');
    figures.push(...(await optionalSection('nlb', 'nlb', 'runNlbBench', args.quick)));
  }

  const report: Report = {
    info: {
      startedAt: new Date(t0).toISOString(),
      seconds: (Date.now() - t0) / 1000,
      quick: args.quick,
      ...machineInfo(),
      loadBefore,
      loadAfter: os.loadavg()[0]!,
      commit: gitCommit(),
      only: [...args.only],
    },
    figures,
  };
  const files = writeReport(report, args.out);
  if (args.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return;
  }
  const lines = [
    '',
    `summary (${figures.length} figures, ${report.info.seconds.toFixed(0)} s; load ${loadBefore.toFixed(1)} -> ${report.info.loadAfter.toFixed(1)}):`,
  ];
  for (const f of figures) {
    if (f.group === 'micro') continue;
    const r = f.ratio !== null ? `  ${fmtRatio(f.ratio).padStart(5)} of ${f.group === 'ipsec' ? 'strongSwan' : f.group === 'nlb' ? 'one host' : 'kernel'}` : '';
    const t = f.target ? `  [${f.target.text}: ${f.met ? 'met' : 'NOT met'}]` : '';
    const base = f.baselineSpread && f.baselineSpread.n > 1 ? ` (kernel ${fmtSpread(f.baseline ?? NaN, f.baselineSpread)})` : '';
    lines.push(`  ${`${f.group}: ${f.name}`.padEnd(66)} ${Number.isFinite(f.value) ? `${fmtSpread(f.value, f.spread)} ${f.unit}` : 'failed'}${r}${base}${t}`);
  }
  const targets = figures.filter((f) => f.target);
  lines.push(`targets met: ${targets.filter((f) => f.met).length}/${targets.length}`);
  lines.push(`report: ${files.find((f) => f.endsWith('latest.md'))} (+ ${files.length - 1} files)`);
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((e: Error) => {
  process.stderr.write(`bench: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
