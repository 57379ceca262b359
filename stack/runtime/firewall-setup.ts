/**
 * `faultstack run --external-tun NAME --external-addr IP/PREFIX ...`: faultstack as a
 * firewall (stack/firewall/). The stack `run` builds is the internal interface; this
 * opens the external TUN device, builds its Stack, the Firewall between the two, the
 * streaming-media filter and the Firewall Client service (TCP 1745 on the internal
 * address), installs KB 319381's fault module, writes the firewall's events to the
 * event log and serves `faultstack fw` on the control socket.
 *
 * `--host-netns NS` / `--external-host-netns NS` put a TUN device's kernel side in
 * another network namespace (the device is moved there and configured with `ip -n`):
 * the internal host and the media server are then kernels of their own, reachable only
 * through the firewall.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { RuntimeOptions as RunOptions } from './options';
import { PcapDevice, wallClock } from '../../drivers/pcap';
import type { Device } from '../../drivers/device';
import { type TunDevice, txQueueLen } from '../../drivers/tun/index';
import type { ControlHandler } from '../control/server';
import { badArgument } from '../control/protocol';
import type { FaultConfig } from '../faults/config';
import type { EventLog } from '../faults/events';
import { kb319381 } from '../faults/kb319381/index';
import { Firewall, type FirewallEvent } from '../firewall/firewall';
import { FwcService } from '../firewall/fwc-service';
import { StreamingMediaFilter } from '../firewall/media';
import { DROP_REASONS } from '../firewall/sessions';
import { EVENT_ALL_PORT_SCAN, EVENT_WELL_KNOWN_PORT_SCAN } from '../firewall/portscan';
import { DEFAULT_RULES } from '../firewall/rules';
import { Stack, type Scheduler } from '../stack';
import { CodedError, UsageError } from '../util/errors';
import { formatIpv4 } from '../wire/addr';
import { openRunTun, rxQueueBytes, stackOffloads } from './setup';

/** The kernel side of a TUN device in another namespace: moved there, addressed, up. */
export function configureHostNetns(tun: TunDevice, netns: string, hostAddr: string | null, mtu: number): { restore(): void } {
  if (!fs.existsSync(`/run/netns/${netns}`) && !fs.existsSync(`/var/run/netns/${netns}`)) {
    throw new UsageError(`network namespace ${netns} does not exist (ip netns add ${netns})`);
  }
  if (!tun.created) throw new UsageError(`--host-netns moves the TUN device into ${netns}: ${tun.name} existed before this run, use a new name`);
  const ip = (args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 10_000 });
  try {
    ip(['link', 'set', 'dev', tun.name, 'netns', netns]);
    if (hostAddr) ip(['-n', netns, 'addr', 'add', hostAddr, 'dev', tun.name]);
    ip(['-n', netns, 'link', 'set', 'dev', tun.name, 'mtu', String(mtu), 'up']);
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new CodedError('ERR_IP_COMMAND', `cannot put the kernel side of ${tun.name} in namespace ${netns}: ${(err.stderr ?? err.message).toString().trim()}`);
  }
  // The device goes when its descriptor closes, in whichever namespace it is.
  return { restore() {} };
}

export interface FirewallRuntime {
  firewall: Firewall;
  media: StreamingMediaFilter;
  fwc: FwcService;
  external: Stack;
  tun: TunDevice;
  handlers: Record<string, ControlHandler>;
  summary(): Record<string, unknown>;
  close(): Promise<void>;
}

const PORT_SCAN_TEXT: Record<number, (a: string) => string> = {
  // The article's event texts (ISA Server Control, category Packet filter).
  [EVENT_WELL_KNOWN_PORT_SCAN]: (a) =>
    `ISA Server detected a well-known port scan attack from Internet Protocol (IP) address ${a}. A well-known port is any port in the range of 1-2048.`,
  [EVENT_ALL_PORT_SCAN]: (a) => `ISA Server detected an all port scan attack from Internet Protocol (IP) address ${a}.`,
};

function logged(e: FirewallEvent): { fault?: string; kind: string; message: string; data: object } {
  switch (e.kind) {
    case 'port-scan': {
      const a = formatIpv4(e.scan.address);
      return {
        kind: e.scan.id === EVENT_WELL_KNOWN_PORT_SCAN ? 'port-scan-well-known' : 'port-scan-all-ports',
        message: PORT_SCAN_TEXT[e.scan.id]!(a),
        data: {
          eventId: e.scan.id,
          source: 'Microsoft ISA Server Control',
          category: 'Packet filter',
          type: 'Warning',
          address: a,
          ports: e.scan.ports,
          threshold: e.scan.threshold,
          sample: e.scan.sample,
        },
      };
    }
    case 'media':
      return { fault: 'kb319381', kind: `media-port-${e.action}`, message: e.message, data: e.data };
    case 'fwc':
      return { kind: `fwc-${e.action}`, message: e.message, data: e.data };
  }
}

