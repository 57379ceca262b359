/**
 * A small SVG writer for the benchmark report: horizontal bar charts, one row per
 * figure, one bar per series (the stack, the kernel baseline), an optional vertical
 * reference line (1.0 on ratio charts) and per-row target ticks. No dependencies.
 */

export interface BarRow {
  label: string;
  /** One value per series; NaN or null leaves the bar out. */
  values: (number | null)[];
  /** Optional target marker on the value axis. */
  target?: number | null;
  /** Per series, the [min, max] of the repetitions behind the value: drawn as a whisker over the bar. */
  ranges?: ([number, number] | null)[];
}

export interface BarChart {
  title: string;
  unit: string;
  series: string[];
  rows: BarRow[];
  /** Draw a vertical line at this value (e.g. 1 on a ratio chart). */
  reference?: number;
  /** Value formatter for bar labels. */
  format?: (v: number) => string;
  /** Axis maximum: longer bars stop at the edge (their label still tells the value). */
  clampMax?: number;
}

const COLORS = ['#2f6fb0', '#9aa5b1', '#e0a030', '#4a9a5a'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A "nice" axis maximum: 1, 2, 2.5 or 5 times a power of ten, at or above `v`. */
export function niceMax(v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function barChart(c: BarChart): string {
  const fmt = c.format ?? ((v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2)));
  const longest = Math.max(20, ...c.rows.map((r) => r.label.length));
  const labelW = Math.min(520, 16 + Math.ceil(longest * 6.6));
  const plotW = 440;
  const barH = 14;
  const gap = 10;
  const top = 48;
  const rowH = c.series.length * barH + gap;
  const height = top + c.rows.length * rowH + 40;
  const width = labelW + plotW + 150;
  let max = 0;
  for (const r of c.rows) {
    for (const v of r.values) if (v !== null && Number.isFinite(v)) max = Math.max(max, v);
    for (const rg of r.ranges ?? []) if (rg && Number.isFinite(rg[1])) max = Math.max(max, rg[1]);
    if (r.target != null && Number.isFinite(r.target)) max = Math.max(max, r.target);
  }
  if (c.reference !== undefined) max = Math.max(max, c.reference);
  max = niceMax(c.clampMax !== undefined ? Math.min(max, c.clampMax) : max);
  const x = (v: number) => labelW + (Math.min(Math.max(0, v), max) / max) * plotW;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  out.push(`<text x="12" y="20" font-size="15" font-weight="bold">${esc(c.title)}</text>`);
  // Legend.
  let lx = labelW;
  c.series.forEach((s, i) => {
    out.push(`<rect x="${lx}" y="28" width="12" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 16}" y="37">${esc(s)}</text>`);
    lx += 24 + s.length * 7;
  });
  // Grid: five divisions.
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5;
    const gx = x(v);
    out.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${height - 30}" stroke="#e4e7eb"/>`);
    out.push(`<text x="${gx}" y="${height - 16}" text-anchor="middle" fill="#52606d">${esc(fmt(v))}</text>`);
  }
  out.push(`<text x="${labelW + plotW / 2}" y="${height - 3}" text-anchor="middle" fill="#52606d">${esc(c.unit)}</text>`);
  c.rows.forEach((r, ri) => {
    const y0 = top + ri * rowH;
    out.push(`<text x="${labelW - 8}" y="${y0 + (c.series.length * barH) / 2 + 4}" text-anchor="end">${esc(r.label)}</text>`);
    r.values.forEach((v, si) => {
      if (v === null || !Number.isFinite(v)) return;
      const y = y0 + si * barH;
      const w = Math.max(1, x(v) - labelW);
      out.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH - 2}" fill="${COLORS[si % COLORS.length]}"/>`);
      const over = v > max;
      const rg = r.ranges?.[si];
      let labelX = labelW + w + 4;
      if (rg && Number.isFinite(rg[0]) && Number.isFinite(rg[1])) {
        // min-max whisker across the bar's middle, with end ticks.
        const a = x(rg[0]),
          b = x(rg[1]),
          my = y + (barH - 2) / 2;
        out.push(`<line x1="${a.toFixed(1)}" y1="${my}" x2="${b.toFixed(1)}" y2="${my}" stroke="#1f2933" stroke-width="1.2"/>`);
        out.push(`<line x1="${a.toFixed(1)}" y1="${y + 2}" x2="${a.toFixed(1)}" y2="${y + barH - 4}" stroke="#1f2933" stroke-width="1.2"/>`);
        out.push(`<line x1="${b.toFixed(1)}" y1="${y + 2}" x2="${b.toFixed(1)}" y2="${y + barH - 4}" stroke="#1f2933" stroke-width="1.2"/>`);
        labelX = Math.max(labelX, b + 4);
      }
      const rangeText = rg && Number.isFinite(rg[0]) && Number.isFinite(rg[1]) ? ` (${fmt(rg[0])}-${fmt(rg[1])})` : '';
      out.push(
        `<text x="${labelX.toFixed(1)}" y="${y + barH - 4}" fill="${over ? '#c0392b' : '#323f4b'}">${esc(fmt(v))}${esc(rangeText)}${over ? ' (off scale)' : ''}</text>`,
      );
    });
    if (r.target != null && Number.isFinite(r.target)) {
      const tx = x(r.target);
      out.push(`<line x1="${tx}" y1="${y0 - 2}" x2="${tx}" y2="${y0 + c.series.length * barH}" stroke="#c0392b" stroke-width="2" stroke-dasharray="3,2"/>`);
    }
  });
  if (c.reference !== undefined) {
    const rx = x(c.reference);
    out.push(`<line x1="${rx}" y1="${top - 6}" x2="${rx}" y2="${height - 30}" stroke="#323f4b" stroke-width="1.5"/>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
