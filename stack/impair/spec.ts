/**
 * The impairment language: one list of words describes one impairment, the same words on
 * the command line (`faultstack impair add ...`, `faultstack run --impair "..."`), in the
 * control protocol and, later, in a scenario file. Two kinds, told apart by the first word:
 *
 *   packet level (netem's words, tc-netem(8)):
 *     in|out [MATCH...] [limit PACKETS] [delay TIME [JITTER [CORRELATION]]]
 *            [distribution uniform|normal|pareto|paretonormal]
 *            [loss [random] PERCENT [CORRELATION] | loss state P13 [P31 [P32 [P23 [P14]]]]
 *             | loss gemodel P [R [1-H [1-K]]]] [ecn]
 *            [corrupt PERCENT [CORRELATION]] [duplicate PERCENT [CORRELATION]]
 *            [reorder PERCENT [CORRELATION]] [gap DISTANCE]
 *            [rate RATE [PACKETOVERHEAD [CELLSIZE [CELLOVERHEAD]]]]
 *            [slot MIN [MAX] | slot distribution TYPE DELAY JITTER] [packets N] [bytes N]]
 *            [seed N]
 *     MATCH: --src A[/P] --dst A[/P] --sport N[-M] --dport N[-M] --port N[-M]
 *            --proto tcp|udp|icmp|N --tcp-flags syn|syn-ack|fin|rst|FLAGS/MASK
 *            --conn A:P,B:P --nth N --every N --from TIME --until TIME
 *
 *   connection level (toxiproxy's toxics and attribute names):
 *     upstream|downstream [--port N[-M]] [--peer A[/P]] [--peer-port N[-M]]
 *            TYPE [ATTRIBUTE=VALUE...] [toxicity=P] [seed N]
 *     TYPE: latency (latency, jitter: ms), bandwidth (rate: KB/s), slow_close (delay: ms),
 *           timeout (timeout: ms), reset_peer (timeout: ms),
 *           slicer (average_size, size_variation: bytes; delay: us), limit_data (bytes)
 *
 * `parseImpairment(words)` gives the structured form (plain JSON, what the engine and a
 * scenario file's structured form use) or throws an ImpairSpecError whose message is one
 * line naming the bad word and what is valid. `formatImpairment(spec)` gives the words back
 * (canonical, with defaults left out), so list output can be pasted into `impair add`.
 */
import { UsageError } from '../util/errors';
import { formatIpv4, parseIpv4, prefixMask } from '../wire/addr';
import { DISTRIBUTIONS, DistributionName } from './random';
import {
  PERCENT_VALID,
  RATE_VALID,
  SIZE_VALID,
  TIME_VALID,
  UnitError,
  formatPercent,
  formatRate,
  formatTime,
  parseInteger,
  parsePercent,
  parseRate,
  parseSize,
  parseTime,
} from './units';

