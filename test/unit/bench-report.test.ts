/**
 * The benchmark report shows each figure's spread: a figure built from repetitions keeps
 * their min/median/max, the Markdown table prints them beside the value and the
 * baseline, and the SVG chart draws a min-max whisker over the bar.
 */
import { describe, expect, test } from 'vitest';
import { figure, spreadOf } from '../../bench/figures';
import { markdownTable } from '../../bench/report';
import { barChart } from '../../bench/svg';

describe('bench report spread', () => {
  test('spreadOf: min, median (upper middle), max and count, non-finite samples left out', () => {
    expect(spreadOf([3, 1, 2])).toEqual({ min: 1, median: 2, max: 3, n: 3 });
    expect(spreadOf([4, 1, NaN, 2, 3])).toEqual({ min: 1, median: 3, max: 4, n: 4 });
    expect(spreadOf([])).toBeNull();
  });

  test('a figure from samples: spread kept, ratio of the medians, goal judged on it', () => {
    const f = figure({
      group: 'synflood',
      key: 'k',
      name: 'served',
      value: 200,
      unit: 'conn/s',
      baseline: 1000,
      samples: [100, 200, 900],
      baselineSamples: [800, 1000, 1200],
      target: { kind: 'ratio', op: '>=', value: 0.5, text: '>= 0.5 of kernel' },
    });
    expect(f.spread).toEqual({ min: 100, median: 200, max: 900, n: 3 });
    expect(f.baselineSpread).toEqual({ min: 800, median: 1000, max: 1200, n: 3 });
    expect(f.ratio).toBeCloseTo(0.2);
    expect(f.met).toBe(false);
    const md = markdownTable([f]);
    expect(md).toContain('200 (100-900, n=3) conn/s');
    expect(md).toContain('1,000 (800-1,200, n=3) conn/s');
    expect(md).toContain('>= 0.5 of kernel: **not met**');
  });

  test('a figure measured once prints no spread', () => {
    const f = figure({ group: 'latency', key: 'k', name: 'p50', value: 120, unit: 'µs', baseline: 10 });
    expect(f.spread).toBeUndefined();
    expect(markdownTable([f])).toContain('| 120 µs | 10.0 µs |');
  });

  test('the chart draws a whisker from min to max and labels the range', () => {
    const svg = barChart({ title: 't', unit: 'u', series: ['a', 'b'], rows: [{ label: 'r', values: [50, 100], ranges: [[10, 90], null] }] });
    // Axis to 100 over 440 px: the whisker runs from 10% to 90% of the plot.
    const lines = [...svg.matchAll(/<line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)" y2="[\d.]+" stroke="#1f2933"/g)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(lines.length).toBe(3);
    const [a, b] = lines[0]!;
    expect(b - a).toBeCloseTo(0.8 * 440, 0);
    expect(svg).toContain('50.0 (10.0-90.0)');
    expect(svg).not.toContain('100 (');
  });
});
