/**
 * The path-MTU lab (KB 898060): faultstack behind real Linux routers whose links
 * have smaller MTUs, and a client namespace with hundreds of addresses, so that
 * real ICMP "fragmentation needed" messages from real routers create and update
 * the stack's host routes for many destinations. Used by the integration tests
 * (test/integration/kb898060.test.ts), the benchmark (bench/pmtu.ts) and the
 * walkthrough (docs/walkthrough-kb898060.md).
 *
 *   k (faultstack on a TUN device, 198.18.0.2; the kernel side 198.18.0.1 forwards)
 *   |  1500
 *   r1 ---- path A: link MTU 1400 ---- r2 ---- 1500 -------------------- c
 *    \                                                                   |
 *     `---- path B: link MTU 1280 ---- r3 ---- "tunnel" hop, MTU 1000 ---'
 *
 *   c holds the client addresses 198.19.<i/250+1>.<i%250+1> (on lo) and sends
 *   everything back through r2. r1 chooses the forward path: A, B, or both
 *   (multipath, hashed per connection on addresses and ports).
 *
 * A full-size segment (1500 bytes) to a client therefore meets one smaller hop on
 * path A (r1 answers 1400) and two on path B (r1 answers 1280, then r3 answers
 * 1000): a destination reached over A and later over B has its host route created
 * once and lowered twice, which is what the buggy counting rule counts three times.
 *
 * Every namespace, link, process and file is removed by cleanup(), also on failure
 * (the Lab underneath sweeps what a killed run left).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, LabProcess, StackProcess, repoRoot } from './lab';

export const STACK_ADDR = '198.18.0.2';
export const CLIENT_PREFIX = '198.19.0.0/16';

/** The routers' links: who sends the ICMP message for which hop. */
export const HOPS = {
  /** r1 -> r2: on path A, r1 answers 1400. */
  pathA: 1400,
  /** r1 -> r3: on path B, r1 answers 1280. */
  pathB: 1280,
  /** r3 -> c: the small "tunnel" hop; r3 answers 1000. */
  tunnel: 1000,
} as const;

export type PathChoice = 'A' | 'B' | 'balanced';

export interface PmtuLabOptions {
  /** Lab tag (namespace names); at most 3 characters are used. */
  tag?: string;
  /** Client addresses in the client namespace (default 300, at most 12 500). */
  clients?: number;
  /** Forward path at the start (default A). */
  path?: PathChoice;
}

export interface StackConfig {
  /** KB 898060 mode (default hotfixed). */
  mode?: 'buggy' | 'hotfixed';
  /** Catalogue parameters: { MaxIcmpHostRoutes: 20, MTU: 576, ... }. */
  params?: Record<string, number | string>;
  /** TUN offloads (TSO super-segments cut by the kernel); default on. */
  offloads?: boolean;
  /** Write the event log here too. */
  eventsFile?: string;
  /** More `faultstack run` flags (a scenario's --impair, say). */
  extraArgs?: string[];
}

export type DownloadOutcome = 'ok' | 'stalled' | 'connect-failed' | 'error';

export interface DownloadResult {
  id: number;
  local: string;
  outcome: DownloadOutcome;
  /** Time to the TCP connection, ms (null: never connected). */
  connectMs: number | null;
  ms: number;
  /** Body bytes received. */
  bytes: number;
  error?: string;
}

export interface CurlResult {
  /** curl's exit status (28: the --max-time ran out). */
  exit: number | null;
  httpCode: number;
  bytes: number;
  /** Seconds to the TCP connection (0: never connected). */
  connectS: number;
  totalS: number;
  stderr: string;
}

/** What `faultstack routes --json` returns. */
export interface RoutesReply {
  interfaceMtu: number;
  networks: { dest: string; mtu: number; kind: string }[];
  hosts: { dest: string; mtu: number; source: string; updates: number; ageSec: number; sinceUpdateSec: number }[];
  hostRouteCount: number;
  hostRoutesReal: number;
  maxIcmpHostRoutes: number;
  atLimit: boolean;
  countRule: 'buggy' | 'hotfixed';
}

