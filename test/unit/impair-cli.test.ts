/**
 * `faultstack impair add|list|del|clear` against a live control server whose handlers
 * are the runtime's (stack/runtime/impair-control.ts) over a real ImpairDevice and toxic
 * registry, and `run --impair` / `--pcap-wire` flag checks.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ControlServer } from '../../stack/control/server';
import { ImpairDevice } from '../../stack/impair/device';
import { Impairments } from '../../stack/impair/registry';
import { ToxicRegistry } from '../../stack/impair/toxics';
import { VirtualClock } from '../../drivers/memory';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { impairHandlers, impairUnavailable } from '../../stack/runtime/impair-control';
import { EventLog } from '../../stack/faults/events';
import * as impairCmd from '../../bin/cli/commands/impair';
import { buildRunOptions } from '../../bin/cli/commands/run';
import type { Device, OffloadMeta, ReceiveHandler } from '../../drivers/device';
import { tcp } from './helpers/packets';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-impcli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

class Sink implements Device {
  readonly name = 'sink';
  readonly mtu = 1500;
  onReceive: ReceiveHandler | null = null;
  sent = 0;
  send(_p: Buffer, _m?: OffloadMeta | null): void {
    this.sent++;
  }
  flush(): void {}
  close(): void {}
  stats(): Record<string, number> {
    return {};
  }
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '',
    err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
    out += String(c);
    return true;
  });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
    err += String(c);
    return true;
  });
  let code: number;
  try {
    code = await impairCmd.run(argv);
  } catch (x) {
    const { report } = await import('../../bin/cli/main');
    code = report(x);
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
  return { code, out, err };
}

let server: ControlServer;
let bare: ControlServer;
let dev: ImpairDevice;
let clock: VirtualClock;
const events = new EventLog({ capacity: 100 });

beforeAll(async () => {
  clock = new VirtualClock(0);
  const sched = new VirtualScheduler(clock);
  dev = new ImpairDevice(new Sink(), sched);
  const imp = new Impairments({ device: dev, toxics: new ToxicRegistry(sched), now: () => clock.now, events, newSeed: () => 4242 });
  server = await ControlServer.start(path.join(tmp, 'i.sock'), impairHandlers(imp));
  bare = await ControlServer.start(path.join(tmp, 'b.sock'), impairUnavailable('impairments need one stack thread: run without --shards'));
});
afterAll(async () => {
  await server.close();
  await bare.close();
});

const C = () => ['--control', server.path];

describe('faultstack impair', () => {
  it("add: the spec's own flags pass through, the canonical words and the seed come back", async () => {
    const r = await cli(['add', 'out', '--dport', '80', 'loss', '3%', '25%', 'delay', '20ms', '5ms', 'distribution', 'normal', ...C()]);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toBe('impairment 1 added: out --dport 80 delay 20ms 5ms distribution normal loss 3% 25% seed 4242\n');
    const j = await cli(['add', `--control=${server.path}`, 'downstream', '--port', '80', 'latency', 'latency=100', '--json']);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.out)).toMatchObject({ id: 2, kind: 'toxic', direction: 'downstream', spec: 'downstream --port 80 latency latency=100 seed 4242' });
  });

  it('list: packet impairments and toxics with their counters, and --json', async () => {
    for (let i = 0; i < 3; i++) dev.send(tcp({ id: i, dport: 80 }), null);
    dev.send(tcp({ id: 9, dport: 22 }), null);
    const r = await cli(['list', ...C()]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /packet impairments \(1\):\n +ID +MATCHED +DROPPED +DELAYED +REORDERED +DUPLICATED +CORRUPTED +RATE-QUEUED +QUEUE-DROPS +QUEUED +SPEC\n +1 +3 +\d+ +\d+ +0 +0 +0 +0 +0 +\d+ +out --dport 80/,
    );
    expect(r.out).toMatch(
      /connection toxics \(1\):\n +ID +CONNECTIONS +AFFECTED +BYTES +DELAYED +DROPPED +CLOSED +RESETS +SPEC\n +2 +0 +0 +0 +0 +0 +0 +0 +downstream --port 80 latency latency=100 seed 4242/,
    );
    const j = JSON.parse((await cli(['list', '--json', ...C()])).out);
    expect(j.impairments.map((x: { id: number }) => x.id)).toEqual([1, 2]);
    expect(j.impairments[0].counters.matched).toBe(3);
  });

  it('del and clear, with the counters at removal; events for each', async () => {
    const d = await cli(['del', '1', ...C()]);
    expect(d.code).toBe(0);
    expect(d.out).toMatch(
      /^impairment 1 removed: out --dport 80 .* seed 4242 \(matched 3, dropped \d+, delayed \d+, reordered 0, duplicated 0, corrupted 0, rate-queued 0, queue-drops 0, queued 0\)\n$/,
    );
    expect(d.out).toMatch(/delayed 3,/);
    const c = await cli(['clear', ...C()]);
    expect(c.out).toMatch(/^impairment 2 removed: downstream --port 80 latency latency=100 seed 4242 \(connections 0/);
    expect((await cli(['clear', ...C()])).out).toBe('no impairments to remove\n');
    expect((await cli(['list', ...C()])).out).toBe('no impairments\n');
    expect(events.recent(10).map((e) => e.kind)).toEqual(['impairment-added', 'impairment-added', 'impairment-removed', 'impairment-removed']);
  });

  it('bad input: one line, exit 2, before or at the stack', async () => {
    const bad = await cli(['add', 'out', 'lose', '3%', ...C()]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^faultstack impair add: "lose" is not a netem word \(did you mean loss\?\);[^\n]*\n$/);
    const none = await cli(['add', ...C()]);
    expect(none).toMatchObject({ code: 2 });
    expect(none.err).toMatch(/missing SPEC: e.g. faultstack impair add out loss 3% delay 20ms/);
    const id = await cli(['del', '77', ...C()]);
    expect(id.code).toBe(2);
    expect(id.err).toBe('faultstack impair del: no impairment 77: there are none (faultstack impair list)\n');
    const nan = await cli(['del', 'x', ...C()]);
    expect(nan.code).toBe(2);
    expect(nan.err).toMatch(/ID must be an impairment number/);
    const sub = await cli(['remove']);
    expect(sub.code).toBe(2);
    expect(sub.err).toMatch(/unknown subcommand "remove"; valid: add, list, del, clear/);
    const ctl = await cli(['add', 'out', 'loss', '1%', '--control']);
    expect(ctl.code).toBe(2);
  });

  it('a stack without impairments (--shards) says why; exit 1', async () => {
    const r = await cli(['list', '--control', bare.path]);
    expect(r.code).toBe(1);
    expect(r.err).toBe('faultstack impair list: impairments need one stack thread: run without --shards\n');
  });

  it("help shows the grammar in netem's and toxiproxy's words", async () => {
    const h = await cli(['add', '--help']);
    expect(h.code).toBe(0);
    expect(h.out).toContain('loss gemodel P [R [1-H [1-K]]]');
    expect(h.out).toContain('limit_data bytes=B');
  });
});

describe('faultstack run --impair, --pcap-wire', () => {
  const base = ['--addr', '198.18.0.2/24'];
  const msg = (argv: string[]) => {
    try {
      buildRunOptions([...base, ...argv]);
      return '';
    } catch (e) {
      return (e as Error).message;
    }
  };

  it('takes impairments (repeatable) and a wire capture', () => {
    const o = buildRunOptions([
      ...base,
      '--impair',
      'out loss 3%',
      '--impair',
      'downstream --port 80 latency latency=50',
      '--pcap-wire',
      path.join(tmp, 'w.pcap'),
    ])!;
    expect(o.impair).toEqual(['out loss 3%', 'downstream --port 80 latency latency=50']);
    expect(o.pcapWire).toBe(path.join(tmp, 'w.pcap'));
    expect(buildRunOptions(base)!.impair).toEqual([]);
  });

  it('refuses a bad spec, --impair with --shards, and one file for both captures', () => {
    expect(msg(['--impair', 'out loss 3x'])).toBe(
      'faultstack run: --impair is not a valid impairment: loss random "3x": must be a percentage from 0 to 100, e.g. 3% (the % sign is optional), got "out loss 3x"',
    );
    expect(msg(['--queues', '2', '--shards', '--impair', 'out loss 1%'])).toMatch(/--impair needs one stack thread: drop --shards/);
    const f = path.join(tmp, 'same.pcap');
    expect(msg(['--pcap', f, '--pcap-wire', f])).toMatch(/--pcap and --pcap-wire must be different files/);
  });
});
