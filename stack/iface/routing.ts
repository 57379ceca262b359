/**
 * The routing table: network routes (the connected subnet, the default route
 * through the TUN device, or on Ethernet via a gateway) and per-destination host
 * routes created by ICMP fragmentation-needed messages (RFC 1191 path MTU). Network
 * and default routes keep the interface MTU; only host routes carry a learned path MTU.
 *
 * The next hop (RFC 1122 3.3.1.1): a destination on a route without a gateway is
 * on-link (resolved itself, with ARP on Ethernet); otherwise the route's gateway is.
 * On a TUN device there is no next hop to resolve: the kernel takes every packet.
 *
 * The host-route limit and its counting rule are where KB 898060 lives; see
 * stack/iface/pmtu.ts for the policy, this file only stores routes.
 */
import { formatIpv4, prefixMask } from '../wire/addr';

export interface NetRoute {
  dest: number;
  prefix: number;
  mtu: number;
  kind: 'connected' | 'default';
  /** The next hop for destinations on this route; 0: on-link (no gateway). */
  gateway: number;
}

export interface HostRoute {
  dest: number;
  mtu: number;
  createdAt: number;
  updatedAt: number;
  /** Number of ICMP messages that changed this route's MTU after it was created. */
  updates: number;
  source: 'icmp';
}

export class RouteTable {
  readonly netRoutes: NetRoute[] = [];
  readonly hostRoutes = new Map<number, HostRoute>();

  constructor(public interfaceMtu: number) {}

  addNetRoute(dest: number, prefix: number, kind: NetRoute['kind'], gateway = 0): void {
    this.netRoutes.push({ dest: (dest & prefixMask(prefix)) >>> 0, prefix, mtu: this.interfaceMtu, kind, gateway });
    this.netRoutes.sort((a, b) => b.prefix - a.prefix);
  }

  /** Longest-prefix match among network routes (host routes only refine the MTU). */
  lookupNet(dst: number): NetRoute | null {
    for (const r of this.netRoutes) if ((dst & prefixMask(r.prefix)) >>> 0 === r.dest) return r;
    return null;
  }

  /** The address to resolve to reach `dst`: the gateway of its route, or `dst` itself when on-link. */
  nextHop(dst: number): number {
    const r = this.lookupNet(dst);
    return r !== null && r.gateway !== 0 ? r.gateway : dst;
  }

  /** MTU to use toward `dst`: the host route's if one exists, else the interface's. */
  mtuFor(dst: number): number {
    const h = this.hostRoutes.get(dst);
    // RFC 1191 3: the PMTU is never larger than the first hop's MTU, also when the
    // interface MTU was lowered (the MTU workaround) after the route was learned.
    return h && h.mtu < this.interfaceMtu ? h.mtu : this.interfaceMtu;
  }

  setInterfaceMtu(mtu: number): void {
    this.interfaceMtu = mtu;
    for (const r of this.netRoutes) r.mtu = mtu;
  }

  describe(now: number) {
    return {
      interfaceMtu: this.interfaceMtu,
      networks: this.netRoutes.map((r) => ({
        dest: `${formatIpv4(r.dest)}/${r.prefix}`,
        mtu: r.mtu,
        kind: r.kind,
        ...(r.gateway !== 0 ? { via: formatIpv4(r.gateway) } : {}),
      })),
      hosts: [...this.hostRoutes.values()].map((h) => ({
        dest: formatIpv4(h.dest),
        mtu: h.mtu,
        source: h.source,
        updates: h.updates,
        ageSec: Math.round((now - h.createdAt) / 100) / 10,
        sinceUpdateSec: Math.round((now - h.updatedAt) / 100) / 10,
      })),
    };
  }
}
