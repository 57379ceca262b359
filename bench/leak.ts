/**
 * Benchmark "leak behaviour on real traffic" (KB 903927), buggy against hotfixed.
 *
 *   node dist/bench/leak.js [--quick] [--json] [--out DIR]
 *
 * For each mode, in a lab namespace of its own: the stack with the mtls service (listen
 * backlog 2, one accept every 500 ms, Server 2003 SP1 defaults otherwise, TcpMaxHalfOpen
 * 100), a bounded SYN flood from spoofed lab sources running the whole time
 * (lab/synflood.ts: it exhausts the backlog, which triggers SYN attack protection,
 * and keeps more than TcpMaxHalfOpen connections half-open, which keeps it on), and
 * rounds of Linux TLS clients (Node's TLS over the kernel's TCP, mutual TLS with the
 * certificates the service made). Every client past the backlog connects, sends its
 * ClientHello and is reset: one reset connection each.
 *
 * After each round, `faultstack stats --json --gc` forces a full GC in the stack and reports
 * heapUsedAfterGc (the V8 heap) and arrayBuffersAfterGc (Buffer bytes, outside the V8
 * heap). The figure is the least-squares slope of heap + Buffers against the count of
 * reset connections (FsBacklogResets), from a baseline taken once the flood's half-open
 * population is steady (half-open connections live 9 s under protection) and two warm-up
 * rounds have run (TLS contexts, JIT code).
 *
 * Writes bench/results/leak.json and bench/results/leak.svg (memory against reset
 * connections, both modes); prints bytes per reset connection for each mode. `make bench`
 * calls runLeakBench() through bench/run.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, LabProcess, repoRoot } from '../lab/lab';
import { parseFlags } from '../lab/flags';
import { UsageError } from '../stack/util/errors';
import { figure, fmt, progress as stderrProgress, type Figure } from './figures';

export interface LeakBenchOptions {
  quick?: boolean;
  progress?: (line: string) => void;
  /** Results directory (default bench/results in the repository). */
  out?: string;
}

export type LeakMode = 'buggy' | 'hotfixed';

export interface LeakSample {
  /** FsBacklogResets when the sample was taken. */
  resets: number;
  heapUsedAfterGc: number;
  arrayBuffersAfterGc: number;
  /** heapUsedAfterGc + arrayBuffersAfterGc */
  total: number;
  /** Half-open connections on the listener at that moment (the flood's). */
  halfOpen: number;
  /** Seconds since the stack started. */
  t: number;
}

export interface LeakModeResult {
  mode: LeakMode;
  samples: LeakSample[];
  /** Slope of heap + Buffers after GC against reset connections, bytes per reset. */
  bytesPerReset: number;
  /** The same for the V8 heap alone. */
  heapBytesPerReset: number;
  /** Reset connections over which the slope was measured. */
  resetsMeasured: number;
  clients: { count: number; refused: number; reset: number; served: number; other: number };
  flood: { sent: number; ratePps: number; seconds: number };
  /** The first protection event: which threshold, its value and limit. */
  protection: { threshold: string; value: number; limit: number } | null;
  /** The stack's own account (stats.leak): what the buggy path kept. */
  leak: { connections: number; bytes: number; resets: number; freed: number };
}

export interface LeakBenchResult {
  startedAt: string;
  quick: boolean;
  params: Record<string, string | number>;
  rounds: number;
  clientsPerRound: number;
  modes: LeakModeResult[];
  seconds: number;
}

const STACK = '198.18.0.2';
const PORT = 5061;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Least-squares slope of ys against xs. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0,
    den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den > 0 ? num / den : NaN;
}

interface BurstResult {
  count: number;
  refused: number;
  reset: number;
  served: number;
  other: number;
  errors: Record<string, number>;
}

