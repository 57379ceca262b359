/**
 * KB 898060 scenario and benchmark: `node dist/bench/pmtu.js [--json] [--quick]`.
 *
 * faultstack runs behind the PMTU lab's real Linux routers (lab/pmtu-lab.ts):
 * path A has one smaller hop (1400), path B two (1280, then a 1000-byte tunnel).
 * Destinations (client addresses) arrive in rounds of `perRound` new ones; each
 * destination downloads once in the round it arrives and once more in the next
 * round, and r1's route flips between path A and path B every round (the
 * article's "dynamic routing": the same destination is reached over both paths).
 * A destination first reached over A and then over B has its host route created
 * once and lowered twice; one first reached over B, created and lowered once.
 *
 * Measured, each mode on a fresh stack with the same MaxIcmpHostRoutes:
 *   buggy      new destinations served before the first one hangs, the host-route
 *              count and the real routes at that point, the share of downloads
 *              that stall from then on;
 *   hotfixed   stalls (none expected: the destinations stay below the limit);
 *   workaround buggy with the interface MTU at 576 (param MTU=576): stalls, and
 *              the throughput of one long download at 576 against the same download
 *              over the learned paths (1400 and 1000).
 * Writes bench/results/pmtu.json and bench/results/pmtu.svg (drawn here).
 * --quick: 50 destinations against a limit of 60 (~1 min); full: 600 against the
 * article's default of 1000.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { figure, type Figure } from './figures';
import { PmtuLab, DownloadResult, PathChoice, RoutesReply, HOPS } from '../lab/pmtu-lab';
import { parseFlags } from '../lab/flags';

export interface PmtuBenchOptions {
  quick?: boolean;
  progress?: (line: string) => void;
  /** Where pmtu.json and pmtu.svg go (default <repo>/bench/results). */
  outDir?: string;
  /** Overrides for the scenario's sizes. */
  destinations?: number;
  limit?: number;
  perRound?: number;
}

interface RoundSample {
  round: number;
  path: PathChoice;
  /** Distinct destinations reached so far (after this round). */
  destinations: number;
  downloads: number;
  stalled: number;
  hostRouteCount: number;
  hostRoutesReal: number;
  atLimit: boolean;
}

export interface ScenarioResult {
  mode: 'buggy' | 'hotfixed' | 'workaround';
  limit: number;
  destinations: number;
  downloads: number;
  stalled: number;
  /** New destinations served before the first new destination that hung (all of them when none hung). */
  servedBeforeBlackHole: number;
  /** The route sample of the round in which the first download hung (null: none hung). */
  atBlackHole: { hostRouteCount: number; hostRoutesReal: number } | null;
  /** Downloads from the first stalled round on, and how many of them stalled. */
  afterBlackHole: { downloads: number; stalled: number; share: number; newStalledShare: number } | null;
  rounds: RoundSample[];
  counters: Record<string, number>;
  seconds: number;
}

export interface ThroughputResult {
  label: string;
  mtu: number;
  /** TUN offloads on (TSO super-segments) or off. */
  offloads: boolean;
  mbitPerSec: number;
  /** Segments the stack sent per megabyte (a cost that does not depend on the machine's load). */
  segmentsPerMB: number;
}

export interface PmtuBenchResult {
  startedAt: string;
  quick: boolean;
  bytesPerDownload: number;
  stallMs: number;
  scenarios: ScenarioResult[];
  throughput: ThroughputResult[];
  figures: Figure[];
  files: string[];
}

const round1 = (v: number) => Math.round(v * 10) / 10;

