/**
 * `faultstack run`: validate the flags into the runtime's options (RuntimeOptions,
 * stack/runtime/options.ts), start the stack runtime, print its ready line, and shut it
 * down cleanly on SIGINT/SIGTERM/SIGHUP.
 */
import { STEERINGS, type Steering } from '../../../drivers/tun/steering';
import { hostAddress, outputFile } from '../value-flags';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../../../stack/util/errors';
import { Ipv4Cidr, formatIpv4, parseCidr, parseIpv4, prefixMask, sameSubnet } from '../../../stack/wire/addr';
import { formatMac, isMulticastMac, macFromIpv4, parseMac } from '../../../stack/wire/ethernet';
import {
  InvalidValue,
  defineCommand,
  Validator,
  commaSubset,
  integer,
  keyValue,
  oneOf,
  parseArgs,
  printHelp,
  repeatableFlag,
  requiredFlag,
  switchFlag,
  text,
  usageError,
  valueFlag,
} from '../args';
import { defaultRunDir, socketPath } from '../control-target';
import { ImpairSpecError, parseImpairment } from '../../../stack/impair/spec';
import * as ipsecConfig from '../../../stack/ipsec/config';
import type { IpsecConfig } from '../../../stack/ipsec/config';
import { firewallRule, firewallRunOptions, netnsName } from '../firewall-options';
import { NLB_RUN_FLAGS, nlbRunOptions } from '../nlb-options';
import {
  CONGESTION_CONTROLS,
  CongestionControl,
  DEFAULT_SERVICES,
  RuntimeOptions,
  SERVICE_NAMES,
  StackRuntimeHandle,
  StartStackRuntime,
} from '../../../stack/runtime/options';

/** Linux dev_valid_name(): 1..15 bytes (IFNAMSIZ 16 with NUL), not "." or "..", no '/', ':' or whitespace. */
export const ifname: Validator<string> = {
  valid: 'a Linux interface name: 1 to 15 characters, without "/", ":" or whitespace',
  parse(raw) {
    const bad = (): never => {
      throw new InvalidValue(`must be ${ifname.valid}`);
    };
    if (raw === '' || Buffer.byteLength(raw) > 15 || raw === '.' || raw === '..') bad();
    if (/[/:\s]/.test(raw)) bad();
    return raw;
  },
};

function cidrText(c: Ipv4Cidr): string {
  return `${formatIpv4(c.addr)}/${c.prefix}`;
}

function networkOf(c: Ipv4Cidr): number {
  return (c.addr & prefixMask(c.prefix)) >>> 0;
}

/** Usable host addresses of the subnet: all of a /31, all but network and broadcast otherwise. */
function hostRange(c: Ipv4Cidr): [number, number] {
  const net = networkOf(c);
  const bcast = (net | (~prefixMask(c.prefix) >>> 0)) >>> 0;
  return c.prefix >= 31 ? [net, bcast] : [net + 1, bcast - 1];
}

/** The first usable address of c's subnet other than c itself. */
export function firstOtherHost(c: Ipv4Cidr): Ipv4Cidr {
  const [lo] = hostRange(c);
  return { addr: lo === c.addr ? lo + 1 : lo, prefix: c.prefix };
}

/** An interface address: unicast, prefix 1..31 (room for the host side), not the network or broadcast address. */
export const interfaceCidr: Validator<Ipv4Cidr> = {
  valid: 'an IPv4 address with a prefix length from 1 to 31, e.g. 198.18.0.2/24',
  parse(raw) {
    const c = parseCidr(raw.trim());
    if (!c) throw new InvalidValue(`must be ${interfaceCidr.valid}`);
    if (c.prefix < 1 || c.prefix > 31) {
      throw new InvalidValue(`must have a prefix length from 1 to 31 (the subnet must hold both ends of the TUN link), e.g. 198.18.0.2/24`);
    }
    const first = c.addr >>> 24;
    if (first === 0 || first === 127 || first >= 224) {
      throw new InvalidValue(`must be a unicast address (not in 0.0.0.0/8, 127.0.0.0/8 or 224.0.0.0 and above), e.g. 198.18.0.2/24`);
    }
    const [lo, hi] = hostRange(c);
    if (c.addr < lo || c.addr > hi) {
      throw new InvalidValue(
        `must be a host address, not the network or broadcast address of ${formatIpv4(networkOf(c))}/${c.prefix} (use ${formatIpv4(lo)} to ${formatIpv4(hi)})`,
      );
    }
    return c;
  },
};

