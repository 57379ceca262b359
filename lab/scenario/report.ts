/**
 * The reports of `faultstack scenario run` and `compare`: plain text tables for a person,
 * the result objects as JSON for a script.
 */
import type { ScenarioRunResult, ExpectationResult, StepResult } from './run';

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return (
    rows
      .map((r) =>
        r
          .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(w[c]!)))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** A measured value as a person reads it: fractions to three decimals. */
function shownValue(v: unknown): string {
  if (v === null || v === undefined) return 'none';
  if (typeof v === 'number' && !Number.isInteger(v)) return String(Math.round(v * 1000) / 1000);
  return String(v);
}

function stepCell(s: StepResult | undefined): string {
  if (!s) return '-';
  return s.error ? `FAILED: ${s.error}` : s.figure;
}

function expectCell(x: ExpectationResult | undefined): string {
  if (!x) return '-';
  if (x.result === 'skipped') return `skipped (${x.note})`;
  return `${x.result} (${shownValue(x.actual)}${x.note ? `; ${x.note}` : ''})`;
}

/** One run: per part its steps (start, end, figure) and its expectations (expected, measured, verdict). */
export function renderRun(r: ScenarioRunResult): string {
  const out: string[] = [`scenario ${r.name} (${r.file}): ${r.ok ? 'every expectation passed' : 'FAILED'} in ${secs(r.ms)}`];
  for (const p of r.parts) {
    const modes = Object.entries(p.modes)
      .map(([f, m]) => `${f}=${m}`)
      .join(', ');
    out.push('', `${p.name} [${p.topology}${modes ? `, ${modes}` : ''}]: ${p.ok ? 'passed' : 'FAILED'} in ${secs(p.ms)}`);
    if (p.error) out.push(`  error: ${p.error}`);
    if (p.steps.length) {
      out.push(table([['  step', 'from', 'to', 'result'], ...p.steps.map((s) => [`  ${s.name}`, secs(s.startMs), secs(s.endMs), stepCell(s)])]).trimEnd());
    }
    const shown = p.expectations.filter((x) => x.result !== 'skipped');
    if (shown.length) {
      out.push('', table([['  expectation', 'expected', 'verdict (measured)'], ...shown.map((x) => [`  ${x.text}`, x.expected, expectCell(x)])]).trimEnd());
    }
    if (p.chart) out.push(`  chart: ${p.chart}`);
  }
  const failed = r.parts.flatMap((p) =>
    p.expectations
      .filter((x) => x.result === 'FAIL')
      .map(
        (x) => `${r.file}:${x.line}: ${x.text} ${x.expected}, measured ${x.actual === null ? 'nothing' : shownValue(x.actual)}${x.note ? ` (${x.note})` : ''}`,
      ),
  );
  if (failed.length) out.push('', 'failed expectations:', ...failed.map((f) => `  ${f}`));
  return out.join('\n') + '\n';
}

/** Side by side, a cell keeps its start (the full text is in the run's own report and --json). */
function clip(s: string, max = 64): string {
  return s.length > max ? s.slice(0, max - 3) + '...' : s;
}

/** Several runs of one scenario (one per mode) side by side: step by step, expectation by expectation. */
export function renderCompare(fault: string, runs: { mode: string; result: ScenarioRunResult }[]): string {
  const out: string[] = [`scenario ${runs[0]!.result.name}: ${fault} ${runs.map((x) => x.mode).join(' versus ')}`];
  const head = ['', ...runs.map((x) => `${fault}=${x.mode}`)];
  const first = runs[0]!.result;
  first.parts.forEach((p, i) => {
    out.push('', `${p.name} [${p.topology}]`);
    const names = p.steps.map((s) => s.name);
    const rows = [head, ...names.map((n) => [`  ${n}`, ...runs.map((x) => clip(stepCell(x.result.parts[i]?.steps.find((s) => s.name === n))))])];
    rows.push(['  passed', ...runs.map((x) => (x.result.parts[i]?.ok ? 'yes' : `NO${x.result.parts[i]?.error ? `: ${x.result.parts[i]!.error}` : ''}`))]);
    out.push(table(rows).trimEnd());
    const texts = [...new Set(runs.flatMap((x) => (x.result.parts[i]?.expectations ?? []).map((e) => `${e.text} ${e.expected}`)))];
    if (texts.length) {
      const erows = [['  expectation', ...runs.map((x) => x.mode)]];
      for (const t of texts)
        erows.push([`  ${t}`, ...runs.map((x) => clip(expectCell(x.result.parts[i]?.expectations.find((e) => `${e.text} ${e.expected}` === t))))]);
      out.push('', table(erows).trimEnd());
    }
    for (const x of runs) if (x.result.parts[i]?.chart) out.push(`  chart (${x.mode}): ${x.result.parts[i]!.chart}`);
  });
  out.push(
    '',
    runs.every((x) => x.result.ok)
      ? 'every expectation passed in every mode'
      : `FAILED in ${runs
          .filter((x) => !x.result.ok)
          .map((x) => x.mode)
          .join(', ')}`,
  );
  return out.join('\n') + '\n';
}
