/**
 * Blind-attack defences and segment acceptance on an established connection:
 * RFC 5961 (RST and SYN challenge ACKs, the ACK acceptance range, the challenge
 * ACK rate limit), RFC 9293 3.10.7.4 (ACK of unsent data, window checks) and PAWS
 * (RFC 7323 5). Hand-made segments are injected into B as if A had sent them.
 */
import { describe, expect, test } from 'vitest';
import { State } from '../../stack/tcp/connection';
import { ACK, PSH, RST, SYN } from '../../stack/wire/tcp';
import type { FsSocket } from '../../stack/api/net';
import { B_ADDR, connOf, makePair, runFor, runUntil, sinkServer, watch } from './helpers/pair';
import { craftTcp, Tap } from './helpers/tap';
import { seqValue } from '../../stack/wire/seq';

async function setup(b: Parameters<typeof makePair>[2] = {}) {
  const p = makePair({}, {}, b);
  const tap = new Tap(p);
  const srv = sinkServer(p, 9000);
  const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
  const client = watch(c);
  c.write(Buffer.from('hello'));
  expect(await runUntil(p.clock, () => srv.sinks.length === 1 && srv.sinks[0].bytes === 5, 100)).toBe(true);
  await runFor(p.clock, 50); // delayed ACKs done: the connection is quiet
  const connA = connOf(p.a)!,
    connB = connOf(p.b)!;
  const server = srv.sinks[0];
  /** A segment from A's side of the connection, with a fresh timestamp by default. */
  const inject = (o: { seq?: number; ack?: number; flags: number; payload?: Buffer; ts?: [number, number] | null; window?: number }) => {
    tap.inject(
      'b',
      craftTcp({
        sport: connA.localPort,
        dport: 9000,
        seq: o.seq ?? seqValue(connB.rcvNxt),
        ack: o.ack ?? seqValue(connB.sndNxt),
        flags: o.flags,
        window: o.window ?? 1024,
        payload: o.payload,
        ts: o.ts === null ? undefined : (o.ts ?? [(connB.tsRecent + 10) >>> 0, connB.tsNow(p.clock.now)]),
      }),
    );
  };
  /** What B sent in reply to an injection (waits for the link). */
  const replies = async () => {
    const from = tap.tcp('b->a').length;
    await runFor(p.clock, 2);
    return tap.tcp('b->a').slice(from);
  };
  return { p, tap, c, client, server, connA, connB, inject, replies };
}

describe('RST (RFC 5961 3)', () => {
  test('in the window but not at RCV.NXT: a challenge ACK, and the connection lives', async () => {
    const { p, connB, server, inject, replies } = await setup();
    const rcvNxt = seqValue(connB.rcvNxt);
    const pending = replies();
    inject({ seq: rcvNxt + 1000, flags: RST });
    const r = await pending;
    expect(r.length).toBe(1);
    expect(r[0].tcp.flags).toBe(ACK);
    expect(r[0].tcp.ack).toBe(rcvNxt);
    expect(r[0].tcp.seq).toBe(connB.sndNxt);
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(1);
    expect(connB.state).toBe(State.Established);
    expect(server.error).toBeNull();
    expect(p.b.counters.TcpEstabResets).toBe(0);
  });

  test('exactly at RCV.NXT: the connection is reset and the application gets ECONNRESET', async () => {
    const { p, connB, server, inject } = await setup();
    inject({ seq: seqValue(connB.rcvNxt), flags: RST, ts: null });
    expect(await runUntil(p.clock, () => server.error !== null, 10)).toBe(true);
    expect(server.error!.code).toBe('ECONNRESET');
    expect(connB.state).toBe(State.Closed);
    expect(p.b.counters.TcpEstabResets).toBe(1);
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(0);
    expect([...p.b.tcp.table.all()]).toEqual([]);
    expect(p.b.counters.TcpCurrEstab).toBe(0);
  });

  test('outside the window: dropped without a word', async () => {
    const { p, connB, inject, replies } = await setup();
    const pending = replies();
    inject({ seq: seqValue(connB.rcvNxt) - 10, flags: RST });
    inject({ seq: seqValue(connB.rcvNxt) + 10_000_000, flags: RST });
    expect((await pending).length).toBe(0);
    expect(connB.state).toBe(State.Established);
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(0);
  });

  test('a RST is exempt from PAWS (RFC 7323 5.3 R1): an exact RST with an old timestamp still resets', async () => {
    const { p, connB, server, inject } = await setup();
    inject({ seq: seqValue(connB.rcvNxt), flags: RST, ts: [(connB.tsRecent - 1000) >>> 0, 0] });
    expect(await runUntil(p.clock, () => server.error !== null, 10)).toBe(true);
    expect(server.error!.code).toBe('ECONNRESET');
    expect(p.b.counters.TcpExtPAWSEstab).toBe(0);
  });

  test('challenge ACKs are rate limited (RFC 5961 7): at most challengeAcksPerSec, then again after a second', async () => {
    const { p, connB, inject, replies } = await setup({ tcp: { challengeAcksPerSec: 3 } });
    let pending = replies();
    for (let i = 1; i <= 10; i++) inject({ seq: seqValue(connB.rcvNxt) + 100 * i, flags: RST });
    expect((await pending).length).toBe(3);
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(3);
    await runFor(p.clock, 1000);
    pending = replies();
    inject({ seq: seqValue(connB.rcvNxt) + 50, flags: RST });
    expect((await pending).length).toBe(1);
    expect(connB.state).toBe(State.Established);
  });
});

