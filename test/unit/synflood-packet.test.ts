import { describe, expect, it } from 'vitest';
import { parseSourceBlock, parseSynFloodArgs, parseTarget, SYN_PACKET_LENGTH, synflood, validateFlood, writeSyn, Xorshift128 } from '../../lab/synflood';
import { buildHping3Commands, floodQuotaRules, parseHping3Summary } from '../../lab/hping3';
import { internetChecksum, checksumAdd, checksumFinish, pseudoHeaderSum } from '../../stack/wire/checksum';
import { parseIpv4 } from '../../stack/wire/addr';
import { UsageError } from '../../stack/util/errors';

const ip = (s: string): number => parseIpv4(s)!;

describe('writeSyn', () => {
  it('builds an IPv4 TCP SYN with valid checksums and an MSS option', () => {
    const buf = new Uint8Array(64).fill(0xee);
    const n = writeSyn(buf, 10, {
      src: ip('198.18.100.7'),
      dst: ip('198.18.0.2'),
      srcPort: 40000,
      dstPort: 5061,
      isn: 0xdeadbeef,
      ipId: 0x1234,
      ttl: 64,
      window: 64240,
      mss: 1460,
    });
    expect(n).toBe(SYN_PACKET_LENGTH);
    const p = buf.subarray(10, 10 + n);
    const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
    expect(p[0]).toBe(0x45);
    expect(dv.getUint16(2)).toBe(44);
    expect(dv.getUint16(4)).toBe(0x1234);
    expect(dv.getUint16(6)).toBe(0x4000); // DF
    expect(p[8]).toBe(64);
    expect(p[9]).toBe(6);
    expect(dv.getUint32(12)).toBe(ip('198.18.100.7'));
    expect(dv.getUint32(16)).toBe(ip('198.18.0.2'));
    expect(internetChecksum(p, 0, 20)).toBe(0); // header checksum verifies
    expect(dv.getUint16(20)).toBe(40000);
    expect(dv.getUint16(22)).toBe(5061);
    expect(dv.getUint32(24)).toBe(0xdeadbeef);
    expect(dv.getUint32(28)).toBe(0);
    expect(p[32] >> 4).toBe(6);
    expect(p[33]).toBe(0x02); // SYN only
    expect(dv.getUint16(34)).toBe(64240);
    expect([...p.subarray(40, 44)]).toEqual([2, 4, 0x05, 0xb4]);
    const tcpSum = checksumFinish(checksumAdd(p, 20, 24, pseudoHeaderSum(ip('198.18.100.7'), ip('198.18.0.2'), 6, 24)));
    expect(tcpSum).toBe(0); // TCP checksum verifies
    expect(buf[9]).toBe(0xee); // nothing written outside the packet
    expect(buf[54]).toBe(0xee);
  });
});

describe('Xorshift128', () => {
  it('is reproducible per seed and stays in range', () => {
    const a = new Xorshift128(42);
    const b = new Xorshift128(42);
    const c = new Xorshift128(43);
    const sa = Array.from({ length: 5 }, () => a.u32());
    expect(Array.from({ length: 5 }, () => b.u32())).toEqual(sa);
    expect(Array.from({ length: 5 }, () => c.u32())).not.toEqual(sa);
    const seen = new Set<number>();
    for (let i = 0; i < 5000; i++) {
      const v = a.range(10, 20);
      expect(v).toBeGreaterThanOrEqual(10);
      expect(v).toBeLessThanOrEqual(20);
      seen.add(v);
    }
    expect(seen.size).toBe(11);
  });
});

