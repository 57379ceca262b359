/**
 * The fault catalogue: every reproduced fault, every parameter the stack reads, and the
 * system profiles that set those parameters. It is the union of the fault modules'
 * specs (stack/faults/kbNNNNNN/spec.ts, each listing the parameters it owns) and of the
 * parameters that belong to the emulated system rather than to one fault (below);
 * profiles are data. The live values are a FaultConfig (config.ts).
 *
 * Parameters keep their Windows registry names so the article and the configuration
 * can be read side by side. Names that Windows never had are marked `registry: null`
 * and their `source` says "our choice". The Linux knobs keep their sysctl names.
 *
 * Decisions (documented here and printed by `faultstack faults`):
 * - A profile sets *parameters of the emulated system* (and which listener behaviour
 *   it follows, TcpStackProfile). It never sets a fault mode: every implemented
 *   fault starts `hotfixed`, and only `--fault ID=buggy` turns the article's
 *   behaviour on. A student then always knows why the stack misbehaves.
 * - The default profile is `win2003-sp1`: four of the five faults are Windows Server
 *   2003 / SP1-era faults (KB 903927 and KB 898060 appear *because of* SP1), so the
 *   default system is the one the articles describe. Real Linux peers talk to it
 *   unchanged; `--profile linux` makes the listener behave as Linux does.
 * - Unimplemented faults have mode `off` only in effect: enabling them is refused.
 */
import { UsageError } from '../util/errors';
import type { FaultMode, FaultSpec, ParamDef } from './spec';
import { TCPIP } from './registry';
import { spec as kb903927 } from './kb903927/spec';
import { spec as kb297040 } from './kb297040/spec';
import { spec as kb898060 } from './kb898060/spec';
import { spec as kb972183 } from './kb972183/spec';
import { spec as kb319381 } from './kb319381/spec';

export type { FaultMode, ParamDef, ParamType } from './spec';
export const ALL_MODES: readonly FaultMode[] = ['off', 'buggy', 'hotfixed'];

// ---------------------------------------------------------------------------
// The parameters of the emulated system (read whatever the fault)
// ---------------------------------------------------------------------------

export const SYSTEM_PARAMS = {
  DefaultTTL: {
    type: 'int',
    default: 128,
    min: 1,
    max: 255,
    unit: 'hops',
    system: 'any',
    registry: TCPIP,
    general: true,
    meaning: 'time to live of every IPv4 datagram the stack sends (TCP, UDP, ICMP replies)',
    source: 'Windows NT 4.0, 2000 and Server 2003 registry reference: 128; Linux net.ipv4.ip_default_ttl: 64 (the linux profile)',
  },
  TcpStackProfile: {
    type: 'enum',
    values: ['windows', 'linux'],
    default: 'windows',
    system: 'any',
    registry: null,
    meaning:
      'listener behaviour: windows (SynAttackProtect and its thresholds, RST when the backlog is full) or linux (SYN queue, SYN cookies, accept queue, tcp_abort_on_overflow)',
    source: 'our name; set by the profiles',
  },
  // The Linux listener's knobs (TcpStackProfile=linux): the core's own policy, tcp/backlog.ts.
  tcp_syncookies: {
    type: 'int',
    default: 1,
    min: 0,
    max: 2,
    system: 'linux',
    registry: 'sysctl net.ipv4.tcp_syncookies',
    meaning: '0 never; 1 send SYN cookies when the SYN queue overflows; 2 always',
    source: 'Linux ip-sysctl.rst: 1',
  },
  tcp_abort_on_overflow: {
    type: 'bool',
    default: 0,
    system: 'linux',
    registry: 'sysctl net.ipv4.tcp_abort_on_overflow',
    meaning: 'accept queue full at the final ACK: 0 drop the ACK (the client retransmits, the SYN-ACK is resent); 1 reset the connection',
    source: 'Linux ip-sysctl.rst: 0',
  },
  tcp_max_syn_backlog: {
    type: 'int',
    default: 128,
    min: 1,
    max: 65535,
    unit: 'requests',
    system: 'linux',
    registry: 'sysctl net.ipv4.tcp_max_syn_backlog',
    meaning: 'per-listener limit of remembered connection requests (SYN-RCVD) before SYN cookies or drops',
    source:
      "Linux ip-sysctl.rst: 128 is the floor for low-memory machines; the kernel scales it with memory (2048 on this project's lab machines). We take the documented floor so overflow is reachable with a short flood (our choice)",
  },
  somaxconn: {
    type: 'int',
    default: 4096,
    min: 1,
    max: 65535,
    unit: 'connections',
    system: 'linux',
    registry: 'sysctl net.core.somaxconn',
    meaning: 'cap on any listen backlog',
    source: 'Linux ip-sysctl.rst: 4096 since Linux 5.4',
  },
} as const satisfies Record<string, ParamDef>;