describe('SYN in a synchronized state (RFC 5961 4)', () => {
  test('a SYN on an established connection gets a challenge ACK and resets nothing', async () => {
    const { p, connB, server, inject, replies } = await setup();
    const pending = replies();
    inject({ seq: seqValue(connB.rcvNxt) + 5, flags: SYN });
    const r = await pending;
    expect(r.length).toBe(1);
    expect(r[0].tcp.flags).toBe(ACK);
    expect(r[0].tcp.ack).toBe(connB.rcvNxt);
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(1);
    expect(connB.state).toBe(State.Established);
    expect(server.error).toBeNull();
    expect(p.b.counters.TcpOutRsts).toBe(0);
  });

  test('also a SYN at an old sequence number (outside the window)', async () => {
    const { p, connB, inject, replies } = await setup();
    const pending = replies();
    inject({ seq: seqValue(connB.irs), flags: SYN });
    const r = await pending;
    expect(r.length).toBe(1);
    expect(r[0].tcp.flags).toBe(ACK);
    expect(connB.state).toBe(State.Established);
    expect(p.b.counters.TcpOutRsts).toBe(0);
  });
});

describe('ACK acceptance (RFC 9293 3.10.7.4 fifth, RFC 5961 5)', () => {
  test('an ACK for data never sent: answered with an ACK, the segment (and its data) dropped', async () => {
    const { connB, server, inject, replies } = await setup();
    const rcvNxt = seqValue(connB.rcvNxt);
    const pending = replies();
    inject({ ack: seqValue(connB.sndMax) + 5000, flags: ACK | PSH, payload: Buffer.from('evil') });
    const r = await pending;
    expect(r.length).toBe(1);
    expect(r[0].tcp).toMatchObject({ flags: ACK, ack: rcvNxt, seq: connB.sndNxt, len: 0 });
    expect(connB.rcvNxt).toBe(rcvNxt);
    expect(server.bytes).toBe(5);
    expect(connB.sndUna).toBe(connB.sndMax);
    expect(connB.state).toBe(State.Established);
  });

  test('an ACK below SND.UNA - MAX.SND.WND: a challenge ACK, the data dropped (RFC 5961 5.2)', async () => {
    const { p, connB, server, inject, replies } = await setup();
    const rcvNxt = seqValue(connB.rcvNxt);
    const pending = replies();
    inject({ ack: (seqValue(connB.sndUna) - connB.maxSndWnd - 100) >>> 0, flags: ACK | PSH, payload: Buffer.from('old') });
    const r = await pending;
    expect(r.length).toBe(1);
    expect(r[0].tcp.ack).toBe(rcvNxt);
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(1);
    expect(server.bytes).toBe(5);
  });

  test('an old but acceptable ACK (a duplicate) with data is taken: the data is delivered', async () => {
    const { p, connB, server, inject } = await setup();
    inject({ ack: seqValue(connB.sndUna), flags: ACK | PSH, payload: Buffer.from(' world') });
    expect(await runUntil(p.clock, () => server.bytes === 11, 10)).toBe(true);
    expect(server.data().toString()).toBe('hello world');
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(0);
  });

  test('data outside the receive window is not taken; a duplicate ACK says where the window is', async () => {
    const { connB, server, inject, replies } = await setup();
    const rcvNxt = seqValue(connB.rcvNxt);
    const pending = replies();
    inject({ seq: rcvNxt - 100, flags: ACK | PSH, payload: Buffer.alloc(50, 1) }); // entirely old
    inject({ seq: (rcvNxt + 0x7000_0000) >>> 0, flags: ACK | PSH, payload: Buffer.alloc(50, 2) }); // far beyond
    const r = await pending;
    expect(r.length).toBe(2);
    for (const s of r) expect(s.tcp).toMatchObject({ flags: ACK, ack: rcvNxt, len: 0 });
    expect(connB.rcvNxt).toBe(rcvNxt);
    expect(server.bytes).toBe(5);
    expect(connB.ooo.empty).toBe(true);
  });
});

