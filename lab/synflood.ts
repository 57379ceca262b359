/**
 * A bounded SYN flood generator for the lab: crafts IPv4 + TCP SYN segments itself
 * and sends them through a raw socket with IP_HDRINCL (npm package raw-socket), with
 * source addresses spoofed from a lab CIDR, random source ports, ISNs and IP ids.
 *
 * Lab rules enforced here, not left to the caller:
 * - targets and spoofed sources must lie in 198.18.0.0/15 (RFC 2544's benchmarking
 *   range); anything else is refused before a socket is opened;
 * - every flood is bounded both in packets (`count`, at most 1,000,000) and in time
 *   (`durationMs`, at most 60 s), and stops by itself at whichever comes first.
 * The raw socket sends in whatever network namespace the process runs in: run it
 * with `ip netns exec NS` (or inside `unshare -n`) in a namespace the test created.
 *
 * As a program:
 *   node dist/lab/synflood.js --target 198.18.0.2:5061 --source 198.18.100.0/24 \
 *        --count 10000 --duration 5 [--rate 20000] [--seed N] [--json] [--quiet]
 */
import { randomBytes } from 'node:crypto';
import { checksumAdd, checksumFinish, internetChecksum, pseudoHeaderSum } from '../stack/wire/checksum';
import { formatIpv4, parseCidr, parseIpv4, prefixMask, type Ipv4Addr } from '../stack/wire/addr';
import { UsageError } from '../stack/util/errors';
import { parseFlags } from './flags';

// ---------------------------------------------------------------------------
// The lab range
// ---------------------------------------------------------------------------

/** 198.18.0.0/15: the only addresses a lab flood may name (RFC 2544, docs/lab.md). */
export const LAB_NET = 0xc6120000;
export const LAB_PREFIX = 15;
export const LAB_CIDR_TEXT = '198.18.0.0/15';

export function inLabRange(a: Ipv4Addr): boolean {
  return (a & prefixMask(LAB_PREFIX)) >>> 0 === LAB_NET;
}

/** A block of addresses to draw spoofed sources from. */
export interface SourceBlock {
  /** Network address (host bits cleared). */
  net: Ipv4Addr;
  prefix: number;
  /** First and last address drawn (network and broadcast left out for prefixes up to /30). */
  first: Ipv4Addr;
  last: Ipv4Addr;
}

function labRule(what: string): UsageError {
  return new UsageError(`${what} is outside the lab range ${LAB_CIDR_TEXT}: lab floods may only name addresses in it`);
}

/** Parses "198.18.100.0/24" (or one address, as /32) and checks that all of it is in the lab range. */
export function parseSourceBlock(text: string): SourceBlock {
  const t = text.trim();
  let addr: Ipv4Addr | null;
  let prefix: number;
  if (t.includes('/')) {
    const c = parseCidr(t);
    if (!c) throw new UsageError(`source ${JSON.stringify(text)} is not an IPv4 CIDR such as 198.18.100.0/24`);
    addr = c.addr;
    prefix = c.prefix;
  } else {
    addr = parseIpv4(t);
    prefix = 32;
    if (addr === null) throw new UsageError(`source ${JSON.stringify(text)} is not an IPv4 address or CIDR such as 198.18.100.0/24`);
  }
  const mask = prefixMask(prefix);
  const net = (addr & mask) >>> 0;
  if (prefix < LAB_PREFIX || !inLabRange(net)) throw labRule(`source ${t}`);
  const size = 2 ** (32 - prefix);
  const skipEnds = prefix <= 30;
  return {
    net,
    prefix,
    first: (net + (skipEnds ? 1 : 0)) >>> 0,
    last: (net + size - 1 - (skipEnds ? 1 : 0)) >>> 0,
  };
}

export interface Target {
  addr: Ipv4Addr;
  port: number;
}

/** Parses "198.18.0.2:5061" and checks the lab range. */
export function parseTarget(text: string): Target {
  const m = /^\s*([0-9.]+):(\d{1,5})\s*$/.exec(text);
  const addr = m ? parseIpv4(m[1]) : null;
  const port = m ? Number(m[2]) : NaN;
  if (!m || addr === null || port < 1 || port > 65535) {
    throw new UsageError(`target ${JSON.stringify(text)} must be ADDRESS:PORT, such as 198.18.0.2:5061 (port 1..65535)`);
  }
  if (!inLabRange(addr)) throw labRule(`target ${formatIpv4(addr)}`);
  return { addr, port };
}

// ---------------------------------------------------------------------------
// The segment
// ---------------------------------------------------------------------------

