/**
 * `faultstack stats`: counters, connection counts per state, listeners, lock state and
 * fault modes; connection rows (like `ss -tan`) on request, with ss-like filters; a
 * watch mode that prints what the counters did each interval.
 */
import type { ConnectionRow, FaultState, LockState, StatsResult } from '../../../stack/control/protocol';
import { ControlCommand, STATE_ALIASES } from '../../../stack/control/protocol';
import { parseIpv4 } from '../../../stack/wire/addr';
import { decimal, defineCommand, integer, parseArgs, printHelp, switchFlag, text, usageError, valueFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { cell, flattenCounters, formatClock, formatDuration, formatNumber, isZero, objectTable, ssState, table } from '../format';

const STATES = Object.keys(STATE_ALIASES);

export const STATS_SPEC = defineCommand({
  name: 'stats',
  summary: "Show a running stack's counters, connection counts, listeners, lock state and fault modes.",
  details:
    'By default connections are counted per state, not listed. --limit N or --all lists them (like ss -tan),\n' +
    '--state, --port and --peer filter them (a filter alone lists up to 100). --watch SEC prints, every SEC seconds,\n' +
    'the counters that changed (delta and rate), --count N times. --gc forces two full garbage collections in the\n' +
    'stack first and adds the memory live objects hold (heapUsedAfterGc, arrayBuffersAfterGc).',
  flags: {
    ...controlFlags,
    all: switchFlag('list every connection, and show counters that are zero'),
    limit: valueFlag({ valueName: 'N', help: 'list up to N connections', ...integer(0, 10_000_000) }),
    state: valueFlag({
      valueName: 'STATE',
      help: `only connections in STATE (${STATES.join(', ')})`,
      ...text(`one of ${STATES.join(', ')}`, (s) => (STATE_ALIASES[s.toLowerCase()] ? undefined : `must be one of ${STATES.join(', ')}`)),
    }),
    port: valueFlag({ valueName: 'PORT', help: 'only connections with this local or remote port', ...integer(1, 65535) }),
    peer: valueFlag({
      valueName: 'ADDR',
      help: 'only connections from this remote ADDR, ADDR:PORT or CIDR',
      ...text('an IPv4 address, ADDR:PORT or a CIDR such as 198.18.100.0/24', checkPeer),
    }),
    gc: switchFlag('force a full GC in the stack first and report the memory after it'),
    watch: valueFlag({ valueName: 'SEC', help: 'every SEC seconds, print the counters that changed', ...decimal(0.1, 3600, 'seconds') }),
    count: valueFlag({ valueName: 'N', help: 'with --watch: stop after N intervals', ...integer(1, 1_000_000) }),
  },
});

function checkPeer(raw: string): string | undefined {
  const m = /^([0-9.]+)(?:\/(\d{1,2})|:(\d{1,5}))?$/.exec(raw.trim());
  const ok =
    !!m && parseIpv4(m[1]!) !== null && (m[2] === undefined || Number(m[2]) <= 32) && (m[3] === undefined || (Number(m[3]) >= 1 && Number(m[3]) <= 65535));
  return ok ? undefined : 'must be an IPv4 address, ADDR:PORT or a CIDR such as 198.18.100.0/24';
}

function endpoint(text: string | undefined, addr: string | undefined, port: number | undefined): string {
  if (text) return text;
  if (addr === undefined && port === undefined) return '*:*';
  return `${addr ?? '*'}:${port ?? '*'}`;
}

const CONN_FIELDS = new Set(['state', 'recvQ', 'sendQ', 'local', 'peer', 'localAddress', 'localPort', 'remoteAddress', 'remotePort']);

function renderConnections(rows: ConnectionRow[]): string {
  // Anything else a row carries (rtt, cwnd, retrans...) goes in a last column, as `ss -i` shows it.
  const info = (c: ConnectionRow) =>
    Object.entries(c)
      .filter(([k, v]) => !CONN_FIELDS.has(k) && v !== undefined && v !== null)
      .map(([k, v]) => `${k}=${cell(v)}`)
      .join(' ');
  const body = rows.map((c) => [
    ssState(String(c.state ?? '?')),
    cell(c.recvQ ?? 0),
    cell(c.sendQ ?? 0),
    endpoint(c.local, c.localAddress, c.localPort),
    endpoint(c.peer, c.remoteAddress, c.remotePort),
    info(c),
  ]);
  return table([['State', 'Recv-Q', 'Send-Q', 'Local Address:Port', 'Peer Address:Port', ''], ...body], { right: [1, 2] });
}

function renderLock(l: LockState, now: number): string {
  const name = l.name ?? 'connection-table lock';
  const extra: string[] = [];
  if (typeof l.acquisitions === 'number') extra.push(`${l.acquisitions} acquisitions`);
  if (typeof l.blockedPackets === 'number' && l.blockedPackets > 0) extra.push(`${l.blockedPackets} packets blocked`);
  const tail = extra.length ? ` (${extra.join(', ')})` : '';
  if (!l.held) return `${name}: free${tail}\n`;
  let s = `${name}: HELD`;
  if (l.holder) s += ` by ${l.holder}`;
  const since = typeof l.since === 'string' ? Date.parse(l.since) : l.since;
  const heldFor = typeof l.heldForMs === 'number' ? l.heldForMs : typeof since === 'number' && !Number.isNaN(since) ? now - since : undefined;
  if (typeof since === 'number' && !Number.isNaN(since)) s += ` since ${formatClock(since)}`;
  if (heldFor !== undefined) s += ` (${formatDuration(heldFor)})`;
  if (Array.isArray(l.waiters)) s += `, ${l.waiters.length} waiting${l.waiters.length ? `: ${l.waiters.join(', ')}` : ''}`;
  else if (typeof l.waiters === 'number') s += `, ${l.waiters} waiting`;
  return s + tail + '\n';
}

function faultList(f: StatsResult['faults']): FaultState[] {
  if (!f) return [];
  if (Array.isArray(f)) return f.filter((x) => x && typeof x === 'object').map((x) => ({ id: String(x.id), alias: x.alias, mode: String(x.mode) }));
  return Object.entries(f).map(([id, v]) => (typeof v === 'string' ? { id, mode: v } : { id, alias: v?.alias, mode: String(v?.mode) }));
}

/** The human form of a stats reply; every part is optional. */
export function renderStats(r: StatsResult, opts: { all?: boolean; now?: number } = {}): string {
  const now = opts.now ?? Date.now();
  const out: string[] = [];
  const head: string[] = [];
  if (r.tun) head.push(`on ${r.tun}`);
  if (r.addr) head.push(String(r.addr));
  if (typeof r.uptimeMs === 'number') head.push(`up ${formatDuration(r.uptimeMs)}`);
  if (head.length) out.push(`faultstack ${head.join(', ')}\n`);

  if (r.counters && typeof r.counters === 'object') {
    const all = flattenCounters(r.counters);
    const shown = opts.all ? all : all.filter(([, v]) => !isZero(v));
    const hidden = all.length - shown.length;
    out.push(`Counters${hidden ? ` (${hidden} zero counters hidden; --all shows them)` : ''}:\n`);
    out.push(
      shown.length
        ? table(
            shown.map(([k, v]) => [k, formatNumber(v)]),
            { right: [1], indent: '  ' },
          )
        : '  (all zero)\n',
    );
  }

  const counted = typeof r.connectionCount === 'number' ? r.connectionCount : undefined;
  const states = r.states && typeof r.states === 'object' ? Object.entries(r.states as Record<string, number>) : [];
  if (counted !== undefined) {
    const per = states.map(([k, v]) => `${ssState(k)} ${formatNumber(v)}`).join(', ');
    out.push(`\nConnections: ${formatNumber(counted)}${per ? ` (${per})` : ''}\n`);
  }

  const link = r.link as { mac?: string; sourceMac?: string; bridge?: string | null; gateway?: string | null; counters?: Record<string, unknown> } | undefined;
  if (link && typeof link === 'object') {
    const where = [
      link.mac ? `mac ${link.mac}` : '',
      link.sourceMac && link.sourceMac !== link.mac ? `sending as ${link.sourceMac}` : '',
      link.bridge ? `bridge ${link.bridge}` : '',
      link.gateway ? `gateway ${link.gateway}` : '',
    ]
      .filter(Boolean)
      .join(', ');
    const all = link.counters ? flattenCounters(link.counters) : [];
    const shown = opts.all ? all : all.filter(([, v]) => !isZero(v));
    out.push(`\nEthernet (${where}; \`faultstack neigh\` shows the ARP table):\n`);
    if (shown.length)
      out.push(
        table(
          shown.map(([k, v]) => [k, formatNumber(v)]),
          { right: [1], indent: '  ' },
        ),
      );
  }

  if (Array.isArray(r.connections)) {
    const rows = r.rows as { matched?: number; sent?: number } | undefined;
    const more =
      rows && typeof rows.matched === 'number' && rows.matched > r.connections.length
        ? `, ${formatNumber(rows.matched - r.connections.length)} more match: --limit N or --all`
        : '';
    const head =
      rows && typeof rows.matched === 'number' ? `${r.connections.length} of ${formatNumber(rows.matched)} matching${more}` : String(r.connections.length);
    out.push(`\nConnections (${head}):\n`);
    out.push(r.connections.length ? renderConnections(r.connections) : '  (none)\n');
  } else if (counted !== undefined && counted > 0) {
    out.push('  (--limit N or --all lists them; --state, --port, --peer filter)\n');
  }

  if (Array.isArray(r.listeners) && r.listeners.length) {
    out.push(`\nListeners (${r.listeners.length}):\n`);
    out.push(objectTable(r.listeners.filter((x): x is Record<string, unknown> => !!x && typeof x === 'object')));
  }

  const locks = [...(r.lock ? [r.lock] : []), ...(Array.isArray(r.locks) ? r.locks : [])];
  if (locks.length) {
    out.push('\n');
    for (const l of locks) out.push(renderLock(l, now));
  }

  const faults = faultList(r.faults);
  if (faults.length) {
    out.push('\nFaults:\n');
    out.push(
      table(
        faults.map((f) => [f.id, f.alias ?? '', f.mode]),
        { indent: '  ' },
      ),
    );
  }

  if (r.params && typeof r.params === 'object' && Object.keys(r.params).length) {
    out.push('\nParameters:\n');
    out.push(
      table(
        Object.entries(r.params).map(([k, v]) => [k, cell(v)]),
        { indent: '  ' },
      ),
    );
  }
  if (r.leak && typeof r.leak === 'object' && Object.keys(r.leak).length) {
    out.push('\nLeak (KB 903927 reset path):\n');
    out.push(
      table(
        flattenCounters(r.leak).map(([k, v]) => [k, formatNumber(v)]),
        { right: [1], indent: '  ' },
      ),
    );
  }
  const mem: [string, unknown][] = [
    ['heapUsedAfterGc', r.heapUsedAfterGc],
    ['arrayBuffersAfterGc', r.arrayBuffersAfterGc],
  ];
  const memShown = mem.filter((e): e is [string, number] => typeof e[1] === 'number');
  if (memShown.length) {
    out.push('\nMemory after a full GC (bytes):\n');
    out.push(
      table(
        memShown.map(([k, v]) => [k, formatNumber(v)]),
        { right: [1], indent: '  ' },
      ),
    );
  }
  if (out.length === 0) out.push('(the stack sent an empty stats reply; --json shows it raw)\n');
  return out.join('');
}

/** Counters (flattened) that changed between two samples: [name, value, delta]. */
export function counterDeltas(before: Record<string, unknown> | undefined, after: Record<string, unknown> | undefined): [string, number, number][] {
  const b = new Map(flattenCounters(before ?? {}).map(([k, v]) => [k, Number(v)]));
  const out: [string, number, number][] = [];
  for (const [k, v] of flattenCounters(after ?? {})) {
    const now = Number(v),
      was = b.get(k) ?? 0;
    if (Number.isFinite(now) && now !== was) out.push([k, now, now - was]);
  }
  return out;
}

/** The human form of one watch interval. */
export function renderDeltas(deltas: [string, number, number][], intervalMs: number, at: number): string {
  const secs = intervalMs / 1000;
  const head = `${formatClock(at)}  +${secs.toFixed(1)} s: ${deltas.length} counter${deltas.length === 1 ? '' : 's'} changed\n`;
  if (!deltas.length) return head;
  const sign = (d: number) => (d > 0 ? `+${formatNumber(d)}` : formatNumber(d));
  return (
    head +
    table(
      deltas.map(([k, v, d]) => [k, formatNumber(v), sign(d), `${formatNumber(Math.round((d / secs) * 10) / 10)}/s`]),
      { right: [1, 2, 3], indent: '  ' },
    )
  );
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(STATS_SPEC, argv);
  if (p.help) return printHelp(STATS_SPEC);
  const f = p.flags;
  if (f.count !== undefined && f.watch === undefined) throw usageError(STATS_SPEC, '--count N goes with --watch SEC');
  if (f.watch !== undefined && (f.all || f.limit !== undefined || f.state !== undefined || f.port !== undefined || f.peer !== undefined)) {
    throw usageError(STATS_SPEC, '--watch prints counters only: leave out --all, --limit, --state, --port and --peer');
  }
  const args: Record<string, unknown> = {};
  if (f.gc) args.gc = true;
  if (f.all) args.all = true;
  if (f.limit !== undefined) args.limit = f.limit;
  if (f.state !== undefined) args.state = f.state;
  if (f.port !== undefined) args.port = f.port;
  if (f.peer !== undefined) args.peer = f.peer;
  if (f.watch !== undefined) return watch(f.control, f.watch, f.count, f.json, args);
  const rows: ConnectionRow[] = [];
  const onEvent = (ev: unknown) => {
    const batch = (ev as { rows?: unknown } | null)?.rows;
    if (Array.isArray(batch)) for (const r of batch) rows.push(r as ConnectionRow);
  };
  // Listing 100k rows takes the stack a few seconds of turns between its packets.
  const reply = (await callStack<StatsResult>('stats', f.control, ControlCommand.STATS, args, 120_000, onEvent)) ?? {};
  const whole: StatsResult =
    rows.length || reply.rows ? { ...reply, connections: [...(Array.isArray(reply.connections) ? reply.connections : []), ...rows] } : reply;
  if (f.json) printJson(whole);
  else process.stdout.write(renderStats(whole, { all: f.all }));
  return 0;
}

/** --watch: one summary every `secs`, and what changed since the one before. */
async function watch(control: string | undefined, secs: number, count: number | undefined, json: boolean, args: Record<string, unknown>): Promise<number> {
  let prev = (await callStack<StatsResult>('stats', control, ControlCommand.STATS, args)) ?? {};
  let prevAt = Date.now();
  for (let i = 0; count === undefined || i < count; i++) {
    await sleep(Math.max(0, secs * 1000 - (Date.now() - prevAt)));
    const cur = (await callStack<StatsResult>('stats', control, ControlCommand.STATS, args)) ?? {};
    const at = Date.now();
    const deltas = counterDeltas(prev.counters, cur.counters);
    if (json)
      process.stdout.write(
        JSON.stringify({ at: new Date(at).toISOString(), intervalMs: at - prevAt, deltas: Object.fromEntries(deltas.map(([k, , d]) => [k, d])) }) + '\n',
      );
    else process.stdout.write(renderDeltas(deltas, at - prevAt, at));
    prev = cur;
    prevAt = at;
  }
  return 0;
}
