/**
 * The same bounded SYN flood as lab/synflood.ts, sent by hping3: a second,
 * independent generator to cross-check the stack's counters against.
 *
 * `hping3 --rand-source` would draw sources from the whole IPv4 space, which the lab
 * rule forbids, so each hping3 process gets one fixed spoofed source (`-a`) from the
 * lab range; several sources run as several processes with the count split among
 * them. Every process is bounded by `-c COUNT` and `-i u<interval>` and is also
 * killed when the time bound runs out. `-n` keeps hping3 from resolving names.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { formatIpv4, parseIpv4 } from '../stack/wire/addr';
import { UsageError } from '../stack/util/errors';
import { inLabRange, LAB_CIDR_TEXT, MAX_COUNT, MAX_DURATION_MS, parseTarget } from './synflood';

export interface Hping3FloodOptions {
  /** "198.18.0.2:5061" */
  target: string;
  /** Spoofed source addresses, each in 198.18.0.0/15; one hping3 process per source. */
  sources: string[];
  /** Packets in all (split evenly among the sources). */
  count: number;
  /** Time bound in ms; the processes are interrupted when it runs out (plus hping3's own 1 s wait). */
  durationMs: number;
  /** Gap between packets of one process in microseconds; by default the count is spread over 80% of durationMs. */
  intervalUs?: number;
  /**
   * Unpaced: `hping3 --flood` (as fast as the sender goes; hping3 then ignores -c). The
   * time bound interrupts it, and the packet bound is enforced below hping3 by an
   * nftables quota on the namespace's output (`netns` required): past `count` SYNs of
   * hping3's 40 bytes from the flood's sources, the rest are dropped before they leave.
   */
  flood?: boolean;
  /** Run inside this network namespace (`ip netns exec NS`). */
  netns?: string;
  /** The hping3 binary (default: hping3 on PATH, else /usr/sbin/hping3). */
  hping3?: string;
}

export interface Hping3Command {
  source: string;
  count: number;
  /** argv[0] is the program. */
  argv: string[];
}

export interface Hping3Summary {
  transmitted: number;
  received: number;
}

export interface Hping3FloodResult {
  transmitted: number;
  received: number;
  seconds: number;
  pps: number;
  commands: Hping3Command[];
  /** True when a process had to be interrupted at the time bound. */
  timedOut: boolean;
  /** Unpaced: the nftables quota (the packet bound) stopped a process. */
  quotaReached?: boolean;
}

/** After its last packet hping3 waits about a second for replies before it prints the summary. */
const HPING3_LINGER_MS = 1000;

function hping3Path(explicit?: string): string {
  if (explicit) return explicit;
  for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
    if (fs.existsSync(`${dir}/hping3`)) return `${dir}/hping3`;
  }
  if (fs.existsSync('/usr/sbin/hping3')) return '/usr/sbin/hping3';
  throw new Error('hping3 not found: install it (apt-get install hping3)');
}

/** Builds the bounded command lines without running anything. */
export function buildHping3Commands(o: Hping3FloodOptions): Hping3Command[] {
  const target = parseTarget(o.target);
  if (!Array.isArray(o.sources) || o.sources.length === 0) throw new UsageError('hping3: give at least one spoofed source address');
  const sources = o.sources.map((s) => {
    const a = parseIpv4(s);
    if (a === null) throw new UsageError(`hping3: source ${JSON.stringify(s)} is not an IPv4 address`);
    if (!inLabRange(a)) throw new UsageError(`hping3: source ${s} is outside the lab range ${LAB_CIDR_TEXT}: lab floods may only name addresses in it`);
    return formatIpv4(a);
  });
  if (!Number.isInteger(o.count) || o.count < sources.length || o.count > MAX_COUNT) {
    throw new UsageError(`hping3: count must be an integer from ${sources.length} (one per source) to ${MAX_COUNT}, got ${o.count}`);
  }
  if (!Number.isInteger(o.durationMs) || o.durationMs < 1 || o.durationMs > MAX_DURATION_MS) {
    throw new UsageError(`hping3: durationMs must be an integer from 1 to ${MAX_DURATION_MS}, got ${o.durationMs}`);
  }
  const per = Math.floor(o.count / sources.length);
  const extra = o.count - per * sources.length;
  const most = per + (extra > 0 ? 1 : 0);
  let intervalUs = o.intervalUs;
  if (intervalUs === undefined) {
    intervalUs = Math.max(1, Math.floor((o.durationMs * 1000 * 0.8) / most));
  } else if (!Number.isInteger(intervalUs) || intervalUs < 1 || intervalUs > 10_000_000) {
    throw new UsageError(`hping3: intervalUs must be an integer from 1 to 10000000, got ${intervalUs}`);
  } else if ((most * intervalUs) / 1000 > o.durationMs) {
    throw new UsageError(`hping3: ${most} packets at ${intervalUs} us take ${((most * intervalUs) / 1e6).toFixed(1)} s, more than durationMs ${o.durationMs}`);
  }
  if (o.flood && !o.netns) throw new UsageError('hping3: an unpaced flood needs its own namespace (netns), where its packet bound is enforced');
  const bin = hping3Path(o.hping3);
  const prefix = o.netns ? ['ip', 'netns', 'exec', o.netns] : [];
  return sources.map((source, i) => {
    const count = per + (i < extra ? 1 : 0);
    return {
      source,
      count,
      argv: [
        ...prefix,
        bin,
        '-n',
        '-q',
        '-S',
        '-p',
        String(target.port),
        '-a',
        source,
        ...(o.flood ? ['--flood'] : ['-c', String(count), '-i', `u${intervalUs}`]),
        formatIpv4(target.addr),
      ],
    };
  });
}

