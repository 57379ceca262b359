/**
 * pcap writer: byte-level checks of the file, plus tshark reading hand-made IPv4 / ICMP / UDP /
 * big TCP packets (checksums computed here) with no malformed packets. tshark must be
 * installed (make deps installs it): without it the tshark checks fail.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LINKTYPE_IPV4, LINKTYPE_RAW, PcapDevice, PcapWriter, rotatedName } from '../../drivers/pcap';
import { MemoryLink, VirtualClock } from '../../drivers/memory';
import { requireTool } from '../../lab/tools';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-pcap-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const tmp = () => path.join(dir, `t${n++}.pcap`);

// --- packet builders (checksums by hand) ------------------------------------------------------

function sum16(b: Buffer, start: number, end: number, init = 0): number {
  let s = init;
  for (let i = start; i + 1 < end; i += 2) s += b.readUInt16BE(i);
  if ((end - start) & 1) s += b[end - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
const csum = (b: Buffer, start: number, end: number, init = 0) => ~sum16(b, start, end, init) & 0xffff;
const ip4 = (s: string) => s.split('.').reduce((a, o) => a * 256 + Number(o), 0);

function ipv4(proto: number, src: string, dst: string, payload: Buffer, id = 1): Buffer {
  const b = Buffer.alloc(20 + payload.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(id, 4);
  b[6] = 0x40; // DF
  b[8] = 64;
  b[9] = proto;
  b.writeUInt32BE(ip4(src), 12);
  b.writeUInt32BE(ip4(dst), 16);
  b.writeUInt16BE(csum(b, 0, 20), 10);
  payload.copy(b, 20);
  return b;
}

function pseudo(src: string, dst: string, proto: number, len: number): number {
  const p = Buffer.alloc(12);
  p.writeUInt32BE(ip4(src), 0);
  p.writeUInt32BE(ip4(dst), 4);
  p[9] = proto;
  p.writeUInt16BE(len, 10);
  return sum16(p, 0, 12);
}

function icmpEcho(type: 0 | 8, id: number, seq: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8 + data.length);
  b[0] = type;
  b.writeUInt16BE(id, 4);
  b.writeUInt16BE(seq, 6);
  data.copy(b, 8);
  b.writeUInt16BE(csum(b, 0, b.length), 2);
  return b;
}

function udp(src: string, dst: string, sport: number, dport: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8 + data.length);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt16BE(b.length, 4);
  data.copy(b, 8);
  let c = csum(b, 0, b.length, pseudo(src, dst, 17, b.length));
  if (c === 0) c = 0xffff;
  b.writeUInt16BE(c, 6);
  return b;
}

/** A TCP segment whose checksum field holds only the pseudo-header sum (what a TSO/NEEDS_CSUM packet carries). */
function tcpPartial(src: string, dst: string, len: number): Buffer {
  const b = Buffer.alloc(20 + len, 0x61);
  b.writeUInt16BE(5201, 0);
  b.writeUInt16BE(40000, 2);
  b.writeUInt32BE(1, 4);
  b.writeUInt32BE(1, 8);
  b[12] = 0x50;
  b[13] = 0x18; // PSH ACK
  b.writeUInt16BE(65535, 14);
  b.writeUInt16BE(0, 16);
  b.writeUInt16BE(0, 18);
  b.writeUInt16BE(pseudo(src, dst, 6, b.length), 16);
  return b;
}

