/**
 * Issue 8 item 8: the stack's memory through a SYN flood at the generator's full rate
 * (lab/synflood.ts, bounded: at most 1,000,000 SYNs and 60 s per run, from spoofed
 * 198.18.100.0/24 sources inside the lab namespace), with curl fetching pages meanwhile.
 *
 * Before half-open entries were compact and capped, the default profile (win2003-sp1)
 * grew past 1 GB of RSS in 10 s: SYN attack protection accepts every SYN for a delayed
 * indication and each one was a whole connection for 9 s. Now the SYN queue is capped
 * (65,536 per listener) and its entries recycled oldest first.
 *
 * nt4-sp6a without SynAttackProtect (as NT4 shipped) tells the application at the SYN:
 * a flood's half-open connections hold every backlog slot and real clients are refused
 * with a RST, the denial of service KB 142641 describes. That stays as it was; with
 * SynAttackProtect=2 (the remedy of that article) curl is served on nt4 too.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, repoRoot } from '../../lab/lab';

const STACK = '198.18.0.2';
const synflood = path.join(repoRoot(), 'dist', 'lab', 'synflood.js');
const RSS_CEILING = 300 * 1024 * 1024;

let lab: Lab;

beforeAll(async () => {
  lab = await Lab.create('fm');
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
});

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

interface CurlResult {
  code: number | null;
  http: string;
  bytes: number;
  ms: number;
  stderr: string;
}

async function floodRun(name: string, args: string[], seconds: number) {
  const ns = await lab.addNamespace(name);
  const control = `/run/faultstack/${lab.ifname(name)}.sock`;
  const stack = await lab.startStack(ns, ['--tun', lab.ifname(name), '--addr', `${STACK}/24`, '--services', 'http', '--control', control, ...args]);
  const rss0 = rssOf(stack.pid);
  let peak = rss0;
  const sampler = setInterval(() => {
    const r = rssOf(stack.pid);
    if (r > peak) peak = r;
  }, 200);
  const t0 = Date.now();
  let sent = 0;
  let floodRuns = 0;
  let flooding = true;
  const floods = (async () => {
    // Consecutive bounded runs of the generator at its full rate (no --rate).
    while (Date.now() - t0 < seconds * 1000 - 500) {
      const left = Math.max(1, Math.round((seconds - (Date.now() - t0) / 1000) * 10) / 10);
      const r = await lab.exec(
        ns,
        process.execPath,
        [synflood, '--target', `${STACK}:80`, '--source', '198.18.100.0/24', '--count', '1000000', '--duration', String(left), '--json', '--quiet'],
        { timeoutMs: (left + 30) * 1000 },
      );
      expect(r.code, r.stderr).toBe(0);
      sent += JSON.parse(r.stdout.trim().split('\n').pop()!).sent as number;
      floodRuns++;
    }
    flooding = false;
  })();
  const curls: CurlResult[] = [];
  const clients = (async () => {
    await new Promise((r) => setTimeout(r, 1000)); // the flood is under way
    while (flooding) {
      const c0 = Date.now();
      const r = await lab.exec(ns, 'curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', '--max-time', '15', `http://${STACK}/bytes/64`], {
        timeoutMs: 20_000,
      });
      const [http, size] = r.stdout.trim().split(' ');
      curls.push({ code: r.code, http: http ?? '', bytes: Number(size), ms: Date.now() - c0, stderr: r.stderr.trim() });
    }
  })();
  try {
    await Promise.all([floods, clients]);
  } finally {
    clearInterval(sampler);
  }
  const secs = (Date.now() - t0) / 1000;
  const st = JSON.parse((await lab.cli(ns, ['stats', '--json', '--control', control], { timeoutMs: 30_000 })).stdout);
  const l = st.listeners.find((x: { port: number }) => x.port === 80);
  return { stack, ns, control, rss0, peak, sent, secs, floodRuns, curls, st, l };
}

/**
 * Two resets are what a Windows listener under this flood does, and nothing else may
 * keep a curl from being served:
 * - With SynAttackProtect=2 (delayed indication) the backlog is looked at when the
 *   client's data arrives, and the flood's SYNs indicated before protection triggered hold
 *   backlog slots until they leave the SYN queue: a curl that lands then is reset after its
 *   handshake, the behaviour KB 903927 describes (FsBacklogResets).
 * - The SYN queue at its cap recycles the oldest entry (RFC 4987 3.3): at the generator's
 *   rate an entry lives well under a second, and on a loaded machine a curl whose SYN-ACK
 *   or final ACK waited in a full queue can come back after its entry is gone; its ACK
 *   matches nothing and is answered with a reset (FsListenStrayAcks). It failed this way
 *   in CI, with every other curl served.
 * How often either happens depends on the flood's rate and the machine's load. Any curl
 * that is not served must be one of them, and at least one is served.
 */