export interface LabEvent {
  seq?: number;
  fault?: string;
  kind: string;
  message?: string;
  data?: Record<string, unknown>;
}

function parseReply(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const m = /position (\d+)/.exec((e as Error).message);
    const at = m ? Number(m[1]) : 0;
    throw new Error(
      `faultstack ${what} --json printed ${text.length} characters that do not parse (${(e as Error).message}); around it: ${JSON.stringify(text.slice(Math.max(0, at - 300), at + 100))}`,
      { cause: e },
    );
  }
}

/** The i-th client address (0-based): 198.19.1.1 ... 198.19.1.250, 198.19.2.1, ... */
export function clientAddress(i: number): string {
  return `198.19.${Math.floor(i / 250) + 1}.${(i % 250) + 1}`;
}

export class PmtuLab {
  stack: StackProcess | null = null;
  path: PathChoice = 'A';
  readonly clients: string[];
  private worker: LabProcess | null = null;
  private workerBuf = '';
  private readonly waiting = new Map<number, (r: DownloadResult) => void>();
  private nextJob = 1;
  private stackCount = 0;

  private constructor(
    readonly lab: Lab,
    readonly ns: { k: string; r1: string; r2: string; r3: string; c: string },
    readonly tmp: string,
    clients: number,
  ) {
    this.clients = Array.from({ length: clients }, (_, i) => clientAddress(i));
  }

  get controlPath(): string {
    return path.join(this.tmp, 'ctl.sock');
  }

