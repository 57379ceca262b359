/**
 * The runtime's lifecycle and its control plane, which one-thread and sharded runs
 * share (stack/runtime/lifecycle.ts, stack/runtime/control.ts): shutdown undoes every
 * step once, last first, past a step that fails; stats, fault.set, param.set, unlock
 * and routes merge what each stack port answers, and a sharded reply says which shard
 * each part came from while a one-thread reply has no shard fields at all.
 */
import { describe, expect, test } from 'vitest';
import { Lifecycle } from '../../stack/runtime/lifecycle';
import { controlHandlers, readyLine, type ControlView, type ShardPort, type ShardStats, type UnlockReply } from '../../stack/runtime/control';
import type { ConnectionRow } from '../../stack/runtime/stats';
import type { StatsQuery } from '../../stack/control/protocol';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventLog } from '../../stack/faults/events';
import type { TunDevice } from '../../drivers/tun/index';
import type { RuntimeOptions } from '../../stack/runtime/options';
import type { ControlContext } from '../../stack/control/server';

describe('Lifecycle', () => {
  test('undoes steps last first, once, and past a failing step', async () => {
    const life = new Lifecycle();
    const done: string[] = [];
    life.defer(() => {
      done.push('device');
    });
    life.defer(() => {
      throw new Error('capture already closed');
    });
    life.defer(async () => {
      await new Promise((r) => setTimeout(r, 5));
      done.push('stack');
    });
    life.defer(() => {
      done.push('control');
    });
    expect(life.shuttingDown).toBe(false);
    const a = life.shutdown();
    const b = life.shutdown();
    expect(life.shuttingDown).toBe(true);
    await Promise.all([a, b, life.closed]);
    expect(done).toEqual(['control', 'stack', 'device']);
    await life.shutdown();
    expect(done).toHaveLength(3);
  });
});

function row(port: number): ConnectionRow {
  return { state: 'ESTABLISHED', recvQ: 0, sendQ: 0, local: `198.18.0.2:${port}`, peer: '198.18.0.1:40000' };
}

/** A stack port with `n` connections on ports base..base+n-1 and a lock that may be held. */
class FakePort implements ShardPort {
  faultCalls: [string, string][] = [];
  paramCalls: [string, string | number][] = [];
  constructor(
    readonly index: number,
    private readonly n: number,
    private readonly base: number,
    private readonly held = false,
  ) {}
  async stats(_args: Record<string, unknown>, q: StatsQuery, send: (rows: ConnectionRow[]) => boolean): Promise<ShardStats> {
    const rows = Array.from({ length: this.n }, (_, i) => row(this.base + i)).slice(0, q.limit === Infinity ? undefined : q.limit);
    if (q.limit > 0 && rows.length) send(rows);
    return {
      counters: { TcpPassiveOpens: this.n, TcpCurrEstab: this.n },
      device: { rxPackets: 10 * this.n },
      tsoSegments: 44,
      txChecksumOffload: true,
      connectionCount: this.n,
      states: { ESTABLISHED: this.n },
      listeners: [{ port: 7, backlog: 128 }],
      lock: { name: 'tcp-connection-table', held: this.held, ...(this.held ? { holder: `shard ${this.index}` } : {}) },
      leak: { connections: 0, bytes: 0, resets: this.index, freed: 0 },
      matched: this.n,
      heapUsedAfterGc: 1000,
      arrayBuffersAfterGc: 100,
    };
  }
  async setFault(id: string, mode: string): Promise<void> {
    this.faultCalls.push([id, mode]);
  }
  async setParam(name: string, value: string | number): Promise<void> {
    this.paramCalls.push([name, value]);
  }
  async connect(): Promise<unknown> {
    return { connected: true, shard: this.index };
  }
  async unlock(): Promise<UnlockReply> {
    return this.held ? { released: true, holder: `shard ${this.index}`, heldMs: 5 } : { released: false };
  }
  async routes(): Promise<unknown> {
    return [{ destination: `198.18.9.${this.index}` }];
  }
  async trace(): Promise<unknown> {
    return null;
  }
}

function view(ports: FakePort[], sharded: boolean): ControlView {
  const tun = {
    name: 'fsx0',
    mtu: 1500,
    created: true,
    vnetHdr: true,
    queueCount: sharded ? 0 : 1,
    offloads: { names: ['csum', 'tso4'] },
  } as unknown as TunDevice;
  const opts = {
    tun: 'fsx0',
    addr: { addr: 0xc6120002, prefix: 24 },
    hostAddr: { addr: 0xc6120001, prefix: 24 },
    hostAddrDefaulted: false,
    mtu: 1500,
    services: ['echo'],
    control: '/tmp/x.sock',
    faults: [],
    params: [],
    offloads: true,
    queues: ports.length,
    shards: sharded,
    cc: 'cubic',
    json: false,
  } as RuntimeOptions;
  return {
    opts,
    tun,
    faults: buildFaultConfig({ faults: [], params: [] }),
    events: new EventLog(),
    startedAt: Date.now(),
    ports,
    sharded,
    link: null,
    now: () => 0,
  };
}