describe('lab rule and bounds', () => {
  it('accepts only 198.18.0.0/15 for targets and sources', () => {
    expect(parseTarget('198.18.0.2:5061')).toEqual({ addr: ip('198.18.0.2'), port: 5061 });
    expect(parseTarget('198.19.255.1:1').port).toBe(1);
    expect(() => parseTarget('10.0.0.1:80')).toThrow(/outside the lab range 198\.18\.0\.0\/15/);
    expect(() => parseTarget('198.20.0.1:80')).toThrow(/outside the lab range/);
    expect(() => parseTarget('198.18.0.2')).toThrow(/ADDRESS:PORT/);
    expect(() => parseTarget('198.18.0.2:0')).toThrow(/port 1\.\.65535/);
    const b = parseSourceBlock('198.18.100.0/24');
    expect(b.first).toBe(ip('198.18.100.1'));
    expect(b.last).toBe(ip('198.18.100.254'));
    expect(parseSourceBlock('198.18.100.9').first).toBe(ip('198.18.100.9'));
    expect(parseSourceBlock('198.18.0.0/15').last).toBe(ip('198.19.255.254'));
    expect(() => parseSourceBlock('198.16.0.0/14')).toThrow(/outside the lab range/); // wider than the lab range
    expect(() => parseSourceBlock('192.168.1.0/24')).toThrow(/outside the lab range/);
    expect(() => parseSourceBlock('0.0.0.0/0')).toThrow(/outside the lab range/);
    expect(() => parseSourceBlock('198.18.1.0/33')).toThrow(/not an IPv4 CIDR/);
  });

  it('requires count and duration and caps them', () => {
    const base = { target: '198.18.0.2:5061', source: '198.18.100.0/24', count: 10, durationMs: 1000 };
    expect(validateFlood(base).count).toBe(10);
    expect(() => validateFlood({ ...base, count: undefined as unknown as number })).toThrow(/count is required/);
    expect(() => validateFlood({ ...base, durationMs: undefined as unknown as number })).toThrow(/durationMs is required/);
    expect(() => validateFlood({ ...base, count: 1_000_001 })).toThrow(/count must be an integer from 1 to 1000000/);
    expect(() => validateFlood({ ...base, count: 0 })).toThrow(UsageError);
    expect(() => validateFlood({ ...base, durationMs: 60_001 })).toThrow(/from 1 to 60000 ms/);
    expect(() => validateFlood({ ...base, ratePps: 0 })).toThrow(/ratePps/);
  });

  it('refuses before opening any socket', async () => {
    await expect(synflood({ target: '8.8.8.8:53', source: '198.18.100.0/24', count: 1, durationMs: 10 })).rejects.toThrow(/outside the lab range/);
  });

  it('parses the program flags', () => {
    const r = parseSynFloodArgs([
      '--target',
      '198.18.0.2:5061',
      '--source=198.18.100.0/24',
      '--count',
      '10000',
      '--duration',
      '2.5',
      '--rate',
      '5000',
      '--json',
    ]);
    expect(r).not.toBe('help');
    if (r === 'help') return;
    expect(r.opts).toMatchObject({ target: '198.18.0.2:5061', count: 10000, durationMs: 2500, ratePps: 5000 });
    expect(r.json).toBe(true);
    expect(parseSynFloodArgs(['-h'])).toBe('help');
    expect(() => parseSynFloodArgs(['--target', '198.18.0.2:1', '--source', '198.18.1.0/24', '--count', '5'])).toThrow(/--duration is required/);
    expect(() => parseSynFloodArgs(['--bogus'])).toThrow(/unknown flag --bogus/);
    expect(() => parseSynFloodArgs(['--target', '1.2.3.4:1', '--source', '198.18.1.0/24', '--count', '5', '--duration', '1'])).toThrow(/lab range/);
    expect(() => parseSynFloodArgs(['--target', '198.18.0.2:1', '--source', '198.18.1.0/24', '--count', '5', '--duration', '61'])).toThrow(/60000/);
  });
});

describe('hping3 command lines', () => {
  it('bounds every process by count and interval, one fixed lab source each', () => {
    const cmds = buildHping3Commands({
      target: '198.18.0.2:5061',
      sources: ['198.18.100.1', '198.18.100.2', '198.18.100.3'],
      count: 1000,
      durationMs: 2000,
      netns: 'atk',
      hping3: '/usr/sbin/hping3',
    });
    expect(cmds.map((c) => c.count)).toEqual([334, 333, 333]);
    expect(cmds[0].argv).toEqual([
      'ip',
      'netns',
      'exec',
      'atk',
      '/usr/sbin/hping3',
      '-n',
      '-q',
      '-S',
      '-p',
      '5061',
      '-a',
      '198.18.100.1',
      '-c',
      '334',
      '-i',
      'u4790',
      '198.18.0.2',
    ]);
    for (const c of cmds) expect(c.argv).not.toContain('--rand-source');
  });

  it('refuses sources or targets outside the lab, and intervals that break the time bound', () => {
    const base = { target: '198.18.0.2:5061', sources: ['198.18.100.1'], count: 100, durationMs: 1000, hping3: '/bin/true' };
    expect(() => buildHping3Commands({ ...base, sources: ['10.1.1.1'] })).toThrow(/outside the lab range/);
    expect(() => buildHping3Commands({ ...base, target: '172.16.0.1:80' })).toThrow(/outside the lab range/);
    expect(() => buildHping3Commands({ ...base, sources: [] })).toThrow(/at least one/);
    expect(() => buildHping3Commands({ ...base, intervalUs: 20_000 })).toThrow(/take 2\.0 s, more than durationMs 1000/);
    expect(() => buildHping3Commands({ ...base, count: 2_000_000 })).toThrow(/count must be/);
  });

  it('unpaced: --flood instead of -c/-i, only in its own namespace, its packet bound an nftables quota of count x 40 bytes', () => {
    const base = { target: '198.18.0.2:80', sources: ['198.18.100.77'], count: 1_000_000, durationMs: 2000, hping3: '/usr/sbin/hping3', flood: true };
    const [c] = buildHping3Commands({ ...base, netns: 'atk' });
    expect(c!.argv).toEqual(['ip', 'netns', 'exec', 'atk', '/usr/sbin/hping3', '-n', '-q', '-S', '-p', '80', '-a', '198.18.100.77', '--flood', '198.18.0.2']);
    expect(() => buildHping3Commands(base)).toThrow(/needs its own namespace/);
    const rules = floodQuotaRules('fsq', ['198.18.100.77'], 1_000_000);
    expect(rules).toContain('hook output');
    expect(rules).toContain('ip saddr { 198.18.100.77 } quota over 40000000 bytes drop');
  });

  it('reads the summary in both spellings', () => {
    expect(parseHping3Summary('--- 198.18.0.2 hping statistic ---\n200 packets transmitted, 0 packets received, 100% packet loss\n')).toEqual({
      transmitted: 200,
      received: 0,
    });
    expect(parseHping3Summary('7 packets tramitted, 3 packets received')).toEqual({ transmitted: 7, received: 3 });
    expect(parseHping3Summary('nothing')).toBeNull();
  });
});
