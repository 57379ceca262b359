/**
 * Per-connection traces (stack/runtime/trace.ts) on the memory driver and the virtual
 * clock: a connection nobody traces has no observer; a trace records only changes, is a
 * bounded ring (the newest kept, the dropped counted), can be armed for a connection
 * that does not exist yet (its first segments recorded), and restores the core's hook
 * when the registry closes. Also the `run --web` flags and `faultstack trace` rendering.
 */
import { describe, expect, test } from 'vitest';
import { B_ADDR, connOf, makePair, runUntil, testData, transfer } from './helpers/pair';
import { TraceRegistry } from '../../stack/runtime/trace';
import { renderTrace } from '../../bin/cli/commands/trace';
import { buildRunOptions } from '../../bin/cli/commands/run';
import { usageMessage } from './helpers/usage';

describe('traces', () => {
  test('a connection nobody traces has no observer; a traced one records changes only, in time order', async () => {
    const p = makePair({}, { tsoSegments: 1 });
    const reg = new TraceRegistry(p.a);
    const data = testData(100_000);
    let started: unknown = null;
    const r = await transfer(p, data, {
      onClient: () => {
        started = reg.start({ conn: `${B_ADDR}:9000` });
      },
    });
    expect(r.done).toBe(true);
    expect(started).toMatchObject({ started: true });
    // B's end was never traced.
    expect([...p.b.tcp.table.all()].every((c) => c.observer === null)).toBe(true);
    const t = reg.get({ conn: `${B_ADDR}:9000` })!;
    // B acknowledges once per receive burst: a few samples per round trip.
    expect(t.samples.length).toBeGreaterThan(5);
    for (let i = 1; i < t.samples.length; i++) {
      const a = t.samples[i - 1]!,
        b = t.samples[i]!;
      expect(b.t).toBeGreaterThanOrEqual(a.t);
      // Each sample differs from the one before in at least one field.
      expect(['una', 'nxt', 'rcvNxt', 'cwnd', 'ssthresh', 'srtt', 'rto', 'inflight'].some((k) => (a as any)[k] !== (b as any)[k])).toBe(true);
    }
    // Every byte went out once (no loss): segments cover 1..data.length+1 (the FIN) without a retransmission.
    expect(t.retransmissions).toBe(0);
    expect(t.segments.reduce((n, s) => n + s.len, 0)).toBe(data.length + 1);
    expect(t.segments[0]!.seq).toBe(1);
    reg.close();
  });

  test('the ring keeps the newest samples and counts what it dropped', async () => {
    const p = makePair({}, { tsoSegments: 1 });
    const reg = new TraceRegistry(p.a);
    await transfer(p, testData(300_000), {
      onClient: () => {
        reg.start({ conn: `${B_ADDR}:9000`, samples: 16 });
      },
    });
    const t = reg.get({ conn: `${B_ADDR}:9000` })!;
    expect(t.segments).toHaveLength(16);
    expect(t.droppedSegments).toBeGreaterThan(150);
    expect(t.samples.length).toBeLessThanOrEqual(16);
    // The newest are kept: the last one ends with the FIN (alone or on the last data), after the 15 before it.
    expect(t.segments[15]!.seq + t.segments[15]!.len).toBe(300_002);
    for (let i = 1; i < 16; i++) expect(t.segments[i]!.seq).toBeGreaterThan(t.segments[i - 1]!.seq);
    reg.close();
  });

  test('armed with wait: the next connection to that peer port is traced from its first data segment; closing restores the hook', async () => {
    const p = makePair({}, { tsoSegments: 1 });
    const before = p.a.tcp.hooks.connectionCreated;
    const reg = new TraceRegistry(p.a);
    expect(reg.start({ conn: `${B_ADDR}:9000` })).toBeNull();
    expect(reg.start({ conn: `${B_ADDR}:9000`, wait: true })).toMatchObject({ pending: true });
    expect(reg.get({ conn: `${B_ADDR}:9000` })).toMatchObject({ pending: true, samples: [] });
    const data = testData(50_000);
    expect((await transfer(p, data)).done).toBe(true);
    const t = reg.get({ conn: `${B_ADDR}:9000` })!;
    expect(t.pending).toBeUndefined();
    expect(t.segments[0]!.seq).toBe(1);
    expect(t.samples[t.samples.length - 1]!.una).toBe(data.length + 2);
    expect(reg.list()).toEqual([expect.objectContaining({ conn: t.conn, segments: t.segments.length })]);
    reg.close();
    expect(p.a.tcp.hooks.connectionCreated).toBe(before);
  });

  test('bad selectors are refused with what is valid', () => {
    const p = makePair({}, { tsoSegments: 1 });
    const reg = new TraceRegistry(p.a);
    for (const bad of ['', 'x', '198.18.0.1', '198.18.0.1:0', '1.2.3.4:5-6', '198.18.0.1:99999']) {
      expect(() => reg.start({ conn: bad }), bad).toThrow(/PEER:PORT|required/);
    }
    expect(() => reg.start({ conn: `${B_ADDR}:1`, samples: 3 })).toThrow(/"samples"/);
    reg.close();
  });

  test('faultstack trace renders the changes as a table', async () => {
    const p = makePair({}, { tsoSegments: 1 });
    const reg = new TraceRegistry(p.a);
    await transfer(p, testData(20_000), {
      onClient: () => {
        reg.start({ conn: `${B_ADDR}:9000` });
      },
    });
    const out = renderTrace(reg.get({ conn: `${B_ADDR}:9000` })!, 3);
    expect(out.split('\n')[0]).toMatch(/^198\.18\.0\.1:\d+-198\.18\.0\.2:9000 \S+ \((tracing|stopped)\): \d+ samples, \d+ segments sent, 0 retransmitted$/);
    expect(out).toContain('snd.una');
    expect(out).toMatch(/the last 3 of \d+/);
    expect(connOf(p.a)).toBeDefined();
    await runUntil(p.clock, () => false, 10);
    reg.close();
  });
});

describe('run --web', () => {
  const base = ['--addr', '198.18.0.2/24'];
  test('[ADDR:]PORT: 127.0.0.1 by default, an IPv4 address, port 0 for any free one; the token goes with it', () => {
    expect(buildRunOptions([...base, '--web', '8080'])!.web).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(buildRunOptions([...base, '--web', 'localhost:0'])!.web).toEqual({ host: '127.0.0.1', port: 0 });
    expect(buildRunOptions([...base, '--web', '198.18.0.1:9090', '--web-token', 'abcdefghijklmnopq'])!.web).toEqual({
      host: '198.18.0.1',
      port: 9090,
      token: 'abcdefghijklmnopq',
    });
    expect(buildRunOptions(base)!.web).toBeUndefined();
  });
  test('bad values: one line saying what is valid', () => {
    expect(usageMessage(() => buildRunOptions([...base, '--web', 'eighty']))).toMatch(/--web .*\[ADDR:\]PORT: a TCP port from 0 to 65535/);
    expect(usageMessage(() => buildRunOptions([...base, '--web', '70000']))).toMatch(/\[ADDR:\]PORT/);
    expect(usageMessage(() => buildRunOptions([...base, '--web', '300.1.1.1:80']))).toMatch(/not an IPv4 address/);
    expect(usageMessage(() => buildRunOptions([...base, '--web', '80', '--web-token', 'short']))).toMatch(/16 to 256 characters/);
    expect(usageMessage(() => buildRunOptions([...base, '--web-token', 'abcdefghijklmnopq']))).toMatch(/--web-token goes with --web/);
  });
});
