/**
 * Runs a validated scenario (lab/scenario/format.ts) in private namespaces: for each part,
 * builds its lab with the lab modules (Lab, PmtuLab, FirewallLab, NlbLab), starts the stack,
 * runs the steps (untimed ones one after another, timed ones at their time, concurrently),
 * reads counters and events over the control socket, checks the expectations, and removes
 * everything, also when a step fails. Time comes from the clock passed in (`RunOptions.clock`),
 * which also schedules the timed steps.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FirewallLab, FW_IN, MEDIA } from '../firewall-lab';
import { runHping3Flood } from '../hping3';
import { Lab, type StackProcess } from '../lab';
import { NlbLab, timelineSvg, type ScenarioResult as NlbScenarioResult } from '../nlb-lab';
import { PmtuLab } from '../pmtu-lab';
import { curl, iperf3, ping, requireInLab, shaEcho, tlsBurst, udpEcho } from '../traffic';
import { boundText, evaluate, type ExpectationResult, type StepResult, type Value } from './evaluate';
import { applies, type Action, type Origin, type Part, type Scenario, type Step } from './format';

export type { ExpectationResult, StepResult, Value } from './evaluate';

export interface PartResult {
  name: string;
  topology: string;
  modes: Record<string, string>;
  ok: boolean;
  ms: number;
  steps: StepResult[];
  expectations: ExpectationResult[];
  chart?: string;
  /** The part could not run (the lab or the stack did not start). */
  error?: string;
}

export interface ScenarioRunResult {
  file: string;
  name: string;
  ok: boolean;
  ms: number;
  parts: PartResult[];
}

export interface RunOptions {
  /** Progress lines (stderr in the CLI). */
  log: (line: string) => void;
  /** The runner's clock in ms (performance.now in the CLI); timed steps are scheduled on it. */
  clock: () => number;
  /** Where charts go (default the system's temporary directory). */
  chartDir?: string;
}

/** The stack's addresses per topology (what `to` defaults to). */
const STACK_ADDR: Record<string, string> = { tun: '198.18.0.2', tap: '198.18.2.2', firewall: MEDIA };