/** Reads "N packets transmitted, M packets received" (older builds spell it "tramitted"). */
export function parseHping3Summary(text: string): Hping3Summary | null {
  const m = /(\d+) packets tra(?:ns)?mitted, (\d+) packets received/.exec(text);
  return m ? { transmitted: Number(m[1]), received: Number(m[2]) } : null;
}

/** What hping3 --flood says when the nftables quota starts dropping its packets: it exits (status 1) with no summary. */
const QUOTA_STOP = /\[send_ip\] sendto: Operation not permitted/;

function runOne(cmd: Hping3Command, timeoutMs: number, flood = false): Promise<{ summary: Hping3Summary; timedOut: boolean; quota: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd.argv[0], cmd.argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // SIGINT makes hping3 print its summary and exit; SIGKILL if it does not.
    const soft = setTimeout(() => {
      timedOut = true;
      child.kill('SIGINT');
    }, timeoutMs);
    const hard = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 2000);
    child.on('error', (e) => {
      clearTimeout(soft);
      clearTimeout(hard);
      reject(new Error(`hping3: cannot run ${cmd.argv[0]}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(soft);
      clearTimeout(hard);
      const summary = parseHping3Summary(out);
      // hping3 exits 1 when nothing answered, which is what spoofed sources mean.
      if (summary) resolve({ summary, timedOut, quota: false });
      // Unpaced, the quota let exactly `count` out and hping3 stopped at its first refused send.
      else if (flood && QUOTA_STOP.test(out)) resolve({ summary: { transmitted: cmd.count, received: 0 }, timedOut, quota: true });
      else {
        const last =
          out
            .split('\n')
            .map((l) => l.trim())
            .filter(Boolean)
            .pop() ?? '';
        reject(new Error(`hping3 (source ${cmd.source}) ended with ${signal ?? `status ${code}`} and no summary${last ? `: ${last}` : ''}`));
      }
    });
  });
}

/** Bytes of one hping3 -S packet (IPv4 20 + TCP 20, no options, no data). */
export const HPING3_SYN_BYTES = 40;

/**
 * nftables rules (for `nft -f -` in the flooding namespace) that let at most `count`
 * packets from `sources` leave it: the packet bound of an unpaced flood.
 */
export function floodQuotaRules(table: string, sources: string[], count: number): string {
  const set = sources.map((s) => formatIpv4(parseIpv4(s)!)).join(', ');
  return (
    [
      `add table ip ${table}`,
      `add chain ip ${table} out { type filter hook output priority 0 ; policy accept ; }`,
      `add rule ip ${table} out ip saddr { ${set} } quota over ${count * HPING3_SYN_BYTES} bytes drop`,
    ].join('\n') + '\n'
  );
}

function nft(netns: string, args: string[], input?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, 'nft', ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => reject(new Error(`nft: ${e.message}`)));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`nft ${args.join(' ')}: ${err.trim() || `status ${code}`}`))));
    child.stdin.end(input ?? '');
  });
}

/** Runs the flood (all sources at once) and adds up hping3's own summaries. */
export async function runHping3Flood(o: Hping3FloodOptions): Promise<Hping3FloodResult> {
  const commands = buildHping3Commands(o);
  const table = `fsquota${process.pid}`;
  if (o.flood)
    await nft(
      o.netns!,
      ['-f', '-'],
      floodQuotaRules(
        table,
        commands.map((c) => c.source),
        o.count,
      ),
    );
  const t0 = performance.now();
  let results: { summary: Hping3Summary; timedOut: boolean; quota: boolean }[];
  try {
    // Unpaced, hping3 sends until interrupted (the time bound) or refused (the quota).
    results = await Promise.all(commands.map((c) => runOne(c, o.flood ? o.durationMs : o.durationMs + HPING3_LINGER_MS + 500, o.flood === true)));
  } finally {
    if (o.flood) await nft(o.netns!, ['delete', 'table', 'ip', table]).catch(() => undefined);
  }
  const seconds = (performance.now() - t0) / 1000;
  if (o.flood) {
    // hping3 counts what it handed to the socket, the quota's drops included.
    const transmitted = Math.min(
      o.count,
      results.reduce((s, r) => s + r.summary.transmitted, 0),
    );
    return {
      transmitted,
      received: 0,
      seconds,
      pps: transmitted / seconds,
      commands,
      timedOut: results.some((r) => r.timedOut),
      quotaReached: results.some((r) => r.quota),
    };
  }
  const transmitted = results.reduce((s, r) => s + r.summary.transmitted, 0);
  const received = results.reduce((s, r) => s + r.summary.received, 0);
  // hping3 lingers after its last packet: rate over the sending part, not the wait.
  const sending = Math.max(seconds - HPING3_LINGER_MS / 1000, 1e-3);
  return { transmitted, received, seconds, pps: transmitted / sending, commands, timedOut: results.some((r) => r.timedOut) };
}