/** A MAC address for the stack: six hex octets, unicast (I/G bit clear), not all zero. */
export const macAddress: Validator<number> = {
  valid: 'a unicast MAC address, six hex octets such as 02:00:c6:12:00:02 (first octet even)',
  parse(raw) {
    const m = parseMac(raw);
    if (m === null) throw new InvalidValue(`must be ${macAddress.valid}`);
    if (isMulticastMac(m))
      throw new InvalidValue(`must be a unicast MAC address: ${formatMac(m)} has the group bit set (its first octet is odd), e.g. 02:00:c6:12:00:02`);
    if (m === 0) throw new InvalidValue(`must be a unicast MAC address, not 00:00:00:00:00:00`);
    return m;
  },
};

/** An IPv4 multicast group a host may join (224.0.0.0/4, not the link-local 224.0.0.0/24). */
export const multicastGroup: Validator<number> = {
  valid: 'an IPv4 multicast group in 224.0.1.0 to 239.255.255.255, e.g. 239.255.0.10',
  parse(raw) {
    const a = parseIpv4(raw.trim());
    if (a === null || a >>> 28 !== 0xe) throw new InvalidValue(`must be ${multicastGroup.valid}`);
    if (a >>> 8 === 0xe00000)
      throw new InvalidValue(`must not be in 224.0.0.0/24 (link-local control groups are never reported, RFC 2236 6), e.g. 239.255.0.10`);
    return a;
  },
};

/** A subnet, any prefix length from 1 to 32 (its host bits are ignored). */
export const subnetCidr: Validator<Ipv4Cidr> = {
  valid: 'an IPv4 subnet with a prefix length from 1 to 32, e.g. 198.18.10.0/24',
  parse(raw) {
    const c = parseCidr(raw.trim());
    if (!c || c.prefix < 1) throw new InvalidValue(`must be ${subnetCidr.valid}`);
    const first = c.addr >>> 24;
    if (first === 0 || first === 127 || first >= 224)
      throw new InvalidValue(`must be a unicast subnet (not in 0.0.0.0/8, 127.0.0.0/8 or 224.0.0.0 and above), e.g. 198.18.10.0/24`);
    return { addr: (c.addr & prefixMask(c.prefix)) >>> 0, prefix: c.prefix };
  },
};

/** An impairment spec (stack/impair/spec.ts), checked here so a bad one never starts a stack. */
export const impairSpec: Validator<string> = {
  valid: 'an impairment such as "out loss 3% delay 20ms" or "downstream --port 80 latency latency=100"',
  parse(raw) {
    try {
      parseImpairment(raw);
    } catch (e) {
      if (e instanceof ImpairSpecError) throw new InvalidValue(`is not a valid impairment: ${e.message}`);
      throw e;
    }
    return raw.trim();
  },
};

/** A file to read: it must exist. */
export const inputFile: Validator<string> = {
  valid: 'an existing file',
  parse(raw) {
    const abs = path.resolve(raw);
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(abs);
    } catch {
      /* missing */
    }
    if (!st || !st.isFile()) throw new InvalidValue(`must be an existing file (${abs} ${st ? 'is not a regular file' : 'does not exist'})`);
    return abs;
  },
};

