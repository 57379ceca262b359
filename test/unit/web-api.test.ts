/**
 * The control plane over HTTP (stack/control/http.ts, stack/runtime/web.ts and
 * metrics.ts): a real StackShard (faults installed) on the memory driver, a peer stack
 * on the other end of the link, the runtime's handler table (controlHandlers over a
 * LocalPort) behind an HttpControlServer on 127.0.0.1. Asserted: stats with rows, the
 * fault switch and parameters, bad requests as one-line JSON 400s, the token (401), the
 * event stream (SSE), /metrics through a Prometheus text parser, a trace over a lossy
 * link through the API, and the KB 297040 lock held and released through it.
 */
import { afterEach, describe, expect, test } from 'vitest';
import parsePrometheus, { type PromFamily } from 'parse-prometheus-text-format';
import { MemoryLink, VirtualClock } from '../../drivers/memory';
import { Stack } from '../../stack/stack';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { StackShard } from '../../stack/runtime/shard';
import { Lifecycle } from '../../stack/runtime/lifecycle';
import { LocalPort, controlHandlers, type ControlView } from '../../stack/runtime/control';
import { impairHandlers } from '../../stack/runtime/impair-control';
import { metricsFrom } from '../../stack/runtime/metrics';
import { HttpControlServer, queryArgs } from '../../stack/control/http';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventLog } from '../../stack/faults/events';
import { createNetApi, type FsSocket } from '../../stack/api/net';
import { parseIpv4 } from '../../stack/wire/addr';
import type { TunDevice } from '../../drivers/tun/index';
import type { RuntimeOptions } from '../../stack/runtime/options';
import { ImpairDevice } from '../../stack/impair/device';
import { Impairments } from '../../stack/impair/registry';
import { ToxicRegistry } from '../../stack/impair/toxics';
import { runUntil, testData, watch } from './helpers/pair';

const STACK = '198.18.0.2',
  PEER = '198.18.0.1',
  NOWHERE = '198.18.0.99';
const NOWHERE_IP = parseIpv4(NOWHERE)!;

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

