/**
 * An NLB cluster on the in-memory Ethernet segment (a learning bridge by default, as a
 * Linux bridge is), on a virtual clock: N hosts (EthernetInterface + Stack + NlbHost,
 * each serving TCP port 80 with its own priority as the first line), and one client
 * stack that answers ARP for a whole client range (proxy ARP), so one stack opens
 * connections from many client addresses.
 */
import { EthernetSegment } from '../../../drivers/memory-ethernet';
import { PcapDevice } from '../../../drivers/pcap';
import { VirtualClock } from '../../../drivers/memory';
import { EthernetInterface } from '../../../stack/iface/ethernet';
import { Stack } from '../../../stack/stack';
import { VirtualScheduler } from '../../../stack/runtime/scheduler';
import { createNetApi, FsSocket } from '../../../stack/api/net';
import { formatIpv4, parseIpv4 } from '../../../stack/wire/addr';
import { macFromIpv4 } from '../../../stack/wire/ethernet';
import { NlbHost, type NlbEvent, type NlbIpsec } from '../../../stack/nlb/host';
import { DEFAULT_BUCKETS, DEFAULT_NLB_PARAMS, defaultRule, type NlbConfig, type NlbMode, type NlbParams, type PortRule } from '../../../stack/nlb/config';
import { runUntil } from './pair';

export const CLUSTER = '198.18.70.100';
export const CLUSTER_IP = parseIpv4(CLUSTER)!;
export const CLIENT_NET = '198.18.70.128';
export const hostAddr = (p: number) => `198.18.70.${10 + p}`;

export interface ClusterHost {
  priority: number;
  addr: number;
  eth: EthernetInterface;
  stack: Stack;
  nlb: NlbHost;
  net: ReturnType<typeof createNetApi>;
  events: NlbEvent[];
  /** Server-side sockets accepted on port 80 (still open or not). */
  accepted: FsSocket[];
  params: NlbParams;
}

export interface HostOptions {
  mode?: NlbMode;
  rules?: PortRule[];
  params?: Partial<NlbParams>;
  buckets?: number;
  ipsec?: (stack: Stack) => NlbIpsec;
  /** Extra servers on the host (ports other than 80). */
  serve?: number[];
  initialState?: 'started' | 'stopped';
  /** Record host `host`'s frames (both ways) in a pcap file. */
  pcap?: { host: number; path: string };
}

