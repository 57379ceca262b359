/**
 * Every shipped scenario file (scenarios/*.yaml) runs for real with `faultstack scenario run
 * --json` in the namespaces it builds, and passes: exit 0, every part ok, every expectation
 * that applies checked and passed. `scenario compare` runs one file under both modes of
 * its fault; a scenario whose expectation cannot hold exits 1 and names it. After each, no
 * namespace or device of the runner's labs is left. Uses the repository's own build (make
 * test builds it first).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO } from '../helpers/build';
import type { ScenarioRunResult } from '../../lab/scenario/run';

const CLI = path.join(REPO, 'dist', 'bin', 'cli', 'main.js');
const DIR = path.join(REPO, 'scenarios');
const FILES = fs
  .readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort();
const charts = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-scn-charts-'));

/** Namespaces and root devices of the scenario runner's labs (tag scn). */
function leftovers(): string[] {
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => /^fsscn/.test(n));
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '')
    .filter((n) => /^fsscn/.test(n));
  return [...ns, ...links];
}

function cli(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    c.stdout.on('data', (d) => {
      stdout += d;
    });
    c.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => c.kill('SIGTERM'), timeoutMs);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function parse<T>(r: { code: number | null; stdout: string; stderr: string }): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`no JSON report (exit ${r.code}):\n${r.stdout}\n${r.stderr.slice(-3000)}`);
  }
}

afterAll(() => fs.rmSync(charts, { recursive: true, force: true }));

describe('scenarios', () => {
  it('ships the walkthroughs, the netem experiment and the demo', () => {
    for (const f of [
      'kb903927-buggy',
      'kb903927-hotfixed',
      'kb903927-synflood',
      'kb297040-buggy',
      'kb297040-hotfixed',
      'kb898060-buggy',
      'kb898060-hotfixed',
      'kb898060-workaround',
      'kb972183-buggy',
      'kb972183-hotfixed',
      'kb972183-workaround-ipsec-exception',
      'kb972183-workaround-no-ipsec',
      'kb319381-buggy',
      'kb319381-hotfixed',
      'netem-loss-delay',
      'routers-pmtu',
      'demo',
    ])
      expect(FILES).toContain(`${f}.yaml`);
  });

  for (const f of FILES) {
    it(`${f} passes`, async () => {
      const r = await cli(['scenario', 'run', path.join(DIR, f), '--json', '--chart-dir', charts], 240_000);
      const res = parse<ScenarioRunResult>(r);
      const failed = res.parts.flatMap((p) => [
        ...(p.error ? [`${p.name}: ${p.error}`] : []),
        ...p.expectations
          .filter((x) => x.result === 'FAIL')
          .map((x) => `${p.name}: line ${x.line}: ${x.text} ${x.expected}, measured ${x.actual} ${x.note ?? ''}`),
        ...p.steps.filter((s) => s.error).map((s) => `${p.name}: step ${s.name}: ${s.error}`),
      ]);
      expect(failed).toEqual([]);
      expect(r.code).toBe(0);
      expect(res.ok).toBe(true);
      for (const p of res.parts) {
        expect(p.ok).toBe(true);
        // Something was checked in every part, and every step ran.
        expect(p.expectations.filter((x) => x.result === 'pass').length).toBeGreaterThan(0);
        expect(p.steps.length).toBeGreaterThan(0);
        if (p.chart) expect(fs.statSync(p.chart).size).toBeGreaterThan(200);
      }
      expect(leftovers()).toEqual([]);
    }, 250_000);
  }

  it('compare runs kb297040.yaml buggy and hotfixed and prints them side by side', async () => {
    const r = await cli(['scenario', 'compare', path.join(DIR, 'kb297040.yaml'), '--fault', 'kb297040=buggy,hotfixed', '--json'], 120_000);
    const doc = parse<{ fault: string; runs: { mode: string; result: ScenarioRunResult }[] }>(r);
    expect(r.code).toBe(0);
    expect(doc.fault).toBe('kb297040');
    expect(doc.runs.map((x) => [x.mode, x.result.ok, x.result.parts[0]!.modes.kb297040])).toEqual([
      ['buggy', true, 'buggy'],
      ['hotfixed', true, 'hotfixed'],
    ]);
    const outcome = (m: number) => doc.runs[m]!.result.parts[0]!.steps.find((s) => s.name === 'connect')!.values.outcome;
    expect([outcome(0), outcome(1)]).toEqual(['no-outcome', 'timeout']);
    const alongside = (m: number) => doc.runs[m]!.result.parts[0]!.steps.find((s) => s.name === 'alongside')!.values.received;
    expect([alongside(0), alongside(1)]).toEqual([0, 3]);
    // Each mode skipped the other's expectations and checked its own.
    for (const x of doc.runs) {
      expect(x.result.parts[0]!.expectations.filter((e) => e.result === 'skipped').length).toBe(3);
      expect(x.result.parts[0]!.expectations.filter((e) => e.result === 'pass').length).toBeGreaterThanOrEqual(4);
    }
    expect(leftovers()).toEqual([]);
  }, 130_000);

  it('compare prints the modes side by side for a person', async () => {
    const r = await cli(['scenario', 'compare', path.join(DIR, 'kb903927-hotfixed.yaml'), '--fault', 'kb903927=buggy,hotfixed'], 60_000);
    // The file's expectations are the hotfixed ones: the buggy run fails them, and says so.
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^scenario kb903927-hotfixed: kb903927 buggy versus hotfixed$/m);
    expect(r.stdout).toMatch(/^ {2}burst\s+30 clients: \d+ served, \d+ reset.*\s{2}30 clients: \d+ served, \d+ reset/m);
    expect(r.stdout).toMatch(/^ {2}stat leak\.connections = 0\s+FAIL \(\d+\)\s+pass \(0\)$/m);
    expect(r.stdout.trimEnd().split('\n').pop()).toBe('FAILED in buggy');
  }, 70_000);

  it('an expectation that fails makes the run exit 1 and names it with its line', async () => {
    const file = path.join(charts, 'fails.yaml');
    fs.writeFileSync(
      file,
      'lab: { topology: tun }\nstack: { services: [echo] }\nsteps:\n  - name: p\n    ping: { count: 2 }\nexpect:\n  - { step: p, value: received, equals: 0 }\n',
    );
    const r = await cli(['scenario', 'run', file], 60_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`failed expectations:\n  ${file}:7: step p received = 0, measured 2\n`);
    expect(r.stderr).toMatch(/\[scenario\] fails: building the tun lab/);
    expect(leftovers()).toEqual([]);
  }, 70_000);
});
