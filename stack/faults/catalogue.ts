/**
 * The fault catalogue: the one place that lists every reproduced fault, every
 * parameter the stack reads, and the system profiles that set those parameters.
 *
 * Faults are data. A code path that differs between the article's behaviour and the
 * fixed one reads `cfg.modes.kb903927 === 'buggy'`; a limit reads
 * `cfg.params.TcpMaxHalfOpen`. Both objects are plain, mutated in place by
 * FaultConfig's setters, so a reference taken once stays valid and a read costs one
 * property load.
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
import { KB972183_PARAMS, KB972183_SPEC } from './kb972183/spec';

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

/**
 * `off`: the feature that carries the bug is not in use. `buggy`: the article's
 * behaviour. `hotfixed`: the behaviour after the fix.
 */
export type FaultMode = 'off' | 'buggy' | 'hotfixed';
export const ALL_MODES: readonly FaultMode[] = ['off', 'buggy', 'hotfixed'];

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

export type ParamType = 'int' | 'bool' | 'enum';

/** Where a parameter lives on the system it comes from. */
const TCPIP = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters';
const TCPIP_IF = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Interfaces\\<adapter>';
const WLBS_IF = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\WLBS\\Parameters\\Interface\\<GUID>';

interface ParamDefBase {
  /** Where the value is set on the original system; null when the name is ours. */
  readonly registry: string | null;
  readonly meaning: string;
  readonly unit?: string;
  /** Where the default comes from, or "our choice: ..." with the reason. */
  readonly source: string;
  /** The system this knob belongs to: which listener profile reads it. */
  readonly system: 'windows' | 'linux' | 'any';
  /** Read by the emulated system whatever the faults (no fault lists it). */
  readonly general?: boolean;
}
interface IntParamDef extends ParamDefBase {
  readonly type: 'int';
  readonly default: number;
  readonly min: number;
  readonly max: number;
}
interface BoolParamDef extends ParamDefBase {
  readonly type: 'bool';
  readonly default: 0 | 1;
}
interface EnumParamDef extends ParamDefBase {
  readonly type: 'enum';
  readonly values: readonly string[];
  readonly default: string;
}
type ParamDef = IntParamDef | BoolParamDef | EnumParamDef;