interface Env {
  lab: Lab;
  /** Namespaces traffic starts from. */
  origin(o: Origin): string;
  /** The default target of traffic. */
  target: string;
  /** `faultstack ARGS` against this part's stack; throws with its stderr on a non-zero exit. */
  control(args: string[]): Promise<string>;
  /** The same, returning the exit and stderr (for connect, whose failure is a result). */
  controlRaw(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }>;
  certDir?: string;
  pmtu?: PmtuLab;
  firewall?: FirewallLab;
  nlb?: NlbLab;
  hasStack: boolean;
  cleanup(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

function oneLine(s: string, max = 200): string {
  const t = s
    .split('\n')
    .map((x) => x.trim())
    .filter(Boolean)
    .join(' ');
  return t.length > max ? t.slice(0, max - 3) + '...' : t;
}

function mbit(bps: number): string {
  return `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

// ------------------------------------------------------------------------------ labs

function stackArgs(part: Part): string[] {
  const st = part.stack;
  const a: string[] = ['--offloads', st.offloads ? 'on' : 'off'];
  if (st.profile) a.push('--profile', st.profile);
  for (const [f, m] of Object.entries(st.faults)) a.push('--fault', `${f}=${m}`);
  for (const [k, v] of Object.entries(st.params)) a.push('--param', `${k}=${v}`);
  for (const i of st.impair) a.push('--impair', i);
  return a;
}

function services(part: Part): string {
  if (part.stack.services) return part.stack.services.length ? part.stack.services.join(',') : 'none';
  const s = new Set(['echo', 'discard', 'http', 'iperf3']);
  if (part.steps.some((x) => x.action.kind === 'tls-burst')) s.add('mtls');
  return [...s].join(',');
}

async function buildEnv(part: Part, log: (s: string) => void): Promise<Env> {
  const t = part.lab.topology;
  if (t === 'pmtu') {
    const pl = await PmtuLab.create({ tag: 'scn', clients: part.lab.clients, path: part.lab.path });
    try {
      await pl.startStack({
        mode: (part.stack.faults.kb898060 ?? 'hotfixed') as 'buggy' | 'hotfixed',
        params: part.stack.params,
        offloads: part.stack.offloads,
        extraArgs: part.stack.impair.flatMap((i) => ['--impair', i]),
      });
    } catch (e) {
      await pl.cleanup().catch(() => {});
      throw e;
    }
    return {
      lab: pl.lab,
      origin: () => pl.ns.c,
      target: '198.18.0.2',
      pmtu: pl,
      hasStack: true,
      control: (args) => pl.cli(args),
      controlRaw: (args, timeoutMs) => pl.lab.cli(pl.ns.k, [...args, '--control', pl.controlPath], { timeoutMs }),
      cleanup: () => pl.cleanup(),
    };
  }
  if (t === 'firewall') {
    const fl = await FirewallLab.create({ tag: 'scn' });
    try {
      await fl.startMediaServer();
      await fl.startFirewall({
        mode: (part.stack.faults.kb319381 ?? 'hotfixed') as 'buggy' | 'hotfixed',
        params: part.stack.params,
        offloads: part.stack.offloads,
        extraArgs: part.stack.impair.flatMap((i) => ['--impair', i]),
      });
    } catch (e) {
      await fl.cleanup().catch(() => {});
      throw e;
    }
    return {
      lab: fl.lab,
      origin: () => fl.ns.in,
      target: MEDIA,
      firewall: fl,
      hasStack: true,
      control: async (args) => (await fl.cli(args)).stdout,
      controlRaw: (args, timeoutMs) => fl.lab.cli(fl.ns.fw, [...args, '--control', fl.controlPath], { timeoutMs }),
      cleanup: () => fl.cleanup(),
    };
  }
  if (t === 'nlb') {
    const nl = await NlbLab.create({ hosts: part.lab.hosts, clients: part.lab.clients, tag: 'scn', log, mode: part.lab.nlbMode });
    const none = async (): Promise<never> => {
      throw new Error('topology nlb has no single stack to ask');
    };
    return {
      lab: nl.lab,
      origin: () => {
        throw new Error('topology nlb has no origin namespace');
      },
      target: '198.18.70.100',
      nlb: nl,
      hasStack: false,
      control: none,
      controlRaw: none,
      cleanup: () => nl.cleanup(),
    };
  }
  // tun and tap: the lab built here.
  const lab = await Lab.create('scn');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-scn-'));
  const ctl = path.join(tmp, 'ctl.sock');
  const cleanup = async () => {
    try {
      await lab.cleanup();
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  };
  try {
    const origins: Partial<Record<Origin, string>> = {};
    let stackNs: string;
    let devArgs: string[];
    if (t === 'tap') {
      stackNs = await lab.addNamespace('l2');
      const vm = await lab.addNamespace('vm');
      const br = await lab.bridge('l2', part.lab.mtu ? { mtu: part.lab.mtu } : {});
      await lab.vethToBridge('vm', 'l2', br, { addr: '198.18.2.1/24', ...(part.lab.mtu ? { mtu: part.lab.mtu } : {}) });
      origins.vm = vm;
      devArgs = ['--tap', lab.ifname('t'), '--bridge', br, '--addr', '198.18.2.2/24'];
    } else {
      stackNs = await lab.addNamespace('k');
      origins.host = stackNs;
      devArgs = ['--tun', lab.ifname('t'), '--addr', '198.18.0.2/24', '--host-addr', '198.18.0.1/24'];
      if (part.lab.routers.length)
        origins.client = await buildRouters(
          lab,
          stackNs,
          part.lab.routers.map((r) => r.mtu),
        );
    }
    if (part.lab.mtu) devArgs.push('--mtu', String(part.lab.mtu));
    let env: NodeJS.ProcessEnv | undefined;
    let certDir: string | undefined;
    if (services(part).includes('mtls')) {
      certDir = path.join(tmp, 'certs');
      const r = await lab.cli(null, ['certs', '--out', certDir], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`faultstack certs --out ${certDir}: ${oneLine(r.stderr)}`);
      env = { FAULTSTACK_CERT_DIR: certDir };
    }
    const stack: StackProcess = await lab.startStack(stackNs, [...devArgs, '--services', services(part), '--control', ctl, ...stackArgs(part)], {
      timeoutMs: 30_000,
      env,
    });
    log(`  stack: ${stack.readyLine.trim()}`);
    return {
      lab,
      origin: (o) => {
        const ns = origins[o];
        if (!ns) throw new Error(`this lab has no ${o} namespace`);
        return ns;
      },
      target: STACK_ADDR[t]!,
      certDir,
      hasStack: true,
      control: async (args) => {
        const r = await lab.cli(stackNs, [...args, '--control', ctl], { timeoutMs: 20_000 });
        if (r.code !== 0) throw new Error(`faultstack ${args.join(' ')} exited ${r.code}: ${oneLine(r.stderr)}`);
        return r.stdout;
      },
      controlRaw: (args, timeoutMs) => lab.cli(stackNs, [...args, '--control', ctl], { timeoutMs }),
      cleanup,
    };
  } catch (e) {
    await cleanup().catch(() => {});
    throw e;
  }
}

/**
 * Linux routers in a line behind the stack's kernel side (namespace k, which forwards):
 * k --1500-- r1 --mtus[0]-- r2 ... rN --mtus[N-1]-- c. Link j is 198.18.(10+j).0/24, .1 on the
 * stack's side. Each router sends ICMP fragmentation needed for a packet too big for its
 * outgoing link (RFC 1191), unlimited by rate. Returns the client namespace c.
 */
async function buildRouters(lab: Lab, k: string, mtus: number[]): Promise<string> {
  const chain = [k];
  for (let i = 0; i < mtus.length; i++) chain.push(await lab.addNamespace(`r${i + 1}`));
  chain.push(await lab.addNamespace('c'));
  const links = chain.length - 1;
  for (let j = 1; j <= links; j++) {
    const mtu = j === 1 ? 1500 : mtus[j - 2]!;
    await lab.veth(chain[j - 1]!, chain[j]!, { addrA: `198.18.${10 + j}.1/24`, addrB: `198.18.${10 + j}.2/24`, mtu });
  }
  for (let i = 0; i < chain.length - 1; i++) {
    await lab.sysctl(chain[i]!, 'net.ipv4.ip_forward', 1);
    await lab.sysctl(chain[i]!, 'net.ipv4.icmp_ratelimit', 0);
    // Every subnet to the right of this namespace goes to its right neighbour.
    for (let j = i + 2; j <= links; j++) await lab.ip(chain[i]!, 'route', 'add', `198.18.${10 + j}.0/24`, 'via', `198.18.${10 + i + 1}.2`);
    // Everything else (the stack's subnet) goes back to the left.
    if (i > 0) await lab.ip(chain[i]!, 'route', 'add', 'default', 'via', `198.18.${10 + i}.1`);
  }
  await lab.ip(chain[links]!, 'route', 'add', 'default', 'via', `198.18.${10 + links}.1`);
  return chain[links]!;
}

// ------------------------------------------------------------------------------ steps

/** `faultstack stats --json`, and on a firewall `fw summary --json` under `fw` (its counters and drops by reason). */
async function statsDoc(env: Env): Promise<Record<string, unknown>> {
  const doc = JSON.parse(await env.control(['stats', '--json'])) as Record<string, unknown>;
  if (env.firewall) doc.fw = JSON.parse(await env.control(['fw', 'summary', '--json']));
  return doc;
}

/** Every counter: the stack's, and a firewall's (FwDropped, ...) with its drops as FwDrop:<reason>. */
async function counters(env: Env): Promise<Record<string, number>> {
  return countersOf(await statsDoc(env));
}

function countersOf(doc: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = { ...((doc.counters as Record<string, number> | undefined) ?? {}) };
  const fw = doc.fw as { counters?: Record<string, number>; drops?: Record<string, number> } | undefined;
  if (fw) {
    Object.assign(out, fw.counters ?? {});
    for (const [reason, n] of Object.entries(fw.drops ?? {})) out[`FwDrop:${reason}`] = n;
  }
  return out;
}

/** Runs one step's action; its values, its own verdict and a figure for the report. */
async function runAction(
  a: Action,
  env: Env,
  part: Part,
  chartBase: string,
  extra: { nlb?: NlbScenarioResult },
): Promise<{ ok: boolean; values: Record<string, Value>; figure: string }> {
  const to = (x?: string) => x ?? env.target;
  switch (a.kind) {
    case 'set':
      await env.control(['fault', 'set', a.fault, a.mode]);
      return { ok: true, values: {}, figure: `${a.fault} ${a.mode}` };
    case 'param':
      await env.control(['param', 'set', a.name, String(a.value)]);
      return { ok: true, values: {}, figure: `${a.name} = ${a.value}` };
    case 'impair':
      if (a.op === 'clear') {
        await env.control(['impair', 'clear']);
        return { ok: true, values: {}, figure: 'impairments cleared' };
      }
      return { ok: true, values: {}, figure: oneLine(await env.control(['impair', 'add', ...a.spec.split(/\s+/)])) || a.spec };
    case 'wait':
      await sleep(a.ms);
      return { ok: true, values: {}, figure: `${a.ms / 1000} s` };
    case 'unlock':
      return { ok: true, values: {}, figure: oneLine(await env.control(['unlock'])) };
    case 'path':
      await env.pmtu!.usePath(a.path);
      return { ok: true, values: {}, figure: `r1 forwards over ${a.path}` };
    case 'ping': {
      await requireInLab(env.lab, 'ping');
      const r = await ping(env.lab, env.origin(a.from), to(a.to), { count: a.count, intervalMs: a.intervalMs, waitMs: a.waitMs });
      return { ok: r.received === r.sent, values: { ...r }, figure: `${r.received}/${r.sent} replies${r.avgMs !== null ? `, avg ${r.avgMs} ms` : ''}` };
    }
    case 'curl': {
      await requireInLab(env.lab, 'curl');
      const r = await curl(env.lab, env.origin(a.from), `http://${to(a.to)}${a.path}`, { maxTimeMs: a.maxTimeMs });
      const ok = r.exit === 0 && r.httpCode === 200;
      return {
        ok,
        values: { httpCode: r.httpCode, bytes: r.bytes, exit: r.exit, bitsPerSecond: r.bitsPerSecond },
        figure: ok ? `HTTP ${r.httpCode}, ${r.bytes} bytes, ${mbit(r.bitsPerSecond)}` : `curl exit ${r.exit}, HTTP ${r.httpCode}: ${r.stderr}`,
      };
    }
    case 'iperf3': {
      await requireInLab(env.lab, 'iperf3');
      const r = await iperf3(env.lab, env.origin(a.from), to(a.to), {
        seconds: Math.round(a.durationMs / 1000),
        reverse: a.reverse,
        udp: a.udp,
        bitrate: a.bitrate,
      });
      return {
        ok: r.bitsPerSecond > 0,
        values: { ...r },
        figure: `${mbit(r.bitsPerSecond)}${r.retransmits !== null ? `, ${r.retransmits} retransmits` : ''}${r.lostPercent !== null ? `, ${r.lostPercent.toFixed(1)}% lost` : ''}`,
      };
    }
    case 'hping3': {
      await requireInLab(env.lab, 'hping3');
      const sources = Array.from({ length: a.sources }, (_, i) => `198.18.100.${i + 1}`);
      const r = await runHping3Flood({ target: `${env.target}:${a.port}`, sources, count: a.count, durationMs: a.durationMs, netns: env.origin(a.from) });
      return {
        ok: r.transmitted > 0,
        values: { transmitted: r.transmitted, received: r.received, pps: Math.round(r.pps) },
        figure: `${r.transmitted} SYNs from ${a.sources} spoofed sources, ${Math.round(r.pps)}/s`,
      };
    }
    case 'sha-peer': {
      const r = await shaEcho(env.lab, env.origin(a.from), to(a.to), a.port, a.bytes, a.timeoutMs);
      if (r.error)
        return { ok: false, values: { match: false, sentBytes: r.sentBytes, receivedBytes: r.receivedBytes, bitsPerSecond: 0 }, figure: `failed: ${r.error}` };
      return {
        ok: r.match,
        values: { match: r.match, sentBytes: r.sentBytes, receivedBytes: r.receivedBytes, bitsPerSecond: r.bitsPerSecond },
        figure: r.match ? `${a.bytes} bytes, sha256 match, ${mbit(r.bitsPerSecond)}` : `MISMATCH: sent ${r.sentBytes}, got back ${r.receivedBytes}`,
      };
    }
    case 'udp-echo': {
      const r = await udpEcho(env.lab, env.origin(a.from), to(a.to), 7, a.count);
      return {
        ok: r.echoed === r.sent && r.wrong === 0,
        values: { ...r },
        figure: `${r.echoed}/${r.sent} echoed intact${r.wrong ? `, ${r.wrong} wrong` : ''}`,
      };
    }
    case 'connect': {
      const args = ['connect', a.to, ...(a.timeoutMs !== undefined ? ['--timeout', String(a.timeoutMs / 1000)] : [])];
      const r = await env.controlRaw(args, (a.timeoutMs ?? 180_000) + 20_000);
      const err = oneLine(r.stderr);
      const outcome =
        r.code === 0
          ? 'connected'
          : /no outcome/.test(err)
            ? 'no-outcome'
            : /ETIMEDOUT/.test(err)
              ? 'timeout'
              : /ECONNREFUSED/.test(err)
                ? 'refused'
                : /EHOSTUNREACH/.test(err)
                  ? 'unreachable'
                  : 'error';
      return {
        ok: outcome === 'connected',
        values: { outcome },
        figure: r.code === 0 ? oneLine(r.stdout) : `${outcome}: ${err.replace(/^faultstack connect \S+: /, '')}`,
      };
    }
    case 'tls-burst': {
      if (!env.certDir) throw new Error('tls-burst needs the mtls service (stack.services)');
      const r = await tlsBurst(env.lab, env.origin(a.from), env.target, 5061, env.certDir, a.count, a.timeoutMs);
      return {
        ok: r.served === r.count,
        values: { ...r },
        figure: `${a.count} clients: ${r.served} served, ${r.reset} reset, ${r.refused} refused${r.other ? `, ${r.other} other` : ''}`,
      };
    }
    case 'downloads': {
      const pl = env.pmtu!;
      const jobs = pl.clients.slice(a.first, a.first + a.count).map((local) => ({ local, bytes: a.bytes }));
      const res = await pl.downloadAll(jobs, { concurrency: a.concurrency, stallMs: a.stallMs });
      const completed = res.filter((r) => r.outcome === 'ok').length;
      const stalled = res.filter((r) => r.outcome === 'stalled').length;
      const failed = res.length - completed - stalled;
      return {
        ok: completed === a.count,
        values: { count: a.count, completed, stalled, failed },
        figure: `${completed}/${a.count} downloads of ${a.bytes} bytes completed, ${stalled} stalled${failed ? `, ${failed} failed` : ''}`,
      };
    }
    case 'play': {
      const r = await env.firewall!.play([
        '--server',
        MEDIA,
        '--via',
        'fwc',
        '--firewall',
        FW_IN,
        '--max-items',
        String(a.items),
        '--grace-ms',
        String(a.graceMs),
      ]);
      return {
        ok: r.played === a.items,
        values: { played: r.played, stalled: r.stalled, addrInUse: r.addrInUse },
        figure: `${r.played}/${a.items} playlist items played, ${r.stalled} stalled, ${r.addrInUse} WSAEADDRINUSE`,
      };
    }
    case 'nlb-moves': {
      const fault = (part.stack.faults.kb972183 ?? 'hotfixed') as 'buggy' | 'hotfixed';
      const r = await env.nlb!.runScenario({ fault, variant: a.variant, moves: a.moves, dpd: a.dpd, watchMs: a.watchMs });
      extra.nlb = r;
      fs.writeFileSync(`${chartBase}-nlb.svg`, timelineSvg([r]));
      return {
        ok: r.served === r.clients && r.refusals === 0,
        values: { served: r.served, spanning: r.spanning, refusals: r.refusals, timeToOneHostMs: r.timeToOneHostMs },
        figure: `${r.served}/${r.clients} served, ${r.refusals} refusal(s), ${r.spanning} with state on >1 host, on one host ${r.timeToOneHostMs === null ? 'not within the watch' : `after ${(r.timeToOneHostMs / 1000).toFixed(1)} s`}`,
      };
    }
  }
}

