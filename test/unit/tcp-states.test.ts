/**
 * Opening and closing (RFC 9293 3.5, 3.6): simultaneous open and close, TIME-WAIT,
 * refused and unanswered connects, keepalive (RFC 1122 4.2.3.6), SYN cookies.
 */
import { describe, expect, test } from 'vitest';
import { State, ConnectionOwner } from '../../stack/tcp/connection';
import { LinuxBacklog } from '../../stack/tcp/backlog';
import type { CodedError } from '../../stack/util/errors';
import { ACK, FIN, RST, SYN } from '../../stack/wire/tcp';
import type { FsSocket } from '../../stack/api/net';
import { A_IP, B_ADDR, B_IP, connOf, makePair, runFor, runUntil, sha256, sinkServer, testData, transfer, watch, Pair } from './helpers/pair';
import { craftTcp, flagsText, Tap } from './helpers/tap';
import { seqValue } from '../../stack/wire/seq';

/** A bare connection owner (for opens made directly on the TCP layer). */
function owner() {
  const o = {
    established: false,
    fin: false,
    error: undefined as CodedError | null | undefined,
    data: [] as Buffer[],
    onEstablished() {
      o.established = true;
    },
    onData(d: Buffer) {
      o.data.push(d);
    },
    onPeerFin() {
      o.fin = true;
    },
    onSendSpace() {},
    onClosed(err: CodedError | null) {
      o.error = err;
    },
    unreadBytes() {
      return 0;
    },
  };
  return o satisfies ConnectionOwner;
}

async function established(p: Pair, port = 9000) {
  const srv = sinkServer(p, port);
  const c = p.netA.connect({ host: B_ADDR, port }) as FsSocket;
  const sink = watch(c);
  let up = false;
  c.on('connect', () => {
    up = true;
  });
  expect(await runUntil(p.clock, () => up && srv.sinks.length === 1, 100)).toBe(true);
  return { c, sink, srv, connA: connOf(p.a)!, connB: connOf(p.b)! };
}

describe('simultaneous open (RFC 9293 figure 8)', () => {
  test('a close while in SYN-RECEIVED (simultaneous open) sends the FIN once established, and both ends close (RFC 9293 3.10.4)', async () => {
    const p = makePair({}, { tcp: { timeWaitMs: 1000 } }, { tcp: { timeWaitMs: 1000 } });
    const oa = owner(),
      ob = owner();
    const now = p.clock.now;
    const ca = p.a.tcp.connect(A_IP, B_IP, 6001, 5001, now);
    const cb = p.b.tcp.connect(B_IP, A_IP, 5001, 6001, now);
    ca.attach(oa);
    cb.attach(ob);
    p.a.flushSoon();
    p.b.flushSoon();
    // A's SYN-ACK is out (A is in SYN-RECEIVED) when its application closes.
    expect(await runUntil(p.clock, () => ca.state === State.SynReceived, 50, 0.1)).toBe(true);
    ca.shutdownWrite(p.clock.now);
    expect(await runUntil(p.clock, () => ob.fin, 200)).toBe(true);
    cb.shutdownWrite(p.clock.now);
    expect(await runUntil(p.clock, () => ca.isClosed() && cb.isClosed(), 5000)).toBe(true);
    expect(p.a.tcp.table.size + p.b.tcp.table.size).toBe(0);
    expect(p.a.counters.TcpCurrEstab + p.b.counters.TcpCurrEstab).toBe(0);
  });

  test('both ends connect to each other at the same instant: SYNs cross, both reach ESTABLISHED, data flows both ways', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const oa = owner(),
      ob = owner();
    const now = p.clock.now;
    const ca = p.a.tcp.connect(A_IP, B_IP, 6000, 5000, now);
    const cb = p.b.tcp.connect(B_IP, A_IP, 5000, 6000, now);
    ca.attach(oa);
    cb.attach(ob);
    p.a.flushSoon();
    p.b.flushSoon();
    expect(await runUntil(p.clock, () => oa.established && ob.established, 100)).toBe(true);
    expect(ca.state).toBe(State.Established);
    expect(cb.state).toBe(State.Established);
    const seq = tap.tcp().map((s) => `${s.dir} ${flagsText(s.tcp.flags)}`);
    // Each side: SYN, then SYN-ACK (answering the peer's SYN), then ACK (for the peer's SYN-ACK).
    for (const dir of ['a->b', 'b->a']) expect(seq.filter((x) => x.startsWith(dir)).slice(0, 3)).toEqual([`${dir} S`, `${dir} S.`, `${dir} .`]);
    expect(tap.tcp(undefined, (t) => (t.flags & RST) !== 0).length).toBe(0);
    // Each acknowledges the other's ISN + 1, and options were negotiated.
    expect(seqValue(ca.sndUna)).toBe((seqValue(ca.iss) + 1) >>> 0);
    expect(seqValue(ca.rcvNxt)).toBe((seqValue(cb.iss) + 1) >>> 0);
    expect(seqValue(cb.rcvNxt)).toBe((seqValue(ca.iss) + 1) >>> 0);
    expect(ca).toMatchObject({ tsOk: true, sackOk: true, wsOk: true });
    ca.send(Buffer.from('from A'), p.clock.now);
    cb.send(Buffer.from('from B'), p.clock.now);
    p.a.flushSoon();
    p.b.flushSoon();
    expect(await runUntil(p.clock, () => oa.data.length > 0 && ob.data.length > 0, 100)).toBe(true);
    expect(Buffer.concat(ob.data).toString()).toBe('from A');
    expect(Buffer.concat(oa.data).toString()).toBe('from B');
    expect(p.a.counters.TcpActiveOpens).toBe(1);
    expect(p.b.counters.TcpActiveOpens).toBe(1);
  });
});

