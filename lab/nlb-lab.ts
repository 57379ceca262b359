/**
 * The NLB lab (KB 972183): a Network Load Balancing cluster of faultstack hosts on a
 * Linux bridge, strongSwan clients (charon + kernel-libipsec) that move between two
 * client networks behind Linux routers, and the sticky application with its session
 * directory. Used by `faultstack lab nlb`, `make demo`, the integration tests and the
 * walkthrough (docs/walkthrough-kb972183.md).
 *
 *   ns cl: bridge (198.18.70.0/24) <- TAP of host 1..N (dedicated 198.18.70.1x, cluster 198.18.70.100)
 *                                  <- veth -- ns ra: router A, 198.18.70.1 (the hosts' gateway) -- bridge A 198.18.60.1/24
 *                                  <- veth -- ns rb: router B, 198.18.70.2 -- bridge B 198.18.61.1/24
 *                                  <- veth -- ns mb: the session directory 198.18.70.200:6100
 *   ns c<i>: client i, a veth into bridge A (an address of 198.18.60.0/24) and one into
 *            bridge B (198.18.61.0/24); charon with two connections, netA and netB, the
 *            same identity client<i>@lab; the mailbox client (lab/clients/mailbox-client.cjs).
 *
 * A move (the article's "disconnects from the service and then reconnects ... from a
 * different network"): the client ends its session (a clean close), its network goes
 * (the link is taken down, so the old IKE SA's delete cannot leave), charon drops the
 * old SA locally, the other network comes up, charon opens a tunnel from the new
 * address, and the client connects again. The client addresses are picked so that each
 * client's two addresses fall in buckets of different hosts (the lab reads the cluster's
 * bucket map and applies the same hash): the case the article is about.
 *
 * Variants: ipsec (the article's setting), ipsec-exception (the sticky application's
 * port outside IPsec: the hosts' IPsec narrows the tunnels to exclude it, the clients
 * route it in the clear), no-ipsec (no charon at all): the article's two workarounds.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ControlClient } from '../stack/control/client';
import { AffinityCode, bucketOf } from '../stack/nlb/hash';
import { formatIpv4, parseIpv4 } from '../stack/wire/addr';
import { Lab, type LabProcess, type StackProcess, repoRoot } from './lab';
import { StrongSwan, type SwanctlOptions } from './strongswan';

export const VIP = '198.18.70.100';
export const APP_PORT = 6001;
export const DIR_ADDR = '198.18.70.200';
export const DIR_PORT = 6100;
export const PSK = 'labsecret';
const hostAddr = (h: number) => `198.18.70.${10 + h}`;

export type Variant = 'ipsec' | 'ipsec-exception' | 'no-ipsec';
export const VARIANTS: readonly Variant[] = ['ipsec', 'ipsec-exception', 'no-ipsec'];
export type FaultMode = 'buggy' | 'hotfixed';

export interface NlbLabOptions {
  hosts: number;
  clients: number;
  tag?: string;
  log?: (line: string) => void;
  /** Cluster mode (default unicast). */
  mode?: 'unicast' | 'multicast' | 'igmp';
}

export interface ScenarioOptions {
  fault: FaultMode;
  variant: Variant;
  /** Moves per client (A -> B, B -> A, ...; default 2). */
  moves?: number;
  /** How long to watch after each move (default: until every client is on one host, at most watchMs). */
  watchMs?: number;
  /** IPsec dead-peer detection of the hosts (default 10 s): about how long buggy keeps an abandoned tunnel. */
  dpd?: string;
}

export interface ClientEvent {
  t: number;
  state: string;
  host?: number;
  via?: string;
  reason?: string;
  from?: string;
}

export interface ClientReport {
  client: number;
  identity: string;
  a: string;
  b: string;
  hostA: number;
  hostB: number;
  events: ClientEvent[];
  /** Per move: ms from the reconnect until its state was on one host (null: never, within the watch). */
  oneHostMs: (number | null)[];
  refusals: number;
  spanned: boolean;
  /** Connected at the end. */
  served: boolean;
}

export interface Sample {
  t: number;
  /** Per client: the hosts holding a tunnel of its identity, and those holding its application logon. */
  clients: { tunnels: number[]; logons: number[] }[];
}

