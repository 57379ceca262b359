/**
 * Timestamps (RFC 7323) where the stack used to get them wrong (issue 8):
 *  - TSval never goes backwards, also when application writes re-enter the stack from
 *    the callbacks of a receive burst and would read a later clock than the burst's;
 *  - TS.Recent is updated only from acceptable segments, after the RST and SYN checks
 *    (RFC 7323 4.3, RFC 5961 4): a SYN with a TSval far ahead cannot poison it;
 *  - RTT samples come only from TSecr values this connection could have sent
 *    (RFC 7323 4.1): one with a TSecr far in the past does not wreck SRTT.
 */
import { describe, expect, test } from 'vitest';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { Stack, type Scheduler } from '../../stack/stack';
import { createNetApi } from '../../stack/api/net';
import type { VirtualClock } from '../../drivers/memory';
import { State } from '../../stack/tcp/connection';
import { ACK, SYN } from '../../stack/wire/tcp';
import type { FsSocket } from '../../stack/api/net';
import { B_ADDR, connOf, makePair, runFor, runUntil, sinkServer, watch } from './helpers/pair';
import { craftTcp, Tap } from './helpers/tap';
import { seqValue, tsGe } from '../../stack/wire/seq';

/**
 * A scheduler whose clock moves on with every read (by 0.3 ms), as performance.now()
 * does while the thread works through a burst; timers still run on the virtual clock.
 */
function workingScheduler(clock: VirtualClock): Scheduler {
  const v = new VirtualScheduler(clock);
  let t = clock.now;
  return {
    now: () => (t = Math.max(t + 0.3, clock.now)),
    at: (at, fn) => v.at(at, fn),
    cancel: (h) => v.cancel(h),
    soon: (fn) => v.soon(fn),
  };
}

