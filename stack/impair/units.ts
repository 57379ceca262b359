/**
 * The units tc(8) and tc-netem(8) use, read the way iproute2 reads them, so that the
 * words of a `tc qdisc ... netem` line mean the same here:
 *
 *   PERCENT  a decimal from 0 to 100, with or without a trailing `%` (`3%`, `3`, `0.5%`).
 *   TIME     a decimal with a unit: s/sec/secs, ms/msec/msecs, us/usec/usecs, ns/nsec/nsecs
 *            (case-insensitive). iproute2 itself reads a bare number as nanoseconds for
 *            netem's 64-bit times and as microseconds elsewhere (tc(8) says microseconds),
 *            so a bare number is refused here rather than guessed.
 *   RATE     a decimal with tc's rate suffixes, case-insensitive as tc compares them:
 *            bit kbit mbit gbit tbit (SI, bits/s), kibit mibit gibit tibit (IEC), and the
 *            byte forms bps kbps mbps gbps tbps, kibps mibps gibps tibps. A bare number is
 *            bits per second, as in tc.
 *   SIZE     bytes with tc's size suffixes: b, k/kb, m/mb, g/gb (1024-based), kbit/mbit/gbit.
 *
 * Internally times are milliseconds (float, the stack's time unit) and rates bytes per
 * second, as netem keeps them.
 */

export class UnitError extends Error {
  constructor(readonly valid: string) {
    super(valid);
    this.name = 'UnitError';
  }
}

const NUMBER = /^(\d+(?:\.\d*)?|\.\d+)/;

function leadingNumber(raw: string): { n: number; rest: string } | null {
  const m = NUMBER.exec(raw);
  if (!m) return null;
  return { n: Number(m[1]), rest: raw.slice(m[1]!.length) };
}

export const PERCENT_VALID = 'a percentage from 0 to 100, e.g. 3% (the % sign is optional)';

/** `3%` -> 0.03. */
export function parsePercent(raw: string): number {
  const p = leadingNumber(raw);
  if (!p || (p.rest !== '' && p.rest !== '%') || !(p.n >= 0 && p.n <= 100)) throw new UnitError(PERCENT_VALID);
  return p.n / 100;
}

export const TIME_VALID = 'a time with a unit: s, ms, us or ns (e.g. 20ms, 1.5s)';

const TIME_UNITS: Record<string, number> = {
  s: 1000,
  sec: 1000,
  secs: 1000,
  ms: 1,
  msec: 1,
  msecs: 1,
  us: 1e-3,
  usec: 1e-3,
  usecs: 1e-3,
  ns: 1e-6,
  nsec: 1e-6,
  nsecs: 1e-6,
};

/** `20ms` -> 20 (milliseconds). */
export function parseTime(raw: string): number {
  const p = leadingNumber(raw);
  if (!p) throw new UnitError(TIME_VALID);
  const scale = TIME_UNITS[p.rest.toLowerCase()];
  if (scale === undefined) throw new UnitError(TIME_VALID);
  return p.n * scale;
}

export const RATE_VALID = 'a rate such as 10mbit, 512kbit, 1gbit or 100kbps (bytes); bit, kbit, mbit, gbit, tbit, kibit..tibit, bps, kbps..tbps, kibps..tibps';

/** Multipliers to bits per second (tc's table; compared case-insensitively as tc does). */
const RATE_SUFFIX: Record<string, number> = {
  '': 1,
  bit: 1,
  kibit: 1024,
  kbit: 1000,
  mibit: 1024 ** 2,
  mbit: 1e6,
  gibit: 1024 ** 3,
  gbit: 1e9,
  tibit: 1024 ** 4,
  tbit: 1e12,
  bps: 8,
  kibps: 8 * 1024,
  kbps: 8000,
  mibps: 8 * 1024 ** 2,
  mbps: 8e6,
  gibps: 8 * 1024 ** 3,
  gbps: 8e9,
  tibps: 8 * 1024 ** 4,
  tbps: 8e12,
};

/** `10mbit` -> 1_250_000 (bytes per second). */
export function parseRate(raw: string): number {
  const p = leadingNumber(raw);
  if (!p) throw new UnitError(RATE_VALID);
  const scale = RATE_SUFFIX[p.rest.toLowerCase()];
  if (scale === undefined || !(p.n > 0)) throw new UnitError(RATE_VALID);
  return (p.n * scale) / 8;
}

export const SIZE_VALID = 'a size in bytes, optionally with k, kb, m, mb, g, gb (1024-based), e.g. 64k';

const SIZE_SUFFIX: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  kbit: 1024 / 8,
  mbit: 1024 ** 2 / 8,
  gbit: 1024 ** 3 / 8,
};

export function parseSize(raw: string): number {
  const p = leadingNumber(raw);
  const scale = p ? SIZE_SUFFIX[p.rest.toLowerCase()] : undefined;
  if (!p || scale === undefined) throw new UnitError(SIZE_VALID);
  const v = p.n * scale;
  if (!Number.isInteger(v)) throw new UnitError(SIZE_VALID);
  return v;
}

/** An integer in [min, max], no unit. */
export function parseInteger(raw: string, min: number, max: number): number {
  if (!/^-?\d{1,15}$/.test(raw)) throw new UnitError(`an integer from ${min} to ${max}`);
  const n = Number(raw);
  if (n < min || n > max) throw new UnitError(`an integer from ${min} to ${max}`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// formatting back into tc's words (what `impair list` shows and what a scenario file can carry)

function trim(n: number): string {
  // Up to 6 significant digits, no trailing zeros: 0.1 + 0.2 shows as 0.3.
  return String(Number(n.toPrecision(6)));
}

export function formatPercent(p: number): string {
  return `${trim(p * 100)}%`;
}

export function formatTime(ms: number): string {
  if (ms === 0) return '0ms';
  if (ms >= 1000 && Number.isInteger(ms / 1000)) return `${trim(ms / 1000)}s`;
  if (ms >= 1) return `${trim(ms)}ms`;
  if (ms >= 1e-3) return `${trim(ms * 1000)}us`;
  return `${trim(ms * 1e6)}ns`;
}

export function formatRate(bytesPerSec: number): string {
  const bits = bytesPerSec * 8;
  for (const [unit, scale] of [
    ['tbit', 1e12],
    ['gbit', 1e9],
    ['mbit', 1e6],
    ['kbit', 1e3],
  ] as const) {
    if (bits >= scale) return `${trim(bits / scale)}${unit}`;
  }
  return `${trim(bits)}bit`;
}
