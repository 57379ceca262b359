/**
 * Scenario files (lab/scenario/format.ts): what a good file becomes, and for each kind of
 * bad file the one line it gets: file, line and column from the YAML nodes, the field, and
 * what would be valid. Also `--set`, `when:` and `faultstack scenario check` through the
 * CLI's own entry point (exit 2, one line on stderr). Nothing here needs root.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { applies, loadScenario, parseScenario, ScenarioError } from '../../lab/scenario/format';
import { report } from '../../bin/cli/main';
import { parseCompareFault, run } from '../../bin/cli/commands/scenario';
import { renderCompare, renderRun } from '../../lab/scenario/report';
import type { ScenarioRunResult } from '../../lab/scenario/run';

const REPO = path.resolve(__dirname, '..', '..');

/** The one-line error a text gets (fails the test when it parses). */
function errorOf(text: string, set?: string[]): string {
  try {
    parseScenario(text, 'bad.yaml', { set });
  } catch (e) {
    expect(e).toBeInstanceOf(ScenarioError);
    const msg = (e as Error).message;
    expect(msg.split('\n')).toHaveLength(1);
    return msg;
  }
  throw new Error(`parsed without an error:\n${text}`);
}

const GOOD = `
name: good
lab:
  topology: tun
  routers: [{ mtu: 1400 }, { mtu: 1000 }]
stack:
  profile: nt4-sp6a
  services: [echo, http]
  faults: { conntable-hang: buggy }
  params: { synattackprotect: 1, TcpInitialRttMs: 200 }
  impair: out loss 3% delay 20ms
steps:
  - name: base
    iperf3: { duration: 2s, reverse: true }
  - at: 1.5s
    set: kb297040=hotfixed
  - impair: add in loss 1%
  - name: far
    ping: { from: client, count: 3, interval: 100ms }
  - name: lossy
    curl: { path: /bytes/1000 }
expect:
  - { counter: TcpRetransSegs, during: base, min: 0 }
  - { throughput: lossy, baseline: base, max: 0.9 }
  - { step: far, value: received, min: 1, when: { kb297040: buggy } }
  - event: lock-taken-not-released
`;

describe('scenario files: a good file', () => {
  it('becomes a typed scenario: canonical fault and parameter names, times in ms, defaults filled in', () => {
    const s = parseScenario(GOOD, 'good.yaml');
    expect(s.name).toBe('good');
    expect(s.parts).toHaveLength(1);
    const p = s.parts[0]!;
    expect(p.lab).toMatchObject({ topology: 'tun', routers: [{ mtu: 1400 }, { mtu: 1000 }] });
    expect(p.stack).toEqual({
      profile: 'nt4-sp6a',
      services: ['echo', 'http'],
      faults: { kb297040: 'buggy' },
      params: { SynAttackProtect: 1, TcpInitialRttMs: 200 },
      impair: ['out loss 3% delay 20ms'],
      offloads: true,
    });
    expect(p.steps.map((x) => [x.name, x.at, x.action.kind, x.line])).toEqual([
      ['base', undefined, 'iperf3', 13],
      ['set2', 1500, 'set', 15],
      ['impair3', undefined, 'impair', 17],
      ['far', undefined, 'ping', 18],
      ['lossy', undefined, 'curl', 20],
    ]);
    expect(p.steps[0]!.action).toEqual({ kind: 'iperf3', from: 'host', durationMs: 2000, reverse: true, udp: false });
    expect(p.steps[3]!.action).toEqual({ kind: 'ping', from: 'client', count: 3, intervalMs: 100, waitMs: 1000 });
    expect(p.expect.map((x) => [x.kind, x.text, x.min, x.max, x.line])).toEqual([
      ['counter', 'counter TcpRetransSegs', 0, undefined, 23],
      ['throughput', 'throughput lossy / base', undefined, 0.9, 24],
      ['step', 'step far received', 1, undefined, 25],
      ['event', 'event lock-taken-not-released', 1, undefined, 26],
    ]);
  });

  it('an expectation with when: applies only in that mode', () => {
    const p = parseScenario(GOOD, 'good.yaml').parts[0]!;
    const conditional = p.expect[2]!;
    expect(applies(conditional, p)).toBe(true);
    const hot = parseScenario(GOOD, 'good.yaml', { set: ['stack.faults.kb297040=hotfixed'] }).parts[0]!;
    expect(hot.stack.faults.kb297040).toBe('hotfixed');
    expect(applies(hot.expect[2]!, hot)).toBe(false);
    expect(applies(hot.expect[0]!, hot)).toBe(true);
  });

  it('--set changes a field before it is checked, and goes into every part of a file with parts', () => {
    const s = parseScenario(GOOD, 'good.yaml', { set: ['stack.params.TcpInitialRttMs=500', 'lab.routers.0.mtu=1280'] });
    expect(s.parts[0]!.stack.params.TcpInitialRttMs).toBe(500);
    expect(s.parts[0]!.lab.routers[0]!.mtu).toBe(1280);
    const parts = parseScenario('parts:\n  - steps: [{ wait: 1s }]\n  - steps: [{ wait: 2s }]\n', 'p.yaml', { set: ['stack.faults.kb898060=buggy'] });
    expect(parts.parts.map((p) => p.stack.faults)).toEqual([{ kb898060: 'buggy' }, { kb898060: 'buggy' }]);
    expect(parts.parts.map((p) => p.name)).toEqual(['part1', 'part2']);
  });

  it('every shipped scenario file is valid', () => {
    const dir = path.join(REPO, 'scenarios');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThanOrEqual(17);
    for (const f of files) expect(loadScenario(path.join(dir, f)).parts.length).toBeGreaterThan(0);
  });
});