async function scenario(
  pl: PmtuLab,
  mode: ScenarioResult['mode'],
  o: { n: number; limit: number; perRound: number; bytes: number; stallMs: number },
  log: (s: string) => void,
): Promise<ScenarioResult> {
  const t0 = Date.now();
  const params: Record<string, number> = { MaxIcmpHostRoutes: o.limit };
  if (mode === 'workaround') params.MTU = 576;
  await pl.startStack({ mode: mode === 'hotfixed' ? 'hotfixed' : 'buggy', params });
  const dests = pl.clients.slice(0, o.n);
  const firstVisit = new Map<string, DownloadResult>();
  const rounds: RoundSample[] = [];
  const all: { round: number; isNew: boolean; r: DownloadResult }[] = [];
  const roundsTotal = Math.ceil(o.n / o.perRound) + 1;
  for (let round = 0; round < roundsTotal; round++) {
    const p: PathChoice = round % 2 === 0 ? 'A' : 'B';
    await pl.usePath(p);
    const fresh = dests.slice(round * o.perRound, (round + 1) * o.perRound);
    const again = round > 0 ? dests.slice((round - 1) * o.perRound, round * o.perRound) : [];
    const jobs = [...fresh.map((d) => ({ d, isNew: true })), ...again.map((d) => ({ d, isNew: false }))];
    const res = await pl.downloadAll(
      jobs.map((j) => ({ local: j.d, bytes: o.bytes })),
      { concurrency: jobs.length, stallMs: o.stallMs },
    );
    res.forEach((r, i) => {
      all.push({ round, isNew: jobs[i]!.isNew, r });
      if (jobs[i]!.isNew) firstVisit.set(jobs[i]!.d, r);
    });
    const rt: RoutesReply = await pl.routes();
    const stalled = res.filter((r) => r.outcome !== 'ok').length;
    rounds.push({
      round,
      path: p,
      destinations: Math.min(o.n, (round + 1) * o.perRound),
      downloads: res.length,
      stalled,
      hostRouteCount: rt.hostRouteCount,
      hostRoutesReal: rt.hostRoutesReal,
      atLimit: rt.atLimit,
    });
    log(
      `  ${mode} round ${round + 1}/${roundsTotal} over path ${p}: ${res.length - stalled}/${res.length} downloads ok` +
        `${stalled ? `, ${stalled} hung` : ''}; host-route count ${rt.hostRouteCount} (limit ${o.limit}), real routes ${rt.hostRoutesReal}`,
    );
  }
  const counters = await pl.counters();
  let served = 0;
  for (const d of dests) {
    if (firstVisit.get(d)?.outcome !== 'ok') break;
    served++;
  }
  const firstStallRound = all.find((x) => x.r.outcome !== 'ok')?.round ?? -1;
  const after = firstStallRound < 0 ? null : all.filter((x) => x.round >= firstStallRound);
  const newAfter = after?.filter((x) => x.isNew) ?? [];
  const stalled = all.filter((x) => x.r.outcome !== 'ok').length;
  const sample = firstStallRound < 0 ? null : rounds[firstStallRound]!;
  return {
    mode,
    limit: o.limit,
    destinations: o.n,
    downloads: all.length,
    stalled,
    servedBeforeBlackHole: served,
    atBlackHole: sample ? { hostRouteCount: sample.hostRouteCount, hostRoutesReal: sample.hostRoutesReal } : null,
    afterBlackHole: after
      ? {
          downloads: after.length,
          stalled: after.filter((x) => x.r.outcome !== 'ok').length,
          share: after.filter((x) => x.r.outcome !== 'ok').length / after.length,
          newStalledShare: newAfter.length ? newAfter.filter((x) => x.r.outcome !== 'ok').length / newAfter.length : 0,
        }
      : null,
    rounds,
    counters: pick(counters, [
      'TcpExtPMTUFragNeeded',
      'FsHostRoutesCreated',
      'FsHostRoutesUpdated',
      'FsHostRoutesRemoved',
      'FsIcmpIgnoredAtLimit',
      'TcpRetransSegs',
      'TcpOutSegs',
    ]),
    seconds: round1((Date.now() - t0) / 1000),
  };
}

function pick(c: Record<string, number>, keys: string[]): Record<string, number> {
  const o: Record<string, number> = {};
  for (const k of keys) o[k] = c[k] ?? 0;
  return o;
}

/**
 * Throughput of one long download at a time, on a fresh hotfixed stack: over the
 * learned path MTUs (1400 on A, 1000 on B) and with the interface MTU at 576 (the
 * workaround), with the TUN offloads on (TSO: the kernel cuts the stack's
 * super-segments) and off (the stack writes every segment itself). The settings
 * take turns, `repeats` times, after one warm-up round; the median is reported.
 */
