/**
 * Seeded randomness for impairments: one generator per option (loss, delay, duplicate...),
 * so that adding a delay or corruption does not change which packets a seed loses (a
 * duplicate, which goes through the impairment again, draws like any packet); the
 * distributions netem offers; and correlation that keeps them what they claim to be.
 *
 * Generator: xoshiro128** (Blackman and Vigna), state seeded from the 32-bit seed and a
 * stream number through splitmix32, so stream k of seed s is independent of stream j.
 * Period 2^128 - 1; 32-bit outputs turned into [0, 1) with 2^-32 resolution.
 *
 * Distributions (netem's, written from their definitions rather than from its tables):
 * a delay is `mu + sigma * t` where t is drawn by inverse CDF from a uniform U:
 *   uniform       t = 2U - 1                           (netem's default: mu +- sigma)
 *   normal        t = PHI^-1(U), clipped to +-4        (netem's table also ends at +-4)
 *   pareto        t = ((1 - U)^(-1/3) - 1.5) * 4/3, at most 4
 *                   (a Pareto of shape 3 and scale 1, shifted by its mean 1.5 and scaled
 *                   as iproute2's pareto table is; it runs from -2/3 to the cap of 4)
 *   paretonormal  t = (PHI^-1(U) + 3 * pareto(U)) / 4, clipped to +-4
 *                   (iproute2's table mixes the two quantile functions 1:3 this way)
 * PHI^-1 is Acklam's rational approximation refined by one Halley step against an erfc
 * accurate to ~1e-14, so the quantiles are good to about 1e-9.
 *
 * Correlation. netem mixes each new uniform with the previous value,
 * next = (1 - rho) * U + rho * last, which is no longer uniform: its spread narrows (its
 * standard deviation is 77% of a uniform's at rho 25%), so `loss 3% 25%` loses about
 * 0.03% of packets in netem, not 3%, and jitter shrinks as the correlation grows; the man
 * page calls it an approximation and marks correlated random loss as deprecated. Here:
 *  - yes/no events (loss, duplicate, corrupt, reorder) are a two-state Markov chain whose
 *    stationary probability is P and whose lag-1 correlation is C: after an event the next
 *    one happens with P + C(1 - P), after a non-event with P(1 - C). The long-run rate stays
 *    P; runs get longer (mean run length 1 / ((1 - P)(1 - C))).
 *  - delays use a Gaussian copula: a latent standard normal follows an AR(1) process,
 *    Z' = C Z + sqrt(1 - C^2) E, and U = PHI(Z') feeds the inverse CDF above. Every delay
 *    keeps exactly the chosen distribution and successive delays are correlated (exactly C
 *    for normal, close to C for the others).
 * One uniform is drawn per packet per option, so patterns line up packet by packet.
 */

// ---------------------------------------------------------------------------------------------
// generator

function splitmix32(s: number): () => number {
  let x = s >>> 0;
  return () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** xoshiro128**: fast, small, good statistical quality for simulation. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream = 0) {
    const sm = splitmix32((seed >>> 0) ^ Math.imul(stream + 1, 0x632be5ab));
    this.a = sm();
    this.b = sm();
    this.c = sm();
    this.d = sm();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** Next 32-bit unsigned integer. */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// ---------------------------------------------------------------------------------------------
// the normal distribution

/**
 * erfc(x) for x >= 0 by W. J. Cody's rational approximations (Math. Comp. 23, 1969), on
 * [0, 0.5), [0.5, 4) and [4, inf): relative error near 1e-14, which the Halley step of
 * normalQuantile needs (a 1e-7 fit would limit the quantiles to that).
 */
/* eslint-disable no-loss-of-precision -- W. J. Cody's rational approximations, coefficients as published */
function erfcPositive(x: number): number {
  if (x < 0.5) return 1 - erfSmall(x);
  if (x < 4) {
    const p = [
      3.004592610201616e2, 4.519189537118729e2, 3.393208167343437e2, 1.529892850469404e2, 4.316222722205674e1, 7.211758250883094, 5.64195517478974e-1,
      -1.368648573827167e-7,
    ];
    const q = [
      3.004592609569833e2, 7.90950925327898e2, 9.313540948506096e2, 6.389802644656312e2, 2.775854447439876e2, 7.700015293522947e1, 1.278272731962942e1, 1.0,
    ];
    let num = p[7]!,
      den = q[7]!;
    for (let i = 6; i >= 0; i--) {
      num = num * x + p[i]!;
      den = den * x + q[i]!;
    }
    return Math.exp(-x * x) * (num / den);
  }
  const p = [-2.99610707703542174e-3, -4.94730910623250734e-2, -2.2695659353968693e-1, -2.78661308609647788e-1, -2.23192459734184686e-2];
  const q = [1.06209230528467918e-2, 1.91308926107829841e-1, 1.05167510706793207, 1.98733201817135256, 1.0];
  const z = 1 / (x * x);
  let num = p[4]!,
    den = q[4]!;
  for (let i = 3; i >= 0; i--) {
    num = num * z + p[i]!;
    den = den * z + q[i]!;
  }
  const r = (z * num) / den;
  return (Math.exp(-x * x) / x) * (1 / Math.sqrt(Math.PI) + r);
}

function erfSmall(x: number): number {
  const p = [3.209377589138469472562e3, 3.774852376853020208137e2, 1.138641541510501556495e2, 3.161123743870565596947, 1.85777706184603152673e-1];
  const q = [2.844236833439170622273e3, 1.282616526077372275645e3, 2.440246379344441733056e2, 2.360129095234412093499e1, 1.0];
  const z = x * x;
  let num = p[4]!,
    den = q[4]!;
  for (let i = 3; i >= 0; i--) {
    num = num * z + p[i]!;
    den = den * z + q[i]!;
  }
  return (x * num) / den;
}
/* eslint-enable no-loss-of-precision */

/** The standard normal CDF. */
export function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const tail = 0.5 * erfcPositive(x);
  return z >= 0 ? 1 - tail : tail;
}

