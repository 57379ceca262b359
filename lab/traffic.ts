/**
 * Traffic the lab drives through a stack with real Linux tools, and what each run
 * measured: ping, curl, iperf3, a SHA-checked TCP echo, a UDP echo, mutual-TLS bursts.
 * Used by `make demo` (bin/demo.ts) and by scenario files (lab/scenario/run.ts), so both
 * read the tools' output the same way. Every run is bounded in time (and the floods,
 * in lab/hping3.ts and lab/synflood.ts, in packets too).
 */
import * as path from 'node:path';
import type { Lab, Ns } from './lab';
import { repoRoot } from './lab';

function oneLine(s: string, max = 160): string {
  const t = s
    .split('\n')
    .map((x) => x.trim())
    .filter(Boolean)
    .join(' ');
  return t.length > max ? t.slice(0, max - 3) + '...' : t;
}

function lastJson<T>(stdout: string): T | null {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    return null;
  }
}

/** Fails with one line when a program is not installed (make deps installs them). */
export async function requireInLab(lab: Lab, tool: string): Promise<void> {
  const r = await lab.exec(null, 'sh', ['-c', `command -v ${tool}`], { timeoutMs: 5000 });
  if (r.code !== 0) throw new Error(`${tool} is not installed (make deps installs it)`);
}

export interface PingResult {
  sent: number;
  received: number;
  avgMs: number | null;
}

/** `ping -c COUNT -i INTERVAL -W WAIT TO` in a namespace. */
export async function ping(lab: Lab, ns: Ns, to: string, o: { count: number; intervalMs?: number; waitMs?: number }): Promise<PingResult> {
  const interval = Math.max(0.01, (o.intervalMs ?? 200) / 1000);
  const wait = Math.max(1, Math.round((o.waitMs ?? 2000) / 1000));
  const r = await lab.exec(ns, 'ping', ['-n', '-q', '-c', String(o.count), '-i', String(interval), '-W', String(wait), to], {
    timeoutMs: (o.count * interval + wait + 10) * 1000,
  });
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(r.stdout);
  if (!m) throw new Error(`ping ${to}: no summary (exit ${r.code}): ${oneLine(r.stderr || r.stdout)}`);
  const avg = /= [\d.]+\/([\d.]+)\//.exec(r.stdout)?.[1];
  return { sent: Number(m[1]), received: Number(m[2]), avgMs: avg === undefined ? null : Number(avg) };
}

export interface CurlResult {
  exit: number | null;
  httpCode: number;
  bytes: number;
  bitsPerSecond: number;
  stderr: string;
}

/** `curl URL` in a namespace, the body discarded; what it got and how fast. */
export async function curl(lab: Lab, ns: Ns, url: string, o: { maxTimeMs?: number; iface?: string } = {}): Promise<CurlResult> {
  const maxS = (o.maxTimeMs ?? 10_000) / 1000;
  const r = await lab.exec(
    ns,
    'curl',
    [
      '-sS',
      '-o',
      '/dev/null',
      '--max-time',
      String(maxS),
      ...(o.iface ? ['--interface', o.iface] : []),
      '-w',
      '%{http_code} %{size_download} %{speed_download}',
      url,
    ],
    { timeoutMs: (maxS + 10) * 1000 },
  );
  const [code, size, speed] = r.stdout.trim().split(/\s+/).map(Number);
  return { exit: r.code, httpCode: code ?? 0, bytes: size ?? 0, bitsPerSecond: (speed ?? 0) * 8, stderr: oneLine(r.stderr) };
}

export interface Iperf3Result {
  bitsPerSecond: number;
  retransmits: number | null;
  lostPercent: number | null;
}

