/**
 * Start-up pieces shared by `faultstack run` in one thread (run.ts) and by its shards
 * (run.ts + shard-worker.ts): the fault configuration with its event log, opening the
 * TUN device, and what the kernel's accepted offloads let the stack send.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { RuntimeOptions } from './options';
import { TunDevice, TunOpenOptions, configureHostSide } from '../../drivers/tun/index';
import { formatIpv4 } from '../wire/addr';
import { UsageError } from '../util/errors';
import { buildFaultConfig } from '../faults/config';
import { EventLog, logConfigChanges } from '../faults/events';

/** The fault configuration from the command line, an event log, and its change logging. */
export function faultSetup(opts: RuntimeOptions) {
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
 * The txqueuelen of a TUN device a run creates (the kernel's default is 500). The kernel
 * queues a packet for us in the sender's context and drops it when the queue is full;
 * we drain it only when our thread runs. On a loaded machine the thread waits for a CPU
 * for milliseconds at a time, and 500 packets are 4-6 ms of a 100k SYN/s flood: clients'
 * SYNs and ACKs were dropped with the flood (a third of all packets at load 6) and waited
 * for their 1 s retransmission. 8,192 packets ride out such a wait (ab beside an unpaced
 * hping3 flood, docs/benchmarks.md). A device made beforehand keeps its own setting.
 */
export const RUN_TXQUEUELEN = 8192;

/**
 * Opens the run's TUN device. FAULTSTACK_TUN_OFFLOAD_MASK limits the TUNSETOFFLOAD probe
 * (TUN_F_* bits): it stands in for a kernel that refuses or limits offloads, so the
 * fallback can be tested anywhere.
 */
export function openRunTun(opts: RuntimeOptions, extra: Partial<TunOpenOptions> = {}, existing: ExistingTun | null = existingTun(opts.tun)): TunDevice {
  const maskEnv = process.env.FAULTSTACK_TUN_OFFLOAD_MASK;
  const offloadMask = maskEnv !== undefined && maskEnv !== '' ? Number(maskEnv) : undefined;
  const multiQueue = extra.multiQueue ?? opts.queues > 1;
  if (existing) {
    // Used as it is: its flags are fixed when it was made, and TUNSETIFF would rewrite them.
    if (existing.multiQueue !== multiQueue) {
      throw new UsageError(
        `the TUN device ${opts.tun} exists ${existing.multiQueue ? 'with' : 'without'} multi_queue; ` +
          (multiQueue
            ? `--queues ${opts.queues} needs one made with \`ip tuntap add dev ${opts.tun} mode tun multi_queue\``
            : 'run with --queues 2 or more, or use another device'),
      );
    }
  }
  // An existing device without vnet_hdr keeps it off (offloads need it): nothing of its flags changes.
  const vnetHdr = opts.offloads && (!existing || existing.vnetHdr);
  return TunDevice.open({
    name: opts.tun,
    mtu: opts.hostConfig === false ? undefined : opts.mtu,
    vnetHdr,
    offloads: vnetHdr ? 'probe' : 'off',
    multiQueue: opts.queues > 1,
    queues: opts.queues,
    txQueueLen: RUN_TXQUEUELEN,
    gro: opts.gro !== false,
    txThread: opts.txThread !== false,
    ...(offloadMask !== undefined && Number.isInteger(offloadMask) ? { offloadMask } : {}),
    ...extra,
  });
}

/** A TUN device that existed before this run (`ip tuntap add`), as its tun_flags describe it. */
export interface ExistingTun {
  vnetHdr: boolean;
  multiQueue: boolean;
}

const IFF_MULTI_QUEUE = 0x0100;
const IFF_VNET_HDR = 0x4000;

/** The device's flags if it exists and is a TUN device, null if it does not exist. */
export function existingTun(name: string): ExistingTun | null {
  let text: string;
  try {
    text = fs.readFileSync(`/sys/class/net/${name}/tun_flags`, 'utf8');
  } catch (e) {
    if (fs.existsSync(`/sys/class/net/${name}`)) throw new UsageError(`${name} exists and is not a TUN device: pick another --tun name`);
    return null;
  }
  const flags = Number.parseInt(text.trim(), 16);
  return { vnetHdr: (flags & IFF_VNET_HDR) !== 0, multiQueue: (flags & IFF_MULTI_QUEUE) !== 0 };
}

interface LinkState {
  mtu: number;
  up: boolean;
  addrs: string[];
}

function linkState(name: string): LinkState {
  const out = execFileSync('ip', ['-j', 'addr', 'show', 'dev', name], { encoding: 'utf8', timeout: 10_000 });
  const j = (JSON.parse(out) as { mtu: number; flags: string[]; addr_info?: { family: string; local: string; prefixlen: number }[] }[])[0]!;
  return {
    mtu: j.mtu,
    up: j.flags.includes('UP'),
    addrs: (j.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
  };
}

/**
 * The kernel side of the TUN link: the host address, the MTU, up. On a device this run
 * created, whatever it does goes with the device. On a device that was there before, it
 * records what it changes and `restore()` undoes exactly that (an address it added, the
 * MTU, the down state), so nothing is left on a device faultstack did not create. With
 * hostConfig false (--no-host-config) nothing is touched: the device must exist and be
 * configured (address, up) by whoever made it.
 */
export function configureHostLink(opts: RuntimeOptions, tun: TunDevice, before: LinkState | null): { restore(): void } {
  if (opts.hostConfig === false || !opts.hostAddr) return { restore() {} };
  const hostAddr = `${formatIpv4(opts.hostAddr.addr)}/${opts.hostAddr.prefix}`;
  configureHostSide(tun.name, { hostAddr, mtu: opts.mtu, up: true });
  if (tun.created || !before) return { restore() {} };
  return {
    restore() {
      const ip = (...args: string[]) => {
        try {
          execFileSync('ip', args, { stdio: 'ignore', timeout: 10_000 });
        } catch {
          /* the device went away */
        }
      };
      if (!before.addrs.includes(hostAddr)) ip('addr', 'del', hostAddr, 'dev', tun.name);
      if (linkState(tun.name).mtu !== before.mtu) ip('link', 'set', 'dev', tun.name, 'mtu', String(before.mtu));
      if (!before.up) ip('link', 'set', 'dev', tun.name, 'down');
    },
  };
}

/** What the device looks like before this run touches it (null: it does not exist yet). */
export function hostLinkBefore(opts: RuntimeOptions): LinkState | null {
  const existing = existingTun(opts.tun);
  if (!existing) {
    if (opts.hostConfig === false) {
      throw new UsageError(
        `--no-host-config uses an existing TUN device, and ${opts.tun} does not exist: make it with \`ip tuntap add dev ${opts.tun} mode tun\` and configure its address, or drop --no-host-config`,
      );
    }
    return null;
  }
  return linkState(opts.tun);
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