  /** Builds the namespaces, links and routes. Cleans up what it made if a step fails. */
  static async create(opts: PmtuLabOptions = {}): Promise<PmtuLab> {
    const n = opts.clients ?? 300;
    if (!(Number.isInteger(n) && n >= 1 && n <= 12_500)) throw new RangeError(`clients must be 1..12500, not ${n}`);
    const lab = await Lab.create(opts.tag ?? 'pmt');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-pmtu-'));
    try {
      const names = ['k', 'r1', 'r2', 'r3', 'c'] as const;
      const ns = {} as Record<(typeof names)[number], string>;
      for (const name of names) {
        ns[name] = await lab.addNamespace(name);
        // Asymmetric paths (out over B, back over A) must not be dropped by reverse-path
        // filtering; set before the links exist so that each link inherits it.
        for (const k of ['all', 'default']) await lab.sysctl(ns[name], `net.ipv4.conf.${k}.rp_filter`, 0);
      }
      await lab.veth(ns.k, ns.r1, { addrA: '198.18.1.1/24', addrB: '198.18.1.2/24', mtu: 1500 });
      await lab.veth(ns.r1, ns.r2, { addrA: '198.18.2.1/24', addrB: '198.18.2.2/24', mtu: HOPS.pathA });
      await lab.veth(ns.r1, ns.r3, { addrA: '198.18.3.1/24', addrB: '198.18.3.2/24', mtu: HOPS.pathB });
      await lab.veth(ns.r2, ns.c, { addrA: '198.18.4.1/24', addrB: '198.18.4.2/24', mtu: 1500 });
      await lab.veth(ns.r3, ns.c, { addrA: '198.18.5.1/24', addrB: '198.18.5.2/24', mtu: HOPS.tunnel });
      for (const r of [ns.k, ns.r1, ns.r2, ns.r3]) {
        await lab.sysctl(r, 'net.ipv4.ip_forward', 1);
        // Frag-needed is never rate-limited by Linux; no other ICMP error should be either.
        await lab.sysctl(r, 'net.ipv4.icmp_ratelimit', 0);
        for (const k of ['all', 'default']) await lab.sysctl(r, `net.ipv4.conf.${k}.send_redirects`, 0);
      }
      // Per-connection balancing when both paths are in use (L4 hash).
      await lab.sysctl(ns.r1, 'net.ipv4.fib_multipath_hash_policy', 1);
      await lab.ip(ns.k, 'route', 'add', CLIENT_PREFIX, 'via', '198.18.1.2');
      await lab.ip(ns.r1, 'route', 'add', '198.18.0.0/24', 'via', '198.18.1.1');
      await lab.ip(ns.r2, 'route', 'add', 'default', 'via', '198.18.2.1');
      await lab.ip(ns.r2, 'route', 'add', CLIENT_PREFIX, 'via', '198.18.4.2');
      await lab.ip(ns.r3, 'route', 'add', 'default', 'via', '198.18.3.1');
      await lab.ip(ns.r3, 'route', 'add', CLIENT_PREFIX, 'via', '198.18.5.2');
      await lab.ip(ns.c, 'route', 'add', 'default', 'via', '198.18.4.1');
      const batch = Array.from({ length: n }, (_, i) => `address add ${clientAddress(i)}/32 dev lo`).join('\n') + '\n';
      await lab.exec(ns.c, 'ip', ['-batch', '-'], { input: batch, check: true, timeoutMs: 60_000 });
      const pl = new PmtuLab(lab, ns, tmp, n);
      await pl.usePath(opts.path ?? 'A');
      return pl;
    } catch (e) {
      await lab.cleanup().catch(() => {});
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  // ------------------------------------------------------------------ the stack

  /** (Re)starts faultstack in namespace k with a fresh host-route cache. */
  async startStack(cfg: StackConfig = {}): Promise<StackProcess> {
    await this.stopStack();
    const args = [
      '--tun',
      this.lab.ifname('t'),
      '--addr',
      `${STACK_ADDR}/24`,
      '--host-addr',
      '198.18.0.1/24',
      '--services',
      'http',
      '--control',
      this.controlPath,
      '--offloads',
      cfg.offloads === false ? 'off' : 'on',
      '--fault',
      `kb898060=${cfg.mode ?? 'hotfixed'}`,
    ];
    for (const [k, v] of Object.entries(cfg.params ?? {})) args.push('--param', `${k}=${v}`);
    if (cfg.eventsFile) args.push('--events', cfg.eventsFile);
    args.push(...(cfg.extraArgs ?? []));
    this.stackCount++;
    this.stack = await this.lab.startStack(this.ns.k, args);
    return this.stack;
  }

  async stopStack(): Promise<void> {
    if (!this.stack) return;
    const s = this.stack;
    this.stack = null;
    await s.kill(5000);
  }

  /** `faultstack ARGS --control <this lab's stack>`; throws on a non-zero exit. */
  async cli(args: string[]): Promise<string> {
    const r = await this.lab.cli(this.ns.k, [...args, '--control', this.controlPath], { timeoutMs: 20_000 });
    if (r.code !== 0) throw new Error(`faultstack ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  async routes(): Promise<RoutesReply> {
    return parseReply(await this.cli(['routes', '--json']), 'routes') as RoutesReply;
  }
  async counters(): Promise<Record<string, number>> {
    return (parseReply(await this.cli(['stats', '--json']), 'stats') as { counters: Record<string, number> }).counters;
  }
  /** The stack's recent events (`faultstack events --json` prints one per line). */
  async events(): Promise<LabEvent[]> {
    return (await this.cli(['events', '--json']))
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as LabEvent);
  }
  async setParam(name: string, value: number | string): Promise<void> {
    await this.cli(['param', 'set', name, String(value)]);
  }
  async setMode(mode: 'buggy' | 'hotfixed'): Promise<void> {
    await this.cli(['fault', 'set', 'kb898060', mode]);
  }

  // ------------------------------------------------------------------ paths

  /** Points r1's route to the clients at path A, path B, or both (per-connection balancing). */
  async usePath(p: PathChoice): Promise<void> {
    const via = p === 'A' ? ['via', '198.18.2.2'] : p === 'B' ? ['via', '198.18.3.2'] : ['nexthop', 'via', '198.18.2.2', 'nexthop', 'via', '198.18.3.2'];
    await this.lab.ip(this.ns.r1, 'route', 'replace', CLIENT_PREFIX, ...via);
    this.path = p;
  }

  /**
   * Switches r1 between the paths in `sequence` every `everyMs` until the returned
   * function is called (and awaited); the dynamic routing of the article.
   */
  flap(everyMs: number, sequence: PathChoice[] = ['A', 'B']): () => Promise<void> {
    let i = Math.max(0, sequence.indexOf(this.path));
    let stopped = false;
    let busy: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      if (stopped) return;
      i = (i + 1) % sequence.length;
      busy = busy.then(() => this.usePath(sequence[i]!)).catch(() => {});
    }, everyMs);
    return async () => {
      stopped = true;
      clearInterval(timer);
      await busy;
    };
  }

  // ------------------------------------------------------------------ clients

  /** One download of /bytes/N from client address `local`, by the client worker (Node's http). */
  download(local: string, bytes: number, stallMs = 3000): Promise<DownloadResult> {
    const w = this.ensureWorker();
    const id = this.nextJob++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      w.write(JSON.stringify({ id, local, bytes, stallMs }) + '\n');
    });
  }

  /** Downloads for every job, at most `concurrency` at a time; results in job order. */
  async downloadAll(
    jobs: { local: string; bytes: number }[],
    o: { concurrency?: number; stallMs?: number; onResult?: (r: DownloadResult, i: number) => void } = {},
  ): Promise<DownloadResult[]> {
    const out: DownloadResult[] = new Array(jobs.length);
    let next = 0;
    const lane = async () => {
      while (next < jobs.length) {
        const i = next++;
        const r = await this.download(jobs[i]!.local, jobs[i]!.bytes, o.stallMs);
        out[i] = r;
        o.onResult?.(r, i);
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency ?? 8, jobs.length) }, lane));
    return out;
  }

  /** The same with curl (what a student would type), from address `local`. */
  async curl(local: string, bytes: number, maxTimeS = 5): Promise<CurlResult> {
    const r = await this.lab.exec(
      this.ns.c,
      'curl',
      [
        '-sS',
        '--interface',
        local,
        '--max-time',
        String(maxTimeS),
        '-o',
        '/dev/null',
        '-w',
        '%{http_code} %{size_download} %{time_connect} %{time_total}',
        `http://${STACK_ADDR}/bytes/${bytes}`,
      ],
      { timeoutMs: (maxTimeS + 10) * 1000 },
    );
    const [code, size, conn, total] = r.stdout.trim().split(/\s+/).map(Number);
    return { exit: r.code, httpCode: code ?? 0, bytes: size ?? 0, connectS: conn ?? 0, totalS: total ?? 0, stderr: r.stderr.trim() };
  }

  private ensureWorker(): LabProcess {
    if (this.worker && this.worker.running) return this.worker;
    const script = path.join(repoRoot(), 'lab', 'pmtu-client.cjs');
    const w = this.lab.spawn(this.ns.c, process.execPath, [script, STACK_ADDR, '80']);
    this.worker = w;
    this.workerBuf = '';
    w.child.stdout?.on('data', (s: string) => {
      this.workerBuf += s;
      let nl: number;
      while ((nl = this.workerBuf.indexOf('\n')) >= 0) {
        const line = this.workerBuf.slice(0, nl);
        this.workerBuf = this.workerBuf.slice(nl + 1);
        let r: DownloadResult;
        try {
          r = JSON.parse(line) as DownloadResult;
        } catch {
          continue;
        }
        const done = this.waiting.get(r.id);
        if (done) {
          this.waiting.delete(r.id);
          done(r);
        }
      }
    });
    void w.exited.then(() => {
      // A worker that died answers nobody: fail what it still owed.
      for (const [id, done] of this.waiting)
        done({ id, local: '', outcome: 'error', connectMs: null, ms: 0, bytes: 0, error: `client worker exited: ${w.stderr.slice(-500)}` });
      this.waiting.clear();
    });
    return w;
  }

  /** Stops everything and removes every namespace, link, process and file. */
  async cleanup(): Promise<void> {
    try {
      this.worker?.end();
      await this.stopStack().catch(() => {});
      await this.lab.cleanup();
    } finally {
      fs.rmSync(this.tmp, { recursive: true, force: true });
    }
  }
}