describe('closing', () => {
  test('the side that closes first holds TIME-WAIT for timeWaitMs; the other goes LAST-ACK -> CLOSED', async () => {
    const p = makePair({}, { tcp: { timeWaitMs: 5_000 } }, { tcp: { timeWaitMs: 5_000 } });
    const tap = new Tap(p);
    const { c, connA, connB, srv } = await established(p);
    c.end();
    expect(await runUntil(p.clock, () => connA.state === State.TimeWait, 100)).toBe(true);
    const twAt = p.clock.now;
    expect(connB.state).toBe(State.Closed);
    expect(srv.sinks[0].ended).toBe(true);
    expect(p.a.counters.TcpExtTW).toBe(1);
    expect(p.b.counters.TcpExtTW).toBe(0);
    // FIN from A, FIN from B (B's sink server ends when A ends), final ACK from A.
    const fins = tap.tcp(undefined, (t) => (t.flags & FIN) !== 0);
    expect(fins.map((s) => s.dir)).toEqual(['a->b', 'b->a']);
    expect(tap.tcp('a->b').pop()!.tcp.flags).toBe(ACK);
    // Still there just before the end of TIME-WAIT, gone right after.
    await runUntil(p.clock, () => connA.state !== State.TimeWait, 4_990, 10);
    expect(connA.state).toBe(State.TimeWait);
    expect(await runUntil(p.clock, () => connA.state === State.Closed, 20)).toBe(true);
    expect(Math.round(p.clock.now - twAt)).toBeGreaterThanOrEqual(4_999);
    expect(Math.round(p.clock.now - twAt)).toBeLessThanOrEqual(5_001);
    expect([...p.a.tcp.table.all()]).toEqual([]);
    expect(p.a.tcp.timeWaitCount).toBe(0);
    expect(c.destroyed || c.readableEnded).toBe(true);
  });

  test('when the server closes first it is the server that holds TIME-WAIT', async () => {
    const p = makePair({}, {}, { tcp: { timeWaitMs: 2_000 } });
    const { c, connA, connB, srv } = await established(p);
    c.on('end', () => c.end());
    srv.sinks[0].socket!.end();
    expect(await runUntil(p.clock, () => connB.state === State.TimeWait, 100)).toBe(true);
    expect(connA.state).toBe(State.Closed);
    expect(await runUntil(p.clock, () => connB.state === State.Closed, 2_100, 10)).toBe(true);
  });

  test('simultaneous close (RFC 9293 figure 13): FINs cross, both pass through CLOSING into TIME-WAIT', async () => {
    const p = makePair({}, { tcp: { timeWaitMs: 3_000 } }, { tcp: { timeWaitMs: 3_000 } });
    const tap = new Tap(p);
    const { c, connA, connB, srv } = await established(p);
    const states = { a: [] as string[], b: [] as string[] };
    const track = () => {
      for (const [k, conn] of [
        ['a', connA],
        ['b', connB],
      ] as const) {
        const l = states[k];
        if (l[l.length - 1] !== conn.stateName) l.push(conn.stateName);
      }
    };
    // Both ends close in the same instant.
    c.end();
    srv.sinks[0].socket!.end();
    track();
    for (let i = 0; i < 20; i++) {
      await runFor(p.clock, 0.25, 0.25);
      track();
    }
    expect(states.a).toEqual(['FIN-WAIT-1', 'CLOSING', 'TIME-WAIT']);
    expect(states.b).toEqual(['FIN-WAIT-1', 'CLOSING', 'TIME-WAIT']);
    // Each FIN carried the same ack (nothing of the other's FIN yet): they crossed.
    const [fa] = tap.tcp('a->b', (t) => (t.flags & FIN) !== 0);
    const [fb] = tap.tcp('b->a', (t) => (t.flags & FIN) !== 0);
    expect(fa.t).toBe(fb.t);
    expect(fa.tcp.ack).toBe(seqValue(connB.iss) + 1);
    expect(fb.tcp.ack).toBe(seqValue(connA.iss) + 1);
    expect(p.a.counters.TcpExtTW).toBe(1);
    expect(p.b.counters.TcpExtTW).toBe(1);
    expect(await runUntil(p.clock, () => connA.isClosed() && connB.isClosed(), 3_100, 10)).toBe(true);
    expect(tap.tcp(undefined, (t) => (t.flags & RST) !== 0).length).toBe(0);
  });

  test("TIME-WAIT re-acknowledges the peer's retransmitted FIN when the last ACK was lost", async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { c, connA, connB } = await established(p);
    // Drop A's first pure ACK of B's FIN.
    let lost = false;
    tap.drop = (s) => {
      if (!lost && s.dir === 'a->b' && s.tcp && s.tcp.flags === ACK && connA.state === State.TimeWait) {
        lost = true;
        return true;
      }
      return false;
    };
    c.end();
    expect(await runUntil(p.clock, () => connA.state === State.TimeWait, 100)).toBe(true);
    expect(await runUntil(p.clock, () => connB.isClosed(), 2_000)).toBe(true);
    expect(lost).toBe(true);
    expect(connB.error).toBeNull();
    // B resent its FIN on its RTO; A answered it from TIME-WAIT.
    const bFins = tap.tcp('b->a', (t) => (t.flags & FIN) !== 0);
    expect(bFins.length).toBe(2);
    expect(p.b.counters.TcpRetransSegs).toBe(1);
    expect(connA.state).toBe(State.TimeWait);
    // ...and restarted its 2 MSL timer (RFC 9293 3.10.7.4): TIME-WAIT lasts timeWaitMs from
    // the FIN's second arrival, not from the first.
    const again = bFins[1].t + 0.5;
    expect(await runUntil(p.clock, () => connA.isClosed(), 70_000, 50)).toBe(true);
    expect(p.clock.now - again).toBeGreaterThanOrEqual(p.a.tcp.config.timeWaitMs - 1);
    expect(p.clock.now - again).toBeLessThanOrEqual(p.a.tcp.config.timeWaitMs + 50);
  });

  test('a new SYN above the old sequence space takes over a TIME-WAIT pair (RFC 9293 3.10.7.4, RFC 6191)', async () => {
    const p = makePair();
    const { c, connA } = await established(p);
    c.end();
    expect(await runUntil(p.clock, () => connA.state === State.TimeWait, 100)).toBe(true);
    const tw = connA;
    const oldPort = connA.localPort;
    // A now listens on its old port; a SYN for the TIME-WAIT 4-tuple, above its RCV.NXT,
    // ends the TIME-WAIT entry and reaches the listener.
    const tap = new Tap(p);
    p.netA.createServer(() => {}).listen(oldPort);
    tap.inject('a', craftTcp({ src: B_IP, dst: A_IP, sport: 9000, dport: oldPort, seq: (seqValue(tw.rcvNxt) + 100000) >>> 0, flags: SYN, mss: 1460 }));
    await runFor(p.clock, 2);
    const synAck = tap.tcp('a->b', (t) => t.flags === (SYN | ACK));
    expect(synAck.length).toBe(1);
    expect(synAck[0].tcp.ack).toBe((seqValue(tw.rcvNxt) + 100001) >>> 0);
    expect(tw.state).toBe(State.Closed);
  });
});

