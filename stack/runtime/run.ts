/**
 * `faultstack run`: puts the stack on a real TUN (or TAP) device. Opens (or creates) the
 * device, configures the kernel side, starts the stack, its services and the control
 * socket, and tears everything down on shutdown. One thread here; `--shards` is
 * sharded.ts. Both share the lifecycle (lifecycle.ts), the one stack's part (shard.ts)
 * and the control plane (control.ts).
 */
import * as path from 'node:path';
import { txQueueLen, type TunDevice } from '../../drivers/tun/index';
import { PcapDevice, wallClock } from '../../drivers/pcap';
import { ImpairDevice } from '../impair/device';
import { removeBridge } from '../../drivers/tap/index';
import type { Device } from '../../drivers/device';
import { Impairments } from '../impair/registry';
import { ToxicRegistry } from '../impair/toxics';
import type { Stack } from '../stack';
import type { NetApi } from '../api/net-api';
import { formatIpv4 } from '../wire/addr';
import type { FaultConfig } from '../faults/config';
import type { EventLog } from '../faults/events';
import type { InstalledFaults } from '../faults/install';
import { ControlServer } from '../control/server';
import { impairHandlers } from './impair-control';
import { RealScheduler } from './scheduler';
import { configureHostLink, faultSetup, hostLinkBefore, openRunTun } from './setup';
import { EthernetRuntime, ethernetRuntime, setupTapKernelSide } from './ethernet';
import { attachIpsec } from './ipsec-setup';
import { attachFirewall, configureHostNetns } from './firewall-setup';
import { Lifecycle } from './lifecycle';
import { StackShard } from './shard';
import { LocalPort, controlHandlers, readyLine, type ControlView } from './control';
import { startShardedRuntime } from './sharded';
import type { RuntimeOptions, StackRuntimeHandle } from './options';
import { attachNlb } from './nlb-setup';
import { startWeb } from './web';

/** A one-thread run's parts, for tools that run the stack in their own process (bench/tools/stack-server.ts). */
export interface Runtime {
  stack: Stack;
  device: Device;
  tun: TunDevice;
  /** With --tap: the Ethernet interface between the device and the stack. */
  link: EthernetRuntime | null;
  faults: FaultConfig;
  events: EventLog;
  installed: InstalledFaults;
  startedAt: number;
  impair: Impairments;
}

/** A one-thread run also hands out its parts and the stack's socket API; a sharded run has neither here. */
export interface RuntimeHandle extends StackRuntimeHandle {
  runtime?: Runtime;
  api?: NetApi;
}