export async function attachFirewall(
  internal: Stack,
  opts: RunOptions,
  faults: FaultConfig,
  events: EventLog,
  scheduler: Scheduler,
): Promise<FirewallRuntime | null> {
  const fo = opts.firewall;
  if (!fo) return null;
  const cleanups: (() => void | Promise<void>)[] = [];
  const cleanup = async () => {
    for (const f of cleanups.reverse()) {
      try {
        await f();
      } catch {
        /* best effort */
      }
    }
    cleanups.length = 0;
  };
  try {
    const tun = openRunTun({ ...opts, tun: fo.tun, mtu: fo.mtu, queues: 1, hostConfig: true, shards: false }, {}, null);
    cleanups.push(() => tun.close());
    if (!tun.created) throw new UsageError(`--external-tun ${fo.tun} exists already: give a new name (the firewall creates its devices)`);
    const txq = txQueueLen(tun.name);
    const hostAddr = fo.hostAddr ? `${formatIpv4(fo.hostAddr.addr)}/${fo.hostAddr.prefix}` : null;
    if (fo.hostNetns) configureHostNetns(tun, fo.hostNetns, hostAddr, fo.mtu);
    else execFileSync('ip', hostAddr ? ['addr', 'add', hostAddr, 'dev', tun.name] : ['link', 'show', tun.name], { stdio: 'ignore', timeout: 10_000 });
    if (!fo.hostNetns) execFileSync('ip', ['link', 'set', 'dev', tun.name, 'mtu', String(fo.mtu), 'up'], { stdio: 'ignore', timeout: 10_000 });
    let device: Device = tun;
    if (fo.pcap) {
      const pcap = new PcapDevice(device, { path: fo.pcap, snaplen: opts.pcapSnaplen ?? 262144, now: wallClock() });
      device = pcap;
      cleanups.push(() => pcap.close());
    }
    const external = new Stack({
      device,
      scheduler,
      address: fo.addr.addr,
      prefix: fo.addr.prefix,
      mtu: tun.mtu,
      acceptAnyAddress: false,
      tcp: { congestionControl: opts.cc },
      ...stackOffloads(tun.vnetHdr, tun.offloads.tso4, tun.offloads.csum),
      rxQueueBytes: rxQueueBytes(txq, 1, tun.mtu, tun.vnetHdr, tun.offloads.tso4),
    });
    cleanups.push(() => external.close());
    // The emulated system's TTL on both interfaces (installFaults sets the internal one).
    const applyTtl = () => {
      external.ttl = faults.params.DefaultTTL;
    };
    applyTtl();
    const unTtl = faults.onChange(applyTtl);
    cleanups.push(unTtl);
    const firewall = new Firewall({ internal, external, rules: fo.rules.length ? [...DEFAULT_RULES, ...fo.rules] : DEFAULT_RULES });
    cleanups.push(() => firewall.close());
    const media = new StreamingMediaFilter(firewall);
    const fwc = new FwcService({ firewall, media });
    await fwc.start();
    cleanups.push(() => fwc.close());
    const fault = kb319381.install({ stack: internal, config: faults, events, features: { firewall } });
    cleanups.push(() => fault.uninstall());
    const unsub = firewall.subscribe((e) => {
      try {
        events.emit(logged(e));
      } catch {
        /* the log is closed at shutdown */
      }
    });
    cleanups.push(unsub);
    tun.onError = (err) => {
      try {
        events.emit({ kind: 'device-error', message: `external ${tun.name}: ${err.message}` });
      } catch {
        /* closed */
      }
    };

    const summary = () => {
      const now = internal.clock();
      return {
        interfaces: [
          {
            name: 'internal',
            device: internal.device.name,
            address: `${formatIpv4(internal.address)}/${internal.prefix}`,
            mtu: internal.routes.interfaceMtu,
            hostNetns: opts.hostNetns ?? null,
          },
          {
            name: 'external',
            device: tun.name,
            address: `${formatIpv4(external.address)}/${external.prefix}`,
            mtu: external.routes.interfaceMtu,
            hostNetns: fo.hostNetns ?? null,
            offloads: tun.offloads.names,
          },
        ],
        routes: firewall.routes(),
        counters: { ...firewall.counters },
        drops: firewall.describeDrops(),
        dropReasons: DROP_REASONS,
        fwc: { ...fwc.counters },
        media: { enabled: media.enabled, ...media.counters },
        portScan: {
          ...firewall.thresholds(),
          intervalMs: firewall.scan.intervalMs,
          raised: firewall.scan.raised,
          trackedAddresses: firewall.scan.trackedAddresses,
        },
        sessions: firewall.sessions.size,
        fault: { id: 'kb319381', mode: faults.modes.kb319381, ...(fault.stats?.() ?? {}) },
        externalStack: { counters: { ...external.counters } },
        at: Math.round(now),
      };
    };
    const handlers: Record<string, ControlHandler> = {
      fw: (args) => {
        const what = args.what ?? 'summary';
        const now = internal.clock();
        switch (what) {
          case 'summary':
            return summary();
          case 'sessions':
            return { sessions: firewall.describeSessions(now), fwcConnections: fwc.describeConnections(), fwcSessions: fwc.describeSessions() };
          case 'bindings':
            return {
              bindings: fwc.describeBindings(),
              media: media.describe(now),
              openings: firewall.describeSessions(now).filter((r) => r.kind === 'filter-opening'),
            };
          case 'rules':
            return {
              rules: firewall.rules.describe(),
              defaultInbound: 'deny',
              defaultOutbound: 'deny (unless a rule allows)',
              drops: firewall.describeDrops(),
            };
          default:
            throw badArgument(`"what" must be summary, sessions, bindings or rules, not ${JSON.stringify(what)}`);
        }
      },
    };
    return {
      firewall,
      media,
      fwc,
      external,
      tun,
      handlers,
      summary,
      close: cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