describe('handshake loss', () => {
  test("the SYN-ACK is lost: the client's retransmitted SYN is answered with the SYN-ACK at once", async () => {
    const p = makePair({}, { tcp: { synRtoMs: 300 } });
    const tap = new Tap(p);
    let dropped = false;
    tap.drop = (s) => {
      if (!dropped && s.dir === 'b->a' && s.tcp && s.tcp.flags === (SYN | ACK)) {
        dropped = true;
        return true;
      }
      return false;
    };
    sinkServer(p, 9000);
    const t0 = p.clock.now;
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    let upAt = -1;
    c.on('connect', () => {
      upAt = p.clock.now;
    });
    expect(await runUntil(p.clock, () => upAt > 0, 3_000)).toBe(true);
    const synAcks = tap.tcp('b->a', (t) => t.flags === (SYN | ACK));
    expect(synAcks.length).toBe(2);
    // The second SYN (at 300 ms) drew the second SYN-ACK right away, not B's own 1 s timer.
    const syns = tap.tcp('a->b', (t) => t.flags === SYN);
    expect(Math.round(syns[1].t - t0)).toBe(300);
    expect(synAcks[1].t - syns[1].t).toBeCloseTo(0.5, 6); // the second SYN's arrival
    expect(Math.round(upAt - t0)).toBeLessThanOrEqual(302);
    expect(synAcks[1].tcp.seq).toBe(synAcks[0].tcp.seq);
    expect(p.b.counters.FsSynAckRetrans).toBe(1);
  });

  test('the SYN is lost: the connection starts with a one-segment congestion window (RFC 5681 3.1, RFC 6928 2)', async () => {
    const p = makePair({}, { tcp: { congestionControl: 'newreno' } });
    const tap = new Tap(p);
    let dropped = false;
    tap.drop = (s) => {
      if (!dropped && s.dir === 'a->b' && s.tcp && s.tcp.flags === SYN) {
        dropped = true;
        return true;
      }
      return false;
    };
    const { connA } = await (async () => {
      const srv = sinkServer(p, 9000);
      const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
      let up = false;
      c.on('connect', () => {
        up = true;
      });
      expect(await runUntil(p.clock, () => up, 2_000)).toBe(true);
      const connA = connOf(p.a)!;
      expect(connA.cc.cwnd).toBe(connA.mss);
      const t0 = p.clock.now;
      c.write(testData(20 * 1448, 61));
      await runFor(p.clock, 0.1, 0.1);
      // One segment leaves, not ten.
      expect(tap.data('a->b').filter((s) => s.t >= t0).length).toBe(1);
      expect(await runUntil(p.clock, () => srv.sinks[0]?.bytes === 20 * 1448, 1_000)).toBe(true);
      return { connA };
    })();
    expect(connA.state).toBe(State.Established);
  });

  test('without loss the initial window is ten segments (RFC 6928)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { c, connA } = await established(p);
    expect(connA.cc.cwnd).toBe(10 * connA.mss);
    const t0 = p.clock.now;
    c.write(testData(20 * 1448, 62));
    await runFor(p.clock, 0.1, 0.1);
    expect(tap.data('a->b').filter((s) => s.t >= t0).length).toBe(10);
  });
});