const PARAM_DEFS = {
  // --- SYN attack protection (KB 903927; precondition of KB 297040) ---------------
  SynAttackProtect: {
    type: 'int', default: 0, min: 0, max: 2, system: 'windows', registry: TCPIP,
    meaning: '0 off; 1 fewer SYN-ACK retransmissions and no route-cache lookup before the SYN-ACK once a threshold is exceeded; 2 = 1 plus delayed indication: the application is told of a connection only after the handshake completes',
    source: '0 when absent (NT4, Windows 2000, Server 2003 RTM); Server 2003 SP1 turned protection on by default (profile win2003-sp1 sets 2: our choice, see there)',
  },
  TcpMaxHalfOpen: {
    type: 'int', default: 500, min: 1, max: 0xffff, unit: 'connections', system: 'windows', registry: TCPIP,
    meaning: 'half-open (SYN-RCVD) connections on a listener beyond which SYN attack protection triggers',
    source: 'Server 2003 registry reference: 500; Windows accepts 100..65535, we accept 1.. so a lab can trigger protection with a handful of SYNs (our choice)',
  },
  TcpMaxHalfOpenRetried: {
    type: 'int', default: 400, min: 1, max: 0xffff, unit: 'connections', system: 'windows', registry: TCPIP,
    meaning: 'half-open connections that already had at least one SYN-ACK retransmission, beyond which protection triggers',
    source: 'Server 2003 registry reference: 400; Windows accepts 80..65535, we accept 1.. (our choice, as TcpMaxHalfOpen)',
  },
  TcpMaxPortsExhausted: {
    type: 'int', default: 5, min: 0, max: 0xffff, unit: 'refused requests', system: 'windows', registry: TCPIP,
    meaning: 'connection requests refused because the listen backlog was exhausted, beyond which protection triggers (0: as soon as the backlog is consumed)',
    source: 'Windows 2000 / Server 2003 registry reference: 5, range 0..65535',
  },
  TcpMaxConnectResponseRetransmissions: {
    type: 'int', default: 2, min: 0, max: 255, unit: 'retransmissions', system: 'windows', registry: TCPIP,
    meaning: 'SYN-ACK retransmissions before a half-open connection is dropped (first after 3 s, doubling); protection acts only when this is >= 2',
    source: 'Windows 2000 / Server 2003 registry reference and KB 142641: 2 (3 s, 6 s, give up after 21 s)',
  },
  TcpMaxConnectRetransmissions: {
    type: 'int', default: 2, min: 0, max: 255, unit: 'retransmissions', system: 'windows', registry: TCPIP,
    meaning: 'SYN retransmissions of an active open before the attempt is abandoned (the failure path of KB 297040)',
    source: 'Windows 2000 / Server 2003 registry reference: 2; we use 2 for NT4 as well',
  },
  TcpInitialRttMs: {
    type: 'int', default: 3000, min: 10, max: 0xffff, unit: 'ms', system: 'windows', registry: null,
    meaning: 'delay before the first SYN retransmission of an active open; doubles after each attempt',
    source: 'our name for TcpInitialRTT (Interfaces\\<adapter>, documented in seconds, default 3); kept in milliseconds so a lab can shorten the schedule',
  },
  // --- Path MTU discovery and the host-route limit (KB 898060) ---------------------
  MaxIcmpHostRoutes: {
    type: 'int', default: 1000, min: 1, max: 1_000_000, unit: 'routes', system: 'windows', registry: TCPIP,
    meaning: 'the most host routes that ICMP (fragmentation needed, redirects) may create; at the limit ICMP MTU updates are ignored',
    source: 'KB 898060: 1000 (KB 896350 says 10000; we keep the article\'s value)',
  },
  EnablePMTUDiscovery: {
    type: 'bool', default: 1, system: 'any', registry: TCPIP,
    meaning: '1: send with DF and learn the path MTU from ICMP (RFC 1191); 0: use 576 for every destination off the local subnet',
    source: 'Windows 2000 / Server 2003 registry reference: 1',
  },
  EnablePMTUBHDetect: {
    type: 'bool', default: 0, system: 'any', registry: TCPIP,
    meaning: 'black-hole detection: after several unanswered retransmissions of a segment, drop the MSS to 536 and stop relying on ICMP',
    source: 'Windows 2000 / Server 2003 registry reference: 0',
  },
  PMTUFloor: {
    type: 'int', default: 576, min: 68, max: 576, unit: 'bytes', system: 'any', registry: null,
    meaning: 'lowest path MTU that an ICMP message may set: 68 is RFC 791/1191\'s minimum, 576 the floor MS05-019 introduced against CVE-2004-1060 (a genuine link below it then breaks)',
    source: 'our name; 576 after MS05-019 / Server 2003 SP1, 68 before (nt4-sp6a), 552 on Linux (min_pmtu)',
  },
  HostRouteAgingSec: {
    type: 'int', default: 600, min: 0, max: 86_400, unit: 's', system: 'any', registry: null,
    meaning: 'a host route whose MTU has not been lowered for this long is aged back to the first-hop MTU and removed (0: never)',
    source: 'our name; RFC 1191 suggests about 10 minutes; Linux mtu_expires is 600 s',
  },
  MTU: {
    type: 'int', default: 0, min: 0, max: 65535, unit: 'bytes', system: 'any', registry: TCPIP_IF,
    meaning: 'interface MTU override, the article\'s workaround (576 is the safe value); 0: the link\'s MTU; values below 68 mean 68',
    source: 'KB 898060 / KB 120642: absent (0xFFFFFFFF) means the link\'s MTU; we spell that 0',
  },
  // --- The mutual-TLS service whose backlog fills (KB 903927) ----------------------
  MtlsListenBacklog: {
    type: 'int', default: 5, min: 0, max: 0xffff, unit: 'connections', system: 'any', registry: null,
    meaning: 'listen backlog of the emulated mutual-TLS (SIP/LCS-like) server; when it is full the stack refuses or resets new connections',
    source: 'our choice: 5, the classic Winsock listen(5), so a short burst fills it',
  },
  MtlsAcceptIntervalMs: {
    type: 'int', default: 100, min: 0, max: 60_000, unit: 'ms', system: 'any', registry: null,
    meaning: 'how often the emulated server accepts one queued connection (a slow application lets the backlog fill); 0: accept at once',
    source: 'our choice: 100 ms, slow enough that a few hundred connections per second overflow a backlog of 5',
  },
  // --- Which listener the emulated stack is -----------------------------------------
  DefaultTTL: {
    type: 'int', default: 128, min: 1, max: 255, unit: 'hops', system: 'any', registry: TCPIP, general: true,
    meaning: 'time to live of every IPv4 datagram the stack sends (TCP, UDP, ICMP replies)',
    source: 'Windows NT 4.0, 2000 and Server 2003 registry reference: 128; Linux net.ipv4.ip_default_ttl: 64 (the linux profile)',
  },
  TcpStackProfile: {
    type: 'enum', values: ['windows', 'linux'], default: 'windows', system: 'any', registry: null,
    meaning: 'listener behaviour: windows (SynAttackProtect and its thresholds, RST when the backlog is full) or linux (SYN queue, SYN cookies, accept queue, tcp_abort_on_overflow)',
    source: 'our name; set by the profiles',
  },
  // --- Linux listener knobs (TcpStackProfile=linux) -------------------------------
  tcp_syncookies: {
    type: 'int', default: 1, min: 0, max: 2, system: 'linux', registry: 'sysctl net.ipv4.tcp_syncookies',
    meaning: '0 never; 1 send SYN cookies when the SYN queue overflows; 2 always',
    source: 'Linux ip-sysctl.rst: 1',
  },
  tcp_abort_on_overflow: {
    type: 'bool', default: 0, system: 'linux', registry: 'sysctl net.ipv4.tcp_abort_on_overflow',
    meaning: 'accept queue full at the final ACK: 0 drop the ACK (the client retransmits, the SYN-ACK is resent); 1 reset the connection',
    source: 'Linux ip-sysctl.rst: 0',
  },
  tcp_max_syn_backlog: {
    type: 'int', default: 128, min: 1, max: 65535, unit: 'requests', system: 'linux', registry: 'sysctl net.ipv4.tcp_max_syn_backlog',
    meaning: 'per-listener limit of remembered connection requests (SYN-RCVD) before SYN cookies or drops',
    source: 'Linux ip-sysctl.rst: 128 is the floor for low-memory machines; the kernel scales it with memory (2048 on this project\'s lab machines). We take the documented floor so overflow is reachable with a short flood (our choice)',
  },
  somaxconn: {
    type: 'int', default: 4096, min: 1, max: 65535, unit: 'connections', system: 'linux', registry: 'sysctl net.core.somaxconn',
    meaning: 'cap on any listen backlog',
    source: 'Linux ip-sysctl.rst: 4096 since Linux 5.4',
  },
  // --- Network Load Balancing (KB 972183): owned by stack/faults/kb972183/spec.ts ------
  ...KB972183_PARAMS,
  // --- Firewall media filter (KB 319381; not implemented yet) ---------------------
  PortScanWellKnownThreshold: {
    type: 'int', default: 10, min: 1, max: 2048, unit: 'ports', system: 'windows', registry: null,
    meaning: 'dropped packets to this many distinct ports in 1..2048 from one address raise event 15104 (well-known port scan)',
    source: 'our choice: not in the article; the later ISA/TMG default was 10',
  },
  PortScanAllPortsThreshold: {
    type: 'int', default: 20, min: 1, max: 65535, unit: 'ports', system: 'windows', registry: null,
    meaning: 'dropped packets to this many distinct ports from one address raise event 15105 (all port scan)',
    source: 'our choice: not in the article; the later ISA/TMG default was 20',
  },
} as const satisfies Record<string, ParamDef>;

