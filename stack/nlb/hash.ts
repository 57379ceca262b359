/**
 * Which bucket a client falls into: the one deterministic mapping every host of the
 * cluster applies to each packet, so that exactly one host (the bucket's owner) passes
 * it up without any host talking to another about it.
 *
 * Windows' hash is not public. Ours is MurmurHash3's 32-bit finalizer (fmix32: two
 * multiplications and three xor-shifts) over the affinity key, then the remainder by
 * the bucket count:
 *   single:  key = client address
 *   network: key = client address with the low 8 bits cleared (the client's class C, a /24)
 *   none:    key = fmix32(client address) xor (client port * 0x9E3779B1)
 * Why this one: every input bit changes every output bit with probability one half
 * (avalanche), so consecutive client addresses (a lab's, a NAT pool's, a DHCP scope's)
 * and consecutive ports spread evenly over the buckets instead of landing in a few; it
 * is the same on every host and every platform (32-bit integer arithmetic, no tables);
 * it allocates nothing per packet. The remainder's bias is below 1.5e-8 for 64 buckets.
 * A seed (NlbConfig.hashSeed) is xored into the key, so a cluster may reshuffle which
 * clients share a bucket; every host of a cluster must use the same seed and count.
 *
 * Fragments: a datagram's later fragments carry no ports, so under affinity none every
 * fragment (first included) is hashed as under single affinity, by address only.
 */
import { createHash } from 'node:crypto';
import type { Affinity } from './config';

/** MurmurHash3's fmix32 (public domain, Austin Appleby). */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export const enum AffinityCode {
  None = 0,
  Single = 1,
  Network = 2,
}

export function affinityCode(a: Affinity): AffinityCode {
  return a === 'none' ? AffinityCode.None : a === 'network' ? AffinityCode.Network : AffinityCode.Single;
}

/** The affinity key of a client: what extended affinity remembers and `network` groups. */
export function affinityKey(aff: AffinityCode, addr: number): number {
  return aff === AffinityCode.Network ? (addr & 0xffffff00) >>> 0 : addr >>> 0;
}

/** The bucket (0..buckets-1) of a client under `aff`; `port` only matters for affinity none. */
export function bucketOf(aff: AffinityCode, addr: number, port: number, buckets: number, seed = 0): number {
  let h: number;
  if (aff === AffinityCode.None) h = fmix32((fmix32((addr ^ seed) >>> 0) ^ Math.imul(port, 0x9e3779b1)) >>> 0);
  else h = fmix32((affinityKey(aff, addr) ^ seed) >>> 0);
  return h % buckets;
}

/** What heartbeats carry for an identity: the first 8 bytes of SHA-256 over its text. */
export function identityHash(identity: string): Buffer {
  return createHash('sha256').update(identity, 'utf8').digest().subarray(0, 8);
}
