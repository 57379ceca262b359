/**
 * One measured figure and how it compares: the value, the kernel baseline measured
 * in the same run with the same tool (when there is one), their ratio, and the
 * target from the throughput issue (when one applies).
 */
export type Better = 'higher' | 'lower';

export interface Target {
  /** 'ratio': value / baseline against `value`; 'absolute': the value itself. */
  kind: 'ratio' | 'absolute';
  op: '>=' | '<=';
  value: number;
  text: string;
}

/** The spread of repeated measurements behind a figure (its value is their median). */
export interface Spread {
  min: number;
  median: number;
  max: number;
  n: number;
}

/** min / median / max of `samples` (the median of an even count is the upper middle one). */
export function spreadOf(samples: number[]): Spread | null {
  const v = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  return { min: v[0]!, median: v[Math.floor(v.length / 2)]!, max: v[v.length - 1]!, n: v.length };
}

export interface Figure {
  /** Section: micro, bulk, offloads-off, connrate, latency, synflood, memory, multiqueue, leak, pmtu. */
  group: string;
  /** Stable identifier, e.g. bulk.k2s.1 */
  key: string;
  /** Human name, e.g. "kernel -> stack, 1 stream". */
  name: string;
  value: number;
  unit: string;
  better: Better;
  /** The Linux kernel over a veth pair, same tool, same run; null when it has none. */
  baseline: number | null;
  /** value / baseline (for "lower is better" units a ratio above 1 means slower or bigger). */
  ratio: number | null;
  target: Target | null;
  met: boolean | null;
  /** The repetitions behind `value` (absent: measured once). */
  spread?: Spread;
  /** The repetitions behind `baseline`. */
  baselineSpread?: Spread;
  note?: string;
}

export function figure(f: {
  group: string;
  key: string;
  name: string;
  value: number;
  unit: string;
  better?: Better;
  baseline?: number | null;
  target?: Target | null;
  note?: string;
  /** Repeated measurements of the value and of the baseline (value and baseline are then their medians, if not given). */
  samples?: number[];
  baselineSamples?: number[];
}): Figure {
  const sp = f.samples ? spreadOf(f.samples) : null;
  const bsp = f.baselineSamples ? spreadOf(f.baselineSamples) : null;
  if (sp && !Number.isFinite(f.value)) f = { ...f, value: sp.median };
  if (bsp && (f.baseline === undefined || f.baseline === null)) f = { ...f, baseline: bsp.median };
  const baseline = f.baseline ?? null;
  const ratio = baseline !== null && baseline > 0 && Number.isFinite(f.value) ? f.value / baseline : null;
  const target = f.target ?? null;
  let met: boolean | null = null;
  if (target) {
    const v = target.kind === 'ratio' ? ratio : f.value;
    if (v !== null && Number.isFinite(v)) met = target.op === '>=' ? v >= target.value : v <= target.value;
  }
  const out: Figure = {
    group: f.group,
    key: f.key,
    name: f.name,
    value: f.value,
    unit: f.unit,
    better: f.better ?? 'higher',
    baseline,
    ratio,
    target,
    met,
  };
  if (sp) out.spread = sp;
  if (bsp) out.baselineSpread = bsp;
  if (f.note) out.note = f.note;
  return out;
}

/** "1,234 (1,000-1,500, n=3)": a value with the spread of its repetitions. */
export function fmtSpread(v: number, s: Spread | undefined): string {
  if (!s || s.n < 2) return fmt(v);
  return `${fmt(v)} (${fmt(s.min)}-${fmt(s.max)}, n=${s.n})`;
}

/** A value with a sensible number of digits for its size. */
export function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  if (a >= 1e6) return Math.round(v).toLocaleString('en-US');
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

export function fmtRatio(r: number | null): string {
  if (r === null || !Number.isFinite(r)) return '';
  return r >= 10 ? `${r.toFixed(0)}x` : r >= 0.995 ? `${r.toFixed(2)}x` : `${(r * 100).toFixed(0)}%`;
}

/** Progress lines go to stderr so that `--json` output on stdout stays parseable. */
export function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}