export const SYN_PACKET_LENGTH = 44; // IPv4 20 + TCP 20 + MSS option 4
const IP_DONT_FRAGMENT = 0x4000;
const TCP_FLAG_SYN = 0x02;

export interface SynFields {
  src: Ipv4Addr;
  dst: Ipv4Addr;
  srcPort: number;
  dstPort: number;
  isn: number;
  ipId: number;
  ttl: number;
  window: number;
  mss: number;
}

/**
 * Writes an IPv4 datagram carrying one TCP SYN (with an MSS option, as every real
 * client sends) at `off`, with both checksums; returns its length. Allocates nothing.
 */
export function writeSyn(buf: Uint8Array, off: number, f: SynFields): number {
  const len = SYN_PACKET_LENGTH;
  const ip = off;
  buf[ip] = 0x45; // version 4, IHL 5
  buf[ip + 1] = 0; // DSCP/ECN
  buf[ip + 2] = len >>> 8;
  buf[ip + 3] = len & 0xff;
  buf[ip + 4] = (f.ipId >>> 8) & 0xff;
  buf[ip + 5] = f.ipId & 0xff;
  buf[ip + 6] = IP_DONT_FRAGMENT >>> 8;
  buf[ip + 7] = 0;
  buf[ip + 8] = f.ttl;
  buf[ip + 9] = 6; // TCP
  buf[ip + 10] = 0;
  buf[ip + 11] = 0;
  put32(buf, ip + 12, f.src);
  put32(buf, ip + 16, f.dst);
  const ipSum = internetChecksum(buf, ip, 20);
  buf[ip + 10] = ipSum >>> 8;
  buf[ip + 11] = ipSum & 0xff;

  const tcp = off + 20;
  buf[tcp] = f.srcPort >>> 8;
  buf[tcp + 1] = f.srcPort & 0xff;
  buf[tcp + 2] = f.dstPort >>> 8;
  buf[tcp + 3] = f.dstPort & 0xff;
  put32(buf, tcp + 4, f.isn);
  put32(buf, tcp + 8, 0); // no ACK number on a SYN
  buf[tcp + 12] = 6 << 4; // data offset: 6 words (20 + 4 option bytes)
  buf[tcp + 13] = TCP_FLAG_SYN;
  buf[tcp + 14] = f.window >>> 8;
  buf[tcp + 15] = f.window & 0xff;
  buf[tcp + 16] = 0; // checksum, below
  buf[tcp + 17] = 0;
  buf[tcp + 18] = 0; // urgent pointer
  buf[tcp + 19] = 0;
  buf[tcp + 20] = 2; // MSS option: kind 2, length 4 (RFC 793 3.1)
  buf[tcp + 21] = 4;
  buf[tcp + 22] = f.mss >>> 8;
  buf[tcp + 23] = f.mss & 0xff;
  const tcpLen = len - 20;
  const sum = checksumFinish(checksumAdd(buf, tcp, tcpLen, pseudoHeaderSum(f.src, f.dst, 6, tcpLen)));
  buf[tcp + 16] = sum >>> 8;
  buf[tcp + 17] = sum & 0xff;
  return len;
}

function put32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = (v >>> 24) & 0xff;
  buf[at + 1] = (v >>> 16) & 0xff;
  buf[at + 2] = (v >>> 8) & 0xff;
  buf[at + 3] = v & 0xff;
}

/** xorshift128: fast, seedable, good enough to scatter ports and addresses. */
export class Xorshift128 {
  private x: number;
  private y: number;
  private z: number;
  private w: number;
  constructor(seed: number) {
    // splitmix-style scrambling so that nearby seeds give unrelated streams.
    let s = seed >>> 0 || 0x9e3779b9;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let t = s;
      t = Math.imul(t ^ (t >>> 16), 0x85ebca6b) >>> 0;
      t = Math.imul(t ^ (t >>> 13), 0xc2b2ae35) >>> 0;
      return (t ^ (t >>> 16)) >>> 0;
    };
    this.x = next();
    this.y = next();
    this.z = next();
    this.w = next() || 1;
  }
  /** A uniformly distributed unsigned 32-bit integer. */
  u32(): number {
    const t = (this.x ^ (this.x << 11)) >>> 0;
    this.x = this.y;
    this.y = this.z;
    this.z = this.w;
    this.w = (this.w ^ (this.w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return this.w;
  }
  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + Math.floor((this.u32() / 0x100000000) * (hi - lo + 1));
  }
}

// ---------------------------------------------------------------------------
// The flood
// ---------------------------------------------------------------------------

