/**
 * KB 898060 (pmtu-hostroutes), installed: how path-MTU host routes count against
 * MaxIcmpHostRoutes, and the parameters of path MTU discovery.
 *
 * - pmtu.hooks.hostRouteAccounting: hotfixed, the core's correct count
 *   (CREATIONS_AND_REMOVALS: a route counts from its creation to its removal; at the
 *   limit only creations are refused). Buggy, the article's (ARTICLE_ACCOUNTING): an
 *   MTU update of an existing route counts as one more route, and at the limit every
 *   fragmentation-needed message is ignored, so the count reaches the limit while few
 *   routes exist and PMTU discovery stops.
 * - The PMTU parameters (EnablePMTUDiscovery, MaxIcmpHostRoutes, PMTUFloor,
 *   HostRouteAgingSec, EnablePMTUBHDetect), the MTU workaround (the interface MTU),
 *   and the events that name the count and the real routes.
 */
import { CREATIONS_AND_REMOVALS, type HostRouteAccounting } from '../../iface/pmtu';
import { formatIpv4 } from '../../wire/addr';
import { EventKind } from '../events';
import type { FaultContext, FaultModule, InstalledFault } from '../module';
import { spec } from './spec';

/** The article's count: an update counted as a creation, and every message ignored at the limit. */
export const ARTICLE_ACCOUNTING: HostRouteAccounting = {
  rule: 'buggy',
  refusedAtLimit: () => true,
  countForUpdate: () => 1,
};

export const kb898060 = {
  spec,
  install(ctx: FaultContext): InstalledFault {
    const { stack, config: cfg, events } = ctx;
    const p = cfg.params;
    const pm = stack.pmtu;
    const before = { params: pm.params, accounting: pm.hooks.hostRouteAccounting, events: pm.events };
    const rule = () => (cfg.modes.kb898060 === 'buggy' ? ARTICLE_ACCOUNTING : CREATIONS_AND_REMOVALS);
    pm.hooks.hostRouteAccounting = {
      // Named by the mode, so that `faultstack routes` says which rule counts.
      get rule() {
        return cfg.modes.kb898060 === 'buggy' ? 'buggy' : 'hotfixed';
      },
      refusedAtLimit: (existing) => rule().refusedAtLimit(existing),
      countForUpdate: () => rule().countForUpdate(),
    };
    pm.params = () => ({
      EnablePMTUDiscovery: p.EnablePMTUDiscovery,
      MaxIcmpHostRoutes: p.MaxIcmpHostRoutes,
      PMTUFloor: p.PMTUFloor,
      HostRouteAgingSec: p.HostRouteAgingSec,
      EnablePMTUBHDetect: p.EnablePMTUBHDetect,
    });
    pm.events = {
      limitReached: (count, real, limit) =>
        events.emit({
          fault: 'kb898060',
          kind: EventKind.HostRouteLimitReached,
          message:
            `host-route count reached MaxIcmpHostRoutes (${count} >= ${limit}) while ${real} host routes really exist: ` +
            'from now on ICMP fragmentation-needed messages are ignored',
          data: { count, routes: real, limit },
        }),
      ignoredAtLimit: (dst, mtu, count) =>
        events.emit({
          fault: 'kb898060',
          kind: EventKind.IcmpIgnoredAtLimit,
          message: `ICMP fragmentation needed for ${formatIpv4(dst)} (next-hop MTU ${mtu}) ignored: host-route count ${count} is at the limit`,
          data: { destination: formatIpv4(dst), nextHopMtu: mtu, count, limit: p.MaxIcmpHostRoutes },
        }),
    };
    // The article's workaround: the interface MTU (576 is the safe value); 0 is the link's.
    const applyMtu = () => {
      const ifMtu = p.MTU > 0 ? Math.max(68, Math.min(p.MTU, stack.device.mtu)) : stack.device.mtu;
      if (ifMtu !== stack.routes.interfaceMtu) stack.routes.setInterfaceMtu(ifMtu);
    };
    applyMtu();
    const unsubscribe = cfg.onChange(applyMtu);
    return {
      uninstall() {
        unsubscribe();
        pm.params = before.params;
        pm.hooks.hostRouteAccounting = before.accounting;
        pm.events = before.events;
      },
    };
  },
} as const satisfies FaultModule;
