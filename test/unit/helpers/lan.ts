/**
 * Stacks on one in-memory Ethernet segment (hub or learning bridge) on a virtual clock,
 * each behind its own EthernetInterface: the unit-test rig for the link layer. A raw
 * port lets a test put crafted frames on the segment and see what reaches it.
 */
import { EthernetPort, EthernetSegment, EthernetSegmentOptions } from '../../../drivers/memory-ethernet';
import { VirtualClock } from '../../../drivers/memory';
import { EthernetInterface, EthernetInterfaceOptions } from '../../../stack/iface/ethernet';
import { Stack, StackOptions } from '../../../stack/stack';
import { VirtualScheduler } from '../../../stack/runtime/scheduler';
import { createNetApi } from '../../../stack/api/net';
import { parseIpv4 } from '../../../stack/wire/addr';
import { MacAddr, macFromIpv4, readMac } from '../../../stack/wire/ethernet';

export interface HostSpec {
  name: string;
  addr: string;
  prefix?: number;
  mac?: MacAddr;
  gateway?: string;
  eth?: Partial<EthernetInterfaceOptions>;
  stack?: Partial<StackOptions>;
  /** Don't call eth.start() (no announcements). */
  noStart?: boolean;
}

export interface LanHost {
  name: string;
  addr: number;
  mac: MacAddr;
  port: EthernetPort;
  eth: EthernetInterface;
  stack: Stack;
  net: ReturnType<typeof createNetApi>;
}

/** One stack on the segment: an EthernetInterface over a port, the stack over it, the routes wired. */
export function addHost(seg: EthernetSegment, sched: VirtualScheduler, h: HostSpec): LanHost {
  const addr = parseIpv4(h.addr)!;
  const prefix = h.prefix ?? 24;
  const mac = h.mac ?? macFromIpv4(addr);
  const port = seg.port(h.name);
  const eth = new EthernetInterface({ lower: port, scheduler: sched, mac, address: addr, prefix, random: () => 0.5, ...h.eth });
  const stack = new Stack({
    device: eth,
    scheduler: sched,
    address: addr,
    prefix,
    acceptAnyAddress: false,
    ownsAddress: (a) => eth.ownsAddress(a),
    gateway: h.gateway ? parseIpv4(h.gateway)! : 0,
    ...h.stack,
  });
  eth.useRoutes(stack.routes);
  if (!h.noStart) eth.start();
  return { name: h.name, addr, mac, port, eth, stack, net: createNetApi(stack) };
}

export function makeLan(hosts: HostSpec[], opts: EthernetSegmentOptions = {}) {
  const clock = opts.clock ?? new VirtualClock(1000);
  const seg = new EthernetSegment({ latencyMs: 0.05, ...opts, clock });
  const sched = new VirtualScheduler(clock);
  const byName: Record<string, LanHost> = {};
  for (const h of hosts) byName[h.name] = addHost(seg, sched, h);
  /** A port for crafted frames: what reaches it is kept in `got`. */
  const raw = seg.port('raw');
  const got: Buffer[] = [];
  raw.onReceive = (frames, n) => {
    for (let i = 0; i < n; i++) got.push(Buffer.from(frames[i]!));
  };
  const sendRaw = (frame: Buffer) => {
    raw.send(frame);
    raw.flush();
  };
  return { clock, seg, sched, hosts: byName, raw, got, sendRaw };
}

export type Lan = ReturnType<typeof makeLan>;

export const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Frames seen on the segment with this EtherType (and, optionally, from this port). */
export function framesOf(seg: EthernetSegment, etherType: number, from?: string): Buffer[] {
  return seg.seen.filter((f) => f.frame.length >= 14 && f.frame.readUInt16BE(12) === etherType && (from === undefined || f.from === from)).map((f) => f.frame);
}

export function dstMac(frame: Buffer): MacAddr {
  return readMac(frame, 0);
}
export function srcMac(frame: Buffer): MacAddr {
  return readMac(frame, 6);
}
