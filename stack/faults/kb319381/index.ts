/**
 * KB 319381 (udp-rebind): the streaming-media filter of a firewall drops a UDP port a
 * Firewall Client released and bound again. The fault's whole behaviour is here, on
 * the firewall's hooks (stack/firewall/firewall.ts, FirewallHooks), the buggy path next
 * to the fixed one:
 *
 * | hook | buggy | hotfixed |
 * |---|---|---|
 * | releaseDelayMs | MediaPortReleaseDelayMs: the port stays bound that long after a release | the same (freeing takes time) |
 * | rebindWhileReleasing | 'address-in-use': the client gets WSAEADDRINUSE | 'complete-release': the release is finished first, then the bind (ordered) |
 * | reopenOnRebind | false: the filter's opening stays closed, the packet filter drops the media (and port-scan detection sees a scan) | true: re-opened |
 * | mediaPortReleased | (counted) | (counted) |
 *
 * `off`: the streaming-media filter is not in use at all (MMSU through the firewall then
 * fails for every client, as it would without the filter; MMST is unaffected).
 *
 * `install(ctx)` (stack/faults/module.ts) acts on `ctx.features.firewall`; a process
 * without a firewall gets a module that does nothing.
 */
import type { FaultContext, FaultModule, InstalledFault } from '../module';
import { defaultFirewallHooks } from '../../firewall/firewall';
import { spec } from './spec';

function install(ctx: FaultContext): InstalledFault {
  const fw = ctx.features.firewall;
  // A process without a firewall: nothing to act on.
  if (fw === undefined) return { uninstall() {} };
  const cfg = ctx.config;
  const p = cfg.params;
  const buggy = () => cfg.modes.kb319381 === 'buggy';
  const counts = { releases: 0, rebindsWhileReleasing: 0, addrInUse: 0, releasesCompletedFirst: 0, leftClosed: 0, reopened: 0 };

  const apply = () => {
    if (fw.media) fw.media.enabled = cfg.modes.kb319381 !== 'off';
  };
  apply();
  const unsubscribe = cfg.onChange(apply);
  fw.thresholds = () => ({ wellKnown: p.PortScanWellKnownThreshold, allPorts: p.PortScanAllPortsThreshold });

  fw.hooks = {
    mediaPortReleased: () => {
      counts.releases++;
    },
    releaseDelayMs: () => p.MediaPortReleaseDelayMs,
    rebindWhileReleasing: () => {
      counts.rebindsWhileReleasing++;
      if (buggy()) {
        // The race of the article: the port "has not been properly freed" yet, and the
        // bind fails instead of waiting for the release it follows.
        counts.addrInUse++;
        return 'address-in-use';
      }
      counts.releasesCompletedFirst++;
      return 'complete-release';
    },
    reopenOnRebind: () => {
      if (buggy()) {
        // "the port has already been closed on the ISA Server": the filter forgets that a
        // re-bind of the port is the same session's media port.
        counts.leftClosed++;
        return false;
      }
      counts.reopened++;
      return true;
    },
  };

  return {
    stats: () => ({ ...counts, releaseDelayMs: p.MediaPortReleaseDelayMs }),
    uninstall() {
      unsubscribe();
      fw.hooks = defaultFirewallHooks();
      fw.thresholds = () => ({ wellKnown: 10, allPorts: 20 });
    },
  };
}

export const kb319381 = { spec, install } as const satisfies FaultModule;