export type ParamName = keyof typeof PARAM_DEFS;
type ValueOfDef<D> = D extends { readonly type: 'enum'; readonly values: readonly (infer V)[] } ? V : number;
/** The hot-path view: every parameter by its canonical name. */
export type ParamValues = { -readonly [K in ParamName]: ValueOfDef<(typeof PARAM_DEFS)[K]> };
export type ParamValue = number | string;

/** One parameter as the catalogue describes it. */
export type ParamSpec = ParamDef & {
  readonly name: ParamName;
  /** Ids of the faults that read it. */
  readonly faults: readonly FaultId[];
};

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

export interface FaultSpec {
  /** Canonical id: the KB number. */
  readonly id: string;
  readonly alias: string;
  readonly title: string;
  /** File name of the article under shared/kb/. */
  readonly article: string;
  /** Affected system, as the article says. */
  readonly appliesTo: string;
  readonly summary: string;
  readonly modes: readonly FaultMode[];
  readonly defaultMode: FaultMode;
  readonly params: readonly ParamName[];
  readonly implemented: boolean;
  /** What we decided where the article is silent. */
  readonly ourChoices: readonly string[];
}

const FAULT_DEFS = [
  {
    id: 'kb903927',
    alias: 'synprotect-leak',
    // The stored article has no title line: this one is ours, from its first paragraph.
    title: 'Live Communications Server connections to a Windows Server 2003 SP1 server with SYN attack protection fail, and memory leaks',
    article: 'KB903927-lcs-mtls-leak-syn-protection.txt',
    appliesTo: 'Live Communications Server 2003 and Office Live Communications Server 2005 on Windows Server 2003 SP1',
    summary:
      'With SYN attack protection on (as Server 2003 SP1 shipped it), the stack finishes the three-way handshake before ' +
      'it tells the listening application or looks at its backlog. When the backlog turns out to be full, the already ' +
      'established connection is reset, after the client has succeeded in connecting and has usually sent the start of ' +
      'its mutual-TLS negotiation. On that reset path the per-connection "stacks" allocated for the negotiation are ' +
      'never freed, so memory grows with every reset connection and the server slows down. Hotfixed, the reset path ' +
      'frees everything and memory stays flat.',
    modes: ['buggy', 'hotfixed'],
    defaultMode: 'hotfixed',
    params: [
      'SynAttackProtect', 'TcpMaxHalfOpen', 'TcpMaxHalfOpenRetried', 'TcpMaxPortsExhausted',
      'TcpMaxConnectResponseRetransmissions', 'TcpStackProfile', 'MtlsListenBacklog', 'MtlsAcceptIntervalMs',
      'tcp_syncookies', 'tcp_abort_on_overflow', 'tcp_max_syn_backlog', 'somaxconn',
    ],
    implemented: true,
    ourChoices: [
      'no `off` mode: SYN attack protection is switched off with SynAttackProtect=0 (or --profile linux), not with a mode',
      'the article places the leak in the SChannel/SIP code of the Live Communications Server whose connection is reset; ' +
        'the emulator keeps it on the stack\'s own reset path (faults.md): the control block, the receive buffer with the ' +
        'client\'s first flight and the per-connection application state',
    ],
  },
  {
    id: 'kb297040',
    alias: 'conntable-hang',
    title: 'Windows May Hang When Attempting to Establish a TCP Connection to a Nonexistent IP Address',
    article: 'KB297040-nt4-conntable-lock-hang.txt',
    appliesTo: 'Windows NT 4.0 SP6a (and Terminal Server SP6) with a post-SP6a TCP/IP hotfix',
    summary:
      'When SynAttackProtect is set and the host itself opens a TCP connection to an address that does not exist or ' +
      'does not answer, the failure path of that attempt takes the lock on the TCP connection table and never releases ' +
      'it. Everything that needs the table then waits forever: new and existing connections stall and the host no ' +
      'longer answers even ping. Hotfixed, the lock is released on every path; the attempt fails with a timeout (or ' +
      'host unreachable) and the stack keeps serving everything else.',
    modes: ['buggy', 'hotfixed'],
    defaultMode: 'hotfixed',
    params: ['SynAttackProtect', 'TcpMaxConnectRetransmissions', 'TcpInitialRttMs'],
    implemented: true,
    ourChoices: [
      'the leaking failure paths are: SYN retransmissions exhausted, and an ICMP unreachable aborting the attempt',
      'the lock is an inspectable object and the control plane stays alive while the emulated stack is hung',
      'no `off` mode: the precondition is SynAttackProtect != 0',
    ],
  },
  {
    id: 'kb898060',
    alias: 'pmtu-hostroutes',
    // The stored article has no title line: this one is from its first sentence.
    title: 'Network connectivity between clients and servers may fail after you install MS05-019 or Windows Server 2003 SP1',
    article: 'KB898060-pmtu-host-routes-limit.txt',
    appliesTo: 'Windows Server 2003 SP1 and Windows with MS05-019',
    summary:
      'Path MTU discovery keeps the learnt MTU of each destination in a host route created from ICMP "fragmentation ' +
      'needed" messages, and the number of such routes is limited by MaxIcmpHostRoutes. The buggy code counts a host ' +
      'route again every time an ICMP message lowers the MTU of a route that already exists, so repeated updates (several ' +
      'routers, a small-MTU tunnel, load balancing, route changes) drive the count to the limit while the real number of ' +
      'routes stays small. From then on every ICMP MTU update is ignored: new destinations never learn their path MTU and ' +
      'connections hang after the handshake as soon as they send full-size segments. Hotfixed, the count moves only when a ' +
      'host route is created or removed.',
    modes: ['buggy', 'hotfixed'],
    defaultMode: 'hotfixed',
    params: ['MaxIcmpHostRoutes', 'EnablePMTUDiscovery', 'EnablePMTUBHDetect', 'PMTUFloor', 'HostRouteAgingSec', 'MTU'],
    implemented: true,
    ourChoices: [
      'host routes age out after HostRouteAgingSec (600 s, 0 = never), swept once a minute as RFC 1191 suggests',
      'no `off` mode: path MTU discovery is switched off with EnablePMTUDiscovery=0',
    ],
  },
  {
    id: 'kb972183',
    alias: 'nlb-ipsec',
    title: KB972183_SPEC.title,
    article: 'KB972183-nlb-ipsec-bucket-owner.txt',
    appliesTo: KB972183_SPEC.appliesTo,
    summary: KB972183_SPEC.summary,
    modes: ['buggy', 'hotfixed'],
    defaultMode: 'hotfixed',
    params: [
      'DropStateIfNotBucketOwner', 'AliveMsgPeriod', 'AliveMsgTolerance', 'NlbBucketCount', 'NlbAffinity',
      'DescriptorsPerAlloc', 'MaxDescriptorAllocs', 'MaskSourceMAC', 'FilterICMP',
    ],
    implemented: true,
    ourChoices: KB972183_SPEC.ourChoices,
  },
  {
    id: 'kb319381',
    alias: 'udp-rebind',
    // The stored article has no title line: this one is ours, from its Symptoms section.
    title: 'Windows Media Player behind ISA Server may not work over MMSU when moving to the next item of a server-side playlist',
    article: 'KB319381-isa-mmsu-udp-port-rebind.txt',
    appliesTo: 'ISA Server 2000 SP1 with Firewall Client',
    summary:
      'A firewall\'s streaming-media filter opens UDP ports on behalf of firewall clients. When the player moves to the ' +
      'next playlist item it releases its UDP port and binds the same port again. The buggy firewall has already closed ' +
      'the port, so its packet filter drops the arriving media packets (and logs them as a port scan from the media ' +
      'server); if the re-bind races the release, it answers WSAEADDRINUSE. Hotfixed, a re-bind re-opens the port and ' +
      'release and re-bind are ordered, so there are no drops, no EADDRINUSE and no false port-scan events.',
    modes: ['off', 'buggy', 'hotfixed'],
    defaultMode: 'off',
    params: ['PortScanWellKnownThreshold', 'PortScanAllPortsThreshold'],
    implemented: false,
    ourChoices: ['port-scan thresholds 10 well-known and 20 in all, the later TMG defaults'],
  },
] as const satisfies readonly FaultSpec[];