/** The standard normal quantile, PHI^-1(p) for p in (0, 1). */
export function normalQuantile(p: number): number {
  if (p <= 0) return -Infinity;
  if (p >= 1) return Infinity;
  // Acklam's rational approximation (relative error 1.15e-9).
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const plow = 0.02425;
  let x: number;
  if (p < plow) {
    const q = Math.sqrt(-2 * Math.log(p));
    x = (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  } else if (p <= 1 - plow) {
    const q = p - 0.5;
    const r = q * q;
    x =
      ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) /
      (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
  } else {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    x = -(((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  // One Halley step.
  const e = normalCdf(x) - p;
  const u = e * Math.sqrt(2 * Math.PI) * Math.exp((x * x) / 2);
  return x - u / (1 + (x * u) / 2);
}

// ---------------------------------------------------------------------------------------------
// netem's delay distributions, as quantile functions of U in [0, 1)

export type DistributionName = 'uniform' | 'normal' | 'pareto' | 'paretonormal';
export const DISTRIBUTIONS: readonly DistributionName[] = ['uniform', 'normal', 'pareto', 'paretonormal'];

const TABLE_LIMIT = 4; // netem's tables are s16 values over NETEM_DIST_SCALE 8192: about +-4

function clip(t: number): number {
  return t < -TABLE_LIMIT ? -TABLE_LIMIT : t > TABLE_LIMIT ? TABLE_LIMIT : t;
}

function paretoT(u: number): number {
  const t = (Math.pow(1 - u, -1 / 3) - 1.5) * (4 / 3);
  return t > TABLE_LIMIT ? TABLE_LIMIT : t;
}

/** The table value t for U: the delay is mu + sigma * t. */
export function distributionT(dist: DistributionName, u: number): number {
  switch (dist) {
    case 'uniform':
      return 2 * u - 1;
    case 'normal':
      return clip(normalQuantile(u));
    case 'pareto':
      return paretoT(u);
    case 'paretonormal':
      return clip((normalQuantile(u) + 3 * paretoT(u)) / 4);
  }
}

// keep U away from 0 so that quantiles stay finite
const U_MIN = 2 ** -33;

/**
 * Correlated uniforms (Gaussian copula): each next() is uniform on (0, 1) and its latent
 * normal has lag-1 correlation `rho` with the previous one. rho 0: plain uniforms.
 */
export class CorrelatedUniform {
  private z: number;
  private readonly k: number;

  constructor(
    private readonly rng: Rng,
    readonly rho: number,
  ) {
    this.k = Math.sqrt(1 - rho * rho);
    this.z = normalQuantile(Math.max(rng.next(), U_MIN));
  }

  next(): number {
    const u = Math.max(this.rng.next(), U_MIN);
    if (this.rho === 0) return u;
    this.z = this.rho * this.z + this.k * normalQuantile(u);
    return normalCdf(this.z);
  }
}

/**
 * Yes/no events with long-run probability p and lag-1 correlation c (a two-state Markov
 * chain). c 0: independent Bernoulli trials.
 */
export class CorrelatedEvent {
  private last = false;
  private readonly afterYes: number;
  private readonly afterNo: number;

  constructor(
    private readonly rng: Rng,
    readonly p: number,
    readonly c: number,
  ) {
    this.afterYes = p + c * (1 - p);
    this.afterNo = p * (1 - c);
    // Start in the chain's stationary state, so the first packet is like any other.
    this.last = rng.next() < p;
  }

  next(): boolean {
    const u = this.rng.next();
    this.last = u < (this.last ? this.afterYes : this.afterNo);
    return this.last;
  }
}
