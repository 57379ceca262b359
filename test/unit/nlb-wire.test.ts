/**
 * The NLB heartbeat on the wire (stack/wire/nlb.ts): the 1496-byte membership heartbeat
 * at the offsets Wireshark's MS NLB dissector reads, the extended heartbeat with the
 * host name and our own entry, bad input refused by length, and tshark decoding both
 * (crafted, and as a running cluster sends them) as MS NLB with no malformed field.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  NLB_MEMBERSHIP_LEN,
  NLB_SIGNATURE_EXTENDED,
  NLB_SIGNATURE_MEMBERSHIP,
  NlbError,
  emitExtended,
  emitMembership,
  extendedLength,
  newExtendedRepr,
  newMembershipRepr,
  parseExtended,
  parseMembership,
} from '../../stack/wire/nlb';
import { parseIpv4 } from '../../stack/wire/addr';
import { makeCluster, waitConverged } from './helpers/nlb-cluster';
import { runFor } from './helpers/pair';
import type { PcapDevice } from '../../drivers/pcap';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-nlb-wire-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const ip = (s: string) => parseIpv4(s)!;

function tshark(args: string[]): string {
  const r = spawnSync('tshark', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw new Error(`tshark could not run (${r.error.message}): it is a test dependency, installed by scripts/deps.sh`);
  if (r.status !== 0) throw new Error(`tshark ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** A classic pcap (DLT_EN10MB) of these frames, 1 s apart. */
function writePcap(file: string, frames: Buffer[]): void {
  const gh = Buffer.alloc(24);
  gh.writeUInt32LE(0xa1b2c3d4, 0);
  gh.writeUInt16LE(2, 4);
  gh.writeUInt16LE(4, 6);
  gh.writeUInt32LE(262144, 16);
  gh.writeUInt32LE(1, 20);
  const parts: Buffer[] = [gh];
  frames.forEach((f, i) => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(1_700_000_000 + i, 0);
    h.writeUInt32LE(f.length, 8);
    h.writeUInt32LE(f.length, 12);
    parts.push(h, f);
  });
  fs.writeFileSync(file, Buffer.concat(parts));
}

function frameOf(payload: Buffer, src: string): Buffer {
  const f = Buffer.alloc(14 + payload.length);
  f.fill(0xff, 0, 6);
  Buffer.from(src.replace(/:/g, ''), 'hex').copy(f, 6);
  f.writeUInt16BE(0x886f, 12);
  payload.copy(f, 14);
  return f;
}

function membership() {
  const m = newMembershipRepr();
  Object.assign(m, {
    uniqueHostId: 0x01020304,
    clusterIp: ip('198.18.70.100'),
    dedicatedIp: ip('198.18.70.12'),
    hostId: 2,
    defaultHostId: 1,
    convergenceState: 2,
    uniqueHostCode: 0xdeadbeef,
    packetsHandled: 4242,
    view: 0b111,
    rules: [
      {
        code: 0x11223344,
        currentMap: 0x0924924924924924n,
        newMap: 0x0924924924924924n,
        idleMap: 0x0fffffffffffffffn,
        readyMap: 0x0924924924924924n,
        loadWeight: 50,
      },
      { code: 0x55667788, currentMap: 0n, newMap: 0n, idleMap: 0x0fffffffffffffffn, readyMap: 0n, loadWeight: 2 },
    ],
  });
  return m;
}

describe('NLB heartbeats: the format', () => {
  test("the membership heartbeat: 1496 bytes, little-endian words at the dissector's offsets", () => {
    const b = Buffer.alloc(NLB_MEMBERSHIP_LEN + 10, 0xee);
    expect(emitMembership(b, 5, membership())).toBe(NLB_MEMBERSHIP_LEN);
    const p = b.subarray(5, 5 + NLB_MEMBERSHIP_LEN);
    expect(b[4]).toBe(0xee);
    expect(b[5 + NLB_MEMBERSHIP_LEN]).toBe(0xee);
    expect(p.subarray(0, 20).toString('hex')).toBe('bf01dec0' + '00020000' + '04030201' + 'c6124664' + 'c612460c');
    expect(p.subarray(20, 44).toString('hex')).toBe('0200' + '0100' + '0200' + '0200' + 'efbeadde' + '92100000' + '00000000' + '07000000');
    expect(p.readUInt32LE(44)).toBe(0x11223344);
    expect(p.readUInt32LE(48)).toBe(0x55667788);
    expect(p.readBigUInt64LE(176)).toBe(0x0924924924924924n); // current map, rule 0
    expect(p.readBigUInt64LE(440)).toBe(0x0924924924924924n); // new map
    expect(p.readBigUInt64LE(704)).toBe(0x0fffffffffffffffn); // idle map
    expect(p.readBigUInt64LE(968)).toBe(0x0924924924924924n); // ready map
    expect(p.readUInt32LE(1232)).toBe(50); // load weight, rule 0
    expect(p.readUInt32LE(1236)).toBe(2);
    expect(p.subarray(1364).every((x) => x === 0)).toBe(true); // reserved words
    const back = newMembershipRepr();
    expect(parseMembership(p, 0, p.length, back)).toBe(NlbError.None);
    expect(back).toEqual({ ...membership(), signature: NLB_SIGNATURE_MEMBERSHIP });
  });

  test('bad heartbeats are refused by length before anything is read', () => {
    const b = Buffer.alloc(NLB_MEMBERSHIP_LEN);
    emitMembership(b, 0, membership());
    const r = newMembershipRepr();
    expect(parseMembership(b, 0, 19, r)).toBe(NlbError.Truncated);
    expect(parseMembership(b, 0, NLB_MEMBERSHIP_LEN - 1, r)).toBe(NlbError.Truncated);
    const wrong = Buffer.from(b);
    wrong.writeUInt32LE(0xc0de01de, 0);
    expect(parseMembership(wrong, 0, wrong.length, r)).toBe(NlbError.UnknownSignature);
    const many = Buffer.from(b);
    many.writeUInt16LE(34, 26);
    expect(parseMembership(many, 0, many.length, r)).toBe(NlbError.BadRuleCount);
    expect(() => emitMembership(Buffer.alloc(NLB_MEMBERSHIP_LEN), 0, { ...membership(), rules: new Array(34).fill(membership().rules[0]) })).toThrow(
      /at most 33/,
    );
  });

  test('the extended heartbeat: host name entry, then our entry (tunnels, sticky clients) to the end', () => {
    const e = newExtendedRepr();
    Object.assign(e, {
      uniqueHostId: 7,
      clusterIp: ip('198.18.70.100'),
      dedicatedIp: ip('198.18.70.11'),
      hostName: 'host1',
      faultstack: {
        part: 0,
        parts: 1,
        tunnels: [{ identityHash: Buffer.from('0102030405060708', 'hex'), clientAddr: ip('198.18.60.10'), openSeq: 9, ageMs: 1234 }],
        sticky: [{ key: ip('198.18.61.0'), rule: 1 }],
      },
    });
    const b = Buffer.alloc(200);
    const n = emitExtended(b, 0, e);
    expect(n).toBe(extendedLength('host1', 1, 1));
    expect(b.readUInt32LE(0)).toBe(NLB_SIGNATURE_EXTENDED);
    expect(b[20]).toBe(1); // host name entry
    expect(b.subarray(28, 40).toString('utf16le')).toBe('host1\0');
    expect(b[46]).toBe(0xfa); // ours
    const back = newExtendedRepr();
    expect(parseExtended(b, 0, n, back)).toBe(NlbError.None);
    expect(back.hostName).toBe('host1');
    expect(back.faultstack).toEqual(e.faultstack);
    expect(parseExtended(b, 0, n - 1, back)).toBe(NlbError.BadEntry);
    expect(parseExtended(b, 0, 30, back)).toBe(NlbError.BadEntry);
  });
});

