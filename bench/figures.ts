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
  note?: string;
}

export function figure(f: {
  group: string; key: string; name: string; value: number; unit: string; better?: Better;
  baseline?: number | null; target?: Target | null; note?: string;
}): Figure {
  const baseline = f.baseline ?? null;
  const ratio = baseline !== null && baseline > 0 && Number.isFinite(f.value) ? f.value / baseline : null;
  const target = f.target ?? null;
  let met: boolean | null = null;
  if (target) {
    const v = target.kind === 'ratio' ? ratio : f.value;
    if (v !== null && Number.isFinite(v)) met = target.op === '>=' ? v >= target.value : v <= target.value;
  }
  const out: Figure = {
    group: f.group, key: f.key, name: f.name, value: f.value, unit: f.unit, better: f.better ?? 'higher',
    baseline, ratio, target, met,
  };
  if (f.note) out.note = f.note;
  return out;
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