export interface ScenarioResult {
  fault: FaultMode;
  variant: Variant;
  label: string;
  hosts: number;
  clients: number;
  moves: number;
  served: number;
  spanning: number;
  refusals: number;
  /** The last move: ms until every client was on one host (null: not within the watch). */
  timeToOneHostMs: number | null;
  startedAt: number;
  endedAt: number;
  moveTimes: number[];
  reports: ClientReport[];
  samples: Sample[];
  /** Counters of every host at the end (NLB and the fault's). */
  hostCounters: Record<string, number>[];
  /** Every host's event log (faultstack events), by host. */
  hostEvents: { seq: number; ts: string; kind: string; message: string; fault?: string }[][];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function scenarioLabel(fault: FaultMode, variant: Variant): string {
  return variant === 'ipsec' ? fault : `${fault}, workaround: ${variant === 'no-ipsec' ? 'no IPsec' : 'IPsec exception'}`;
}

interface ClientSlot {
  i: number;
  ns: string;
  devA: string;
  devB: string;
  a: string;
  b: string;
  hostA: number;
  hostB: number;
  on: 'A' | 'B';
  sw: StrongSwan | null;
  app: LabProcess | null;
  events: ClientEvent[];
  appLines: number;
}

export class NlbLab {
  private hostProcs: StackProcess[] = [];
  private directory: LabProcess | null = null;
  private readonly slots: ClientSlot[] = [];
  private readonly tmp: string;
  private bridge = '';
  private readonly log: (line: string) => void;
  private constructor(
    readonly lab: Lab,
    readonly o: NlbLabOptions,
  ) {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-nlblab-'));
    this.log = o.log ?? (() => {});
  }

  static async create(o: NlbLabOptions): Promise<NlbLab> {
    if (o.hosts < 1 || o.hosts > 8) throw new Error(`the lab runs 1 to 8 hosts, not ${o.hosts}`);
    if (o.clients < 1 || o.clients > 60) throw new Error(`the lab runs 1 to 60 clients, not ${o.clients}`);
    const lab = await Lab.create(o.tag ?? 'nlb');
    const n = new NlbLab(lab, o);
    try {
      await n.build();
    } catch (e) {
      await n.cleanup();
      throw e;
    }
    return n;
  }

  get controls(): string[] {
    return this.hostProcs.map((p) => p.controlPath);
  }
  get processes(): StackProcess[] {
    return this.hostProcs;
  }

  private async build(): Promise<void> {
    const lab = this.lab;
    await lab.addNamespace('cl');
    // Multicast snooping is off: with it and no querier, Linux floods unknown groups anyway (docs/nlb.md measures it).
    this.bridge = await lab.bridge('cl', { options: ['mcast_snooping', '0'] });
    for (const r of ['ra', 'rb', 'mb']) await lab.addNamespace(r);
    await lab.vethToBridge('ra', 'cl', this.bridge, { addr: '198.18.70.1/24' });
    await lab.vethToBridge('rb', 'cl', this.bridge, { addr: '198.18.70.2/24' });
    await lab.vethToBridge('mb', 'cl', this.bridge, { addr: `${DIR_ADDR}/24` });
    const brA = await lab.bridge('ra', { addr: '198.18.60.1/24' });
    const brB = await lab.bridge('rb', { addr: '198.18.61.1/24' });
    for (const r of ['ra', 'rb']) {
      await lab.sysctl(r, 'net.ipv4.ip_forward', 1);
      // Router A forwards the hosts' replies for network B to router B on the same segment: no redirects.
      await lab.sysctl(r, 'net.ipv4.conf.all.send_redirects', 0);
    }
    await lab.ip('ra', 'route', 'add', '198.18.61.0/24', 'via', '198.18.70.2');
    await lab.ip('rb', 'route', 'add', '198.18.60.0/24', 'via', '198.18.70.1');
    for (let i = 0; i < this.o.clients; i++) {
      const ns = await lab.addNamespace(`c${i}`);
      const { dev: devA } = await lab.vethToBridge(`c${i}`, 'ra', brA, {});
      const { dev: devB } = await lab.vethToBridge(`c${i}`, 'rb', brB, {});
      this.slots.push({ i, ns, devA, devB, a: '', b: '', hostA: 0, hostB: 0, on: 'A', sw: null, app: null, events: [], appLines: 0 });
    }
  }

  // ------------------------------------------------------------------ hosts

