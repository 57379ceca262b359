/** Plain-text rendering helpers for the CLI: aligned tables, counters, durations. */

export interface TableOptions {
  /** Columns (by index) aligned right, e.g. numbers. */
  right?: number[];
  indent?: string;
}

/** Aligns rows into columns separated by two spaces; the first row is the header. */
export function table(rows: string[][], opts: TableOptions = {}): string {
  if (rows.length === 0) return '';
  const n = Math.max(...rows.map((r) => r.length));
  const widths = Array.from({ length: n }, (_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const right = new Set(opts.right ?? []);
  const indent = opts.indent ?? '';
  return (
    rows
      .map(
        (r) =>
          indent +
          widths
            .map((w, i) => {
              const cell = r[i] ?? '';
              if (i === n - 1 && !right.has(i)) return cell;
              return right.has(i) ? cell.padStart(w) : cell.padEnd(w);
            })
            .join('  ')
            .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** Flattens nested counter groups into dotted names; keeps numbers (and numeric strings). */
export function flattenCounters(obj: Record<string, unknown>, prefix = '', out: [string, number | string][] = []): [string, number | string][] {
  for (const [k, v] of Object.entries(obj)) {
    const name = prefix ? `${prefix}.${k}` : k;
    if (typeof v === 'number' || typeof v === 'bigint') out.push([name, typeof v === 'bigint' ? v.toString() : v]);
    else if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) out.push([name, v]);
    else if (typeof v === 'boolean') out.push([name, v ? 1 : 0]);
    else if (v && typeof v === 'object' && !Array.isArray(v)) flattenCounters(v as Record<string, unknown>, name, out);
  }
  return out;
}

export function isZero(v: number | string): boolean {
  return Number(v) === 0;
}

export function formatNumber(v: number | string): string {
  if (typeof v === 'string') return v;
  return Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/\.?0+$/, '');
}

/** "850 ms", "12.3 s", "4 min 5 s", "2 h 3 min". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Local wall-clock time with milliseconds, "14:03:07.125". */
export function formatClock(msEpoch: number): string {
  const d = new Date(msEpoch);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

const SS_STATES: Record<string, string> = {
  ESTABLISHED: 'ESTAB',
  SYN_SENT: 'SYN-SENT',
  SYN_RECEIVED: 'SYN-RECV',
  SYN_RCVD: 'SYN-RECV',
  SYN_RECV: 'SYN-RECV',
  FIN_WAIT_1: 'FIN-WAIT-1',
  FIN_WAIT1: 'FIN-WAIT-1',
  FIN_WAIT_2: 'FIN-WAIT-2',
  FIN_WAIT2: 'FIN-WAIT-2',
  CLOSE_WAIT: 'CLOSE-WAIT',
  LAST_ACK: 'LAST-ACK',
  TIME_WAIT: 'TIME-WAIT',
  CLOSING: 'CLOSING',
  CLOSED: 'CLOSED',
  LISTEN: 'LISTEN',
};

/** TCP state as `ss` prints it ("ESTABLISHED", "SynSent", "syn-sent" → "ESTAB", "SYN-SENT"). */
export function ssState(state: string): string {
  const key = state
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .replace(/[-\s]/g, '_')
    .toUpperCase();
  return SS_STATES[key] ?? state.toUpperCase();
}

/** A cell for any JSON value. */
export function cell(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v) && v.every((x) => typeof x !== 'object' || x === null)) return v.map(cell).join(',');
  return JSON.stringify(v);
}

/** A table of objects, columns in order of first appearance. */
export function objectTable(rows: Record<string, unknown>[], indent = ''): string {
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const numeric = cols.map((c, i) => (rows.every((r) => r[c] === undefined || typeof r[c] === 'number') ? i : -1)).filter((i) => i >= 0);
  return table([cols.map((c) => c.toUpperCase()), ...rows.map((r) => cols.map((c) => cell(r[c])))], { right: numeric, indent });
}