export type FaultId = (typeof FAULT_DEFS)[number]['id'];
export type FaultAlias = (typeof FAULT_DEFS)[number]['alias'];
/** The hot-path view: every fault's current mode by canonical id. */
export type FaultModes = { [K in FaultId]: FaultMode };

export const FAULTS: readonly FaultSpec[] = FAULT_DEFS;
export const FAULT_IDS: readonly FaultId[] = FAULT_DEFS.map((f) => f.id);

function buildParamSpecs(): readonly ParamSpec[] {
  const out: ParamSpec[] = [];
  for (const name of Object.keys(PARAM_DEFS) as ParamName[]) {
    const faults = FAULT_DEFS.filter((f) => (f.params as readonly string[]).includes(name)).map((f) => f.id);
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
  // NLB (KB 972183): the registry reference's defaults; DropStateIfNotBucketOwner is read only with the hotfix (mode hotfixed).
  DropStateIfNotBucketOwner: 1, AliveMsgPeriod: 1000, AliveMsgTolerance: 5, NlbBucketCount: 60, NlbAffinity: 'single',
  DescriptorsPerAlloc: 512, MaxDescriptorAllocs: 512, MaskSourceMAC: 1, FilterICMP: 0,
} as const satisfies Partial<ParamValues>;

export const PROFILES: readonly ProfileSpec[] = [
  {
    name: 'nt4-sp6a',
    title: 'Windows NT 4.0 SP6a with the post-SP6a TCP/IP hotfix (KB 297040\'s system)',
    description:
      'Windows listener; SYN attack protection off as NT4 shipped it (KB 297040 needs SynAttackProtect set: add ' +
      '--param SynAttackProtect=1 or 2 to reproduce it); SYN retransmissions 2; no MS05-019 MTU floor (68); TTL 128.',
    params: { ...WINDOWS_BASE, SynAttackProtect: 0, PMTUFloor: 68 },
  },
  {
    name: 'win2003-sp1',
    title: 'Windows Server 2003 SP1 (KB 903927\'s and KB 898060\'s system)',
    description:
      'Windows listener with SYN attack protection on, as SP1 shipped it. Sources disagree on whether SP1\'s default ' +
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

const faultKeys = new Map<string, FaultSpec>();
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
export function lookupFault(idOrAlias: string): FaultSpec | null {
  return faultKeys.get(idOrAlias.trim().toLowerCase()) ?? null;
}

export function findFault(idOrAlias: string): FaultSpec {
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
    case 'int': return `${p.min}..${p.max}${p.unit ? ` ${p.unit}` : ''}`;
    case 'bool': return '0 or 1';
    case 'enum': return p.values.join(' | ');
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

// ---------------------------------------------------------------------------
// FaultConfig: the live configuration the stack reads on its hot paths
// ---------------------------------------------------------------------------

export type ConfigChange =
  | { readonly kind: 'mode'; readonly fault: FaultId; readonly alias: string; readonly from: FaultMode; readonly to: FaultMode }
  | { readonly kind: 'param'; readonly name: ParamName; readonly from: ParamValue; readonly to: ParamValue }
  | { readonly kind: 'profile'; readonly from: string | null; readonly to: string };

export type ConfigListener = (change: ConfigChange) => void;

export interface FaultConfigSnapshot {
  profile: string | null;
  modes: FaultModes;
  params: ParamValues;
}

function defaultModes(): FaultModes {
  const m = {} as Record<string, FaultMode>;
  for (const f of FAULTS) m[f.id] = f.defaultMode;
  return m as FaultModes;
}

function defaultParams(): ParamValues {
  const v = {} as Record<string, ParamValue>;
  for (const p of PARAMS) v[p.name] = p.default;
  return v as ParamValues;
}

export class FaultConfig {
  /** Current mode of every fault by canonical id. Read freely; change with setMode. */
  readonly modes: Readonly<FaultModes>;
  /** Current value of every parameter by canonical name. Read freely; change with setParam. */
  readonly params: Readonly<ParamValues>;
  private profileName: string | null = null;
  private readonly listeners = new Set<ConfigListener>();

  /** Starts from the parameter defaults and applies `profile` (pass null for none). */
  constructor(profile: string | null = DEFAULT_PROFILE) {
    this.modes = defaultModes();
    this.params = defaultParams();
    if (profile !== null) this.applyProfile(profile);
  }

  get profile(): string | null {
    return this.profileName;
  }

  mode(idOrAlias: string): FaultMode {
    return this.modes[findFault(idOrAlias).id as FaultId];
  }

  /** True when the fault's article behaviour is on. */
  isBuggy(id: FaultId): boolean {
    return this.modes[id] === 'buggy';
  }

  setMode(idOrAlias: string, mode: string): void {
    const f = findFault(idOrAlias);
    const m = mode.trim().toLowerCase() as FaultMode;
    if (!f.modes.includes(m)) {
      throw new UsageError(`fault ${f.id} (${f.alias}) has no mode '${mode}': valid modes are ${f.modes.join(', ')}`);
    }
    if (!f.implemented && m !== 'off') {
      throw new UsageError(
        `fault ${f.id} (${f.alias}) is not implemented yet: it can only be 'off'; implemented faults are ` +
          FAULTS.filter((x) => x.implemented).map((x) => `${x.id} (${x.alias})`).join(', '),
      );
    }
    const id = f.id as FaultId;
    const from = this.modes[id];
    if (from === m) return;
    (this.modes as FaultModes)[id] = m;
    this.notify({ kind: 'mode', fault: id, alias: f.alias, from, to: m });
  }

  /** Sets a parameter by name (case-insensitive), validating type and range; returns the canonical name. */
  setParam(name: string, value: string | number): ParamName {
    const p = findParam(name);
    const v = parseParamValue(p, value);
    this.assign(p.name, v);
    return p.name;
  }

  /** Resets every parameter to its default and applies the profile's values. Fault modes are left alone. */
  applyProfile(name: string): void {
    const prof = findProfile(name);
    const from = this.profileName;
    for (const p of PARAMS) {
      const override = (prof.params as Record<string, ParamValue | undefined>)[p.name];
      this.assign(p.name, override === undefined ? p.default : override);
    }
    this.profileName = prof.name;
    if (from !== prof.name) this.notify({ kind: 'profile', from, to: prof.name });
  }

  /** Calls `listener` after every effective change; returns the unsubscribe function. */
  onChange(listener: ConfigListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** A JSON-able copy of the whole configuration. */
  snapshot(): FaultConfigSnapshot {
    return { profile: this.profileName, modes: { ...this.modes }, params: { ...this.params } };
  }

  private assign(name: ParamName, v: ParamValue): void {
    const params = this.params as Record<ParamName, ParamValue>;
    const from = params[name];
    if (from === v) return;
    params[name] = v;
    this.notify({ kind: 'param', name, from, to: v });
  }

  /** Every listener hears every change; the first listener error is rethrown after all have run. */
  private notify(change: ConfigChange): void {
    let first: unknown = null;
    for (const l of [...this.listeners]) {
      try {
        l(change);
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== null) throw first;
  }
}

function splitAssignment(what: string, example: string, text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) {
    throw new UsageError(`bad ${what} '${text}': expected NAME=VALUE, for example ${example}`);
  }
  return [text.slice(0, eq).trim(), text.slice(eq + 1).trim()];
}

export interface FaultConfigInput {
  /** System profile; DEFAULT_PROFILE when absent. */
  profile?: string;
  /** "kb903927=buggy" or "synprotect-leak=hotfixed". */
  faults: string[];
  /** "SynAttackProtect=2". */
  params: string[];
}

/** Builds the configuration from CLI-style input: profile first, then faults, then parameters. */
export function buildFaultConfig(input: FaultConfigInput): FaultConfig {
  const cfg = new FaultConfig(input.profile ?? DEFAULT_PROFILE);
  for (const text of input.faults) {
    const [id, mode] = splitAssignment('fault setting', 'kb903927=buggy or synprotect-leak=hotfixed', text);
    cfg.setMode(id, mode);
  }
  for (const text of input.params) {
    const [name, value] = splitAssignment('parameter setting', 'SynAttackProtect=2', text);
    cfg.setParam(name, value);
  }
  return cfg;
}
