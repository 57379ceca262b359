/**
 * `faultstack run --tap NAME`: the link-layer half of the runtime. The TAP device is
 * opened by run.ts (same addon, same offload probe as TUN); here its kernel side is set
 * up (a bridge port, or an addressed point-to-point link), the EthernetInterface is put
 * between it (or its pcap wrapper) and the stack, and the control plane gets `neigh`.
 *
 *   TAP fd --frames--> [PcapDevice, DLT_EN10MB] --> EthernetInterface --IPv4--> Stack
 */
import type { RuntimeOptions } from './options';
import type { Device } from '../../drivers/device';
import { attachToBridge, ensureBridge, removeBridge } from '../../drivers/tap/index';
import { configureHostSide, type TunDevice } from '../../drivers/tun/index';
import { EthernetInterface, LinkEvent } from '../iface/ethernet';
import type { Scheduler, Stack, StackOptions } from '../stack';
import { formatIpv4 } from '../wire/addr';
import { formatMac, macFromIpv4 } from '../wire/ethernet';
import { EventKind, EventLog } from '../faults/events';

export interface EthernetRuntime {
  eth: EthernetInterface;
  /** Stack options the link implies: only our addresses (and proxied subnets) are ours; the gateway. */
  stackOptions: Partial<StackOptions>;
  /** After the stack exists: next hops from its routes, then the RFC 5227 announcements. */
  attach(stack: Stack): void;
  bridge: { name: string; created: boolean } | null;
  /** For the ready line and `stats`. */
  summary(): { mac: string; bridge: string | null; bridgeCreated: boolean; gateway: string | null };
}

/** The kernel side of the TAP: a port of --bridge (created if absent), or --host-addr on the TAP itself. */
export function setupTapKernelSide(opts: RuntimeOptions, tap: TunDevice): { name: string; created: boolean } | null {
  if (opts.bridge) {
    const b = ensureBridge(opts.bridge);
    try {
      attachToBridge(tap.name, opts.bridge);
    } catch (e) {
      if (b.created) {
        try {
          removeBridge(opts.bridge);
        } catch {
          /* best effort */
        }
      }
      throw e;
    }
    return { name: opts.bridge, ...b };
  }
  configureHostSide(tap.name, {
    ...(opts.hostAddr ? { hostAddr: `${formatIpv4(opts.hostAddr.addr)}/${opts.hostAddr.prefix}` } : {}),
    mtu: opts.mtu,
    up: true,
  });
  return null;
}

export function ethernetRuntime(
  opts: RuntimeOptions,
  lower: Device,
  scheduler: Scheduler,
  events: EventLog,
  bridge: { name: string; created: boolean } | null,
): EthernetRuntime {
  const mac = opts.mac ?? macFromIpv4(opts.addr.addr);
  const eth = new EthernetInterface({
    lower,
    scheduler,
    mac,
    address: opts.addr.addr,
    prefix: opts.addr.prefix,
    promiscuous: opts.promiscuous ?? false,
    proxyArp: (opts.proxyArp ?? []).map((c) => ({ addr: c.addr, prefix: c.prefix })),
    onEvent: (e: LinkEvent) => {
      try {
        if (e.kind === 'arp-conflict') {
          events.emit({
            kind: EventKind.ArpConflict,
            message: `${e.mac} claims our address ${e.address} (RFC 5227 conflict)${e.defended ? '; defended with an ARP announcement' : ''}`,
            data: e,
          });
        } else {
          events.emit({
            kind: EventKind.NeighbourFailed,
            message: `no ARP answer from ${e.address}: ${e.dropped} packet(s) that waited for it reported unreachable (EHOSTUNREACH)`,
            data: { address: e.address, dropped: e.dropped },
          });
        }
      } catch {
        /* the log is closed during shutdown */
      }
    },
  });
  return {
    eth,
    stackOptions: { acceptAnyAddress: false, ownsAddress: (a) => eth.ownsAddress(a), gateway: opts.gateway ?? 0 },
    attach(stack) {
      eth.useRoutes(stack.routes);
      eth.start();
      for (const g of opts.join ?? []) eth.joinGroup(g);
    },
    bridge,
    summary: () => ({
      mac: formatMac(mac),
      bridge: bridge?.name ?? null,
      bridgeCreated: bridge?.created ?? false,
      gateway: opts.gateway ? formatIpv4(opts.gateway) : null,
    }),
  };
}

/** The control plane's `neigh`: the table as `ip neigh` shows it, and the link's counters. */
export function neighReply(eth: EthernetInterface, dev: string, now: number) {
  const d = eth.describe(now);
  return {
    dev,
    mac: d.mac,
    entries: eth.neighbours.rows(now).map((r) => ({ ...r, dev })),
    proxy: d.proxyArp,
    reachableTimeMs: d.reachableTimeMs,
    params: d.params,
    counters: d.neighbourCounters,
  };
}