// ------------------------------------------------------------------------------ the chart

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** One bar per step that measured a throughput, on one scale; green when the step passed its own check. */
export function throughputSvg(title: string, steps: StepResult[]): string {
  const bars = steps.filter((s) => typeof s.values.bitsPerSecond === 'number');
  const rowH = 22,
    labelW = 170,
    plotW = 520,
    top = 34;
  const height = top + bars.length * rowH + 30;
  const max = Math.max(1, ...bars.map((b) => b.values.bitsPerSecond as number));
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + plotW + 140}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="6" y="18" font-size="13" font-weight="bold">${esc(title)}: throughput per step</text>`,
  ];
  bars.forEach((b, i) => {
    const bps = b.values.bitsPerSecond as number;
    const y = top + i * rowH;
    const w = Math.max(1, (bps / max) * plotW);
    out.push(`<text x="6" y="${y + 14}">${esc(`${b.name} (${b.kind}, ${(b.startMs / 1000).toFixed(1)} s)`)}</text>`);
    out.push(`<rect x="${labelW}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${b.ok ? '#4a9a5a' : '#d04040'}"/>`);
    out.push(`<text x="${labelW + w + 6}" y="${y + 14}">${esc(mbit(bps))}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ------------------------------------------------------------------------------ a part

async function runPart(part: Part, o: RunOptions, chartBase: string): Promise<PartResult> {
  const modes: Record<string, string> = { ...part.stack.faults };
  const t0 = o.clock();
  const result: PartResult = { name: part.name, topology: part.lab.topology, modes, ok: false, ms: 0, steps: [], expectations: [] };
  o.log(
    `[scenario] ${part.name}: building the ${part.lab.topology} lab${
      Object.keys(modes).length
        ? ` (${Object.entries(modes)
            .map(([f, m]) => `${f}=${m}`)
            .join(', ')})`
        : ''
    }`,
  );
  let env: Env;
  try {
    env = await buildEnv(part, o.log);
  } catch (e) {
    result.error = oneLine((e as Error).message, 400);
    result.ms = o.clock() - t0;
    o.log(`  FAILED to start: ${result.error}`);
    result.expectations = part.expect.map((x) => ({
      text: x.text,
      line: x.line,
      result: applies(x, part) ? 'FAIL' : 'skipped',
      expected: boundText(x),
      actual: null,
      note: 'the lab did not start',
    }));
    return result;
  }
  const extra: { nlb?: NlbScenarioResult } = {};
  const during = new Map<string, { before?: Record<string, number>; after?: Record<string, number> }>();
  for (const x of part.expect) if (x.kind === 'counter' && x.during) during.set(x.during, {});
  try {
    const startCounters = env.hasStack ? await counters(env) : {};
    const start = o.clock();
    const rel = () => o.clock() - start;
    const runStep = async (s: Step): Promise<void> => {
      const snap = during.get(s.name);
      if (snap) snap.before = await counters(env).catch(() => undefined);
      const begin = rel();
      o.log(`  ${(begin / 1000).toFixed(1).padStart(5)} s  ${s.name}: ${describe(s.action)}`);
      let r: StepResult;
      try {
        const out = await runAction(s.action, env, part, chartBase, extra);
        r = { name: s.name, kind: s.action.kind, startMs: begin, endMs: rel(), ...out };
      } catch (e) {
        r = {
          name: s.name,
          kind: s.action.kind,
          startMs: begin,
          endMs: rel(),
          ok: false,
          values: {},
          figure: 'failed',
          error: oneLine((e as Error).message, 400),
        };
      }
      if (snap) snap.after = await counters(env).catch(() => undefined);
      result.steps.push(r);
      o.log(`  ${(r.endMs / 1000).toFixed(1).padStart(5)} s  ${s.name}: ${r.error ? `FAILED: ${r.error}` : r.figure}`);
    };
    const timed = part.steps
      .filter((s) => s.at !== undefined)
      .map(async (s) => {
        await sleep(s.at! - rel());
        await runStep(s);
      });
    const sequence = (async () => {
      for (const s of part.steps.filter((x) => x.at === undefined)) await runStep(s);
    })();
    await Promise.all([sequence, ...timed]);
    result.steps.sort((a, b) => part.steps.findIndex((s) => s.name === a.name) - part.steps.findIndex((s) => s.name === b.name));
    const endStats = env.hasStack ? await statsDoc(env) : {};
    const endCounters = countersOf(endStats);
    const events = env.hasStack
      ? (await env.control(['events', '--json']))
          .split('\n')
          .filter((l) => l.trim())
          .map((l) => JSON.parse(l) as { kind: string })
      : [];
    result.expectations = evaluate(part, { startCounters, endCounters, during, stats: endStats, events, steps: result.steps });
  } catch (e) {
    result.error = oneLine((e as Error).message, 400);
  } finally {
    try {
      await env.cleanup();
    } catch (e) {
      result.error = result.error ?? `cleanup: ${oneLine((e as Error).message)}`;
    }
  }
  if (result.steps.filter((s) => typeof s.values.bitsPerSecond === 'number').length >= 2) {
    result.chart = `${chartBase}.svg`;
    fs.writeFileSync(result.chart, throughputSvg(part.name, result.steps));
  } else if (extra.nlb) result.chart = `${chartBase}-nlb.svg`;
  result.ms = o.clock() - t0;
  result.ok = !result.error && result.expectations.every((x) => x.result !== 'FAIL');
  for (const x of result.expectations) {
    if (x.result !== 'skipped') o.log(`  ${x.result === 'pass' ? 'pass' : 'FAIL'}  ${x.text} ${x.expected}: ${x.actual}${x.note ? ` (${x.note})` : ''}`);
  }
  return result;
}