function expectServedOrBacklogReset(r: { curls: CurlResult[]; st: { counters: Record<string, number> } }): void {
  const served = r.curls.filter((c) => c.code === 0 && c.http === '200' && c.bytes === 64);
  const reset = r.curls.filter((c) => c.code !== 0);
  expect(served.length + reset.length, JSON.stringify(r.curls)).toBe(r.curls.length);
  expect(served.length, JSON.stringify(r.curls)).toBeGreaterThanOrEqual(1);
  for (const c of reset) expect(c.stderr, JSON.stringify(c)).toMatch(/reset by peer/);
  expect(r.st.counters.FsBacklogResets + r.st.counters.FsListenStrayAcks, JSON.stringify(r.st.counters)).toBeGreaterThanOrEqual(reset.length);
}

describe('the stack through a bounded SYN flood at full rate', () => {
  test('win2003-sp1 (the default), 15 s: RSS stays under 300 MB, the SYN queue at its cap, and every curl is served or reset as a Windows listener under a flood resets it', async () => {
    const r = await floodRun('w', [], 15);
    expect(r.sent / r.secs).toBeGreaterThan(20_000); // a real flood, not a trickle
    expect(r.peak, `peak RSS ${(r.peak / 1048576).toFixed(0)} MB`).toBeLessThan(RSS_CEILING);
    expect(r.st.counters.FsSynProtectTriggered).toBeGreaterThanOrEqual(1);
    expect(r.st.counters.FsHalfOpenRecycled).toBeGreaterThan(0);
    expect(r.l.synQueue).toBeLessThanOrEqual(65_536);
    expect(r.l.recycled).toBe(r.st.counters.FsHalfOpenRecycled);
    expect(r.curls.length).toBeGreaterThanOrEqual(3);
    expectServedOrBacklogReset(r);
  }, 120_000);

  test('linux, 8 s: SYN cookies past tcp_max_syn_backlog; RSS under 300 MB; every curl is served', async () => {
    const r = await floodRun('l', ['--profile', 'linux'], 8);
    expect(r.peak, `peak RSS ${(r.peak / 1048576).toFixed(0)} MB`).toBeLessThan(RSS_CEILING);
    expect(r.st.counters.TcpExtSyncookiesSent).toBeGreaterThan(10_000);
    expect(r.l.synQueue).toBeLessThanOrEqual(128);
    expect(r.curls.length).toBeGreaterThanOrEqual(2);
    for (const c of r.curls) expect(c, JSON.stringify(c)).toMatchObject({ code: 0, http: '200', bytes: 64 });
  }, 120_000);

  test('nt4-sp6a, 8 s: RSS under 300 MB; without SynAttackProtect the flood holds the backlog and curl is refused at once (KB 142641)', async () => {
    const r = await floodRun('n', ['--profile', 'nt4-sp6a'], 8);
    expect(r.peak, `peak RSS ${(r.peak / 1048576).toFixed(0)} MB`).toBeLessThan(RSS_CEILING);
    expect(r.l.synQueue).toBe(r.l.backlog); // every slot held by a half-open flood entry
    expect(r.l.refusedSyns).toBeGreaterThan(10_000);
    expect(r.curls.length).toBeGreaterThanOrEqual(2);
    // Refused (curl exit 7), not left hanging: the stack still answers every SYN it reads.
    for (const c of r.curls) expect(c.code, JSON.stringify(c)).toBe(7);
  }, 120_000);

  test('nt4-sp6a with SynAttackProtect=2, 8 s: protection triggers, RSS under 300 MB, and every curl is served or reset as a full backlog resets it (KB 903927)', async () => {
    const r = await floodRun('p', ['--profile', 'nt4-sp6a', '--param', 'SynAttackProtect=2'], 8);
    expect(r.peak, `peak RSS ${(r.peak / 1048576).toFixed(0)} MB`).toBeLessThan(RSS_CEILING);
    expect(r.st.counters.FsSynProtectTriggered).toBeGreaterThanOrEqual(1);
    expect(r.curls.length).toBeGreaterThanOrEqual(2);
    expectServedOrBacklogReset(r);
  }, 120_000);
});
