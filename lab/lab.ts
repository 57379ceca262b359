/**
 * The lab: throwaway network namespaces, veth links and processes for integration
 * tests and the demo, with cleanup that leaves nothing behind.
 *
 * The rules it enforces (docs/lab.md): traffic stays inside namespaces the lab
 * created; every process it started is killed (its whole process group); every
 * namespace and device it created is deleted, also when the test fails, when the
 * process exits early, and (via marker files) after a run that was SIGKILLed: the
 * next Lab.create() sweeps what a dead run left.
 *
 *   const lab = await Lab.create('pmtu');
 *   try {
 *     const ns = await lab.addNamespace('stack');
 *     const stack = await lab.startStack(ns, ['--tun', lab.ifname('t0'), '--addr', '198.18.0.2/24']);
 *     const r = await lab.exec(ns, 'ping', ['-c', '3', '198.18.0.2']);
 *   } finally {
 *     await lab.cleanup();
 *   }
 */
import { ChildProcess, spawn as spawnChild, spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A namespace name as returned by addNamespace(), or null for the root namespace (tools only). */
export type Ns = string | null;

export interface ExecOptions {
  /** Kill the process group after this long (default 60 s). */
  timeoutMs?: number;
  /** Written to stdin, which is then closed. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Throw (with the output) unless the exit status is 0. */
  check?: boolean;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Keep at most this many characters of each stream (oldest dropped; default 8 MiB). */
  maxOutput?: number;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Which stream to match (default both, interleaved). */
  stream?: 'stdout' | 'stderr' | 'both';
}

export interface StartStackOptions {
  /** Reject (and kill the stack) when no ready line came within this long (default 30 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface BridgeOptions {
  /** An address for the bridge itself (the namespace then talks on the segment). */
  addr?: string;
  mtu?: number;
  /** More `ip link add ... type bridge` options, e.g. ['mcast_querier', '1']. */
  options?: string[];
}

export interface VethOptions {
  /** CIDR for the end in nsA, e.g. 198.18.1.1/24 (optional). */
  addrA?: string;
  addrB?: string;
  mtu?: number;
}

const MAX_IFNAME = 15;
const MARKER_DIR = '/run/faultstack-lab';
const DEFAULT_RUN_DIR = '/run/faultstack';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** State letter and process group of a pid from /proc, or null when it is gone. */
function procStat(pid: number | string): { state: string; pgrp: number } | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, pgrp: Number(rest[2]) };
  } catch {
    return null;
  }
}

/**
 * Is any process of the group still running? Zombies do not count: a killed
 * grandchild reparented to an init that reaps slowly must not look alive.
 */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = procStat(d);
    if (st && st.pgrp === pgid && st.state !== 'Z' && st.state !== 'X') return true;
  }
  return false;
}

/**
 * Signals a process group (our children lead their own: spawned detached). Never the
 * bare pid: once a child is reaped its number may belong to someone else, while a
 * group id stays reserved as long as any member lives.
 */
function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    /* no member left */
  }
}

function pidAlive(pid: number): boolean {
  const st = procStat(pid);
  return st !== null && st.state !== 'Z' && st.state !== 'X';
}

/** The repository root (the directory whose package.json names faultstack). */
export function repoRoot(): string {
  for (let dir = __dirname, i = 0; i < 8; i++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'faultstack') return dir;
    } catch {
      /* keep looking */
    }
  }
  throw new Error(`cannot find the faultstack repository above ${__dirname}`);
}

/** The compiled CLI entry: FAULTSTACK_CLI, or <repo>/dist/bin/cli/main.js. */
export function cliPath(): string {
  return process.env.FAULTSTACK_CLI || path.join(repoRoot(), 'dist', 'bin', 'cli', 'main.js');
}

function oneLine(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
}

function tail(text: string, lines = 40): string {
  const all = text.trimEnd().split('\n');
  return (all.length > lines ? [`... (${all.length - lines} earlier lines)`, ...all.slice(-lines)] : all).join('\n');
}

/** A process the lab started: captured output, waitFor(), and a kill that reaches the whole process group. */
export class LabProcess {
  stdout = '';
  stderr = '';
  /** stdout and stderr interleaved in arrival order. */
  output = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;
  /** Characters received on stdout and stderr so far (the kept output may be capped). */
  private received = 0;
  private readonly events = new EventEmitter();
  private readonly maxOutput: number;

