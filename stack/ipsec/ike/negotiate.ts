/**
 * What the responder decides in a negotiation: which proposal it accepts (RFC 7296
 * 2.7, 3.3.6) and how it narrows traffic selectors (2.9).
 *
 * Proposals: the responder's configured proposals are tried in its order of
 * preference; the first of the peer's proposals that offers an acceptable transform of
 * every type wins, and within a type the responder's order decides. The reply holds
 * that proposal's number, exactly one transform of each type, and the responder's SPI.
 *
 * Selectors: each selector the peer proposed is intersected with each one policy
 * allows; the non-empty intersections are the answer (narrowed, 2.9). Nothing left
 * is TS_UNACCEPTABLE.
 */
import { parseCidr, parseIpv4, prefixMask } from '../../wire/addr';
import { ProtocolId, TS_IPV4_ADDR_RANGE, type ProposalRepr, type TrafficSelectorRepr, type TransformRepr } from '../../wire/ike';
import { intersect, type Selector } from '../spd';
import { DH_GROUPS, ENCRS, Integ, TransformType, type ChosenSuite, type ProposalSpec } from '../transforms';

export interface Selected {
  /** The peer's proposal that was accepted (its number and SPI). */
  proposal: ProposalRepr;
  suite: ChosenSuite;
  /** The transforms to answer with. */
  transforms: TransformRepr[];
}

function offered(p: ProposalRepr, type: number): TransformRepr[] {
  return p.transforms.filter((t) => t.type === type);
}

/**
 * Picks a proposal for `protocol` (IKE or ESP). `ignoreDh`: child SAs in IKE_AUTH take
 * their keys from the IKE SA's exchange, so a DH transform there is ignored (1.2).
 * `requireDh`: the group the KE payload used (CREATE_CHILD_SA with PFS, or IKE), when
 * the chosen proposal must contain it; otherwise the first acceptable group is chosen.
 */
export function selectProposal(
  peer: ProposalRepr[],
  mine: ProposalSpec[],
  protocol: number,
  opts: { ignoreDh?: boolean; keGroup?: number } = {},
): Selected | null {
  for (const spec of mine) {
    for (const p of peer) {
      if (p.protocol !== protocol) continue;
      const s = matchOne(p, spec, protocol, opts);
      if (s) return s;
    }
  }
  return null;
}

function matchOne(p: ProposalRepr, spec: ProposalSpec, protocol: number, opts: { ignoreDh?: boolean; keGroup?: number }): Selected | null {
  const encrs = offered(p, TransformType.ENCR);
  let encr: { id: number; keyBits: number } | undefined;
  for (const want of spec.encr) {
    if (encrs.some((t) => t.id === want.id && (t.keyLength ?? 0) === want.keyBits)) {
      encr = want;
      break;
    }
  }
  if (!encr) return null;
  const aead = ENCRS[encr.id]!.aead;
  const transforms: TransformRepr[] = [{ type: TransformType.ENCR, id: encr.id, keyLength: encr.keyBits }];
  const suite: ChosenSuite = { encr: encr.id, keyBits: encr.keyBits, integ: Integ.NONE, dh: 0, esn: false };

  if (protocol === ProtocolId.IKE) {
    const prfs = offered(p, TransformType.PRF).map((t) => t.id);
    const prf = spec.prf.find((x) => prfs.includes(x));
    if (prf === undefined) return null;
    suite.prf = prf;
    transforms.push({ type: TransformType.PRF, id: prf });
  }
  const integs = offered(p, TransformType.INTEG).map((t) => t.id);
  if (aead) {
    // An AEAD proposal may list INTEG NONE or nothing (3.3); anything else is inconsistent.
    if (integs.some((x) => x !== Integ.NONE)) return null;
  } else {
    const integ = spec.integ.find((x) => integs.includes(x));
    if (integ === undefined) return null;
    suite.integ = integ;
    transforms.push({ type: TransformType.INTEG, id: integ });
  }
  const dhs = offered(p, TransformType.DH)
    .map((t) => t.id)
    .filter((x) => x === 0 || DH_GROUPS[x]);
  const pick = (wanted: number[], groups: number[]) =>
    opts.keGroup !== undefined && wanted.includes(opts.keGroup) && groups.includes(opts.keGroup) ? opts.keGroup : wanted.find((x) => groups.includes(x));
  if (protocol === ProtocolId.IKE) {
    // The KE's group when acceptable, else our first acceptable one (the caller then
    // answers INVALID_KE_PAYLOAD naming it, 1.2 and 2.7).
    const dh = pick(spec.dh, dhs);
    if (dh === undefined) return null;
    suite.dh = dh;
    transforms.push({ type: TransformType.DH, id: dh });
  } else if (!opts.ignoreDh) {
    const groups = dhs.filter((x) => x !== 0);
    if (groups.length) {
      // PFS offered: our groups if we configured some, otherwise whatever the peer offers.
      let dh = pick(spec.dh.length ? spec.dh : groups, groups);
      if (dh === undefined && spec.dh.length === 0 && dhs.includes(0)) dh = 0;
      if (dh === undefined) return null;
      suite.dh = dh;
      transforms.push({ type: TransformType.DH, id: dh });
    } else if (spec.dh.length) {
      return null; // we require PFS, the peer offers none
    }
  }
  if (protocol === ProtocolId.ESP) {
    const esns = offered(p, TransformType.ESN).map((t) => t.id);
    // No ESN transform offered means "no ESN" (strongSwan always sends one).
    const esn = esns.length === 0 ? 0 : spec.esn.find((x) => esns.includes(x));
    if (esn === undefined) return null;
    suite.esn = esn === 1;
    if (esns.length) transforms.push({ type: TransformType.ESN, id: esn });
  }
  return { proposal: p, suite, transforms };
}