/** A bad impairment spec: a usage error (exit status 2 from the CLI, EUSAGE over the control socket). */
export class ImpairSpecError extends UsageError {
  constructor(message: string) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// structured form

export type Direction = 'in' | 'out';
export type Stream = 'upstream' | 'downstream';

export interface PortRange {
  lo: number;
  hi: number;
}
export interface Prefix {
  addr: number;
  prefix: number;
}

export interface TcpFlagsMatch {
  /** Flags examined. */
  mask: number;
  /** Required value of (flags & mask). */
  value: number;
  /** As written (shorthand or FLAGS/MASK). */
  text: string;
}

export interface PacketMatch {
  src?: Prefix;
  dst?: Prefix;
  sport?: PortRange;
  dport?: PortRange;
  /** Either port. */
  port?: PortRange;
  proto?: number;
  tcpFlags?: TcpFlagsMatch;
  /** One connection, both directions: packets between a:aPort and b:bPort. */
  conn?: { a: number; aPort: number; b: number; bPort: number };
  /** Only the Nth packet that matches the rest (1-based). */
  nth?: number;
  /** Every Nth packet that matches the rest (N, 2N, 3N...). */
  every?: number;
  /** Time window relative to when the impairment was added, ms. */
  fromMs?: number;
  untilMs?: number;
}

export interface Correlated {
  p: number;
  corr: number;
}

export type LossSpec =
  | { model: 'random'; p: number; corr: number }
  /** 4-state Markov model; states as tc-netem(8) numbers them. */
  | { model: 'state'; p13: number; p31: number; p32: number; p23: number; p14: number }
  /** Gilbert-Elliott: p good->bad, r bad->good, lossBad = 1-h, lossGood = 1-k. */
  | { model: 'gemodel'; p: number; r: number; lossBad: number; lossGood: number };

export interface SlotSpec {
  /** min/max delay between slots, ms (uniform in between), unless `dist` is given. */
  minMs: number;
  maxMs: number;
  dist?: { name: DistributionName; delayMs: number; jitterMs: number };
  /** Per-slot limits; 0 = none. */
  packets: number;
  bytes: number;
}

export interface NetemSpec {
  limit: number;
  delay?: { ms: number; jitterMs: number; corr: number };
  distribution?: DistributionName;
  loss?: LossSpec;
  ecn?: boolean;
  corrupt?: Correlated;
  duplicate?: Correlated;
  reorder?: Correlated;
  gap?: number;
  rate?: { bytesPerSec: number; packetOverhead: number; cellSize: number; cellOverhead: number };
  slot?: SlotSpec;
}

export interface PacketImpairSpec {
  kind: 'packet';
  direction: Direction;
  match: PacketMatch;
  netem: NetemSpec;
  seed?: number;
}

export const TOXIC_TYPES = ['latency', 'bandwidth', 'slow_close', 'timeout', 'reset_peer', 'slicer', 'limit_data'] as const;
export type ToxicType = (typeof TOXIC_TYPES)[number];

/** Each toxic's attributes, toxiproxy's names and units; all default to 0 as in toxiproxy. */
export const TOXIC_ATTRIBUTES: Record<ToxicType, Record<string, string>> = {
  latency: { latency: 'ms', jitter: 'ms' },
  bandwidth: { rate: 'KB/s' },
  slow_close: { delay: 'ms' },
  timeout: { timeout: 'ms' },
  reset_peer: { timeout: 'ms' },
  slicer: { average_size: 'bytes', size_variation: 'bytes', delay: 'us' },
  limit_data: { bytes: 'bytes' },
};

export interface ToxicMatch {
  /** The stack's own port (the service's, for accepted connections). */
  port?: PortRange;
  peer?: Prefix;
  peerPort?: PortRange;
}

export interface ToxicImpairSpec {
  kind: 'toxic';
  stream: Stream;
  match: ToxicMatch;
  type: ToxicType;
  attributes: Record<string, number>;
  /** Probability that the toxic applies to a connection (toxiproxy's toxicity), 0..1. */
  toxicity: number;
  seed?: number;
}

export type ImpairSpec = PacketImpairSpec | ToxicImpairSpec;

export const NETEM_DEFAULT_LIMIT = 1000;
export const MAX_LIMIT = 100_000;
const MAX_TIME_MS = 3_600_000;

export const NETEM_WORDS = ['limit', 'delay', 'distribution', 'loss', 'ecn', 'corrupt', 'duplicate', 'reorder', 'gap', 'rate', 'slot', 'seed'] as const;
export const PACKET_MATCH_FLAGS = [
  '--src',
  '--dst',
  '--sport',
  '--dport',
  '--port',
  '--proto',
  '--tcp-flags',
  '--conn',
  '--nth',
  '--every',
  '--from',
  '--until',
] as const;
export const TOXIC_MATCH_FLAGS = ['--port', '--peer', '--peer-port'] as const;
const KINDS = ['in', 'out', 'upstream', 'downstream'] as const;

// ---------------------------------------------------------------------------------------------
// parsing

function suggest(word: string, candidates: readonly string[]): string {
  if (word.length < 3) return '';
  let best = '',
    bestD = Infinity;
  for (const c of candidates) {
    const d = distance(word.toLowerCase(), c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return bestD <= Math.max(1, Math.floor(word.length / 3)) ? ` (did you mean ${best}?)` : '';
}

function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

const q = (s: string) => JSON.stringify(s.length > 60 ? s.slice(0, 57) + '...' : s);

/** Splits a spec written as one string ("out --dport 80 loss 3%") into words. */
export function splitWords(spec: string | readonly string[]): string[] {
  if (typeof spec !== 'string') return spec.map(String);
  return spec.trim().split(/\s+/).filter(Boolean);
}

class Words {
  i = 0;
  constructor(readonly w: string[]) {}
  get done(): boolean {
    return this.i >= this.w.length;
  }
  peek(k = 0): string | undefined {
    return this.w[this.i + k];
  }
  take(): string {
    return this.w[this.i++]!;
  }
  /** tc's NEXT_IS_NUMBER: an optional argument follows when the next word starts with a digit. */
  nextIsNumber(signed = false): boolean {
    const n = this.peek();
    return n !== undefined && (/^\d/.test(n) || (signed && /^-\d/.test(n)));
  }
  /** The value after a word; an error naming the word when it is missing. */
  need(what: string, valid: string): string {
    const n = this.peek();
    if (n === undefined || n.startsWith('--')) throw new ImpairSpecError(`${what} needs ${valid}`);
    return this.take();
  }
}

function unit<T>(what: string, raw: string, parse: (s: string) => T): T {
  try {
    return parse(raw);
  } catch (e) {
    if (e instanceof UnitError) throw new ImpairSpecError(`${what} ${q(raw)}: must be ${e.valid}`);
    throw e;
  }
}

function parsePrefix(what: string, raw: string): Prefix {
  const slash = raw.indexOf('/');
  const addr = parseIpv4(slash < 0 ? raw : raw.slice(0, slash));
  const ptext = slash < 0 ? '32' : raw.slice(slash + 1);
  if (addr === null || !/^\d{1,2}$/.test(ptext) || Number(ptext) > 32) {
    throw new ImpairSpecError(`${what} ${q(raw)}: must be an IPv4 address or prefix, e.g. 198.18.0.1 or 198.18.0.0/24`);
  }
  const prefix = Number(ptext);
  return { addr: (addr & prefixMask(prefix)) >>> 0, prefix };
}

function parsePorts(what: string, raw: string): PortRange {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(raw);
  const lo = m ? Number(m[1]) : NaN,
    hi = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || lo > 65535 || hi > 65535 || lo > hi) {
    throw new ImpairSpecError(`${what} ${q(raw)}: must be a port from 0 to 65535 or a range LO-HI, e.g. 80 or 8000-8099`);
  }
  return { lo, hi };
}

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17 };

const TCP_FLAG_BITS: Record<string, number> = { fin: 0x01, syn: 0x02, rst: 0x04, psh: 0x08, ack: 0x10, urg: 0x20, ece: 0x40, cwr: 0x80 };
const TCP_FLAG_SHORTHANDS: Record<string, [number, number]> = {
  // [value, mask]: "only SYN" is the opening SYN (no ACK); FIN and RST are whatever carries them.
  syn: [0x02, 0x12],
  'syn-ack': [0x12, 0x12],
  fin: [0x01, 0x01],
  rst: [0x04, 0x04],
};
const TCP_FLAGS_VALID = 'syn (the opening SYN), syn-ack, fin, rst, or FLAGS/MASK with flag names fin,syn,rst,psh,ack,urg,ece,cwr (e.g. syn,ack/syn,ack)';

function flagList(what: string, raw: string, list: string): number {
  let bits = 0;
  for (const name of list.split(',')) {
    const b = TCP_FLAG_BITS[name.toLowerCase()];
    if (b === undefined) throw new ImpairSpecError(`${what} ${q(raw)}: ${q(name)} is not a TCP flag; must be ${TCP_FLAGS_VALID}`);
    bits |= b;
  }
  return bits;
}

function parseTcpFlags(raw: string): TcpFlagsMatch {
  const short = TCP_FLAG_SHORTHANDS[raw.toLowerCase()];
  if (short) return { value: short[0], mask: short[1], text: raw.toLowerCase() };
  const slash = raw.indexOf('/');
  if (slash < 0) throw new ImpairSpecError(`--tcp-flags ${q(raw)}: must be ${TCP_FLAGS_VALID}`);
  const value = flagList('--tcp-flags', raw, raw.slice(0, slash));
  const mask = flagList('--tcp-flags', raw, raw.slice(slash + 1));
  if ((value & ~mask) !== 0) throw new ImpairSpecError(`--tcp-flags ${q(raw)}: the flags before / must be among the mask after it`);
  return { value, mask, text: raw.toLowerCase() };
}

function parseEndpoint(raw: string): [number, number] | null {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(raw);
  if (!m) return null;
  const a = parseIpv4(m[1]!);
  const p = Number(m[2]);
  return a === null || p > 65535 ? null : [a, p];
}

function parseConn(raw: string): NonNullable<PacketMatch['conn']> {
  const parts = raw.split(',');
  const a = parts.length === 2 ? parseEndpoint(parts[0]!) : null;
  const b = parts.length === 2 ? parseEndpoint(parts[1]!) : null;
  if (!a || !b)
    throw new ImpairSpecError(`--conn ${q(raw)}: must be ADDR:PORT,ADDR:PORT (one connection, either direction), e.g. 198.18.0.1:40000,198.18.0.2:80`);
  return { a: a[0], aPort: a[1], b: b[0], bPort: b[1] };
}

/** Reads one `--flag VALUE` (or `--flag=VALUE`) of the packet match. */
function packetMatchFlag(w: Words, m: PacketMatch): void {
  const tok = w.take();
  const eq = tok.indexOf('=');
  const flag = eq < 0 ? tok : tok.slice(0, eq);
  if (!(PACKET_MATCH_FLAGS as readonly string[]).includes(flag)) {
    throw new ImpairSpecError(`unknown match flag ${q(flag)}${suggest(flag, PACKET_MATCH_FLAGS)}; packet match flags: ${PACKET_MATCH_FLAGS.join(' ')}`);
  }
  const valid: Record<string, string> = {
    '--src': 'an address or prefix',
    '--dst': 'an address or prefix',
    '--sport': 'a port or range',
    '--dport': 'a port or range',
    '--port': 'a port or range',
    '--proto': 'tcp, udp, icmp or a protocol number',
    '--tcp-flags': TCP_FLAGS_VALID,
    '--conn': 'ADDR:PORT,ADDR:PORT',
    '--nth': 'a packet number',
    '--every': 'a packet count',
    '--from': TIME_VALID,
    '--until': TIME_VALID,
  };
  const raw = eq < 0 ? w.need(flag, valid[flag]!) : tok.slice(eq + 1);
  const once = (k: keyof PacketMatch) => {
    if (m[k] !== undefined) throw new ImpairSpecError(`${flag} given twice; give it once`);
  };
  switch (flag) {
    case '--src':
      once('src');
      m.src = parsePrefix(flag, raw);
      break;
    case '--dst':
      once('dst');
      m.dst = parsePrefix(flag, raw);
      break;
    case '--sport':
      once('sport');
      m.sport = parsePorts(flag, raw);
      break;
    case '--dport':
      once('dport');
      m.dport = parsePorts(flag, raw);
      break;
    case '--port':
      once('port');
      m.port = parsePorts(flag, raw);
      break;
    case '--proto': {
      once('proto');
      const named = PROTOCOLS[raw.toLowerCase()];
      if (named !== undefined) m.proto = named;
      else if (/^\d{1,3}$/.test(raw) && Number(raw) <= 255) m.proto = Number(raw);
      else throw new ImpairSpecError(`--proto ${q(raw)}: must be tcp, udp, icmp or a protocol number from 0 to 255`);
      break;
    }
    case '--tcp-flags':
      once('tcpFlags');
      m.tcpFlags = parseTcpFlags(raw);
      break;
    case '--conn':
      once('conn');
      m.conn = parseConn(raw);
      break;
    case '--nth':
      once('nth');
      m.nth = unit(flag, raw, (s) => parseInteger(s, 1, Number.MAX_SAFE_INTEGER));
      break;
    case '--every':
      once('every');
      m.every = unit(flag, raw, (s) => parseInteger(s, 1, Number.MAX_SAFE_INTEGER));
      break;
    case '--from':
      once('fromMs');
      m.fromMs = unit(flag, raw, parseTime);
      break;
    case '--until':
      once('untilMs');
      m.untilMs = unit(flag, raw, parseTime);
      break;
  }
}

function correlated(w: Words, word: string): Correlated {
  const p = unit(word, w.need(word, `PERCENT: ${PERCENT_VALID}`), parsePercent);
  const corr = w.nextIsNumber() ? unit(`${word} correlation`, w.take(), parsePercent) : 0;
  return { p, corr };
}

function percentArg(w: Words, what: string): number {
  return unit(what, w.take(), parsePercent);
}

function timeArg(w: Words, what: string): number {
  const ms = unit(what, w.take(), parseTime);
  if (ms > MAX_TIME_MS) throw new ImpairSpecError(`${what} must be at most 3600s`);
  return ms;
}

function parseLoss(w: Words): LossSpec {
  const first = w.peek();
  if (first === undefined || first.startsWith('--')) {
    throw new ImpairSpecError(`loss needs random PERCENT [CORRELATION], state P13 [P31 [P32 [P23 [P14]]]] or gemodel P [R [1-H [1-K]]]`);
  }
  if (first === 'state') {
    w.take();
    if (!w.nextIsNumber()) throw new ImpairSpecError('loss state needs P13 (a percentage), e.g. loss state 1% 30%');
    const p13 = percentArg(w, 'loss state p13');
    // tc's defaults: p31 = 1 - p13, p32 = 0, p23 = 1, p14 = 0.
    const s = { model: 'state' as const, p13, p31: 1 - p13, p32: 0, p23: 1, p14: 0 };
    if (w.nextIsNumber()) s.p31 = percentArg(w, 'loss state p31');
    if (w.nextIsNumber()) s.p32 = percentArg(w, 'loss state p32');
    if (w.nextIsNumber()) s.p23 = percentArg(w, 'loss state p23');
    if (w.nextIsNumber()) s.p14 = percentArg(w, 'loss state p14');
    if (s.p13 + s.p14 > 1) throw new ImpairSpecError('loss state: p13 + p14 must be at most 100% (both leave state 1)');
    if (s.p31 + s.p32 > 1) throw new ImpairSpecError('loss state: p31 + p32 must be at most 100% (both leave state 3)');
    return s;
  }
  if (first === 'gemodel') {
    w.take();
    if (!w.nextIsNumber()) throw new ImpairSpecError('loss gemodel needs P (a percentage), e.g. loss gemodel 1% 10% 70% 0.1%');
    const p = percentArg(w, 'loss gemodel p');
    // tc's defaults: r = 1 - p, 1-h = 1 (every packet lost in the bad state), 1-k = 0.
    const s = { model: 'gemodel' as const, p, r: 1 - p, lossBad: 1, lossGood: 0 };
    if (w.nextIsNumber()) s.r = percentArg(w, 'loss gemodel r');
    if (w.nextIsNumber()) s.lossBad = percentArg(w, 'loss gemodel 1-h');
    if (w.nextIsNumber()) s.lossGood = percentArg(w, 'loss gemodel 1-k');
    return s;
  }
  if (first === 'random') w.take();
  else if (!/^\d/.test(first)) {
    throw new ImpairSpecError(
      `loss ${q(first)}: must be random, state or gemodel, or a percentage (loss 3% is loss random 3%)${suggest(first, ['random', 'state', 'gemodel'])}`,
    );
  }
  const c = correlated(w, 'loss random');
  return { model: 'random', p: c.p, corr: c.corr };
}

function parseSlot(w: Words): SlotSpec {
  const s: SlotSpec = { minMs: 0, maxMs: 0, packets: 0, bytes: 0 };
  if (w.nextIsNumber()) {
    s.minMs = timeArg(w, 'slot MIN_DELAY');
    s.maxMs = w.nextIsNumber() ? timeArg(w, 'slot MAX_DELAY') : s.minMs;
    if (s.maxMs < s.minMs) throw new ImpairSpecError('slot MAX_DELAY must not be less than MIN_DELAY');
  } else if (w.peek() === 'distribution') {
    w.take();
    const name = w.need('slot distribution', DISTRIBUTIONS.join(', '));
    if (!(DISTRIBUTIONS as readonly string[]).includes(name)) {
      throw new ImpairSpecError(`slot distribution ${q(name)}: must be one of ${DISTRIBUTIONS.join(', ')}${suggest(name, DISTRIBUTIONS)}`);
    }
    if (w.done) throw new ImpairSpecError('slot distribution needs DELAY and JITTER times, e.g. slot distribution normal 10ms 2ms');
    const delayMs = timeArg(w, 'slot distribution DELAY');
    if (w.done) throw new ImpairSpecError('slot distribution needs JITTER after DELAY, e.g. slot distribution normal 10ms 2ms');
    const jitterMs = timeArg(w, 'slot distribution JITTER');
    if (!(jitterMs > 0)) throw new ImpairSpecError('slot distribution JITTER must be more than 0');
    s.dist = { name: name as DistributionName, delayMs, jitterMs };
  } else {
    throw new ImpairSpecError('slot needs MIN_DELAY [MAX_DELAY] or distribution TYPE DELAY JITTER, e.g. slot 10ms 20ms packets 8');
  }
  if (w.peek() === 'packets') {
    w.take();
    s.packets = unit('slot packets', w.need('slot packets', 'a packet count'), (x) => parseInteger(x, 1, 1_000_000_000));
  }
  if (w.peek() === 'bytes') {
    w.take();
    s.bytes = unit('slot bytes', w.need('slot bytes', SIZE_VALID), parseSize);
  }
  return s;
}

function parseSeed(w: Words): number {
  return unit('seed', w.need('seed', 'an integer from 0 to 4294967295'), (s) => parseInteger(s, 0, 4294967295));
}

function parsePacket(direction: Direction, w: Words): PacketImpairSpec {
  const match: PacketMatch = {};
  const n: NetemSpec = { limit: NETEM_DEFAULT_LIMIT };
  let seed: number | undefined;
  const seen = new Set<string>();
  while (!w.done) {
    const word = w.peek()!;
    if (word.startsWith('--')) {
      packetMatchFlag(w, match);
      continue;
    }
    w.take();
    const canon = word === 'latency' ? 'delay' : word === 'drop' ? 'loss' : word;
    if (!(NETEM_WORDS as readonly string[]).includes(canon)) {
      const tox = (TOXIC_TYPES as readonly string[]).includes(word) ? ` (${word} is a connection-level toxic: start with upstream or downstream)` : '';
      throw new ImpairSpecError(
        `${q(word)} is not a netem word${tox || suggest(word, [...NETEM_WORDS, ...PACKET_MATCH_FLAGS])}; after ${direction} come match flags (${PACKET_MATCH_FLAGS.join(' ')}) and netem words: ${NETEM_WORDS.join(', ')}`,
      );
    }
    if (seen.has(canon)) throw new ImpairSpecError(`${canon} given twice; give it once`);
    seen.add(canon);
    switch (canon) {
      case 'limit':
        n.limit = unit('limit', w.need('limit', 'a packet count'), (s) => parseInteger(s, 1, MAX_LIMIT));
        break;
      case 'delay': {
        if (w.peek() === undefined || !/^\d/.test(w.peek()!)) throw new ImpairSpecError(`delay needs TIME [JITTER [CORRELATION]]: ${TIME_VALID}`);
        const ms = timeArg(w, 'delay');
        const hasJitter = w.nextIsNumber();
        const jitterMs = hasJitter ? timeArg(w, 'delay jitter') : 0;
        const corr = hasJitter && w.nextIsNumber() ? unit('delay correlation', w.take(), parsePercent) : 0;
        n.delay = { ms, jitterMs, corr };
        break;
      }
      case 'distribution': {
        const name = w.need('distribution', DISTRIBUTIONS.join(', '));
        if (!(DISTRIBUTIONS as readonly string[]).includes(name)) {
          throw new ImpairSpecError(`distribution ${q(name)}: must be one of ${DISTRIBUTIONS.join(', ')}${suggest(name, DISTRIBUTIONS)}`);
        }
        n.distribution = name as DistributionName;
        break;
      }
      case 'loss':
        n.loss = parseLoss(w);
        break;
      case 'ecn':
        n.ecn = true;
        break;
      case 'corrupt':
        n.corrupt = correlated(w, 'corrupt');
        break;
      case 'duplicate':
        n.duplicate = correlated(w, 'duplicate');
        break;
      case 'reorder':
        n.reorder = correlated(w, 'reorder');
        break;
      case 'gap':
        n.gap = unit('gap', w.need('gap', 'a distance in packets'), (s) => parseInteger(s, 1, 1_000_000));
        break;
      case 'rate': {
        const raw = w.need('rate', RATE_VALID);
        if (raw.includes('%')) throw new ImpairSpecError(`rate ${q(raw)}: a share of the device's speed has no meaning on a TUN device; give ${RATE_VALID}`);
        const bytesPerSec = unit('rate', raw, parseRate);
        const r = { bytesPerSec, packetOverhead: 0, cellSize: 0, cellOverhead: 0 };
        if (w.nextIsNumber(true)) r.packetOverhead = unit('rate PACKETOVERHEAD', w.take(), (s) => parseInteger(s, -65535, 65535));
        if (w.nextIsNumber()) r.cellSize = unit('rate CELLSIZE', w.take(), (s) => parseInteger(s, 0, 65535));
        if (w.nextIsNumber(true)) r.cellOverhead = unit('rate CELLOVERHEAD', w.take(), (s) => parseInteger(s, -65535, 65535));
        n.rate = r;
        break;
      }
      case 'slot':
        n.slot = parseSlot(w);
        break;
      case 'seed':
        seed = parseSeed(w);
        break;
    }
  }
  // The checks tc makes before it talks to the kernel, with its reasons.
  if (n.reorder && n.reorder.p > 0) {
    if (!n.delay || n.delay.ms === 0)
      throw new ImpairSpecError('reorder needs a delay: netem reorders by sending some packets at once while the others wait (add e.g. delay 10ms)');
    n.gap ??= 1;
  } else if (n.gap !== undefined) {
    throw new ImpairSpecError('gap needs reorder PERCENT (the chance that the packet after the gap goes at once), e.g. reorder 100% gap 5');
  }
  if (n.distribution && (!n.delay || n.delay.ms === 0 || n.delay.jitterMs === 0)) {
    throw new ImpairSpecError('distribution needs delay TIME JITTER (a delay and a jitter to shape), e.g. delay 20ms 5ms distribution normal');
  }
  if (n.ecn && !n.loss) throw new ImpairSpecError('ecn needs a loss model: it marks (CE) the packets the loss model would drop');
  if (match.nth !== undefined && match.every !== undefined)
    throw new ImpairSpecError('--nth and --every exclude each other: --nth N hits one packet, --every N each Nth');
  if (match.fromMs !== undefined && match.untilMs !== undefined && match.untilMs <= match.fromMs) {
    throw new ImpairSpecError('--until must be later than --from');
  }
  const acts = ['delay', 'loss', 'corrupt', 'duplicate', 'reorder', 'rate', 'slot'].filter((k) => seen.has(k));
  if (acts.length === 0) {
    throw new ImpairSpecError(
      `nothing to do: give at least one of delay, loss, corrupt, duplicate, reorder, rate or slot (e.g. ${direction} loss 3% delay 20ms)`,
    );
  }
  return { kind: 'packet', direction, match, netem: n, ...(seed !== undefined ? { seed } : {}) };
}

function toxicMatchFlag(w: Words, m: ToxicMatch): void {
  const tok = w.take();
  const eq = tok.indexOf('=');
  const flag = eq < 0 ? tok : tok.slice(0, eq);
  if (!(TOXIC_MATCH_FLAGS as readonly string[]).includes(flag)) {
    const pkt = (PACKET_MATCH_FLAGS as readonly string[]).includes(flag)
      ? ` (${flag} matches packets: start with in or out)`
      : suggest(flag, TOXIC_MATCH_FLAGS);
    throw new ImpairSpecError(`unknown match flag ${q(flag)}${pkt}; connection match flags: ${TOXIC_MATCH_FLAGS.join(' ')}`);
  }
  const raw = eq < 0 ? w.need(flag, flag === '--peer' ? 'an address or prefix' : 'a port or range') : tok.slice(eq + 1);
  if (flag === '--port') {
    if (m.port) throw new ImpairSpecError('--port given twice');
    m.port = parsePorts(flag, raw);
  } else if (flag === '--peer') {
    if (m.peer) throw new ImpairSpecError('--peer given twice');
    m.peer = parsePrefix(flag, raw);
  } else {
    if (m.peerPort) throw new ImpairSpecError('--peer-port given twice');
    m.peerPort = parsePorts(flag, raw);
  }
}

function attrList(type: ToxicType): string {
  return Object.entries(TOXIC_ATTRIBUTES[type])
    .map(([k, u]) => `${k}=N (${u})`)
    .join(', ');
}

function parseToxic(stream: Stream, w: Words): ToxicImpairSpec {
  const match: ToxicMatch = {};
  let type: ToxicType | undefined;
  const attributes: Record<string, number> = {};
  let toxicity = 1;
  let seed: number | undefined;
  let sawToxicity = false;
  while (!w.done) {
    const word = w.peek()!;
    if (word.startsWith('--')) {
      toxicMatchFlag(w, match);
      continue;
    }
    w.take();
    if (word === 'seed') {
      if (seed !== undefined) throw new ImpairSpecError('seed given twice');
      seed = parseSeed(w);
      continue;
    }
    const eq = word.indexOf('=');
    if (type === undefined) {
      if (eq >= 0 || !(TOXIC_TYPES as readonly string[]).includes(word)) {
        const netem = (NETEM_WORDS as readonly string[]).includes(word) ? ` (${word} is a netem word: start with in or out)` : suggest(word, TOXIC_TYPES);
        throw new ImpairSpecError(`${q(word)} is not a toxic${netem}; after ${stream} comes one of ${TOXIC_TYPES.join(', ')}`);
      }
      type = word as ToxicType;
      continue;
    }
    if (eq < 0) {
      const again = (TOXIC_TYPES as readonly string[]).includes(word) ? ' (one toxic per impairment: add another with a second impair add)' : '';
      throw new ImpairSpecError(`${q(word)}: attributes are NAME=VALUE${again}; ${type} takes ${attrList(type)}, and toxicity=P`);
    }
    const name = word.slice(0, eq),
      raw = word.slice(eq + 1);
    if (name === 'toxicity') {
      if (sawToxicity) throw new ImpairSpecError('toxicity given twice');
      sawToxicity = true;
      toxicity = raw.endsWith('%')
        ? unit('toxicity', raw, parsePercent)
        : unit('toxicity', raw, (s) => {
            const v = Number(s);
            if (!/^(\d+(\.\d*)?|\.\d+)$/.test(s) || v > 1) throw new UnitError('a probability from 0 to 1 (or a percentage such as 50%)');
            return v;
          });
      continue;
    }
    if (!(name in TOXIC_ATTRIBUTES[type])) {
      throw new ImpairSpecError(
        `${q(name)} is not an attribute of ${type}${suggest(name, Object.keys(TOXIC_ATTRIBUTES[type]))}; ${type} takes ${attrList(type)}, and toxicity=P`,
      );
    }
    if (name in attributes) throw new ImpairSpecError(`${name} given twice`);
    attributes[name] = unit(`${type} ${name}`, raw, (s) => parseInteger(s, 0, 1e12));
  }
  if (type === undefined)
    throw new ImpairSpecError(`${stream} needs a toxic: one of ${TOXIC_TYPES.join(', ')} (e.g. ${stream} --port 80 latency latency=100 jitter=20)`);
  for (const k of Object.keys(TOXIC_ATTRIBUTES[type])) attributes[k] ??= 0;
  if (type === 'slicer') {
    if (attributes.average_size! < 1) throw new ImpairSpecError('slicer needs average_size=N of at least 1 byte');
    if (attributes.size_variation! >= attributes.average_size!) throw new ImpairSpecError('slicer size_variation must be smaller than average_size');
  }
  if (type === 'latency' && attributes.jitter! > attributes.latency!) {
    // toxiproxy allows it; a negative delay is simply none. Keep it, as toxiproxy does.
  }
  return { kind: 'toxic', stream, match, type, attributes, toxicity, ...(seed !== undefined ? { seed } : {}) };
}

/** Words (or one string) to the structured form; throws ImpairSpecError. */
export function parseImpairment(spec: string | readonly string[]): ImpairSpec {
  const w = new Words(splitWords(spec));
  if (w.done)
    throw new ImpairSpecError(`empty impairment: start with in or out (packets, netem's words) or upstream or downstream (connections, toxiproxy's toxics)`);
  const first = w.take();
  switch (first) {
    case 'in':
    case 'out':
      return parsePacket(first, w);
    case 'upstream':
    case 'downstream':
      return parseToxic(first, w);
    default:
      throw new ImpairSpecError(
        `${q(first)} is not a direction${suggest(first, KINDS)}; an impairment starts with in or out (packets, netem's words) or upstream or downstream (connections, toxiproxy's toxics)`,
      );
  }
}

// ---------------------------------------------------------------------------------------------
// words back

function prefixText(p: Prefix): string {
  return p.prefix === 32 ? formatIpv4(p.addr) : `${formatIpv4(p.addr)}/${p.prefix}`;
}
function portsText(r: PortRange): string {
  return r.lo === r.hi ? String(r.lo) : `${r.lo}-${r.hi}`;
}
function corrText(p: number, corr: number): string {
  return corr > 0 ? `${formatPercent(p)} ${formatPercent(corr)}` : formatPercent(p);
}

export function formatMatch(m: PacketMatch | ToxicMatch, kind: 'packet' | 'toxic'): string[] {
  const out: string[] = [];
  if (kind === 'toxic') {
    const t = m as ToxicMatch;
    if (t.port) out.push('--port', portsText(t.port));
    if (t.peer) out.push('--peer', prefixText(t.peer));
    if (t.peerPort) out.push('--peer-port', portsText(t.peerPort));
    return out;
  }
  const p = m as PacketMatch;
  if (p.src) out.push('--src', prefixText(p.src));
  if (p.dst) out.push('--dst', prefixText(p.dst));
  if (p.sport) out.push('--sport', portsText(p.sport));
  if (p.dport) out.push('--dport', portsText(p.dport));
  if (p.port) out.push('--port', portsText(p.port));
  if (p.proto !== undefined) out.push('--proto', Object.keys(PROTOCOLS).find((k) => PROTOCOLS[k] === p.proto) ?? String(p.proto));
  if (p.tcpFlags) out.push('--tcp-flags', p.tcpFlags.text);
  if (p.conn) out.push('--conn', `${formatIpv4(p.conn.a)}:${p.conn.aPort},${formatIpv4(p.conn.b)}:${p.conn.bPort}`);
  if (p.nth !== undefined) out.push('--nth', String(p.nth));
  if (p.every !== undefined) out.push('--every', String(p.every));
  if (p.fromMs !== undefined) out.push('--from', formatTime(p.fromMs));
  if (p.untilMs !== undefined) out.push('--until', formatTime(p.untilMs));
  return out;
}

export function formatNetem(n: NetemSpec): string[] {
  const out: string[] = [];
  if (n.limit !== NETEM_DEFAULT_LIMIT) out.push('limit', String(n.limit));
  if (n.delay) {
    out.push('delay', formatTime(n.delay.ms));
    if (n.delay.jitterMs > 0) out.push(formatTime(n.delay.jitterMs));
    if (n.delay.jitterMs > 0 && n.delay.corr > 0) out.push(formatPercent(n.delay.corr));
  }
  if (n.distribution) out.push('distribution', n.distribution);
  if (n.loss) {
    const l = n.loss;
    if (l.model === 'random') out.push('loss', ...corrText(l.p, l.corr).split(' '));
    else if (l.model === 'state') out.push('loss', 'state', ...[l.p13, l.p31, l.p32, l.p23, l.p14].map(formatPercent));
    else out.push('loss', 'gemodel', ...[l.p, l.r, l.lossBad, l.lossGood].map(formatPercent));
  }
  if (n.ecn) out.push('ecn');
  if (n.corrupt) out.push('corrupt', ...corrText(n.corrupt.p, n.corrupt.corr).split(' '));
  if (n.duplicate) out.push('duplicate', ...corrText(n.duplicate.p, n.duplicate.corr).split(' '));
  if (n.reorder) out.push('reorder', ...corrText(n.reorder.p, n.reorder.corr).split(' '));
  if (n.gap !== undefined && n.gap !== 1) out.push('gap', String(n.gap));
  if (n.rate) {
    const r = n.rate;
    out.push('rate', formatRate(r.bytesPerSec));
    if (r.packetOverhead || r.cellSize || r.cellOverhead) out.push(String(r.packetOverhead));
    if (r.cellSize || r.cellOverhead) out.push(String(r.cellSize));
    if (r.cellOverhead) out.push(String(r.cellOverhead));
  }
  if (n.slot) {
    const s = n.slot;
    if (s.dist) out.push('slot', 'distribution', s.dist.name, formatTime(s.dist.delayMs), formatTime(s.dist.jitterMs));
    else out.push('slot', formatTime(s.minMs), ...(s.maxMs !== s.minMs ? [formatTime(s.maxMs)] : []));
    if (s.packets) out.push('packets', String(s.packets));
    if (s.bytes) out.push('bytes', String(s.bytes));
  }
  return out;
}

/** The canonical words of an impairment (parseImpairment(formatImpairment(s)) equals s). */
export function formatImpairment(s: ImpairSpec): string {
  const words: string[] = [];
  if (s.kind === 'packet') {
    words.push(s.direction, ...formatMatch(s.match, 'packet'), ...formatNetem(s.netem));
  } else {
    words.push(s.stream, ...formatMatch(s.match, 'toxic'), s.type);
    for (const k of Object.keys(TOXIC_ATTRIBUTES[s.type])) {
      const v = s.attributes[k] ?? 0;
      if (v !== 0) words.push(`${k}=${v}`);
    }
    if (s.toxicity !== 1) words.push(`toxicity=${Number(s.toxicity.toPrecision(6))}`);
  }
  if (s.seed !== undefined) words.push('seed', String(s.seed));
  return words.join(' ');
}