/** A directory to write into: it may not exist yet, its parent must. */
export const outputDir: Validator<string> = {
  valid: 'a directory path whose parent exists',
  parse(raw) {
    if (raw === '') throw new InvalidValue('must be a directory path, not empty');
    const abs = path.resolve(raw);
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(abs);
    } catch {
      /* created at start */
    }
    if (st && !st.isDirectory()) throw new InvalidValue(`must be a directory (${abs} is a file)`);
    if (!st) {
      let pst: fs.Stats | undefined;
      try {
        pst = fs.statSync(path.dirname(abs));
      } catch {
        /* missing */
      }
      if (!pst || !pst.isDirectory()) throw new InvalidValue(`must be a directory path whose parent exists (${path.dirname(abs)} does not exist)`);
    }
    return abs;
  },
};

/** --web [ADDR:]PORT: an IPv4 address (default 127.0.0.1) and a TCP port (0: any free one, printed in the ready line). */
export const webAddress: Validator<{ host: string; port: number }> = {
  valid: '[ADDR:]PORT: a TCP port from 0 to 65535, optionally after an IPv4 address, e.g. 8080 or 127.0.0.1:8080 (default address 127.0.0.1)',
  parse(raw) {
    const m = /^(?:(\d+\.\d+\.\d+\.\d+|localhost):)?(\d{1,5})$/.exec(raw.trim());
    const port = m ? Number(m[2]) : NaN;
    if (!m || port > 65535) throw new InvalidValue(`must be ${webAddress.valid}`);
    const host = m[1] === undefined || m[1] === 'localhost' ? '127.0.0.1' : m[1];
    if (parseIpv4(host) === null) throw new InvalidValue(`must be ${webAddress.valid} ("${m[1]}" is not an IPv4 address)`);
    return { host, port };
  },
};

/** --web-token: what a client sends as `Authorization: Bearer TOKEN`. */
export const webToken: Validator<string> = {
  valid: 'a token of 16 to 256 characters from A-Z a-z 0-9 - _ . ~',
  parse(raw) {
    if (!/^[A-Za-z0-9._~-]{16,256}$/.test(raw)) throw new InvalidValue(`must be ${webToken.valid}`);
    return raw;
  },
};

