/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The web view and the HTTP API against a running stack in a namespace, with real
 * traffic (an echo session and curl downloads from the namespace's kernel), in a real
 * headless Chromium (Debian's /usr/bin/chromium driven by playwright-core). The browser
 * runs inside the namespace (`ip netns exec` in front of chromium), where the web server
 * listens on 127.0.0.1, as a student on the lab machine would open it.
 *
 *   - the page loads with no console errors; rows and counters update live;
 *   - switching kb297040 to buggy on the page and connecting to an address that does not
 *     answer shows the lock held (holder, banner); the page keeps updating while the
 *     stack answers nothing (ping fails); the unlock button releases it;
 *   - /metrics parses with a Prometheus text-format parser;
 *   - bound off localhost (--web 198.18.0.1:PORT) the API refuses a missing token;
 *   - a transfer over a lossy link (--impair "out loss 5%"): the trace's retransmissions
 *     are the segments tshark marks as retransmissions in the capture (--pcap), and the
 *     page's time-sequence graph draws them;
 *   - with --shards the same API answers for both shards.
 * FAULTSTACK_WEB_SCREENSHOTS=DIR writes a screenshot of each page there (docs/img).
 * Under CI=true a missing chromium or tshark fails the test.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser, ConsoleMessage, Page } from 'playwright-core';
import { haveChromium, launchIn, pageWithErrors, shotDir } from './helpers/browser';
import parsePrometheus from 'parse-prometheus-text-format';
import { Lab, StackProcess, repoRoot } from '../../lab/lab';

const STACK = '198.18.0.2';
const HOST = '198.18.0.1';
const NOWHERE = '198.18.0.99';
const clients = path.join(repoRoot(), 'lab', 'clients');

const haveTshark = fs.existsSync('/usr/bin/tshark');
// A missing tool is a failure under CI, never a skip (Chromium: helpers/browser.ts).
if (process.env.CI === 'true' && !haveTshark) throw new Error("tshark is missing: install Debian's tshark package (scripts/deps.sh)");

let lab: Lab;
let tmp: string;
const browsers: Browser[] = [];

beforeAll(async () => {
  lab = await Lab.create('web');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-web-'));
}, 60_000);

afterAll(async () => {
  for (const b of browsers) await b.close().catch(() => {});
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The URL (and token) the ready line names. */
function webOf(stack: StackProcess): { url: string; token: string | null } {
  const m = / web (http:\/\/\S+?)(?: token (\S+))?(?:,|$)/.exec(stack.readyLine);
  if (!m) throw new Error(`no web URL in the ready line: ${stack.readyLine}`);
  return { url: m[1]!, token: m[2] ?? null };
}

/** A chromium that runs inside namespace `ns` (so 127.0.0.1 is the namespace's). */
async function browserIn(ns: string): Promise<Browser> {
  const b = await launchIn(ns, tmp);
  browsers.push(b);
  return b;
}

async function curlJson(
  ns: string,
  url: string,
  opts: { method?: string; body?: unknown; token?: string | null } = {},
): Promise<{ status: number; json: any; text: string }> {
  const args = ['-s', '-o', '-', '-w', '\n%{http_code}', '-X', opts.method ?? 'GET'];
  if (opts.token) args.push('-H', `Authorization: Bearer ${opts.token}`);
  if (opts.body !== undefined) args.push('-H', 'content-type: application/json', '--data', JSON.stringify(opts.body));
  const r = await lab.exec(ns, 'curl', [...args, url], { timeoutMs: 30_000 });
  const cut = r.stdout.lastIndexOf('\n');
  const status = Number(r.stdout.slice(cut + 1));
  // The body as sent (our replies end with one newline).
  const text = r.stdout.slice(0, cut);
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status, json, text };
}

async function shot(page: Page, name: string): Promise<void> {
  if (!shotDir) return;
  fs.mkdirSync(shotDir, { recursive: true });
  await page.screenshot({ path: path.join(shotDir, `${name}.png`), fullPage: true });
}

async function pingOk(ns: string): Promise<number> {
  const r = await lab.exec(ns, 'ping', ['-c', '3', '-i', '0.2', '-W', '1', STACK], { timeoutMs: 15_000 });
  const m = /(\d+) received/.exec(r.stdout);
  return m ? Number(m[1]) : -1;
}

/**
 * A stack on a TUN device of its own namespace `name`, with the web view: the options every
 * test here shares (address, host address, control socket, `--web 127.0.0.1:0` unless
 * `web` says where) and the test's own.
 */
async function webStack(name: string, services: string, extra: string[], web = '127.0.0.1:0'): Promise<{ ns: string; stack: StackProcess }> {
  const ns = await lab.addNamespace(name);
  const args = ['--tun', lab.ifname(name), '--addr', `${STACK}/24`, '--host-addr', `${HOST}/24`, '--services', services];
  const stack = await lab.startStack(ns, [...args, '--control', path.join(tmp, `${name}.sock`), ...extra, '--web', web]);
  return { ns, stack };
}

/** A Chromium page in `ns` whose console errors and page errors are collected (`ignore` lets a known one pass). */
async function pageIn(ns: string, ignore?: (m: ConsoleMessage) => boolean): Promise<{ page: Page; errors: string[] }> {
  return pageWithErrors(await browserIn(ns), ignore);
}

describe.runIf(haveChromium || process.env.CI === 'true')('the web view in Chromium', () => {
  test('loads without console errors, updates live, shows the KB 297040 lock held and releases it with the button, and keeps working while the stack is hung', async () => {
    const { ns, stack } = await webStack('a', 'echo,http,iperf3', [
      '--profile',
      'nt4-sp6a',
      '--param',
      'SynAttackProtect=1',
      '--param',
      'TcpInitialRttMs=200',
      '--param',
      'TcpMaxConnectRetransmissions=2',
    ]);
    const { url, token } = webOf(stack);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(token).toBeNull();
    // Real traffic from the namespace's kernel: an echo session for the whole test.
    const ticker = lab.spawn(ns, process.execPath, [path.join(clients, 'echo-ticker.js'), STACK, '7', '200']);
    await ticker.waitFor(/"echo":2\b/, { timeoutMs: 10_000 });

    // The failed connect to nowhere is a 504 by design (ETIMEDOUT); the browser logs every
    // non-2xx reply. Anything else is an error of the page.
    const { page, errors } = await pageIn(ns, (m) => m.location().url.endsWith('/api/connect') && m.text().includes('504'));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'live', null, { timeout: 10_000 });
    await expectText(page, '#lock-state', 'free');
    // The echo listener on port 7 and its connection.
    await page.waitForSelector('#listeners tr[data-port="7"]', { timeout: 10_000 });
    await shot(page, 'web-overview');

    // Connections: the ticker's row is there; an iperf3 run started now appears without a reload.
    await page.click('a[data-tab="connections"]');
    await page.waitForSelector(`tr.conn-row[data-conn^="${STACK}:7-${HOST}:"]`, { timeout: 10_000 });
    const iperf = lab.spawn(ns, 'iperf3', ['-c', STACK, '-t', '8', '-b', '20M']);
    await page.waitForSelector(`tr.conn-row[data-conn^="${STACK}:5201-${HOST}:"]`, { timeout: 10_000 });
    await page.fill('#conn-filter', ':5201-');
    await page.waitForFunction(
      () => {
        const rows = [...document.querySelectorAll('tr.conn-row')] as HTMLElement[];
        return rows.length >= 1 && rows.every((r) => r.dataset.conn!.includes(':5201-'));
      },
      null,
      { timeout: 10_000 },
    );
    await shot(page, 'web-connections');
    await page.fill('#conn-filter', '');

    // Counters move: TcpInSegs grows between two looks, and its rate is shown.
    await page.click('a[data-tab="counters"]');
    const inSegs = async () => Number(await page.textContent('tr[data-counter="TcpInSegs"] td:nth-child(2)'));
    await page.waitForSelector('tr[data-counter="TcpInSegs"]', { timeout: 5_000 });
    const a = await inSegs();
    await page.waitForFunction((n) => Number(document.querySelector('tr[data-counter="TcpInSegs"] td:nth-child(2)')?.textContent) > n, a, { timeout: 10_000 });
    await page.waitForSelector('tr[data-counter="TcpInSegs"] svg.spark polyline', { timeout: 10_000 });
    await shot(page, 'web-counters');
    await iperf.kill();

    // Faults: kb297040 to buggy with the switch; the stack's own stats agree.
    await page.click('a[data-tab="faults"]');
    await page.click('button[data-fault="kb297040"][data-mode="buggy"]');
    await page.waitForSelector('button[data-fault="kb297040"][data-mode="buggy"].on', { timeout: 5_000 });
    const st = await curlJson(ns, `${url}api/stats`);
    expect(st.json.faults.kb297040).toBe('buggy');
    await shot(page, 'web-faults');

    // The connect to nowhere, from the page: the lock is held once the SYN schedule (1.4 s) ran out.
    await page.click('a[data-tab="overview"]');
    await page.fill('#connect-host', NOWHERE);
    await page.fill('#connect-port', '80');
    await page.click('#connect-btn');
    await expectText(page, '#lock-state', 'HELD', 10_000);
    expect(await page.textContent('#lock-holder')).toContain(`${NOWHERE}:80`);
    expect(await page.isVisible('#hung-banner')).toBe(true);
    // The stack is really hung: the kernel's ping is not answered ...
    expect(await pingOk(ns)).toBe(0);
    // ... and the page still polls: its last-update time moves on, the blocked count grows.
    const at0 = Number(await page.getAttribute('#last-update', 'data-at'));
    await page.waitForFunction((t) => Number(document.getElementById('last-update')!.dataset.at) > t + 1500, at0, { timeout: 10_000 });
    await page.waitForFunction(() => Number(document.getElementById('lock-blocked')!.textContent) > 3, null, { timeout: 10_000 });
    await shot(page, 'web-lock-held');
    if (shotDir) await page.locator('#lock-card').screenshot({ path: path.join(shotDir, 'web-lock-card.png') });
    // The event log has the lock-taken event, live.
    await page.click('a[data-tab="events"]');
    await page.waitForSelector('#events-log li[data-kind="lock-taken-not-released"]', { timeout: 10_000 });
    await shot(page, 'web-events');

    // Unlock from the page: free again, and the stack answers.
    await page.click('a[data-tab="overview"]');
    await page.click('#unlock');
    await expectText(page, '#lock-state', 'free', 10_000);
    expect(await page.isVisible('#hung-banner')).toBe(false);
    expect(await pingOk(ns)).toBe(3);
    await page.waitForSelector('#events-log li[data-kind="lock-released"]', { state: 'attached', timeout: 10_000 });

    // /metrics, from the same server: it parses and says what the page said.
    const metrics = await lab.exec(ns, 'curl', ['-s', `${url}metrics`], { timeoutMs: 10_000 });
    const fams = parsePrometheus(metrics.stdout);
    const get = (name: string) => fams.find((f) => f.name === name)?.metrics ?? [];
    expect(get('faultstack_fault_mode').find((m) => m.labels?.fault === 'kb297040' && m.labels?.mode === 'buggy')?.value).toBe('1');
    expect(Number(get('faultstack_FsConnTableLockedDrops')[0]?.value)).toBeGreaterThan(3);
    expect(get('faultstack_lock_held')[0]?.value).toBe('0');
    expect(Number(get('faultstack_TcpInSegs')[0]?.value)).toBeGreaterThan(10);

    expect(errors).toEqual([]);
    ticker.end();
    await page.close();
  }, 120_000);

  test('off localhost a token is required; a transfer over a lossy link: the trace has the retransmissions the capture has, and the page draws them', async () => {
    const pcap = path.join(tmp, 'b.pcap');
    const { ns, stack } = await webStack('b', 'http', ['--impair', 'out loss 5%', '--pcap', pcap, '--offloads', 'off'], `${HOST}:0`);
    const { url, token } = webOf(stack);
    expect(url.startsWith(`http://${HOST}:`)).toBe(true);
    expect(token).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    // No token: 401 and one line of JSON; a wrong one too; the right one works.
    const none = await curlJson(ns, `${url}api/stats`);
    expect(none.status).toBe(401);
    expect(none.text.trimEnd().split('\n')).toHaveLength(1);
    expect(none.json.error.code).toBe('EAUTH');
    expect((await curlJson(ns, `${url}metrics`)).status).toBe(401);
    expect((await curlJson(ns, `${url}api/stats`, { token: 'x'.repeat(24) })).status).toBe(401);
    expect((await curlJson(ns, `${url}api/stats`, { token })).status).toBe(200);

    // A download from the stack over 5% loss on the way out, traced from its first segment:
    // the trace is armed for the client's port before curl connects.
    const size = 2_000_000;
    const conn = `${HOST}:40123`;
    const started = await curlJson(ns, `${url}api/traces`, { method: 'POST', body: { conn, samples: 100000, wait: true }, token });
    expect(started.status, started.text).toBe(200);
    expect(started.json).toMatchObject({ pending: true, conn });
    // The page, with the token in its URL, on the trace tab.
    const { page, errors } = await pageIn(ns);
    await page.goto(`${url}?token=${token}#trace`);
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'live', null, { timeout: 10_000 });
    await page.waitForFunction((c) => [...(document.getElementById('trace-conn') as HTMLSelectElement).options].some((o) => o.value === c), conn, {
      timeout: 10_000,
    });
    await page.selectOption('#trace-conn', conn);
    const curl = lab.spawn(ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{size_download}\n', '--local-port', '40123', `http://${STACK}/bytes/${size}`]);
    await page.waitForSelector('#trace-seq line.retrans', { state: 'attached', timeout: 30_000 });

    const done = await curl.waitFor(/^\d+$/m, { timeoutMs: 60_000 });
    expect(Number(done[0])).toBe(size);
    await new Promise((r) => setTimeout(r, 1500));
    await page.waitForSelector('#trace-cwnd path.cwnd', { state: 'attached' });
    await shot(page, 'web-trace');
    const t = (await curlJson(ns, `${url}api/traces/${encodeURIComponent(conn)}`, { token })).json;
    expect(t.droppedSegments).toBe(0);
    const ours = new Set<number>((t.segments as any[]).filter((s) => s.retrans && s.len > 1).map((s) => s.seq));
    expect(ours.size).toBeGreaterThan(0);
    expect(t.retransmissions).toBeGreaterThan(0);
    const drawn = await page.locator('#trace-seq line.retrans').count();
    expect(drawn).toBe(t.retransmissions);
    // The command line reads the same trace over the control socket.
    const ctl = path.join(tmp, 'b.sock');
    const cliJson = await lab.cli(ns, ['trace', conn, '--json', '--control', ctl]);
    expect(cliJson.code, cliJson.stderr).toBe(0);
    expect(JSON.parse(cliJson.stdout)).toMatchObject({ conn: t.conn, retransmissions: t.retransmissions, segments: t.segments });
    const cliText = await lab.cli(ns, ['trace', 'list', '--control', ctl]);
    expect(cliText.stdout).toContain(t.conn);
    const bad = await lab.cli(ns, ['trace', 'start', 'nonsense', '--control', ctl]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain('PEER:PORT or LOCAL:PORT-PEER:PORT');

    expect(errors).toEqual([]);
    await page.close();
    // The capture (the stack's side, before the loss) has them: a data segment of the stack
    // is sent again when its first byte is below the highest one sent before it. tshark's
    // relative numbers count from the ISN, as the trace's do.
    await stack.kill(5000);
    const ts = await lab.exec(
      null,
      'tshark',
      ['-r', pcap, '-Y', `tcp.srcport == 80 && tcp.dstport == 40123 && tcp.len > 0`, '-T', 'fields', '-e', 'tcp.seq', '-e', 'tcp.len'],
      { timeoutMs: 60_000 },
    );
    expect(ts.code, ts.stderr).toBe(0);
    let highest = 0;
    const resent: number[] = [];
    for (const line of ts.stdout.trim().split('\n')) {
      const [seq, len] = line.split('\t').map(Number) as [number, number];
      if (seq < highest) resent.push(seq);
      highest = Math.max(highest, seq + len);
    }
    const oursAll = (t.segments as any[]).filter((s) => s.retrans && s.len > 1).map((s) => s.seq);
    expect(resent.length).toBeGreaterThan(0);
    expect(oursAll).toEqual(resent);
  }, 150_000);
});

describe.runIf(haveChromium || process.env.CI === 'true')('the web view of a SYN flood (KB 903927)', () => {
  test('spoofed SYNs past TcpMaxHalfOpen: the listeners table shows the SYN queue over its limit, the event log the protection', async () => {
    const { ns, stack } = await webStack('f', 'http', ['--fault', 'kb903927=buggy', '--param', 'TcpMaxHalfOpen=32', '--param', 'TcpMaxPortsExhausted=1000']);
    const { url } = webOf(stack);
    const { page, errors } = await pageIn(ns);
    await page.goto(url);
    await page.waitForSelector('#listeners tr[data-port="80"]', { timeout: 10_000 });
    expect(await page.textContent('#listeners tr[data-port="80"] td:nth-child(2)')).toBe('0 / 32');
    const f = await lab.exec(
      ns,
      process.execPath,
      [
        path.join(repoRoot(), 'dist', 'lab', 'synflood.js'),
        '--target',
        `${STACK}:80`,
        '--source',
        '198.18.100.0/24',
        '--count',
        '400',
        '--duration',
        '5',
        '--rate',
        '2000',
        '--json',
        '--quiet',
      ],
      { timeoutMs: 20_000 },
    );
    expect(f.code, f.stderr).toBe(0);
    // The SYN queue against TcpMaxHalfOpen, its bar full (red), and the trigger in the log.
    await page.waitForFunction(
      () => {
        const cell = document.querySelector('#listeners tr[data-port="80"] td:nth-child(2)')?.textContent ?? '';
        return Number(cell.split(' / ')[0]) > 300 && cell.endsWith(' / 32');
      },
      null,
      { timeout: 10_000 },
    );
    expect(await page.locator('#listeners tr[data-port="80"] .bar .full').count()).toBe(1);
    if (shotDir) await page.locator('#listeners').screenshot({ path: path.join(shotDir, 'web-listeners.png') });
    await page.click('a[data-tab="events"]');
    await page.waitForSelector('#events-log li[data-kind="syn-protection-triggered"]', { timeout: 10_000 });
    expect(errors).toEqual([]);
    await page.close();
  }, 90_000);
});

describe.runIf(haveChromium || process.env.CI === 'true')('the web view of an NLB cluster', () => {
  test('two hosts on a bridge: the page of host 1 draws the bucket map shared by hosts 1 and 2 once they converged', async () => {
    const ns = await lab.addNamespace('n');
    const br = await lab.bridge(ns);
    const hosts = await Promise.all(
      [1, 2].map((h) =>
        lab.startStack(ns, [
          '--tap',
          lab.ifname(`n${h}`),
          '--bridge',
          br,
          '--addr',
          `198.18.70.1${h}/24`,
          '--nlb',
          '198.18.70.100/24',
          '--nlb-priority',
          String(h),
          '--services',
          'echo',
          '--control',
          path.join(tmp, `n${h}.sock`),
          '--web',
          '127.0.0.1:0',
        ]),
      ),
    );
    const { url } = webOf(hosts[0]!);
    const { page, errors } = await pageIn(ns);
    await page.goto(url);
    await page.waitForSelector('#nlb-card:not([hidden]) table.bucket-map', { timeout: 15_000 });
    // Converged: the 60 buckets split between the two hosts.
    await page.waitForFunction(
      () => {
        const owners = [...document.querySelectorAll('table.bucket-map td')].map((c) => c.textContent);
        return owners.length === 60 && owners.includes('1') && owners.includes('2');
      },
      null,
      { timeout: 30_000 },
    );
    if (shotDir) await page.locator('#nlb-card').screenshot({ path: path.join(shotDir, 'web-nlb.png') });
    expect(errors).toEqual([]);
    await page.close();
  }, 90_000);
});

describe('the API with --shards', () => {
  test('stats, faults and /metrics over two shards', async () => {
    const { ns, stack } = await webStack('s', 'echo', ['--queues', '2', '--shards']);
    const { url } = webOf(stack);
    const st = await curlJson(ns, `${url}api/stats`);
    expect(st.status).toBe(200);
    expect(st.json.shards).toHaveLength(2);
    const put = await curlJson(ns, `${url}api/faults/kb903927`, { method: 'PUT', body: { mode: 'buggy' } });
    expect(put.json).toMatchObject({ id: 'kb903927', mode: 'buggy', shards: 2 });
    const bad = await curlJson(ns, `${url}api/faults/kb903927`, { method: 'PUT', body: { mode: 'nope' } });
    expect(bad.status).toBe(400);
    expect(bad.text.trimEnd().split('\n')).toHaveLength(1);
    const metrics = await lab.exec(ns, 'curl', ['-s', `${url}metrics`]);
    const fams = parsePrometheus(metrics.stdout);
    expect(fams.find((f) => f.name === 'faultstack_fault_mode')!.metrics.find((m) => m.labels?.fault === 'kb903927' && m.labels?.mode === 'buggy')?.value).toBe(
      '1',
    );
    // Both shards' echo listeners.
    expect(
      fams
        .find((f) => f.name === 'faultstack_listener_backlog')!
        .metrics.filter((m) => m.labels?.port === '7')
        .map((m) => m.labels?.shard)
        .sort(),
    ).toEqual(['0', '1']);
    // A trace armed on every shard catches the connection on whichever queue the kernel picks.
    const armed = await curlJson(ns, `${url}api/traces`, { method: 'POST', body: { conn: `${HOST}:40124`, wait: true } });
    expect(armed.json).toMatchObject({ pending: true });
    const nc = await lab.exec(ns, 'bash', ['-c', `echo hello | nc -N -p 40124 ${STACK} 7`], { timeoutMs: 10_000 });
    expect(nc.stdout).toContain('hello');
    const t = await curlJson(ns, `${url}api/traces/${HOST}:40124`);
    expect(t.status, t.text).toBe(200);
    expect(t.json.conn).toBe(`${STACK}:7-${HOST}:40124`);
    expect([0, 1]).toContain(t.json.shard);
    // The echo of "hello\n" (6 bytes) went out, then our FIN.
    expect(t.json.segments.filter((g: any) => !g.retrans).map((g: any) => [g.seq, g.len])).toEqual(expect.arrayContaining([[1, 6]]));
  }, 60_000);
});

async function expectText(page: Page, sel: string, text: string, timeout = 5_000): Promise<void> {
  await page.waitForFunction(([s, t]) => document.querySelector(s!)?.textContent === t, [sel, text], { timeout });
}
