/**
 * The impairment words: tc-netem(8)'s grammar, units and defaults as iproute2 reads them,
 * toxiproxy's toxics and attributes, canonical words back (list output pastes into add),
 * and bad specs: one line that names the bad word and says what is valid.
 */
import { describe, expect, test } from 'vitest';
import { ImpairSpecError, PacketImpairSpec, ToxicImpairSpec, formatImpairment, parseImpairment } from '../../stack/impair/spec';
import { parsePercent, parseRate, parseSize, parseTime } from '../../stack/impair/units';
import { parseIpv4 } from '../../stack/wire/addr';

const pkt = (s: string) => parseImpairment(s) as PacketImpairSpec;
const tox = (s: string) => parseImpairment(s) as ToxicImpairSpec;
function err(s: string): string {
  try {
    parseImpairment(s);
  } catch (e) {
    expect(e).toBeInstanceOf(ImpairSpecError);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    return m;
  }
  throw new Error(`"${s}" parsed, but should not`);
}

describe('tc units', () => {
  test('times, rates, percents and sizes read as iproute2 reads them', () => {
    expect(parseTime('20ms')).toBe(20);
    expect(parseTime('1.5s')).toBe(1500);
    expect(parseTime('250us')).toBe(0.25);
    expect(parseTime('100usecs')).toBe(0.1);
    expect(parseTime('5MSEC')).toBe(5); // tc compares units case-insensitively
    expect(parseTime('1000ns')).toBe(0.001);
    expect(() => parseTime('20')).toThrow(/unit/);
    expect(parseRate('10mbit')).toBe(1_250_000);
    expect(parseRate('10Mbit')).toBe(1_250_000);
    expect(parseRate('100kbps')).toBe(100_000); // bps: bytes per second
    expect(parseRate('1kibit')).toBe(128);
    expect(parseRate('8000')).toBe(1000); // a bare number is bits per second
    expect(() => parseRate('10mbits')).toThrow();
    expect(parsePercent('3%')).toBe(0.03);
    expect(parsePercent('3')).toBe(0.03);
    expect(parsePercent('0.5%')).toBe(0.005);
    expect(() => parsePercent('101%')).toThrow();
    expect(() => parsePercent('3x')).toThrow();
    expect(parseSize('64k')).toBe(65536);
    expect(parseSize('1500')).toBe(1500);
  });
});