export function makeCluster(n: number, opts: HostOptions & { segment?: 'hub' | 'bridge' } = {}) {
  const clock = new VirtualClock(1000);
  const seg = new EthernetSegment({ clock, latencyMs: 0.05, mode: opts.segment ?? 'bridge' });
  const sched = new VirtualScheduler(clock);
  const hosts: ClusterHost[] = [];

  const addHost = (priority: number, o: HostOptions = opts): ClusterHost => {
    const addr = parseIpv4(hostAddr(priority))!;
    const port = seg.port(`h${priority}`);
    const lower = o.pcap && o.pcap.host === priority ? new PcapDevice(port, { path: o.pcap.path, now: () => clock.now }) : port;
    const eth = new EthernetInterface({ lower, scheduler: sched, mac: macFromIpv4(addr), address: addr, prefix: 24, random: () => 0.5 });
    const stack = new Stack({ device: eth, scheduler: sched, address: addr, prefix: 24, acceptAnyAddress: false, ownsAddress: (a) => eth.ownsAddress(a) });
    eth.useRoutes(stack.routes);
    eth.start();
    const params: NlbParams = { ...DEFAULT_NLB_PARAMS, ...(o.params ?? {}) };
    const events: NlbEvent[] = [];
    const config: NlbConfig = {
      clusterIp: CLUSTER_IP,
      clusterPrefix: 24,
      dedicatedIp: addr,
      priority,
      mode: o.mode ?? 'unicast',
      rules: (o.rules ?? [defaultRule()]).map((r) => ({ ...r })),
      buckets: o.buckets ?? DEFAULT_BUCKETS,
      hashSeed: 0,
      hostName: `host${priority}`,
      initialState: o.initialState ?? 'started',
    };
    const nlb = new NlbHost({
      config,
      params: () => params,
      link: eth,
      stack,
      ipsec: o.ipsec ? o.ipsec(stack) : null,
      incarnation: 1000 + priority,
      onEvent: (e) => events.push(e),
    });
    const net = createNetApi(stack);
    const accepted: FsSocket[] = [];
    for (const p of [80, ...(o.serve ?? [])]) {
      net
        .createServer((s) => {
          accepted.push(s as FsSocket);
          s.on('error', () => {});
          s.write(`host ${priority}\n`);
          s.on('data', (d: Buffer) => s.write(d)); // an echo after the greeting
          s.on('end', () => s.end());
        })
        .listen(p);
    }
    const h = { priority, addr, eth, stack, nlb, net, events, accepted, params };
    hosts.push(h);
    return h;
  };
  for (let i = 1; i <= n; i++) addHost(i);

  // The client: 198.18.70.2, answering ARP for 198.18.70.128/25 (every client address).
  const cAddr = parseIpv4('198.18.70.2')!;
  const cPort = seg.port('client');
  const cEth = new EthernetInterface({
    lower: cPort,
    scheduler: sched,
    mac: macFromIpv4(cAddr),
    address: cAddr,
    prefix: 24,
    random: () => 0.5,
    proxyArp: [{ addr: parseIpv4(CLIENT_NET)!, prefix: 25 }],
  });
  const cStack = new Stack({ device: cEth, scheduler: sched, address: cAddr, prefix: 24, acceptAnyAddress: false, ownsAddress: (a) => cEth.ownsAddress(a) });
  cEth.useRoutes(cStack.routes);
  cEth.start();
  const client = { addr: cAddr, eth: cEth, stack: cStack, net: createNetApi(cStack) };

  const converged = () => hosts.every((h) => h.nlb.role === 'stopped' || h.nlb.converged);
  return { clock, seg, sched, hosts, addHost, client, converged };
}

export type Cluster = ReturnType<typeof makeCluster>;

export function clientAddr(i: number): string {
  return formatIpv4(parseIpv4(CLIENT_NET)! + 1 + i);
}

export interface Opened {
  sock: FsSocket;
  /** Everything received (the greeting, then the echo). */
  text: string;
  /** The first line the server sent: which host answered. */
  host: number | null;
  error: Error | null;
  closed: boolean;
}

/** Opens a connection from `local` to the cluster's port; `host` fills in when the greeting arrives. */
export function open(c: Cluster, local: string, port = 80): Opened {
  const o: Opened = { sock: null as unknown as FsSocket, text: '', host: null, error: null, closed: false };
  const sock = c.client.net.connect({ host: CLUSTER, port, localAddress: local }) as FsSocket;
  o.sock = sock;
  sock.on('data', (d: Buffer) => {
    o.text += d.toString();
    const m = /^host (\d+)\n/.exec(o.text);
    if (m && o.host === null) o.host = Number(m[1]);
  });
  sock.on('error', (e) => {
    o.error = e;
  });
  sock.on('close', () => {
    o.closed = true;
  });
  return o;
}

/** A host dies: its port stops sending and receiving (no last heartbeat). */
export function kill(h: ClusterHost): void {
  h.eth.close();
}

/** Sends `word` on every open connection and waits for each echo; returns those that did not come back. */
export async function echoAll(c: Cluster, conns: Opened[], word: string, maxMs = 10_000): Promise<Opened[]> {
  const before = conns.map((o) => o.text.length);
  for (const o of conns) o.sock.write(word);
  await runUntil(c.clock, () => conns.every((o, i) => o.text.slice(before[i]).includes(word) || o.error !== null || o.closed), maxMs, 5);
  return conns.filter((o, i) => !o.text.slice(before[i]).includes(word));
}

export async function waitConverged(c: Cluster, maxMs = 30_000): Promise<boolean> {
  return runUntil(c.clock, c.converged, maxMs, 10);
}
