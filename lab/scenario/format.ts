/**
 * Scenario files (docs/scenarios.md): one YAML file describes one experiment, the lab's
 * topology, the stack's profile, faults, parameters and impairments, timed steps, the
 * traffic and the expectations on what is measured. This module parses and validates a
 * file into a `Scenario`; it runs nothing and needs no privilege (`faultstack scenario
 * check`). lab/scenario/run.ts runs one.
 *
 * A bad file gives one ScenarioError whose message is one line naming the file, the line
 * and column (from the YAML nodes' ranges), the field, and what is valid:
 *   scenarios/x.yaml:12:7: steps[2].ping.count: must be an integer from 1 to 10000, got "many"
 *
 * The validation is our own code over the document's nodes (not a JSON-schema library):
 * every field is checked where it is read, so the error can say what that field accepts.
 */
import * as fs from 'node:fs';
import { Document, LineCounter, isMap, isScalar, isSeq, parseDocument, type Node, type Pair, type Scalar, type YAMLMap, type YAMLSeq } from 'yaml';
import {
  ALL_MODES,
  FAULTS,
  PARAM_NAMES,
  PROFILE_NAMES,
  findParam,
  lookupFault,
  lookupParam,
  parseParamValue,
  type FaultMode,
} from '../../stack/faults/catalogue';
import { parseImpairment } from '../../stack/impair/spec';
import { SERVICE_NAMES } from '../../stack/runtime/options';
import { editDistance } from '../../stack/util/edit-distance';

// ------------------------------------------------------------------------------ the model

export type Topology = 'tun' | 'tap' | 'pmtu' | 'firewall' | 'nlb';
export const TOPOLOGIES: readonly Topology[] = ['tun', 'tap', 'pmtu', 'firewall', 'nlb'];

/** Where traffic starts: the stack's kernel side, the client behind the routers, the VM on the bridge, the firewall's internal host. */
export type Origin = 'host' | 'client' | 'vm' | 'inside';

export interface LabSpec {
  topology: Topology;
  /** tun and tap: the stack's link MTU. */
  mtu?: number;
  /** tun: Linux routers in a line behind the kernel side; each forwards onto a link of this MTU. */
  routers: { mtu: number }[];
  /** pmtu: client addresses; nlb: strongSwan clients. */
  clients: number;
  /** nlb: cluster hosts. */
  hosts: number;
  /** pmtu: the routers' forward path at the start. */
  path: 'A' | 'B' | 'balanced';
  /** nlb: the cluster's operation mode. */
  nlbMode: 'unicast' | 'multicast' | 'igmp';
}

export interface StackSpec {
  profile?: string;
  services?: string[];
  faults: Record<string, FaultMode>;
  params: Record<string, number | string>;
  /** `--impair` words, checked with the stack's own parser. */
  impair: string[];
  offloads: boolean;
}

export type Action =
  | { kind: 'set'; fault: string; mode: FaultMode }
  | { kind: 'param'; name: string; value: number | string }
  | { kind: 'impair'; op: 'add'; spec: string }
  | { kind: 'impair'; op: 'clear' }
  | { kind: 'wait'; ms: number }
  | { kind: 'unlock' }
  | { kind: 'path'; path: 'A' | 'B' | 'balanced' }
  | Traffic;

export type Traffic =
  | { kind: 'ping'; from: Origin; to?: string; count: number; intervalMs: number; waitMs: number }
  | { kind: 'curl'; from: Origin; to?: string; path: string; maxTimeMs: number }
  | { kind: 'iperf3'; from: Origin; to?: string; durationMs: number; reverse: boolean; udp: boolean; bitrate?: string }
  | { kind: 'hping3'; from: Origin; port: number; count: number; durationMs: number; sources: number }
  | { kind: 'sha-peer'; from: Origin; to?: string; port: number; bytes: number; timeoutMs: number }
  | { kind: 'udp-echo'; from: Origin; to?: string; count: number }
  | { kind: 'connect'; to: string; timeoutMs?: number }
  | { kind: 'tls-burst'; from: Origin; count: number; timeoutMs: number }
  | { kind: 'downloads'; first: number; count: number; bytes: number; concurrency: number; stallMs: number }
  | { kind: 'play'; items: number; graceMs: number }
  | { kind: 'nlb-moves'; moves: number; variant: 'ipsec' | 'ipsec-exception' | 'no-ipsec'; dpd: string; watchMs: number };

export const TRAFFIC_KINDS = ['ping', 'curl', 'iperf3', 'hping3', 'sha-peer', 'udp-echo', 'connect', 'tls-burst', 'downloads', 'play', 'nlb-moves'] as const;
const ACTION_KINDS = ['set', 'param', 'impair', 'wait', 'unlock', 'path', ...TRAFFIC_KINDS] as const;

export interface Step {
  /** Start time in ms from the part's start (the runner's clock); absent: after the previous untimed step. */
  at?: number;
  /** How results and expectations name it (default: `<kind><index>`). */
  name: string;
  action: Action;
  line: number;
}

export interface Bounds {
  min?: number;
  max?: number;
  equals?: number | string | boolean;
}

export type Expectation = { line: number; text: string; when: Record<string, string> } & Bounds &
  (
    | { kind: 'counter'; counter: string; during?: string }
    | { kind: 'stat'; path: string }
    | { kind: 'event'; event: string }
    | { kind: 'step'; step: string; value: string }
    | { kind: 'throughput'; step: string; baseline: string }
  );

export interface Part {
  name: string;
  description: string;
  lab: LabSpec;
  stack: StackSpec;
  steps: Step[];
  expect: Expectation[];
  line: number;
}

export interface Scenario {
  file: string;
  name: string;
  description: string;
  parts: Part[];
}

// ------------------------------------------------------------------------------ errors

