/**
 * The project's one edit distance (stack/util/edit-distance.ts): optimal string alignment,
 * checked on known pairs and against the textbook full-matrix recurrence on seeded random
 * strings.
 */
import { describe, expect, test } from 'vitest';
import { editDistance } from '../../stack/util/edit-distance';

/** The full (len+1) x (len+1) matrix of the OSA recurrence, as textbooks write it. */
function reference(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

describe('editDistance', () => {
  test('known pairs: a swap of neighbours is one edit', () => {
    expect(editDistance('', '')).toBe(0);
    expect(editDistance('', 'mtu')).toBe(3);
    expect(editDistance('mtu', '')).toBe(3);
    expect(editDistance('mtu', 'mtu')).toBe(0);
    expect(editDistance('mut', 'mtu')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('synatackprotect', 'synattackprotect')).toBe(1);
    expect(editDistance('ca', 'abc')).toBe(3); // OSA, not Damerau: no edit of a swapped pair
  });

  test('agrees with the full-matrix recurrence on 2,000 seeded random pairs', () => {
    let s = 99;
    const rnd = (n: number) => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return (s >>> 16) % n;
    };
    const word = () => Array.from({ length: rnd(9) }, () => 'abcd'[rnd(4)]).join('');
    const wrong: string[] = [];
    for (let k = 0; k < 2000; k++) {
      const a = word(),
        b = word();
      if (editDistance(a, b) !== reference(a, b)) wrong.push(`${a} ${b}: ${editDistance(a, b)} != ${reference(a, b)}`);
    }
    expect(wrong).toEqual([]);
  });
});
