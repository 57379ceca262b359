/**
 * KB 972183: on an NLB cluster with single affinity and IPsec, a client that
 * disconnects and reconnects from another network gets its new tunnel on the owner of
 * its new address's bucket, while the host of its old tunnel keeps that tunnel's state:
 * the same identity holds state on several hosts, and an application that expects one
 * host per client keeps switching between "trying to connect" and "connected".
 *
 * The whole behaviour is the NLB host's `tunnelOpened` hook (stack/nlb/host.ts), called
 * on every host whenever a tunnel opens anywhere in the cluster (a host learns of
 * another host's tunnels from the IPsec descriptors in its extended heartbeats: our
 * choice, the mechanism is not public):
 *
 *   hotfixed, DropStateIfNotBucketOwner=1 (the hotfix, its default): the host that does
 *     not own the bucket of the new tunnel's client address destroys the state of its
 *     own tunnels of that identity (IKE SA and child SAs); on the owner, the new tunnel
 *     replaces older ones of the same identity. One active tunnel per client.
 *   buggy (hotfix not installed), or hotfixed with DropStateIfNotBucketOwner=0: nothing
 *     happens; the old tunnel stays until IPsec itself gives up on it (dead-peer
 *     detection, lifetime). The event says which host kept what.
 */
import { formatIpv4 } from '../../wire/addr';
import type { TunnelOpened } from '../../nlb/host';
import type { FaultContext, FaultModule, InstalledFault } from '../module';
import { spec } from './spec';

export const KB972183_EVENTS = {
  /** Buggy path: a host kept its old tunnel of an identity that opened a new one elsewhere. */
  TunnelStateKept: 'nlb-tunnel-state-kept',
} as const;

function install(ctx: FaultContext): InstalledFault {
  const nlb = ctx.features.nlb;
  if (!nlb) {
    // No cluster in this process: nothing to change (the fault lives on an NLB host).
    return { uninstall() {} };
  }
  const cfg = ctx.config;
  let kept = 0;
  const previous = nlb.hooks.tunnelOpened;
  const hotfix = () => cfg.modes.kb972183 === 'hotfixed' && cfg.params.DropStateIfNotBucketOwner === 1;

  nlb.hooks.tunnelOpened = (t: TunnelOpened, now: number) => {
    if (hotfix()) {
      nlb.defaultTunnelOpened(t, now);
      return;
    }
    // The old behaviour: every host keeps what it has. Only worth saying where it matters.
    // Oldest first: for a local opening the last one is the new tunnel itself.
    const mine = nlb.localTunnels(t.identityHash, t.local ? Infinity : t.openedAt);
    const stale = t.local ? mine.slice(0, -1) : mine;
    if (stale.length === 0 || (!t.local && t.ownsBucket)) return;
    kept += stale.length;
    for (const x of stale) {
      const why = cfg.modes.kb972183 === 'buggy' ? 'the hotfix is not installed' : 'DropStateIfNotBucketOwner is 0';
      ctx.events.emit({
        fault: 'kb972183',
        kind: KB972183_EVENTS.TunnelStateKept,
        message: t.local
          ? `${x.identity} opened another tunnel on this host (from ${formatIpv4(t.clientAddr)}); its older tunnel from ${formatIpv4(x.clientAddr)} (IKE SA ${x.ikeSaId}) is kept: ${why}`
          : `host ${t.host} opened a new tunnel for ${x.identity} from ${formatIpv4(t.clientAddr)} (bucket ${t.bucket}, not ours); this host keeps the old tunnel from ` +
            `${formatIpv4(x.clientAddr)} (IKE SA ${x.ikeSaId}): ${why}, so the client now has state on more than one host`,
        data: {
          identity: x.identity,
          oldClient: formatIpv4(x.clientAddr),
          newClient: formatIpv4(t.clientAddr),
          newHost: t.host,
          bucket: t.bucket,
          ikeSa: x.ikeSaId,
        },
      });
    }
  };

  return {
    stats: () => ({
      kb972183: {
        mode: cfg.modes.kb972183,
        DropStateIfNotBucketOwner: cfg.params.DropStateIfNotBucketOwner,
        hotfixActive: hotfix(),
        tunnelStateKept: kept,
        tunnelStateDropped: nlb.counters.NlbTunnelStateDropped,
      },
    }),
    uninstall() {
      nlb.hooks.tunnelOpened = previous;
    },
  };
}

export const kb972183 = { spec, install } as const satisfies FaultModule;