export const RUN_SPEC = defineCommand({
  name: 'run',
  summary: 'Start the userspace stack on a TUN device (or a TAP device, --tap) and serve until SIGINT or SIGTERM.',
  details: [
    'Prints one line containing "ready" once the device is up and the services listen.',
    'Control it from another shell with `faultstack stats`, `faultstack fault set ...` and friends.',
  ].join('\n'),
  flags: {
    tun: valueFlag({ valueName: 'NAME', help: 'TUN device name', ...ifname, defaultText: 'fs0 (unless --tap)' }),
    tap: valueFlag({ valueName: 'NAME', help: 'a TAP device (Ethernet: ARP, neighbours, IGMP) in place of --tun', ...ifname }),
    bridge: valueFlag({ valueName: 'BR', help: 'with --tap: make the TAP a port of this Linux bridge (created if absent, then removed at exit)', ...ifname }),
    mac: valueFlag({ valueName: 'MAC', help: "with --tap: the stack's MAC address", defaultText: '02:00 and the four octets of --addr', ...macAddress }),
    gateway: valueFlag({ valueName: 'IP', help: 'with --tap: default route via this neighbour (in the subnet of --addr)', ...hostAddress }),
    'proxy-arp': repeatableFlag({ valueName: 'IP/PREFIX', help: 'with --tap: answer ARP for every host of this subnet and serve it', ...subnetCidr }),
    promiscuous: switchFlag('with --tap: take every frame on the segment, not only those to our MAC addresses'),
    join: repeatableFlag({
      valueName: 'GROUP',
      help: 'with --tap: join this IPv4 multicast group (IGMPv2 reports, frames to its MAC taken)',
      ...multicastGroup,
    }),
    addr: requiredFlag(valueFlag({ valueName: 'IP/PREFIX', help: "the stack's address", ...interfaceCidr })),
    'host-addr': valueFlag({
      valueName: 'IP/PREFIX',
      help: 'kernel side of the TUN link, same subnet as --addr',
      defaultText: 'first other host address of the subnet',
      ...interfaceCidr,
    }),
    mtu: valueFlag({ valueName: 'N', help: 'link MTU in bytes', ...integer(68, 65535), default: 1500 }),
    'no-host-config': switchFlag('use an existing TUN device as it is: set no address, MTU or up state on its kernel side'),
    services: valueFlag({
      valueName: 'LIST',
      help: `services to run: ${SERVICE_NAMES.join(', ')}, all, or none`,
      ...commaSubset(SERVICE_NAMES, SERVICE_NAMES, { none: true }),
      default: [...DEFAULT_SERVICES],
      defaultText: DEFAULT_SERVICES.join(','),
    }),
    pcap: valueFlag({
      valueName: 'FILE',
      help: 'write every packet to this pcap file, as the stack sees it (before out impairments, after in ones)',
      ...outputFile,
    }),
    'pcap-snaplen': valueFlag({ valueName: 'N', help: 'bytes of each packet to capture (headers only: 128)', ...integer(64, 262144), default: 262144 }),
    'pcap-size': valueFlag({
      valueName: 'MB',
      help: 'start a new capture file when one is larger than MB million bytes: FILE, FILE1, ... (tcpdump -C)',
      ...integer(1, 1_000_000),
    }),
    'pcap-files': valueFlag({
      valueName: 'N',
      help: 'with --pcap-size: keep N files FILE0..FILE{N-1}, overwriting the oldest (tcpdump -W)',
      ...integer(1, 100_000),
    }),
    'pcap-wire': valueFlag({
      valueName: 'FILE',
      help: 'write every packet to this pcap file as the device carries it: IP packets on TUN, Ethernet frames (ARP, IGMP) on TAP (after out impairments, before in ones)',
      ...outputFile,
    }),
    impair: repeatableFlag({
      valueName: 'SPEC',
      help: 'add an impairment at start, e.g. "out --dport 80 loss 3% delay 20ms" (faultstack impair --help)',
      ...impairSpec,
    }),
    control: valueFlag({ valueName: 'PATH', help: 'control socket', defaultText: `${defaultRunDir()}/<tun>.sock`, ...socketPath }),
    fault: repeatableFlag({ valueName: 'ID=MODE', help: 'set a fault mode at start, e.g. 903927=buggy', ...keyValue('ID', 'MODE', '903927=buggy') }),
    param: repeatableFlag({
      valueName: 'NAME=VALUE',
      help: 'set a parameter at start, e.g. SynAttackProtect=2',
      ...keyValue('NAME', 'VALUE', 'SynAttackProtect=2'),
    }),
    profile: valueFlag({ valueName: 'NAME', help: 'start from a named fault profile', ...text('a profile name') }),
    offloads: valueFlag({ valueName: 'on|off', help: 'TUN segmentation/checksum offloads', ...oneOf(['on', 'off'] as const), default: 'on' }),
    gro: valueFlag({
      valueName: 'on|off',
      help: 'with --offloads off: join the TCP segments of a flow that arrive together into one before the stack sees them (receive coalescing)',
      ...oneOf(['on', 'off'] as const),
      default: 'on',
    }),
    'tx-thread': valueFlag({
      valueName: 'on|off',
      help: "with offloads on: TCP's large segments are written to the device by a native thread beside the stack's (the kernel's work behind each write runs there)",
      ...oneOf(['on', 'off'] as const),
      default: 'on',
    }),
    queues: valueFlag({ valueName: 'N', help: 'TUN queues', ...integer(1, 8), default: 1 }),
    shards: switchFlag('one stack shard per queue, each in a worker thread (needs --queues 2 or more)'),
    'shard-steer': valueFlag({
      valueName: 'client|kernel',
      help: "with --shards: which queue a packet takes: by the peer's address (all of a client's connections and the ICMP errors about them on one shard) or the kernel's flow hash",
      ...oneOf(STEERINGS),
      default: 'client' as Steering,
    }),
    'busy-poll': switchFlag('read the TUN device in a loop instead of sleeping in epoll: lower latency, one core kept busy (TUN, one thread)'),
    cc: valueFlag({
      valueName: 'NAME',
      help: 'TCP congestion control: newreno or cubic',
      ...oneOf(CONGESTION_CONTROLS),
      default: 'cubic' as CongestionControl,
    }),
    events: valueFlag({ valueName: 'FILE', help: 'append events to this JSONL file', ...outputFile }),
    json: switchFlag('print the ready line as JSON'),
    ipsec: valueFlag({ valueName: 'FILE', help: 'IPsec: identities, keys, proposals, selectors (YAML; see docs/ipsec.md)', ...inputFile }),
    'ipsec-psk': repeatableFlag({
      valueName: '[ID=]SECRET',
      help: 'IPsec pre-shared key for identity ID (any identity without ID=)',
      ...text('[ID=]SECRET, e.g. client1@lab=labsecret'),
    }),
    'ipsec-keylog': valueFlag({ valueName: 'DIR', help: 'write SA keys as Wireshark tables here (WIRESHARK_CONFIG_DIR=DIR tshark ...)', ...outputDir }),
    'host-netns': valueFlag({ valueName: 'NS', help: "move the TUN device's kernel side into this network namespace (a host of its own)", ...netnsName }),
    'external-tun': valueFlag({
      valueName: 'NAME',
      help: 'firewall: the external interface, a second TUN device (the --tun one is the internal interface)',
      ...ifname,
    }),
    'external-addr': valueFlag({ valueName: 'IP/PREFIX', help: "firewall: the external interface's address", ...interfaceCidr }),
    'external-host-addr': valueFlag({
      valueName: 'IP/PREFIX',
      help: "firewall: the external TUN's kernel side",
      defaultText: 'first other host address of the subnet',
      ...interfaceCidr,
    }),
    'external-mtu': valueFlag({ valueName: 'N', help: 'firewall: the external link MTU', ...integer(68, 65535) }),
    'external-host-netns': valueFlag({ valueName: 'NS', help: "firewall: move the external TUN's kernel side into this network namespace", ...netnsName }),
    'external-pcap': valueFlag({ valueName: 'FILE', help: 'firewall: write every packet of the external interface to this pcap file', ...outputFile }),
    'fw-rule': repeatableFlag({ valueName: 'RULE', help: 'firewall: a packet-filter rule, e.g. "allow in icmp" (docs/firewall.md)', ...firewallRule }),
    web: valueFlag({
      valueName: '[ADDR:]PORT',
      help: 'serve the HTTP API, /metrics and the web view here (host side, default address 127.0.0.1; docs/api.md)',
      ...webAddress,
    }),
    'web-token': valueFlag({ valueName: 'TOKEN', help: 'with --web: require this token (off localhost one is made and printed when not given)', ...webToken }),
    ...NLB_RUN_FLAGS,
  },
});