describe('scenario files: each kind of bad file gets one line naming the place, the field and what is valid', () => {
  const cases: [string, string, string][] = [
    ['not YAML', 'steps: [\n  - ping\n', /^bad\.yaml:\d+:\d+: not valid YAML: /.source],
    ['a key twice', 'steps: []\nsteps: []\n', '^bad\\.yaml:2:1: not valid YAML: a key appears twice in one mapping$'],
    ['empty', '', '^bad\\.yaml: is empty: a scenario has at least steps \\(docs/scenarios\\.md\\)$'],
    ['a list at the top', '- ping\n', '^bad\\.yaml:1:1: must be a mapping \\(name, description, lab, stack, steps, expect, or parts\\), got a list$'],
    ['no steps', 'name: x\n', '^bad\\.yaml:1:1: steps: is required here \\(the file has name\\)$'],
    [
      'an unknown top-level field, with a suggestion',
      'stpes: []\n',
      '^bad\\.yaml:1:1: stpes: unknown field \\(did you mean steps\\?\\); valid fields here: name, description, lab, stack, steps, expect$',
    ],
    [
      'an unknown topology',
      'lab: { topology: tunn }\nsteps: []\n',
      '^bad\\.yaml:1:18: lab\\.topology: must be one of tun, tap, pmtu, firewall, nlb, got "tunn" \\(did you mean tun\\?\\)$',
    ],
    [
      'a field of another topology',
      'lab:\n  topology: tun\n  hosts: 3\nsteps: []\n',
      '^bad\\.yaml:3:10: lab\\.hosts: belongs to topology nlb, not tun; tun takes mtu, routers$',
    ],
    [
      'an MTU out of range',
      'lab:\n  routers:\n    - mtu: 100\nsteps: []\n',
      '^bad\\.yaml:3:12: lab\\.routers\\[0\\]\\.mtu: must be an integer from 576 to 9000, got 100$',
    ],
    [
      'an unknown fault',
      'stack:\n  faults: { kb123456: buggy }\nsteps: []\n',
      '^bad\\.yaml:2:13: stack\\.faults\\.kb123456: unknown fault "kb123456"; valid faults: kb903927, kb297040, kb898060, kb972183, kb319381$',
    ],
    [
      'a bad mode',
      'stack:\n  faults: { kb898060: broken }\nsteps: []\n',
      '^bad\\.yaml:2:23: stack\\.faults\\.kb898060: must be one of off, buggy, hotfixed, got "broken"$',
    ],
    [
      'an unknown parameter',
      'stack:\n  params: { MaxIcmpHostRoute: 3 }\nsteps: []\n',
      '^bad\\.yaml:2:13: stack\\.params\\.MaxIcmpHostRoute: unknown parameter "MaxIcmpHostRoute" \\(did you mean MaxIcmpHostRoutes\\?\\); faultstack faults lists them$',
    ],
    [
      'a parameter out of range',
      'stack:\n  params: { SynAttackProtect: 7 }\nsteps: []\n',
      '^bad\\.yaml:2:31: stack\\.params\\.SynAttackProtect: parameter SynAttackProtect: 7 is out of range; valid values are 0\\.\\.2$',
    ],
    [
      'an impairment netem would not take',
      'stack:\n  impair: out loss 300%\nsteps: []\n',
      '^bad\\.yaml:2:11: stack\\.impair\\[0\\]: loss random "300%": must be a percentage from 0 to 100',
    ],
    [
      'an unknown step action',
      'steps:\n  - pnig: { count: 3 }\n',
      '^bad\\.yaml:2:5: steps\\[0\\]\\.pnig: unknown field \\(did you mean ping\\?\\); a step has at, name and one of set, param, impair, wait, unlock, path, ping, curl',
    ],
    [
      'two actions in a step',
      'steps:\n  - ping: {}\n    curl: {}\n',
      '^bad\\.yaml:3:5: steps\\[0\\]\\.curl: a step has one action; this one already has ping \\(make another step\\)$',
    ],
    [
      'a count that is not a number',
      'steps:\n  - ping: { count: many }\n',
      '^bad\\.yaml:2:20: steps\\[0\\]\\.ping\\.count: must be an integer from 1 to 1000, got "many"$',
    ],
    [
      'a time without its unit',
      'steps:\n  - at: 5\n    wait: 1s\n',
      '^bad\\.yaml:2:9: steps\\[0\\]\\.at: must be a time with a unit, e\\.g\\. 500ms, 5s, 1\\.5s, 2m, got "5"$',
    ],
    [
      'an unbounded flood',
      'steps:\n  - hping3: { count: 100 }\n',
      '^bad\\.yaml:2:13: steps\\[0\\]\\.hping3\\.duration: is required here \\(steps\\[0\\]\\.hping3 has count\\)$',
    ],
    [
      'an address outside the lab',
      'steps:\n  - ping: { to: 8.8.8.8 }\n',
      '^bad\\.yaml:2:17: steps\\[0\\]\\.ping\\.to: must be an IPv4 address in 198\\.18\\.0\\.0/15 \\(the lab\'s range\\), got "8\\.8\\.8\\.8"$',
    ],
    [
      'traffic another topology runs',
      'lab: { topology: pmtu }\nsteps:\n  - iperf3: {}\n',
      '^bad\\.yaml:3:5: steps\\[0\\]\\.iperf3: is not traffic of topology pmtu; it runs downloads$',
    ],
    [
      'a client that is not there',
      'steps:\n  - ping: { from: client }\n',
      '^bad\\.yaml:2:19: steps\\[0\\]\\.ping\\.from: client is the namespace behind lab\\.routers, and this lab has none',
    ],
    [
      'an expectation on a step that does not exist',
      'steps:\n  - name: a\n    ping: {}\nexpect:\n  - step: b\n',
      '^bad\\.yaml:5:11: expect\\[0\\]\\.step: no step is named "b"; steps: a$',
    ],
    [
      'a value a step does not report',
      'steps:\n  - name: a\n    ping: {}\nexpect:\n  - { step: a, value: bytes, min: 1 }\n',
      '^bad\\.yaml:5:23: expect\\[0\\]\\.value: step a \\(ping\\) has no "bytes"; it reports ok, sent, received, avgMs$',
    ],
    [
      'a throughput without its baseline',
      'steps:\n  - name: a\n    iperf3: {}\nexpect:\n  - { throughput: a, max: 1 }\n',
      "^bad\\.yaml:5:5: expect\\[0\\]\\.baseline: is required: the step whose throughput is the ratio's denominator",
    ],
    [
      'a throughput of a step that measures none',
      'steps:\n  - name: a\n    iperf3: {}\n  - name: b\n    ping: {}\nexpect:\n  - { throughput: b, baseline: a, max: 1 }\n',
      '^bad\\.yaml:7:19: expect\\[0\\]: step b is ping, which measures no throughput; use iperf3, curl, sha-peer$',
    ],
    [
      'duplicate step names',
      'steps:\n  - { name: a, wait: 1s }\n  - { name: a, wait: 1s }\n',
      '^bad\\.yaml:3:5: steps\\[1\\]\\.name: "a" names an earlier step too; step names are unique$',
    ],
    [
      'an error inside a part names the part',
      'parts:\n  - steps:\n      - wait: soon\n',
      '^bad\\.yaml:3:15: parts\\[0\\]\\.steps\\[0\\]\\.wait: must be a time with a unit',
    ],
    [
      'a bad --set value names the --set',
      'steps: []\n',
      '^bad\\.yaml: stack\\.faults\\.kb898060: must be one of off, buggy, hotfixed, got "maybe" \\(from --set stack\\.faults\\.kb898060=maybe\\)$',
    ],
  ];
  for (const [what, text, pattern] of cases) {
    it(what, () => {
      const set = what.includes('--set') ? ['stack.faults.kb898060=maybe'] : undefined;
      expect(errorOf(text, set)).toMatch(new RegExp(pattern));
    });
  }

  it('a missing file and a directory say so', () => {
    expect(() => loadScenario('/nonexistent/x.yaml')).toThrow(/^\/nonexistent\/x\.yaml: no such file$/);
    expect(() => loadScenario(os.tmpdir())).toThrow(/: is a directory, not a scenario file$/);
  });
});