  constructor(
    readonly child: ChildProcess,
    readonly description: string,
    opts: SpawnOptions = {},
  ) {
    this.maxOutput = opts.maxOutput ?? 8 << 20;
    this.events.setMaxListeners(0);
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (s: string) => this.append('stdout', s));
    child.stderr?.on('data', (s: string) => this.append('stderr', s));
    child.stdin?.on('error', () => {
      /* the process may exit without reading */
    });
    this.exited = new Promise((resolve) => {
      let fallback: NodeJS.Timeout | undefined;
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.done) return;
        if (fallback) clearTimeout(fallback);
        this.done = true;
        this.exitCode = code;
        this.exitSignal = signal;
        this.events.emit('exit');
        resolve({ code, signal });
      };
      // 'close' comes after the output is complete; a grandchild holding the pipes
      // open must not delay the exit forever.
      child.once('close', (code, signal) => finish(code, signal));
      child.once('exit', (code, signal) => {
        // On a loaded machine this process can be off the CPU for longer than the grace
        // period: the timer then runs before the output still in the pipe is read, and a
        // reply was cut short. Finish only after a grace period without new output, and
        // look after an I/O poll (setImmediate), so that data already written is read first.
        let seen = this.received;
        const check = () =>
          setImmediate(() => {
            if (this.received === seen) {
              finish(code, signal);
              return;
            }
            seen = this.received;
            fallback = setTimeout(check, 500);
            fallback.unref();
          });
        fallback = setTimeout(check, 500);
        fallback.unref();
      });
      child.once('error', (e) => {
        this.append('stderr', `spawn failed: ${e.message}\n`);
        finish(null, null);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return !this.done;
  }

  private append(stream: 'stdout' | 'stderr', s: string): void {
    this.received += s.length;
    const cap = (t: string) => (t.length > this.maxOutput ? t.slice(t.length - this.maxOutput) : t);
    if (stream === 'stdout') this.stdout = cap(this.stdout + s);
    else this.stderr = cap(this.stderr + s);
    this.output = cap(this.output + s);
    this.events.emit('data');
  }

  /** Resolves with the first match of `re` in the output so far or to come; rejects on exit or timeout, with the output. */
  waitFor(re: RegExp, opts: WaitOptions = {}): Promise<RegExpExecArray> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const pattern = new RegExp(re.source, re.flags.replace('g', '').replace('y', ''));
    const text = () => (opts.stream === 'stdout' ? this.stdout : opts.stream === 'stderr' ? this.stderr : this.output);
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.events.off('data', onData);
        this.events.off('exit', onExit);
      };
      const onData = () => {
        const m = pattern.exec(text());
        if (m) {
          cleanup();
          resolve(m);
        }
      };
      const onExit = () => {
        onData();
        if (!this.done) return;
        cleanup();
        reject(
          new Error(`${this.description} exited (${this.exitSignal ?? `code ${this.exitCode}`}) before printing ${pattern}; output:\n${tail(this.output)}`),
        );
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.description}: no ${pattern} within ${timeoutMs / 1000} s; output:\n${tail(this.output)}`));
      }, timeoutMs);
      this.events.on('data', onData);
      this.events.on('exit', onExit);
      onData();
      if (this.done) onExit();
    });
  }

  write(data: string | Buffer): void {
    this.child.stdin?.write(data);
  }

  end(): void {
    this.child.stdin?.end();
  }

  /** Sends a signal to the whole process group. */
  signal(sig: NodeJS.Signals): void {
    if (this.pid > 0) signalGroup(this.pid, sig);
  }

  /** SIGTERM to the process group, SIGKILL to whatever is left after graceMs; resolves with the exit status. */
  async kill(graceMs = 3000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const pid = this.pid;
    if (pid <= 0) return this.exited;
    signalGroup(pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && (this.running || groupAlive(pid))) await sleep(25);
    if (this.running || groupAlive(pid)) signalGroup(pid, 'SIGKILL');
    return this.exited;
  }

  /** For the exit handler: the same, synchronously. */
  killSync(graceMs = 1000): void {
    const pid = this.pid;
    if (pid <= 0 || !groupAlive(pid)) return;
    signalGroup(pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && groupAlive(pid)) sleepSync(20);
    if (groupAlive(pid)) signalGroup(pid, 'SIGKILL');
  }
}

/** startStack() failed: the stack exited or never printed its ready line. */
export class StackStartError extends Error {
  /** Short: "exited (code 1)" or "no ready line within 30 s". */
  readonly reason: string;
  constructor(
    message: string,
    readonly output: string,
    reason?: string,
  ) {
    super(message);
    this.name = 'StackStartError';
    this.reason = reason ?? message;
  }
}

/** A `faultstack run` the lab started and saw become ready. */
export interface StackProcess extends LabProcess {
  readonly readyLine: string;
  readonly controlPath: string;
  readonly tun: string;
  readonly ns: string;
}

interface Marker {
  pid: number;
  id: string;
  namespaces: string[];
}

const liveLabs = new Set<Lab>();
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const lab of [...liveLabs]) lab.cleanupSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      for (const lab of [...liveLabs]) lab.cleanupSync();
      // Nobody else handles it: behave as the default would (die by that signal).
      if (process.listenerCount(sig) === 1) {
        process.off(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, handler);
  }
}

export class Lab {
  private readonly nsByName = new Map<string, string>();
  private readonly processes = new Set<LabProcess>();
  /** TUN devices started stacks asked for: [namespace, name]. */
  private readonly tuns: [string, string][] = [];
  private readonly controlSockets = new Set<string>();
  private vethCount = 0;
  private bridgeCount = 0;
  private cleaning: Promise<void> | null = null;
  private cleaned = false;

  private constructor(readonly id: string) {}

  /**
   * A new lab named fs<tag><pid%10000><rand> (at most 11 characters, so ifnames built
   * from it fit in 15). Needs root. Sweeps what labs of dead processes left behind.
   */
  static async create(tag = 'lab'): Promise<Lab> {
    if (process.getuid?.() !== 0) throw new Error('the lab needs root (ip netns, veth, TUN)');
    const t = tag
      .toLowerCase()
      .replace(/[^a-z0-9]/g, '')
      .slice(0, 3);
    const rand = Math.floor(Math.random() * 36 * 36)
      .toString(36)
      .padStart(2, '0');
    const id = `fs${t}${process.pid % 10000}${rand}`;
    const lab = new Lab(id);
    Lab.sweepStale();
    installExitHooks();
    liveLabs.add(lab);
    lab.writeMarker();
    return lab;
  }

  /** Deletes namespaces and devices of labs whose process is gone (a SIGKILLed test run). */
  static sweepStale(): string[] {
    const swept: string[] = [];
    let files: string[] = [];
    try {
      files = fs.readdirSync(MARKER_DIR).filter((f) => f.endsWith('.json'));
    } catch {
      return swept;
    }
    for (const f of files) {
      const file = path.join(MARKER_DIR, f);
      let m: Marker;
      try {
        m = JSON.parse(fs.readFileSync(file, 'utf8')) as Marker;
      } catch {
        fs.rmSync(file, { force: true });
        continue;
      }
      if (pidAlive(m.pid)) continue;
      for (const ns of m.namespaces) {
        killNamespacePidsSync(ns);
        spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
        swept.push(ns);
      }
      deleteRootLinksSync(m.id);
      fs.rmSync(file, { force: true });
    }
    return swept;
  }

  /** An interface name from this lab's id: id + suffix, at most 15 characters. */
  ifname(suffix: string): string {
    const name = `${this.id}${suffix}`;
    if (name.length > MAX_IFNAME)
      throw new Error(`interface name ${name} is longer than ${MAX_IFNAME} characters (suffix at most ${MAX_IFNAME - this.id.length})`);
    return name;
  }

  /** The full namespace name for a short name given to addNamespace() (full names pass through). */
  ns(name: string): string {
    const full = this.nsByName.get(name) ?? ([...this.nsByName.values()].includes(name) ? name : undefined);
    if (!full) throw new Error(`namespace "${name}" was not created by lab ${this.id}`);
    return full;
  }

  get namespaces(): string[] {
    return [...this.nsByName.values()];
  }

  /** Creates namespace <id>-<name> with lo up; returns its full name. */
  async addNamespace(name: string): Promise<string> {
    this.assertOpen();
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`bad namespace name ${JSON.stringify(name)}`);
    if (this.nsByName.has(name)) throw new Error(`namespace "${name}" already exists in lab ${this.id}`);
    const full = `${this.id}-${name}`;
    await this.run(null, 'ip', ['netns', 'add', full], { check: true });
    this.nsByName.set(name, full);
    this.writeMarker();
    await this.run(full, 'ip', ['link', 'set', 'lo', 'up'], { check: true });
    return full;
  }

  /**
   * A veth pair between two namespaces (null: root namespace), each end optionally
   * addressed, both up. Returns the device names.
   */
  async veth(nsA: Ns, nsB: Ns, opts: VethOptions = {}): Promise<{ devA: string; devB: string }> {
    this.assertOpen();
    const a = nsA === null ? null : this.ns(nsA);
    const b = nsB === null ? null : this.ns(nsB);
    const n = (this.vethCount++).toString(36);
    const devA = this.ifname(`v${n}a`);
    const devB = this.ifname(`v${n}b`);
    const args = ['link', 'add', devA, ...(a ? ['netns', a] : []), 'type', 'veth', 'peer', 'name', devB, ...(b ? ['netns', b] : [])];
    await this.run(null, 'ip', args, { check: true });
    for (const [ns, dev, addr] of [
      [a, devA, opts.addrA],
      [b, devB, opts.addrB],
    ] as const) {
      if (opts.mtu !== undefined) await this.run(ns, 'ip', ['link', 'set', dev, 'mtu', String(opts.mtu)], { check: true });
      if (addr) await this.run(ns, 'ip', ['addr', 'add', addr, 'dev', dev], { check: true });
      await this.run(ns, 'ip', ['link', 'set', dev, 'up'], { check: true });
    }
    return { devA, devB };
  }

  /**
   * A Linux bridge in a namespace (null: the root namespace), named from the lab id, up.
   * Goes with its namespace (or, in the root namespace, with the lab's other devices).
   */
  async bridge(ns: Ns, opts: BridgeOptions = {}): Promise<string> {
    this.assertOpen();
    const n = ns === null ? null : this.ns(ns);
    const name = this.ifname(`br${(this.bridgeCount++).toString(36)}`);
    await this.run(n, 'ip', ['link', 'add', 'name', name, 'type', 'bridge', ...(opts.options ?? [])], { check: true });
    if (opts.mtu !== undefined) await this.run(n, 'ip', ['link', 'set', name, 'mtu', String(opts.mtu)], { check: true });
    if (opts.addr) await this.run(n, 'ip', ['addr', 'add', opts.addr, 'dev', name], { check: true });
    await this.run(n, 'ip', ['link', 'set', name, 'up'], { check: true });
    return name;
  }

  /**
   * A veth pair from namespace `ns` into `bridge` (in `bridgeNs`): the end in `ns` optionally
   * addressed, the other a port of the bridge; both up. What a VM's NIC on the bridge is.
   */
  async vethToBridge(ns: Ns, bridgeNs: Ns, bridge: string, opts: { addr?: string; mtu?: number } = {}): Promise<{ dev: string; port: string }> {
    const { devA, devB } = await this.veth(ns, bridgeNs, { addrA: opts.addr, mtu: opts.mtu });
    await this.run(bridgeNs === null ? null : this.ns(bridgeNs), 'ip', ['link', 'set', devB, 'master', bridge], { check: true });
    return { dev: devA, port: devB };
  }

  /** `ip ARGS` in a namespace; throws with stderr on failure. */
  async ip(ns: Ns, ...args: string[]): Promise<string> {
    return (await this.run(ns === null ? null : this.ns(ns), 'ip', args, { check: true })).stdout;
  }

  /** Runs a command to completion in a namespace (via `ip netns exec`), killing its process group on timeout. */
  async exec(ns: Ns, cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertOpen();
    return this.run(ns === null ? null : this.ns(ns), cmd, args, opts);
  }

  /** Starts a long-running command in a namespace; stdin is a pipe. */
  spawn(ns: Ns, cmd: string, args: string[] = [], opts: SpawnOptions = {}): LabProcess {
    this.assertOpen();
    return this.start(ns === null ? null : this.ns(ns), cmd, args, opts, 'pipe');
  }

  /** Writes a sysctl inside a namespace: sysctl(ns, 'net.ipv4.ip_forward', 1). */
  async sysctl(ns: Ns, key: string, value: string | number): Promise<void> {
    const file = key.startsWith('/') ? key : `/proc/sys/${key.replace(/\./g, '/')}`;
    await this.exec(ns, 'sh', ['-c', 'printf "%s\\n" "$1" > "$2"', 'sh', String(value), file], { check: true, timeoutMs: 10_000 });
  }

  /** Replaces the root qdisc of a device with netem: netem(ns, 'veth0', 'delay 20ms loss 1%'). */
  async netem(ns: Ns, dev: string, spec: string | string[]): Promise<void> {
    const words = Array.isArray(spec) ? spec : spec.trim().split(/\s+/).filter(Boolean);
    const r = await this.exec(ns, 'tc', ['qdisc', 'replace', 'dev', dev, 'root', 'netem', ...words], { timeoutMs: 10_000 });
    if (r.code === 0) return;
    if (/qdisc kind is unknown/i.test(r.stderr)) {
      throw new Error(
        `netem is not available in this kernel (sch_netem is neither built in nor loadable): tc qdisc replace dev ${dev} root netem ${words.join(' ')}`,
      );
    }
    throw new Error(`tc qdisc replace dev ${dev} root netem ${words.join(' ')} failed (exit ${r.code}): ${oneLine(r.stderr)}`);
  }

  /** Can this kernel run netem? (Some VM kernels ship without sch_netem.) */
  static netemAvailable(): boolean {
    const ns = `fsnetem${process.pid % 100000}`;
    try {
      if (spawnSync('ip', ['netns', 'add', ns], { stdio: 'ignore' }).status !== 0) return false;
      return spawnSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'], { stdio: 'ignore' }).status === 0;
    } finally {
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    }
  }

  /**
   * Makes `dev` lossy in both directions: `lossPct` percent of packets leaving and
   * arriving on it are dropped at random. Uses tc netem where the kernel has it, and
   * nftables' random number generator otherwise (this machine's kernel is built
   * without CONFIG_NET_SCH_NETEM). Returns an undo function.
   */
  async lossy(ns: Ns, dev: string, lossPct: number): Promise<{ method: 'netem' | 'nftables'; undo: () => Promise<void>; dropped: () => Promise<number> }> {
    if (Lab.netemAvailable()) {
      await this.netem(ns, dev, `loss ${lossPct}%`);
      return {
        method: 'netem',
        undo: async () => {
          await this.exec(ns, 'tc', ['qdisc', 'del', 'dev', dev, 'root']);
        },
        // What the qdisc dropped so far ("Sent ... (dropped N, ...)" in tc -s).
        dropped: async () => {
          const r = await this.exec(ns, 'tc', ['-s', 'qdisc', 'show', 'dev', dev], { check: true });
          const m = /dropped (\d+)/.exec(r.stdout);
          if (!m) throw new Error(`tc -s qdisc show dev ${dev}: no drop count in ${oneLine(r.stdout)}`);
          return Number(m[1]);
        },
      };
    }
    const table = `fsloss${this.vethCount++}`;
    const rules = [
      `add table inet ${table}`,
      `add chain inet ${table} out { type filter hook output priority 0 ; policy accept ; }`,
      `add chain inet ${table} in { type filter hook input priority 0 ; policy accept ; }`,
      `add rule inet ${table} out oifname "${dev}" numgen random mod 1000 < ${Math.round(lossPct * 10)} counter drop`,
      `add rule inet ${table} in iifname "${dev}" numgen random mod 1000 < ${Math.round(lossPct * 10)} counter drop`,
    ];
    await this.exec(ns, 'nft', ['-f', '-'], { input: rules.join('\n') + '\n', check: true, timeoutMs: 10_000 });
    return {
      method: 'nftables',
      undo: async () => {
        await this.exec(ns, 'nft', ['delete', 'table', 'inet', table]);
      },
      // Packets the two rules dropped so far.
      dropped: async () => {
        const r = await this.exec(ns, 'nft', ['list', 'table', 'inet', table], { check: true });
        return [...r.stdout.matchAll(/counter packets (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
      },
    };
  }

  /** Runs the built CLI (`faultstack ARGS`) to completion. */
  async cli(ns: Ns, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(ns, process.execPath, [cliPath(), ...args], opts);
  }

  /**
   * Starts `faultstack run ARGS` in a namespace and resolves once it prints a line with
   * "ready"; rejects with its output when it exits first or on timeout (and kills it).
   */
  async startStack(ns: string, args: string[], opts: StartStackOptions = {}): Promise<StackProcess> {
    this.assertOpen();
    const full = this.ns(ns);
    const cli = cliPath();
    if (!fs.existsSync(cli)) throw new Error(`${cli} does not exist: build first (make build, or ./node_modules/.bin/tsc -p tsconfig.json)`);
    const tun = flagValue(args, 'tun') ?? flagValue(args, 'tap') ?? 'fs0';
    const runDir = opts.env?.FAULTSTACK_RUN_DIR ?? process.env.FAULTSTACK_RUN_DIR ?? DEFAULT_RUN_DIR;
    const controlPath = path.resolve(flagValue(args, 'control') ?? path.join(runDir, `${tun}.sock`));
    this.tuns.push([full, tun]);
    this.controlSockets.add(controlPath);
    const env = opts.env ? { ...process.env, ...opts.env } : undefined;
    // FAULTSTACK_LAB_WEB=1: every stack the lab starts (the benchmarks' too) serves its web
    // view and /metrics inside its namespace, and says where on stderr, so that a
    // benchmarker can scrape it during `make bench` (docs/api.md).
    const web = process.env.FAULTSTACK_LAB_WEB === '1' && flagValue(args, 'web') === undefined ? ['--web', '127.0.0.1:0'] : [];
    const p = this.start(full, process.execPath, [cli, 'run', ...args, ...web], { env }, 'ignore');
    try {
      const m = await p.waitFor(/^.*\bready\b.*$/m, { timeoutMs: opts.timeoutMs ?? 30_000, stream: 'stdout' });
      const url = web.length > 0 ? /\bweb (http:\/\/\S+?)(?:,|\s|$)/.exec(m[0])?.[1] : undefined;
      if (url)
        process.stderr.write(`lab: ${full}: metrics at ${url.replace(/\/$/, '')}/metrics (ip netns exec ${full} curl -s ${url.replace(/\/$/, '')}/metrics)\n`);
      return Object.assign(p, { readyLine: m[0], controlPath, tun, ns: full }) as StackProcess;
    } catch (e) {
      const exited = !p.running;
      await p.kill(2000);
      const timeoutS = (opts.timeoutMs ?? 30_000) / 1000;
      const reason = exited ? `exited (${p.exitSignal ?? `code ${p.exitCode}`}) before it was ready` : `no ready line within ${timeoutS} s`;
      throw new StackStartError(`faultstack run ${args.join(' ')} in ${full} did not become ready: ${(e as Error).message}`, p.output, reason);
    }
  }

  /**
   * Kills every process the lab started (SIGTERM, then SIGKILL) and any other process
   * left in its namespaces, deletes its namespaces and devices. Idempotent; throws if
   * something could not be removed.
   */
  cleanup(): Promise<void> {
    if (!this.cleaning) this.cleaning = this.doCleanup();
    return this.cleaning;
  }

  private async doCleanup(): Promise<void> {
    await Promise.all([...this.processes].map((p) => p.kill(3000)));
    this.cleanupSync();
    const left = this.leftovers();
    if (left.length) throw new Error(`lab ${this.id} cleanup left behind: ${left.join(', ')}`);
  }

  /** Synchronous cleanup, for exit and signal handlers; safe to call repeatedly. */
  cleanupSync(): void {
    if (this.cleaned) return;
    for (const p of this.processes) p.killSync(1000);
    for (const ns of this.nsByName.values()) killNamespacePidsSync(ns);
    for (const [ns, tun] of this.tuns) {
      spawnSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'del', tun], { stdio: 'ignore' });
    }
    for (const ns of this.nsByName.values()) {
      for (let i = 0; i < 20; i++) {
        spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
        if (!namespaceExists(ns)) break;
        sleepSync(50);
      }
    }
    deleteRootLinksSync(this.id);
    for (const sock of this.controlSockets) removeDeadSocket(sock);
    this.cleaned = true;
    liveLabs.delete(this);
    try {
      fs.rmSync(this.markerFile(), { force: true });
    } catch {
      /* ignore */
    }
  }

  /** Namespaces and devices of this lab that still exist. */
  leftovers(): string[] {
    const out: string[] = [];
    for (const ns of this.nsByName.values()) if (namespaceExists(ns)) out.push(`namespace ${ns}`);
    for (const dev of rootLinks()) if (dev.startsWith(this.id)) out.push(`device ${dev}`);
    for (const p of this.processes) if (p.running) out.push(`process ${p.pid} (${p.description})`);
    return out;
  }

  // -------------------------------------------------------------------------

  private assertOpen(): void {
    if (this.cleaning || this.cleaned) throw new Error(`lab ${this.id} is cleaned up`);
  }

  private markerFile(): string {
    return path.join(MARKER_DIR, `${this.id}.json`);
  }

  private writeMarker(): void {
    try {
      fs.mkdirSync(MARKER_DIR, { recursive: true, mode: 0o700 });
      const m: Marker = { pid: process.pid, id: this.id, namespaces: [...this.nsByName.values()] };
      fs.writeFileSync(this.markerFile(), JSON.stringify(m));
    } catch {
      /* best effort: the exit hooks still clean up */
    }
  }

  private start(ns: string | null, cmd: string, args: string[], opts: SpawnOptions, stdin: 'pipe' | 'ignore'): LabProcess {
    const child = spawnChild(ns ? 'ip' : cmd, ns ? ['netns', 'exec', ns, cmd, ...args] : args, {
      // Its own process group, so kill() reaches everything it forks.
      detached: true,
      stdio: [stdin, 'pipe', 'pipe'],
      env: opts.env,
      cwd: opts.cwd,
    });
    const desc = `${ns ? `[${ns}] ` : ''}${[cmd, ...args].join(' ')}`.slice(0, 200);
    const p = new LabProcess(child, desc, opts);
    this.processes.add(p);
    void p.exited.then(() => {
      if (!groupAlive(p.pid)) this.processes.delete(p);
    });
    return p;
  }

  private async run(ns: string | null, cmd: string, args: string[], opts: ExecOptions): Promise<ExecResult> {
    const t0 = Date.now();
    const p = this.start(
      ns,
      cmd,
      args,
      { env: opts.env ? { ...process.env, ...opts.env } : undefined, cwd: opts.cwd },
      opts.input === undefined ? 'ignore' : 'pipe',
    );
    if (opts.input !== undefined) {
      p.write(opts.input);
      p.end();
    }
    const timeoutMs = opts.timeoutMs ?? 60_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void p.kill(2000);
    }, timeoutMs);
    const { code, signal } = await p.exited;
    clearTimeout(timer);
    // Whatever it left running in its group goes too.
    if (groupAlive(p.pid)) await p.kill(1000);
    const r: ExecResult = { code, signal, stdout: p.stdout, stderr: p.stderr, timedOut, ms: Date.now() - t0 };
    if (opts.check && (code !== 0 || timedOut)) {
      const why = timedOut ? `timed out after ${timeoutMs / 1000} s` : signal ? `killed by ${signal}` : `exit ${code}`;
      throw new Error(`${p.description}: ${why}${r.stderr.trim() ? `: ${tail(r.stderr, 10)}` : ''}`);
    }
    return r;
  }
}

function flagValue(args: string[], name: string): string | undefined {
  let v: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === `--${name}`) v = args[i + 1];
    else if (a.startsWith(`--${name}=`)) v = a.slice(name.length + 3);
  }
  return v;
}

function namespaceExists(ns: string): boolean {
  return fs.existsSync(`/run/netns/${ns}`) || fs.existsSync(`/var/run/netns/${ns}`);
}

function killNamespacePidsSync(ns: string): void {
  if (!namespaceExists(ns)) return;
  for (let round = 0; round < 3; round++) {
    const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
    const pids = (r.stdout ?? '')
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((n) => n > 1 && n !== process.pid);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, round === 0 ? 'SIGTERM' : 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    sleepSync(round === 0 ? 300 : 100);
  }
}

function rootLinks(): string[] {
  const r = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((x): x is string => !!x);
}

function deleteRootLinksSync(prefix: string): void {
  for (const dev of rootLinks()) {
    if (dev.startsWith(prefix)) spawnSync('ip', ['link', 'del', dev], { stdio: 'ignore' });
  }
}

/** Removes a control socket nobody answers on (a stack killed with SIGKILL cannot remove its own). */
function removeDeadSocket(sock: string): void {
  try {
    if (!fs.lstatSync(sock).isSocket()) return;
  } catch {
    return;
  }
  // A synchronous liveness probe: a child connects and reports.
  const probe = spawnSync(
    process.execPath,
    [
      '-e',
      `
    const s = require('net').createConnection(process.argv[1]);
    s.on('connect', () => { process.stdout.write('live'); s.destroy(); });
    s.on('error', (e) => process.stdout.write(e.code || 'error'));
  `,
      sock,
    ],
    { encoding: 'utf8', timeout: 3000 },
  );
  if (probe.stdout === 'ECONNREFUSED') fs.rmSync(sock, { force: true });
}