/** `iperf3 -c TO -t SECONDS -J [-R] [-u -b RATE]` in a namespace. */
export async function iperf3(lab: Lab, ns: Ns, to: string, o: { seconds: number; reverse?: boolean; udp?: boolean; bitrate?: string }): Promise<Iperf3Result> {
  const args = [
    '-c',
    to,
    '-t',
    String(o.seconds),
    '-J',
    ...(o.reverse ? ['-R'] : []),
    ...(o.udp ? ['-u', '-b', o.bitrate ?? '10M'] : o.bitrate ? ['-b', o.bitrate] : []),
  ];
  const r = await lab.exec(ns, 'iperf3', args, { timeoutMs: (o.seconds + 20) * 1000 });
  let doc: {
    error?: string;
    end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number }; sum?: { bits_per_second?: number; lost_percent?: number } };
  };
  try {
    doc = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 ${args.join(' ')}: exit ${r.code}: ${oneLine(r.stderr || r.stdout)}`);
  }
  if (doc.error) throw new Error(`iperf3 ${args.join(' ')}: ${doc.error}`);
  if (o.udp) return { bitsPerSecond: doc.end?.sum?.bits_per_second ?? 0, retransmits: null, lostPercent: doc.end?.sum?.lost_percent ?? null };
  return { bitsPerSecond: doc.end?.sum_received?.bits_per_second ?? 0, retransmits: doc.end?.sum_sent?.retransmits ?? null, lostPercent: null };
}

export interface ShaEchoResult {
  error?: string;
  sentBytes: number;
  receivedBytes: number;
  match: boolean;
  ms: number;
  bitsPerSecond: number;
}

/**
 * lab/clients/sha-peer.js as a client of an echo port: BYTES random bytes out, a
 * half-close, everything that comes back hashed; the two SHA-256s must match.
 */
export async function shaEcho(lab: Lab, ns: Ns, to: string, port: number, bytes: number, timeoutMs: number): Promise<ShaEchoResult> {
  const script = path.join(repoRoot(), 'lab', 'clients', 'sha-peer.js');
  const r = await lab.exec(ns, process.execPath, [script, 'client', to, String(port), String(bytes)], { timeoutMs });
  const doc = lastJson<{ error?: string; sentBytes?: number; sentSha?: string; receivedBytes?: number; receivedSha?: string; ms?: number }>(r.stdout);
  if (!doc || doc.error || r.timedOut) {
    const why = r.timedOut ? `timed out after ${timeoutMs / 1000} s` : (doc?.error ?? `exit ${r.code}: ${oneLine(r.stderr)}`);
    return { error: why, sentBytes: doc?.sentBytes ?? 0, receivedBytes: doc?.receivedBytes ?? 0, match: false, ms: r.ms, bitsPerSecond: 0 };
  }
  const ms = Math.max(1, doc.ms ?? r.ms);
  // Compared only once the transfer reported no error.
  const match = doc.receivedBytes === bytes && doc.sentSha === doc.receivedSha;
  return { sentBytes: doc.sentBytes ?? 0, receivedBytes: doc.receivedBytes ?? 0, match, ms, bitsPerSecond: ((doc.sentBytes ?? 0) * 8) / (ms / 1000) };
}

/** Node script: N datagrams of various sizes to a UDP echo port; counts exact echoes. */
const UDP_ECHO_SCRIPT = `
const dgram = require('dgram'), crypto = require('crypto');
const host = process.argv[1], port = +process.argv[2], n = +process.argv[3];
const sizes = [8, 64, 100, 256, 512, 1000, 1200, 1400, 1472, 33, 9, 700, 1471, 128, 16, 900, 1300, 50, 1024, 400].slice(0, n);
const pending = new Map(); let ok = 0, bad = 0; const t0 = Date.now();
const s = dgram.createSocket('udp4');
const finish = () => { process.stdout.write(JSON.stringify({ sent: sizes.length, ok, bad, ms: Date.now() - t0 }) + '\\n'); process.exit(0); };
s.on('message', (m) => {
  const key = m.subarray(0, 8).toString('hex'), want = pending.get(key);
  if (want && want.equals(m)) { pending.delete(key); ok++; } else bad++;
  if (pending.size === 0) finish();
});
s.on('error', (e) => { process.stdout.write(JSON.stringify({ error: e.message }) + '\\n'); process.exit(1); });
s.bind(0, () => {
  for (const n of sizes) { const b = crypto.randomBytes(n); pending.set(b.subarray(0, 8).toString('hex'), b); s.send(b, port, host); }
});
setTimeout(finish, 3000);
`;

export interface UdpEchoResult {
  sent: number;
  echoed: number;
  wrong: number;
}

/** Up to 20 datagrams of 8 to 1472 bytes to a UDP echo port; how many came back intact. */
export async function udpEcho(lab: Lab, ns: Ns, to: string, port: number, count = 20): Promise<UdpEchoResult> {
  const r = await lab.exec(ns, process.execPath, ['-e', UDP_ECHO_SCRIPT, to, String(port), String(count)], { timeoutMs: 10_000 });
  const doc = lastJson<{ error?: string; sent?: number; ok?: number; bad?: number }>(r.stdout);
  if (!doc || doc.error || doc.sent === undefined) throw new Error(`udp echo to ${to}:${port}: ${doc?.error ?? `exit ${r.code}: ${oneLine(r.stderr)}`}`);
  return { sent: doc.sent, echoed: doc.ok ?? 0, wrong: doc.bad ?? 0 };
}

export interface TlsBurstResult {
  count: number;
  refused: number;
  reset: number;
  served: number;
  other: number;
}

/** lab/clients/tls-burst.js: COUNT mutual-TLS clients at once, each classified refused, reset, served or other. */
export async function tlsBurst(lab: Lab, ns: Ns, to: string, port: number, certDir: string, count: number, timeoutMs: number): Promise<TlsBurstResult> {
  const script = path.join(repoRoot(), 'lab', 'clients', 'tls-burst.js');
  const r = await lab.exec(ns, process.execPath, [script, to, String(port), certDir, String(count), '0', String(timeoutMs)], { timeoutMs: timeoutMs + 15_000 });
  const doc = lastJson<TlsBurstResult>(r.stdout);
  if (!doc || typeof doc.count !== 'number') throw new Error(`tls-burst to ${to}:${port}: no summary (exit ${r.code}): ${oneLine(r.stderr || r.stdout)}`);
  return { count: doc.count, refused: doc.refused, reset: doc.reset, served: doc.served, other: doc.other };
}