  private ipsecFile(variant: Variant, dpd: string): string | null {
    if (variant === 'no-ipsec') return null;
    // The exception: the tunnels carry everything to the cluster address except the sticky application's port.
    const localTs =
      variant === 'ipsec-exception'
        ? `\n    local_ts: ["${VIP}/32[tcp/0-${APP_PORT - 1}]", "${VIP}/32[tcp/${APP_PORT + 1}-65535]", "${VIP}/32[udp]", "${VIP}/32[1]"]`
        : '';
    const file = path.join(this.tmp, `ipsec-${variant}.yaml`);
    fs.writeFileSync(
      file,
      [
        'local:',
        '  id: cluster@lab',
        // Dead-peer detection is what ends an abandoned tunnel when nothing else does.
        'ike:',
        `  dpd: ${dpd}`,
        '  retransmit: 500ms',
        '  retransmit_tries: 2',
        'peers:',
        '  - id: "%any"',
        `    psk: ${PSK}`,
        `    remote_ts: [dynamic]${localTs}`,
        '',
      ].join('\n'),
    );
    return file;
  }

  /** Starts the hosts (in parallel) and waits until they have converged together. */
  async startHosts(fault: FaultMode, variant: Variant, o: { dpd?: string; extra?: string[] } = {}): Promise<void> {
    const ipsec = this.ipsecFile(variant, o.dpd ?? '10s');
    const starts = [];
    for (let h = 1; h <= this.o.hosts; h++) {
      const args = [
        '--tap',
        this.lab.ifname(`t${h}`),
        '--bridge',
        this.bridge,
        '--addr',
        `${hostAddr(h)}/24`,
        '--gateway',
        '198.18.70.1',
        '--nlb',
        VIP,
        '--nlb-priority',
        String(h),
        '--nlb-mode',
        this.o.mode ?? 'unicast',
        '--nlb-app',
        `mailbox=${DIR_ADDR}:${DIR_PORT}`,
        '--services',
        'echo,http',
        '--fault',
        `kb972183=${fault}`,
        '--control',
        path.join(this.tmp, `h${h}.sock`),
        '--events',
        path.join(this.tmp, `h${h}-${fault}-${variant}.events`),
        ...(ipsec ? ['--ipsec', ipsec] : []),
        ...(o.extra ?? []),
      ];
      starts.push(this.lab.startStack('cl', args, { timeoutMs: 30_000 }));
    }
    this.hostProcs = await Promise.all(starts);
    await this.waitConverged(this.o.hosts, 20_000);
  }

  async waitConverged(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const q = await Promise.all(
        this.hostProcs.filter((p) => p.running).map((p) => this.call<{ state: string; hosts: number[] }>(p.controlPath, 'nlb.query').catch(() => null)),
      );
      if (q.length > 0 && q.every((x) => x && x.state.startsWith('Converged') && x.hosts.length === n)) return;
      if (Date.now() > deadline) throw new Error(`the cluster did not converge with ${n} hosts within ${timeoutMs / 1000} s: ${JSON.stringify(q)}`);
      await sleep(100);
    }
  }

  async stopHosts(): Promise<void> {
    await Promise.all(this.hostProcs.map((p) => p.kill(5000)));
    this.hostProcs = [];
  }

  async call<T>(sock: string, cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    return ControlClient.call<T>(sock, cmd, args, { timeoutMs: 5000 });
  }

  /** The owner of each bucket of port rule 0, from host 1. */
  async bucketMap(): Promise<number[]> {
    const d = await this.call<{ rules: { map: number[] | null }[] }>(this.hostProcs[0]!.controlPath, 'nlb.display');
    const m = d.rules[0]?.map;
    if (!m) throw new Error('host 1 has no bucket map');
    return m;
  }

  /** Client addresses: each client's A and B addresses in buckets of different hosts, the clients spread over the hosts. */
  async pickAddresses(): Promise<void> {
    const map = await this.bucketMap();
    const owner = (a: string) => map[bucketOf(AffinityCode.Single, parseIpv4(a)!, 0, map.length)]!;
    const used = new Set<string>();
    const n = this.o.hosts;
    for (const s of this.slots) {
      const wantA = (s.i % n) + 1;
      const wantB = n > 1 ? ((s.i + 1) % n) + 1 : 1;
      const find = (net: string, host: number) => {
        for (let x = 10; x < 250; x++) {
          const a = `${net}.${x}`;
          if (!used.has(a) && owner(a) === host) {
            used.add(a);
            return a;
          }
        }
        throw new Error(`no address of ${net}.0/24 falls in a bucket of host ${host}`);
      };
      s.a = find('198.18.60', wantA);
      s.b = find('198.18.61', wantB);
      s.hostA = wantA;
      s.hostB = wantB;
    }
  }

