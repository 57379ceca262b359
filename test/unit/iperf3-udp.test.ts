/**
 * iperf3's UDP accounting (iperf_udp_recv in iperf3 3.12), as the stack's iperf3 service
 * keeps it: highest packet count, losses from gaps, out-of-order packets (each one a
 * loss fewer), and RFC 1889 A.8 jitter over transit times; the results message's UDP
 * fields and the sender_has_retransmits rule.
 */
import { describe, expect, test } from 'vitest';
import { UdpReceiveStats, resultsMessage } from '../../stack/services/iperf3';

/** An iperf3 UDP datagram: sec, usec, 32-bit count (or 64-bit), then filler. */
function dgram(count: number, sentUs: number, size = 100, counters64 = false): Buffer {
  const d = Buffer.alloc(size, 0x30);
  d.writeUInt32BE(Math.floor(sentUs / 1e6), 0);
  d.writeUInt32BE(sentUs % 1e6, 4);
  if (counters64) d.writeBigUInt64BE(BigInt(count), 8);
  else d.writeUInt32BE(count, 8);
  return d;
}

describe('UDP receive accounting (iperf_udp_recv)', () => {
  test('in order: no loss, jitter 0 for a constant transit time', () => {
    const r = new UdpReceiveStats();
    for (let i = 1; i <= 10; i++) r.onDatagram(dgram(i, 1_000_000 + i * 1000), 5_000_000 + i * 1000);
    expect(r).toMatchObject({ packetCount: 10, cntError: 0, outOfOrder: 0, bytes: 1000 });
    expect(r.jitter).toBe(0);
  });

  test('a gap counts as lost; a late packet is out of order and one loss fewer', () => {
    const r = new UdpReceiveStats();
    for (const c of [1, 2, 5]) r.onDatagram(dgram(c, c * 1000), c * 1000); // 3 and 4 missing
    expect(r).toMatchObject({ packetCount: 5, cntError: 2, outOfOrder: 0 });
    r.onDatagram(dgram(3, 3000), 6000); // 3 arrives late
    expect(r).toMatchObject({ packetCount: 5, cntError: 1, outOfOrder: 1 });
    r.onDatagram(dgram(6, 6000), 7000);
    expect(r).toMatchObject({ packetCount: 6, cntError: 1, outOfOrder: 1 });
    // A duplicate counts as out of order too (iperf3's constant-storage method cannot tell).
    r.onDatagram(dgram(6, 6000), 7000);
    expect(r).toMatchObject({ outOfOrder: 2, cntError: 0 });
  });

  test('jitter: J += (|D| - J) / 16, D the change in transit time (clocks need not agree)', () => {
    const r = new UdpReceiveStats();
    const offset = 123_456_789; // the sender's clock is elsewhere entirely
    r.onDatagram(dgram(1, 0), offset + 0);
    r.onDatagram(dgram(2, 1000), offset + 1000 + 1600); // transit grew by 1.6 ms
    expect(r.jitter).toBeCloseTo(0.0016 / 16, 12);
    r.onDatagram(dgram(3, 2000), offset + 2000 + 1600); // unchanged
    expect(r.jitter).toBeCloseTo(0.0001 - 0.0001 / 16, 12);
  });

  test('64-bit counters (--udp-counters-64bit) and runts', () => {
    const r = new UdpReceiveStats(true);
    r.onDatagram(dgram(2 ** 33, 0, 64, true), 0);
    expect(r.packetCount).toBe(2 ** 33);
    expect(r.cntError).toBe(2 ** 33 - 1);
    const s = new UdpReceiveStats();
    s.onDatagram(Buffer.alloc(8), 0); // shorter than the header: not counted
    expect(s.bytes).toBe(0);
  });
});

describe('the results message', () => {
  test('UDP fields; a sender reports retransmits only when every sending stream knows them', () => {
    const cpu = process.cpuUsage();
    const udp = resultsMessage(cpu, 1000, [{ id: 1, bytes: 1400, sending: false, endTime: 1, jitter: 0.0001, errors: 3, packets: 40 }]);
    expect(udp.sender_has_retransmits).toBe(-1);
    expect((udp.streams as Record<string, unknown>[])[0]).toMatchObject({ id: 1, bytes: 1400, retransmits: -1, jitter: 0.0001, errors: 3, packets: 40 });
    const tcp = resultsMessage(cpu, 1000, [{ id: 1, bytes: 9, sending: true, endTime: 1, retransmits: 7 }], { congestion: 'cubic' });
    expect(tcp).toMatchObject({ sender_has_retransmits: 1, congestion_used: 'cubic' });
    expect((tcp.streams as Record<string, unknown>[])[0]!.retransmits).toBe(7);
    const unknown = resultsMessage(cpu, 1000, [{ id: 1, bytes: 9, sending: true, endTime: 1 }]);
    expect(unknown.sender_has_retransmits).toBe(0);
    expect((unknown.streams as Record<string, unknown>[])[0]!.retransmits).toBe(-1);
    expect(unknown.congestion_used).toBeUndefined();
  });
});