// ---------------------------------------------------------------------------
// Faults: the modules' specs, in catalogue order
// ---------------------------------------------------------------------------

/** The specs of stack/faults/index.ts's FAULT_MODULES, in the same order (a unit test checks). */
const SPECS = [kb903927, kb297040, kb898060, kb972183, kb319381] as const;

/** Every parameter definition: the faults' own (in catalogue order), then the system's. */
type ParamDefs = (typeof kb903927)['params'] &
  (typeof kb297040)['params'] &
  (typeof kb898060)['params'] &
  (typeof kb972183)['params'] &
  (typeof kb319381)['params'] &
  typeof SYSTEM_PARAMS;

function unionOfDefs(): ParamDefs {
  const out: Record<string, ParamDef> = {};
  const owner = new Map<string, string>();
  for (const [who, defs] of [...SPECS.map((s) => [s.id, s.params] as const), ['the system', SYSTEM_PARAMS] as const]) {
    for (const [name, def] of Object.entries(defs as Record<string, ParamDef>)) {
      if (owner.has(name)) throw new Error(`parameter ${name} is defined by both ${owner.get(name)} and ${who}`);
      owner.set(name, who);
      out[name] = def;
    }
  }
  return out as unknown as ParamDefs;
}
const PARAM_DEFS: ParamDefs = unionOfDefs();

export type ParamName = keyof ParamDefs & string;
type ValueOfDef<D> = D extends { readonly type: 'enum'; readonly values: readonly (infer V)[] } ? V : number;
/** The hot-path view: every parameter by its canonical name. */
export type ParamValues = { -readonly [K in ParamName]: ValueOfDef<ParamDefs[K]> };
export type ParamValue = number | string;

export type FaultId = (typeof SPECS)[number]['id'];
export type FaultAlias = (typeof SPECS)[number]['alias'];
/** The hot-path view: every fault's current mode by canonical id. */
export type FaultModes = { [K in FaultId]: FaultMode };

/** One parameter as the catalogue describes it. */
export type ParamSpec = ParamDef & {
  readonly name: ParamName;
  /** Ids of the faults that read it. */
  readonly faults: readonly FaultId[];
};

/**
 * A fault as the catalogue lists it: its spec, with `params` naming every parameter
 * its behaviour reads (its own first, then those it reads from the system or another fault).
 */
export type CatalogueFault = Omit<FaultSpec, 'params' | 'reads'> & {
  readonly id: FaultId;
  readonly params: readonly ParamName[];
};

export const FAULTS: readonly CatalogueFault[] = SPECS.map((s): CatalogueFault => {
  const { params, reads, ...rest } = s as FaultSpec;
  const names = [...Object.keys(params), ...(reads ?? [])] as ParamName[];
  for (const n of names) if (!(n in PARAM_DEFS)) throw new Error(`fault ${s.id} reads ${n}, which nobody defines`);
  return { ...rest, id: s.id, params: names };
});
export const FAULT_IDS: readonly FaultId[] = FAULTS.map((f) => f.id);

function buildParamSpecs(): readonly ParamSpec[] {
  const out: ParamSpec[] = [];
  for (const name of Object.keys(PARAM_DEFS) as ParamName[]) {
    const faults = FAULTS.filter((f) => f.params.includes(name)).map((f) => f.id);
    out.push({ ...(PARAM_DEFS[name] as ParamDef), name, faults });
  }
  return out;
}
export const PARAMS: readonly ParamSpec[] = buildParamSpecs();
export const PARAM_NAMES: readonly ParamName[] = PARAMS.map((p) => p.name);

// ---------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------

export interface ProfileSpec {
  readonly name: string;
  readonly title: string;
  readonly description: string;
  /** Values set on top of the parameter defaults; everything else keeps its default. */
  readonly params: Readonly<Partial<ParamValues>>;
}

/**
 * What every Windows profile states (the Server 2003 registry reference's values unless
 * a profile says otherwise). A profile sets every parameter the stack reads for its
 * system, so that nothing it implies falls through to a default meant for another
 * (the table is in docs/design.md; test/unit/faults-catalogue.test.ts checks it).
 */
