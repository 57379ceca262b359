/**
 * toxiproxy's toxics on the stack's own sockets, on the memory link and the virtual
 * clock: each toxic does what toxiproxy's does (latency and jitter, bandwidth within 5%,
 * slow_close, timeout, reset_peer, slicer, limit_data), streams map to the right side for
 * accepted and opened connections, toxicity is a per-connection probability, toxics added
 * later act on open connections and removing one lets what it held go at once.
 */
import { describe, expect, test } from 'vitest';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { ToxicRegistry } from '../../stack/impair/toxics';
import { ToxicImpairSpec, parseImpairment } from '../../stack/impair/spec';
import type { TcpSocketLike } from '../../stack/api/net-api';
import { B_ADDR, makePair, runUntil, testData } from './helpers/pair';
import { FsSocket } from '../../stack/api/net';
import { startEcho } from '../../stack/services/echo';

let ids = 1;

function rig() {
  const p = makePair();
  const sched = new VirtualScheduler(p.clock);
  const regB = new ToxicRegistry(sched); // the server side: services on B
  const regA = new ToxicRegistry(sched); // the client side: connections A opens
  const netB = regB.wrapApi(p.netB);
  const netA = regA.wrapApi(p.netA);
  const addB = (w: string, seed = 1) => regB.add(ids++, parseImpairment(w) as ToxicImpairSpec, seed);
  const addA = (w: string, seed = 1) => regA.add(ids++, parseImpairment(w) as ToxicImpairSpec, seed);
  return { p, regA, regB, netA, netB, addA, addB };
}

interface Seen {
  chunks: { t: number; b: Buffer }[];
  ended: number | null;
  closed: number | null;
  error: (Error & { code?: string }) | null;
}

function watch(p: ReturnType<typeof makePair>, s: TcpSocketLike): Seen {
  const w: Seen = { chunks: [], ended: null, closed: null, error: null };
  s.on('data', (b: Buffer) => w.chunks.push({ t: p.clock.now, b }));
  s.on('end', () => {
    w.ended = p.clock.now;
  });
  s.on('close', () => {
    w.closed = p.clock.now;
  });
  s.on('error', (e) => {
    w.error = e;
  });
  return w;
}
const bytes = (w: Seen) => Buffer.concat(w.chunks.map((c) => c.b));

/** A server on B port 9000 that hands each accepted socket to `onConn`. */
function server(r: ReturnType<typeof rig>, onConn: (s: TcpSocketLike, seen: Seen) => void) {
  const conns: { s: TcpSocketLike; seen: Seen }[] = [];
  const srv = r.netB.createServer((s) => {
    const seen = watch(r.p, s);
    conns.push({ s, seen });
    onConn(s, seen);
  });
  srv.listen(9000);
  return conns;
}

async function connect(r: ReturnType<typeof rig>) {
  const c = r.netA.connect({ host: B_ADDR, port: 9000 });
  const seen = watch(r.p, c);
  let up = false;
  c.once('connect', () => {
    up = true;
  });
  expect(await runUntil(r.p.clock, () => up, 5000)).toBe(true);
  return { c, seen };
}

describe('wrapping', () => {
  test("with no toxic a connection is the stack's own socket; with one it is wrapped", async () => {
    const r = rig();
    const got: TcpSocketLike[] = [];
    r.netB.createServer((s) => got.push(s)).listen(9000);
    await connect(r);
    await runUntil(r.p.clock, () => got.length === 1);
    expect(got[0]!.constructor.name).toBe('FsSocket');
    r.addB('downstream --port 1 latency latency=5');
    await connect(r);
    await runUntil(r.p.clock, () => got.length === 2);
    expect(got[1]!.constructor.name).toBe('ToxicSocket');
    expect(got[1]!.remoteAddress).toBe('198.18.0.1');
    expect(got[1]!.localPort).toBe(9000);
  });
});