async function throughput(pl: PmtuLab, bytes: number, repeats: number, offloads: boolean, log: (s: string) => void): Promise<ThroughputResult[]> {
  await pl.startStack({ mode: 'hotfixed', offloads });
  const settings: { label: string; path: PathChoice; mtu: number; client: number; workaround: boolean }[] = [
    { label: 'path A, PMTU 1400 (learned)', path: 'A', mtu: HOPS.pathA, client: 0, workaround: false },
    { label: 'path B, PMTU 1000 (learned)', path: 'B', mtu: HOPS.tunnel, client: 1, workaround: false },
    { label: 'path B, interface MTU 576 (workaround)', path: 'B', mtu: 576, client: 2, workaround: true },
  ];
  const rates = settings.map(() => [] as number[]);
  const segs = settings.map(() => [] as number[]);
  for (let rep = -1; rep < repeats; rep++) {
    for (const [i, s] of settings.entries()) {
      await pl.usePath(s.path);
      await pl.setParam('MTU', s.workaround ? 576 : 0);
      const local = pl.clients[s.client]!;
      // Learns the path MTU first, so that the timed download does not include discovery.
      if (rep < 0) await pl.download(local, 200_000, 10_000);
      const before = await pl.counters();
      const r = await pl.download(local, bytes, 120_000);
      if (r.outcome !== 'ok') throw new Error(`throughput download over ${s.label} ${r.outcome}: ${r.error ?? ''}`);
      const after = await pl.counters();
      if (rep < 0) continue; // warm-up
      rates[i]!.push((bytes * 8) / (r.ms / 1000) / 1e6);
      segs[i]!.push((after.TcpOutSegs! - before.TcpOutSegs!) / (bytes / 1e6));
    }
  }
  await pl.setParam('MTU', 0);
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  return settings.map((s, i) => {
    const t: ThroughputResult = { label: s.label, mtu: s.mtu, offloads, mbitPerSec: round1(median(rates[i]!)), segmentsPerMB: Math.round(median(segs[i]!)) };
    log(
      `  offloads ${offloads ? 'on ' : 'off'}, ${s.label}: ${t.mbitPerSec} Mbit/s (median of ${repeats}: ${rates[i]!.map((v) => Math.round(v)).join(', ')}), ${t.segmentsPerMB} segments per MB`,
    );
    return t;
  });
}

