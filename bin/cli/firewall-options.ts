/**
 * The firewall flags of `faultstack run` (stack/firewall/, stack/runtime/firewall-setup.ts):
 * their validators and the cross-checks that turn them into RunOptions.firewall.
 *
 *   --external-tun NAME --external-addr IP/PREFIX [--external-host-addr IP/PREFIX]
 *   [--external-mtu N] [--external-host-netns NS] [--external-pcap FILE] [--fw-rule RULE]...
 *   --host-netns NS     (the --tun device's kernel side, any run)
 */
import * as fs from 'node:fs';
import type { Ipv4Cidr } from '../../stack/wire/addr';
import { formatIpv4, prefixMask, sameSubnet } from '../../stack/wire/addr';
import { RuleSyntaxError, parseRule, RULE_SYNTAX } from '../../stack/firewall/rules';
import type { FirewallRunOptions } from '../../stack/runtime/options';
import { InvalidValue, usageError, type Validator } from './args';

/** A network namespace name as `ip netns` makes them (a file under /run/netns). */
export const netnsName: Validator<string> = {
  valid: 'the name of a network namespace made with `ip netns add NAME`',
  parse(raw) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(raw) || raw === '.' || raw === '..')
      throw new InvalidValue(`must be ${netnsName.valid} (letters, digits, ".", "_" or "-")`);
    if (!fs.existsSync(`/run/netns/${raw}`) && !fs.existsSync(`/var/run/netns/${raw}`))
      throw new InvalidValue(`must be an existing network namespace: ${raw} is not one (ip netns add ${raw})`);
    return raw;
  },
};

/** A packet-filter rule (stack/firewall/rules.ts). */
export const firewallRule: Validator<string> = {
  valid: RULE_SYNTAX,
  parse(raw) {
    try {
      return parseRule(raw).text;
    } catch (e) {
      if (e instanceof RuleSyntaxError) throw new InvalidValue(`is not a rule: ${e.message}`);
      throw e;
    }
  },
};

export interface FirewallFlags {
  'external-tun'?: string;
  'external-addr'?: Ipv4Cidr;
  'external-host-addr'?: Ipv4Cidr;
  'external-mtu'?: number;
  'external-host-netns'?: string;
  'external-pcap'?: string;
  'fw-rule': string[];
  'host-netns'?: string;
}

function net(c: Ipv4Cidr): string {
  return `${formatIpv4((c.addr & prefixMask(c.prefix)) >>> 0)}/${c.prefix}`;
}

/** Checks the firewall flags against the rest of the run; undefined when it is no firewall. */
export function firewallRunOptions(
  f: FirewallFlags,
  spec: { name: string },
  ctx: { device: string; addr: Ipv4Cidr; tap: boolean; shards: boolean; ipsec: boolean; hostConfig: boolean },
): FirewallRunOptions | undefined {
  const any =
    f['external-addr'] !== undefined ||
    f['external-host-addr'] !== undefined ||
    f['external-mtu'] !== undefined ||
    f['external-host-netns'] !== undefined ||
    f['external-pcap'] !== undefined ||
    f['fw-rule'].length > 0;
  const tun = f['external-tun'];
  if (tun === undefined) {
    if (any)
      throw usageError(
        spec,
        '--external-addr, --external-host-addr, --external-mtu, --external-host-netns, --external-pcap and --fw-rule go with --external-tun NAME (faultstack as a firewall)',
      );
    return undefined;
  }
  if (ctx.tap) throw usageError(spec, 'a firewall runs on two TUN devices: give --tun NAME with --external-tun, not --tap');
  if (ctx.shards) throw usageError(spec, 'a firewall runs in one thread: drop --shards');
  if (ctx.ipsec) throw usageError(spec, 'a firewall does not run IPsec: drop --ipsec and --ipsec-psk');
  if (!ctx.hostConfig) throw usageError(spec, 'a firewall configures its devices: drop --no-host-config');
  if (tun === ctx.device) throw usageError(spec, `--external-tun must differ from the internal device (both are "${tun}")`);
  const ext = f['external-addr'];
  if (ext === undefined) throw usageError(spec, "--external-tun needs --external-addr IP/PREFIX (the firewall's external address, e.g. 198.19.0.1/24)");
  const a = ctx.addr;
  const overlap = sameSubnet(ext.addr, a.addr, Math.min(ext.prefix, a.prefix));
  if (overlap) throw usageError(spec, `--external-addr ${net(ext)} and --addr ${net(a)} overlap: the two interfaces need separate networks`);
  let hostAddr: Ipv4Cidr | null = f['external-host-addr'] ?? null;
  if (hostAddr === null) {
    const base = (ext.addr & prefixMask(ext.prefix)) >>> 0;
    const first = ext.prefix >= 31 ? base : base + 1;
    hostAddr = { addr: first === ext.addr ? first + 1 : first, prefix: ext.prefix };
  } else {
    if (hostAddr.prefix !== ext.prefix || !sameSubnet(hostAddr.addr, ext.addr, ext.prefix) || hostAddr.addr === ext.addr) {
      throw usageError(
        spec,
        `--external-host-addr must be another address of ${net(ext)} with the same prefix, got "${formatIpv4(hostAddr.addr)}/${hostAddr.prefix}"`,
      );
    }
  }
  if (f['host-netns'] !== undefined && f['host-netns'] === f['external-host-netns']) {
    throw usageError(spec, `--host-netns and --external-host-netns must differ (both are "${f['host-netns']}"): the two networks meet only in the firewall`);
  }
  return {
    tun,
    addr: ext,
    hostAddr,
    mtu: f['external-mtu'] ?? 1500,
    rules: f['fw-rule'],
    ...(f['external-host-netns'] !== undefined ? { hostNetns: f['external-host-netns'] } : {}),
    ...(f['external-pcap'] !== undefined ? { pcap: f['external-pcap'] } : {}),
  };
}