describe("toxiproxy's toxics", () => {
  test("latency downstream: the service's reply arrives latency ms later; the request is not delayed", async () => {
    const r = rig();
    const t = r.addB('downstream --port 9000 latency latency=300');
    let reqAt = 0;
    server(r, (s) =>
      s.on('data', (d: Buffer) => {
        reqAt = r.p.clock.now;
        s.write(d);
      }),
    );
    const { c, seen } = await connect(r);
    const t0 = r.p.clock.now;
    c.write('ping');
    await runUntil(r.p.clock, () => seen.chunks.length > 0, 5000);
    expect(reqAt - t0).toBeLessThan(5);
    expect(seen.chunks[0]!.t - reqAt).toBeGreaterThanOrEqual(300);
    expect(seen.chunks[0]!.t - reqAt).toBeLessThan(310);
    expect(bytes(seen).toString()).toBe('ping');
    expect(t.counters).toMatchObject({ connections: 1, affected: 1, bytes: 4, delayed: 1 });
  });

  test('latency with jitter: each chunk waits latency +- jitter, and chunks keep their order', async () => {
    const r = rig();
    r.addB('downstream latency latency=100 jitter=40', 3);
    const sent: number[] = [];
    server(r, (s) => {
      s.setNoDelay(true); // no Nagle: the bytes leave when the toxic lets them
      let k = 0;
      // One byte every 10 ms of virtual time.
      const tick = () => {
        if (k >= 60) {
          s.end();
          return;
        }
        sent.push(r.p.clock.now);
        s.write(Buffer.from([k++]));
        r.p.clock.after(10, tick);
      };
      s.on('data', () => tick());
    });
    const { c, seen } = await connect(r);
    c.write('go');
    await runUntil(r.p.clock, () => seen.ended !== null, 20_000, 5);
    const got = bytes(seen);
    expect([...got]).toEqual(Array.from({ length: 60 }, (_, k) => k));
    // Per chunk: when its byte arrived minus when it was written.
    const arrival = new Map<number, number>();
    for (const ch of seen.chunks) for (const b of ch.b) arrival.set(b, ch.t);
    const delays = [...arrival.entries()].map(([k, t]) => t - sent[k]!);
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(60);
      expect(d).toBeLessThan(145);
    }
    expect(new Set(delays.map(Math.round)).size).toBeGreaterThan(5);
  });

  test('bandwidth rate=100 (KB/s): 300 KB take 3 s, within 5%', async () => {
    const r = rig();
    r.addB('downstream bandwidth rate=100');
    const data = testData(300_000, 2);
    server(r, (s) => s.end(data));
    const { seen } = await connect(r);
    await runUntil(r.p.clock, () => seen.ended !== null, 20_000, 5);
    expect(bytes(seen).equals(data)).toBe(true);
    const span = seen.chunks[seen.chunks.length - 1]!.t - seen.chunks[0]!.t;
    const rate = (data.length - seen.chunks[0]!.b.length) / span; // bytes per ms = KB/s
    expect(Math.abs(rate - 100) / 100).toBeLessThan(0.05);
  });

  test('slow_close delay=500: data at once, the end of the stream 500 ms later', async () => {
    const r = rig();
    r.addB('downstream slow_close delay=500');
    server(r, (s) => s.end('bye'));
    const { seen } = await connect(r);
    await runUntil(r.p.clock, () => seen.ended !== null, 5000);
    expect(bytes(seen).toString()).toBe('bye');
    expect(seen.ended! - seen.chunks[0]!.t).toBeGreaterThanOrEqual(500);
    expect(seen.ended! - seen.chunks[0]!.t).toBeLessThan(510);
  });

  test('timeout upstream timeout=1000: the service hears nothing, the connection closes after 1 s', async () => {
    const r = rig();
    const t = r.addB('upstream --port 9000 timeout timeout=1000');
    const conns = server(r, () => {});
    const { c, seen } = await connect(r);
    const t0 = r.p.clock.now;
    c.write('hello');
    await runUntil(r.p.clock, () => seen.closed !== null, 5000);
    expect(conns[0]!.seen.chunks).toHaveLength(0);
    expect(seen.ended! - t0).toBeGreaterThanOrEqual(990);
    expect(seen.ended! - t0).toBeLessThan(1020);
    expect(seen.error).toBeNull(); // a FIN, not a reset
    expect(conns[0]!.seen.closed).not.toBeNull();
    expect(t.counters).toMatchObject({ dropped: 5, closed: 1 });
  });

  test('timeout timeout=0: data dropped, no close, until the toxic is removed', async () => {
    const r = rig();
    const t = r.addB('upstream timeout');
    const conns = server(r, (s) => s.on('data', (d: Buffer) => s.write(d)));
    const { c, seen } = await connect(r);
    c.write('lost');
    await runUntil(r.p.clock, () => false, 3000);
    expect(seen.closed).toBeNull();
    expect(conns[0]!.seen.chunks).toHaveLength(0);
    r.regB.remove(t.id);
    c.write('heard');
    await runUntil(r.p.clock, () => seen.chunks.length > 0, 1000);
    expect(bytes(seen).toString()).toBe('heard');
  });

  test('reset_peer downstream timeout=200: the first reply is dropped and 200 ms later both sides are reset', async () => {
    const r = rig();
    const t = r.addB('downstream reset_peer timeout=200');
    let wroteAt = 0;
    const conns = server(r, (s) =>
      s.on('data', () => {
        wroteAt = r.p.clock.now;
        s.write('never seen');
      }),
    );
    const { c, seen } = await connect(r);
    c.write('ask');
    await runUntil(r.p.clock, () => seen.error !== null, 5000);
    expect(seen.error!.code).toBe('ECONNRESET');
    expect(seen.chunks).toHaveLength(0);
    expect(r.p.clock.now - wroteAt).toBeGreaterThanOrEqual(200);
    expect(conns[0]!.seen.error!.code).toBe('ECONNRESET');
    expect(t.counters).toMatchObject({ resets: 1, dropped: 10 });
    expect(r.p.b.counters.TcpOutRsts).toBeGreaterThan(0);
  });

  test('slicer (a connection the stack opened, downstream = what it reads): pieces of about average_size, delay us apart', async () => {
    const r = rig();
    r.addA('downstream slicer average_size=100 size_variation=20 delay=1000', 4);
    const data = testData(1000, 9);
    server(r, (s) => s.end(data));
    const { seen } = await connect(r);
    await runUntil(r.p.clock, () => seen.ended !== null, 5000);
    expect(bytes(seen).equals(data)).toBe(true);
    const sizes = seen.chunks.map((c) => c.b.length);
    expect(sizes.length).toBeGreaterThanOrEqual(Math.ceil(1000 / 120));
    for (const z of sizes) expect(z).toBeLessThanOrEqual(120);
    const gaps = seen.chunks.slice(1).map((c, k) => c.t - seen.chunks[k]!.t);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(1 - 1e-9);
  });

  test('limit_data bytes=1000: exactly 1000 bytes, then a FIN', async () => {
    const r = rig();
    const t = r.addB('downstream limit_data bytes=1000');
    server(r, (s) => s.write(testData(5000, 1)));
    const { seen } = await connect(r);
    await runUntil(r.p.clock, () => seen.closed !== null, 5000);
    expect(bytes(seen).equals(testData(5000, 1).subarray(0, 1000))).toBe(true);
    expect(seen.ended).not.toBeNull();
    expect(seen.error).toBeNull();
    expect(t.counters).toMatchObject({ closed: 1, dropped: 4000 });
  });

  test('streams of a connection the stack opened: upstream is what it writes', async () => {
    const r = rig();
    r.addA('upstream latency latency=200');
    const conns = server(r, () => {});
    const { c } = await connect(r);
    await runUntil(r.p.clock, () => conns.length === 1);
    const t0 = r.p.clock.now;
    c.write('up');
    await runUntil(r.p.clock, () => conns[0]!.seen.chunks.length > 0, 5000);
    expect(conns[0]!.seen.chunks[0]!.t - t0).toBeGreaterThanOrEqual(200);
  });
});