async function runMode(
  lab: Lab,
  mode: LeakMode,
  cfg: { quick: boolean; rounds: number; warmRounds: number; perRound: number; ratePps: number; params: Record<string, string | number> },
  say: (l: string) => void,
  tmp: string,
): Promise<LeakModeResult> {
  const name = mode === 'buggy' ? 'lb' : 'lh';
  const ns = await lab.addNamespace(name);
  const control = path.join(tmp, `${name}.sock`);
  const certs = path.join(tmp, `${name}-certs`);
  const root = repoRoot();
  const params = Object.entries(cfg.params).flatMap(([k, v]) => ['--param', `${k}=${v}`]);
  const t0 = Date.now();
  await lab.startStack(
    ns,
    [
      '--tun',
      lab.ifname(name),
      '--addr',
      `${STACK}/24`,
      '--host-addr',
      '198.18.0.1/24',
      '--services',
      'mtls',
      '--control',
      control,
      '--fault',
      `kb903927=${mode}`,
      ...params,
    ],
    { env: { FAULTSTACK_CERT_DIR: certs } },
  );
  const cli = async (args: string[]) => {
    const r = await lab.cli(ns, [...args, '--control', control], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`faultstack ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const stats = async () =>
    JSON.parse(await cli(['stats', '--json', '--gc'])) as {
      counters: Record<string, number>;
      heapUsedAfterGc: number;
      arrayBuffersAfterGc: number;
      listeners: { port: number; synQueue: number }[];
      leak: LeakModeResult['leak'];
    };
  const sample = async (): Promise<LeakSample> => {
    const st = await stats();
    return {
      resets: st.counters.FsBacklogResets ?? 0,
      heapUsedAfterGc: st.heapUsedAfterGc,
      arrayBuffersAfterGc: st.arrayBuffersAfterGc,
      total: st.heapUsedAfterGc + st.arrayBuffersAfterGc,
      halfOpen: st.listeners.find((l) => l.port === PORT)?.synQueue ?? 0,
      t: (Date.now() - t0) / 1000,
    };
  };
  const clients = { count: 0, refused: 0, reset: 0, served: 0, other: 0 };
  const burst = async (n: number): Promise<BurstResult> => {
    const r = await lab.exec(ns, process.execPath, [path.join(root, 'lab', 'clients', 'tls-burst.js'), STACK, String(PORT), certs, String(n)], {
      timeoutMs: 60_000,
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (!line.startsWith('{')) throw new Error(`TLS clients failed: ${r.stderr.trim() || line}`);
    const b = JSON.parse(line) as BurstResult;
    clients.count += b.count;
    clients.refused += b.refused;
    clients.reset += b.reset;
    clients.served += b.served;
    clients.other += b.other;
    return b;
  };

  // The flood runs for the whole measurement and stops by itself (bounded in count and time).
  const floodSeconds = Math.min(60, Math.ceil(12 + (cfg.warmRounds + cfg.rounds) * 4));
  const flood: LabProcess = lab.spawn(ns, process.execPath, [
    path.join(root, 'dist', 'lab', 'synflood.js'),
    '--target',
    `${STACK}:${PORT}`,
    '--source',
    '198.18.100.0/22',
    '--count',
    String(cfg.ratePps * floodSeconds),
    '--duration',
    String(floodSeconds),
    '--rate',
    String(cfg.ratePps),
    '--json',
    '--quiet',
  ]);
  const floodStart = Date.now();
  say(
    `  ${mode}: SYN flood from 198.18.100.0/22 at ${cfg.ratePps} SYN/s (at most ${floodSeconds} s), then ${cfg.rounds} rounds of ${cfg.perRound} TLS clients`,
  );
  await sleep(1_000);
  // Warm-up rounds: TLS contexts, JIT code and the like are allocated once, not per reset.
  for (let i = 0; i < cfg.warmRounds; i++) {
    const warm = await burst(cfg.perRound);
    say(`  ${mode}: warm-up round ${i + 1}/${cfg.warmRounds}: ${warm.reset} reset, ${warm.refused} refused, ${warm.served} served`);
  }
  // Half-open connections live 9 s under protection: wait for a steady population.
  const steadyAt = floodStart + 10_000;
  if (Date.now() < steadyAt) await sleep(steadyAt - Date.now());
  const samples: LeakSample[] = [await sample()];
  say(`  ${mode}: baseline: ${samples[0]!.resets} resets, ${(samples[0]!.total / 1048576).toFixed(2)} MiB (${samples[0]!.halfOpen} half-open)`);
  for (let i = 0; i < cfg.rounds; i++) {
    const b = await burst(cfg.perRound);
    const s = await sample();
    samples.push(s);
    say(
      `  ${mode}: round ${i + 1}/${cfg.rounds}: ${b.reset} reset, ${b.refused} refused, ${b.served} served, ${b.other} other; ` +
        `${s.resets} resets in all, heap ${(s.heapUsedAfterGc / 1048576).toFixed(2)} MiB + Buffers ${(s.arrayBuffersAfterGc / 1048576).toFixed(2)} MiB (${s.halfOpen} half-open)`,
    );
  }
  const st = await stats();
  const events = (await cli(['events', '--json']))
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { kind: string; data?: Record<string, unknown> });
  const trig = events.find((e) => e.kind === 'syn-protection-triggered');
  await flood.kill(2000);
  const floodOut = flood.stdout.trim().split('\n').pop() ?? '';
  let sent = 0;
  try {
    sent = (JSON.parse(floodOut) as { sent: number }).sent;
  } catch {
    sent = 0;
  }
  const xs = samples.map((s) => s.resets);
  const result: LeakModeResult = {
    mode,
    samples,
    bytesPerReset: slope(
      xs,
      samples.map((s) => s.total),
    ),
    heapBytesPerReset: slope(
      xs,
      samples.map((s) => s.heapUsedAfterGc),
    ),
    resetsMeasured: xs[xs.length - 1]! - xs[0]!,
    clients,
    flood: { sent, ratePps: cfg.ratePps, seconds: (Date.now() - floodStart) / 1000 },
    protection: trig?.data ? { threshold: String(trig.data.threshold), value: Number(trig.data.value), limit: Number(trig.data.limit) } : null,
    leak: st.leak,
  };
  say(`  ${mode}: ${fmt(result.bytesPerReset)} bytes per reset connection (heap alone ${fmt(result.heapBytesPerReset)}), over ${result.resetsMeasured} resets`);
  return result;
}

// ---------------------------------------------------------------------------
// The chart
// ---------------------------------------------------------------------------

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Tick step: 1, 2 or 5 times a power of ten, giving about `n` ticks over `span`. */
function tickStep(span: number, n: number): number {
  const raw = span / Math.max(1, n);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

interface Series {
  label: string;
  color: string;
  dash?: string;
  points: [number, number][];
}

/** A line chart: memory after GC (MiB) against reset connections, one line per series. */
export function leakChart(result: LeakBenchResult): string {
  const colors: Record<LeakMode, string> = { buggy: '#c0392b', hotfixed: '#2f6fb0' };
  const series: Series[] = [];
  for (const m of result.modes) {
    series.push({
      label: `${m.mode}: V8 heap + Buffers (${fmt(m.bytesPerReset)} B/reset)`,
      color: colors[m.mode],
      points: m.samples.map((s) => [s.resets, s.total / 1048576]),
    });
  }
  for (const m of result.modes) {
    series.push({
      label: `${m.mode}: V8 heap alone (${fmt(m.heapBytesPerReset)} B/reset)`,
      color: colors[m.mode],
      dash: '5,4',
      points: m.samples.map((s) => [s.resets, s.heapUsedAfterGc / 1048576]),
    });
  }
  const W = 760,
    H = 460,
    L = 80,
    R = 24,
    T = 56,
    B = 110;
  const pw = W - L - R,
    ph = H - T - B;
  const all = series.flatMap((s) => s.points);
  const xMax0 = Math.max(1, ...all.map((p) => p[0]));
  const yMax0 = Math.max(1, ...all.map((p) => p[1]));
  const xStep = tickStep(xMax0, 6),
    yStep = tickStep(yMax0, 6);
  const xMax = Math.ceil(xMax0 / xStep) * xStep,
    yMax = Math.ceil(yMax0 / yStep) * yStep;
  const tick = (v: number, step: number) => v.toFixed(Math.max(0, -Math.floor(Math.log10(step))));
  const x = (v: number) => L + (v / xMax) * pw;
  const y = (v: number) => T + ph - (v / yMax) * ph;
  const o: string[] = [];
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  o.push('<rect width="100%" height="100%" fill="#ffffff"/>');
  o.push(
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">KB 903927: memory after a forced GC against reset connections</text>`,
  );
  o.push(
    `<text x="${W / 2}" y="40" text-anchor="middle" fill="#555">mtls service, Linux TLS clients and a SYN flood; ${result.quick ? 'quick run' : 'full run'}, ${esc(result.startedAt.slice(0, 16).replace('T', ' '))} UTC</text>`,
  );
  // Grid and ticks.
  for (let v = 0; v <= xMax + 1e-9; v += xStep) {
    o.push(`<line x1="${x(v).toFixed(1)}" y1="${T}" x2="${x(v).toFixed(1)}" y2="${T + ph}" stroke="#eee"/>`);
    o.push(`<text x="${x(v).toFixed(1)}" y="${T + ph + 16}" text-anchor="middle">${tick(v, xStep)}</text>`);
  }
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    o.push(`<line x1="${L}" y1="${y(v).toFixed(1)}" x2="${L + pw}" y2="${y(v).toFixed(1)}" stroke="#eee"/>`);
    o.push(`<text x="${L - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${tick(v, yStep)}</text>`);
  }
  o.push(`<line x1="${L}" y1="${T + ph}" x2="${L + pw}" y2="${T + ph}" stroke="#333"/>`);
  o.push(`<line x1="${L}" y1="${T}" x2="${L}" y2="${T + ph}" stroke="#333"/>`);
  // Axis labels.
  o.push(`<text x="${L + pw / 2}" y="${T + ph + 36}" text-anchor="middle" font-weight="bold">reset connections (FsBacklogResets)</text>`);
  o.push(`<text transform="translate(20 ${T + ph / 2}) rotate(-90)" text-anchor="middle" font-weight="bold">memory after GC (MiB)</text>`);
  // Lines and points.
  for (const s of series) {
    const pts = s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ');
    o.push(`<polyline points="${pts}" fill="none" stroke="${s.color}" stroke-width="${s.dash ? 1.5 : 2.5}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    if (!s.dash) for (const [a, b] of s.points) o.push(`<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
  }
  // Legend under the plot.
  series.forEach((s, i) => {
    const lx = L + (i % 2) * (pw / 2),
      ly = T + ph + 60 + Math.floor(i / 2) * 18;
    o.push(
      `<line x1="${lx}" y1="${ly - 4}" x2="${lx + 26}" y2="${ly - 4}" stroke="${s.color}" stroke-width="${s.dash ? 1.5 : 2.5}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
    );
    o.push(`<text x="${lx + 32}" y="${ly}">${esc(s.label)}</text>`);
  });
  o.push('</svg>');
  return o.join('\n') + '\n';
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

export async function runLeakBench(opts: LeakBenchOptions = {}): Promise<{ figures: Figure[]; result: LeakBenchResult; files: string[] }> {
  const say = opts.progress ?? stderrProgress;
  const quick = !!opts.quick;
  if (process.getuid?.() !== 0) throw new Error('the leak benchmark needs root (network namespaces, TUN, raw sockets)');
  const rounds = quick ? 3 : 6;
  const perRound = quick ? 100 : 200;
  const params = {
    MtlsListenBacklog: 2,
    MtlsAcceptIntervalMs: 500,
    TcpMaxHalfOpen: 100,
    TcpMaxPortsExhausted: 5,
    SynAttackProtect: 2,
  };
  const ratePps = quick ? 50 : 100;
  const t0 = Date.now();
  const tmp = fs.mkdtempSync(path.join(require('node:os').tmpdir() as string, 'fs-leak-'));
  const lab = await Lab.create('leak');
  const modes: LeakModeResult[] = [];
  try {
    for (const mode of ['buggy', 'hotfixed'] as const) {
      modes.push(await runMode(lab, mode, { quick, rounds, warmRounds: 2, perRound, ratePps, params }, say, tmp));
    }
  } finally {
    await lab.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const result: LeakBenchResult = {
    startedAt: new Date(t0).toISOString(),
    quick,
    params,
    rounds,
    clientsPerRound: perRound,
    modes,
    seconds: (Date.now() - t0) / 1000,
  };
  const out = opts.out ?? path.join(repoRoot(), 'bench', 'results');
  fs.mkdirSync(out, { recursive: true });
  const files = [path.join(out, 'leak.json'), path.join(out, 'leak.svg')];
  fs.writeFileSync(files[0]!, JSON.stringify(result, null, 2) + '\n');
  fs.writeFileSync(files[1]!, leakChart(result));
  const figures: Figure[] = [];
  for (const m of modes) {
    figures.push(
      figure({
        group: 'leak',
        key: `leak.${m.mode}.bytesPerReset`,
        name: `${m.mode}: heap + Buffers after GC per reset connection`,
        value: m.bytesPerReset,
        unit: 'B/reset',
        better: 'lower',
        note: `over ${m.resetsMeasured} resets; V8 heap alone ${fmt(m.heapBytesPerReset)} B/reset; protection triggered by ${m.protection?.threshold ?? 'nothing'}`,
      }),
    );
    figures.push(
      figure({
        group: 'leak',
        key: `leak.${m.mode}.heapBytesPerReset`,
        name: `${m.mode}: V8 heap after GC per reset connection`,
        value: m.heapBytesPerReset,
        unit: 'B/reset',
        better: 'lower',
      }),
    );
  }
  return { figures, result, files };
}

async function main(argv: string[]): Promise<number> {
  const usage = 'usage: node dist/bench/leak.js [--quick] [--json] [--out DIR]\n';
  let flags;
  try {
    flags = parseFlags('leak', argv, {
      quick: { type: 'boolean' },
      json: { type: 'boolean' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    }).values;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.message}\n${usage}`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write(usage);
    return 0;
  }
  const quick = flags.quick === true,
    json = flags.json === true,
    out = flags.out !== undefined ? path.resolve(flags.out) : undefined;
  stderrProgress(`leak benchmark (KB 903927)${quick ? ', quick' : ''}`);
  const { result, files } = await runLeakBench({ quick, out });
  if (json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else {
    const lines = result.modes.map(
      (m) =>
        `${m.mode.padEnd(8)} ${fmt(m.bytesPerReset).padStart(8)} bytes per reset connection (V8 heap alone ${fmt(m.heapBytesPerReset)}), ` +
        `${m.resetsMeasured} resets measured; the stack's own account: ${m.leak.connections} connections, ${m.leak.bytes.toLocaleString('en-US')} bytes kept`,
    );
    process.stdout.write(`${lines.join('\n')}\nwritten: ${files.join(', ')} (${result.seconds.toFixed(0)} s)\n`);
  }
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.stdout.write('', () => process.exit(code)),
    (e: Error) => {
      process.stderr.write(`leak: ${e.message}\n`);
      process.exit(1);
    },
  );
}
