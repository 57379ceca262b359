/**
 * The stack runtime's own options (what stack/runtime/run.ts starts from). The runtime
 * owns this type; `faultstack run` (bin/cli/commands/run.ts) builds a value of it from
 * its flags, already validated: addresses parsed, paths absolute, defaults filled in.
 * Fault and parameter assignments stay raw strings here: the fault table owns their
 * meaning.
 */
import type { Steering } from '../../drivers/tun/steering';
import type { Ipv4Cidr } from '../wire/addr';
import type { IpsecConfig } from '../ipsec/config';
import type { NlbMode, PortRule } from '../nlb/config';

export const SERVICE_NAMES = ['echo', 'discard', 'chargen', 'http', 'iperf3', 'mtls'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];
/** mtls needs certificates (`faultstack certs`), so it is opt-in. */
export const DEFAULT_SERVICES: readonly ServiceName[] = SERVICE_NAMES.filter((s) => s !== 'mtls');

export const CONGESTION_CONTROLS = ['newreno', 'cubic'] as const;
export type CongestionControl = (typeof CONGESTION_CONTROLS)[number];

export interface FaultAssignment {
  /** As typed: a KB number ("903927") or an alias ("synprotect-leak"). */
  id: string;
  /** As typed: normally off, buggy or hotfixed. */
  mode: string;
}

export interface ParamAssignment {
  /** Registry-style name as typed, e.g. "SynAttackProtect". */
  name: string;
  value: string;
}

export interface RuntimeOptions {
  /** Device name (valid Linux ifname): the TUN device, or with link 'tap' the TAP device. */
  tun: string;
  /**
   * 'tun' (default): a TUN device, raw IPv4. 'tap' (--tap NAME): a TAP device, Ethernet
   * frames, with ARP, a neighbour table and IGMP (stack/iface/ethernet.ts).
   */
  link?: 'tun' | 'tap';
  /** --bridge BR (TAP only): the TAP becomes a port of this bridge, created when absent. */
  bridge?: string;
  /** --mac (TAP only): the stack's MAC; default 02:00 + the four octets of --addr. */
  mac?: number;
  /** --gateway (TAP only): the default route's next hop; absent: every destination is on-link. */
  gateway?: number;
  /** --proxy-arp (TAP only): subnets whose every host address the stack answers ARP for and serves. */
  proxyArp?: Ipv4Cidr[];
  /** --promiscuous (TAP only): take every frame, not only those addressed to us. */
  promiscuous?: boolean;
  /** --join (TAP only): IPv4 multicast groups joined at start (IGMPv2). */
  join?: number[];
  /** The stack's own address and prefix (--addr). */
  addr: Ipv4Cidr;
  /**
   * The kernel side of the TUN device (--host-addr): same prefix length, same subnet,
   * different address. When the flag is absent: the first usable address of the
   * subnet that is not --addr (198.18.0.1 for --addr 198.18.0.2/24). With --tap it is the
   * address of the TAP's kernel side (a point-to-point Ethernet link); with --bridge there
   * is none (a bridge port carries no address): null.
   */
  hostAddr: Ipv4Cidr | null;
  hostAddrDefaulted: boolean;
  /**
   * Configure the kernel side (host address, MTU, up) and undo it on exit on a device
   * that existed before (default true); false (--no-host-config): use the device as it
   * is, touching nothing of it.
   */
  hostConfig?: boolean;
  mtu: number;
  /** Deduplicated, in SERVICE_NAMES order. */
  services: ServiceName[];
  /** Absolute path; its directory exists. The stack's side of the impairments (what it sent and got). */
  pcap?: string;
  /** Absolute path; the TUN side of the impairments (what the kernel got and sent). */
  pcapWire?: string;
  /** Impairments to add at start, each a validated spec string (stack/impair/spec.ts). */
  impair?: string[];
  /** Bytes of each packet the capture keeps (default 262144: all). */
  pcapSnaplen?: number;
  /** Rotate the capture when a file is larger than this many million bytes (tcpdump -C). */
  pcapSizeMB?: number;
  /** With pcapSizeMB: a ring of at most this many files (tcpdump -W). */
  pcapFiles?: number;
  /** Absolute path of the control socket (default <FAULTSTACK_RUN_DIR or /run/faultstack>/<tun>.sock). */
  control: string;
  /** In command-line order; later assignments to the same fault win. */
  faults: FaultAssignment[];
  /** In command-line order; later assignments to the same name win. */
  params: ParamAssignment[];
  profile?: string;
  offloads: boolean;
  /** --gro off: no receive coalescing in the TUN addon with offloads off (TunOpenOptions.gro); on when absent. */
  gro?: boolean;
  /** --tx-thread off: every write from the stack's thread (TunOpenOptions.txThread); on when absent. */
  txThread?: boolean;
  queues: number;
  /** One stack shard per queue, each in its own worker thread (needs queues >= 2). */
  shards: boolean;
  /** With shards: which queue the kernel's packets take (drivers/tun/steering.ts); client when absent. */
  shardSteer?: Steering;
  /** --busy-poll: read the TUN queues in a loop instead of waiting for epoll (lower latency, a core busy). */
  busyPoll?: boolean;
  cc: CongestionControl;
  /** Absolute path of a JSONL event log; its directory exists. */
  events?: string;
  /** Print the ready line (and anything else machine-facing) as JSON. */
  json: boolean;
  /** IPsec (--ipsec FILE and/or --ipsec-psk), validated; absent: no IPsec. */
  ipsec?: IpsecConfig;
  /** Absolute path of the Wireshark key directory (--ipsec-keylog DIR). */
  ipsecKeylog?: string;
  /** --host-netns: the TUN device's kernel side goes into this network namespace. */
  hostNetns?: string;
  /** --external-tun and friends: faultstack as a firewall between two interfaces (stack/firewall/). */
  firewall?: FirewallRunOptions;
  /** --nlb and friends (TAP only): a Network Load Balancing host (bin/cli/nlb-options.ts). */
  nlb?: NlbRunOptions;
  /** --web [ADDR:]PORT and --web-token: the HTTP API and web view (stack/runtime/web.ts); absent: none. */
  web?: { host: string; port: number; token?: string };
}

/** What startStackRuntime gives back: a running stack (one thread or sharded). */
export interface StackRuntimeHandle {
  /** Printed by `run` on stdout; contains the word "ready" (tests wait for it). */
  readyLine: string;
  /** Settles when the stack has stopped (by shutdown() or by itself). */
  closed: Promise<void>;
  shutdown(): Promise<void>;
}
export type StartStackRuntime = (opts: RuntimeOptions) => Promise<StackRuntimeHandle>;

/** What `run` needs from the firewall part of RunOptions (bin/cli/firewall-options.ts builds it; stack/runtime/firewall-setup.ts starts it). */
export interface FirewallRunOptions {
  tun: string;
  addr: { addr: number; prefix: number };
  hostAddr: { addr: number; prefix: number } | null;
  hostNetns?: string;
  mtu: number;
  rules: string[];
  pcap?: string;
}

/** What `run` needs to make the stack an NLB host (bin/cli/nlb-options.ts builds it; stack/runtime/nlb-setup.ts starts it). */
export interface NlbRunOptions {
  clusterIp: number;
  clusterPrefix: number;
  priority: number;
  mode: NlbMode;
  /** null: one rule for every port, with the NlbAffinity parameter's affinity. */
  rules: PortRule[] | null;
  initialState: 'started' | 'stopped';
  /** The sticky application (stack/services/mailbox.ts) and its session directory. */
  mailbox?: { directory: { addr: number; port: number } };
}
