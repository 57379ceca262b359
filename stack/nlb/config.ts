/**
 * The configuration of one Network Load Balancing host: the cluster address, the
 * host's priority, the cluster's operation mode (and the MAC addresses it implies), the
 * port rules, and the parameters (the WLBS registry values) read from outside.
 *
 * Public facts this follows (docs/nlb.md has the sources):
 * - unicast mode: every host takes the cluster MAC 02-BF-w-x-y-z (w.x.y.z the cluster
 *   IP) and, with MaskSourceMAC (default 1), sends from 02-h-w-x-y-z (h its priority),
 *   so that switches never learn the cluster MAC and keep flooding it;
 * - multicast mode: the adapter keeps its own MAC and adds 03-BF-w-x-y-z, which ARP
 *   answers for the cluster IP;
 * - IGMP multicast mode: the hosts join 239.255.y.z (y.z the cluster IP's last two
 *   octets); the cluster MAC is that group's 01-00-5E MAC, which ARP answers;
 * - port-rule defaults (WMI MicrosoftNLB_PortRuleEx): ports 0-65535, both protocols,
 *   multiple hosts, equal load (weight 50), single affinity; host priorities 1-32.
 */
import { formatIpv4 } from '../wire/addr';
import { BROADCAST_MAC, ipv4MulticastMac, type MacAddr } from '../wire/ethernet';
import { NLB_MAX_BUCKETS, NLB_RULE_SLOTS } from '../wire/nlb';

export type NlbMode = 'unicast' | 'multicast' | 'igmp';
export const NLB_MODES: readonly NlbMode[] = ['unicast', 'multicast', 'igmp'];
export type RuleProtocol = 'tcp' | 'udp' | 'both';
export type FilteringMode = 'multiple' | 'single' | 'disabled';
export type Affinity = 'none' | 'single' | 'network';

/** The most hosts a cluster has (host priorities 1-32). */
export const NLB_MAX_HOSTS = 32;

export interface PortRule {
  start: number;
  end: number;
  protocol: RuleProtocol;
  mode: FilteringMode;
  affinity: Affinity;
  /** This host's load weight, 0-100; null: equal load (every host the same). */
  weight: number | null;
  /** Single-host mode: this host's handling priority for the rule (lowest wins); 0: its host priority. */
  priority: number;
  /**
   * Extended affinity (Windows Server 2008 R2): how long a client stays with this host
   * after its last connection of this rule closed, in ms (0: off). Given in minutes, as
   * WMI's ClientStickinessTimeout has it (the unattend Timeout setting says seconds: docs/nlb.md).
   */
  timeoutMs: number;
}

/** The WLBS registry values the host reads (live: a change applies at the next heartbeat). */
export interface NlbParams {
  /** ms between heartbeats (100-10000, default 1000). */
  AliveMsgPeriod: number;
  /** Heartbeats missed before a host is dropped (5-100, default 5). */
  AliveMsgTolerance: number;
  /** Descriptors allocated per block (16-1024, default 512). */
  DescriptorsPerAlloc: number;
  /** Blocks allocated at most (1-1024, default 512). */
  MaxDescriptorAllocs: number;
  /** Unicast mode: send from the masked MAC 02-h-w-x-y-z (1, default) or from the cluster MAC (0). */
  MaskSourceMAC: number;
  /** 0 (default): every host takes ICMP to the cluster address; 1: ICMP is balanced like single affinity. */
  FilterICMP: number;
}

export const DEFAULT_NLB_PARAMS: NlbParams = {
  AliveMsgPeriod: 1000,
  AliveMsgTolerance: 5,
  DescriptorsPerAlloc: 512,
  MaxDescriptorAllocs: 512,
  MaskSourceMAC: 1,
  FilterICMP: 0,
};

export interface NlbConfig {
  clusterIp: number;
  clusterPrefix: number;
  /** The host's own address (--addr): its heartbeats and ordinary traffic. */
  dedicatedIp: number;
  /** 1-32, unique in the cluster; the lowest is the default host. */
  priority: number;
  mode: NlbMode;
  rules: PortRule[];
  /** Buckets the client space is cut into (1-64; ours, not public: 60 by default). */
  buckets: number;
  /** Mixed into the bucket hash; every host of a cluster must use the same (ours; default 0). */
  hashSeed: number;
  /** Shown in the extended heartbeat (Windows sends the host's name there). */
  hostName: string;
  /** 'stopped': the host joins only on `nlb start`. */
  initialState: 'started' | 'stopped';
}

