/**
 * The SYN flood generators against a real Linux listener, entirely inside two network
 * namespaces this test creates (attacker and victim, joined by a veth pair, addresses
 * from 198.18.0.0/15), removed in afterAll. The victim side is checked twice, with a
 * packet capture (every SYN parsed and its checksums verified here) and with the
 * kernel's own counters (/proc/net/snmp and /proc/net/netstat of the victim namespace).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHping3Flood } from '../../lab/hping3';
import { checksumAdd, checksumFinish, internetChecksum, pseudoHeaderSum } from '../../stack/wire/checksum';
import { formatIpv4, parseIpv4 } from '../../stack/wire/addr';

const ROOT = path.resolve(__dirname, '../..');
const TAG = `${process.pid % 100000}`;
const NS_ATK = `fs-syn-atk-${TAG}`;
const NS_VIC = `fs-syn-vic-${TAG}`;
const IF_ATK = `fsa${TAG}`;
const IF_VIC = `fsv${TAG}`;
const ATK_ADDR = '198.18.210.1';
const VIC_ADDR = '198.18.210.2';
const SPOOF_NET = '198.18.211.0/24';
const PORT = 5061;

function have(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

const canRun = process.platform === 'linux' && process.getuid?.() === 0 && have('ip');

/** Installs a Debian package when its program is missing (scripts/deps.sh does this for make). */
function ensureTool(bin: string, pkg: string): boolean {
  if (have(bin)) return true;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', pkg], { stdio: 'ignore', env, timeout: 240_000 });
  if (install().status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env, timeout: 240_000 });
    install();
  }
  return have(bin);
}