describe('faultstack scenario (the command line, in process)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-scn-unit-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '',
      err = '';
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
      out += String(s);
      return true;
    });
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => {
      err += String(s);
      return true;
    });
    try {
      let code: number;
      // What main() does with the command's module: run it, and a thrown error is one line and a status.
      try {
        code = await run(args.slice(1));
      } catch (x) {
        code = report(x);
      }
      return { code, out, err };
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
  }

  it('check: a good file is ok, a bad one is exit 2 with one line on stderr', async () => {
    const good = path.join(tmp, 'good.yaml');
    fs.writeFileSync(good, GOOD);
    const ok = await cli(['scenario', 'check', good]);
    expect(ok).toEqual({ code: 0, out: `${good}: ok (tun: 5 steps, 4 expectations)\n`, err: '' });
    const bad = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(bad, 'steps:\n  - ping: { count: 0 }\n');
    const r = await cli(['scenario', 'check', good, bad]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`faultstack: ${bad}:2:20: steps[0].ping.count: must be an integer from 1 to 1000, got 0\n`);
  });

  it('usage errors: unknown subcommand, missing file, bad --fault', async () => {
    expect(await cli(['scenario', 'runn', 'x.yaml'])).toMatchObject({
      code: 2,
      err: 'faultstack scenario: unknown subcommand "runn" (did you mean run?); valid: run, compare, check\n',
    });
    expect(await cli(['scenario', 'run'])).toMatchObject({
      code: 2,
      err: 'faultstack scenario run: missing FILE; usage: faultstack scenario run FILE [options]\n',
    });
    expect(() => parseCompareFault('kb898060=buggy')).toThrow(/needs at least two different modes/);
    expect(() => parseCompareFault('kb1=buggy,hotfixed')).toThrow(/unknown fault "kb1"/);
    expect(() => parseCompareFault('kb898060=buggy,broken')).toThrow(/mode "broken" is not one of off, buggy, hotfixed/);
    expect(parseCompareFault('pmtu-hostroutes=buggy,hotfixed')).toEqual({ fault: 'kb898060', modes: ['buggy', 'hotfixed'] });
  });

  it('run checks the file before it needs root: a bad file is exit 2', async () => {
    const bad = path.join(tmp, 'bad2.yaml');
    fs.writeFileSync(bad, 'lab: { topology: moon }\nsteps: []\n');
    const r = await cli(['scenario', 'run', bad]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^faultstack: .*bad2\.yaml:1:18: lab\.topology: must be one of tun, tap, pmtu, firewall, nlb, got "moon"\n$/);
  });
});