/** One line: FILE:LINE:COL: FIELD: what is wrong, and what is valid. */
export class ScenarioError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly col: number,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${file}${line > 0 ? `:${line}:${col}` : ''}: ${field ? `${field}: ` : ''}${reason}`);
    this.name = 'UsageError';
  }
}

/** Where a node is, for errors; the --set overrides have no place in the file and say so. */
class Ctx {
  constructor(
    readonly file: string,
    readonly lc: LineCounter,
    readonly overridden: Map<Node, string>,
  ) {}
  fail(node: Node | null | undefined, field: string, reason: string): never {
    const over = node ? this.overridden.get(node) : undefined;
    if (over !== undefined) throw new ScenarioError(this.file, 0, 0, field, `${reason} (from --set ${over})`);
    const off = node?.range?.[0];
    const pos = off === undefined ? { line: 0, col: 0 } : this.lc.linePos(off);
    throw new ScenarioError(this.file, pos.line, pos.col, field, reason);
  }
  line(node: Node | null | undefined): number {
    const off = node?.range?.[0];
    return off === undefined ? 0 : this.lc.linePos(off).line;
  }
}

function shown(node: Node | null | undefined): string {
  if (isScalar(node)) {
    const s = String(node.value);
    return JSON.stringify(s.length > 60 ? s.slice(0, 57) + '...' : s);
  }
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  return 'nothing';
}

function suggest(word: string, names: readonly string[]): string {
  let best = '',
    d = Infinity;
  for (const n of names) {
    const e = editDistance(word.toLowerCase(), n.toLowerCase());
    if (e < d) {
      d = e;
      best = n;
    }
  }
  return word.length >= 3 && d <= Math.max(1, Math.floor(word.length / 3)) ? ` (did you mean ${best}?)` : '';
}

// ------------------------------------------------------------------------------ readers

/** A mapping key as text (a --set adds plain keys, the parser Scalars). */
function keyText(k: unknown): string {
  if (isScalar(k)) return String(k.value);
  return typeof k === 'string' || typeof k === 'number' ? String(k) : '';
}

type Fields = Record<string, (node: Node, field: string) => void>;

/** Reads a mapping whose keys must be among `fields`; `required` ones must be there. */
function mapping(ctx: Ctx, node: Node | null | undefined, field: string, fields: Fields, required: string[] = []): void {
  if (!isMap(node)) ctx.fail(node, field, `must be a mapping with ${Object.keys(fields).join(', ')}, got ${shown(node)}`);
  const seen = new Set<string>();
  for (const pair of (node as YAMLMap).items as Pair<Node, Node>[]) {
    const key = keyText(pair.key);
    const sub = field ? `${field}.${key}` : key;
    const handler = Object.prototype.hasOwnProperty.call(fields, key) ? fields[key] : undefined;
    if (!handler) ctx.fail(pair.key, sub, `unknown field${suggest(key, Object.keys(fields))}; valid fields here: ${Object.keys(fields).join(', ')}`);
    seen.add(key);
    handler(pair.value as Node, sub);
  }
  for (const r of required)
    if (!seen.has(r)) ctx.fail(node, field ? `${field}.${r}` : r, `is required here (${field || 'the file'} has ${[...seen].join(', ') || 'nothing'})`);
}

function scalarText(ctx: Ctx, node: Node, field: string, valid: string): string {
  if (!isScalar(node) || node.value === null || typeof node.value === 'object') ctx.fail(node, field, `must be ${valid}, got ${shown(node)}`);
  return String((node as Scalar).value);
}

function str(ctx: Ctx, node: Node, field: string, valid = 'a string'): string {
  const s = scalarText(ctx, node, field, valid);
  if (s === '') ctx.fail(node, field, `must be ${valid}, not empty`);
  return s;
}

function int(ctx: Ctx, node: Node, field: string, min: number, max: number): number {
  const valid = `an integer from ${min} to ${max}`;
  const s = scalarText(ctx, node, field, valid).trim();
  if (!/^[+-]?\d{1,15}$/.test(s)) ctx.fail(node, field, `must be ${valid}, got ${shown(node)}`);
  const n = Number(s);
  if (n < min || n > max) ctx.fail(node, field, `must be ${valid}, got ${n}`);
  return n;
}

function num(ctx: Ctx, node: Node, field: string): number {
  const s = scalarText(ctx, node, field, 'a number').trim();
  const n = Number(s);
  if (s === '' || !Number.isFinite(n)) ctx.fail(node, field, `must be a number, got ${shown(node)}`);
  return n;
}

function bool(ctx: Ctx, node: Node, field: string): boolean {
  const s = scalarText(ctx, node, field, 'true or false').trim().toLowerCase();
  if (['true', 'yes', 'on'].includes(s)) return true;
  if (['false', 'no', 'off'].includes(s)) return false;
  return ctx.fail(node, field, `must be true or false, got ${shown(node)}`);
}

function oneOf<T extends string>(ctx: Ctx, node: Node, field: string, values: readonly T[]): T {
  const s = scalarText(ctx, node, field, `one of ${values.join(', ')}`).trim();
  if (!(values as readonly string[]).includes(s)) ctx.fail(node, field, `must be one of ${values.join(', ')}, got ${shown(node)}${suggest(s, values)}`);
  return s as T;
}

const TIME_VALID = 'a time with a unit, e.g. 500ms, 5s, 1.5s, 2m';
const TIME_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/** `5s` -> 5000 ms, at most `maxMs` (every flood and wait is bounded). */
function time(ctx: Ctx, node: Node, field: string, maxMs: number, minMs = 0): number {
  const s = scalarText(ctx, node, field, TIME_VALID).trim();
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)$/.exec(s);
  if (!m) ctx.fail(node, field, `must be ${TIME_VALID}, got ${shown(node)}`);
  const ms = Number(m![1]) * TIME_UNITS[m![2]!]!;
  if (ms < minMs || ms > maxMs) ctx.fail(node, field, `must be from ${minMs / 1000} s to ${maxMs / 1000} s, got ${s}`);
  return ms;
}

function seq(ctx: Ctx, node: Node, field: string, valid: string): Node[] {
  if (!isSeq(node)) ctx.fail(node, field, `must be a list of ${valid}, got ${shown(node)}`);
  return (node as YAMLSeq<Node>).items;
}

/** A list, or one scalar standing for a list of one. */
function listOrOne(ctx: Ctx, node: Node, field: string, valid: string): Node[] {
  return isSeq(node)
    ? (node as YAMLSeq<Node>).items
    : isScalar(node)
      ? [node]
      : ctx.fail(node, field, `must be ${valid} or a list of them, got ${shown(node)}`);
}

// ------------------------------------------------------------------------------ sections

const FAULT_IDS = FAULTS.map((f) => f.id);
/** The catalogue's modes (off, buggy, hotfixed). */
const MODES: readonly FaultMode[] = ALL_MODES;

function faultId(ctx: Ctx, node: Node, field: string, raw: string): string {
  const f = lookupFault(raw);
  if (!f) ctx.fail(node, field, `unknown fault ${JSON.stringify(raw)}${suggest(raw, FAULT_IDS)}; valid faults: ${FAULT_IDS.join(', ')}`);
  return f!.id;
}

function paramValue(ctx: Ctx, node: Node, field: string, name: string, raw: string | number): number | string {
  const p = lookupParam(name);
  if (!p) ctx.fail(node, field, `unknown parameter ${JSON.stringify(name)}${suggest(name, PARAM_NAMES)}; faultstack faults lists them`);
  try {
    return parseParamValue(findParam(name), raw);
  } catch (e) {
    return ctx.fail(node, field, (e as Error).message);
  }
}

/** `kb898060=buggy` (a step's set, the compare flag). */
function faultAssignment(ctx: Ctx, node: Node, field: string): { fault: string; mode: FaultMode } {
  const s = str(ctx, node, field, 'FAULT=MODE, e.g. kb898060=buggy');
  const m = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(s);
  if (!m) ctx.fail(node, field, `must be FAULT=MODE (e.g. kb898060=buggy), got ${shown(node)}`);
  const fault = faultId(ctx, node, field, m![1]!);
  if (!(MODES as readonly string[]).includes(m![2]!)) ctx.fail(node, field, `mode must be one of ${MODES.join(', ')}, got ${JSON.stringify(m![2])}`);
  return { fault, mode: m![2] as FaultMode };
}

function impairWords(ctx: Ctx, node: Node, field: string): string {
  const s = str(ctx, node, field, "an impairment in netem's words, e.g. out loss 3% delay 20ms");
  try {
    parseImpairment(s);
  } catch (e) {
    ctx.fail(node, field, (e as Error).message);
  }
  return s.trim();
}

function readLab(ctx: Ctx, node: Node | undefined): LabSpec {
  const lab: LabSpec = { topology: 'tun', routers: [], clients: 0, hosts: 0, path: 'A', nlbMode: 'unicast' };
  if (node === undefined) return lab;
  const seen = new Map<string, Node>();
  const note = (k: string, n: Node) => {
    seen.set(k, n);
  };
  mapping(ctx, node, 'lab', {
    topology: (n, f) => {
      lab.topology = oneOf(ctx, n, f, TOPOLOGIES);
    },
    mtu: (n, f) => {
      lab.mtu = int(ctx, n, f, 576, 9000);
      note('mtu', n);
    },
    routers: (n, f) => {
      note('routers', n);
      lab.routers = seq(ctx, n, f, 'routers ({ mtu: N })').map((r, i) => {
        let mtu = 1500;
        mapping(ctx, r, `${f}[${i}]`, {
          mtu: (m, g) => {
            mtu = int(ctx, m, g, 576, 9000);
          },
        });
        return { mtu };
      });
      if (lab.routers.length > 4) ctx.fail(n, f, `at most 4 routers, got ${lab.routers.length}`);
    },
    clients: (n, f) => {
      lab.clients = int(ctx, n, f, 1, 300);
      note('clients', n);
    },
    hosts: (n, f) => {
      lab.hosts = int(ctx, n, f, 1, 8);
      note('hosts', n);
    },
    path: (n, f) => {
      lab.path = oneOf(ctx, n, f, ['A', 'B', 'balanced'] as const);
      note('path', n);
    },
    'nlb-mode': (n, f) => {
      lab.nlbMode = oneOf(ctx, n, f, ['unicast', 'multicast', 'igmp'] as const);
      note('nlb-mode', n);
    },
  });
  // A field that belongs to another topology is a mistake worth naming.
  const allowed: Record<Topology, string[]> = {
    tun: ['mtu', 'routers'],
    tap: ['mtu'],
    pmtu: ['clients', 'path'],
    firewall: [],
    nlb: ['clients', 'hosts', 'nlb-mode'],
  };
  for (const [k, n] of seen) {
    if (!allowed[lab.topology].includes(k)) {
      const where = TOPOLOGIES.filter((t) => allowed[t].includes(k)).join(' or ');
      ctx.fail(
        n,
        `lab.${k}`,
        `belongs to topology ${where}, not ${lab.topology}; ${lab.topology} takes ${allowed[lab.topology].join(', ') || 'no other field'}`,
      );
    }
  }
  if (lab.topology === 'pmtu' && lab.clients === 0) lab.clients = 12;
  if (lab.topology === 'nlb') {
    if (lab.clients === 0) lab.clients = 1;
    if (lab.hosts === 0) lab.hosts = 2;
  }
  return lab;
}

function readStack(ctx: Ctx, node: Node | undefined): StackSpec {
  const st: StackSpec = { faults: {}, params: {}, impair: [], offloads: true };
  if (node === undefined) return st;
  mapping(ctx, node, 'stack', {
    profile: (n, f) => {
      st.profile = oneOf(ctx, n, f, PROFILE_NAMES);
    },
    services: (n, f) => {
      st.services = listOrOne(ctx, n, f, `a service (${SERVICE_NAMES.join(', ')})`).map((s, i) => oneOf(ctx, s, `${f}[${i}]`, SERVICE_NAMES));
    },
    faults: (n, f) => {
      if (!isMap(n)) ctx.fail(n, f, `must be a mapping of FAULT: MODE (e.g. kb898060: buggy), got ${shown(n)}`);
      for (const pair of (n as YAMLMap).items as Pair<Node, Node>[]) {
        const raw = keyText(pair.key);
        const id = faultId(ctx, pair.key, `${f}.${raw}`, raw);
        st.faults[id] = oneOf(ctx, pair.value as Node, `${f}.${raw}`, MODES);
      }
    },
    params: (n, f) => {
      if (!isMap(n)) ctx.fail(n, f, `must be a mapping of NAME: VALUE (e.g. MaxIcmpHostRoutes: 6), got ${shown(n)}`);
      for (const pair of (n as YAMLMap).items as Pair<Node, Node>[]) {
        const name = keyText(pair.key);
        const v = pair.value as Node;
        const raw = isScalar(v) && (typeof v.value === 'number' || typeof v.value === 'string' || typeof v.value === 'boolean') ? v.value : null;
        if (raw === null) ctx.fail(v ?? pair.key, `${f}.${name}`, `must be a value, got ${shown(v)}`);
        const canonical = lookupParam(name)?.name ?? name;
        st.params[canonical] = paramValue(
          ctx,
          lookupParam(name) ? v : pair.key,
          `${f}.${name}`,
          name,
          typeof raw === 'boolean' ? (raw ? 1 : 0) : (raw as string | number),
        );
      }
    },
    impair: (n, f) => {
      st.impair = listOrOne(ctx, n, f, "an impairment in netem's words").map((s, i) => impairWords(ctx, s, `${f}[${i}]`));
    },
    offloads: (n, f) => {
      st.offloads = bool(ctx, n, f);
    },
  });
  return st;
}

/** Which origins each topology has. */
const ORIGINS: Record<Topology, Origin[]> = { tun: ['host', 'client'], tap: ['vm'], pmtu: [], firewall: ['inside'], nlb: [] };
/** Which traffic each topology can run. */
const TRAFFIC_FOR: Record<Topology, readonly string[]> = {
  tun: ['ping', 'curl', 'iperf3', 'hping3', 'sha-peer', 'udp-echo', 'connect', 'tls-burst'],
  tap: ['ping', 'curl', 'iperf3', 'sha-peer', 'udp-echo', 'connect'],
  pmtu: ['downloads'],
  firewall: ['play', 'ping'],
  nlb: ['nlb-moves'],
};

/** A field reader that sets `key` of `t` to what `parse` makes of the field. */
function setter<T extends object>(t: T) {
  return <K extends keyof T>(key: K, parse: (n: Node, f: string) => T[K]) =>
    (n: Node, f: string): void => {
      t[key] = parse(n, f);
    };
}

function readTraffic(ctx: Ctx, kind: (typeof TRAFFIC_KINDS)[number], node: Node, field: string, lab: LabSpec): Traffic {
  const origins = ORIGINS[lab.topology];
  const defaultFrom: Origin = origins[0] ?? 'host';
  const body = isScalar(node) && (node.value === null || node.value === '') ? null : node;
  const from = (n: Node, f: string) => {
    const o = oneOf(ctx, n, f, origins.length ? origins : (['host'] as Origin[]));
    if (o === 'client' && lab.routers.length === 0)
      ctx.fail(n, f, 'client is the namespace behind lab.routers, and this lab has none: add routers or use from: host');
    return o;
  };
  const to = (n: Node, f: string) => {
    const s = str(ctx, n, f, 'an IPv4 address in 198.18.0.0/15');
    const m = /^198\.(18|19)\.(\d{1,3})\.(\d{1,3})$/.exec(s.trim());
    if (!m || Number(m[2]) > 255 || Number(m[3]) > 255) ctx.fail(n, f, `must be an IPv4 address in 198.18.0.0/15 (the lab's range), got ${shown(n)}`);
    return s.trim();
  };
  const read = (fields: Fields, required: string[] = []) => {
    if (body === null && required.length === 0) return;
    mapping(ctx, body ?? node, field, fields, required);
  };
  // Field readers: s(prop, parse) sets one property of the traffic being read.
  const I = (min: number, max: number) => (n: Node, f: string) => int(ctx, n, f, min, max);
  const T = (max: number, min: number) => (n: Node, f: string) => time(ctx, n, f, max, min);
  const B = (n: Node, f: string) => bool(ctx, n, f);
  switch (kind) {
    case 'ping': {
      const t: Traffic = { kind, from: defaultFrom, count: 5, intervalMs: 200, waitMs: 1000 };
      const s = setter(t);
      read({
        from: s('from', from),
        to: s('to', to),
        count: s('count', I(1, 1000)),
        interval: s('intervalMs', T(10_000, 10)),
        wait: s('waitMs', T(10_000, 100)),
      });
      return t;
    }
    case 'curl': {
      const t: Traffic = { kind, from: defaultFrom, path: '/', maxTimeMs: 10_000 };
      const s = setter(t);
      read({
        from: s('from', from),
        to: s('to', to),
        path: (n, f) => {
          t.path = str(ctx, n, f, 'a URL path such as / or /bytes/1000000');
          if (!t.path.startsWith('/')) ctx.fail(n, f, `must start with /, got ${shown(n)}`);
        },
        'max-time': s('maxTimeMs', T(120_000, 100)),
      });
      return t;
    }
    case 'iperf3': {
      const t: Traffic = { kind, from: defaultFrom, durationMs: 2000, reverse: false, udp: false };
      const s = setter(t);
      read({
        from: s('from', from),
        to: s('to', to),
        duration: s('durationMs', T(30_000, 1000)),
        reverse: s('reverse', B),
        udp: s('udp', B),
        bitrate: (n, f) => {
          t.bitrate = str(ctx, n, f, 'an iperf3 bitrate such as 10M');
          if (!/^\d+(\.\d+)?[KMG]?$/.test(t.bitrate)) ctx.fail(n, f, `must be an iperf3 bitrate such as 500K, 10M or 1G, got ${shown(n)}`);
        },
      });
      return t;
    }
    case 'hping3': {
      const t: Traffic = { kind, from: defaultFrom, port: 80, count: 0, durationMs: 0, sources: 4 };
      const s = setter(t);
      // A flood is bounded in packets and in time: both are required.
      read(
        {
          from: s('from', from),
          port: s('port', I(1, 65535)),
          count: s('count', I(1, 20_000)),
          duration: s('durationMs', T(10_000, 500)),
          sources: s('sources', I(1, 16)),
        },
        ['count', 'duration'],
      );
      return t;
    }
    case 'sha-peer': {
      const t: Traffic = { kind, from: defaultFrom, port: 7, bytes: 1_000_000, timeoutMs: 30_000 };
      const s = setter(t);
      read({
        from: s('from', from),
        to: s('to', to),
        port: s('port', I(1, 65535)),
        bytes: s('bytes', I(1, 100_000_000)),
        timeout: s('timeoutMs', T(120_000, 1000)),
      });
      return t;
    }
    case 'udp-echo': {
      const t: Traffic = { kind, from: defaultFrom, count: 20 };
      const s = setter(t);
      read({
        from: s('from', from),
        to: s('to', to),
        count: s('count', I(1, 20)),
      });
      return t;
    }
    case 'connect': {
      const t = { kind, to: '' } as Traffic & { kind: 'connect' };
      const s = setter(t);
      read(
        {
          to: (n, f) => {
            const s = str(ctx, n, f, 'ADDRESS:PORT in 198.18.0.0/15');
            const m = /^(.+):(\d{1,5})$/.exec(s.trim());
            if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) ctx.fail(n, f, `must be ADDRESS:PORT, e.g. 198.18.0.99:80, got ${shown(n)}`);
            if (!/^198\.(18|19)\.\d{1,3}\.\d{1,3}$/.test(m![1]!))
              ctx.fail(n, f, `must be ADDRESS:PORT with an address in 198.18.0.0/15 (the lab's range), got ${shown(n)}`);
            t.to = s.trim();
          },
          timeout: s('timeoutMs', T(60_000, 100)),
        },
        ['to'],
      );
      return t;
    }
    case 'tls-burst': {
      const t: Traffic = { kind, from: defaultFrom, count: 20, timeoutMs: 15_000 };
      const s = setter(t);
      read({
        from: s('from', from),
        count: s('count', I(1, 500)),
        timeout: s('timeoutMs', T(60_000, 1000)),
      });
      return t;
    }
    case 'downloads': {
      const t: Traffic = { kind, first: 0, count: 4, bytes: 300_000, concurrency: 2, stallMs: 3000 };
      const s = setter(t);
      read({
        first: s('first', I(0, 299)),
        count: s('count', I(1, 300)),
        bytes: s('bytes', I(1, 10_000_000)),
        concurrency: s('concurrency', I(1, 32)),
        stall: s('stallMs', T(30_000, 500)),
      });
      if (t.first + t.count > lab.clients)
        ctx.fail(body ?? node, field, `uses client addresses ${t.first} to ${t.first + t.count - 1}, but lab.clients is ${lab.clients}`);
      return t;
    }
    case 'play': {
      const t: Traffic = { kind, items: 4, graceMs: 50 };
      const s = setter(t);
      read({
        items: s('items', I(1, 20)),
        grace: s('graceMs', T(10_000, 0)),
      });
      return t;
    }
    case 'nlb-moves': {
      const t: Traffic = { kind, moves: 1, variant: 'ipsec', dpd: '4s', watchMs: 15_000 };
      const s = setter(t);
      read({
        moves: s('moves', I(1, 10)),
        variant: s('variant', (n, f) => oneOf(ctx, n, f, ['ipsec', 'ipsec-exception', 'no-ipsec'] as const)),
        dpd: s('dpd', (n, f) => `${time(ctx, n, f, 60_000, 1000) / 1000}s`),
        watch: s('watchMs', T(120_000, 1000)),
      });
      return t;
    }
  }
}