function sh(...argv: string[]): string {
  return execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Named counters of /proc/net/snmp and /proc/net/netstat as seen inside a namespace ("Tcp.InSegs"...). */
function kernelCounters(ns: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const file of ['/proc/net/snmp', '/proc/net/netstat']) {
    const lines = sh('ip', 'netns', 'exec', ns, 'cat', file).trim().split('\n');
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

const children = new Set<ChildProcess>();

/** tcpdump in the victim namespace, SYN-only (no ACK) segments to the listener's port. */
async function startCapture(name: string): Promise<Capture> {
  const file = path.join(tmpDir, `${name}.pcap`);
  const child = spawn(
    'ip',
    ['netns', 'exec', NS_VIC, 'tcpdump', '-i', IF_VIC, '-n', '-U', '-B', '8192', '-s', '128', '-w', file,
      `tcp[13] & 0x12 == 0x02 and dst port ${PORT}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.add(child);
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.on('exit', () => reject(new Error(`tcpdump exited: ${err}`)));
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    file,
    async stop(expected: number) {
      const until = Date.now() + 5000;
      while (Date.now() < until && (!fs.existsSync(file) || readPcap(file).length < expected)) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 200)); // anything extra would show up now
      child.kill('SIGINT');
      await exited;
      children.delete(child);
    },
  };
}

let tmpDir = '';
let floodJs = '';
let listener: ChildProcess | null = null;

/** Runs the compiled generator as a program inside the attacker namespace. */
function runSynfloodCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', NS_ATK, process.execPath, floodJs, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NODE_PATH: path.join(ROOT, 'node_modules') },
    timeout: 90_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.skipIf(!canRun)('SYN flood generators in throwaway namespaces', () => {
  let hping3 = false;

  beforeAll(async () => {
    expect(ensureTool('tcpdump', 'tcpdump')).toBe(true);
    hping3 = ensureTool('hping3', 'hping3');
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-synflood-'));

    // The generator runs as a program inside the namespace: compile it (and only it) here.
    sh(
      path.join(ROOT, 'node_modules/.bin/tsc'), '--outDir', path.join(tmpDir, 'js'), '--rootDir', ROOT,
      '--module', 'commonjs', '--target', 'ES2022', '--moduleResolution', 'node', '--strict', '--esModuleInterop',
      '--skipLibCheck', '--types', 'node', path.join(ROOT, 'lab/synflood.ts'),
    );
    floodJs = path.join(tmpDir, 'js/lab/synflood.js');

    sh('ip', 'netns', 'add', NS_ATK);
    sh('ip', 'netns', 'add', NS_VIC);
    sh('ip', 'link', 'add', IF_ATK, 'netns', NS_ATK, 'type', 'veth', 'peer', 'name', IF_VIC, 'netns', NS_VIC);
    sh('ip', '-n', NS_ATK, 'addr', 'add', `${ATK_ADDR}/24`, 'dev', IF_ATK);
    sh('ip', '-n', NS_VIC, 'addr', 'add', `${VIC_ADDR}/24`, 'dev', IF_VIC);
    for (const [ns, dev] of [[NS_ATK, IF_ATK], [NS_VIC, IF_VIC]]) {
      sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
      sh('ip', '-n', ns, 'link', 'set', dev, 'up');
    }
    // SYN-ACKs to the spoofed sources go back to the attacker namespace, which drops
    // them (not its addresses, no forwarding): nothing leaves the two namespaces.
    sh('ip', '-n', NS_VIC, 'route', 'add', SPOOF_NET, 'via', ATK_ADDR);

    // The kernel listener: small backlog, so the flood overflows its SYN queue.
    listener = spawn(
      'ip',
      ['netns', 'exec', NS_VIC, process.execPath, '-e',
        `const s = require('net').createServer(); s.listen({ host: '${VIC_ADDR}', port: ${PORT}, backlog: 16 }, () => console.log('ready')); setTimeout(() => process.exit(0), 600000);`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.add(listener);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('listener did not start')), 10_000);
      listener!.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
  }, 600_000);

  afterAll(() => {
    for (const c of children) {
      try {
        if (c.pid !== undefined && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const ns of [NS_ATK, NS_VIC]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
    const left = sh('ip', 'netns', 'list');
    expect(left).not.toContain(NS_ATK);
    expect(left).not.toContain(NS_VIC);
  });

  it('2000 spoofed SYNs reach a kernel listener with valid checksums and lab sources', async () => {
    const before = kernelCounters(NS_VIC);
    const cap = await startCapture('raw');
    const r = runSynfloodCli([
      '--target', `${VIC_ADDR}:${PORT}`, '--source', SPOOF_NET, '--count', '2000', '--duration', '10',
      '--rate', '20000', '--seed', '7', '--json',
    ]);
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(res).toMatchObject({ sent: 2000, stoppedBy: 'count' });
    expect(res.pps).toBeGreaterThan(1000);
    expect(r.stderr).toMatch(/synflood: \d+\/2000 SYNs/); // the progress line
    await cap.stop(2000);
    const after = kernelCounters(NS_VIC);

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

  it('stops by itself at its time bound', () => {
    const r = runSynfloodCli([
      '--target', `${VIC_ADDR}:${PORT}`, '--source', SPOOF_NET, '--count', '1000000', '--duration', '0.5',
      '--rate', '2000', '--json', '--quiet',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const res = JSON.parse(r.stdout.trim());
    expect(res.stoppedBy).toBe('duration');
    expect(res.seconds).toBeLessThan(1.5);
    expect(res.sent).toBeGreaterThan(500);
    expect(res.sent).toBeLessThanOrEqual(1100); // 2000 pps for 0.5 s, plus the packet at t=0
  }, 60_000);

  it('sends as fast as the socket takes them when no rate is given', () => {
    const r = runSynfloodCli([
      '--target', `${VIC_ADDR}:${PORT}`, '--source', SPOOF_NET, '--count', '20000', '--duration', '20', '--json', '--quiet',
    ]);
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim());
    expect(res.sent).toBe(20000);
    expect(res.pps).toBeGreaterThan(5000);
  }, 60_000);

  it('refuses targets and sources outside the lab range, with exit status 2', () => {
    const bad = runSynfloodCli(['--target', '10.0.0.1:80', '--source', SPOOF_NET, '--count', '1', '--duration', '1']);
    expect(bad.status).toBe(2);
    expect(bad.stderr.split('\n')[0]).toBe('target 10.0.0.1 is outside the lab range 198.18.0.0/15: lab floods may only name addresses in it');
    const src = runSynfloodCli(['--target', `${VIC_ADDR}:${PORT}`, '--source', '192.168.0.0/24', '--count', '1', '--duration', '1']);
    expect(src.status).toBe(2);
    expect(src.stderr).toContain('source 192.168.0.0/24 is outside the lab range');
    const unbounded = runSynfloodCli(['--target', `${VIC_ADDR}:${PORT}`, '--source', SPOOF_NET, '--count', '1']);
    expect(unbounded.status).toBe(2);
    expect(unbounded.stderr).toContain('--duration is required');
  }, 60_000);

  it('the hping3 wrapper sends the same bounded flood from fixed lab sources', async (ctx) => {
    if (!hping3) ctx.skip();
    const before = kernelCounters(NS_VIC);
    const cap = await startCapture('hping3');
    const r = await runHping3Flood({
      target: `${VIC_ADDR}:${PORT}`, sources: ['198.18.211.77', '198.18.211.78'], count: 400, durationMs: 2000, netns: NS_ATK,
    });
    await cap.stop(400);
    const after = kernelCounters(NS_VIC);
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
});