async function rig(o: { token?: string | null; faults?: string[]; params?: string[]; profile?: string } = {}) {
  const clock = new VirtualClock(1000);
  const link = new MemoryLink({ latencyMs: 1, clock });
  const sched = new VirtualScheduler(clock);
  const faults = buildFaultConfig({ profile: o.profile ?? 'linux', faults: o.faults ?? [], params: o.params ?? [] });
  const events = new EventLog();
  const life = new Lifecycle();
  const impairDevice = new ImpairDevice(link.a, sched);
  const shard = new StackShard(
    {
      device: impairDevice,
      scheduler: sched,
      deviceName: 'mem0',
      txQueueLen: 1000,
      queues: 1,
      mtu: 1500,
      vnetHdr: false,
      tso4: false,
      csum: false,
      addr: { addr: parseIpv4(STACK)!, prefix: 24 },
      cc: 'newreno',
      faults,
      events,
      index: null,
    },
    life,
  );
  const impair = new Impairments({ device: impairDevice, toxics: new ToxicRegistry(sched), now: () => sched.now(), events });
  const peer = new Stack({ device: link.b, scheduler: sched, address: parseIpv4(PEER)!, prefix: 24 });
  const peerApi = createNetApi(peer);
  const tun = { name: 'mem0', mtu: 1500, created: true, vnetHdr: false, queueCount: 1, offloads: { names: [] } } as unknown as TunDevice;
  const opts = {
    tun: 'mem0',
    addr: { addr: parseIpv4(STACK)!, prefix: 24 },
    hostAddr: null,
    hostAddrDefaulted: false,
    mtu: 1500,
    services: [],
    control: '/tmp/none.sock',
    faults: [],
    params: [],
    offloads: false,
    queues: 1,
    shards: false,
    cc: 'newreno',
    json: false,
  } as unknown as RuntimeOptions;
  const view: ControlView = {
    opts,
    tun,
    faults,
    events,
    startedAt: Date.now(),
    ports: [new LocalPort(shard)],
    sharded: false,
    link: null,
    now: () => sched.now(),
  };
  const handlers = { ...controlHandlers(view), ...impairHandlers(impair) };
  const server = await HttpControlServer.start({ host: '127.0.0.1', port: 0, token: o.token ?? null, handlers, metrics: metricsFrom(handlers) });
  open.push({
    close: async () => {
      await server.close();
      await life.shutdown();
    },
  });
  const base = server.url.replace(/\/$/, '');
  const req = async (method: string, p: string, body?: unknown, headers: Record<string, string> = {}) => {
    const r = await fetch(base + p, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    return {
      status: r.status,
      text,
      json: (() => {
        try {
          return JSON.parse(text);
        } catch {
          return null;
        }
      })() as any,
      headers: r.headers,
    };
  };
  /** Runs the virtual clock while an HTTP request is in flight. */
  const during = async <T>(p: Promise<T>, maxMs = 10_000): Promise<T> => {
    let done = false;
    void p.finally(() => {
      done = true;
    });
    await runUntil(clock, () => done, maxMs);
    return p;
  };
  return { clock, link, shard, peer, peerApi, faults, events, server, base, req, during, impair };
}

describe('the JSON API', () => {
  test('stats without and with rows; the connection a peer opened is a row', async () => {
    const r = await rig();
    r.shard.api
      .createServer((s) => {
        s.on('data', () => {});
      })
      .listen(7000);
    const c = r.peerApi.connect({ host: STACK, port: 7000 }) as FsSocket;
    let up = false;
    c.on('connect', () => {
      up = true;
    });
    expect(await runUntil(r.clock, () => up && [...r.shard.stack.tcp.table.all()].length === 1, 1000)).toBe(true);
    const plain = await r.req('GET', '/api/stats');
    expect(plain.status).toBe(200);
    expect(plain.json.states).toEqual({ ESTABLISHED: 1 });
    expect(plain.json.counters.TcpPassiveOpens).toBe(1);
    expect(plain.json.connections).toEqual([]);
    const rows = await r.req('GET', '/api/stats?limit=10');
    expect(rows.json.connections).toHaveLength(1);
    expect(rows.json.connections[0]).toMatchObject({ state: 'ESTABLISHED', local: `${STACK}:7000`, peer: `${PEER}:${c.localPort}` });
    expect(rows.json.rows).toMatchObject({ matched: 1, sent: 1 });
    const filtered = await r.req('GET', '/api/stats?state=syn-sent');
    expect(filtered.json.connections).toEqual([]);
    c.destroy();
  });

  test('faults: the catalogue with live modes; PUT switches one, and the socket handlers see the same configuration', async () => {
    const r = await rig();
    const before = await r.req('GET', '/api/faults');
    expect(before.status).toBe(200);
    const kb = before.json.faults.find((f: any) => f.id === 'kb297040');
    expect(kb).toMatchObject({ alias: 'conntable-hang', mode: 'hotfixed', modes: expect.arrayContaining(['buggy', 'hotfixed']) });
    expect(before.json.params.find((p: any) => p.name === 'SynAttackProtect')).toMatchObject({ value: expect.any(Number) });
    const put = await r.req('PUT', '/api/faults/kb297040', { mode: 'buggy' });
    expect(put.status).toBe(200);
    expect(put.json).toMatchObject({ id: 'kb297040', mode: 'buggy', previous: 'hotfixed' });
    expect(r.faults.modes.kb297040).toBe('buggy');
    const param = await r.req('PUT', '/api/params/TcpInitialRttMs', { value: 150 });
    expect(param.json).toMatchObject({ name: 'TcpInitialRttMs', value: 150 });
    expect(r.faults.params.TcpInitialRttMs).toBe(150);
  });

  test('bad requests: one line of JSON with a 4xx status that says what is valid', async () => {
    const r = await rig();
    const cases: [string, string, unknown, number, RegExp][] = [
      ['PUT', '/api/faults/kb297040', { mode: 'bogus' }, 400, /bogus/],
      ['PUT', '/api/faults/kb297040', '{not json', 400, /not JSON/],
      ['PUT', '/api/faults/kb297040', '[1,2]', 400, /JSON object/],
      ['PUT', '/api/params/TcpInitialRttMs', { value: -5 }, 400, /TcpInitialRttMs/],
      ['POST', '/api/connect', { host: NOWHERE }, 400, /"port" is required/],
      ['GET', '/api/stats?limit=-3', undefined, 400, /"limit"/],
      ['POST', '/api/traces', { conn: 'not-a-conn' }, 400, /PEER:PORT/],
      ['POST', '/api/impairments', { spec: 'out flood 9000%' }, 400, /./],
      ['GET', '/api/nope', undefined, 404, /GET \/api lists them/],
      ['DELETE', '/api/stats', undefined, 405, /answers GET/],
      ['GET', '/api/neigh', undefined, 501, /--tap/],
    ];
    for (const [method, p, body, status, re] of cases) {
      const res = await r.req(method, p, body);
      expect(res.status, `${method} ${p}: ${res.text}`).toBe(status);
      expect(res.text.trimEnd().split('\n')).toHaveLength(1);
      expect(res.json.error.message, `${method} ${p}`).toMatch(re);
      expect(res.json.error.code).toMatch(/^E[A-Z]+$/);
    }
  });

  test('a token, when set, is required on /api and /metrics (401 with one line), accepted as Bearer or ?token=; the page is not', async () => {
    const token = 'abcdefghijklmnop0123';
    const r = await rig({ token });
    const none = await r.req('GET', '/api/stats');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Bearer');
    expect(none.text.trimEnd().split('\n')).toHaveLength(1);
    expect(none.json.error).toMatchObject({ code: 'EAUTH', message: expect.stringContaining('token is required') });
    expect((await r.req('GET', '/metrics')).status).toBe(401);
    expect((await r.req('GET', '/api/stats', undefined, { authorization: 'Bearer wrongwrongwrongwrong' })).status).toBe(401);
    expect((await r.req('GET', '/api/stats', undefined, { authorization: `Bearer ${token}` })).status).toBe(200);
    expect((await r.req('GET', `/api/stats?token=${token}`)).status).toBe(200);
  });

  test('impairments: add, list, delete through the API', async () => {
    const r = await rig();
    const add = await r.req('POST', '/api/impairments', { spec: 'out loss 5%' });
    expect(add.status, add.text).toBe(200);
    const list = await r.req('GET', '/api/impairments');
    expect(list.json.impairments).toHaveLength(1);
    const id = list.json.impairments[0].id;
    expect((await r.req('DELETE', `/api/impairments/${id}`)).status).toBe(200);
    expect((await r.req('GET', '/api/impairments')).json.impairments).toHaveLength(0);
  });

  test('the event stream: recent events first, then each new one as it happens', async () => {
    const r = await rig();
    r.events.emit({ kind: 'note', message: 'before the stream' } as Parameters<EventLog['emit']>[0]);
    const ac = new AbortController();
    const res = await fetch(`${r.base}/api/events/stream`, { signal: ac.signal });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.getReader();
    let text = '';
    const until = async (re: RegExp) => {
      while (!re.test(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
      return re.test(text);
    };
    expect(await until(/before the stream/)).toBe(true);
    r.events.emit({ fault: 'kb903927', kind: 'note', message: 'after the stream opened' } as Parameters<EventLog['emit']>[0]);
    expect(await until(/data: .*after the stream opened/)).toBe(true);
    ac.abort();
  });
});

/** Every sample of a family, as { labels, value }. */
function samples(fams: PromFamily[], name: string) {
  const f = fams.find((x) => x.name === name);
  return (f?.metrics ?? []).map((m) => ({ labels: m.labels ?? {}, value: Number(m.value) }));
}

describe('/metrics', () => {
  test('parses as Prometheus text: nstat counters, connection and listener gauges, fault modes as labels, host routes, memory', async () => {
    const r = await rig({ faults: ['kb297040=buggy'] });
    r.shard.api.createServer(() => {}).listen(7000);
    const c = r.peerApi.connect({ host: STACK, port: 7000 }) as FsSocket;
    let up = false;
    c.on('connect', () => {
      up = true;
    });
    expect(await runUntil(r.clock, () => up && [...r.shard.stack.tcp.table.all()].length === 1, 1000)).toBe(true);
    const res = await r.req('GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain; version=0.0.4');
    const fams = parsePrometheus(res.text);
    const byName = new Map(fams.map((f) => [f.name, f]));
    expect(byName.get('faultstack_TcpPassiveOpens')?.type).toBe('COUNTER');
    expect(samples(fams, 'faultstack_TcpPassiveOpens')[0]!.value).toBe(1);
    expect(byName.get('faultstack_TcpCurrEstab')?.type).toBe('GAUGE');
    expect(samples(fams, 'faultstack_TcpInSegs')[0]!.value).toBe(r.shard.stack.counters.TcpInSegs);
    expect(samples(fams, 'faultstack_connections')).toContainEqual({ labels: { state: 'ESTABLISHED' }, value: 1 });
    expect(samples(fams, 'faultstack_listener_accept_queue')).toContainEqual({ labels: { port: '7000' }, value: 0 }); // accepted at once
    expect(samples(fams, 'faultstack_listener_backlog').find((s) => s.labels.port === '7000')!.value).toBeGreaterThan(0);
    expect(samples(fams, 'faultstack_fault_mode')).toContainEqual({ labels: { fault: 'kb297040', mode: 'buggy' }, value: 1 });
    expect(samples(fams, 'faultstack_fault_mode')).toContainEqual({ labels: { fault: 'kb297040', mode: 'hotfixed' }, value: 0 });
    expect(samples(fams, 'faultstack_lock_held')).toEqual([{ labels: { lock: 'tcp-connection-table' }, value: 0 }]);
    expect(samples(fams, 'faultstack_host_routes')[0]!.value).toBe(0);
    expect(samples(fams, 'faultstack_max_icmp_host_routes')[0]!.value).toBeGreaterThan(0);
    expect(samples(fams, 'faultstack_memory_bytes').find((s) => s.labels.kind === 'rss')!.value).toBeGreaterThan(1e6);
    expect(samples(fams, 'faultstack_param').find((s) => s.labels.name === 'SynAttackProtect')).toBeDefined();
    // Every line is a comment or a sample the format allows.
    for (const line of res.text.trimEnd().split('\n'))
      expect(line).toMatch(/^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+]+|NaN)$/);
    c.destroy();
  });
});

describe('traces through the API', () => {
  test('a transfer from the stack over a lossy link: the trace has the retransmissions the stack counted, at sequence numbers sent before', async () => {
    const r = await rig();
    // The peer's sink; every 7th data segment from the stack is lost once.
    const got: Buffer[] = [];
    r.peerApi
      .createServer((s) => {
        s.on('data', (d: Buffer) => got.push(d));
        s.on('end', () => s.end());
      })
      .listen(9000);
    const seen = new Set<number>();
    let n = 0;
    r.link.dropFilter = (pkt, dir) => {
      if (dir !== 'a->b' || pkt[9] !== 6) return false;
      const ihl = (pkt[0]! & 15) * 4,
        doff = (pkt[ihl + 12]! >> 4) * 4;
      if (pkt.length - ihl - doff === 0) return false;
      const seq = pkt.readUInt32BE(ihl + 4);
      if (seen.has(seq)) return false;
      seen.add(seq);
      return ++n % 7 === 0;
    };
    const data = testData(300_000);
    const s = r.shard.api.connect({ host: PEER, port: 9000 }) as FsSocket;
    const sink = watch(s);
    const start = await r.during(r.req('POST', '/api/traces', { conn: `${PEER}:9000` }));
    expect(start.status, start.text).toBe(200);
    expect(start.json).toMatchObject({ started: true, conn: `${STACK}:${s.localPort}-${PEER}:9000` });
    s.end(data);
    expect(await runUntil(r.clock, () => sink.closed, 60_000)).toBe(true);
    expect(Buffer.concat(got).equals(data)).toBe(true);
    const t = await r.req('GET', `/api/traces/${encodeURIComponent(`${PEER}:9000`)}`);
    expect(t.status, t.text).toBe(200);
    const retrans = t.json.segments.filter((g: any) => g.retrans);
    const counted = r.shard.stack.counters.TcpRetransSegs;
    expect(counted).toBeGreaterThan(0);
    expect(t.json.retransmissions).toBe(retrans.length);
    expect(retrans.length).toBeGreaterThan(0);
    // Each retransmission covers sequence numbers that an earlier segment carried.
    for (const g of retrans) expect(t.json.segments.some((e: any) => !e.retrans && e.t <= g.t && e.seq <= g.seq && g.seq < e.seq + e.len)).toBe(true);
    // SND.UNA only moves forward and ends past the data and the FIN; cwnd fell at least once (a loss).
    const una = t.json.samples.map((x: any) => x.una);
    for (let i = 1; i < una.length; i++) expect(una[i]).toBeGreaterThanOrEqual(una[i - 1]);
    expect(una[una.length - 1]).toBe(1 + data.length + 1);
    const cwnd = t.json.samples.map((x: any) => x.cwnd);
    expect(cwnd.some((v: number, i: number) => i > 0 && v < cwnd[i - 1])).toBe(true);
    expect(t.json.samples.every((x: any) => x.rto >= 200 && x.inflight >= 0)).toBe(true);
    // The stack closed first: its end waits in TIME-WAIT, still traced.
    expect(t.json.state).toBe('TIME-WAIT');
    expect((await r.req('GET', '/api/traces')).json.traces[0]).toMatchObject({ conn: start.json.conn, retransmissions: retrans.length });
    // Stopped: the record stays, the connection has no observer any more.
    expect((await r.req('DELETE', `/api/traces/${encodeURIComponent(start.json.conn)}`)).json).toMatchObject({ stopped: true });
    expect([...r.shard.stack.tcp.table.all()].filter((c) => c.remotePort === 9000).map((c) => c.observer)).toEqual([null]);
    expect((await r.req('GET', `/api/traces/${encodeURIComponent(start.json.conn)}`)).json).toMatchObject({ active: false, retransmissions: retrans.length });
  });

  test('a trace of a connection that does not exist is a 404 that says how to find one', async () => {
    const r = await rig();
    const res = await r.req('POST', '/api/traces', { conn: `${PEER}:1234` });
    expect(res.status).toBe(404);
    expect(res.json.error.message).toContain('stats --all');
  });
});

describe('KB 297040 through the API', () => {
  test('buggy: a connect to an address that does not answer leaves the lock held (stats says who), unlock releases it', async () => {
    const r = await rig({
      profile: 'nt4-sp6a',
      faults: ['kb297040=buggy'],
      params: ['SynAttackProtect=1', 'TcpInitialRttMs=100', 'TcpMaxConnectRetransmissions=1'],
    });
    r.link.dropFilter = (pkt, dir) => dir === 'a->b' && pkt.readUInt32BE(16) === NOWHERE_IP;
    const connect = r.req('POST', '/api/connect', { host: NOWHERE, port: 80, timeoutMs: 60_000 });
    expect(await runUntil(r.clock, () => r.shard.installed.faults.kb297040.lock.held, 5_000)).toBe(true);
    const st = await r.req('GET', '/api/stats');
    expect(st.json.lock).toMatchObject({ held: true, holder: expect.stringContaining(`${NOWHERE}:80`) });
    const u = await r.req('POST', '/api/unlock');
    expect(u.json).toMatchObject({ released: true, holder: expect.stringContaining(NOWHERE) });
    const c = await r.during(connect);
    expect(c.status).toBe(504);
    expect(c.json.error.code).toBe('ETIMEDOUT');
    expect((await r.req('GET', '/api/stats')).json.lock.held).toBe(false);
  });
});

describe('queryArgs', () => {
  test('numbers, booleans and strings; the token is not an argument', () => {
    expect(queryArgs(new URL('http://x/?limit=5&all=true&gc=false&state=syn-recv&token=t&peer=198.18.0.1'))).toEqual({
      limit: 5,
      all: true,
      gc: false,
      state: 'syn-recv',
      peer: '198.18.0.1',
    });
  });
});