describe('scenario reports', () => {
  const result = (mode: string, played: number): ScenarioRunResult => ({
    file: 'f.yaml',
    name: 'f',
    ok: played === 4,
    ms: 1000,
    parts: [
      {
        name: 'f',
        topology: 'firewall',
        modes: { kb319381: mode },
        ok: played === 4,
        ms: 1000,
        steps: [{ name: 'playlist', kind: 'play', startMs: 0, endMs: 900, ok: played === 4, values: { played }, figure: `${played}/4 played` }],
        expectations: [{ text: 'step playlist played', line: 12, result: played === 4 ? 'pass' : 'FAIL', expected: '= 4', actual: played }],
      },
    ],
  });

  it('a run lists steps and expectations, and each failed expectation with its file and line', () => {
    const text = renderRun(result('buggy', 1));
    expect(text).toContain('scenario f (f.yaml): FAILED');
    expect(text).toMatch(/playlist\s+0\.0 s\s+0\.9 s\s+1\/4 played/);
    expect(text).toContain('failed expectations:\n  f.yaml:12: step playlist played = 4, measured 1\n');
  });

  it('compare puts the modes side by side', () => {
    const text = renderCompare('kb319381', [
      { mode: 'buggy', result: result('buggy', 1) },
      { mode: 'hotfixed', result: result('hotfixed', 4) },
    ]);
    expect(text).toMatch(/playlist\s+1\/4 played\s+4\/4 played/);
    expect(text).toMatch(/step playlist played = 4\s+FAIL \(1\)\s+pass \(4\)/);
    expect(text.trimEnd().split('\n').pop()).toBe('FAILED in buggy');
  });
});