describe('TSval is monotonic (RFC 7323 5.4)', () => {
  test('several ACKs in one burst, writes re-entering from their callbacks: no segment carries a TSval below an earlier one', async () => {
    const p = makePair();
    // B again, on a clock that moves while it works, with a small send buffer so that
    // the application's write callbacks wait for ACKs (and run inside B's bursts).
    p.b.close();
    const b = new Stack({ device: p.link.b, scheduler: workingScheduler(p.clock), address: p.b.address, prefix: 24, tcp: { sndBuf: 32 * 1024 } });
    const netB = createNetApi(b);
    const tap = new Tap(p);
    const total = 2 * 1024 * 1024;
    let done = false;
    netB
      .createServer((s) => {
        let sent = 0;
        const chunk = Buffer.alloc(16 * 1024, 0x5a);
        const pump = () => {
          while (sent < total) {
            sent += chunk.length;
            if (!s.write(chunk)) {
              s.once('drain', pump);
              return;
            }
          }
          done = true;
        };
        pump();
      })
      .listen(9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    let up = false;
    c.on('connect', () => {
      up = true;
    });
    expect(await runUntil(p.clock, () => up, 100)).toBe(true);
    await runFor(p.clock, 2);
    const connA = connOf(p.a)!;
    const connB = connOf(b)!;
    // From here on A's own segments stay off the link: the test ACKs for A, several ACKs
    // per burst (as a kernel peer's ACKs queue up in the TUN device between two reads).
    tap.drop = (x) => x.dir === 'a->b' && x.raw.readUInt16BE(4) !== 4242;
    let tsVal = (connB.tsRecent + 1) >>> 0;
    for (let round = 0; round < 2000 && !(done && connB.sndUna === connB.sndMax); round++) {
      await runFor(p.clock, 1);
      const una = seqValue(connB.sndUna),
        max = seqValue(connB.sndMax);
      const out = (max - una) >>> 0;
      if (out === 0) continue;
      const lastTs = tap.data('b->a').at(-1)!.tcp.tsVal;
      for (let k = 1; k <= 4; k++) {
        p.link.a.send(
          craftTcp({
            sport: connA.localPort,
            dport: 9000,
            seq: seqValue(connA.sndNxt),
            ack: (una + Math.ceil((out * k) / 4)) >>> 0,
            flags: ACK,
            window: 65535,
            ts: [tsVal, lastTs],
          }),
        );
      }
      p.link.a.flush();
      tsVal = (tsVal + 1) >>> 0;
    }
    expect(done).toBe(true);
    const segs = tap.data('b->a');
    expect(segs.length).toBeGreaterThan(100);
    let back = 0;
    for (let i = 1; i < segs.length; i++) if (!tsGe(segs[i].tcp.tsVal, segs[i - 1].tcp.tsVal)) back++;
    expect(back).toBe(0);
    b.close();
  });
});

/** An established connection A -> B (a sink server on B), quiet; injects segments into B as A. */
async function established() {
  const p = makePair();
  const tap = new Tap(p);
  const srv = sinkServer(p, 9000);
  const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
  const client = watch(c);
  c.write(Buffer.from('hello'));
  expect(await runUntil(p.clock, () => srv.sinks.length === 1 && srv.sinks[0].bytes === 5, 100)).toBe(true);
  await runFor(p.clock, 50);
  const connA = connOf(p.a)!,
    connB = connOf(p.b)!;
  const inject = (o: { seq?: number; ack?: number; flags: number; payload?: Buffer; ts: [number, number] }) => {
    tap.inject(
      'b',
      craftTcp({
        sport: connA.localPort,
        dport: 9000,
        seq: o.seq ?? seqValue(connB.rcvNxt),
        ack: o.ack ?? seqValue(connB.sndNxt),
        flags: o.flags,
        window: 1024,
        payload: o.payload,
        ts: o.ts,
      }),
    );
  };
  return { p, tap, c, client, server: srv.sinks[0]!, srvSocket: srv.sinks[0]!.socket!, connA, connB, inject };
}

describe('TS.Recent and a SYN (RFC 7323 4.3, RFC 5961 4)', () => {
  test('a SYN at RCV.NXT with a TSval far ahead gets its challenge ACK and leaves TS.Recent alone; the connection carries data after it', async () => {
    const { p, tap, c, connB, server, inject } = await established();
    const tsRecent = connB.tsRecent;
    const from = tap.tcp('b->a').length;
    inject({ flags: SYN, seq: seqValue(connB.rcvNxt), ack: 0, ts: [(tsRecent + 0x40000000) >>> 0, 0] });
    await runFor(p.clock, 2);
    const replies = tap.tcp('b->a').slice(from);
    expect(replies.map((r) => r.tcp.flags)).toEqual([ACK]); // the challenge ACK
    expect(p.b.counters.TcpExtTCPChallengeACK).toBe(1);
    expect(connB.tsRecent).toBe(tsRecent);
    expect(connB.state).toBe(State.Established);
    // A's real segments (its own clock, far below the forged TSval) still get through.
    c.write(Buffer.from(' world'));
    expect(await runUntil(p.clock, () => server.bytes === 11, 1000)).toBe(true);
    expect(server.data().toString()).toBe('hello world');
    expect(p.b.counters.TcpExtPAWSEstab).toBe(0);
  });

  test('an ACK of data never sent (RFC 9293 3.10.7.4) does not move TS.Recent either', async () => {
    const { p, connB, inject } = await established();
    const tsRecent = connB.tsRecent;
    inject({ flags: ACK, ack: (seqValue(connB.sndMax) + 100000) >>> 0, ts: [(tsRecent + 0x40000000) >>> 0, 0] });
    await runFor(p.clock, 2);
    expect(connB.tsRecent).toBe(tsRecent);
  });
});

describe('RTT samples only from a TSecr this connection could have sent (RFC 7323 4.1)', () => {
  test('an ACK of new data with a TSecr far in the past, or in the future, leaves SRTT as it was', async () => {
    const { p, tap, connA, connB, srvSocket, inject } = await established();
    // A's own ACKs stay off the link: the test acknowledges B's data.
    tap.drop = (x) => x.dir === 'a->b';
    for (const [what, tsEcr] of [
      ['far in the past', (connB.tsNow(p.clock.now) - 0x10000000) >>> 0],
      ['in the future', (connB.tsNow(p.clock.now) + 5000) >>> 0],
    ] as const) {
      srvSocket.write(Buffer.from('data from B'));
      await runFor(p.clock, 2);
      expect(connB.sndMax).not.toBe(connB.sndUna);
      const srtt = connB.srtt;
      const implausible = p.b.counters.FsTsEcrImplausible;
      inject({ flags: ACK, seq: seqValue(connA.sndNxt), ack: seqValue(connB.sndMax), ts: [(connB.tsRecent + 1) >>> 0, tsEcr] });
      await runFor(p.clock, 2);
      expect(connB.sndUna, what).toBe(connB.sndMax); // the ACK itself was taken
      expect(connB.srtt, what).toBe(srtt);
      expect(p.b.counters.FsTsEcrImplausible, what).toBe(implausible + 1);
      expect(connB.srtt, what).toBeLessThan(100); // what stats reports as rtt
    }
    // A TSecr that echoes the segment is a sample as before.
    srvSocket.write(Buffer.from('more'));
    await runFor(p.clock, 2);
    const last = tap.data('b->a').at(-1)!;
    p.clock.advance(7);
    inject({ flags: ACK, seq: seqValue(connA.sndNxt), ack: seqValue(connB.sndMax), ts: [(connB.tsRecent + 2) >>> 0, last.tcp.tsVal] });
    const before = connB.srtt;
    await runFor(p.clock, 2);
    expect(connB.srtt).not.toBe(before);
    expect(connB.srtt).toBeLessThan(20);
  });
});