  // ------------------------------------------------------------------ clients

  private swConfig(s: ClientSlot): SwanctlOptions[] {
    const common = { remoteAddr: VIP, id: `client${s.i}@lab`, psk: PSK, remoteTs: `${VIP}/32`, dpdDelay: '10s' };
    return [
      { ...common, name: 'netA', localAddr: s.a, localTs: `${s.a}/32` },
      { ...common, name: 'netB', localAddr: s.b, localTs: `${s.b}/32` },
    ];
  }

  private async startClients(variant: Variant): Promise<void> {
    const lab = this.lab;
    const script = path.join(repoRoot(), 'lab', 'clients', 'mailbox-client.cjs');
    await Promise.all(
      this.slots.map(async (s) => {
        const ns = `c${s.i}`;
        // Network A up with its address, B configured but down.
        await lab.ip(ns, 'addr', 'replace', `${s.a}/24`, 'dev', s.devA);
        await lab.ip(ns, 'addr', 'replace', `${s.b}/24`, 'dev', s.devB);
        await lab.ip(ns, 'link', 'set', s.devB, 'down');
        await lab.ip(ns, 'link', 'set', s.devA, 'up');
        await lab.ip(ns, 'route', 'replace', 'default', 'via', '198.18.60.1');
        s.on = 'A';
        if (variant === 'ipsec-exception') {
          // The client side of the exception: the application's port stays out of strongSwan's table 220.
          await lab.exec(ns, 'ip', ['rule', 'add', 'priority', '100', 'ipproto', 'tcp', 'dport', String(APP_PORT), 'lookup', 'main'], { check: true });
        }
        if (variant !== 'no-ipsec') {
          s.sw = await StrongSwan.start(lab, ns, path.join(this.tmp, `sw-c${s.i}`), this.swConfig(s));
          const r = await s.sw.initiate(20_000, 'netA-t');
          if (r.code !== 0) throw new Error(`client ${s.i}: swanctl --initiate --child netA-t failed: ${r.stdout.slice(-600)}`);
        }
        s.events = [];
        s.appLines = 0;
        s.app = lab.spawn(ns, process.execPath, [script, VIP, String(APP_PORT), `client${s.i}@lab`]);
        s.app.write(`connect ${s.a}\n`);
      }),
    );
  }

  private collect(s: ClientSlot): void {
    if (!s.app) return;
    const lines = s.app.stdout.split('\n');
    for (let k = s.appLines; k < lines.length - 1; k++) {
      try {
        s.events.push(JSON.parse(lines[k]!) as ClientEvent);
      } catch {
        /* not ours */
      }
    }
    s.appLines = Math.max(s.appLines, lines.length - 1);
  }

