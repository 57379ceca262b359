/**
 * Path MTU discovery (RFC 1191) over the routing table's host routes, with the
 * Windows-style limit on how many host routes ICMP may create (MaxIcmpHostRoutes).
 *
 * How the routes are counted against that limit is a hook,
 * `hooks.hostRouteAccounting`. Its default, CREATIONS_AND_REMOVALS, is the correct
 * count: a route counts from its creation to its removal, and at the limit only a
 * creation is refused (an existing route is still lowered). KB 898060's module
 * (stack/faults/kb898060/) supplies the article's rule.
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

/**
 * How host routes created from ICMP are counted against MaxIcmpHostRoutes (the hook
 * KB 898060 implements). Creations add one and removals take one away whatever the
 * rule; the rule decides the rest.
 */
export interface HostRouteAccounting {
  /** Its name, shown as `countRule` by `faultstack routes`. */
  readonly rule: string;
  /** The count is at the limit: is a fragmentation-needed message refused? `existing`: it would lower a route that exists. */
  refusedAtLimit(existing: boolean): boolean;
  /** What ICMP lowering the MTU of an existing host route adds to the count. */
  countForUpdate(): number;
}

/** The correct count (the default): routes are counted while they exist; at the limit only creations are refused. */
export const CREATIONS_AND_REMOVALS: HostRouteAccounting = {
  rule: 'creations-and-removals',
  refusedAtLimit: (existing) => !existing,
  countForUpdate: () => 0,
};

export interface PmtuHooks {
  hostRouteAccounting: HostRouteAccounting;
}

export interface PmtuEvents {
  limitReached(count: number, real: number, limit: number): void;
  ignoredAtLimit(dst: number, mtu: number, count: number): void;
}

export type FragNeededOutcome = 'created' | 'updated' | 'unchanged' | 'ignored-limit' | 'ignored-floor' | 'ignored-disabled';

export class PathMtu {
  /** The count the limit is checked against (what Windows kept); an accounting rule that counts updates makes it exceed the real number. */
  counted = 0;
  private limitAnnounced = false;
  lastSweep = 0;
  readonly hooks: PmtuHooks;

  constructor(
    readonly routes: RouteTable,
    readonly counters: Counters,
    public params: () => PmtuParams,
    accounting: HostRouteAccounting,
    public events: PmtuEvents,
  ) {
    this.hooks = { hostRouteAccounting: accounting };
  }

  get realCount(): number {
    return this.routes.hostRoutes.size;
  }

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
      for (const v of MTU_PLATEAUS)
        if (v < sent) {
          mtu = v;
          break;
        }
    }
    if (mtu < p.PMTUFloor) {
      if (p.PMTUFloor > 68) return 'ignored-floor';
      mtu = Math.max(mtu, 68);
    }
    const existing = this.routes.hostRoutes.get(dst);
    // MaxIcmpHostRoutes bounds the routes ICMP may *create*; the accounting rule says
    // what else it refuses at the limit.
    const accounting = this.hooks.hostRouteAccounting;
    if (this.counted >= p.MaxIcmpHostRoutes && accounting.refusedAtLimit(existing !== undefined)) {
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
      this.counted += accounting.countForUpdate();
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
      if (now - r.updatedAt >= p.HostRouteAgingSec * 1000) {
        this.removeRoute(r.dest);
        n++;
      }
    }
    return n;
  }

  removeRoute(dst: number): boolean {
    if (!this.routes.hostRoutes.delete(dst)) return false;
    this.counters.FsHostRoutesRemoved++;
    // Every rule takes a removal off the count (an inflated count never catches up).
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
      countRule: this.hooks.hostRouteAccounting.rule,
    };
  }

  static label(dst: number): string {
    return formatIpv4(dst);
  }
}