describe('TcpCurrEstab (RFC 4022: ESTABLISHED or CLOSE-WAIT)', () => {
  test('counts CLOSE-WAIT, stops counting at LAST-ACK, and never goes below zero', async () => {
    const p = makePair();
    const { c, connB, srv } = await established(p);
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpCurrEstab).toBe(1);
    // The peer half-closes: B is in CLOSE-WAIT, still counted. (B's socket is paused so that
    // it does not read the end and close its own side.)
    srv.sinks[0].socket!.pause();
    c.end();
    expect(await runUntil(p.clock, () => connB.state === State.CloseWait, 10, 0.25)).toBe(true);
    expect(p.b.counters.TcpCurrEstab).toBe(1);
    expect(p.a.counters.TcpCurrEstab).toBe(0); // A left ESTABLISHED for FIN-WAIT
    // A reset in CLOSE-WAIT: counted as an established reset, and the count goes to 0, not -1.
    connB.abort(p.clock.now);
    expect(p.b.counters.TcpEstabResets).toBe(1);
    expect(p.b.counters.TcpCurrEstab).toBe(0);
  });

  test('a graceful passive close ends at zero', async () => {
    const p = makePair();
    const { c, connB } = await established(p);
    c.end();
    expect(await runUntil(p.clock, () => connB.isClosed(), 100)).toBe(true);
    expect(p.b.counters.TcpCurrEstab).toBe(0);
    expect(p.a.counters.TcpCurrEstab).toBe(0);
  });
});

