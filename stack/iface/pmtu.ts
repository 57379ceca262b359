/**
 * Path MTU discovery (RFC 1191) over the routing table's host routes, with the
 * Windows-style limit on how many host routes ICMP may create (MaxIcmpHostRoutes).
 *
 * KB 898060 lives here, in `countRule`: the buggy rule counts an MTU *update* of an
 * existing host route as if it were a new route, so the count reaches the limit
 * while the real number of routes stays small; from then on every
 * fragmentation-needed message is ignored. The hotfixed rule counts creations and
 * removals only.
 */
import type { Counters } from '../counters';
import { formatIpv4 } from '../wire/addr';
import type { HostRoute, RouteTable } from './routing';

/** RFC 1191 section 7: plateau values for routers that report a next-hop MTU of 0. */
export const MTU_PLATEAUS = [65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

export interface PmtuParams {
  /** 0: use 576 for destinations off the local subnet. */
  EnablePMTUDiscovery: number;
  /** The most host routes ICMP may create. */
  MaxIcmpHostRoutes: number;
  /** Lowest MTU accepted from ICMP: 68 (RFC 791) or 576 (after MS05-019). */
  PMTUFloor: number;
  /** Seconds after which a host route that was not lowered again ages back; 0 = never. */
  HostRouteAgingSec: number;
  /** Black-hole detection (EnablePMTUBHDetect). */
  EnablePMTUBHDetect: number;
}

export type CountRule = 'buggy' | 'hotfixed';

export interface PmtuEvents {
  limitReached(count: number, real: number, limit: number): void;
  ignoredAtLimit(dst: number, mtu: number, count: number): void;
}

export type FragNeededOutcome = 'created' | 'updated' | 'unchanged' | 'ignored-limit' | 'ignored-floor' | 'ignored-disabled';

export class PathMtu {
  /** The count the limit is checked against (what Windows kept); may exceed the real number in buggy mode. */
  counted = 0;
  private limitAnnounced = false;
  lastSweep = 0;

  constructor(
    readonly routes: RouteTable,
    readonly counters: Counters,
    public params: () => PmtuParams,
    public countRule: () => CountRule,
    public events: PmtuEvents,
  ) {}

  get realCount(): number { return this.routes.hostRoutes.size; }

  /**
   * An ICMP fragmentation-needed for `dst` with the router's next-hop MTU (0 from
   * old routers) and the total length of the datagram it quoted.
   */
  onFragNeeded(dst: number, nextHopMtu: number, quotedTotalLength: number, now: number): FragNeededOutcome {
    const p = this.params();
    const c = this.counters;
    c.TcpExtPMTUFragNeeded++;
    if (!p.EnablePMTUDiscovery) return 'ignored-disabled';
    let mtu = nextHopMtu;
    if (mtu === 0 || mtu >= quotedTotalLength) {
      // RFC 1191 5: guess from the plateau table below the quoted length. A TSO
      // super-segment quotes its whole length (up to 64 KiB) while no packet on the
      // wire was larger than the interface MTU: take the plateau below the smaller.
      // (Not below the current estimate: ICMP messages for packets sent before the
      // last decrease would then walk the estimate down to 68.)
      const sent = Math.min(quotedTotalLength, this.routes.interfaceMtu);
      mtu = 68;
      for (const v of MTU_PLATEAUS) if (v < sent) { mtu = v; break; }
    }
    if (mtu < p.PMTUFloor) {
      if (p.PMTUFloor > 68) return 'ignored-floor';
      mtu = Math.max(mtu, 68);
    }
    const existing = this.routes.hostRoutes.get(dst);
    // MaxIcmpHostRoutes bounds the routes ICMP may *create*. The buggy path checks
    // its (inflated) count before anything and ignores every message at the limit;
    // the fixed path refuses only a creation and still lowers a route that exists.
    const refused = this.countRule() === 'buggy' || !existing;
    if (this.counted >= p.MaxIcmpHostRoutes && refused) {
      c.FsIcmpIgnoredAtLimit++;
      this.events.ignoredAtLimit(dst, mtu, this.counted);
      return 'ignored-limit';
    }
    if (existing) {
      // The estimate never rises on ICMP's word (RFC 1191 3).
      if (mtu >= existing.mtu) return 'unchanged';
      existing.mtu = mtu;
      existing.updatedAt = now;
      existing.updates++;
      c.FsHostRoutesUpdated++;
      if (this.countRule() === 'buggy') this.counted++; // KB 898060: an update counted as a creation
      this.checkLimit(p.MaxIcmpHostRoutes);
      return 'updated';
    }
    if (mtu >= this.routes.interfaceMtu) return 'unchanged';
    const route: HostRoute = { dest: dst, mtu, createdAt: now, updatedAt: now, updates: 0, source: 'icmp' };
    this.routes.hostRoutes.set(dst, route);
    this.counted++;
    c.FsHostRoutesCreated++;
    this.checkLimit(p.MaxIcmpHostRoutes);
    return 'created';
  }

  private checkLimit(limit: number): void {
    if (this.counted >= limit && !this.limitAnnounced) {
      this.limitAnnounced = true;
      this.events.limitReached(this.counted, this.realCount, limit);
    }
  }

  /** RFC 1191 6.3: age host routes back to the interface MTU. Returns how many were removed. */
  sweep(now: number): number {
    const p = this.params();
    this.lastSweep = now;
    if (p.HostRouteAgingSec <= 0) return 0;
    let n = 0;
    for (const r of this.routes.hostRoutes.values()) {
      if (now - r.updatedAt >= p.HostRouteAgingSec * 1000) { this.removeRoute(r.dest); n++; }
    }
    return n;
  }

  removeRoute(dst: number): boolean {
    if (!this.routes.hostRoutes.delete(dst)) return false;
    this.counters.FsHostRoutesRemoved++;
    // Both rules decrement on removal; the buggy count never catches up with its extra increments.
    this.counted = Math.max(0, this.counted - 1);
    if (this.counted < this.params().MaxIcmpHostRoutes) this.limitAnnounced = false;
    return true;
  }

  /** MTU toward `dst` (576 off-subnet when discovery is disabled). */
  mtuFor(dst: number, onLink: boolean): number {
    if (!this.params().EnablePMTUDiscovery && !onLink) return Math.min(576, this.routes.interfaceMtu);
    return this.routes.mtuFor(dst);
  }

  describe(now: number) {
    const p = this.params();
    return {
      ...this.routes.describe(now),
      hostRouteCount: this.counted,
      hostRoutesReal: this.realCount,
      maxIcmpHostRoutes: p.MaxIcmpHostRoutes,
      atLimit: this.counted >= p.MaxIcmpHostRoutes,
      countRule: this.countRule(),
    };
  }

  static label(dst: number): string { return formatIpv4(dst); }
}