export function describe(a: Action): string {
  switch (a.kind) {
    case 'set':
      return `fault set ${a.fault} ${a.mode}`;
    case 'param':
      return `param set ${a.name} ${a.value}`;
    case 'impair':
      return a.op === 'clear' ? 'impair clear' : `impair add ${a.spec}`;
    case 'wait':
      return `wait ${a.ms / 1000} s`;
    case 'unlock':
      return 'unlock';
    case 'path':
      return `r1 forwards over path ${a.path}`;
    case 'ping':
      return `ping -c ${a.count} from ${a.from}${a.to ? ` to ${a.to}` : ''}`;
    case 'curl':
      return `curl ${a.path} from ${a.from}`;
    case 'iperf3':
      return `iperf3 -t ${a.durationMs / 1000}${a.reverse ? ' -R' : ''}${a.udp ? ` -u -b ${a.bitrate ?? '10M'}` : ''} from ${a.from}`;
    case 'hping3':
      return `hping3 SYN flood to port ${a.port}: ${a.count} packets within ${a.durationMs / 1000} s`;
    case 'sha-peer':
      return `sha-peer: ${a.bytes} bytes to port ${a.port} and back`;
    case 'udp-echo':
      return `${a.count} datagrams to UDP echo`;
    case 'connect':
      return `faultstack connect ${a.to}`;
    case 'tls-burst':
      return `tls-burst: ${a.count} mutual-TLS clients`;
    case 'downloads':
      return `${a.count} downloads of ${a.bytes} bytes from client addresses ${a.first}..${a.first + a.count - 1}`;
    case 'play':
      return `mms-player: ${a.items} playlist items through the Firewall Client`;
    case 'nlb-moves':
      return `${a.moves} move(s) of every client (${a.variant})`;
  }
}

/** Runs every part of a scenario, one after another; each in a lab of its own. */
export async function runScenario(s: Scenario, o: RunOptions): Promise<ScenarioRunResult> {
  const t0 = o.clock();
  const dir = o.chartDir ?? os.tmpdir();
  const slug = (x: string) => x.replace(/[^\w.-]+/g, '-').slice(0, 60);
  const parts: PartResult[] = [];
  for (const [i, p] of s.parts.entries()) {
    const modes = Object.entries(p.stack.faults)
      .map(([f, m]) => `${f}-${m}`)
      .join('-');
    parts.push(await runPart(p, o, path.join(dir, `faultstack-scenario-${slug(s.name)}${s.parts.length > 1 ? `-${i + 1}` : ''}${modes ? `-${modes}` : ''}`)));
  }
  return { file: s.file, name: s.name, ok: parts.every((p) => p.ok), ms: o.clock() - t0, parts };
}