function tshark(file: string, fields: string[], extra: string[] = []): string[][] {
  const r = spawnSync('tshark', ['-r', file, '-n', ...extra, '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`tshark failed (${r.status}): ${r.stderr}`);
  return r.stdout
    .trim()
    .split('\n')
    .filter((l) => l.length)
    .map((l) => l.split('|'));
}

/** Frames tshark marks malformed or with an expert error (severity error = 8388608). */
function badFrames(file: string): string[] {
  const r = spawnSync('tshark', ['-r', file, '-n', '-Y', '_ws.malformed || _ws.expert.severity >= 8388608'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`tshark failed (${r.status}): ${r.stderr}`);
  return r.stdout
    .trim()
    .split('\n')
    .filter((l) => l.length);
}

/** Minimal pcap reader for byte-level checks. */
function readPcap(file: string) {
  const b = fs.readFileSync(file);
  const hdr = {
    magicBytes: b.subarray(0, 4).toString('hex'),
    major: b.readUInt16LE(4),
    minor: b.readUInt16LE(6),
    snaplen: b.readUInt32LE(16),
    linktype: b.readUInt32LE(20),
  };
  const recs: { sec: number; usec: number; incl: number; orig: number; data: Buffer }[] = [];
  let o = 24;
  while (o + 16 <= b.length) {
    const incl = b.readUInt32LE(o + 8);
    recs.push({ sec: b.readUInt32LE(o), usec: b.readUInt32LE(o + 4), incl, orig: b.readUInt32LE(o + 12), data: b.subarray(o + 16, o + 16 + incl) });
    o += 16 + incl;
  }
  return { hdr, recs, trailing: b.length - o };
}

// --- tests ------------------------------------------------------------------------------------

const A = '198.18.0.1';
const B = '198.18.0.2';

/** Wraps side a of a memory link, sends ICMP echo + UDP from a; b answers the echo. */
function captureExchange(file: string, linktype: 228 | 101) {
  const clock = new VirtualClock(1_700_000_000_000); // virtual ms
  const link = new MemoryLink({ clock, latencyMs: 0.25 });
  const dev = new PcapDevice(link.a, { path: file, linktype, now: () => clock.now });
  const got: Buffer[] = [];
  dev.onReceive = (pkts, count) => {
    for (let i = 0; i < count; i++) got.push(Buffer.from(pkts[i]!));
  };
  link.b.onReceive = (pkts, count) => {
    for (let i = 0; i < count; i++) {
      const p = pkts[i]!;
      if (p[9] !== 1) continue;
      const req = p.subarray(20);
      link.b.send(ipv4(1, B, A, icmpEcho(0, req.readUInt16BE(4), req.readUInt16BE(6), req.subarray(8)), 100));
    }
    link.b.flush();
  };
  dev.send(ipv4(1, A, B, icmpEcho(8, 0x1234, 1, Buffer.from('faultstack ping payload'))));
  dev.send(ipv4(17, A, B, udp(A, B, 40000, 9, Buffer.from('odd-length udp')), 2));
  dev.flush();
  clock.advance(1.5);
  dev.send(ipv4(17, A, B, udp(A, B, 40001, 7, Buffer.alloc(1000, 7)), 3));
  dev.flush();
  clock.runUntilIdle();
  dev.close();
  return { got, dev };
}

describe('rotation like tcpdump -C / -W (issue 8 item 13: --pcap grew without bound)', () => {
  /** Records of one classic pcap file: [count, every record's first payload byte]. */
  const records = (file: string): number[] => {
    const b = fs.readFileSync(file);
    expect(b.readUInt32LE(0)).toBe(0xa1b2c3d4);
    const out: number[] = [];
    for (let o = 24; o + 16 <= b.length;) {
      const incl = b.readUInt32LE(o + 8);
      out.push(b.readUInt16BE(o + 16 + 4));
      o += 16 + incl;
    }
    return out;
  };
  const pkt = (id: number) => ipv4(17, '198.18.0.1', '198.18.0.2', udp('198.18.0.1', '198.18.0.2', 7, 7, Buffer.alloc(200, id & 255)), id);

  it('names files as tcpdump does', () => {
    expect([0, 1, 2].map((i) => rotatedName('c.pcap', i, undefined))).toEqual(['c.pcap', 'c.pcap1', 'c.pcap2']);
    expect([0, 9].map((i) => rotatedName('c.pcap', i, 10))).toEqual(['c.pcap0', 'c.pcap9']);
    expect([0, 10].map((i) => rotatedName('c.pcap', i, 11))).toEqual(['c.pcap00', 'c.pcap10']);
    expect(rotatedName('c.pcap', 0, 1)).toBe('c.pcap');
  });

  it('-C alone: a new file once one is past the size, each a whole pcap; every packet in exactly one', () => {
    const base = tmp();
    const w = new PcapWriter({ path: base, rotateBytes: 2000, flushBytes: 512 });
    for (let i = 1; i <= 40; i++) w.record(pkt(i), i);
    w.close();
    // A 228-byte packet is a 244-byte record: 9 fit before a file passes 2000 bytes (24 + 9 x 244).
    const rec = 16 + pkt(1).length;
    expect(rec).toBe(244);
    expect(w.files).toBe(5);
    const names = [base, ...Array.from({ length: w.files - 1 }, (_, k) => `${base}${k + 1}`)];
    const ids = names.flatMap((f) => {
      expect(fs.statSync(f).size).toBeLessThanOrEqual(2000 + rec);
      return records(f);
    });
    expect(names.map((f) => records(f).length)).toEqual([9, 9, 9, 9, 4]);
    expect(ids).toEqual(Array.from({ length: 40 }, (_, k) => k + 1));
    expect(fs.existsSync(`${base}${w.files}`)).toBe(false);
  });

  it('-C with -W 3: a ring of three files, the oldest overwritten, the newest packets kept', () => {
    const base = tmp();
    const w = new PcapWriter({ path: base, rotateBytes: 2000, maxFiles: 3, flushBytes: 512 });
    for (let i = 1; i <= 200; i++) w.record(pkt(i), i);
    w.close();
    expect(w.files).toBeGreaterThan(3);
    const names = ['0', '1', '2'].map((d) => `${base}${d}`);
    expect(fs.existsSync(base)).toBe(false);
    expect(fs.existsSync(`${base}3`)).toBe(false);
    const total = names.reduce((a, f) => a + fs.statSync(f).size, 0);
    expect(total).toBeLessThanOrEqual(3 * (2000 + 244));
    const ids = names.flatMap(records).sort((a, b) => a - b);
    // What is kept is the newest run of packets, without a gap, ending with the last.
    expect(ids.at(-1)).toBe(200);
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, k) => 200 - ids.length + 1 + k));
    expect(ids.length).toBeGreaterThan(14);
  });

  it(`tshark reads every rotated file (tshark must be installed: make deps)`, () => {
    const base = tmp();
    const w = new PcapWriter({ path: base, rotateBytes: 3000, maxFiles: 4 });
    for (let i = 1; i <= 60; i++) w.record(pkt(i), i);
    w.close();
    let frames = 0;
    for (const d of ['0', '1', '2', '3']) {
      const rows = tshark(`${base}${d}`, ['udp.dstport']);
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows) expect(r[0]).toBe('7');
      expect(badFrames(`${base}${d}`)).toEqual([]);
      frames += rows.length;
    }
    expect(frames).toBeGreaterThan(20);
  });
});