export async function startStackRuntime(opts: RuntimeOptions): Promise<RuntimeHandle> {
  if (opts.shards) return startShardedRuntime(opts);
  const life = new Lifecycle();
  try {
    const { faults, events, unlogChanges } = faultSetup(opts);
    life.defer(() => events.close());
    life.defer(() => unlogChanges());
    const tap = opts.link === 'tap';
    // A TUN device made beforehand is used as it is and left as it was (hostLinkBefore records it).
    const before = tap ? null : hostLinkBefore(opts);
    const tun = openRunTun(opts, tap ? { mode: 'tap' } : {});
    // TAP: a bridge port (the bridge is removed after the TAP, and only if we made it), or an addressed link.
    const bridge = tap ? setupTapKernelSide(opts, tun) : null;
    if (bridge?.created) life.defer(() => removeBridge(bridge.name));
    life.defer(() => tun.close());
    // Read in this namespace, before --host-netns moves the device away.
    const txq = txQueueLen(tun.name);
    if (!tap) {
      const hostAddrText = opts.hostAddr ? `${formatIpv4(opts.hostAddr.addr)}/${opts.hostAddr.prefix}` : null;
      const host = opts.hostNetns ? configureHostNetns(tun, opts.hostNetns, hostAddrText, opts.mtu) : configureHostLink(opts, tun, before);
      life.defer(() => host.restore());
    }
    // TUN: device <- --pcap-wire <- impairments <- --pcap <- stack (docs/impairments.md).
    // TAP: device <- --pcap-wire (frames) <- Ethernet <- impairments <- --pcap <- stack:
    // impairments act on IP packets on both kinds of device.
    const scheduler = new RealScheduler();
    const pcapClock = wallClock(); // one clock for both captures, so their times compare
    let device: Device = tun;
    if (opts.pcapWire) {
      const wire = new PcapDevice(device, { path: opts.pcapWire, snaplen: opts.pcapSnaplen ?? 262144, now: pcapClock });
      device = wire;
      life.defer(() => wire.close());
    }
    const link = tap ? ethernetRuntime(opts, device, scheduler, events, bridge) : null;
    if (link) {
      device = link.eth;
      life.defer(() => link.eth.close());
    }
    const impairDevice = new ImpairDevice(device, scheduler);
    device = impairDevice;
    life.defer(() => impairDevice.close());
    if (opts.pcap) {
      const pcap = new PcapDevice(device, {
        path: opts.pcap,
        snaplen: opts.pcapSnaplen ?? 262144,
        now: pcapClock,
        ...(opts.pcapSizeMB !== undefined ? { rotateBytes: opts.pcapSizeMB * 1_000_000 } : {}),
        ...(opts.pcapFiles !== undefined ? { maxFiles: opts.pcapFiles } : {}),
      });
      device = pcap;
      life.defer(() => pcap.close());
    }
    const shard = new StackShard(
      {
        device,
        scheduler,
        deviceName: tun.name,
        txQueueLen: txq,
        queues: tun.queueCount,
        mtu: tun.mtu,
        vnetHdr: tun.vnetHdr,
        tso4: tun.offloads.tso4,
        csum: tun.offloads.csum,
        addr: opts.addr,
        cc: opts.cc,
        extra: {
          ...(link ? link.stackOptions : {}),
          // A firewall's interface answers for its own address only; the rest is forwarded.
          ...(opts.firewall ? { acceptAnyAddress: false } : {}),
        },
        faults,
        events,
        index: null,
      },
      life,
    );
    const stack = shard.stack;
    link?.attach(stack);
    const ipsec = attachIpsec(stack, opts, events);
    if (ipsec) life.defer(() => ipsec.close());
    const nlb = attachNlb(stack, opts, link, ipsec?.ipsec ?? null, faults, events);
    if (nlb) life.defer(() => nlb.close());
    const toxics = new ToxicRegistry(scheduler);
    const impair = new Impairments({ device: impairDevice, toxics, now: () => scheduler.now(), events });
    for (const words of opts.impair ?? []) impair.add(words);
    const rt: Runtime = { stack, device, tun, link, faults, events, installed: shard.installed, startedAt: shard.startedAt, impair };

    await shard.startServices(opts.services, life, {
      api: toxics.wrapApi(shard.api),
      certDir: process.env.FAULTSTACK_CERT_DIR || path.join(path.dirname(opts.control), 'certs'),
    });

    const fw = await attachFirewall(stack, opts, faults, events, scheduler);
    if (fw) life.defer(() => fw.close());

    const view: ControlView = {
      opts,
      tun,
      faults,
      events,
      startedAt: shard.startedAt,
      ports: [new LocalPort(shard)],
      sharded: false,
      link,
      now: () => scheduler.now(),
      ...(nlb ? { nlb: nlb.summary() } : {}),
      ...(fw && opts.firewall
        ? {
            external: {
              tun: fw.tun.name,
              addr: `${formatIpv4(opts.firewall.addr.addr)}/${opts.firewall.addr.prefix}`,
              mtu: fw.tun.mtu,
              hostNetns: opts.firewall.hostNetns ?? null,
              offloads: fw.tun.offloads.names,
            },
          }
        : {}),
    };
    const handlers = {
      ...controlHandlers(view),
      ...impairHandlers(impair),
      ...(ipsec?.handlers ?? {}),
      ...(fw?.handlers ?? {}),
      ...(nlb?.handlers ?? {}),
    };
    const control = await ControlServer.start(opts.control, handlers);
    life.defer(() => control.close());
    const web = await startWeb(opts, handlers, life);
    if (web) view.web = web;

    tun.onError = (err) => {
      events.emit({ kind: 'device-error', message: err.message });
      void life.shutdown();
    };
    if (opts.busyPoll) life.defer(startBusyPoll(tun));
    return { readyLine: readyLine(view), closed: life.closed, shutdown: () => life.shutdown(), runtime: rt, api: shard.api };
  } catch (e) {
    await life.shutdown();
    throw e;
  }
}

/** How long --busy-poll keeps spinning after the last packet before it sleeps in epoll again. */
export const BUSY_POLL_WINDOW_MS = 10;

/**
 * --busy-poll: after each packet the thread reads the TUN queues again and again
 * (TunDevice.pollNow) between its other work, for BUSY_POLL_WINDOW_MS, instead of sleeping
 * in epoll until the next packet wakes it: a wake-up costs about 90 us on this VM, most
 * of a ping's round trip (docs/benchmarks.md). The price: while packets come at least
 * every 10 ms, a core is kept busy (one immediate per turn of the event loop; timers and
 * other I/O still run between them); with no traffic it sleeps as without the option.
 * Returns the stop function.
 */
export function startBusyPoll(tun: TunDevice): () => void {
  let on = true;
  let spinning = false;
  let last = performance.now();
  const spin = () => {
    if (!on || tun.isClosed) {
      spinning = false;
      return;
    }
    // A few empty reads per turn: each is a cheap EAGAIN, each turn costs the event loop's round.
    for (let i = 0; i < 8; i++)
      if (tun.pollNow() > 0) {
        last = performance.now();
        break;
      }
    if (performance.now() - last > BUSY_POLL_WINDOW_MS) {
      spinning = false;
      return;
    }
    setImmediate(spin);
  };
  // Every delivery (from epoll or from a spin) restarts the window.
  const deliver = tun.onReceive;
  tun.onReceive = (pkts, count, metas) => {
    last = performance.now();
    if (!spinning && on) {
      spinning = true;
      setImmediate(spin);
    }
    deliver?.(pkts, count, metas);
  };
  return () => {
    on = false;
    tun.onReceive = deliver;
  };
}