describe('half-close and half-open', () => {
  test('the client ends its side; a half-open server goes on sending 200 kB, then ends (RFC 9293 3.6)', async () => {
    const p = makePair();
    const data = testData(200_000, 71);
    let serverGotEnd = false;
    p.netB
      .createServer(
        (s) => {
          s.resume();
          s.on('end', () => {
            serverGotEnd = true;
            s.end(data);
          });
        },
        { allowHalfOpen: true },
      )
      .listen(9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    const sink = watch(c);
    c.end();
    expect(await runUntil(p.clock, () => sink.ended, 5_000)).toBe(true);
    expect(serverGotEnd).toBe(true);
    expect(sha256(sink.data())).toBe(sha256(data));
    expect(sink.error).toBeNull();
  });

  test('a RST in SYN-RECEIVED sends a passive open back to LISTEN (RFC 9293 3.10.7.4): the listener lives on', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const srv = sinkServer(p, 9000);
    // Hold back A's ACK of the SYN-ACK so that B stays in SYN-RECEIVED.
    tap.drop = (s) => s.dir === 'a->b' && !!s.tcp && s.tcp.flags === ACK && s.tcp.len === 0;
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    watch(c);
    await runFor(p.clock, 2);
    // B's passive open is a half-open entry of the listener, not a connection.
    expect(connOf(p.b)).toBeUndefined();
    const l = p.b.tcp.listeners.get(9000)!;
    expect(l.synQueue.size).toBe(1);
    const [half] = [...l.synQueue.values()];
    expect(half.describe().state).toBe('SYN-RECEIVED');
    const attemptFails = p.b.counters.TcpAttemptFails;
    // A RST one above RCV.NXT is only challenged (RFC 5961 3.2); the exact one resets.
    tap.inject('b', craftTcp({ sport: connOf(p.a)!.localPort, dport: 9000, seq: (seqValue(half.rcvNxt) + 1) >>> 0, flags: RST }));
    await runFor(p.clock, 2);
    expect(l.synQueue.size).toBe(1);
    tap.inject('b', craftTcp({ sport: connOf(p.a)!.localPort, dport: 9000, seq: seqValue(half.rcvNxt), flags: RST }));
    await runFor(p.clock, 2);
    expect(l.synQueue.size).toBe(0);
    // SYN-RECEIVED -> LISTEN is a failed attempt (RFC 4022 tcpAttemptFails).
    expect(p.b.counters.TcpAttemptFails).toBe(attemptFails + 1);
    expect(srv.sinks.length).toBe(0);
    // A new connection still gets through.
    tap.drop = null;
    c.destroy();
    const r = await transfer(p, Buffer.from('after'), { port: 9001 });
    expect(r.got.toString()).toBe('after');
    expect(p.b.tcp.listeners.get(9000)).toBe(l);
  });
});