describe('receive window edge', () => {
  test('a pure ACK exactly at the right edge (a peer that filled the window) is acceptable: its ACK of new data is taken', async () => {
    // No window scaling: the edge the peer sees is exactly RCV.NXT + RCV.WND.
    const { p, tap, connB, server, inject, replies } = await setup({ tcp: { windowScale: -1 } });
    tap.drop = (x) => x.dir === 'a->b'; // A's own ACKs stay off the link
    server.socket!.write(Buffer.from('reply'));
    await runFor(p.clock, 2);
    expect(connB.sndMax).not.toBe(connB.sndUna);
    const pending = replies();
    inject({ seq: seqValue(connB.rcvAdvEdge), ack: seqValue(connB.sndMax), flags: ACK });
    expect(await pending).toEqual([]); // before: a duplicate ACK, and the ACK was lost
    expect(connB.sndUna).toBe(connB.sndMax);
    // One byte further is outside the window: answered, not taken.
    server.socket!.write(Buffer.from('more'));
    await runFor(p.clock, 2);
    const again = replies();
    inject({ seq: (seqValue(connB.rcvAdvEdge) + 1) >>> 0, ack: seqValue(connB.sndMax), flags: ACK });
    expect((await again).length).toBe(1);
    expect(connB.sndUna).not.toBe(connB.sndMax);
  });

  test('after a retransmission timeout pulled SND.NXT back, pure ACKs and a reset carry SND.MAX, not SND.NXT', async () => {
    const { p, tap, connB, server, inject, replies } = await setup();
    tap.drop = (x) => x.dir === 'a->b'; // A gets B's data, but its ACKs are lost
    server.socket!.write(Buffer.alloc(5 * connB.mss, 1));
    expect(await runUntil(p.clock, () => p.b.counters.TcpExtTCPTimeouts >= 1, 5000)).toBe(true);
    await runFor(p.clock, 2);
    expect(seqValue(connB.sndNxt)).not.toBe(seqValue(connB.sndMax)); // one segment resent from SND.UNA
    const sndMax = seqValue(connB.sndMax);
    // Data out of order from A: B answers at once with a duplicate ACK.
    const pending = replies();
    inject({ seq: (seqValue(connB.rcvNxt) + 100) >>> 0, ack: seqValue(connB.sndUna), flags: ACK | PSH, payload: Buffer.from('later') });
    const r = (await pending).filter((x) => x.tcp.len === 0);
    expect(r.length).toBe(1);
    expect(r[0].tcp.seq).toBe(sndMax);
    const rst = replies();
    connB.abort(p.clock.now);
    p.b.flushSoon();
    const resets = (await rst).filter((x) => x.tcp.flags & RST);
    expect(resets.length).toBe(1);
    expect(resets[0].tcp.seq).toBe(sndMax);
  });

  test('an out-of-order segment straddling the right edge is trimmed to the window (RFC 9293 3.10.7.4)', async () => {
    // No window scaling: the window is exact.
    const { p, connB, inject } = await setup({ tcp: { rcvBuf: 8192, windowScale: -1 } });
    const rcvWnd = (seqValue(connB.rcvAdvEdge) - seqValue(connB.rcvNxt)) | 0;
    expect(rcvWnd).toBeGreaterThan(1000);
    inject({ seq: (seqValue(connB.rcvNxt) + rcvWnd - 100) >>> 0, flags: ACK | PSH, payload: Buffer.alloc(300, 7) });
    await runFor(p.clock, 2);
    expect(connB.ooo.bytes).toBe(100);
  });
});

