/**
 * The SYN flood generators against a real Linux listener, entirely inside two network
 * namespaces of a lab this test creates (attacker and victim, joined by a veth pair,
 * addresses from 198.18.0.0/15), removed in afterAll. The victim side is checked twice,
 * with a packet capture (every SYN parsed and its checksums verified here) and with the
 * kernel's own counters (/proc/net/snmp and /proc/net/netstat of the victim namespace).
 * tcpdump and hping3 must be installed (scripts/deps.sh): without them the test fails.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHping3Flood } from '../../lab/hping3';
import { Lab, LabProcess, repoRoot } from '../../lab/lab';
import { requireTool } from '../../lab/tools';
import { checksumAdd, checksumFinish, internetChecksum, pseudoHeaderSum } from '../../stack/wire/checksum';
import { formatIpv4, parseIpv4 } from '../../stack/wire/addr';

const ATK_ADDR = '198.18.210.1';
const VIC_ADDR = '198.18.210.2';
const SPOOF_NET = '198.18.211.0/24';
const PORT = 5061;
/** The compiled generator (make build), run as a program inside the attacker namespace. */
const FLOOD_JS = path.join(repoRoot(), 'dist', 'lab', 'synflood.js');

let lab: Lab;
let ifVic = '';
let tmpDir = '';

/** Named counters of /proc/net/snmp and /proc/net/netstat as seen inside a namespace ("Tcp.InSegs"...). */
function kernelCounters(ns: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const file of ['/proc/net/snmp', '/proc/net/netstat']) {
    const lines = execFileSync('ip', ['netns', 'exec', lab.ns(ns), 'cat', file], { encoding: 'utf8' })
      .trim()
      .split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i].split(/\s+/);
      const values = lines[i + 1].split(/\s+/);
      const group = names[0].replace(/:$/, '');
      for (let j = 1; j < names.length; j++) out.set(`${group}.${names[j]}`, Number(values[j]));
    }
  }
  return out;
}

function delta(before: Map<string, number>, after: Map<string, number>, name: string): number {
  const a = after.get(name);
  const b = before.get(name);
  if (a === undefined || b === undefined) throw new Error(`kernel counter ${name} not found`);
  return a - b;
}

interface CapturedSyn {
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  flags: number;
  ipChecksumOk: boolean;
  tcpChecksumOk: boolean;
}

/** Reads a classic pcap (Ethernet link type) and returns every IPv4 TCP segment in it. */
function readPcap(file: string): CapturedSyn[] {
  const b = fs.readFileSync(file);
  if (b.length < 24) return [];
  const magic = b.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new Error(`not a little-endian pcap: magic ${magic.toString(16)}`);
  expect(b.readUInt32LE(20)).toBe(1); // LINKTYPE_ETHERNET on a veth
  const out: CapturedSyn[] = [];
  let off = 24;
  while (off + 16 <= b.length) {
    const incl = b.readUInt32LE(off + 8);
    const frame = b.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (frame.length < 14 + 20 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ip = frame.subarray(14);
    const ihl = (ip[0] & 0x0f) * 4;
    const total = ip.readUInt16BE(2);
    if (ip[9] !== 6 || total > ip.length) continue;
    const tcpLen = total - ihl;
    const src = ip.readUInt32BE(12);
    const dst = ip.readUInt32BE(16);
    out.push({
      src,
      dst,
      srcPort: ip.readUInt16BE(ihl),
      dstPort: ip.readUInt16BE(ihl + 2),
      flags: ip[ihl + 13],
      ipChecksumOk: internetChecksum(ip, 0, ihl) === 0,
      tcpChecksumOk: checksumFinish(checksumAdd(ip, ihl, tcpLen, pseudoHeaderSum(src, dst, 6, tcpLen))) === 0,
    });
  }
  return out;
}

interface Capture {
  file: string;
  /** Waits until `expected` SYN frames are on disk (or 5 s pass), then stops tcpdump. */
  stop(expected: number): Promise<void>;
}

/** tcpdump in the victim namespace, SYN-only (no ACK) segments to the listener's port. */
async function startCapture(name: string): Promise<Capture> {
  const file = path.join(tmpDir, `${name}.pcap`);
  const child: LabProcess = lab.spawn('vic', 'tcpdump', [
    '-i',
    ifVic,
    '-n',
    '-U',
    '-B',
    '8192',
    '-s',
    '128',
    '-w',
    file,
    `tcp[13] & 0x12 == 0x02 and dst port ${PORT}`,
  ]);
  await child.waitFor(/listening on/, { stream: 'stderr' });
  return {
    file,
    async stop(expected: number) {
      const until = Date.now() + 5000;
      while (Date.now() < until && (!fs.existsSync(file) || readPcap(file).length < expected)) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 200)); // anything extra would show up now
      child.signal('SIGINT');
      await child.exited;
    },
  };
}