describe('sockets the application let go of', () => {
  test('an orphaned FIN-WAIT-2 is dropped after finWait2TimeoutMs when the peer never closes', async () => {
    const p = makePair({}, { tcp: { finWait2TimeoutMs: 3_000 } });
    p.netB
      .createServer(
        (s) => {
          s.resume();
        },
        { allowHalfOpen: true },
      )
      .listen(9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    watch(c);
    await runFor(p.clock, 5);
    const connA = connOf(p.a)!;
    c.end();
    expect(await runUntil(p.clock, () => connA.state === State.FinWait2, 100)).toBe(true);
    c.destroy();
    const t0 = p.clock.now;
    expect(await runUntil(p.clock, () => connA.isClosed(), 5_000, 10)).toBe(true);
    expect(Math.round((p.clock.now - t0) / 10) * 10).toBe(3_000);
    expect(connOf(p.b)!.state).toBe(State.CloseWait);
  });

  test('data for an orphaned connection is answered with a RST (Linux TCPAbortOnData)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    let server: FsSocket | null = null;
    p.netB
      .createServer(
        (s) => {
          server = s as FsSocket;
          s.resume();
        },
        { allowHalfOpen: true },
      )
      .listen(9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    watch(c);
    await runFor(p.clock, 5);
    c.end();
    await runFor(p.clock, 5);
    c.destroy();
    await runFor(p.clock, 1);
    const sSink = watch(server!);
    server!.write(Buffer.from('too late'));
    await runFor(p.clock, 5);
    expect(p.a.counters.TcpExtTCPAbortOnData).toBe(1);
    expect(tap.tcp('a->b', (t) => (t.flags & RST) !== 0).length).toBe(1);
    expect(sSink.error?.code).toBe('ECONNRESET');
    expect([...p.a.tcp.table.all()]).toEqual([]);
  });

  test('closing a socket with unread data resets the connection (RFC 9293 3.10.4 / RFC 2525 2.17)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    let server: FsSocket | null = null;
    p.netB
      .createServer((s) => {
        server = s as FsSocket;
        s.pause();
      })
      .listen(9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    const cSink = watch(c);
    c.write(Buffer.from('never read'));
    await runFor(p.clock, 50);
    expect(server!.readableLength).toBe(10);
    server!.destroy();
    await runFor(p.clock, 5);
    const rst = tap.tcp('b->a', (t) => (t.flags & RST) !== 0);
    expect(rst.length).toBe(1);
    expect(tap.tcp('b->a', (t) => (t.flags & FIN) !== 0).length).toBe(0);
    expect(cSink.error?.code).toBe('ECONNRESET');
    expect(p.b.counters.TcpEstabResets).toBe(1);
    // Counted as Linux counts it (nstat TcpExtTCPAbortOnClose); a plain close is not.
    expect(p.b.counters.TcpExtTCPAbortOnClose).toBe(1);
    expect(p.a.counters.TcpExtTCPAbortOnClose).toBe(0);
  });
});

describe('failed opens', () => {
  test('connecting to a closed port: RST|ACK, the client fails with ECONNREFUSED', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const c = p.netA.connect({ host: B_ADDR, port: 4321 }) as FsSocket;
    const sink = watch(c);
    expect(await runUntil(p.clock, () => sink.error !== null, 100)).toBe(true);
    expect(sink.error!.code).toBe('ECONNREFUSED');
    expect(sink.error!.message).toContain('198.18.0.2:4321');
    const [syn] = tap.tcp('a->b');
    const [rst] = tap.tcp('b->a');
    expect(rst.tcp.flags).toBe(RST | ACK);
    expect(rst.tcp.seq).toBe(0);
    expect(rst.tcp.ack).toBe((syn.tcp.seq + 1) >>> 0);
    expect(p.b.counters.TcpOutRsts).toBe(1);
    // RFC 4022 tcpAttemptFails: SYN-SENT -> CLOSED.
    expect(p.a.counters.TcpAttemptFails).toBe(1);
    expect([...p.a.tcp.table.all()]).toEqual([]);
    expect(await runUntil(p.clock, () => sink.closed, 10)).toBe(true);
  });

  test('a RST whose ACK does not acknowledge our SYN is ignored in SYN-SENT (RFC 9293 3.10.7.3)', async () => {
    const p = makePair({}, {}, { acceptAnyAddress: false });
    const tap = new Tap(p);
    tap.drop = (s) => s.dir === 'a->b' && !s.injected; // nothing reaches B
    const c = p.netA.connect({ host: '198.18.0.3', port: 80 }) as FsSocket;
    const sink = watch(c);
    await runFor(p.clock, 1);
    const conn = connOf(p.a)!;
    tap.inject('a', craftTcp({ src: 0xc6120003, dst: A_IP, sport: 80, dport: conn.localPort, seq: 0, ack: (seqValue(conn.iss) + 5) >>> 0, flags: RST | ACK }));
    await runFor(p.clock, 2);
    expect(conn.state).toBe(State.SynSent);
    expect(sink.error).toBeNull();
    c.destroy();
  });

  test('an address that never answers: SYN retransmitted at 1, 3, 7 s (doubling), then ETIMEDOUT after synRetries', async () => {
    const p = makePair({}, { tcp: { synRetries: 3 } }, { acceptAnyAddress: false });
    const tap = new Tap(p);
    const t0 = p.clock.now;
    const c = p.netA.connect({ host: '198.18.0.3', port: 80 }) as FsSocket;
    const sink = watch(c);
    expect(await runUntil(p.clock, () => sink.error !== null, 20_000, 5)).toBe(true);
    expect(sink.error!.code).toBe('ETIMEDOUT');
    const syns = tap.tcp('a->b', (t) => t.flags === SYN);
    expect(syns.map((s) => Math.round(s.t - t0))).toEqual([0, 1000, 3000, 7000]);
    // The same ISN each time.
    expect(new Set(syns.map((s) => s.tcp.seq)).size).toBe(1);
    // Gave up one more doubled timeout after the last SYN: 15 s.
    expect(Math.round(p.clock.now - t0)).toBeGreaterThanOrEqual(15_000);
    expect(Math.round(p.clock.now - t0)).toBeLessThanOrEqual(15_005);
    expect(p.a.counters.TcpExtTCPSynRetrans).toBe(3);
    expect(p.a.counters.TcpAttemptFails).toBe(1);
    expect(p.b.counters.IpInAddrErrors).toBe(4);
    expect([...p.a.tcp.table.all()]).toEqual([]);
  });
});