function readStep(ctx: Ctx, node: Node, field: string, index: number, lab: LabSpec): Step {
  if (!isMap(node)) ctx.fail(node, field, `must be a mapping with an optional at and name, and one action (${ACTION_KINDS.join(', ')}), got ${shown(node)}`);
  let at: number | undefined;
  let name: string | undefined;
  let action: Action | undefined;
  let actionKey = '';
  for (const pair of (node as YAMLMap).items as Pair<Node, Node>[]) {
    const key = keyText(pair.key);
    const sub = `${field}.${key}`;
    const v = pair.value as Node;
    if (key === 'at') {
      at = time(ctx, v, sub, 120_000);
      continue;
    }
    if (key === 'name') {
      name = str(ctx, v, sub, 'a name of letters, digits and -');
      if (!/^[A-Za-z][\w-]*$/.test(name)) ctx.fail(v, sub, `must be a name of letters, digits, _ and - starting with a letter, got ${shown(v)}`);
      continue;
    }
    if (!(ACTION_KINDS as readonly string[]).includes(key)) {
      ctx.fail(pair.key, sub, `unknown field${suggest(key, [...ACTION_KINDS, 'at', 'name'])}; a step has at, name and one of ${ACTION_KINDS.join(', ')}`);
    }
    if (action) ctx.fail(pair.key, sub, `a step has one action; this one already has ${actionKey} (make another step)`);
    actionKey = key;
    switch (key) {
      case 'set': {
        const a = faultAssignment(ctx, v, sub);
        action = { kind: 'set', ...a };
        break;
      }
      case 'param': {
        const s = str(ctx, v, sub, 'NAME=VALUE, e.g. MaxIcmpHostRoutes=6');
        const m = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(s);
        if (!m) ctx.fail(v, sub, `must be NAME=VALUE (e.g. MaxIcmpHostRoutes=6), got ${shown(v)}`);
        const pname = lookupParam(m![1]!)?.name ?? m![1]!;
        action = { kind: 'param', name: pname, value: paramValue(ctx, v, sub, m![1]!, m![2]!) };
        break;
      }
      case 'impair': {
        const s = str(ctx, v, sub, 'add SPEC or clear');
        if (s.trim() === 'clear') {
          action = { kind: 'impair', op: 'clear' };
          break;
        }
        const m = /^\s*add\s+(.+)$/.exec(s);
        if (!m) ctx.fail(v, sub, `must be "add SPEC" (netem's words, e.g. add out loss 5%) or "clear", got ${shown(v)}`);
        try {
          parseImpairment(m![1]!);
        } catch (e) {
          ctx.fail(v, sub, (e as Error).message);
        }
        action = { kind: 'impair', op: 'add', spec: m![1]!.trim() };
        break;
      }
      case 'wait':
        action = { kind: 'wait', ms: time(ctx, v, sub, 120_000) };
        break;
      case 'unlock':
        action = { kind: 'unlock' };
        break;
      case 'path':
        if (lab.topology !== 'pmtu') ctx.fail(pair.key, sub, `switches the PMTU lab's routers: needs lab.topology pmtu, not ${lab.topology}`);
        action = { kind: 'path', path: oneOf(ctx, v, sub, ['A', 'B', 'balanced'] as const) };
        break;
      default: {
        const kind = key as (typeof TRAFFIC_KINDS)[number];
        if (!TRAFFIC_FOR[lab.topology].includes(kind)) {
          ctx.fail(pair.key, sub, `is not traffic of topology ${lab.topology}; it runs ${TRAFFIC_FOR[lab.topology].join(', ')}`);
        }
        action = readTraffic(ctx, kind, v, sub, lab);
      }
    }
  }
  if (!action) ctx.fail(node, field, `has no action: give one of ${ACTION_KINDS.join(', ')}`);
  if (['impair', 'unlock', 'set', 'param'].includes(action!.kind) && lab.topology === 'nlb') {
    ctx.fail(node, field, `${action!.kind} needs one stack; topology nlb starts its hosts inside its nlb-moves step (set the fault in stack.faults)`);
  }
  return { at, name: name ?? `${action!.kind}${index + 1}`, action: action!, line: ctx.line(node) };
}