/** Runs the compiled generator as a program inside the attacker namespace. */
function runSynfloodCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return lab.exec('atk', process.execPath, [FLOOD_JS, ...args], { timeoutMs: 90_000 });
}

describe('SYN flood generators in throwaway namespaces', () => {
  beforeAll(async () => {
    requireTool('tcpdump');
    requireTool('hping3');
    if (!fs.existsSync(FLOOD_JS)) throw new Error(`${FLOOD_JS} is missing: run make build first`);
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-synflood-'));
    lab = await Lab.create('syn');
    await lab.addNamespace('atk');
    await lab.addNamespace('vic');
    ({ devB: ifVic } = await lab.veth('atk', 'vic', { addrA: `${ATK_ADDR}/24`, addrB: `${VIC_ADDR}/24` }));
    // SYN-ACKs to the spoofed sources go back to the attacker namespace, which drops
    // them (not its addresses, no forwarding): nothing leaves the two namespaces.
    await lab.ip('vic', 'route', 'add', SPOOF_NET, 'via', ATK_ADDR);

    // The kernel listener: small backlog, so the flood overflows its SYN queue.
    const listener = lab.spawn('vic', process.execPath, [
      '-e',
      `const s = require('net').createServer(); s.listen({ host: '${VIC_ADDR}', port: ${PORT}, backlog: 16 }, () => console.log('ready')); setTimeout(() => process.exit(0), 600000);`,
    ]);
    await listener.waitFor(/ready/, { stream: 'stdout' });
  }, 120_000);

  afterAll(async () => {
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
    await lab?.cleanup(); // throws if a namespace, device or process of the lab is left
  });

  it('2000 spoofed SYNs reach a kernel listener with valid checksums and lab sources', async () => {
    const before = kernelCounters('vic');
    const cap = await startCapture('raw');
    const r = await runSynfloodCli([
      '--target',
      `${VIC_ADDR}:${PORT}`,
      '--source',
      SPOOF_NET,
      '--count',
      '2000',
      '--duration',
      '10',
      '--rate',
      '20000',
      '--seed',
      '7',
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(res).toMatchObject({ sent: 2000, stoppedBy: 'count' });
    expect(res.pps).toBeGreaterThan(1000);
    expect(r.stderr).toMatch(/synflood: \d+\/2000 SYNs/); // the progress line
    await cap.stop(2000);
    const after = kernelCounters('vic');

    const syns = readPcap(cap.file);
    expect(syns.length).toBe(2000);
    const lo = parseIpv4('198.18.211.1')!;
    const hi = parseIpv4('198.18.211.254')!;
    for (const s of syns) {
      expect(s.ipChecksumOk).toBe(true);
      expect(s.tcpChecksumOk).toBe(true);
      expect(s.flags).toBe(0x02);
      expect(formatIpv4(s.dst)).toBe(VIC_ADDR);
      expect(s.dstPort).toBe(PORT);
      expect(s.src >= lo && s.src <= hi, formatIpv4(s.src)).toBe(true);
      expect(s.srcPort).toBeGreaterThanOrEqual(1024);
    }
    expect(new Set(syns.map((s) => s.src)).size).toBeGreaterThan(200); // spread over the /24
    expect(new Set(syns.map((s) => s.srcPort)).size).toBeGreaterThan(1500);

    // The kernel agrees: it received them, found no checksum error, and its SYN queue
    // (backlog 16) overflowed into SYN cookies, as under a real flood.
    expect(delta(before, after, 'Ip.InReceives')).toBeGreaterThanOrEqual(2000);
    expect(delta(before, after, 'Ip.InHdrErrors')).toBe(0);
    expect(delta(before, after, 'Tcp.InSegs')).toBeGreaterThanOrEqual(2000);
    expect(delta(before, after, 'Tcp.InCsumErrors')).toBe(0);
    expect(delta(before, after, 'Tcp.InErrs')).toBe(0);
    expect(delta(before, after, 'TcpExt.SyncookiesSent')).toBeGreaterThan(1000);
  }, 120_000);

  it('stops by itself at its time bound', async () => {
    const r = await runSynfloodCli([
      '--target',
      `${VIC_ADDR}:${PORT}`,
      '--source',
      SPOOF_NET,
      '--count',
      '1000000',
      '--duration',
      '0.5',
      '--rate',
      '2000',
      '--json',
      '--quiet',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const res = JSON.parse(r.stdout.trim());
    expect(res.stoppedBy).toBe('duration');
    expect(res.seconds).toBeLessThan(1.5);
    expect(res.sent).toBeGreaterThan(500);
    expect(res.sent).toBeLessThanOrEqual(1100); // 2000 pps for 0.5 s, plus the packet at t=0
  }, 60_000);

  it('sends as fast as the socket takes them when no rate is given', async () => {
    const r = await runSynfloodCli(['--target', `${VIC_ADDR}:${PORT}`, '--source', SPOOF_NET, '--count', '20000', '--duration', '20', '--json', '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim());
    expect(res.sent).toBe(20000);
    expect(res.pps).toBeGreaterThan(5000);
  }, 60_000);

  it('refuses targets and sources outside the lab range, with exit status 2', async () => {
    const bad = await runSynfloodCli(['--target', '10.0.0.1:80', '--source', SPOOF_NET, '--count', '1', '--duration', '1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.split('\n')[0]).toBe('target 10.0.0.1 is outside the lab range 198.18.0.0/15: lab floods may only name addresses in it');
    const src = await runSynfloodCli(['--target', `${VIC_ADDR}:${PORT}`, '--source', '192.168.0.0/24', '--count', '1', '--duration', '1']);
    expect(src.code).toBe(2);
    expect(src.stderr).toContain('source 192.168.0.0/24 is outside the lab range');
    const unbounded = await runSynfloodCli(['--target', `${VIC_ADDR}:${PORT}`, '--source', SPOOF_NET, '--count', '1']);
    expect(unbounded.code).toBe(2);
    expect(unbounded.stderr).toContain('--duration is required');
  }, 60_000);

  it('the hping3 wrapper sends the same bounded flood from fixed lab sources', async () => {
    const before = kernelCounters('vic');
    const cap = await startCapture('hping3');
    const r = await runHping3Flood({
      // 2 ms apart (0.4 s per process) inside a 5 s bound: a busy machine delays hping3's
      // timer, and the bound must not cut a run that is only slow.
      target: `${VIC_ADDR}:${PORT}`,
      sources: ['198.18.211.77', '198.18.211.78'],
      count: 400,
      durationMs: 5000,
      intervalUs: 2000,
      netns: lab.ns('atk'),
    });
    await cap.stop(400);
    const after = kernelCounters('vic');
    expect(r.transmitted).toBe(400);
    expect(r.timedOut).toBe(false);
    expect(r.commands.map((c) => c.count)).toEqual([200, 200]);
    const syns = readPcap(cap.file);
    expect(syns.length).toBe(400);
    for (const s of syns) {
      expect(s.ipChecksumOk && s.tcpChecksumOk).toBe(true);
      expect(['198.18.211.77', '198.18.211.78']).toContain(formatIpv4(s.src));
      expect(s.dstPort).toBe(PORT);
    }
    expect(delta(before, after, 'Tcp.InSegs')).toBeGreaterThanOrEqual(400);
    expect(delta(before, after, 'Tcp.InCsumErrors')).toBe(0);
  }, 60_000);

  it('unpaced hping3 --flood: its nftables quota holds it to its packet count; without reaching it, the time bound stops it', async () => {
    const before = kernelCounters('vic');
    const r = await runHping3Flood({
      target: `${VIC_ADDR}:${PORT}`,
      sources: ['198.18.211.79'],
      count: 3000,
      durationMs: 1500,
      flood: true,
      netns: lab.ns('atk'),
    });
    const after = kernelCounters('vic');
    // Unpaced it offers far more than 3000 within 1.5 s: the quota stops it first.
    expect(r.quotaReached).toBe(true);
    expect(r.seconds).toBeLessThan(5);
    expect(r.commands[0]!.argv).toContain('--flood');
    const arrived = delta(before, after, 'Tcp.InSegs');
    expect(arrived).toBeGreaterThanOrEqual(3000);
    expect(arrived).toBeLessThan(3000 + 200); // the victim's other segments: none are expected
    expect(r.transmitted).toBe(3000);
    // The quota's table is gone afterwards.
    const tables = execFileSync('ip', ['netns', 'exec', lab.ns('atk'), 'nft', 'list', 'tables'], { encoding: 'utf8' });
    expect(tables).not.toMatch(/fsquota/);
    // A count it cannot reach in 1 s: the time bound ends it (SIGINT, hping3's own summary).
    const t = await runHping3Flood({
      target: `${VIC_ADDR}:${PORT}`,
      sources: ['198.18.211.80'],
      count: 1_000_000,
      durationMs: 1000,
      flood: true,
      netns: lab.ns('atk'),
    });
    expect(t.timedOut).toBe(true);
    expect(t.quotaReached).toBe(false);
    expect(t.transmitted).toBeGreaterThan(0);
    expect(t.seconds).toBeLessThan(4);
  }, 60_000);
});