export async function runPmtuBench(opts: PmtuBenchOptions = {}): Promise<PmtuBenchResult> {
  const quick = !!opts.quick;
  const log = opts.progress ?? ((s: string) => process.stderr.write(s + '\n'));
  const n = opts.destinations ?? (quick ? 80 : 600);
  const limit = opts.limit ?? (quick ? 100 : 1000);
  const perRound = opts.perRound ?? (quick ? 10 : 50);
  const bytes = 100_000;
  const stallMs = quick ? 2500 : 3000;
  const startedAt = new Date().toISOString();
  log(
    `pmtu (KB 898060): ${n} destinations, ${perRound} new per round, MaxIcmpHostRoutes ${limit}, /bytes/${bytes}, a download that has not finished after ${stallMs} ms counts as hung`,
  );
  const pl = await PmtuLab.create({ tag: 'pmb', clients: n });
  const scenarios: ScenarioResult[] = [];
  const tput: ThroughputResult[] = [];
  try {
    for (const mode of ['buggy', 'hotfixed', 'workaround'] as const) {
      log(`\n${mode}${mode === 'workaround' ? ' (buggy, interface MTU 576)' : ''}:`);
      scenarios.push(await scenario(pl, mode, { n, limit, perRound, bytes, stallMs }, log));
    }
    log('\nthroughput (hotfixed, one download at a time):');
    for (const offloads of [true, false]) tput.push(...(await throughput(pl, quick ? 20_000_000 : 100_000_000, quick ? 3 : 5, offloads, log)));
  } finally {
    await pl.cleanup();
  }

  const [buggy, fixed, work] = scenarios as [ScenarioResult, ScenarioResult, ScenarioResult];
  const off = (o: boolean) => (o ? 'offloads on' : 'offloads off');
  const figures: Figure[] = [
    figure({
      group: 'pmtu',
      key: 'pmtu.buggy.served',
      name: `buggy: new destinations served before the black hole (limit ${limit})`,
      value: buggy.servedBeforeBlackHole,
      unit: 'destinations',
      better: 'higher',
      note: buggy.atBlackHole ? `count ${buggy.atBlackHole.hostRouteCount} with ${buggy.atBlackHole.hostRoutesReal} real routes` : 'no black hole',
    }),
    figure({
      group: 'pmtu',
      key: 'pmtu.buggy.stalled',
      name: 'buggy: downloads that hang after the black hole',
      value: (buggy.afterBlackHole?.share ?? 0) * 100,
      unit: '%',
      better: 'lower',
    }),
    figure({
      group: 'pmtu',
      key: 'pmtu.buggy.newstalled',
      name: 'buggy: new destinations that hang after the black hole',
      value: (buggy.afterBlackHole?.newStalledShare ?? 0) * 100,
      unit: '%',
      better: 'lower',
    }),
    figure({
      group: 'pmtu',
      key: 'pmtu.hotfixed.stalled',
      name: `hotfixed: downloads that hang (${fixed.downloads} downloads)`,
      value: fixed.stalled,
      unit: 'downloads',
      better: 'lower',
    }),
    figure({
      group: 'pmtu',
      key: 'pmtu.workaround.stalled',
      name: `buggy + MTU 576: downloads that hang (${work.downloads} downloads)`,
      value: work.stalled,
      unit: 'downloads',
      better: 'lower',
    }),
    ...tput.map((t) =>
      figure({
        group: 'pmtu',
        key: `pmtu.tput.${t.offloads ? 'tso' : 'notso'}.${t.mtu}`,
        name: `throughput, ${t.label}, ${off(t.offloads)}`,
        value: t.mbitPerSec,
        unit: 'Mbit/s',
        better: 'higher',
        note: `${t.segmentsPerMB} segments/MB`,
      }),
    ),
  ];
  for (const o of [true, false]) {
    const set = tput.filter((t) => t.offloads === o);
    const at576 = set.find((t) => t.mtu === 576);
    const at1000 = set.find((t) => t.mtu === HOPS.tunnel);
    if (at576 && at1000 && at1000.mbitPerSec > 0) {
      figures.push(
        figure({
          group: 'pmtu',
          key: `pmtu.tput.${o ? 'tso' : 'notso'}.cost`,
          name: `workaround: throughput at MTU 576 against the same path at its PMTU 1000, ${off(o)}`,
          value: (at576.mbitPerSec / at1000.mbitPerSec) * 100,
          unit: '%',
          better: 'higher',
          note: `${at576.segmentsPerMB} vs ${at1000.segmentsPerMB} segments/MB`,
        }),
      );
    }
  }
  const outDir = opts.outDir ?? path.join(__dirname, '..', '..', 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const result: PmtuBenchResult = { startedAt, quick, bytesPerDownload: bytes, stallMs, scenarios, throughput: tput, figures, files: [] };
  const jsonFile = path.join(outDir, 'pmtu.json');
  const svgFile = path.join(outDir, 'pmtu.svg');
  result.files = [jsonFile, svgFile];
  fs.writeFileSync(jsonFile, JSON.stringify(result, null, 2) + '\n');
  fs.writeFileSync(svgFile, chart(result));
  log(`\nwrote ${jsonFile} and ${svgFile}`);
  return result;
}

export function summary(r: PmtuBenchResult): string {
  const [b, h, w] = r.scenarios as [ScenarioResult, ScenarioResult, ScenarioResult];
  const lines = [
    `buggy (MaxIcmpHostRoutes ${b.limit}): ${b.servedBeforeBlackHole} of ${b.destinations} new destinations served before the first hung` +
      (b.atBlackHole ? ` (count ${b.atBlackHole.hostRouteCount}, real routes ${b.atBlackHole.hostRoutesReal})` : ''),
    b.afterBlackHole
      ? `  after the black hole: ${b.afterBlackHole.stalled}/${b.afterBlackHole.downloads} downloads hung (${Math.round(b.afterBlackHole.share * 100)}%), new destinations ${Math.round(b.afterBlackHole.newStalledShare * 100)}%; ICMP ignored ${b.counters.FsIcmpIgnoredAtLimit}`
      : '  no black hole',
    `hotfixed: ${h.stalled}/${h.downloads} downloads hung; host routes ${h.rounds.at(-1)?.hostRoutesReal}, count ${h.rounds.at(-1)?.hostRouteCount}`,
    `workaround (buggy, MTU 576): ${w.stalled}/${w.downloads} downloads hung`,
    ...r.throughput.map((t) => `throughput ${t.label}, offloads ${t.offloads ? 'on' : 'off'}: ${t.mbitPerSec} Mbit/s, ${t.segmentsPerMB} segments/MB`),
  ];
  return lines.join('\n');
}

// ------------------------------------------------------------------ the chart

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceCeil(v: number): number {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * Three panels: the host-route count and the real routes against destinations
 * reached (buggy and hotfixed, the limit as a line, rounds with hung downloads
 * marked); hung downloads per mode; throughput per MTU.
 */
export function chart(r: PmtuBenchResult): string {
  const W = 1100,
    H = 440;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(
    `<text x="16" y="24" font-size="16" font-weight="bold">KB 898060: host routes counted vs real, under route changes between two paths (real Linux routers)</text>`,
  );
  const [b, h, w] = r.scenarios as [ScenarioResult, ScenarioResult, ScenarioResult];

  // Panel 1: lines.
  const x0 = 60,
    y0 = 60,
    pw = 520,
    ph = 300;
  const xmax = b.destinations;
  const ymax = niceCeil(Math.max(b.limit * 1.35, ...b.rounds.map((s) => s.hostRouteCount), ...h.rounds.map((s) => s.hostRouteCount)));
  const X = (v: number) => x0 + (v / xmax) * pw;
  const Y = (v: number) => y0 + ph - (v / ymax) * ph;
  out.push(`<text x="${x0}" y="${y0 - 12}" font-weight="bold">Host-route count after each round</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (ymax * i) / 5,
      gy = Y(v);
    out.push(`<line x1="${x0}" y1="${gy}" x2="${x0 + pw}" y2="${gy}" stroke="#e6e9ed"/>`);
    out.push(`<text x="${x0 - 6}" y="${gy + 4}" text-anchor="end" fill="#555">${Math.round(v)}</text>`);
    const xv = (xmax * i) / 5;
    out.push(`<text x="${X(xv)}" y="${y0 + ph + 16}" text-anchor="middle" fill="#555">${Math.round(xv)}</text>`);
  }
  out.push(
    `<text x="${x0 + pw / 2}" y="${y0 + ph + 34}" text-anchor="middle" fill="#555">destinations reached (each visited twice, the path flips every round)</text>`,
  );
  out.push(
    `<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y0 + ph}" stroke="#888"/><line x1="${x0}" y1="${y0 + ph}" x2="${x0 + pw}" y2="${y0 + ph}" stroke="#888"/>`,
  );
  // Rounds in which buggy downloads hung.
  for (const s of b.rounds) {
    if (!s.stalled) continue;
    const prev = s.round === 0 ? 0 : b.rounds[s.round - 1]!.destinations;
    const xa = X(prev),
      xb = X(Math.max(s.destinations, prev + 1e-9));
    out.push(
      `<rect x="${xa}" y="${y0}" width="${Math.max(2, xb - xa)}" height="${ph}" fill="#d64545" opacity="${(0.08 + (0.25 * s.stalled) / s.downloads).toFixed(2)}"/>`,
    );
  }
  out.push(`<line x1="${x0}" y1="${Y(b.limit)}" x2="${x0 + pw}" y2="${Y(b.limit)}" stroke="#333" stroke-dasharray="6 4"/>`);
  out.push(`<text x="${x0 + pw - 4}" y="${Y(b.limit) - 5}" text-anchor="end">MaxIcmpHostRoutes = ${b.limit}</text>`);
  const line = (s: RoundSample[], key: 'hostRouteCount' | 'hostRoutesReal', color: string, dash = '') => {
    const pts = [[X(0), Y(0)], ...s.map((q) => [X(q.destinations), Y(q[key])])].map(([a, c]) => `${a!.toFixed(1)},${c!.toFixed(1)}`).join(' ');
    out.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2.5"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
    for (const q of s) out.push(`<circle cx="${X(q.destinations).toFixed(1)}" cy="${Y(q[key]).toFixed(1)}" r="3" fill="${color}"/>`);
  };
  line(h.rounds, 'hostRouteCount', '#2e8b57');
  line(b.rounds, 'hostRoutesReal', '#c0392b', '5 4');
  line(b.rounds, 'hostRouteCount', '#c0392b');
  const legend: [string, string, string][] = [
    ['#c0392b', '', 'buggy: count'],
    ['#c0392b', '5 4', 'buggy: real routes'],
    ['#2e8b57', '', 'hotfixed: count (= real)'],
  ];
  legend.forEach(([c, d, t], i) => {
    const ly = y0 + 10 + i * 16;
    out.push(`<line x1="${x0 + 10}" y1="${ly}" x2="${x0 + 34}" y2="${ly}" stroke="${c}" stroke-width="2.5"${d ? ` stroke-dasharray="${d}"` : ''}/>`);
    out.push(`<text x="${x0 + 40}" y="${ly + 4}">${esc(t)}</text>`);
  });
  out.push(
    `<rect x="${x0 + 10}" y="${y0 + 52}" width="24" height="10" fill="#d64545" opacity="0.3"/><text x="${x0 + 40}" y="${y0 + 61}">buggy: rounds with hung downloads</text>`,
  );

  // Panel 2: hung downloads per mode.
  const bars = (px: number, title: string, rows: { label: string; value: number; text: string; color: string }[], max: number, rowH = 56) => {
    const bw = 160,
      top = y0 + 10;
    out.push(`<text x="${px}" y="${y0 - 12}" font-weight="bold">${esc(title)}</text>`);
    rows.forEach((row, i) => {
      const y = top + i * rowH;
      out.push(`<text x="${px}" y="${y + 10}">${esc(row.label)}</text>`);
      out.push(`<rect x="${px}" y="${y + 16}" width="${bw}" height="18" fill="#f0f2f4"/>`);
      out.push(`<rect x="${px}" y="${y + 16}" width="${Math.max(1, (row.value / max) * bw).toFixed(1)}" height="18" fill="${row.color}"/>`);
      out.push(`<text x="${px + bw + 6}" y="${y + 30}">${esc(row.text)}</text>`);
    });
  };
  const pct = (s: ScenarioResult) => (s.downloads ? (100 * s.stalled) / s.downloads : 0);
  bars(
    620,
    'Downloads that hung',
    [
      { label: `buggy: all ${b.downloads}`, value: pct(b), text: `${b.stalled} (${Math.round(pct(b))}%)`, color: '#c0392b' },
      {
        label: 'buggy: after the black hole',
        value: (b.afterBlackHole?.share ?? 0) * 100,
        text: `${Math.round((b.afterBlackHole?.share ?? 0) * 100)}%`,
        color: '#c0392b',
      },
      { label: `hotfixed: all ${h.downloads}`, value: pct(h), text: `${h.stalled} (${Math.round(pct(h))}%)`, color: '#2e8b57' },
      { label: `buggy + MTU 576: all ${w.downloads}`, value: pct(w), text: `${w.stalled} (${Math.round(pct(w))}%)`, color: '#e0a030' },
    ],
    100,
  );
  out.push(`<text x="620" y="${y0 + 250}" fill="#555">buggy: ${b.servedBeforeBlackHole} new destinations</text>`);
  out.push(`<text x="620" y="${y0 + 266}" fill="#555">served before the first one hung</text>`);
  if (b.atBlackHole)
    out.push(`<text x="620" y="${y0 + 282}" fill="#555">(count ${b.atBlackHole.hostRouteCount}, real routes ${b.atBlackHole.hostRoutesReal})</text>`);

  // Panel 3: throughput, offloads on and off.
  const tmax = niceCeil(Math.max(1, ...r.throughput.map((t) => t.mbitPerSec)));
  bars(
    850,
    'Throughput, one download',
    r.throughput.map((t) => ({
      label: `${t.mtu === 576 ? 'MTU 576 (workaround)' : `PMTU ${t.mtu}`}, TSO ${t.offloads ? 'on' : 'off'}`,
      value: t.mbitPerSec,
      text: `${Math.round(t.mbitPerSec)}`,
      color: t.mtu === 576 ? '#e0a030' : '#2f6fb0',
    })),
    tmax,
    42,
  );
  out.push(`<text x="850" y="${y0 + 10 + r.throughput.length * 42 + 8}" fill="#555">Mbit/s; segments per MB:</text>`);
  out.push(
    `<text x="850" y="${y0 + 10 + r.throughput.length * 42 + 24}" fill="#555">${esc([...new Set(r.throughput.map((t) => `${t.mtu}: ${t.segmentsPerMB}`))].join(', '))}</text>`,
  );
  out.push(
    `<text x="16" y="${H - 10}" fill="#777" font-size="11">${esc(`${r.quick ? 'quick run' : 'full run'} ${r.startedAt}; ${r.bytesPerDownload} bytes per download; a download unfinished after ${r.stallMs} ms counts as hung. Paths: A = one 1400 hop; B = 1280 hop + 1000 tunnel hop.`)}</text>`,
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ------------------------------------------------------------------ command line

async function main(): Promise<void> {
  const usage = 'usage: node dist/bench/pmtu.js [--quick] [--json]\n';
  const { values: f } = parseFlags('pmtu bench', process.argv.slice(2), {
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (f.help) {
    process.stdout.write(usage);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('the PMTU benchmark needs root (network namespaces, TUN)');
  const r = await runPmtuBench({ quick: f.quick === true });
  process.stdout.write(f.json ? JSON.stringify(r, null, 2) + '\n' : summary(r) + '\n');
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`pmtu bench: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}