/** What a traffic step's result holds (the names expectations may use). */
export const RESULT_FIELDS: Record<string, string[]> = {
  ping: ['ok', 'sent', 'received', 'avgMs'],
  curl: ['ok', 'httpCode', 'bytes', 'exit', 'bitsPerSecond'],
  iperf3: ['ok', 'bitsPerSecond', 'retransmits', 'lostPercent'],
  hping3: ['ok', 'transmitted', 'received', 'pps'],
  'sha-peer': ['ok', 'match', 'sentBytes', 'receivedBytes', 'bitsPerSecond'],
  'udp-echo': ['ok', 'sent', 'echoed', 'wrong'],
  connect: ['ok', 'outcome'],
  'tls-burst': ['ok', 'count', 'refused', 'reset', 'served', 'other'],
  downloads: ['ok', 'count', 'completed', 'stalled', 'failed'],
  play: ['ok', 'played', 'stalled', 'addrInUse'],
  'nlb-moves': ['ok', 'served', 'spanning', 'refusals', 'timeToOneHostMs'],
  wait: ['ok'],
  set: ['ok'],
  param: ['ok'],
  impair: ['ok'],
  unlock: ['ok'],
  path: ['ok'],
};
/** Traffic whose result has a throughput (bitsPerSecond) a throughput expectation may compare. */
const THROUGHPUT_KINDS = ['iperf3', 'curl', 'sha-peer'];