/** Our proposals for the initiator side, as transforms (one proposal per spec). */
export function proposalsFromSpecs(specs: ProposalSpec[], protocol: number, spi: Buffer, withDh = true): ProposalRepr[] {
  return specs.map((s, i) => {
    const t: TransformRepr[] = s.encr.map((e) => ({ type: TransformType.ENCR, id: e.id, keyLength: e.keyBits }));
    if (protocol === ProtocolId.IKE) t.push(...s.prf.map((x) => ({ type: TransformType.PRF, id: x })));
    t.push(...s.integ.map((x) => ({ type: TransformType.INTEG, id: x })));
    if (withDh) t.push(...s.dh.map((x) => ({ type: TransformType.DH, id: x })));
    if (protocol === ProtocolId.ESP) t.push(...s.esn.map((x) => ({ type: TransformType.ESN, id: x })));
    return { num: i + 1, protocol, spi, transforms: t };
  });
}

// ---------------------------------------------------------------- traffic selectors

export function selectorFromTs(t: TrafficSelectorRepr): Selector | null {
  if (t.type !== TS_IPV4_ADDR_RANGE) return null;
  return { protocol: t.protocol, start: t.start, end: t.end, startPort: t.startPort, endPort: t.endPort };
}

export function tsFromSelector(s: Selector): TrafficSelectorRepr {
  return { type: TS_IPV4_ADDR_RANGE, protocol: s.protocol, startPort: s.startPort, endPort: s.endPort, start: s.start, end: s.end };
}

/**
 * Narrows the peer's selectors to what policy allows (2.9). A proposed opaque port
 * range (start > end, 3.13.1) stays opaque only if the allowed one is any port.
 */
export function narrow(proposed: TrafficSelectorRepr[], allowed: Selector[]): Selector[] {
  const out: Selector[] = [];
  for (const t of proposed) {
    const s = selectorFromTs(t);
    if (!s) continue;
    for (const a of allowed) {
      const x = intersect(s, a);
      if (x && !out.some((o) => o.protocol === x.protocol && o.start === x.start && o.end === x.end && o.startPort === x.startPort && o.endPort === x.endPort))
        out.push(x);
    }
  }
  return out;
}

const PROTOCOLS: Record<string, number> = { any: 0, icmp: 1, tcp: 6, udp: 17 };

/**
 * Parses a selector as written in the configuration: "198.18.0.0/24", "198.18.0.2",
 * "198.18.0.10-198.18.0.20", optionally followed by "[tcp]", "[tcp/80]", "[udp/1000-2000]"
 * or "[47]" (strongSwan's notation). Throws RangeError with what is valid.
 */
export function parseSelector(text: string): Selector {
  const m = /^([^[\]]+)(?:\[([a-z0-9]+)(?:\/(\d+)(?:-(\d+))?)?\])?$/i.exec(text.trim());
  const valid = 'an address, CIDR or range, optionally with [protocol] or [protocol/port] or [protocol/low-high], e.g. 198.18.0.0/24[tcp/80]';
  if (!m) throw new RangeError(`"${text}" is not a selector (${valid})`);
  const addr = m[1]!.trim();
  let start: number, end: number;
  const cidr = parseCidr(addr);
  if (cidr) {
    const mask = prefixMask(cidr.prefix);
    start = (cidr.addr & mask) >>> 0;
    end = (start | (~mask >>> 0)) >>> 0;
  } else if (addr.includes('-')) {
    const [a, b] = addr.split('-').map((x) => parseIpv4(x));
    if (a === null || b === null || a === undefined || b === undefined || a > b) throw new RangeError(`"${addr}" is not an address range low-high (${valid})`);
    start = a;
    end = b;
  } else {
    const a = parseIpv4(addr);
    if (a === null) throw new RangeError(`"${addr}" is not an IPv4 address (${valid})`);
    start = end = a;
  }
  let protocol = 0,
    startPort = 0,
    endPort = 65535;
  if (m[2] !== undefined) {
    const p = m[2].toLowerCase();
    protocol = p in PROTOCOLS ? PROTOCOLS[p]! : /^\d+$/.test(p) && Number(p) <= 255 ? Number(p) : -1;
    if (protocol < 0) throw new RangeError(`"${m[2]}" is not a protocol (any, icmp, tcp, udp or a number 0-255)`);
    if (m[3] !== undefined) {
      startPort = Number(m[3]);
      endPort = m[4] !== undefined ? Number(m[4]) : startPort;
      if (startPort > 65535 || endPort > 65535 || startPort > endPort)
        throw new RangeError(`ports "${m[3]}${m[4] ? '-' + m[4] : ''}" must be 0-65535, low before high`);
      if (protocol !== 6 && protocol !== 17) throw new RangeError('ports need protocol tcp or udp');
    }
  }
  return { protocol, start, end, startPort, endPort };
}

export function hostSelector(addr: number): Selector {
  return { protocol: 0, start: addr, end: addr, startPort: 0, endPort: 65535 };
}