export const MAX_COUNT = 1_000_000;
export const MAX_DURATION_MS = 60_000;
export const MAX_RATE_PPS = 10_000_000;

export interface SynFloodOptions {
  /** "198.18.0.2:5061" */
  target: string;
  /** Spoofed sources: a CIDR ("198.18.100.0/24") or one address, all inside 198.18.0.0/15. */
  source: string;
  /** Packets to send (1..1,000,000). Required. */
  count: number;
  /** Longest run in ms (1..60,000). Required. */
  durationMs: number;
  /** Packets per second; unlimited (as fast as the socket takes them) when absent. */
  ratePps?: number;
  /** Source ports are drawn from this range (default 1024..65535). */
  srcPorts?: [number, number];
  ttl?: number;
  window?: number;
  mss?: number;
  /** PRNG seed, for a reproducible sequence of addresses, ports and ISNs. */
  seed?: number;
  /** Called about every `progressMs` (default 1000) while sending. */
  onProgress?: (p: SynFloodProgress) => void;
  progressMs?: number;
  signal?: AbortSignal;
}

export interface SynFloodProgress {
  sent: number;
  count: number;
  elapsedMs: number;
  pps: number;
}

export interface SynFloodResult {
  sent: number;
  seconds: number;
  pps: number;
  /** Sends the kernel refused for a moment (no buffer space) and that were retried. */
  retries: number;
  stoppedBy: 'count' | 'duration' | 'abort';
}

interface ValidatedFlood {
  target: Target;
  source: SourceBlock;
  count: number;
  durationMs: number;
  ratePps: number | undefined;
  srcPorts: [number, number];
  ttl: number;
  window: number;
  mss: number;
  seed: number;
}