function readExpect(ctx: Ctx, node: Node, field: string, steps: Step[], lab: LabSpec): Expectation {
  if (!isMap(node)) ctx.fail(node, field, `must be a mapping: one of counter, stat, event, step, throughput, with min, max or equals, got ${shown(node)}`);
  const b: Bounds = {};
  const when: Record<string, string> = {};
  let head: { kind: string; node: Node; key: Node; value: string } | undefined;
  let during: string | undefined, value: string | undefined, baseline: string | undefined;
  let valueNode: Node | undefined, baselineNode: Node | undefined, duringNode: Node | undefined;
  const HEADS = ['counter', 'stat', 'event', 'step', 'throughput'];
  for (const pair of (node as YAMLMap).items as Pair<Node, Node>[]) {
    const key = keyText(pair.key);
    const sub = `${field}.${key}`;
    const v = pair.value as Node;
    if (HEADS.includes(key)) {
      if (head) ctx.fail(pair.key, sub, `an expectation checks one thing; this one already has ${head.kind} (make another)`);
      head = { kind: key, node: v, key: pair.key, value: str(ctx, v, sub) };
      continue;
    }
    switch (key) {
      case 'min':
        b.min = num(ctx, v, sub);
        break;
      case 'max':
        b.max = num(ctx, v, sub);
        break;
      case 'equals': {
        const raw = isScalar(v) ? v.value : undefined;
        if (raw === undefined || raw === null || typeof raw === 'object') ctx.fail(v, sub, `must be a number, a string, true or false, got ${shown(v)}`);
        b.equals = raw as number | string | boolean;
        break;
      }
      case 'during':
        during = str(ctx, v, sub);
        duringNode = v;
        break;
      case 'value':
        value = str(ctx, v, sub);
        valueNode = v;
        break;
      case 'baseline':
        baseline = str(ctx, v, sub);
        baselineNode = v;
        break;
      case 'when': {
        if (!isMap(v)) ctx.fail(v, sub, `must be a mapping of FAULT: MODE (the expectation holds only in that mode), got ${shown(v)}`);
        for (const p of (v as YAMLMap).items as Pair<Node, Node>[]) {
          const raw = keyText(p.key);
          when[faultId(ctx, p.key, `${sub}.${raw}`, raw)] = oneOf(ctx, p.value as Node, `${sub}.${raw}`, MODES);
        }
        break;
      }
      default:
        ctx.fail(
          pair.key,
          sub,
          `unknown field${suggest(key, [...HEADS, 'min', 'max', 'equals', 'during', 'value', 'baseline', 'when'])}; an expectation has one of ${HEADS.join(', ')}, then min, max or equals (and during, value, baseline, when)`,
        );
    }
  }
  if (!head) ctx.fail(node, field, `checks nothing: give one of ${HEADS.join(', ')}`);
  const h = head!;
  const stepByName = (name: string, n: Node, f: string): Step => {
    const s = steps.find((x) => x.name === name);
    if (!s)
      ctx.fail(
        n,
        f,
        `no step is named ${JSON.stringify(name)}${suggest(
          name,
          steps.map((x) => x.name),
        )}; steps: ${steps.map((x) => x.name).join(', ') || 'none'}`,
      );
    return s!;
  };
  const only = (allowed: string[]) => {
    const extra: [string, Node | undefined][] = [
      ['during', duringNode],
      ['value', valueNode],
      ['baseline', baselineNode],
    ];
    for (const [k, n] of extra)
      if (n && !allowed.includes(k))
        ctx.fail(n, `${field}.${k}`, `does not go with ${h.kind} (${h.kind} takes ${allowed.join(', ') || 'only min, max, equals, when'})`);
  };
  if (b.min === undefined && b.max === undefined && b.equals === undefined) {
    if (h.kind === 'event' || h.kind === 'counter') b.min = 1;
    else if (h.kind === 'step' && (value ?? 'ok') === 'ok') b.equals = true;
    else ctx.fail(node, field, `says no bound: give min, max or equals`);
  }
  const text = `${h.kind} ${h.value}`;
  const base = { line: ctx.line(node), text, when, ...b };
  const oneStack = (what: string) => {
    if (lab.topology === 'nlb')
      ctx.fail(
        h.key,
        `${field}.${h.kind}`,
        `${what} needs one stack; topology nlb reports through its nlb-moves step (step: NAME, value: served|spanning|refusals|timeToOneHostMs)`,
      );
  };
  switch (h.kind) {
    case 'counter':
      oneStack('a counter');
      only(['during']);
      if (!/^[A-Za-z][A-Za-z0-9_]*(:[a-z0-9-]+)?$/.test(h.value))
        ctx.fail(
          h.node,
          `${field}.counter`,
          `must be a counter name as faultstack stats --json prints it (e.g. FsIcmpIgnoredAtLimit; a firewall's drops by reason as FwDrop:media-port-closed), got ${shown(h.node)}`,
        );
      if (during) stepByName(during, duringNode!, `${field}.during`);
      return { ...base, kind: 'counter', counter: h.value, during };
    case 'stat':
      oneStack('a stat');
      only([]);
      if (!/^[A-Za-z_][\w]*(\.[\w]+)*$/.test(h.value))
        ctx.fail(h.node, `${field}.stat`, `must be a dotted path into faultstack stats --json (e.g. leak.connections), got ${shown(h.node)}`);
      return { ...base, kind: 'stat', path: h.value };
    case 'event':
      oneStack('an event');
      only([]);
      return { ...base, kind: 'event', event: h.value };
    case 'step': {
      only(['value']);
      const s = stepByName(h.value, h.node, `${field}.step`);
      const v = value ?? 'ok';
      const fields = RESULT_FIELDS[s.action.kind] ?? ['ok'];
      if (!fields.includes(v))
        ctx.fail(valueNode!, `${field}.value`, `step ${s.name} (${s.action.kind}) has no ${JSON.stringify(v)}; it reports ${fields.join(', ')}`);
      return { ...base, text: `step ${s.name} ${v}`, kind: 'step', step: s.name, value: v };
    }
    case 'throughput': {
      only(['baseline']);
      const s = stepByName(h.value, h.node, `${field}.throughput`);
      if (!baseline) ctx.fail(node, `${field}.baseline`, `is required: the step whose throughput is the ratio's denominator, run in the same scenario`);
      const bs = stepByName(baseline!, baselineNode!, `${field}.baseline`);
      for (const [x, n] of [
        [s, h.node],
        [bs, baselineNode!],
      ] as const) {
        if (!THROUGHPUT_KINDS.includes(x.action.kind))
          ctx.fail(n, field, `step ${x.name} is ${x.action.kind}, which measures no throughput; use ${THROUGHPUT_KINDS.join(', ')}`);
      }
      if (b.equals !== undefined) ctx.fail(node, `${field}.equals`, 'a ratio of two measurements is never exact: give min and/or max');
      return { ...base, text: `throughput ${s.name} / ${bs.name}`, kind: 'throughput', step: s.name, baseline: bs.name };
    }
  }
  throw new Error('unreachable');
}

