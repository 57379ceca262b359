/**
 * The one edit distance of the project, for "did you mean" suggestions (the CLI's flags
 * and values, the fault catalogue's names): the optimal string alignment distance, i.e.
 * insertions, deletions, substitutions, and a swap of two neighbours counting as one edit
 * ("mut" -> "mtu" is 1, where plain Levenshtein says 2). Two rows and the one before
 * them, not a matrix: suggestions run over every known name on each typo.
 */
export function editDistance(a: string, b: string): number {
  let back = new Array<number>(b.length + 1).fill(0); // row i-2
  let prev = new Array<number>(b.length + 1); // row i-1
  let cur = new Array<number>(b.length + 1); // row i
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      let v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a.charCodeAt(i - 1) === b.charCodeAt(j - 2) && a.charCodeAt(i - 2) === b.charCodeAt(j - 1)) {
        v = Math.min(v, back[j - 2]! + 1);
      }
      cur[j] = v;
    }
    [back, prev, cur] = [prev, cur, back];
  }
  return prev[b.length]!;
}
