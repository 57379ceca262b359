/**
 * Request/response on one connection (HTTP keep-alive), on the virtual clock:
 *  - a reply written from the data handler carries the ACK, and no pure ACK repeating
 *    it follows when the delayed-ACK timer would have fired (RFC 9293 3.8.6.3, RFC 5681 4.2);
 *  - a writev's chunks (a corked http response: header, then body) leave in one segment;
 *  - setNoDelay() before connect() is kept and applied (Node's net.Socket does the same);
 *  - node:http on the stack answers keep-alive requests without waiting for the
 *    client's delayed ACK (it asks for TCP_NODELAY as node:http's own server does).
 */
import { describe, expect, test } from 'vitest';
import { B_ADDR, connOf, makePair, runFor, runUntil, watch } from './helpers/pair';
import { Tap } from './helpers/tap';
import type { FsSocket } from '../../stack/api/net';
import { startHttp } from '../../stack/services/http';

describe('an ACK is never repeated with nothing new', () => {
  test('echo from the data handler: the reply carries the ACK, no pure ACK follows it', async () => {
    const p = makePair();
    const tap = new Tap(p);
    p.netB
      .createServer((s) => {
        s.on('data', (d: Buffer) => s.write(d));
      })
      .listen(7);
    const c = p.netA.connect({ host: B_ADDR, port: 7 }) as FsSocket;
    const sink = watch(c);
    let up = false;
    c.on('connect', () => {
      up = true;
    });
    expect(await runUntil(p.clock, () => up, 100)).toBe(true);
    await runFor(p.clock, 5);
    const t0 = p.clock.now;
    for (let i = 0; i < 20; i++) {
      const want = sink.bytes + 10;
      c.write(Buffer.alloc(10, i));
      expect(await runUntil(p.clock, () => sink.bytes === want, 100)).toBe(true);
    }
    await runFor(p.clock, 200); // well past the 40 ms delayed ACK
    const fromB = tap.tcp('b->a').filter((s) => s.t >= t0);
    // 20 replies, each acknowledging its request; nothing else from the server.
    expect(fromB.filter((s) => s.tcp.len === 10).length).toBe(20);
    expect(tap.pureAcks('b->a').filter((s) => s.t >= t0)).toEqual([]);
    // And no pure ACK from B ever repeated the ACK number and window of the segment before it.
    let last: { ack: number; window: number } | null = null;
    for (const s of tap.tcp('b->a')) {
      if (s.tcp.len === 0 && last && s.tcp.ack === last.ack && s.tcp.window === last.window) throw new Error(`duplicate ACK at ${s.t}`);
      last = { ack: s.tcp.ack, window: s.tcp.window };
    }
    expect(p.b.counters.TcpExtDelayedACKs).toBe(0);
  });
});

