/**
 * Bucket ownership: which host owns each bucket of a port rule, computed by every host
 * from the same inputs (the live hosts, their load weights and priorities, the map the
 * cluster agreed on last), so that hosts agree without talking about single packets.
 *
 * The algorithm (ours; Windows' is not public), for B buckets and hosts with weights:
 * 1. quotas: host i gets floor(B * w_i / W) buckets; the remainder goes one by one to the
 *    largest fractional parts (ties: the lower host id). All weights 0: equal quotas.
 * 2. keep: in bucket order, a bucket stays with its previous owner while that owner is
 *    still a candidate and under its quota.
 * 3. fill: in bucket order, every other bucket goes to the candidate furthest below its
 *    quota (ties: the lower host id).
 * So a host that leaves gives up only its own buckets (the others keep theirs and grow
 * into its share), a host that joins takes only the buckets the others must shed, and a
 * cold start deals the buckets out round-robin. Single-host rules give every bucket to
 * the candidate with the best handling priority; disabled rules give none.
 */
export interface Candidate {
  id: number;
  /** Load weight 0-100 for this rule. */
  weight: number;
}

/** Owner host id per bucket (0: nobody). */
export type BucketMap = Uint8Array;

export function quotas(buckets: number, cands: readonly Candidate[]): Map<number, number> {
  const out = new Map<number, number>();
  if (cands.length === 0) return out;
  let total = cands.reduce((a, c) => a + Math.max(0, c.weight), 0);
  const w = (c: Candidate) => (total === 0 ? 1 : Math.max(0, c.weight));
  if (total === 0) total = cands.length;
  let given = 0;
  const frac: { id: number; f: number }[] = [];
  for (const c of cands) {
    const exact = (buckets * w(c)) / total;
    const q = Math.floor(exact);
    out.set(c.id, q);
    given += q;
    frac.push({ id: c.id, f: exact - q });
  }
  frac.sort((a, b) => b.f - a.f || a.id - b.id);
  for (let i = 0; given < buckets; i++, given++) {
    const id = frac[i % frac.length]!.id;
    out.set(id, out.get(id)! + 1);
  }
  return out;
}

/** The multiple-host map; `prev` (owner per bucket) may be null (a cold start). */
export function computeMap(buckets: number, cands: readonly Candidate[], prev: BucketMap | null): BucketMap {
  const owner = new Uint8Array(buckets);
  if (cands.length === 0) return owner;
  const sorted = [...cands].sort((a, b) => a.id - b.id);
  const quota = quotas(buckets, sorted);
  const count = new Map<number, number>(sorted.map((c) => [c.id, 0]));
  if (prev) {
    for (let b = 0; b < buckets; b++) {
      const o = prev[b] ?? 0;
      const n = count.get(o);
      if (n !== undefined && n < quota.get(o)!) {
        owner[b] = o;
        count.set(o, n + 1);
      }
    }
  }
  for (let b = 0; b < buckets; b++) {
    if (owner[b] !== 0) continue;
    let best = -1,
      bestDeficit = -Infinity;
    for (const c of sorted) {
      const d = quota.get(c.id)! - count.get(c.id)!;
      if (d > bestDeficit) {
        best = c.id;
        bestDeficit = d;
      }
    }
    owner[b] = best;
    count.set(best, count.get(best)! + 1);
  }
  return owner;
}

/** Every bucket to one host (single-host filtering), or to nobody (0). */
export function singleOwnerMap(buckets: number, owner: number): BucketMap {
  return new Uint8Array(buckets).fill(owner);
}

/** The 64-bit map of the buckets `host` owns (bit b for bucket b). */
export function bitsOf(map: BucketMap, host: number): bigint {
  let bits = 0n;
  for (let b = 0; b < map.length; b++) if (map[b] === host) bits |= 1n << BigInt(b);
  return bits;
}

export function countOf(map: BucketMap, host: number): number {
  let n = 0;
  for (let b = 0; b < map.length; b++) if (map[b] === host) n++;
  return n;
}

/** Buckets as ranges for display: "0-9,20,22-29". */
export function formatBuckets(bits: bigint, buckets: number): string {
  const out: string[] = [];
  let b = 0;
  while (b < buckets) {
    if (((bits >> BigInt(b)) & 1n) === 0n) {
      b++;
      continue;
    }
    let e = b;
    while (e + 1 < buckets && ((bits >> BigInt(e + 1)) & 1n) === 1n) e++;
    out.push(e === b ? String(b) : `${b}-${e}`);
    b = e + 1;
  }
  return out.join(',') || '-';
}