describe('NLB heartbeats: tshark', () => {
  test('crafted heartbeats decode as MS NLB with our values, nothing malformed', () => {
    const file = path.join(dir, 'crafted.pcap');
    const hb = Buffer.alloc(NLB_MEMBERSHIP_LEN);
    emitMembership(hb, 0, membership());
    const e = newExtendedRepr();
    Object.assign(e, {
      uniqueHostId: 0x01020304,
      clusterIp: ip('198.18.70.100'),
      dedicatedIp: ip('198.18.70.12'),
      hostName: 'host2',
      faultstack: { part: 0, parts: 1, tunnels: [], sticky: [] },
    });
    const eb = Buffer.alloc(100);
    const n = emitExtended(eb, 0, e);
    writePcap(file, [frameOf(hb, '02:02:c6:12:46:64'), frameOf(eb.subarray(0, n), '02:02:c6:12:46:64')]);
    const bad = tshark(['-r', file, '-Y', '_ws.malformed || _ws.expert.severity >= warning']);
    expect(bad.trim()).toBe('');
    const f = tshark([
      '-r',
      file,
      '-T',
      'fields',
      '-E',
      'separator=|',
      '-e',
      '_ws.col.Protocol',
      '-e',
      'msnlb.signature',
      '-e',
      'msnlb.version',
      '-e',
      'msnlb.unique_host_id',
      '-e',
      'msnlb.cluster_ip',
      '-e',
      'msnlb.host_ip',
      '-e',
      'msnlb.my_host_ip',
      '-e',
      'msnlb.default_host_ip',
      '-e',
      'msnlb.convergence_state',
      '-e',
      'msnlb.number_of_port_rules',
      '-e',
      'msnlb.packets_handled',
      '-e',
      'msnlb.host_name',
    ])
      .trim()
      .split('\n');
    expect(f[0]).toBe('MS NLB|0xc0de01bf|512|16909060|198.18.70.100|198.18.70.12|2|1|2|2|4242|');
    expect(f[1]).toBe('MS NLB|0xc0de01c0|512|16909060|198.18.70.100|198.18.70.12||||||host2');
    const maps = tshark(['-r', file, '-Y', 'frame.number == 1', '-T', 'fields', '-e', 'msnlb.currentmap.data']).trim();
    expect(maps.split(',')[0]).toBe('658812288346769700'); // 0x0924924924924924
  });

  test("a running cluster's heartbeats, captured from a host's port, all decode as MS NLB", async () => {
    const file = path.join(dir, 'cluster.pcap');
    const c = makeCluster(3, { pcap: { host: 2, path: file } });
    expect(await waitConverged(c)).toBe(true);
    await runFor(c.clock, 3000, 10);
    (c.hosts[1]!.eth.lower as PcapDevice).close();
    const all = tshark(['-r', file, '-Y', 'eth.type == 0x886f', '-T', 'fields', '-e', '_ws.col.Protocol', '-e', 'msnlb.signature', '-e', 'msnlb.my_host_ip'])
      .trim()
      .split('\n');
    expect(all.length).toBeGreaterThan(10);
    expect(all.every((l) => l.startsWith('MS NLB\t'))).toBe(true);
    // Every host's membership heartbeats (host 2's own, sent, and the others', received).
    expect(new Set(all.filter((l) => l.includes('0xc0de01bf')).map((l) => l.split('\t')[2]))).toEqual(new Set(['1', '2', '3']));
    const bad = tshark(['-r', file, '-Y', '_ws.malformed || _ws.expert.severity >= warning']);
    expect(bad.trim()).toBe('');
  });
});