describe('PAWS (RFC 7323 5)', () => {
  test('a segment with a timestamp two ticks older than TS.Recent is dropped, counted and answered with an ACK', async () => {
    const { p, connB, server, inject, replies } = await setup();
    const rcvNxt = seqValue(connB.rcvNxt);
    const tsRecent = connB.tsRecent;
    const pending = replies();
    inject({ flags: ACK | PSH, payload: Buffer.from('stale'), ts: [(tsRecent - 2) >>> 0, 0] });
    const r = await pending;
    expect(p.b.counters.TcpExtPAWSEstab).toBe(1);
    expect(r.length).toBe(1);
    expect(r[0].tcp).toMatchObject({ flags: ACK, ack: rcvNxt, tsEcr: tsRecent });
    expect(server.bytes).toBe(5);
    expect(connB.tsRecent).toBe(tsRecent);
    // The same data with a current timestamp is taken.
    inject({ flags: ACK | PSH, payload: Buffer.from('fresh') });
    expect(await runUntil(p.clock, () => server.bytes === 10, 10)).toBe(true);
    expect(server.data().toString()).toBe('hellofresh');
    expect(connB.tsRecent).toBe((tsRecent + 10) >>> 0);
  });

  test('one tick behind TS.Recent passes (the original sent in the millisecond before the retransmission that overtook it)', async () => {
    const { p, connB, server, inject, replies } = await setup();
    const tsRecent = connB.tsRecent;
    const pending = replies();
    inject({ flags: ACK | PSH, payload: Buffer.from('late'), ts: [(tsRecent - 1) >>> 0, 0] });
    const r = await pending;
    expect(server.data().toString()).toBe('hellolate');
    expect(p.b.counters.TcpExtPAWSEstab).toBe(0);
    expect(connB.tsRecent).toBe(tsRecent); // an older TSval never moves it back
    expect(r.every((x) => x.tcp.ack === seqValue(connB.rcvNxt))).toBe(true);
  });

  test('a reordered duplicate ACK passes up to an RTO of ticks behind; one that would move the window, or is further behind, does not', async () => {
    const { p, connB, inject, replies } = await setup();
    // A current pure ACK at RCV.NXT first: SND.WL1 is RCV.NXT and the window is known.
    let pending = replies();
    inject({ flags: ACK, window: 2000 });
    expect(await pending).toEqual([]);
    const tsRecent = connB.tsRecent;
    const wnd = connB.sndWnd;
    expect(connB.rto).toBeGreaterThanOrEqual(200);
    pending = replies();
    inject({ flags: ACK, window: 2000, ts: [(tsRecent - 100) >>> 0, 0] });
    expect(await pending).toEqual([]); // a duplicate ACK: no reply, not a PAWS drop
    expect(p.b.counters.TcpExtPAWSEstab).toBe(0);
    expect(connB.tsRecent).toBe(tsRecent);
    // The same late ACK offering a larger window would update it: rejected, and ACKed.
    pending = replies();
    inject({ flags: ACK, window: 4000, ts: [(tsRecent - 100) >>> 0, 0] });
    expect((await pending).length).toBe(1);
    expect(p.b.counters.TcpExtPAWSEstab).toBe(1);
    expect(connB.sndWnd).toBe(wnd);
    // Further behind than an RTO's worth of ticks: rejected.
    inject({ flags: ACK, window: 2000, ts: [(tsRecent - Math.ceil(connB.rto * 1.2) - 1) >>> 0, 0] });
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpExtPAWSEstab).toBe(2);
  });

  test('an old pure ACK below RCV.NXT that fails PAWS is dropped without a reply and counted as TcpExtPAWSOldAck', async () => {
    const { p, connB, server, inject, replies } = await setup();
    const tsRecent = connB.tsRecent;
    const pending = replies();
    inject({ flags: ACK, seq: (seqValue(connB.rcvNxt) - 5) >>> 0, ts: [(tsRecent - 50) >>> 0, 0] });
    expect(await pending).toEqual([]);
    expect(p.b.counters.TcpExtPAWSOldAck).toBe(1);
    expect(p.b.counters.TcpExtPAWSEstab).toBe(0);
    // Data with the same old TSval is still rejected and answered.
    const again = replies();
    inject({ flags: ACK | PSH, payload: Buffer.from('stale'), ts: [(tsRecent - 50) >>> 0, 0] });
    expect((await again).length).toBe(1);
    expect(p.b.counters.TcpExtPAWSEstab).toBe(1);
    expect(server.bytes).toBe(5);
  });

  test('timestamps compare modulo 2^32: a TSval that wrapped past zero is newer, not older', async () => {
    const { p, tap, connB, server, inject } = await setup();
    // A's own segments carry its real (now far older) timestamps: keep them off the link.
    tap.drop = (s) => s.dir === 'a->b';
    // Walk TS.Recent (it starts at a per-connection random offset) up to just below 2^32
    // with in-order segments, in steps of at most a quarter of the space; then wrap.
    let bytes = server.bytes;
    const step = async (ts: number) => {
      inject({ flags: ACK | PSH, payload: Buffer.from('a'), ts: [ts, 0] });
      expect(await runUntil(p.clock, () => server.bytes === bytes + 1, 10)).toBe(true);
      bytes++;
      expect(connB.tsRecent).toBe(ts);
      // Let B's delayed ACK go: TS.Recent follows segments at or below Last.ACK.sent (RFC 7323 4.3).
      await runFor(p.clock, 50);
    };
    while ((0xfffffff0 - connB.tsRecent) >>> 0 > 0x40000000) await step((connB.tsRecent + 0x40000000) >>> 0);
    await step(0xfffffff0);
    await step(5);
    expect(p.b.counters.TcpExtPAWSEstab).toBe(0);
  });

  test('with a delayed ACK pending, TS.Recent keeps the TSval of the first segment it will cover (RFC 7323 4.3 Last.ACK.sent)', async () => {
    const { p, connB, server, inject } = await setup();
    const base = connB.tsRecent;
    const bytes = server.bytes;
    inject({ flags: ACK | PSH, payload: Buffer.from('a'), ts: [(base + 10) >>> 0, 0] });
    expect(await runUntil(p.clock, () => server.bytes === bytes + 1, 10)).toBe(true);
    // One small segment: B delays its ACK. The next segment is above Last.ACK.sent.
    inject({ flags: ACK | PSH, payload: Buffer.from('b'), ts: [(base + 20) >>> 0, 0] });
    expect(await runUntil(p.clock, () => server.bytes === bytes + 2, 10)).toBe(true);
    expect(connB.tsRecent).toBe((base + 10) >>> 0);
  });

  test('TS.Recent is not advanced by a segment above RCV.NXT (RFC 7323 4.3): only in-order data updates it', async () => {
    const { p, connB, inject } = await setup();
    const tsRecent = connB.tsRecent;
    inject({ seq: seqValue(connB.rcvNxt) + 100, flags: ACK | PSH, payload: Buffer.from('later'), ts: [(tsRecent + 1000) >>> 0, 0] });
    await runFor(p.clock, 2);
    expect(connB.ooo.bytes).toBe(5);
    expect(connB.tsRecent).toBe(tsRecent);
  });
});

describe('checksums', () => {
  test('a segment with a bad checksum is dropped and counted before anything reads it', async () => {
    const { p, tap, connA, connB, server } = await setup();
    const pkt = craftTcp({ sport: connA.localPort, dport: 9000, seq: seqValue(connB.rcvNxt), ack: seqValue(connB.sndNxt), flags: ACK | RST });
    pkt[pkt.length - 1] ^= 0xff; // inside the TCP header (urgent pointer): checksum now wrong
    tap.inject('b', pkt);
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpInCsumErrors).toBe(1);
    expect(p.b.counters.TcpInErrs).toBe(1);
    expect(connB.state).toBe(State.Established);
    expect(server.error).toBeNull();
  });
});