function intIn(name: string, v: unknown, lo: number, hi: number, unit = ''): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new UsageError(`${name} must be an integer from ${lo} to ${hi}${unit}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Checks every option (lab range, bounds) without touching the network. */
export function validateFlood(o: SynFloodOptions): ValidatedFlood {
  if (o.count === undefined) throw new UsageError(`count is required (1..${MAX_COUNT}): floods are bounded`);
  if (o.durationMs === undefined) throw new UsageError(`durationMs is required (1..${MAX_DURATION_MS}): floods are bounded`);
  const count = intIn('count', o.count, 1, MAX_COUNT);
  const durationMs = intIn('durationMs', o.durationMs, 1, MAX_DURATION_MS, ' ms');
  const ratePps = o.ratePps === undefined ? undefined : intIn('ratePps', o.ratePps, 1, MAX_RATE_PPS);
  const srcPorts = o.srcPorts ?? [1024, 65535];
  intIn('srcPorts[0]', srcPorts[0], 1, 65535);
  intIn('srcPorts[1]', srcPorts[1], srcPorts[0], 65535);
  return {
    target: parseTarget(o.target),
    source: parseSourceBlock(o.source),
    count,
    durationMs,
    ratePps,
    srcPorts,
    ttl: intIn('ttl', o.ttl ?? 64, 1, 255),
    window: intIn('window', o.window ?? 64240, 0, 65535),
    mss: intIn('mss', o.mss ?? 1460, 88, 65535),
    seed: o.seed === undefined ? randomBytes(4).readUInt32BE(0) : intIn('seed', o.seed, 0, 0xffffffff),
  };
}

/** The part of raw-socket we use (the package ships no types). */
interface RawSocket {
  send(buf: Buffer, off: number, len: number, addr: string, before: () => void, after: (err: Error | null, bytes: number) => void): void;
  setOption(level: number, option: number, value: number): void;
  pauseRecv(): void;
  close(): void;
  on(event: 'error', fn: (e: Error) => void): void;
}
interface RawSocketModule {
  createSocket(o: { protocol: number; bufferSize?: number }): RawSocket;
  SocketLevel: { SOL_SOCKET: number; IPPROTO_IP: number };
  SocketOption: { IP_HDRINCL: number; SO_SNDBUF: number };
}

function loadRawSocket(): RawSocketModule {
  try {
    return require('raw-socket') as RawSocketModule;
  } catch (e) {
    throw new Error(`synflood: cannot load raw-socket (${(e as Error).message.split('\n')[0]}); run npm install`, { cause: e });
  }
}

const IPPROTO_RAW = 255; // send-only raw socket; implies IP_HDRINCL on Linux (raw(7))
/** Requests handed to raw-socket at once: enough to keep it busy, few enough to stop promptly. */
const WINDOW = 32;

function isTransient(e: Error): boolean {
  return /No buffer space|Resource temporarily unavailable|Operation would block/i.test(e.message);
}

/** Sends the flood; resolves when `count` were sent, `durationMs` passed or `signal` aborted. */
export function synflood(opts: SynFloodOptions): Promise<SynFloodResult> {
  let v: ValidatedFlood;
  try {
    v = validateFlood(opts);
  } catch (e) {
    return Promise.reject(e);
  }
  const raw = loadRawSocket();
  let sock: RawSocket;
  try {
    sock = raw.createSocket({ protocol: IPPROTO_RAW, bufferSize: 64 });
    sock.setOption(raw.SocketLevel.IPPROTO_IP, raw.SocketOption.IP_HDRINCL, 1);
    sock.setOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_SNDBUF, 4 * 1024 * 1024);
    sock.pauseRecv();
  } catch (e) {
    const why = (e as Error).message;
    const hint = /not permitted/i.test(why) ? ' (raw sockets need root or CAP_NET_RAW)' : '';
    return Promise.reject(new Error(`synflood: cannot open a raw socket: ${why}${hint}`));
  }

  const rng = new Xorshift128(v.seed);
  const buf = Buffer.alloc(SYN_PACKET_LENGTH);
  const fields: SynFields = {
    src: 0,
    dst: v.target.addr,
    srcPort: 0,
    dstPort: v.target.port,
    isn: 0,
    ipId: 0,
    ttl: v.ttl,
    window: v.window,
    mss: v.mss,
  };
  const dstText = formatIpv4(v.target.addr);
  // Runs just before each sendto(): one buffer, rewritten per packet.
  const fill = (): void => {
    fields.src = rng.range(v.source.first, v.source.last) >>> 0;
    fields.srcPort = rng.range(v.srcPorts[0], v.srcPorts[1]);
    fields.isn = rng.u32();
    fields.ipId = rng.u32() & 0xffff;
    writeSyn(buf, 0, fields);
  };

  return new Promise<SynFloodResult>((resolve, reject) => {
    const t0 = performance.now();
    const deadline = t0 + v.durationMs;
    let queued = 0;
    let sent = 0;
    let inflight = 0;
    let retries = 0;
    let stoppedBy: SynFloodResult['stoppedBy'] | null = null;
    let fatal: Error | null = null;
    let finished = false;
    let tokenTimer: NodeJS.Timeout | null = null;

    const elapsed = (): number => performance.now() - t0;
    const progress = (): void => {
      const ms = elapsed();
      opts.onProgress?.({ sent, count: v.count, elapsedMs: ms, pps: ms > 0 ? (sent * 1000) / ms : 0 });
    };
    const progressTimer = opts.onProgress ? setInterval(progress, opts.progressMs ?? 1000) : null;
    progressTimer?.unref();
    const deadlineTimer = setTimeout(() => pump(), v.durationMs + 1);
    // If the socket stops completing sends, give up a little after the deadline.
    const watchdog = setTimeout(() => finish(), v.durationMs + 5000);
    const onAbort = (): void => pump();
    opts.signal?.addEventListener('abort', onAbort);

    function finish(): void {
      if (finished) return;
      finished = true;
      clearTimeout(deadlineTimer);
      clearTimeout(watchdog);
      if (tokenTimer) clearTimeout(tokenTimer);
      if (progressTimer) clearInterval(progressTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      try {
        sock.close();
      } catch {
        /* already closed */
      }
      if (fatal) {
        reject(fatal);
        return;
      }
      progress(); // the final count, also for floods shorter than one progress period
      const seconds = elapsed() / 1000;
      resolve({ sent, seconds, pps: seconds > 0 ? sent / seconds : 0, retries, stoppedBy: stoppedBy ?? (sent >= v.count ? 'count' : 'duration') });
    }

    function after(err: Error | null): void {
      inflight--;
      if (err) {
        if (isTransient(err)) {
          retries++;
          queued--; // not sent: it goes out again
        } else if (!fatal) {
          fatal = new Error(`synflood: send to ${dstText} failed: ${err.message}`);
          stoppedBy = 'abort';
        }
      } else {
        sent++;
      }
      pump();
    }

    function pump(): void {
      if (finished) return;
      if (stoppedBy === null) {
        if (opts.signal?.aborted) stoppedBy = 'abort';
        else if (sent >= v.count) stoppedBy = 'count';
        else if (performance.now() >= deadline) stoppedBy = 'duration';
      }
      if (stoppedBy === null) {
        const now = performance.now();
        const allowed = v.ratePps === undefined ? v.count : Math.min(v.count, Math.floor(((now - t0) * v.ratePps) / 1000) + 1);
        while (queued < allowed && inflight < WINDOW) {
          queued++;
          inflight++;
          sock.send(buf, 0, SYN_PACKET_LENGTH, dstText, fill, after);
        }
        if (inflight === 0 && queued < v.count && !tokenTimer) {
          // Rate-limited: wake when the next packet is due. A failed send retries on the next tick.
          const due = v.ratePps === undefined ? now + 1 : t0 + (queued * 1000) / v.ratePps;
          tokenTimer = setTimeout(
            () => {
              tokenTimer = null;
              pump();
            },
            Math.max(0, Math.min(due, deadline) - now),
          );
        }
      }
      if (inflight === 0 && stoppedBy !== null) finish();
    }

    sock.on('error', (e: Error) => {
      if (!fatal) fatal = new Error(`synflood: raw socket error: ${e.message}`);
      stoppedBy = 'abort';
      inflight = 0;
      finish();
    });
    pump();
  });
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

const USAGE =
  'usage: synflood --target ADDR:PORT --source CIDR --count N --duration SECONDS [--rate PPS] [--seed N] [--json] [--quiet]\n' +
  `  every address must be in ${LAB_CIDR_TEXT}; count <= ${MAX_COUNT}; duration <= ${MAX_DURATION_MS / 1000} s\n`;

export interface SynFloodCli {
  opts: SynFloodOptions;
  json: boolean;
  quiet: boolean;
}

/** Parses the program's flags (it runs without the faultstack CLI: lab/flags.ts, node's parseArgs). */
export function parseSynFloodArgs(argv: readonly string[]): SynFloodCli | 'help' {
  const { values: v } = parseFlags('synflood', argv, {
    target: { type: 'string' },
    source: { type: 'string' },
    count: { type: 'string' },
    duration: { type: 'string' },
    rate: { type: 'string' },
    seed: { type: 'string' },
    json: { type: 'boolean' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) return 'help';
  const vals = new Map(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === 'string'));
  for (const [name, value] of vals) if (value === '') throw new UsageError(`synflood: --${name} needs a value`);
  for (const req of ['target', 'source', 'count', 'duration']) {
    if (!vals.has(req)) throw new UsageError(`synflood: --${req} is required (floods are bounded in count and time)`);
  }
  const num = (name: string, re: RegExp): number => {
    const s = vals.get(name)!;
    if (!re.test(s)) throw new UsageError(`synflood: --${name} must be a number, got ${JSON.stringify(s)}`);
    return Number(s);
  };
  const opts: SynFloodOptions = {
    target: vals.get('target')!,
    source: vals.get('source')!,
    count: num('count', /^\d+$/),
    durationMs: Math.round(num('duration', /^(\d+(\.\d*)?|\.\d+)$/) * 1000),
  };
  if (vals.has('rate')) opts.ratePps = num('rate', /^\d+$/);
  if (vals.has('seed')) opts.seed = num('seed', /^\d+$/);
  validateFlood({ ...opts, seed: opts.seed ?? 0 });
  return { opts, json: v.json === true, quiet: v.quiet === true };
}

export async function main(argv: readonly string[]): Promise<number> {
  let cli: SynFloodCli | 'help';
  try {
    cli = parseSynFloodArgs(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (cli === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const { opts, json, quiet } = cli;
  const tty = process.stderr.isTTY === true;
  const line = (p: SynFloodProgress): string =>
    `synflood: ${p.sent}/${p.count} SYNs to ${opts.target}, ${(p.elapsedMs / 1000).toFixed(1)} s, ${Math.round(p.pps)} pps`;
  if (!quiet) {
    opts.onProgress = (p) => process.stderr.write(tty ? `\r${line(p)}` : `${line(p)}\n`);
  }
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  opts.signal = ac.signal;
  try {
    const r = await synflood(opts);
    if (!quiet && tty) process.stderr.write('\n');
    if (json) {
      process.stdout.write(JSON.stringify({ ...r, target: opts.target, source: opts.source }) + '\n');
    } else {
      process.stdout.write(
        `synflood: sent ${r.sent} SYNs to ${opts.target} from ${opts.source} in ${r.seconds.toFixed(2)} s ` +
          `(${Math.round(r.pps)} pps, stopped by ${r.stoppedBy})\n`,
      );
    }
    return 0;
  } catch (e) {
    if (!quiet && tty) process.stderr.write('\n');
    process.stderr.write(`${(e as Error).message.split('\n')[0]}\n`);
    return e instanceof UsageError ? 2 : 1;
  } finally {
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