describe('writev', () => {
  test('the chunks of one writev leave in one segment, not the first alone and the rest after an ACK', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const got: Buffer[] = [];
    p.netB
      .createServer((s) => {
        s.on('data', (d: Buffer) => got.push(d));
      })
      .listen(9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    let up = false;
    c.on('connect', () => {
      up = true;
    });
    expect(await runUntil(p.clock, () => up, 100)).toBe(true);
    await runFor(p.clock, 5);
    const t0 = p.clock.now;
    // What node:http does with a response: cork, write the header, write the body, uncork.
    c.cork();
    c.write(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'));
    c.write(Buffer.from('hello'));
    c.uncork();
    expect(await runUntil(p.clock, () => Buffer.concat(got).length === 43, 100)).toBe(true);
    const segs = tap.data('a->b').filter((s) => s.t >= t0);
    expect(segs.map((s) => s.tcp.len)).toEqual([43]);
  });
});

describe('setNoDelay before there is a connection', () => {
  test('kept by the socket and applied when connect() attaches the connection', async () => {
    const p = makePair();
    p.netB.createServer(() => {}).listen(9001);
    const { FsSocket: Sock } = await import('../../stack/api/net');
    const c = new Sock(p.a);
    c.setNoDelay(true);
    c.connect(9001, B_ADDR);
    const conn = connOf(p.a, (x) => x.remotePort === 9001)!;
    expect(conn.noDelay).toBe(true);
    // And the connect option does the same.
    const c2 = p.netA.connect({ host: B_ADDR, port: 9001, noDelay: true });
    expect(connOf(p.a, (x) => x.remotePort === 9001 && x.localPort === (c2 as FsSocket).localPort)!.noDelay).toBe(true);
    c.destroy();
    c2.destroy();
  });

  test('a server created with { noDelay: true } hands out sockets with Nagle off', async () => {
    const p = makePair();
    let accepted: FsSocket | null = null;
    p.netB
      .createServer(
        (s) => {
          accepted = s as FsSocket;
        },
        { noDelay: true },
      )
      .listen(9002);
    p.netA.connect({ host: B_ADDR, port: 9002 });
    expect(await runUntil(p.clock, () => accepted !== null, 100)).toBe(true);
    expect(accepted!.conn!.noDelay).toBe(true);
  });
});

describe('node:http keep-alive on the stack', () => {
  test('20 requests on one connection: each answered within a millisecond of virtual time, no duplicate ACK', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const h = startHttp(p.netB, { port: 80 });
    await runUntil(p.clock, () => h.port() === 80, 100);
    const c = p.netA.connect({ host: B_ADDR, port: 80 }) as FsSocket;
    const sink = watch(c);
    let up = false;
    c.on('connect', () => {
      up = true;
    });
    expect(await runUntil(p.clock, () => up, 100)).toBe(true);
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      // Responses complete so far: each a header block and its 64-byte body.
      const responses = () => {
        const text = sink.data().toString('latin1');
        let n = 0,
          at = 0;
        for (let h = text.indexOf('\r\n\r\n', at); h >= 0 && text.length >= h + 4 + 64; h = text.indexOf('\r\n\r\n', at)) {
          n++;
          at = h + 4 + 64;
        }
        return n;
      };
      const t0 = p.clock.now;
      c.write('GET /bytes/64 HTTP/1.1\r\nHost: x\r\n\r\n');
      // The whole response: the header and its 64-byte body.
      expect(await runUntil(p.clock, () => responses() === i + 1, 1000, 0.1)).toBe(true);
      times.push(p.clock.now - t0);
    }
    // One round trip is 1 ms of virtual time; a stall behind Nagle and the delayed ACK is 40.
    expect(Math.max(...times)).toBeLessThan(3);
    let last: { ack: number; window: number } | null = null;
    for (const s of tap.tcp('b->a')) {
      if (s.tcp.len === 0 && last && s.tcp.ack === last.ack && s.tcp.window === last.window) throw new Error(`duplicate ACK at ${s.t}`);
      last = { ack: s.tcp.ack, window: s.tcp.window };
    }
    c.destroy();
    await h.close();
  });
});

describe('pipelined requests, then a half-close (what nc -N does)', () => {
  test('node:http answers all three: the FIN reaches the socket after the data before it (RFC 9293 3.6)', async () => {
    const p = makePair();
    const h = startHttp(p.netB, { port: 80 });
    await runUntil(p.clock, () => h.port() === 80, 100);
    for (let round = 0; round < 5; round++) {
      const c = p.netA.connect({ host: B_ADDR, port: 80 }) as FsSocket;
      const sink = watch(c);
      const req = 'GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n';
      // One write with three requests, then SHUT_WR: data and FIN leave together.
      c.end(req + req + req);
      expect(await runUntil(p.clock, () => sink.ended, 2000)).toBe(true);
      const text = sink.data().toString('latin1');
      expect((text.match(/HTTP\/1\.1 200 OK/g) ?? []).length).toBe(3);
      c.destroy();
    }
    await h.close();
  });
});
