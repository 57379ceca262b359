/**
 * Writes a benchmark run to bench/results/: latest.json (every figure), latest.md (the
 * table, also pasted into docs/benchmarks.md), one SVG chart per section and unit,
 * and ratios.svg (every figure that has a kernel baseline, as a ratio to it).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fmtRatio, fmtSpread, type Figure } from './figures';
import { barChart, type BarRow } from './svg';

export interface RunInfo {
  startedAt: string;
  seconds: number;
  quick: boolean;
  node: string;
  kernel: string;
  cpus: number;
  cpuModel: string;
  /** 1-minute load average when the run started and ended: was the machine quiet? */
  loadBefore: number;
  loadAfter: number;
  commit: string;
  only: string[];
}

export interface Report {
  info: RunInfo;
  figures: Figure[];
}

function slug(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

export function markdownTable(figures: Figure[]): string {
  // Values are medians of their repetitions; (min-max, n) follows when there were several.
  const lines = ['| section | figure | faultstack (min-max, n) | kernel (veth) (min-max, n) | ratio | goal |', '|---|---|---:|---:|---:|---|'];
  for (const f of figures) {
    const tgt = f.target ? `${f.target.text}: ${f.met === null ? 'n/a' : f.met ? '**met**' : '**not met**'}` : '';
    const val = Number.isFinite(f.value) ? `${fmtSpread(f.value, f.spread)} ${f.unit}` : `failed${f.note ? `: ${f.note}` : ''}`;
    const base = f.baseline !== null ? `${fmtSpread(f.baseline, f.baselineSpread)} ${f.unit}` : '';
    lines.push(
      `| ${f.group} | ${f.name}${f.note && Number.isFinite(f.value) ? ` <br><sub>${f.note.replace(/\|/g, '/')}</sub>` : ''} | ${val} | ${base} | ${fmtRatio(f.ratio)} | ${tgt} |`,
    );
  }
  return lines.join('\n') + '\n';
}

export function markdownReport(r: Report): string {
  const i = r.info;
  const quiet = i.loadBefore < 0.5 * i.cpus && i.loadAfter < 1.0 * i.cpus;
  return [
    `# faultstack benchmark ${i.quick ? '(quick)' : ''}`.trim(),
    '',
    `${i.startedAt}, ${i.seconds.toFixed(0)} s; commit ${i.commit}; Node ${i.node}; Linux ${i.kernel}; ${i.cpus} x ${i.cpuModel}.`,
    `Load average ${i.loadBefore.toFixed(2)} before, ${i.loadAfter.toFixed(2)} after: ${quiet ? 'the machine was quiet' : 'the machine was NOT quiet (other work was running): read the figures as rough'}.`,
    i.only.length ? `Sections: ${i.only.join(', ')}.` : '',
    '',
    'Ratio = faultstack / kernel over veth, same tool, same run (for µs and bytes, above 1 means slower or bigger); for the ipsec section the baseline is a strongSwan responder (kernel-libipsec) instead, as this kernel has no ESP.',
    '',
    markdownTable(r.figures),
  ].join('\n');
}

export function writeReport(r: Report, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const put = (name: string, text: string) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    written.push(p);
  };
  put('latest.json', JSON.stringify(r, null, 2) + '\n');
  put('latest.md', markdownReport(r));
  // One chart per section and unit.
  const groups = new Map<string, Figure[]>();
  for (const f of r.figures) {
    if (!Number.isFinite(f.value)) continue;
    const k = `${f.group}|${f.unit}`;
    groups.set(k, [...(groups.get(k) ?? []), f]);
  }
  for (const [k, figs] of groups) {
    const [group, unit] = k.split('|') as [string, string];
    const micro = group === 'micro';
    const rows: BarRow[] = figs.map((f) => ({
      label: f.name.length > 52 ? `${f.name.slice(0, 50)}…` : f.name,
      values: micro ? [1e9 / f.value] : [f.value, f.baseline],
      ranges: micro
        ? []
        : [
            f.spread && f.spread.n > 1 ? [f.spread.min, f.spread.max] : null,
            f.baselineSpread && f.baselineSpread.n > 1 ? [f.baselineSpread.min, f.baselineSpread.max] : null,
          ],
      target: f.target && f.target.kind === 'absolute' ? f.target.value : f.target && f.baseline !== null ? f.target.value * f.baseline : null,
    }));
    const unitSlug = slug(unit === 'µs' ? 'us' : unit === '%' ? 'percent' : unit) || 'value';
    put(
      `${slug(group)}-${unitSlug}.svg`,
      barChart({
        title: micro ? 'micro-benchmarks: time per operation' : `${group} (${unit})`,
        unit: micro ? 'ns per operation' : unit,
        series: micro ? ['faultstack'] : ['faultstack', 'Linux kernel over veth'],
        rows,
      }),
    );
  }
  const withBase = r.figures.filter((f) => f.ratio !== null && Number.isFinite(f.ratio));
  if (withBase.length) {
    put(
      'ratios.svg',
      barChart({
        title: 'faultstack / Linux kernel over veth (same tool, same run)',
        unit: 'ratio (1 = as the kernel)',
        series: ['ratio'],
        rows: withBase.map((f) => ({
          label: `${f.group}: ${f.name.length > 52 ? `${f.name.slice(0, 50)}…` : f.name} (${f.unit})`,
          values: [f.ratio],
          // The ratio's range: the stack's extremes over the baseline's median.
          ranges: [f.spread && f.spread.n > 1 && f.baseline ? [f.spread.min / f.baseline, f.spread.max / f.baseline] : null],
          target: f.target && f.target.kind === 'ratio' ? f.target.value : null,
        })),
        reference: 1,
        clampMax: 3,
      }),
    );
  }
  return written;
}

export function machineInfo(): Pick<RunInfo, 'node' | 'kernel' | 'cpus' | 'cpuModel'> {
  return { node: process.version, kernel: os.release(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown' };
}
