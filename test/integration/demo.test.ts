/**
 * The demo's own logic (steps, parsing of ping/curl/iperf3 output, the integrity
 * scripts, the summary, the exit status, cleanup), run for real in a namespace
 * against test/integration/fixtures/fake-stack.cjs: kernel services standing in for the userspace
 * stack. `make demo` runs it against the real stack.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateBuild, REPO, buildPrivate } from '../helpers/build';

interface Summary {
  ok: boolean;
  steps: { step: string; result: string; figure: string; ms: number }[];
}

function netnsList(): string[] {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

describe('demo', () => {
  let build: PrivateBuild;
  let runDir = '';

  beforeAll(() => {
    build = buildPrivate(['bin/demo.js', 'lab/lab.js', 'stack/control/server.js', 'bin/cli/main.js']);
    runDir = path.join(build.root, 'run');
  }, 120_000);

  afterAll(() => build?.remove());

  function demo(env: NodeJS.ProcessEnv): Promise<{ code: number | null; summary: Summary; stderr: string }> {
    return new Promise((resolve, reject) => {
      // The PMTU lab needs the real stack (routers' ICMP and host routes): the stand-in
      // cannot play it, and 'make demo runs for real' below covers it.
      const real = env.REAL === '1';
      // The real run uses the repository's own build (make test builds it first).
      const script = real ? path.join(REPO, 'dist/bin/demo.js') : path.join(build.dist, 'bin/demo.js');
      const c = spawn(process.execPath, [script, '--json', ...(real ? [] : ['--skip-pmtu', '--skip-firewall', '--skip-nlb'])], {
        env: {
          ...process.env,
          ...(real ? {} : { FAULTSTACK_CLI: path.join(REPO, 'test/integration/fixtures/fake-stack.cjs') }),
          FAKE_DIST: build.dist,
          FAULTSTACK_RUN_DIR: runDir,
          ...env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      c.stdout.on('data', (d) => {
        out += d;
      });
      c.stderr.on('data', (d) => {
        err += d;
      });
      c.on('error', reject);
      c.on('close', (code) => {
        try {
          resolve({ code, summary: JSON.parse(out) as Summary, stderr: err });
        } catch {
          reject(new Error(`demo printed no JSON summary (exit ${code}):\n${out}\n${err}`));
        }
      });
    });
  }

  it('passes every step against kernel services, and leaves nothing behind', async () => {
    const { code, summary, stderr } = await demo({});
    expect(summary.steps.map((s) => [s.step, s.result])).toEqual([
      ['namespace', 'ok'],
      ['start stack', 'ok'],
      ['ping', 'ok'],
      ['http /', 'ok'],
      ['http 1 MB', 'ok'],
      ['tcp echo 10 MB', 'ok'],
      ['iperf3 upload', 'ok'],
      ['iperf3 download', 'ok'],
      ['udp echo', 'ok'],
      ['stats', 'ok'],
      ['l2 bridge', 'ok'],
      ['l2 ping', 'ok'],
      ['l2 http', 'ok'],
      ['l2 iperf3', 'ok'],
    ]);
    expect(code).toBe(0);
    expect(summary.ok).toBe(true);
    const fig = Object.fromEntries(summary.steps.map((s) => [s.step, s.figure]));
    expect(fig.ping).toMatch(/^5\/5 replies, avg [\d.]+ ms$/);
    expect(fig['http 1 MB']).toMatch(/^HTTP 200, 1000000 bytes, [\d.]+ Mbit\/s$/);
    expect(fig['tcp echo 10 MB']).toMatch(/^sha256 match, [\d.]+ Mbit\/s both ways$/);
    expect(fig['iperf3 download']).toMatch(/^[\d.]+ Mbit\/s, \d+ retransmits$/);
    expect(fig['udp echo']).toBe('20/20 echoed intact');
    expect(fig.stats).toMatch(/^\d+ counters, 1 connections$/);
    expect(fig['l2 ping']).toMatch(/^5\/5 replies, avg [\d.]+ ms; ip neigh: 198\.18\.2\.2 at [0-9a-f:]{17}$/);
    expect(fig['l2 http']).toMatch(/^HTTP 200, 1000000 bytes, [\d.]+ Mbit\/s$/);
    expect(fig['l2 iperf3']).toMatch(/^upload [\d.]+ Mbit\/s, download [\d.]+ Mbit\/s$/);
    expect(stderr).toContain('[demo] stats: faultstack stats');
    expect(stderr).toMatch(/LISTEN +0 +0 +198\.18\.0\.2:7/);
    expect(netnsList().filter((n) => n.startsWith('fsdem') || n.startsWith('fsdpm'))).toEqual([]);
    expect(fs.readdirSync(runDir)).toEqual([]);
  }, 120_000);

  it('make demo runs for real: every step passes on the userspace stack, PMTU lab included', async () => {
    const { code, summary } = await demo({ REAL: '1' });
    const results = Object.fromEntries(summary.steps.map((st) => [st.step, `${st.result}: ${st.figure}`]));
    expect(summary.steps.map((st) => st.step)).toEqual([
      'namespace',
      'start stack',
      'ping',
      'http /',
      'http 1 MB',
      'tcp echo 10 MB',
      'iperf3 upload',
      'iperf3 download',
      'udp echo',
      'stats',
      'l2 bridge',
      'l2 ping',
      'l2 http',
      'l2 iperf3',
      'pmtu lab',
      'pmtu hotfixed',
      'pmtu buggy',
      'nlb lab',
      'nlb buggy',
      'nlb hotfixed',
      'firewall kb319381',
    ]);
    for (const st of summary.steps) expect(st.result, JSON.stringify(results)).toBe('ok');
    // The real stack's MAC, seen by the VM's kernel.
    expect(results['l2 ping']).toMatch(/ip neigh: 198\.18\.2\.2 at 02:00:c6:12:02:02$/);
    expect(code).toBe(0);
    expect(netnsList().filter((n) => n.startsWith('fsdem') || n.startsWith('fsdpm') || n.startsWith('fsdfw') || n.startsWith('fsdnl'))).toEqual([]);
  }, 360_000);

  it('reports a stack that fails to start, skips the rest, exits 1 and cleans up', async () => {
    const { code, summary } = await demo({ FAKE_FAIL: '1' });
    expect(code).toBe(1);
    expect(summary.ok).toBe(false);
    expect(summary.steps[1]).toMatchObject({
      step: 'start stack',
      result: 'FAILED',
      figure: 'faultstack: cannot start the stack on fsdemo0: /dev/net/tun: No such device (fake)',
    });
    expect(summary.steps.slice(2).every((s) => s.result === 'skipped' && s.figure === 'the stack did not start')).toBe(true);
    expect(netnsList().filter((n) => n.startsWith('fsdem'))).toEqual([]);
  }, 60_000);

  it('--help', () => {
    const r = spawnSync(process.execPath, [path.join(build.dist, 'bin/demo.js'), '--help'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: faultstack demo \[options\]/);
  });
});