function readPart(ctx: Ctx, node: Node, field: string, fallbackName: string): Part {
  if (!isMap(node)) ctx.fail(node, field, `must be a mapping (name, description, lab, stack, steps, expect), got ${shown(node)}`);
  const get = (k: string) => (node as YAMLMap).get(k, true) as Node | undefined;
  // The lab first: what the steps may do depends on its topology.
  const prefix = field ? `${field}.` : '';
  let lab: LabSpec;
  try {
    lab = readLab(ctx, get('lab'));
  } catch (e) {
    throw rename(e, prefix);
  }
  const part: Part = {
    name: fallbackName,
    description: '',
    lab,
    stack: { faults: {}, params: {}, impair: [], offloads: true },
    steps: [],
    expect: [],
    line: ctx.line(node),
  };
  try {
    // Fields are named from the part (rename() puts parts[i]. in front).
    mapping(
      ctx,
      node,
      '',
      {
        name: (n, f) => {
          part.name = str(ctx, n, f);
        },
        description: (n, f) => {
          part.description = str(ctx, n, f);
        },
        lab: () => {},
        stack: (n) => {
          part.stack = readStack(ctx, n);
        },
        steps: (n) => {
          const items = seq(ctx, n, 'steps', 'steps');
          part.steps = items.map((s, i) => readStep(ctx, s, `steps[${i}]`, i, lab));
          const names = new Set<string>();
          part.steps.forEach((s, i) => {
            if (names.has(s.name)) ctx.fail(items[i], `steps[${i}].name`, `${JSON.stringify(s.name)} names an earlier step too; step names are unique`);
            names.add(s.name);
          });
        },
        expect: () => {},
      },
      ['steps'],
    );
    const ex = get('expect');
    if (ex !== undefined) part.expect = seq(ctx, ex, 'expect', 'expectations').map((e, i) => readExpect(ctx, e, `expect[${i}]`, part.steps, lab));
    checkTopology(ctx, part, node as YAMLMap);
  } catch (e) {
    throw rename(e, prefix);
  }
  return part;
}

