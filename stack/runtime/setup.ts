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

/**
 * Payload bytes the kernel queues for us on the TUN device before it drops: txqueuelen
 * packets per queue, each a full segment's payload (the MTU less IP, TCP and the
 * timestamp option: a sender's full segments carry no more, so the window never stands
 * for more packets than the queue holds), or a 64 KiB GSO packet when the kernel may
 * hand us TSO4 super-segments (then the queue is never the limit in practice). The
 * receive windows of all connections share it (see TcpLayer.rcvShare).
 */
export function rxQueueBytes(txQueueLen: number, queues: number, mtu: number, vnetHdr: boolean, tso4: boolean): number {
  // A txqueuelen of 0 gives no usable bound: leave the windows alone.
  if (!(txQueueLen > 0)) return Infinity;
  const perPacket = vnetHdr && tso4 ? 65536 : mtu - 52;
  // Four fifths of the queue: the kernel cuts its 64 KiB GSO segments into full-sized
  // packets and a short tail (more packets than full segments), and other packets (pure
  // ACKs of other connections, ICMP) take places in the same queue.
  return Math.max(1, Math.floor(txQueueLen * Math.max(1, queues) * 0.8)) * perPacket;
}