export const DEFAULT_BUCKETS = 60;

export function defaultRule(): PortRule {
  return { start: 0, end: 65535, protocol: 'both', mode: 'multiple', affinity: 'single', weight: null, priority: 0, timeoutMs: 0 };
}

/** A rule spec that is wrong: the message says what and what is valid. */
export class PortRuleError extends Error {}

const RULE_KEYS = ['ports', 'proto', 'mode', 'affinity', 'weight', 'priority', 'timeout'] as const;

/**
 * Parses a port rule: comma-separated KEY=VALUE, every key optional (the WMI defaults):
 *   ports=START[-END]            0-65535
 *   proto=tcp|udp|both           both
 *   mode=multiple|single|disabled   multiple
 *   affinity=none|single|network single
 *   weight=0..100|equal          equal
 *   priority=1..32               single mode: handling priority (default: the host priority)
 *   timeout=N[m|s]               extended affinity: N minutes (N s with the s suffix); 0, off
 */
export function parsePortRule(spec: string): PortRule {
  const r = defaultRule();
  const seen = new Set<string>();
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new PortRuleError(`"${part}" is not KEY=VALUE (keys: ${RULE_KEYS.join(', ')})`);
    const key = part.slice(0, eq).trim().toLowerCase();
    const val = part
      .slice(eq + 1)
      .trim()
      .toLowerCase();
    if (!(RULE_KEYS as readonly string[]).includes(key)) throw new PortRuleError(`unknown key "${key}" (keys: ${RULE_KEYS.join(', ')})`);
    if (seen.has(key)) throw new PortRuleError(`"${key}" is given twice`);
    seen.add(key);
    switch (key) {
      case 'ports': {
        const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(val);
        const a = m ? Number(m[1]) : NaN,
          b = m ? Number(m[2] ?? m[1]) : NaN;
        if (!m || a > 65535 || b > 65535 || a > b) throw new PortRuleError(`ports must be START or START-END with 0 <= START <= END <= 65535, not "${val}"`);
        r.start = a;
        r.end = b;
        break;
      }
      case 'proto':
        if (val !== 'tcp' && val !== 'udp' && val !== 'both') throw new PortRuleError(`proto must be tcp, udp or both, not "${val}"`);
        r.protocol = val;
        break;
      case 'mode':
        if (val !== 'multiple' && val !== 'single' && val !== 'disabled') throw new PortRuleError(`mode must be multiple, single or disabled, not "${val}"`);
        r.mode = val;
        break;
      case 'affinity':
        if (val !== 'none' && val !== 'single' && val !== 'network') throw new PortRuleError(`affinity must be none, single or network, not "${val}"`);
        r.affinity = val;
        break;
      case 'weight':
        if (val === 'equal') {
          r.weight = null;
          break;
        }
        if (!/^\d{1,3}$/.test(val) || Number(val) > 100) throw new PortRuleError(`weight must be 0 to 100 or equal, not "${val}"`);
        r.weight = Number(val);
        break;
      case 'priority':
        if (!/^\d{1,2}$/.test(val) || Number(val) < 1 || Number(val) > NLB_MAX_HOSTS)
          throw new PortRuleError(`priority must be 1 to ${NLB_MAX_HOSTS}, not "${val}"`);
        r.priority = Number(val);
        break;
      case 'timeout': {
        const m = /^(\d{1,6})(m|s)?$/.exec(val);
        if (!m) throw new PortRuleError(`timeout must be N minutes (N or Nm) or N seconds (Ns), not "${val}"`);
        const n = Number(m[1]);
        r.timeoutMs = m[2] === 's' ? n * 1000 : n * 60_000;
        break;
      }
    }
  }
  return r;
}