describe('netem words', () => {
  test("the issue's example: out --dport 80 loss 3% 25% delay 20ms 5ms distribution normal", () => {
    const s = pkt('out --dport 80 loss 3% 25% delay 20ms 5ms distribution normal');
    expect(s.direction).toBe('out');
    expect(s.match.dport).toEqual({ lo: 80, hi: 80 });
    expect(s.netem.loss).toEqual({ model: 'random', p: 0.03, corr: 0.25 });
    expect(s.netem.delay).toEqual({ ms: 20, jitterMs: 5, corr: 0 });
    expect(s.netem.distribution).toBe('normal');
    expect(s.netem.limit).toBe(1000); // netem's default
  });

  test('loss random, drop and latency: tc\'s aliases and its optional "random"', () => {
    expect(pkt('in loss random 1% 10%').netem.loss).toEqual({ model: 'random', p: 0.01, corr: 0.1 });
    expect(pkt('in drop 2%').netem.loss).toEqual({ model: 'random', p: 0.02, corr: 0 });
    expect(pkt('in latency 10ms').netem.delay).toEqual({ ms: 10, jitterMs: 0, corr: 0 });
    expect(pkt('out delay 100ms 10ms 25%').netem.delay).toEqual({ ms: 100, jitterMs: 10, corr: 0.25 });
  });

  test("loss state and gemodel: tc's defaults for the parameters left out", () => {
    expect(pkt('out loss state 1%').netem.loss).toEqual({ model: 'state', p13: 0.01, p31: 0.99, p32: 0, p23: 1, p14: 0 });
    expect(pkt('out loss state 1% 30% 10% 20% 0.5%').netem.loss).toEqual({ model: 'state', p13: 0.01, p31: 0.3, p32: 0.1, p23: 0.2, p14: 0.005 });
    expect(pkt('out loss gemodel 1%').netem.loss).toEqual({ model: 'gemodel', p: 0.01, r: 0.99, lossBad: 1, lossGood: 0 });
    expect(pkt('out loss gemodel 1% 10% 70% 0.1%').netem.loss).toEqual({ model: 'gemodel', p: 0.01, r: 0.1, lossBad: 0.7, lossGood: 0.001 });
  });

  test('reorder gets gap 1 by default (tc), rate its overheads, slot its limits', () => {
    const r = pkt('out delay 10ms reorder 25% 50%').netem;
    expect(r.reorder).toEqual({ p: 0.25, corr: 0.5 });
    expect(r.gap).toBe(1);
    expect(pkt('out delay 10ms reorder 100% gap 5').netem.gap).toBe(5);
    expect(pkt('out rate 5kbit 20 100 5').netem.rate).toEqual({ bytesPerSec: 625, packetOverhead: 20, cellSize: 100, cellOverhead: 5 });
    expect(pkt('out rate 1gbit -14').netem.rate).toEqual({ bytesPerSec: 125_000_000, packetOverhead: -14, cellSize: 0, cellOverhead: 0 });
    expect(pkt('out slot 10ms 20ms packets 8 bytes 64k').netem.slot).toEqual({ minMs: 10, maxMs: 20, packets: 8, bytes: 65536 });
    expect(pkt('out slot distribution pareto 10ms 2ms packets 4').netem.slot).toEqual({
      minMs: 0,
      maxMs: 0,
      dist: { name: 'pareto', delayMs: 10, jitterMs: 2 },
      packets: 4,
      bytes: 0,
    });
    expect(pkt('out limit 50 delay 1s seed 12').seed).toBe(12);
    expect(pkt('out loss 1% ecn').netem.ecn).toBe(true);
  });

  test('match flags: addresses, prefixes, ports, ranges, protocol, TCP flags, connection, Nth, window', () => {
    const m = pkt(
      'in --src 198.18.0.0/24 --dst 198.18.0.2 --sport 1000-2000 --port 80 --proto tcp --tcp-flags syn --nth 3 --from 1s --until 5s loss 100%',
    ).match;
    expect(m.src).toEqual({ addr: parseIpv4('198.18.0.0'), prefix: 24 });
    expect(m.dst).toEqual({ addr: parseIpv4('198.18.0.2'), prefix: 32 });
    expect(m.sport).toEqual({ lo: 1000, hi: 2000 });
    expect(m.port).toEqual({ lo: 80, hi: 80 });
    expect(m.proto).toBe(6);
    expect(m.tcpFlags).toMatchObject({ value: 0x02, mask: 0x12 });
    expect(m.nth).toBe(3);
    expect([m.fromMs, m.untilMs]).toEqual([1000, 5000]);
    expect(pkt('out --tcp-flags syn-ack loss 1%').match.tcpFlags).toMatchObject({ value: 0x12, mask: 0x12 });
    expect(pkt('out --tcp-flags fin loss 1%').match.tcpFlags).toMatchObject({ value: 0x01, mask: 0x01 });
    expect(pkt('out --tcp-flags rst loss 1%').match.tcpFlags).toMatchObject({ value: 0x04, mask: 0x04 });
    expect(pkt('out --tcp-flags psh,ack/syn,psh,ack loss 1%').match.tcpFlags).toMatchObject({ value: 0x18, mask: 0x1a });
    expect(pkt('out --conn 198.18.0.1:40000,198.18.0.2:80 loss 1%').match.conn).toEqual({
      a: parseIpv4('198.18.0.1'),
      aPort: 40000,
      b: parseIpv4('198.18.0.2'),
      bPort: 80,
    });
    expect(pkt('out --every=10 --proto=icmp loss 1%').match).toMatchObject({ every: 10, proto: 1 });
  });

  test('canonical words: format then parse gives the same spec, for every option', () => {
    for (const s of [
      'out --dport 80 loss 3% 25% delay 20ms 5ms distribution normal',
      'in --src 198.18.0.0/24 --proto udp --every 4 limit 200 delay 1s 100ms 10% distribution paretonormal duplicate 1% 5% corrupt 0.1% seed 99',
      'out loss state 1% 30% 10% 20% 0.5% ecn',
      'out loss gemodel 2% 25% 90% 0.1% delay 10ms reorder 25% 50% gap 3',
      'out rate 5kbit 20 100 5 slot 10ms 20ms packets 8 bytes 65536',
      'out --tcp-flags syn-ack --nth 1 --conn 198.18.0.1:1,198.18.0.2:2 --from 500ms --until 2s loss 100%',
      'downstream --port 80 --peer 198.18.0.0/16 latency latency=300 jitter=50 toxicity=0.5 seed 3',
      'upstream --peer-port 1000-2000 slicer average_size=100 size_variation=20 delay=500',
    ]) {
      const a = parseImpairment(s);
      const words = formatImpairment(a);
      expect(parseImpairment(words), words).toEqual(a);
    }
    expect(formatImpairment(parseImpairment('out loss 3% delay 20ms'))).toBe('out delay 20ms loss 3%');
  });
});

describe('toxics', () => {
  test("toxiproxy's types and attributes, defaults 0, toxicity 1", () => {
    const t = tox('downstream --port 80 latency latency=1000 jitter=100');
    expect(t).toMatchObject({ kind: 'toxic', stream: 'downstream', type: 'latency', attributes: { latency: 1000, jitter: 100 }, toxicity: 1 });
    expect(t.match.port).toEqual({ lo: 80, hi: 80 });
    expect(tox('upstream bandwidth rate=100').attributes).toEqual({ rate: 100 });
    expect(tox('downstream slow_close delay=500').attributes).toEqual({ delay: 500 });
    expect(tox('downstream timeout').attributes).toEqual({ timeout: 0 });
    expect(tox('upstream reset_peer timeout=100 toxicity=50%').toxicity).toBe(0.5);
    expect(tox('downstream limit_data bytes=1000 toxicity=0.25').toxicity).toBe(0.25);
    expect(tox('downstream slicer average_size=64 size_variation=16 delay=10').attributes).toEqual({ average_size: 64, size_variation: 16, delay: 10 });
  });
});

