/**
 * `faultstack run --nlb ...`: the flags that make the stack a Network Load Balancing
 * host, checked into NlbRunOptions (stack/runtime/nlb-setup.ts starts the host).
 *
 *   --nlb CLUSTER_IP[/PREFIX]   the cluster address (prefix: that of --addr)
 *   --nlb-priority N            1-32, unique in the cluster; the lowest is the default host
 *   --nlb-mode MODE             unicast (default), multicast or igmp
 *   --nlb-rule SPEC             a port rule (repeatable); none: one rule for every port
 *   --nlb-stopped               join only on `faultstack nlb start`
 *   --nlb-app mailbox=IP:PORT   the lab's sticky application, with its session directory
 */
import { formatIpv4, parseCidr, parseIpv4, sameSubnet, type Ipv4Cidr } from '../../stack/wire/addr';
import { NLB_MODES, NLB_MAX_HOSTS, PortRuleError, checkRules, parsePortRule, type NlbMode, type PortRule } from '../../stack/nlb/config';
import type { NlbRunOptions } from '../../stack/runtime/options';
import { InvalidValue, integer, oneOf, repeatableFlag, switchFlag, usageError, valueFlag, type CommandSpec, type FlagSet, type Validator } from './args';

const clusterAddress: Validator<{ addr: number; prefix: number | null }> = {
  valid: 'an IPv4 unicast address, optionally with a prefix length, e.g. 198.18.70.100 or 198.18.70.100/24',
  parse(raw) {
    const t = raw.trim();
    const c = t.includes('/') ? parseCidr(t) : null;
    const addr = c ? c.addr : parseIpv4(t);
    if (addr === null || (t.includes('/') && !c)) throw new InvalidValue(`must be ${clusterAddress.valid}`);
    const first = addr >>> 24;
    if (first === 0 || first === 127 || first >= 224)
      throw new InvalidValue(`must be a unicast address (not in 0.0.0.0/8, 127.0.0.0/8 or 224.0.0.0 and above), e.g. 198.18.70.100`);
    if (c && (c.prefix < 1 || c.prefix > 31)) throw new InvalidValue('must have a prefix length from 1 to 31, e.g. 198.18.70.100/24');
    return { addr, prefix: c ? c.prefix : null };
  },
};

const portRuleSpec: Validator<PortRule> = {
  valid: 'a port rule such as "ports=80,proto=tcp,affinity=single,weight=50" (keys ports, proto, mode, affinity, weight, priority, timeout)',
  parse(raw) {
    try {
      return parsePortRule(raw);
    } catch (e) {
      if (e instanceof PortRuleError) throw new InvalidValue(`is not a valid port rule: ${e.message}`);
      throw e;
    }
  },
};

const appSpec: Validator<{ addr: number; port: number }> = {
  valid: "mailbox=IP:PORT, the address of the sticky application's session directory, e.g. mailbox=198.18.70.200:6100",
  parse(raw) {
    const m = /^mailbox=(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(raw.trim());
    const addr = m ? parseIpv4(m[1]!) : null;
    const port = m ? Number(m[2]) : NaN;
    if (!m || addr === null || port < 1 || port > 65535) throw new InvalidValue(`must be ${appSpec.valid}`);
    return { addr, port };
  },
};

/** The flags, spread into `faultstack run`'s. */
export const NLB_RUN_FLAGS = {
  nlb: valueFlag({
    valueName: 'CLUSTER_IP[/PREFIX]',
    help: 'with --tap: be a Network Load Balancing host of this cluster address (docs/nlb.md)',
    ...clusterAddress,
  }),
  'nlb-priority': valueFlag({
    valueName: 'N',
    help: `with --nlb: host priority 1-${NLB_MAX_HOSTS}, unique in the cluster (the lowest is the default host)`,
    ...integer(1, NLB_MAX_HOSTS),
  }),
  'nlb-mode': valueFlag({
    valueName: 'MODE',
    help: 'with --nlb: unicast (02-BF MAC, masked source), multicast (03-BF) or igmp (239.255.x.y)',
    ...oneOf(NLB_MODES),
    default: 'unicast' as NlbMode,
  }),
  'nlb-rule': repeatableFlag({
    valueName: 'SPEC',
    help: 'with --nlb: a port rule, e.g. "ports=80,proto=tcp,affinity=none,weight=30" (repeatable; default: every port, single affinity)',
    ...portRuleSpec,
  }),
  'nlb-stopped': switchFlag('with --nlb: start stopped; the host joins on `faultstack nlb start`'),
  'nlb-app': valueFlag({
    valueName: 'mailbox=IP:PORT',
    help: 'with --nlb: run the sticky application (TCP 6001 on the cluster address) with its session directory at IP:PORT',
    ...appSpec,
  }),
} satisfies FlagSet;

type NlbFlagValues = {
  nlb: { addr: number; prefix: number | null } | undefined;
  'nlb-priority': number | undefined;
  'nlb-mode': NlbMode;
  'nlb-rule': PortRule[];
  'nlb-stopped': boolean;
  'nlb-app': { addr: number; port: number } | undefined;
};

/** Cross-checks the NLB flags; undefined without --nlb. */
export function nlbRunOptions(spec: CommandSpec<FlagSet>, f: NlbFlagValues, link: { tap: boolean; addr: Ipv4Cidr }): NlbRunOptions | undefined {
  if (!f.nlb) {
    for (const [name, given] of [
      ['nlb-priority', f['nlb-priority'] !== undefined],
      ['nlb-rule', f['nlb-rule'].length > 0],
      ['nlb-stopped', f['nlb-stopped']],
      ['nlb-app', f['nlb-app'] !== undefined],
    ] as const) {
      if (given) throw usageError(spec, `--${name} goes with --nlb CLUSTER_IP[/PREFIX]`);
    }
    return undefined;
  }
  if (!link.tap) throw usageError(spec, '--nlb needs --tap NAME (a cluster host is an Ethernet host: every host must see every frame)');
  if (f['nlb-priority'] === undefined) throw usageError(spec, `--nlb needs --nlb-priority N (1 to ${NLB_MAX_HOSTS}, unique in the cluster)`);
  const prefix = f.nlb.prefix ?? link.addr.prefix;
  if (f.nlb.addr === link.addr.addr) throw usageError(spec, `--nlb must differ from --addr (${formatIpv4(link.addr.addr)} is the host's dedicated address)`);
  if (!sameSubnet(f.nlb.addr, link.addr.addr, Math.min(prefix, link.addr.prefix))) {
    throw usageError(
      spec,
      `--nlb ${formatIpv4(f.nlb.addr)} must be in the subnet of --addr (${formatIpv4(link.addr.addr)}/${link.addr.prefix}): the cluster and dedicated addresses share the adapter`,
    );
  }
  const rules = f['nlb-rule'].length > 0 ? f['nlb-rule'] : null;
  if (rules) {
    try {
      checkRules(rules);
    } catch (e) {
      throw usageError(spec, `--nlb-rule: ${(e as Error).message}`);
    }
  }
  return {
    clusterIp: f.nlb.addr,
    clusterPrefix: prefix,
    priority: f['nlb-priority'],
    mode: f['nlb-mode'],
    rules,
    initialState: f['nlb-stopped'] ? 'stopped' : 'started',
    ...(f['nlb-app'] ? { mailbox: { directory: f['nlb-app'] } } : {}),
  };
}