/** Rules must not overlap (Windows refuses overlapping port rules); at most 32 besides the default slot. */
export function checkRules(rules: readonly PortRule[]): void {
  if (rules.length === 0) throw new PortRuleError('at least one port rule is needed');
  if (rules.length > NLB_RULE_SLOTS - 1)
    throw new PortRuleError(`at most ${NLB_RULE_SLOTS - 1} port rules (a heartbeat has ${NLB_RULE_SLOTS} slots, one of them the default host's)`);
  for (let i = 0; i < rules.length; i++) {
    for (let j = i + 1; j < rules.length; j++) {
      const a = rules[i]!,
        b = rules[j]!;
      const protoOverlap = a.protocol === 'both' || b.protocol === 'both' || a.protocol === b.protocol;
      if (protoOverlap && a.start <= b.end && b.start <= a.end) {
        throw new PortRuleError(`port rules ${describeRule(a)} and ${describeRule(b)} overlap`);
      }
    }
  }
}

export function describeRule(r: PortRule): string {
  const w = r.weight === null ? 'equal' : String(r.weight);
  const t = r.timeoutMs === 0 ? '' : `,timeout=${r.timeoutMs % 60_000 === 0 ? `${r.timeoutMs / 60_000}m` : `${r.timeoutMs / 1000}s`}`;
  return `ports=${r.start}-${r.end},proto=${r.protocol},mode=${r.mode},affinity=${r.affinity},weight=${w}${r.priority ? `,priority=${r.priority}` : ''}${t}`;
}

export function checkBuckets(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > NLB_MAX_BUCKETS)
    throw new RangeError(`the bucket count must be 1 to ${NLB_MAX_BUCKETS} (the heartbeat's maps are 64 bits), not ${n}`);
}

// ------------------------------------------------------------------ addresses and MACs

function ipOctets(ip: number): [number, number, number, number] {
  return [(ip >>> 24) & 255, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255];
}

function macOf(bytes: number[]): MacAddr {
  return bytes.reduce((a, b) => a * 256 + b, 0);
}

/** 02-BF-w-x-y-z: the unicast cluster MAC. */
export function unicastClusterMac(clusterIp: number): MacAddr {
  return macOf([0x02, 0xbf, ...ipOctets(clusterIp)]);
}

/** 03-BF-w-x-y-z: the multicast cluster MAC. */
export function multicastClusterMac(clusterIp: number): MacAddr {
  return macOf([0x03, 0xbf, ...ipOctets(clusterIp)]);
}

/** 02-h-w-x-y-z: the source MAC a unicast-mode host sends from (MaskSourceMAC). */
export function maskedSourceMac(clusterIp: number, priority: number): MacAddr {
  return macOf([0x02, priority & 255, ...ipOctets(clusterIp)]);
}

/** 239.255.y.z: the group IGMP multicast mode joins. */
export function igmpGroup(clusterIp: number): number {
  return ((239 << 24) | (255 << 16) | (clusterIp & 0xffff)) >>> 0;
}

/** The MAC that frames to the cluster go to (and ARP answers for the cluster IP). */
export function clusterMac(mode: NlbMode, clusterIp: number): MacAddr {
  if (mode === 'unicast') return unicastClusterMac(clusterIp);
  if (mode === 'multicast') return multicastClusterMac(clusterIp);
  return ipv4MulticastMac(igmpGroup(clusterIp));
}

/**
 * Where heartbeats go (our choice, not public): broadcast in unicast mode (the cluster MAC
 * would be flooded just the same), the cluster's multicast MAC in the multicast modes
 * (every host accepts it; an IGMP-snooping bridge forwards it to the members only).
 */
export function heartbeatMac(mode: NlbMode, clusterIp: number): MacAddr {
  return mode === 'unicast' ? BROADCAST_MAC : clusterMac(mode, clusterIp);
}

export function describeConfig(c: NlbConfig) {
  return {
    clusterIp: `${formatIpv4(c.clusterIp)}/${c.clusterPrefix}`,
    dedicatedIp: formatIpv4(c.dedicatedIp),
    priority: c.priority,
    mode: c.mode,
    buckets: c.buckets,
    hashSeed: c.hashSeed,
    hostName: c.hostName,
    rules: c.rules.map(describeRule),
  };
}