function ctx(): ControlContext & { lines: unknown[] } {
  const lines: unknown[] = [];
  return {
    cmd: 'stats',
    id: 1,
    lines,
    closed: false,
    stream: (e) => {
      lines.push(e);
      return true;
    },
    onClose: () => {},
    untilClosed: () => new Promise(() => {}),
  };
}

type Rows = { rows: (ConnectionRow & { shard?: number })[] };

describe('control plane over stack ports', () => {
  test("one thread: the stack's own figures, no shard fields", async () => {
    const v = view([new FakePort(0, 3, 1000)], false);
    const h = controlHandlers(v);
    const c = ctx();
    const st = (await h.stats!({ all: true, gc: true }, c)) as Record<string, unknown>;
    expect(st.counters).toEqual({ TcpPassiveOpens: 3, TcpCurrEstab: 3 });
    expect(st.device).toEqual({ rxPackets: 30 });
    expect(st.connectionCount).toBe(3);
    expect(st.listeners).toEqual([{ port: 7, backlog: 128 }]);
    expect(st).not.toHaveProperty('shards');
    expect(st.rows).toEqual({ matched: 3, sent: 3, limit: 'all' });
    const rows = (c.lines as Rows[]).flatMap((l) => l.rows);
    expect(rows.map((r) => r.local)).toEqual(['198.18.0.2:1000', '198.18.0.2:1001', '198.18.0.2:1002']);
    expect(rows.every((r) => !('shard' in r))).toBe(true);
    expect(st.heapUsedAfterGc as number).toBeGreaterThan(1000); // this thread's heap plus what the port reported
    expect(readyLine(v)).toMatch(
      /^faultstack ready: 198\.18\.0\.2\/24 on fsx0 \(kernel side 198\.18\.0\.1\/24, mtu 1500, offloads csum,tso4\), services echo, control \/tmp\/x\.sock$/,
    );
    expect(await h.routes!({}, c)).toEqual([{ destination: '198.18.9.0' }]);
    expect(await h.unlock!({}, c)).toEqual({ released: false });
    await expect(async () => h.neigh!({}, c)).rejects.toThrow(/no link layer/);
  });

  test('sharded: sums, concatenates, tags every part with its shard, and keeps the limit over all shards', async () => {
    const ports = [new FakePort(0, 3, 1000), new FakePort(1, 4, 2000, true)];
    const v = view(ports, true);
    const h = controlHandlers(v);
    const c = ctx();
    const st = (await h.stats!({ limit: 5 }, c)) as Record<string, unknown>;
    expect(st.counters).toEqual({ TcpPassiveOpens: 7, TcpCurrEstab: 7 });
    expect(st.device).toEqual({ rxPackets: 70, queues: 2 });
    expect(st.states).toEqual({ ESTABLISHED: 7 });
    expect(st.leak).toEqual({ connections: 0, bytes: 0, resets: 1, freed: 0 });
    expect(st.listeners).toEqual([
      { port: 7, backlog: 128, shard: 0 },
      { port: 7, backlog: 128, shard: 1 },
    ]);
    expect((st.lock as { held: boolean; holder: string }).holder).toBe('shard 1');
    expect((st.shards as { shard: number; connections: number }[]).map((s) => [s.shard, s.connections])).toEqual([
      [0, 3],
      [1, 4],
    ]);
    expect(st.rows).toEqual({ matched: 7, sent: 5, limit: 5 });
    const rows = (c.lines as Rows[]).flatMap((l) => l.rows);
    expect(rows).toHaveLength(5);
    expect(rows.every((r) => r.shard === (r.local.endsWith(':1000') || r.local.endsWith(':1001') || r.local.endsWith(':1002') ? 0 : 1))).toBe(true);
    expect(readyLine(v)).toMatch(/\), 2 shards, services echo/);
  });

  test('sharded: a fault or parameter change is validated once and reaches every shard', async () => {
    const ports = [new FakePort(0, 0, 0), new FakePort(1, 0, 0, true)];
    const h = controlHandlers(view(ports, true));
    const c = ctx();
    expect(await h['fault.set']!({ id: 'kb297040', mode: 'buggy' }, c)).toEqual({ id: 'kb297040', mode: 'buggy', previous: 'hotfixed', shards: 2 });
    for (const p of ports) expect(p.faultCalls).toEqual([['kb297040', 'buggy']]);
    await expect(h['fault.set']!({ id: 'kb297040', mode: 'bogus' }, c) as Promise<unknown>).rejects.toThrow(/bogus/);
    for (const p of ports) expect(p.faultCalls).toHaveLength(1);
    const r = (await h['param.set']!({ name: 'synattackprotect', value: '1' }, c)) as Record<string, unknown>;
    expect(r).toMatchObject({ name: 'SynAttackProtect', value: 1, previous: 2, shards: 2 });
    for (const p of ports) expect(p.paramCalls).toEqual([['SynAttackProtect', '1']]);
    const u = (await h.unlock!({}, c)) as Record<string, unknown>;
    expect(u).toMatchObject({ released: true, holder: 'shard 1' });
    expect(u.shards).toHaveLength(2);
    expect(await h.routes!({}, c)).toEqual({ routes: [{ destination: '198.18.9.0' }], note: 'shard 0 of 2: every shard keeps its own host routes' });
    expect(await h.connect!({ host: '198.18.0.1', port: 7 }, c)).toEqual({ connected: true, shard: 0 });
  });
});