describe('keepalive (RFC 1122 4.2.3.6)', () => {
  test('an idle connection with a live peer: probes after the idle time are answered, nothing breaks', async () => {
    const p = makePair({}, { tcp: { keepaliveIntervalMs: 1_000, keepaliveProbes: 3 } });
    const tap = new Tap(p);
    const { c, connA, sink } = await established(p);
    await runFor(p.clock, 10); // let the handshake's last segments land: idleness counts from the last one
    c.setKeepAlive(true, 2_000);
    const t0 = p.clock.now;
    await runFor(p.clock, 7_000, 5);
    const probes = tap.tcp('a->b', (t, s) => s.t > t0 && t.len === 0 && t.seq === (seqValue(connA.sndUna) - 1) >>> 0);
    // Every 2 s of idleness (each answer resets the idle clock).
    expect(probes.length).toBe(3);
    expect(probes.map((s) => Math.round(s.t - t0))).toEqual([2000, 4001, 6002]);
    expect(tap.tcp('b->a', (_t, s) => s.t > t0).length).toBe(3);
    expect(sink.error).toBeNull();
    expect(connA.state).toBe(State.Established);
    expect(p.a.counters.TcpExtTCPKeepAlive).toBe(3);
  });

  test('the peer vanishes: probes every interval, then ETIMEDOUT after keepaliveProbes unanswered', async () => {
    const p = makePair({}, { tcp: { keepaliveIntervalMs: 1_000, keepaliveProbes: 3 } });
    const tap = new Tap(p);
    const { c, sink } = await established(p);
    await runFor(p.clock, 10);
    c.setKeepAlive(true, 2_000);
    const t0 = p.clock.now;
    tap.drop = (s) => s.dir === 'b->a' || (s.dir === 'a->b' && s.t > t0);
    expect(await runUntil(p.clock, () => sink.error !== null, 10_000, 5)).toBe(true);
    expect(sink.error!.code).toBe('ETIMEDOUT');
    const probes = tap.tcp('a->b', (t, s) => s.t > t0 && t.len === 0 && (t.flags & RST) === 0);
    expect(probes.map((s) => Math.round(s.t - t0))).toEqual([2000, 3000, 4000]);
    // Declared dead one interval after the last probe: idle + probes x interval.
    expect(Math.round(p.clock.now - t0)).toBeGreaterThanOrEqual(5_000);
    expect(Math.round(p.clock.now - t0)).toBeLessThanOrEqual(5_005);
    expect(p.a.counters.TcpExtTCPAbortOnTimeout).toBe(1);
    expect([...p.a.tcp.table.all()]).toEqual([]);
  });

  test('with data outstanding there are no keepalive probes: the retransmission timer decides (RFC 1122 4.2.3.6, as Linux)', async () => {
    const p = makePair({}, { tcp: { keepaliveIntervalMs: 1_000, keepaliveProbes: 3, dataRetries: 5 } });
    const tap = new Tap(p);
    const { c, sink } = await established(p);
    await runFor(p.clock, 10);
    c.setKeepAlive(true, 2_000);
    const t0 = p.clock.now;
    tap.drop = (s) => s.dir === 'a->b' && s.t >= t0;
    c.write(Buffer.from('unanswered'));
    expect(await runUntil(p.clock, () => sink.error !== null, 30_000, 5)).toBe(true);
    expect(sink.error!.code).toBe('ETIMEDOUT');
    expect(p.a.counters.TcpExtTCPKeepAlive).toBe(0);
    // Given up by the RTO: 200 ms doubling over 5 retransmissions, 12.6 s, not the 5 s of keepalive.
    expect(Math.round(p.clock.now - t0)).toBeGreaterThanOrEqual(12_600);
    expect(p.a.counters.TcpExtTCPAbortOnTimeout).toBe(1);
    expect(tap.data('a->b').length).toBe(6);
  });

  test('without setKeepAlive nothing is sent on an idle connection', async () => {
    const p = makePair({}, { tcp: { keepaliveIntervalMs: 1_000, keepaliveProbes: 3 } });
    const tap = new Tap(p);
    await established(p);
    const t0 = p.clock.now;
    await runFor(p.clock, 10_000, 10);
    expect(tap.tcp(undefined, (_t, s) => s.t > t0 + 100).length).toBe(0);
  });
});