/** --ipsec and --ipsec-psk into one configuration; a bad file or key is a usage error naming it. */
function ipsecOptions(file: string | undefined, psks: string[]): IpsecConfig | undefined {
  if (!file && psks.length === 0) return undefined;
  const c = ipsecConfig;
  let cfg: IpsecConfig;
  try {
    cfg = file ? c.loadIpsecConfig(file) : c.defaultConfig();
  } catch (e) {
    if (e instanceof c.IpsecConfigError) throw usageError(spec, `--ipsec ${e.message}`);
    throw usageError(spec, `--ipsec ${file}: ${(e as Error).message}`);
  }
  for (const raw of psks) {
    try {
      cfg.peers.push(c.pskPeer(raw));
    } catch (e) {
      throw usageError(
        spec,
        `--ipsec-psk must be [ID=]SECRET with ID an identity (client1@lab, host.example, 198.18.50.1) and a non-empty SECRET: ${(e as Error).message}`,
      );
    }
  }
  if (cfg.peers.length === 0) throw usageError(spec, `--ipsec ${file}: no peers: add a peers: list (id and psk) or --ipsec-psk [ID=]SECRET`);
  return cfg;
}

const spec = RUN_SPEC;

/** Parses and cross-checks `run` flags; null when --help was asked for. */
export function buildRunOptions(argv: readonly string[]): RuntimeOptions | null {
  const p = parseArgs(spec, argv);
  if (p.help) return null;
  const f = p.flags;
  const addr = f.addr;
  const tap = f.tap !== undefined;
  if (tap && f.tun !== undefined) throw usageError(spec, `give --tun or --tap, not both (--tun ${f.tun}, --tap ${f.tap})`);
  if (!tap) {
    for (const [name, given] of [
      ['bridge', f.bridge !== undefined],
      ['mac', f.mac !== undefined],
      ['gateway', f.gateway !== undefined],
      ['proxy-arp', f['proxy-arp'].length > 0],
      ['promiscuous', f.promiscuous],
      ['join', f.join.length > 0],
    ] as const) {
      if (given) throw usageError(spec, `--${name} needs --tap NAME (a TUN device carries IP packets, no Ethernet frames)`);
    }
  }
  const device = f.tap ?? f.tun ?? 'fs0';
  if (f.bridge !== undefined && f.bridge === device) throw usageError(spec, `--bridge must name a bridge, not the TAP device itself (both are "${device}")`);
  if (f.bridge !== undefined && f['host-addr'] !== undefined) {
    throw usageError(
      spec,
      `--host-addr does not go with --bridge: a bridge port carries no address (give the bridge, or a veth in it, an address of ${formatIpv4(networkOf(addr))}/${addr.prefix})`,
    );
  }
  if (f.gateway !== undefined) {
    const subnet = `${formatIpv4(networkOf(addr))}/${addr.prefix}`;
    if (!sameSubnet(f.gateway, addr.addr, addr.prefix))
      throw usageError(spec, `--gateway must be a neighbour in the subnet of --addr (${subnet}), got "${formatIpv4(f.gateway)}"`);
    const [lo, hi] = hostRange(addr);
    if (f.gateway === addr.addr || f.gateway < lo || f.gateway > hi)
      throw usageError(
        spec,
        `--gateway must be another host of ${subnet} than --addr (${formatIpv4(lo)} to ${formatIpv4(hi)}), got "${formatIpv4(f.gateway)}"`,
      );
  }
  let hostAddr: Ipv4Cidr | null;
  const defaulted = f['host-addr'] === undefined;
  if (f.bridge !== undefined) {
    hostAddr = null;
  } else if (f['host-addr'] === undefined) {
    hostAddr = firstOtherHost(addr);
  } else {
    hostAddr = f['host-addr'];
    const subnet = `${formatIpv4(networkOf(addr))}/${addr.prefix}`;
    const suggestion = cidrText(firstOtherHost(addr));
    if (hostAddr.prefix !== addr.prefix) {
      throw usageError(spec, `--host-addr must have the same prefix length as --addr (/${addr.prefix}), got "${cidrText(hostAddr)}"; e.g. ${suggestion}`);
    }
    if (!sameSubnet(hostAddr.addr, addr.addr, addr.prefix)) {
      throw usageError(spec, `--host-addr must be in the subnet of --addr (${subnet}), got "${cidrText(hostAddr)}"; e.g. ${suggestion}`);
    }
    if (hostAddr.addr === addr.addr) {
      throw usageError(spec, `--host-addr must differ from --addr (both are ${formatIpv4(addr.addr)}); pick another address in ${subnet}, e.g. ${suggestion}`);
    }
  }
  const control = f.control ?? socketPath.parse(path.join(defaultRunDir(), `${device}.sock`));
  if (f.shards && tap)
    throw usageError(
      spec,
      '--shards runs on a TUN device only (a TAP device has one neighbour table and ARP for all its queues); drop --shards, --queues N still works',
    );
  if (!f.shards && f['shard-steer'] !== 'client') throw usageError(spec, '--shard-steer goes with --shards');
  if (f.shards && f.queues < 2) {
    throw usageError(spec, `--shards needs --queues 2 or more (one shard per queue), got --queues ${f.queues}`);
  }
  if (f.shards && f.pcap) throw usageError(spec, '--shards cannot be combined with --pcap');
  if (f['busy-poll'] && (f.shards || tap)) throw usageError(spec, '--busy-poll polls one TUN device from one thread: drop --shards and --tap');
  if (f.shards && f.services.includes('mtls')) throw usageError(spec, '--shards runs the plain services only; drop mtls from --services');
  if (f.shards && f.impair.length > 0) throw usageError(spec, '--impair needs one stack thread: drop --shards (impairments are not sharded)');
  if (f.pcap && f['pcap-wire'] && f.pcap === f['pcap-wire']) {
    throw usageError(spec, `--pcap and --pcap-wire must be different files, both are "${f.pcap}"`);
  }
  if (f.shards && f['pcap-wire']) throw usageError(spec, '--shards cannot be combined with --pcap-wire');
  const noHost = f['no-host-config'];
  if (noHost && !defaulted) throw usageError(spec, '--no-host-config leaves the kernel side as it is: give --host-addr only without it');
  if (noHost && argv.some((a) => a === '--mtu' || a.startsWith('--mtu='))) {
    throw usageError(spec, "--no-host-config uses the device's own MTU: set it with `ip link set dev NAME mtu N`, or drop --no-host-config");
  }
  if ((f['pcap-size'] !== undefined || f['pcap-files'] !== undefined) && !f.pcap) throw usageError(spec, '--pcap-size and --pcap-files go with --pcap FILE');
  if (f['pcap-files'] !== undefined && f['pcap-size'] === undefined)
    throw usageError(spec, '--pcap-files N needs --pcap-size MB (the size at which a file is full), as tcpdump -W needs -C');
  const ipsec = ipsecOptions(f.ipsec, f['ipsec-psk']);
  if (f['ipsec-keylog'] && !ipsec) throw usageError(spec, '--ipsec-keylog needs --ipsec FILE or --ipsec-psk [ID=]SECRET');
  if (ipsec && f.shards) throw usageError(spec, '--ipsec runs in one thread: drop --shards');
  const firewall = firewallRunOptions(f, spec, { device, addr, tap, shards: f.shards, ipsec: ipsec !== undefined, hostConfig: !noHost });
  if (f['host-netns'] !== undefined && noHost) throw usageError(spec, '--host-netns configures the kernel side in that namespace: drop --no-host-config');
  if (f['host-netns'] !== undefined && (tap || f.shards)) throw usageError(spec, '--host-netns moves a TUN device: it does not go with --tap or --shards');
  const nlb = nlbRunOptions(spec, f, { tap, addr });
  if (f['web-token'] !== undefined && f.web === undefined) throw usageError(spec, '--web-token goes with --web [ADDR:]PORT');
  if (f.pcap && f.events && f.pcap === f.events) {
    throw usageError(spec, `--pcap and --events must be different files, both are "${f.pcap}"`);
  }
  return {
    tun: device,
    ...(tap
      ? {
          link: 'tap' as const,
          bridge: f.bridge,
          mac: f.mac ?? macFromIpv4(addr.addr),
          gateway: f.gateway,
          proxyArp: f['proxy-arp'],
          promiscuous: f.promiscuous,
          join: [...new Set(f.join)],
        }
      : {}),
    addr,
    hostAddr,
    hostAddrDefaulted: defaulted,
    hostConfig: !noHost,
    mtu: f.mtu,
    services: f.services,
    pcap: f.pcap,
    pcapWire: f['pcap-wire'],
    impair: f.impair,
    pcapSnaplen: f['pcap-snaplen'],
    ...(f['pcap-size'] !== undefined ? { pcapSizeMB: f['pcap-size'] } : {}),
    ...(f['pcap-files'] !== undefined ? { pcapFiles: f['pcap-files'] } : {}),
    control,
    faults: f.fault.map((kv) => ({ id: kv.key, mode: kv.value })),
    params: f.param.map((kv) => ({ name: kv.key, value: kv.value })),
    profile: f.profile,
    offloads: f.offloads === 'on',
    ...(f.gro === 'off' ? { gro: false } : {}),
    ...(f['tx-thread'] === 'off' ? { txThread: false } : {}),
    queues: f.queues,
    shards: f.shards,
    ...(f.shards ? { shardSteer: f['shard-steer'] } : {}),
    ...(f['busy-poll'] ? { busyPoll: true } : {}),
    cc: f.cc,
    events: f.events,
    json: f.json,
    ...(ipsec ? { ipsec } : {}),
    ...(f['ipsec-keylog'] ? { ipsecKeylog: f['ipsec-keylog'] } : {}),
    ...(f['host-netns'] !== undefined ? { hostNetns: f['host-netns'] } : {}),
    ...(firewall ? { firewall } : {}),
    ...(nlb ? { nlb } : {}),
    ...(f.web ? { web: { ...f.web, ...(f['web-token'] !== undefined ? { token: f['web-token'] } : {}) } } : {}),
  };
}

