/**
 * `faultstack neigh` and the Ethernet part of `faultstack stats`: rendering (as `ip neigh`
 * prints the kernel's table) and the command against a live control server, including the
 * one-line error a TUN stack answers with.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ControlServer } from '../../stack/control/server';
import { CodedError } from '../../stack/util/errors';
import { neighLine, renderNeigh } from '../../bin/cli/commands/neigh';
import { renderStats } from '../../bin/cli/commands/stats';
import { EthernetSegment } from '../../drivers/memory-ethernet';
import { EthernetInterface } from '../../stack/iface/ethernet';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { neighReply } from '../../stack/runtime/ethernet';
import { VirtualClock } from '../../drivers/memory';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-neigh-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('neigh output', () => {
  it('reads like ip neigh: lladdr when known, two spaces before a state without one', () => {
    expect(neighLine({ dst: '198.18.0.1', dev: 't0', lladdr: '52:54:00:12:34:56', state: 'REACHABLE' })).toBe(
      '198.18.0.1 dev t0 lladdr 52:54:00:12:34:56 REACHABLE',
    );
    expect(neighLine({ dst: '198.18.0.77', dev: 't0', lladdr: null, state: 'FAILED' })).toBe('198.18.0.77 dev t0  FAILED');
    expect(
      neighLine({ dst: '198.18.0.5', dev: 't0', state: 'INCOMPLETE', probes: 2, queued: 3, usedAgoMs: 1500, confirmedAgoMs: null, updatedAgoMs: 1500 }, true),
    ).toBe('198.18.0.5 dev t0  used 2/-/2 probes 2 queued 3 INCOMPLETE');
    expect(renderNeigh({ dev: 't0', entries: [] })).toBe('');
  });

  it("the runtime's reply from a real table", () => {
    const clock = new VirtualClock(1000);
    const seg = new EthernetSegment({ clock });
    const eth = new EthernetInterface({
      lower: seg.port('p'),
      scheduler: new VirtualScheduler(clock),
      mac: 0x0200c6120002,
      address: 0xc6120002,
      prefix: 24,
      random: () => 0.5,
    });
    eth.neighbours.learn(0xc6120001, 0x525400123456, { reply: false, forUs: true, gratuitous: false }, 1000);
    const r = neighReply(eth, 't0', 3000);
    expect(r).toMatchObject({ dev: 't0', mac: '02:00:c6:12:00:02', reachableTimeMs: 30_000 });
    expect(r.entries).toEqual([
      {
        dst: '198.18.0.1',
        dev: 't0',
        lladdr: '52:54:00:12:34:56',
        state: 'STALE',
        probes: 0,
        queued: 0,
        confirmedAgoMs: null,
        usedAgoMs: 2000,
        updatedAgoMs: 2000,
      },
    ]);
    expect(renderNeigh(r)).toBe('198.18.0.1 dev t0 lladdr 52:54:00:12:34:56 STALE\n');
    expect(r.counters).toMatchObject({ allocs: 1 });
  });

  it('stats shows the Ethernet part: MAC, bridge, the non-zero link counters', () => {
    const text = renderStats({
      tun: 't0',
      link: {
        mac: '02:00:c6:12:00:02',
        sourceMac: '02:01:c6:12:00:0a',
        bridge: 'br0',
        gateway: '198.18.0.254',
        counters: { EthInFrames: 12, EthInRunts: 0, ArpOutReplies: 3 },
      },
    });
    expect(text).toContain(
      'Ethernet (mac 02:00:c6:12:00:02, sending as 02:01:c6:12:00:0a, bridge br0, gateway 198.18.0.254; `faultstack neigh` shows the ARP table):\n',
    );
    expect(text).toMatch(/ {2}EthInFrames +12\n {2}ArpOutReplies +3\n/);
    expect(text).not.toContain('EthInRunts');
  });
});

describe('neigh against a live control server', () => {
  async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
    const mod = await import('../../bin/cli/commands/neigh');
    let out = '';
    let err = '';
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
      code = await mod.run(argv);
    } catch (x) {
      const { report } = await import('../../bin/cli/main');
      code = report(x);
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
    return { code, out, err };
  }

  let tap: ControlServer;
  let tun: ControlServer;
  beforeAll(async () => {
    tap = await ControlServer.start(path.join(tmp, 'tap.sock'), {
      neigh: () => ({
        dev: 't0',
        mac: '02:00:c6:12:00:02',
        entries: [
          { dst: '198.18.0.1', lladdr: '52:54:00:12:34:56', state: 'DELAY' },
          { dst: '198.18.0.9', lladdr: null, state: 'INCOMPLETE', probes: 1 },
        ],
      }),
    });
    tun = await ControlServer.start(path.join(tmp, 'tun.sock'), {
      neigh: () => {
        throw new CodedError('ENOTSUP', 'the stack runs on TUN device fs0: no link layer, no neighbours (start it with --tap)');
      },
    });
  });
  afterAll(async () => {
    await tap.close();
    await tun.close();
  });

  it('prints the table, or the reply as JSON', async () => {
    expect(await cli(['--control', path.join(tmp, 'tap.sock')])).toEqual({
      code: 0,
      err: '',
      out: '198.18.0.1 dev t0 lladdr 52:54:00:12:34:56 DELAY\n198.18.0.9 dev t0  INCOMPLETE\n',
    });
    const j = await cli(['--control', path.join(tmp, 'tap.sock'), '--json']);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.out)).toMatchObject({ mac: '02:00:c6:12:00:02', entries: [{ dst: '198.18.0.1' }, { dst: '198.18.0.9' }] });
  });

  it('a TUN stack: one line, exit 1', async () => {
    expect(await cli(['--control', path.join(tmp, 'tun.sock')])).toEqual({
      code: 1,
      out: '',
      err: 'faultstack neigh: the stack runs on TUN device fs0: no link layer, no neighbours (start it with --tap)\n',
    });
  });

  it('a bad flag: one line, exit 2', async () => {
    const r = await cli(['--nope']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^faultstack neigh: unknown flag --nope; valid flags: --control, --json, --stats, --help\n$/);
  });
});