describe('SYN cookies', () => {
  const cookies = (maxSynBacklog: number, syncookies = 1) =>
    new LinuxBacklog(() => ({ maxSynBacklog, syncookies, abortOnOverflow: false, somaxconn: 4096, synAckRetries: 5 }));

  test('tcp_max_syn_backlog 0: the SYN is answered with a cookie and the connection still goes through', async () => {
    const p = makePair({}, {}, { backlog: cookies(0) });
    const tap = new Tap(p);
    const data = testData(100_000, 31);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(p.b.counters.TcpExtSyncookiesSent).toBe(1);
    expect(p.b.counters.TcpExtSyncookiesRecv).toBe(1);
    expect(p.b.counters.TcpExtSyncookiesFailed).toBe(0);
    // A cookie SYN-ACK carries only the MSS: no state was kept for the other options.
    const synAck = tap.tcp('b->a', (t) => t.flags === (SYN | ACK))[0].tcp;
    expect(synAck).toMatchObject({ mss: 1460, wscale: -1, sackPermitted: false, hasTimestamp: false });
    // The MSS survived the cookie (the table's 1460 entry).
    const firstData = tap.data('a->b')[0];
    expect(Math.max(...tap.data('b->a').map((s) => s.tcp.len), 0)).toBeLessThanOrEqual(1460);
    expect(firstData.tcp.len).toBe(1460);
  });

  test('a tiny SYN backlog under a burst: the first SYNs are queued, the rest get cookies, every connection completes', async () => {
    const p = makePair({}, {}, { backlog: cookies(2) });
    const sinks = sinkServer(p, 9000).sinks;
    const clients = Array.from({ length: 6 }, (_, i) => {
      const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
      const s = watch(c);
      c.end(Buffer.from(`client ${i}`));
      return s;
    });
    expect(await runUntil(p.clock, () => sinks.length === 6 && sinks.every((s) => s.ended) && clients.every((c) => c.closed), 2_000)).toBe(true);
    expect(sinks.map((s) => s.data().toString()).sort()).toEqual(Array.from({ length: 6 }, (_, i) => `client ${i}`));
    expect(p.b.counters.TcpExtSyncookiesSent).toBe(4);
    expect(p.b.counters.TcpExtSyncookiesRecv).toBe(4);
    expect(clients.every((c) => c.error === null)).toBe(true);
  });

  test('an ACK with a forged cookie is refused with a RST and counted', async () => {
    const p = makePair({}, {}, { backlog: cookies(0, 2) });
    sinkServer(p, 9000);
    const tap = new Tap(p);
    await runFor(p.clock, 1);
    const t = Math.floor(p.clock.now / 64_000) & 31;
    const forged = ((t << 27) | (6 << 24) | 0x123456) >>> 0;
    // A listener that never sent a cookie does not even try one: plain RST.
    tap.inject('b', craftTcp({ sport: 40000, dport: 9000, seq: 1001, ack: (forged + 1) >>> 0, flags: ACK }));
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpExtSyncookiesFailed).toBe(0);
    // Once it has answered a SYN with a cookie, a forged one is checked, refused and counted.
    tap.inject('b', craftTcp({ sport: 40001, dport: 9000, seq: 5000, flags: SYN }));
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpExtSyncookiesSent).toBe(1);
    tap.inject('b', craftTcp({ sport: 40000, dport: 9000, seq: 1001, ack: (forged + 1) >>> 0, flags: ACK }));
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpExtSyncookiesFailed).toBe(1);
    expect(p.b.counters.TcpExtSyncookiesRecv).toBe(0);
    const rsts = tap.tcp('b->a', (x) => x.flags === RST && x.dport === 40000);
    expect(rsts.length).toBe(2);
    for (const rst of rsts) expect(rst.tcp.seq).toBe((forged + 1) >>> 0);
    expect([...p.b.tcp.table.all()]).toEqual([]);
  });
});