const SHUTDOWN_GRACE_MS = 10_000;

function loadRuntime(): StartStackRuntime {
  try {
    // Lazy: `faultstack stats` and friends never pay for loading the whole stack.

    const mod = require('../../../stack/runtime/run') as { startStackRuntime?: StartStackRuntime };
    if (typeof mod.startStackRuntime !== 'function') throw new Error('stack/runtime/run does not export startStackRuntime');
    return mod.startStackRuntime;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'MODULE_NOT_FOUND' && /stack[\\/]runtime[\\/]run/.test(err.message.split('\n')[0] ?? '')) {
      throw new Error('the stack runtime is not built (stack/runtime/run.js is missing): run `make build`', { cause: e });
    }
    throw e;
  }
}

export async function run(argv: string[]): Promise<number> {
  const opts = buildRunOptions(argv);
  if (!opts) return printHelp(spec);
  const start = loadRuntime();

  // Signals are handled from the start: one that arrives while the stack is still
  // starting shuts it down as soon as it is up, instead of killing us half-configured.
  let onSignal: (sig: NodeJS.Signals) => void = () => {
    pendingSignal = true;
  };
  let pendingSignal = false;
  const handler = (sig: NodeJS.Signals) => onSignal(sig);
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const sig of signals) process.on(sig, handler);
  const removeHandlers = () => {
    for (const sig of signals) process.off(sig, handler);
  };

  let handle: StackRuntimeHandle;
  try {
    handle = await start(opts);
  } catch (e) {
    removeHandlers();
    if (e instanceof UsageError) throw e;
    const err = new Error(`cannot start the stack on ${opts.tun}: ${(e as Error)?.message ?? String(e)}`);
    (err as Error & { cause?: unknown }).cause = e;
    if (e instanceof Error && e.stack) err.stack = `${err.message}\n${e.stack}`;
    throw err;
  }
  const line = handle.readyLine.endsWith('\n') ? handle.readyLine : handle.readyLine + '\n';
  process.stdout.write(line);

  const code = await new Promise<number>((resolve) => {
    let stopping = false;
    const fail = (what: string, e: unknown) => {
      process.stderr.write(`faultstack run: ${what}: ${(e as Error)?.message ?? String(e)}\n`);
      resolve(1);
    };
    onSignal = (sig) => {
      if (stopping) {
        process.stderr.write(`faultstack run: second ${sig} during shutdown, exiting now\n`);
        resolve(1);
        return;
      }
      stopping = true;
      const timer = setTimeout(() => fail('shutdown', new Error(`did not finish within ${SHUTDOWN_GRACE_MS / 1000} s`)), SHUTDOWN_GRACE_MS);
      timer.unref();
      handle.shutdown().then(
        () => {
          clearTimeout(timer);
          resolve(0);
        },
        (e) => {
          clearTimeout(timer);
          fail('shutdown failed', e);
        },
      );
    };
    handle.closed.then(
      () => {
        if (!stopping) process.stderr.write('faultstack run: the stack stopped\n');
        resolve(0);
      },
      (e) => fail('the stack stopped with an error', e),
    );
    if (pendingSignal) onSignal('SIGTERM');
  });
  removeHandlers();
  return code;
}