const WINDOWS_BASE = {
  TcpStackProfile: 'windows',
  SynAttackProtect: 0,
  TcpMaxHalfOpen: 500,
  TcpMaxHalfOpenRetried: 400,
  TcpMaxPortsExhausted: 5,
  TcpMaxConnectResponseRetransmissions: 2,
  TcpMaxConnectRetransmissions: 2,
  TcpInitialRttMs: 3000,
  MaxIcmpHostRoutes: 1000,
  EnablePMTUDiscovery: 1,
  EnablePMTUBHDetect: 0,
  PMTUFloor: 576,
  HostRouteAgingSec: 600,
  MTU: 0,
  MtlsListenBacklog: 5,
  MtlsAcceptIntervalMs: 100,
  DefaultTTL: 128,
  // The firewall's (KB 319381, stack/faults/kb319381/spec.ts): what a Windows firewall starts with.
  PortScanWellKnownThreshold: kb319381.params.PortScanWellKnownThreshold.default,
  PortScanAllPortsThreshold: kb319381.params.PortScanAllPortsThreshold.default,
  MediaPortReleaseDelayMs: kb319381.params.MediaPortReleaseDelayMs.default,
  // NLB (KB 972183, stack/faults/kb972183/spec.ts): the registry reference's defaults; DropStateIfNotBucketOwner
  // is read only with the hotfix (mode hotfixed).
  DropStateIfNotBucketOwner: kb972183.params.DropStateIfNotBucketOwner.default,
  AliveMsgPeriod: kb972183.params.AliveMsgPeriod.default,
  AliveMsgTolerance: kb972183.params.AliveMsgTolerance.default,
  NlbBucketCount: kb972183.params.NlbBucketCount.default,
  NlbAffinity: kb972183.params.NlbAffinity.default,
  DescriptorsPerAlloc: kb972183.params.DescriptorsPerAlloc.default,
  MaxDescriptorAllocs: kb972183.params.MaxDescriptorAllocs.default,
  MaskSourceMAC: kb972183.params.MaskSourceMAC.default,
  FilterICMP: kb972183.params.FilterICMP.default,
} as const satisfies Partial<ParamValues>;

export const PROFILES: readonly ProfileSpec[] = [
  {
    name: 'nt4-sp6a',
    title: "Windows NT 4.0 SP6a with the post-SP6a TCP/IP hotfix (KB 297040's system)",
    description:
      'Windows listener; SYN attack protection off as NT4 shipped it (KB 297040 needs SynAttackProtect set: add ' +
      '--param SynAttackProtect=1 or 2 to reproduce it); SYN retransmissions 2; no MS05-019 MTU floor (68); TTL 128.',
    params: { ...WINDOWS_BASE, SynAttackProtect: 0, PMTUFloor: 68 },
  },
  {
    name: 'win2003-sp1',
    title: "Windows Server 2003 SP1 (KB 903927's and KB 898060's system)",
    description:
      "Windows listener with SYN attack protection on, as SP1 shipped it. Sources disagree on whether SP1's default " +
      'was 1 or 2; we set 2 (our choice) because the delayed indication that 2 adds (handshake first, application ' +
      'and backlog afterwards) is exactly the behaviour KB 903927 describes. Thresholds as the Server 2003 reference: ' +
      'TcpMaxHalfOpen 500, TcpMaxHalfOpenRetried 400, TcpMaxPortsExhausted 5, TcpMaxConnectResponseRetransmissions 2. ' +
      'MS05-019 MTU floor 576, MaxIcmpHostRoutes 1000; TTL 128.',
    params: { ...WINDOWS_BASE, SynAttackProtect: 2, PMTUFloor: 576 },
  },
  {
    name: 'linux',
    title: 'A Linux listener, for comparison',
    description:
      'SYN queue bounded by tcp_max_syn_backlog (128, the documented floor), SYN cookies on overflow, accept queue ' +
      'capped by somaxconn 4096, ACK dropped when the accept queue is full (tcp_abort_on_overflow 0); no Windows SYN ' +
      'attack protection; PMTU floor 552 (min_pmtu), PMTU entries expire after 600 s (mtu_expires); TTL 64 ' +
      '(ip_default_ttl).',
    params: {
      TcpStackProfile: 'linux',
      SynAttackProtect: 0,
      tcp_syncookies: 1,
      tcp_abort_on_overflow: 0,
      tcp_max_syn_backlog: 128,
      somaxconn: 4096,
      EnablePMTUDiscovery: 1,
      EnablePMTUBHDetect: 0,
      PMTUFloor: 552,
      HostRouteAgingSec: 600,
      MTU: 0,
      MtlsListenBacklog: 5,
      MtlsAcceptIntervalMs: 100,
      DefaultTTL: 64,
    },
  },
];
export const PROFILE_NAMES: readonly string[] = PROFILES.map((p) => p.name);
export const DEFAULT_PROFILE = 'win2003-sp1';