describe('toxicity, live changes', () => {
  test('toxicity=0.5 over 200 connections: about half are affected (seeded)', async () => {
    const r = rig();
    const t = r.addB('downstream latency latency=1 toxicity=0.5', 21);
    server(r, (s) => s.end());
    for (let k = 0; k < 200; k++) {
      const { seen } = await connect(r);
      await runUntil(r.p.clock, () => seen.closed !== null, 1000);
    }
    expect(t.counters.connections).toBe(200);
    expect(t.counters.affected).toBeGreaterThan(70);
    expect(t.counters.affected).toBeLessThan(130);
  }, 60_000);

  test('a toxic added later acts on open connections; removing it lets what it held go at once', async () => {
    const r = rig();
    r.addB('upstream --port 1 latency latency=1'); // matches nothing, but connections get wrapped
    const conns = server(r, () => {});
    const { seen } = await connect(r);
    await runUntil(r.p.clock, () => conns.length === 1);
    const lat = r.addB('downstream latency latency=5000');
    conns[0]!.s.write('held');
    await runUntil(r.p.clock, () => false, 1000);
    expect(seen.chunks).toHaveLength(0);
    const t = r.p.clock.now;
    r.regB.remove(lat.id);
    await runUntil(r.p.clock, () => seen.chunks.length > 0, 100);
    expect(bytes(seen).toString()).toBe('held');
    expect(seen.chunks[0]!.t - t).toBeLessThan(5);
  });
});

describe('with the echo service and a half-closing client (nc -N)', () => {
  async function echoThrough(spec: string, data: string) {
    const r = rig();
    r.addB(spec);
    startEcho(r.netB, { udp: false, port: 7 });
    await runUntil(r.p.clock, () => false, 5);
    const c = new FsSocket(r.p.a, { allowHalfOpen: true });
    const seen = watch(r.p, c);
    c.connect(7, B_ADDR);
    let t0 = 0;
    c.on('connect', () => {
      t0 = r.p.clock.now;
      c.write(data);
      c.end();
    });
    await runUntil(r.p.clock, () => seen.closed !== null, 5000);
    return { got: bytes(seen).toString(), seen, t0 };
  }

  test("downstream latency: the echo comes back late, and only then the FIN (the client's FIN does not cut it off)", async () => {
    const { got, seen, t0 } = await echoThrough('downstream latency latency=500', 'hello\n');
    expect(got).toBe('hello\n');
    expect(seen.chunks[0]!.t - t0).toBeGreaterThanOrEqual(500);
    expect(seen.ended).toBeGreaterThanOrEqual(seen.chunks[0]!.t);
    expect(seen.error).toBeNull();
  });

  test('upstream limit_data bytes=10: the service gets 10 bytes, its answer still goes out, then the connection closes', async () => {
    const { got, seen } = await echoThrough('upstream limit_data bytes=10', '0123456789abcdefghij');
    expect(got).toBe('0123456789');
    expect(seen.ended).not.toBeNull();
    expect(seen.error).toBeNull();
  });
});