  private async stopClients(variant: Variant): Promise<void> {
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.app) {
          s.app.write('quit\n');
          await s.app.kill(2000);
          s.app = null;
        }
        if (s.sw) {
          await s.sw.stop();
          s.sw = null;
        }
        if (variant === 'ipsec-exception') await this.lab.exec(`c${s.i}`, 'ip', ['rule', 'del', 'priority', '100']);
      }),
    );
  }

  private lastState(s: ClientSlot): ClientEvent | undefined {
    this.collect(s);
    return s.events[s.events.length - 1];
  }

  private async waitClients(pred: (e: ClientEvent | undefined, s: ClientSlot) => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.slots.every((s) => pred(this.lastState(s), s))) return true;
      await sleep(50);
    }
    return false;
  }

  /** One move of one client: leave the service, lose the network, come back from the other one. */
  private async move(s: ClientSlot, variant: Variant): Promise<void> {
    const lab = this.lab;
    const ns = `c${s.i}`;
    const from = s.on,
      to = s.on === 'A' ? 'B' : 'A';
    const [devFrom, devTo] = from === 'A' ? [s.devA, s.devB] : [s.devB, s.devA];
    s.app!.write('disconnect\n');
    const t0 = Date.now();
    while (Date.now() - t0 < 3000 && this.lastState(s)?.state !== 'disconnected') await sleep(20);
    await lab.ip(ns, 'link', 'set', devFrom, 'down');
    if (s.sw) await s.sw.swanctl(['--terminate', '--ike', `net${from}`, '--force', '--timeout', '2'], 10_000);
    await lab.ip(ns, 'link', 'set', devTo, 'up');
    await lab.ip(ns, 'route', 'replace', 'default', 'via', to === 'A' ? '198.18.60.1' : '198.18.61.1');
    s.on = to;
    if (s.sw) {
      const r = await s.sw.initiate(20_000, `net${to}-t`);
      if (r.code !== 0) this.log(`client ${s.i}: swanctl --initiate --child net${to}-t failed (${r.code}); the client will keep trying`);
    }
    s.app!.write(`connect ${to === 'A' ? s.a : s.b}\n`);
    void variant;
  }

  // ------------------------------------------------------------------ the scenario

  private async sample(): Promise<Sample> {
    const t = Date.now();
    const per = this.slots.map(() => ({ tunnels: [] as number[], logons: [] as number[] }));
    await Promise.all(
      this.hostProcs.map(async (p, k) => {
        const d = await this.call<{ tunnels: { identity: string }[]; mailbox?: { logons: { identity: string }[] } }>(p.controlPath, 'nlb.display').catch(
          () => null,
        );
        if (!d) return;
        for (const s of this.slots) {
          const id = `client${s.i}@lab`;
          if (d.tunnels.some((x) => x.identity === id)) per[s.i]!.tunnels.push(k + 1);
          if (d.mailbox?.logons.some((x) => x.identity === id)) per[s.i]!.logons.push(k + 1);
        }
      }),
    );
    return { t, clients: per };
  }

  /** Runs one scenario on fresh hosts and clients: settle, then `moves` moves of every client, watching. */
  async runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
    const moves = o.moves ?? 2;
    const watchMs = o.watchMs ?? 25_000;
    this.log(`scenario ${scenarioLabel(o.fault, o.variant)}: ${this.o.hosts} hosts, ${this.o.clients} clients, ${moves} move(s) each`);
    await this.restartDirectory();
    await this.startHosts(o.fault, o.variant, { dpd: o.dpd ?? '10s' });
    await this.pickAddresses();
    await this.startClients(o.variant);
    const startedAt = Date.now();
    const samples: Sample[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push(await this.sample());
        await sleep(200);
      }
    })();
    const moveTimes: number[] = [];
    const oneHost = this.slots.map(() => [] as (number | null)[]);
    try {
      if (!(await this.waitClients((e) => e?.state === 'connected', 20_000))) {
        throw new Error(`not every client connected before the first move: ${this.slots.map((s) => `${s.i}:${this.lastState(s)?.state}`).join(' ')}`);
      }
      await sleep(1000);
      for (let m = 0; m < moves; m++) {
        const t = Date.now();
        moveTimes.push(t);
        this.log(`  move ${m + 1}: every client ${m % 2 === 0 ? 'A -> B' : 'B -> A'}`);
        await Promise.all(
          this.slots.map(async (s, k) => {
            await sleep(k * 50);
            await this.move(s, o.variant);
          }),
        );
        const reconnectAt = Date.now();
        // Watch until every client is connected with its state on one host (the new one), or the watch ends.
        const deadline = reconnectAt + watchMs;
        const done = new Array<number | null>(this.slots.length).fill(null);
        while (Date.now() < deadline && done.some((x) => x === null)) {
          await sleep(200);
          const last = samples[samples.length - 1];
          for (const s of this.slots) {
            if (done[s.i] !== null || !last || last.t < reconnectAt) continue;
            const st = this.lastState(s);
            const c = last.clients[s.i]!;
            const holders = new Set([...c.tunnels, ...c.logons]);
            if (st?.state === 'connected' && holders.size <= 1) done[s.i] = last.t - reconnectAt;
          }
        }
        for (const s of this.slots) oneHost[s.i]!.push(done[s.i] ?? null);
        this.log(`    on one host after ${done.map((x) => (x === null ? 'never' : `${(x / 1000).toFixed(1)} s`)).join(', ')}`);
        await sleep(500);
      }
    } finally {
      sampling = false;
      await sampler;
    }
    const endedAt = Date.now();
    const hostCounters = await Promise.all(
      this.hostProcs.map(async (p) => {
        const d = await this.call<{ counters: Record<string, number>; kb972183?: Record<string, number> }>(p.controlPath, 'nlb.display').catch(() => null);
        return { ...(d?.counters ?? {}), ...(d?.kb972183 ? { tunnelStateKept: Number(d.kb972183.tunnelStateKept) } : {}) };
      }),
    );
    for (const s of this.slots) this.collect(s);
    const reports: ClientReport[] = this.slots.map((s) => ({
      client: s.i,
      identity: `client${s.i}@lab`,
      a: s.a,
      b: s.b,
      hostA: s.hostA,
      hostB: s.hostB,
      events: [...s.events],
      oneHostMs: oneHost[s.i]!,
      refusals: s.events.filter((e) => e.state === 'refused').length,
      spanned: samples.some((x) => new Set([...x.clients[s.i]!.tunnels, ...x.clients[s.i]!.logons]).size > 1),
      served: s.events[s.events.length - 1]?.state === 'connected',
    }));
    await this.stopClients(o.variant);
    await this.stopHosts();
    const hostEvents = this.readEvents(o.fault, o.variant);
    const last = reports.map((r) => r.oneHostMs[r.oneHostMs.length - 1] ?? null);
    return {
      fault: o.fault,
      variant: o.variant,
      label: scenarioLabel(o.fault, o.variant),
      hosts: this.o.hosts,
      clients: this.o.clients,
      moves,
      served: reports.filter((r) => r.served).length,
      spanning: reports.filter((r) => r.spanned).length,
      refusals: reports.reduce((a, r) => a + r.refusals, 0),
      timeToOneHostMs: last.some((x) => x === null) ? null : Math.max(...(last as number[])),
      startedAt,
      endedAt,
      moveTimes,
      reports,
      samples,
      hostCounters,
      hostEvents,
    };
  }

  private readEvents(fault: FaultMode, variant: Variant): ScenarioResult['hostEvents'] {
    const out: ScenarioResult['hostEvents'] = [];
    for (let h = 1; h <= this.o.hosts; h++) {
      let text = '';
      try {
        text = fs.readFileSync(path.join(this.tmp, `h${h}-${fault}-${variant}.events`), 'utf8');
      } catch {
        /* none */
      }
      out.push(
        text
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as ScenarioResult['hostEvents'][number][number]),
      );
    }
    return out;
  }

  private async restartDirectory(): Promise<void> {
    if (this.directory) {
      await this.directory.kill(2000);
      this.directory = null;
    }
    const script = path.join(repoRoot(), 'lab', 'clients', 'mailbox-directory.cjs');
    this.directory = this.lab.spawn('mb', process.execPath, [script, String(DIR_PORT), '2000']);
    await this.directory.waitFor(/listening/, { timeoutMs: 10_000 });
  }

  async cleanup(): Promise<void> {
    try {
      await this.lab.cleanup();
    } finally {
      fs.rmSync(this.tmp, { recursive: true, force: true });
    }
  }
}

