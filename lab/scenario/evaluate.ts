/**
 * Checking a part's expectations against what its run measured: pure (no lab, no clock),
 * so the unit tests hand it measurements and check the verdicts
 * (test/unit/scenario-evaluate.test.ts).
 */
import { applies, type Expectation, type Part } from './format';

export type Value = number | string | boolean | null;

export interface StepResult {
  name: string;
  kind: string;
  /** ms from the part's start. */
  startMs: number;
  endMs: number;
  ok: boolean;
  values: Record<string, Value>;
  figure: string;
  error?: string;
}

export interface ExpectationResult {
  text: string;
  line: number;
  /** skipped: its `when` does not match this run's modes. */
  result: 'pass' | 'FAIL' | 'skipped';
  expected: string;
  actual: Value;
  note?: string;
}

/** What a part's run measured, for its expectations. */
export interface Measurements {
  /** Counters when the stack was ready, and at the end. */
  startCounters: Record<string, number>;
  endCounters: Record<string, number>;
  /** Counters before and after each step a `during` names (absent: they could not be read). */
  during: Map<string, { before?: Record<string, number>; after?: Record<string, number> }>;
  /** `faultstack stats --json` at the end (a firewall's `fw summary` under fw). */
  stats: Record<string, unknown>;
  events: { kind: string }[];
  steps: StepResult[];
}

function mbit(bps: number): string {
  return `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

export function boundText(e: Expectation): string {
  const parts: string[] = [];
  if (e.equals !== undefined) parts.push(`= ${e.equals}`);
  if (e.min !== undefined) parts.push(`>= ${e.min}`);
  if (e.max !== undefined) parts.push(`<= ${e.max}`);
  return parts.join(' and ');
}

export function within(e: Expectation, v: Value): boolean {
  if (v === null || v === undefined) return false;
  if (e.equals !== undefined && !(v === e.equals || String(v) === String(e.equals))) return false;
  if (e.min !== undefined && !(typeof v === 'number' && v >= e.min)) return false;
  if (e.max !== undefined && !(typeof v === 'number' && v <= e.max)) return false;
  return true;
}

export function dig(doc: unknown, dotted: string): Value {
  let cur: unknown = doc;
  for (const k of dotted.split('.')) {
    if (cur === null || typeof cur !== 'object') return null;
    cur = (cur as Record<string, unknown>)[k];
  }
  return typeof cur === 'number' || typeof cur === 'string' || typeof cur === 'boolean' ? cur : null;
}

/** Every expectation of the part, in file order: pass, FAIL, or skipped (its when: does not match). */
export function evaluate(part: Part, m: Measurements): ExpectationResult[] {
  const byName = new Map(m.steps.map((s) => [s.name, s]));
  const out: ExpectationResult[] = [];
  for (const x of part.expect) {
    const base = { text: x.text, line: x.line, expected: boundText(x) };
    if (!applies(x, part)) {
      out.push({
        ...base,
        result: 'skipped',
        actual: null,
        note: `when ${Object.entries(x.when)
          .map(([f, mode]) => `${f}=${mode}`)
          .join(', ')}`,
      });
      continue;
    }
    let actual: Value = null;
    let note: string | undefined;
    switch (x.kind) {
      case 'counter': {
        const snap = x.during ? m.during.get(x.during) : { before: m.startCounters, after: m.endCounters };
        if (!snap?.before || !snap.after) {
          note = 'counters could not be read';
          break;
        }
        // A counter the stack does not have fails: a misspelt name must not pass a max: 0.
        if (!(x.counter in snap.after)) {
          note = `the stack has no counter ${x.counter} (faultstack stats --json lists them)`;
          break;
        }
        actual = snap.after[x.counter]! - (snap.before[x.counter] ?? 0);
        break;
      }
      case 'stat':
        actual = dig(m.stats, x.path);
        if (actual === null) note = `faultstack stats --json has no ${x.path}`;
        break;
      case 'event':
        actual = m.events.filter((e) => e.kind === x.event).length;
        break;
      case 'step': {
        const s = byName.get(x.step);
        if (s?.error) note = `the step failed: ${s.error}`;
        actual = x.value === 'ok' ? (s?.ok ?? false) : (s?.values[x.value] ?? null);
        break;
      }
      case 'throughput': {
        const s = byName.get(x.step),
          b = byName.get(x.baseline);
        const sv = s?.values.bitsPerSecond,
          bv = b?.values.bitsPerSecond;
        if (typeof sv === 'number' && typeof bv === 'number' && bv > 0) {
          actual = Math.round((sv / bv) * 1000) / 1000;
          note = `${mbit(sv)} / ${mbit(bv)}`;
        } else note = `no throughput measured (${s?.error ?? b?.error ?? 'a step failed'})`;
        break;
      }
    }
    out.push({ ...base, result: within(x, actual) ? 'pass' : 'FAIL', actual, ...(note ? { note } : {}) });
  }
  return out;
}