// ---------------------------------------------------------------------------
// Look-ups (all inputs from the edge; every miss is a one-line UsageError)
// ---------------------------------------------------------------------------

const faultKeys = new Map<string, CatalogueFault>();
for (const f of FAULTS) {
  faultKeys.set(f.id, f);
  faultKeys.set(f.id.slice(2), f); // "903927"
  faultKeys.set(f.alias, f);
}
const paramKeys = new Map<string, ParamSpec>(PARAMS.map((p) => [p.name.toLowerCase(), p]));

export function listFaultNames(): string {
  return FAULTS.map((f) => `${f.id} (${f.alias})`).join(', ');
}

/** Resolves "kb903927", "KB903927", "903927" or the alias "synprotect-leak"; null if none. */
export function lookupFault(idOrAlias: string): CatalogueFault | null {
  return faultKeys.get(idOrAlias.trim().toLowerCase()) ?? null;
}

export function findFault(idOrAlias: string): CatalogueFault {
  const f = lookupFault(idOrAlias);
  if (!f) throw new UsageError(`unknown fault '${idOrAlias}': valid faults are ${listFaultNames()}`);
  return f;
}

/** Resolves a parameter name case-insensitively; null if none. */
export function lookupParam(name: string): ParamSpec | null {
  return paramKeys.get(name.trim().toLowerCase()) ?? null;
}

export function findParam(name: string): ParamSpec {
  const p = lookupParam(name);
  if (p) return p;
  const near = nearestNames(name, PARAM_NAMES, 3);
  const hint = near.length ? `did you mean ${near.join(' or ')}? ` : '';
  throw new UsageError(`unknown parameter '${name}': ${hint}valid parameters are ${PARAM_NAMES.join(', ')}`);
}

export function findProfile(name: string): ProfileSpec {
  const p = PROFILES.find((x) => x.name === name.trim().toLowerCase());
  if (!p) throw new UsageError(`unknown profile '${name}': valid profiles are ${PROFILE_NAMES.join(', ')}`);
  return p;
}

/** A human description of a parameter's valid values, as used in error messages. */
export function describeRange(p: ParamSpec): string {
  switch (p.type) {
    case 'int':
      return `${p.min}..${p.max}${p.unit ? ` ${p.unit}` : ''}`;
    case 'bool':
      return '0 or 1';
    case 'enum':
      return p.values.join(' | ');
  }
}

/**
 * Parses and validates a value for a parameter. Integers accept decimal or 0x hex
 * (as registry editors show DWORDs); booleans accept 0/1, true/false, on/off, yes/no;
 * enums match case-insensitively.
 */
export function parseParamValue(p: ParamSpec, raw: string | number): ParamValue {
  const text = typeof raw === 'number' ? String(raw) : raw.trim();
  const bad = (why: string): never => {
    throw new UsageError(`parameter ${p.name}: ${why}; valid values are ${describeRange(p)}`);
  };
  switch (p.type) {
    case 'int': {
      let v: number;
      if (typeof raw === 'number') v = raw;
      else if (/^[+-]?\d+$/.test(text)) v = Number(text);
      else if (/^0x[0-9a-f]+$/i.test(text)) v = Number.parseInt(text.slice(2), 16);
      else return bad(`'${text}' is not an integer`);
      if (!Number.isInteger(v)) return bad(`'${text}' is not an integer`);
      if (v < p.min || v > p.max) return bad(`${v} is out of range`);
      return v;
    }
    case 'bool': {
      const t = text.toLowerCase();
      if (t === '1' || t === 'true' || t === 'on' || t === 'yes') return 1;
      if (t === '0' || t === 'false' || t === 'off' || t === 'no') return 0;
      return bad(`'${text}' is not a boolean`);
    }
    case 'enum': {
      const t = text.toLowerCase();
      const v = p.values.find((x) => x === t);
      if (v === undefined) return bad(`'${text}' is not one of them`);
      return v;
    }
  }
}

/** Up to `max` names closest to `input` (edit distance, case-insensitive), best first. */
export function nearestNames(input: string, names: readonly string[], max: number): string[] {
  const a = input.toLowerCase();
  const scored = names.map((n) => ({ n, d: editDistance(a, n.toLowerCase()) }));
  const limit = Math.max(2, Math.floor(a.length / 3));
  return scored
    .filter((s) => s.d <= limit || s.n.toLowerCase().includes(a) || (a.length >= 4 && a.includes(s.n.toLowerCase())))
    .sort((x, y) => x.d - y.d)
    .slice(0, max)
    .map((s) => s.n);
}

function editDistance(a: string, b: string): number {
  let prev = new Array<number>(b.length + 1);
  let cur = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}