export { formatIpv4 };

// ------------------------------------------------------------------ the chart

const HOST_COLORS = ['#2f6fb0', '#4a9a5a', '#8e5ab0', '#b05a2f', '#2fa0a0', '#7a7a2f', '#b02f6f', '#555555'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * One timeline per scenario: a row per client, time across. Green-family bars: connected,
 * coloured by host; amber: trying to connect; red ticks: refused; a hatched band under the
 * row where the client's state (tunnels, logons) was on more than one host.
 */
export function timelineSvg(results: ScenarioResult[]): string {
  const rowH = 16,
    gap = 4,
    labelW = 110,
    plotW = 760,
    headH = 40;
  const height = results.reduce((a, r) => a + headH + r.clients * (rowH + gap) + 14, 0) + 44;
  const width = labelW + plotW + 30;
  // One time scale for every scenario, so their lengths compare.
  const span = Math.max(1000, ...results.map((r) => r.endedAt - r.startedAt));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    '<defs><pattern id="span" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#d04040" stroke-width="2"/></pattern></defs>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
  ];
  let y = 8;
  for (const r of results) {
    const t0 = r.startedAt,
      t1 = r.endedAt;
    const x = (t: number) => labelW + ((Math.min(Math.max(t, t0), t1) - t0) / span) * plotW;
    out.push(`<text x="4" y="${y + 13}" font-size="12" font-weight="bold">${esc(r.label)}</text>`);
    out.push(
      `<text x="4" y="${y + 27}" fill="#444">${r.refusals} refusals; ${r.spanning} of ${r.clients} clients with state on more than one host; ` +
        `${r.timeToOneHostMs === null ? 'not every client on one host within the watch' : `every client on one host ${(r.timeToOneHostMs / 1000).toFixed(1)} s after the last move`}</text>`,
    );
    const top = y + headH - 6,
      bottom = y + headH + r.clients * (rowH + gap);
    for (let s = 0; s * 1000 <= t1 - t0; s += 5) {
      const tx = x(t0 + s * 1000);
      out.push(
        `<line x1="${tx}" y1="${top}" x2="${tx}" y2="${bottom}" stroke="#eee"/><text x="${tx}" y="${bottom + 10}" font-size="9" fill="#888" text-anchor="middle">${s}s</text>`,
      );
    }
    for (const mt of r.moveTimes) out.push(`<line x1="${x(mt)}" y1="${top}" x2="${x(mt)}" y2="${bottom}" stroke="#888" stroke-dasharray="3,3"/>`);
    let ry = y + headH;
    for (const c of r.reports) {
      out.push(`<text x="4" y="${ry + 11}">${esc(c.identity)}</text>`);
      let spanFrom: number | null = null;
      for (const smp of r.samples) {
        const many = new Set([...smp.clients[c.client]!.tunnels, ...smp.clients[c.client]!.logons]).size > 1;
        if (many && spanFrom === null) spanFrom = smp.t;
        if (!many && spanFrom !== null) {
          out.push(`<rect x="${x(spanFrom)}" y="${ry + rowH - 4}" width="${Math.max(1, x(smp.t) - x(spanFrom))}" height="4" fill="url(#span)"/>`);
          spanFrom = null;
        }
      }
      if (spanFrom !== null)
        out.push(`<rect x="${x(spanFrom)}" y="${ry + rowH - 4}" width="${Math.max(1, x(t1) - x(spanFrom))}" height="4" fill="url(#span)"/>`);
      const ev = c.events;
      for (let k = 0; k < ev.length; k++) {
        const e = ev[k]!;
        const end = k + 1 < ev.length ? ev[k + 1]!.t : t1;
        const w = Math.max(1, x(end) - x(e.t));
        if (e.state === 'connected')
          out.push(
            `<rect x="${x(e.t)}" y="${ry}" width="${w}" height="${rowH - 5}" fill="${HOST_COLORS[((e.host ?? 1) - 1) % HOST_COLORS.length]}"><title>connected to host ${e.host} (${e.via})</title></rect>`,
          );
        else if (e.state === 'trying' || e.state === 'lost' || e.state === 'refused')
          out.push(`<rect x="${x(e.t)}" y="${ry}" width="${w}" height="${rowH - 5}" fill="#e0a030"><title>trying to connect</title></rect>`);
        else if (e.state === 'disconnected')
          out.push(`<rect x="${x(e.t)}" y="${ry + 3}" width="${w}" height="${rowH - 11}" fill="#ccc"><title>moving to the other network</title></rect>`);
        if (e.state === 'refused')
          out.push(`<rect x="${x(e.t) - 1}" y="${ry - 2}" width="2" height="${rowH}" fill="#d04040"><title>${esc(e.reason ?? 'refused')}</title></rect>`);
      }
      ry += rowH + gap;
    }
    y += headH + r.clients * (rowH + gap) + 14;
  }
  const ly = height - 16;
  const hosts = Math.max(...results.map((r) => r.hosts));
  let lx = 4;
  for (let h = 0; h < hosts; h++) {
    out.push(
      `<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${HOST_COLORS[h % HOST_COLORS.length]}"/><text x="${lx + 13}" y="${ly}">host ${h + 1}</text>`,
    );
    lx += 60;
  }
  out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="#e0a030"/><text x="${lx + 13}" y="${ly}">trying to connect</text>`);
  out.push(`<rect x="${lx + 120}" y="${ly - 9}" width="2" height="12" fill="#d04040"/><text x="${lx + 126}" y="${ly}">refused</text>`);
  out.push(`<rect x="${lx + 180}" y="${ly - 4}" width="30" height="4" fill="url(#span)"/><text x="${lx + 214}" y="${ly}">state on more than one host</text>`);
  out.push(
    `<line x1="${lx + 380}" y1="${ly - 10}" x2="${lx + 380}" y2="${ly + 2}" stroke="#888" stroke-dasharray="3,3"/><text x="${lx + 385}" y="${ly}">a move</text>`,
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}