describe('bad specs: one line naming the bad word and what is valid', () => {
  const cases: [string, RegExp][] = [
    ['', /empty impairment: start with in or out .* upstream or downstream/],
    ['sideways loss 3%', /"sideways" is not a direction/],
    ['ot loss 3%', /"ot" is not a direction/],
    ['out lose 3%', /"lose" is not a netem word \(did you mean loss\?\); .*netem words: limit, delay/],
    ['out loss 300%', /loss random "300%": must be a percentage from 0 to 100/],
    ['out loss 3x', /"3x": must be a percentage/],
    ['out loss bogus', /loss "bogus": must be random, state or gemodel/],
    ['out loss', /loss needs random PERCENT/],
    ['out loss state', /loss state needs P13/],
    ['out loss state 60% 50% 60%', /p31 \+ p32 must be at most 100%/],
    ['out delay 20', /delay "20": must be a time with a unit: s, ms, us or ns/],
    ['out delay fast', /delay needs TIME/],
    ['out delay 2h', /delay "2h": must be a time with a unit/],
    ['out delay 4000s', /delay must be at most 3600s/],
    ['out delay 10ms distribution normal', /distribution needs delay TIME JITTER/],
    ['out delay 10ms 2ms distribution gaussian', /distribution "gaussian": must be one of uniform, normal, pareto, paretonormal/],
    ['out reorder 25%', /reorder needs a delay/],
    ['out delay 10ms gap 5', /gap needs reorder PERCENT/],
    ['out ecn', /ecn needs a loss model/],
    ['out rate 10mbits', /rate "10mbits": must be a rate such as 10mbit/],
    ['out rate 50%', /a share of the device's speed has no meaning on a TUN device/],
    ['out limit 0 loss 1%', /limit "0": must be an integer from 1 to 100000/],
    ['out loss 1% loss 2%', /loss given twice/],
    ['out --dprot 80 loss 1%', /unknown match flag "--dprot" \(did you mean --dport\?\)/],
    ['out --dport 99999 loss 1%', /--dport "99999": must be a port from 0 to 65535/],
    ['out --src 300.1.1.1 loss 1%', /--src "300.1.1.1": must be an IPv4 address or prefix/],
    ['out --proto sctpx loss 1%', /--proto "sctpx": must be tcp, udp, icmp/],
    ['out --tcp-flags synack loss 1%', /--tcp-flags "synack": must be syn \(the opening SYN\), syn-ack, fin, rst/],
    ['out --tcp-flags syn,xyz/syn loss 1%', /"xyz" is not a TCP flag/],
    ['out --conn 198.18.0.1,198.18.0.2 loss 1%', /--conn "198.18.0.1,198.18.0.2": must be ADDR:PORT,ADDR:PORT/],
    ['out --nth 0 loss 1%', /--nth "0": must be an integer from 1/],
    ['out --nth 2 --every 3 loss 1%', /--nth and --every exclude each other/],
    ['out --from 5s --until 1s loss 1%', /--until must be later than --from/],
    ['out --dport', /--dport needs a port or range/],
    ['out --dport 80', /nothing to do: give at least one of delay, loss/],
    ['out latency latency=100', /delay needs TIME/],
    ['out --port 80 limit_data bytes=10', /"limit_data" is not a netem word \(limit_data is a connection-level toxic: start with upstream or downstream\)/],
    ['downstream loss 3%', /"loss" is not a toxic \(loss is a netem word: start with in or out\)/],
    ['downstream latncy', /"latncy" is not a toxic \(did you mean latency\?\); after downstream comes one of latency, bandwidth/],
    ['downstream latency latncy=100', /"latncy" is not an attribute of latency \(did you mean latency\?\); latency takes latency=N \(ms\), jitter=N \(ms\)/],
    ['downstream latency 100', /"100": attributes are NAME=VALUE; latency takes/],
    ['downstream latency latency=-5', /latency latency "-5": must be an integer from 0/],
    ['downstream latency toxicity=2', /toxicity "2": must be a probability from 0 to 1/],
    ['downstream --dport 80 latency', /unknown match flag "--dport" \(--dport matches packets: start with in or out\)/],
    ['downstream', /downstream needs a toxic/],
    ['upstream slicer average_size=10 size_variation=10', /size_variation must be smaller than average_size/],
    ['upstream latency bandwidth', /one toxic per impairment/],
    ['out seed x loss 1%', /seed "x": must be an integer from 0 to 4294967295/],
  ];
  for (const [spec, re] of cases) {
    test(JSON.stringify(spec), () => {
      expect(err(spec)).toMatch(re);
    });
  }
});