/** Errors inside a part name its place: parts[1].steps[0]... */
function rename(e: unknown, prefix: string): unknown {
  if (!prefix || !(e instanceof ScenarioError)) return e;
  return new ScenarioError(e.file, e.line, e.col, e.field ? `${prefix}${e.field}` : prefix.slice(0, -1), e.reason);
}

/** What a topology fixes about the stack. */
function checkTopology(ctx: Ctx, part: Part, node: YAMLMap): void {
  const st = part.stack;
  const stackNode = node.get('stack', true) as Node | undefined;
  const faultsOf: Partial<Record<Topology, string>> = { pmtu: 'kb898060', firewall: 'kb319381', nlb: 'kb972183' };
  const own = faultsOf[part.lab.topology];
  if (own) {
    for (const id of Object.keys(st.faults)) {
      if (id !== own)
        ctx.fail(stackNode, `stack.faults.${id}`, `topology ${part.lab.topology} runs ${own} only (its lab starts the stack); use topology tun for ${id}`);
    }
    if (st.services || st.profile)
      ctx.fail(stackNode, 'stack', `topology ${part.lab.topology} chooses the stack's services and profile itself; give faults and params only`);
  }
  if (part.lab.topology === 'nlb' && (Object.keys(st.params).length || st.impair.length)) {
    ctx.fail(stackNode, 'stack', 'topology nlb takes stack.faults only (kb972183)');
  }
}