describe('PcapWriter / PcapDevice', () => {
  it('writes a classic pcap: header, microsecond virtual timestamps, both directions', () => {
    const file = tmp();
    const { got, dev } = captureExchange(file, LINKTYPE_IPV4);
    expect(got.length).toBe(1); // the echo reply came back through the wrapper
    const { hdr, recs, trailing } = readPcap(file);
    expect(hdr).toEqual({ magicBytes: 'd4c3b2a1', major: 2, minor: 4, snaplen: 262144, linktype: 228 });
    expect(trailing).toBe(0);
    expect(recs.length).toBe(4);
    // sent at t0, t0; reply received at t0 + 0.5 ms; second UDP at t0 + 1.5 ms
    expect(recs.map((r) => [r.sec, r.usec])).toEqual([
      [1_700_000_000, 0],
      [1_700_000_000, 0],
      [1_700_000_000, 500],
      [1_700_000_000, 1500],
    ]);
    expect(recs.every((r) => r.incl === r.orig)).toBe(true);
    expect(recs[2]!.data.equals(got[0]!)).toBe(true);
    expect(dev.stats()).toMatchObject({ pcapPackets: 4, txPackets: 3, rxPackets: 1 });
  });

  it('buffers writes: header at once, records at flush or after 64 KiB, tail on close', () => {
    const file = tmp();
    const w = new PcapWriter({ path: file });
    expect(fs.statSync(file).size).toBe(24);
    const p = ipv4(17, A, B, udp(A, B, 1, 2, Buffer.alloc(100)));
    for (let i = 0; i < 10; i++) w.record(p, i);
    expect(fs.statSync(file).size).toBe(24); // still buffered
    w.flush();
    expect(fs.statSync(file).size).toBe(24 + 10 * (16 + p.length));
    // more than 64 KiB pending goes to disk by itself
    for (let i = 0; i < 600; i++) w.record(p, i);
    const size = fs.statSync(file).size;
    expect(size).toBeGreaterThan(24 + 10 * (16 + p.length) + 65536 - 200);
    expect(size).toBeLessThan(24 + 610 * (16 + p.length));
    w.record(p, 1000);
    w.close();
    w.close();
    expect(fs.statSync(file).size).toBe(24 + 611 * (16 + p.length));
    expect(readPcap(file).recs.length).toBe(611);
  });

  it('big records (GSO-size) go straight through; snaplen truncates and keeps orig_len', () => {
    const file = tmp();
    const w = new PcapWriter({ path: file, snaplen: 262144 });
    const big = ipv4(6, A, B, tcpPartial(A, B, 60000));
    w.record(big, 1);
    w.record(ipv4(17, A, B, udp(A, B, 1, 2, Buffer.alloc(10))), 2);
    w.close();
    const r = readPcap(file);
    expect(r.recs.map((x) => x.incl)).toEqual([big.length, 38]);
    expect(r.recs[0]!.data.equals(big)).toBe(true);

    const file2 = tmp();
    const w2 = new PcapWriter({ path: file2, snaplen: 100 });
    w2.record(big, 1);
    w2.close();
    const r2 = readPcap(file2);
    expect(r2.hdr.snaplen).toBe(100);
    expect(r2.recs.map((x) => [x.incl, x.orig])).toEqual([[100, big.length]]);
  });

  it(`tshark reads the ICMP/UDP capture (LINKTYPE_IPV4), checksums good, nothing malformed`, () => {
    requireTool('tshark');
    const file = tmp();
    captureExchange(file, LINKTYPE_IPV4);
    const rows = tshark(
      file,
      [
        'frame.number',
        'frame.time_epoch',
        'ip.src',
        'ip.dst',
        'ip.proto',
        'icmp.type',
        'udp.dstport',
        'ip.checksum.status',
        'icmp.checksum.status',
        'udp.checksum.status',
      ],
      ['-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE'],
    );
    // checksum.status: 1 = Good
    expect(rows).toEqual([
      ['1', '1700000000.000000000', A, B, '1', '8', '', '1', '1', ''],
      ['2', '1700000000.000000000', A, B, '17', '', '9', '1', '', '1'],
      ['3', '1700000000.000500000', B, A, '1', '0', '', '1', '1', ''],
      ['4', '1700000000.001500000', A, B, '17', '', '7', '1', '', '1'],
    ]);
    expect(badFrames(file)).toEqual([]);
  });

  it(`tshark reads LINKTYPE_RAW (101) the same way`, () => {
    requireTool('tshark');
    const file = tmp();
    captureExchange(file, LINKTYPE_RAW);
    expect(readPcap(file).hdr.linktype).toBe(101);
    const rows = tshark(file, ['frame.protocols', 'ip.dst'], ['-o', 'ip.check_checksum:TRUE']);
    expect(rows.map((r) => r[0])).toEqual(['raw:ip:icmp:data', 'raw:ip:udp:data', 'raw:ip:icmp:data', 'raw:ip:udp:echo']); // port 7: echo dissector
    expect(badFrames(file)).toEqual([]);
  });

  it(`GSO-size TCP segments (partial checksum; IPv4 total length 0) are written as they are`, () => {
    requireTool('tshark');
    const file = tmp();
    const w = new PcapWriter({ path: file });
    const seg = ipv4(6, A, B, tcpPartial(A, B, 60000));
    const zeroLen = ipv4(6, A, B, tcpPartial(A, B, 3000));
    zeroLen.writeUInt16BE(0, 2); // total length 0, header checksum fixed again
    zeroLen.writeUInt16BE(0, 10);
    zeroLen.writeUInt16BE(csum(zeroLen, 0, 20), 10);
    w.record(seg, 10);
    w.record(zeroLen, 20);
    w.close();
    const rows = tshark(file, ['frame.len', 'ip.len', 'tcp.len', 'ip.checksum.status', 'tcp.checksum.status'], ['-o', 'ip.check_checksum:TRUE']);
    // tcp.checksum.status 2 = Unverified (tshark does not check TCP checksums by default);
    // with total length 0 tshark presumes TSO and takes the frame length.
    expect(rows).toEqual([
      [String(seg.length), String(seg.length), '60000', '1', '2'],
      [String(zeroLen.length), String(zeroLen.length), '3000', '1', '2'],
    ]);
    expect(badFrames(file)).toEqual([]);
  });
});
