/**
 * What `faultstack run` hands to the stack runtime (stack/runtime/run.ts), already
 * validated: addresses parsed, paths absolute, defaults filled in. Fault and
 * parameter assignments stay raw strings here: the fault table owns their meaning.
 */
import type { Ipv4Cidr } from '../../stack/wire/addr';
import type { IpsecConfig } from '../../stack/ipsec/config';
import type { NlbRunOptions } from './nlb-options';

export const SERVICE_NAMES = ['echo', 'discard', 'chargen', 'http', 'iperf3', 'mtls'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];
/** mtls needs certificates (`faultstack certs`), so it is opt-in. */
export const DEFAULT_SERVICES: readonly ServiceName[] = SERVICE_NAMES.filter((s) => s !== 'mtls');

export const CONGESTION_CONTROLS = ['newreno', 'cubic'] as const;
export type CongestionControl = (typeof CONGESTION_CONTROLS)[number];

/** Where `run` puts its control socket by default, and where the other commands look for one. */
export function defaultRunDir(): string {
  return process.env.FAULTSTACK_RUN_DIR || '/run/faultstack';
}

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

export interface RunOptions {
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
  queues: number;
  /** One stack shard per queue, each in its own worker thread (needs queues >= 2). */
  shards: boolean;
  cc: CongestionControl;
  /** Absolute path of a JSONL event log; its directory exists. */
  events?: string;
  /** Print the ready line (and anything else machine-facing) as JSON. */
  json: boolean;
  /** IPsec (--ipsec FILE and/or --ipsec-psk), validated; absent: no IPsec. */
  ipsec?: IpsecConfig;
  /** Absolute path of the Wireshark key directory (--ipsec-keylog DIR). */
  ipsecKeylog?: string;
  /** --nlb and friends (TAP only): a Network Load Balancing host (bin/cli/nlb-options.ts). */
  nlb?: NlbRunOptions;
}

/** What stack/runtime/run.ts exports for `faultstack run`. */
export interface StackRuntimeHandle {
  /** Printed by `run` on stdout; contains the word "ready" (tests wait for it). */
  readyLine: string;
  /** Settles when the stack has stopped (by shutdown() or by itself). */
  closed: Promise<void>;
  shutdown(): Promise<void>;
}
export type StartStackRuntime = (opts: RunOptions) => Promise<StackRuntimeHandle>;
