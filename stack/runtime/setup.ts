/**
 * Start-up pieces shared by `faultstack run` in one thread (run.ts) and by its shards
 * (run.ts + shard-worker.ts): the fault configuration with its event log, opening the
 * TUN device, and what the kernel's accepted offloads let the stack send.
 */
import type { RunOptions } from '../../bin/cli/run-options';
import { TunDevice, TunOpenOptions } from '../../drivers/tun/index';
import { buildFaultConfig } from '../faults/catalogue';
import { EventLog, logConfigChanges } from '../faults/events';

/** The fault configuration from the command line, an event log, and its change logging. */
export function faultSetup(opts: RunOptions) {
  const faults = buildFaultConfig({
    profile: opts.profile,
    faults: opts.faults.map((f) => `${f.id}=${f.mode}`),
    params: opts.params.map((p) => `${p.name}=${p.value}`),
  });
  const events = new EventLog({ file: opts.events });
  const unlogChanges = logConfigChanges(faults, events);
  return { faults, events, unlogChanges };
}

/**
 * Opens the run's TUN device. FAULTSTACK_TUN_OFFLOAD_MASK limits the TUNSETOFFLOAD probe
 * (TUN_F_* bits): it stands in for a kernel that refuses or limits offloads, so the
 * fallback can be tested anywhere.
 */
export function openRunTun(opts: RunOptions, extra: Partial<TunOpenOptions> = {}): TunDevice {
  const maskEnv = process.env.FAULTSTACK_TUN_OFFLOAD_MASK;
  const offloadMask = maskEnv !== undefined && maskEnv !== '' ? Number(maskEnv) : undefined;
  return TunDevice.open({
    name: opts.tun, mtu: opts.mtu, vnetHdr: opts.offloads, offloads: opts.offloads ? 'probe' : 'off',
    multiQueue: opts.queues > 1, queues: opts.queues,
    ...(offloadMask !== undefined && Number.isInteger(offloadMask) ? { offloadMask } : {}),
    ...extra,
  });
}

/**
 * With the virtio header the kernel segments and checksums what we send, but only where
 * it accepted those offloads for its own traffic to us: a kernel that refused TSO4 (or
 * everything) gets MSS-sized segments, and without CSUM, complete checksums.
 */
export function stackOffloads(vnetHdr: boolean, tso4: boolean, csum: boolean): { tsoSegments: number; txChecksumOffload: boolean } {
  return { tsoSegments: vnetHdr && tso4 ? 44 : 1, txChecksumOffload: vnetHdr && csum };
}