// ------------------------------------------------------------------------------ entry points

export interface LoadOptions {
  /** `--set KEY=VALUE`: a dotted path into the file and a YAML value (stack.params.MaxIcmpHostRoutes=6). */
  set?: string[];
}

/** Parses and validates scenario text; `file` is what errors name. */
export function parseScenario(text: string, file: string, opts: LoadOptions = {}): Scenario {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const ctx = new Ctx(file, lc, new Map());
  const err = doc.errors[0];
  if (err) {
    const pos = lc.linePos(err.pos[0]);
    const what = err.code === 'DUPLICATE_KEY' ? 'a key appears twice in one mapping' : err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new ScenarioError(file, pos.line, pos.col, '', `not valid YAML: ${what}`);
  }
  if (doc.contents === null) throw new ScenarioError(file, 0, 0, '', 'is empty: a scenario has at least steps (docs/scenarios.md)');
  for (const s of opts.set ?? []) applySet(doc, ctx, s);
  const root = doc.contents as Node;
  if (!isMap(root)) ctx.fail(root, '', `must be a mapping (name, description, lab, stack, steps, expect, or parts), got ${shown(root)}`);
  const rootMap = root as YAMLMap;
  const name = rootMap.get('name', true) as Node | undefined;
  const description = rootMap.get('description', true) as Node | undefined;
  const parts = rootMap.get('parts', true) as Node | undefined;
  const scenario: Scenario = {
    file,
    name: name ? str(ctx, name, 'name') : file.replace(/^.*\//, '').replace(/\.ya?ml$/, ''),
    description: description ? str(ctx, description, 'description') : '',
    parts: [],
  };
  if (parts !== undefined) {
    for (const pair of rootMap.items as Pair<Node, Node>[]) {
      const key = keyText(pair.key);
      if (!['name', 'description', 'parts'].includes(key))
        ctx.fail(pair.key, key, `a file with parts has only name, description and parts at the top; move ${key} into a part`);
    }
    scenario.parts = seq(ctx, parts, 'parts', 'parts (each a scenario: lab, stack, steps, expect)').map((p, i) =>
      readPart(ctx, p, `parts[${i}]`, `part${i + 1}`),
    );
    if (scenario.parts.length === 0) ctx.fail(parts, 'parts', 'is empty: give at least one part');
  } else {
    scenario.parts = [readPart(ctx, root, '', scenario.name)];
    scenario.parts[0]!.name = scenario.name;
  }
  return scenario;
}

/** Reads and validates a scenario file. */
export function loadScenario(file: string, opts: LoadOptions = {}): Scenario {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ScenarioError(
      file,
      0,
      0,
      '',
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, not a scenario file' : `cannot be read (${code ?? (e as Error).message})`,
    );
  }
  return parseScenario(text, file, opts);
}

/**
 * `--set stack.params.MaxIcmpHostRoutes=6`: sets the path in the document before it is
 * validated (so a bad value gets the same one-line error, naming the --set). In a file
 * with parts, a path that does not start with parts goes into every part.
 */
function applySet(doc: Document, ctx: Ctx, raw: string): void {
  const eq = raw.indexOf('=');
  const key = eq < 0 ? '' : raw.slice(0, eq).trim();
  if (eq < 0 || key === '' || !/^[\w-]+(\.[\w-]+)*$/.test(key)) {
    throw new ScenarioError(ctx.file, 0, 0, '', `--set ${JSON.stringify(raw)}: must be KEY=VALUE with a dotted KEY, e.g. stack.params.MaxIcmpHostRoutes=6`);
  }
  const valueText = raw.slice(eq + 1);
  const value = parseDocument(valueText).contents ?? doc.createNode('');
  const path = key.split('.').map((k) => (/^\d+$/.test(k) ? Number(k) : k));
  const root = doc.contents;
  const targets: (string | number)[][] =
    isMap(root) && root.has('parts') && path[0] !== 'parts' ? ((root.get('parts') as YAMLSeq).items ?? []).map((_, i) => ['parts', i, ...path]) : [path];
  for (const t of targets) {
    try {
      const node = doc.createNode((value as Scalar).toJSON?.() ?? valueText) as Node;
      // The last key as a node too, so that an error about the key (an unknown parameter)
      // also names the --set.
      const last = t[t.length - 1]!;
      const key = typeof last === 'string' ? (doc.createNode(last) as Node) : last;
      if (typeof last === 'string') ctx.overridden.set(key as Node, raw);
      const parent = t.length > 1 ? doc.getIn(t.slice(0, -1), true) : doc.contents;
      if (isMap(parent) && typeof last === 'string') {
        const existing = parent.items.find((p) => keyText(p.key) === last);
        if (existing) existing.value = node;
        else parent.items.push(doc.createPair(key, node) as Pair<unknown, unknown>);
      } else doc.setIn(t, node);
      ctx.overridden.set(node, raw);
    } catch (e) {
      throw new ScenarioError(ctx.file, 0, 0, '', `--set ${key}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
}

/** The fault modes a part runs with (for `when:`): what stack.faults says, else hotfixed. */
export function modeOf(part: Part, fault: string): string {
  return part.stack.faults[fault] ?? 'hotfixed';
}

/** Does an expectation apply to a part, given its modes? */
export function applies(e: Expectation, part: Part): boolean {
  return Object.entries(e.when).every(([f, m]) => modeOf(part, f) === m);
}
