/** `faultstack stats`: counters, connections (like `ss -tan`), lock state and fault modes. */
import type { ConnectionRow, FaultState, LockState, StatsResult } from '../../../stack/control/protocol';
import { ControlCommand } from '../../../stack/control/protocol';
import { defineCommand, parseArgs, printHelp, switchFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { cell, flattenCounters, formatClock, formatDuration, formatNumber, isZero, objectTable, ssState, table } from '../format';

export const STATS_SPEC = defineCommand({
  name: 'stats',
  summary: "Show a running stack's counters, connections, lock state and fault modes.",
  flags: {
    ...controlFlags,
    all: switchFlag('also show counters that are zero'),
  },
});

function endpoint(text: string | undefined, addr: string | undefined, port: number | undefined): string {
  if (text) return text;
  if (addr === undefined && port === undefined) return '*:*';
  return `${addr ?? '*'}:${port ?? '*'}`;
}

const CONN_FIELDS = new Set(['state', 'recvQ', 'sendQ', 'local', 'peer', 'localAddress', 'localPort', 'remoteAddress', 'remotePort']);

function renderConnections(rows: ConnectionRow[]): string {
  // Anything else a row carries (rtt, cwnd, retrans...) goes in a last column, as `ss -i` shows it.
  const info = (c: ConnectionRow) => Object.entries(c)
    .filter(([k, v]) => !CONN_FIELDS.has(k) && v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${cell(v)}`).join(' ');
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
    out.push(shown.length ? table(shown.map(([k, v]) => [k, formatNumber(v)]), { right: [1], indent: '  ' }) : '  (all zero)\n');
  }

  const link = r.link as { mac?: string; sourceMac?: string; bridge?: string | null; gateway?: string | null; counters?: Record<string, unknown> } | undefined;
  if (link && typeof link === 'object') {
    const where = [link.mac ? `mac ${link.mac}` : '', link.sourceMac && link.sourceMac !== link.mac ? `sending as ${link.sourceMac}` : '',
      link.bridge ? `bridge ${link.bridge}` : '', link.gateway ? `gateway ${link.gateway}` : ''].filter(Boolean).join(', ');
    const all = link.counters ? flattenCounters(link.counters) : [];
    const shown = opts.all ? all : all.filter(([, v]) => !isZero(v));
    out.push(`\nEthernet (${where}; \`faultstack neigh\` shows the ARP table):\n`);
    if (shown.length) out.push(table(shown.map(([k, v]) => [k, formatNumber(v)]), { right: [1], indent: '  ' }));
  }

  if (Array.isArray(r.connections)) {
    out.push(`\nConnections (${r.connections.length}):\n`);
    out.push(r.connections.length ? renderConnections(r.connections) : '  (none)\n');
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
    out.push(table(faults.map((f) => [f.id, f.alias ?? '', f.mode]), { indent: '  ' }));
  }

  if (r.params && typeof r.params === 'object' && Object.keys(r.params).length) {
    out.push('\nParameters:\n');
    out.push(table(Object.entries(r.params).map(([k, v]) => [k, cell(v)]), { indent: '  ' }));
  }
  if (r.leak && typeof r.leak === 'object' && Object.keys(r.leak).length) {
    out.push('\nLeak (KB 903927 reset path):\n');
    out.push(table(flattenCounters(r.leak).map(([k, v]) => [k, formatNumber(v)]), { right: [1], indent: '  ' }));
  }
  const mem: [string, unknown][] = [['heapUsedAfterGc', r.heapUsedAfterGc], ['arrayBuffersAfterGc', r.arrayBuffersAfterGc]];
  const memShown = mem.filter((e): e is [string, number] => typeof e[1] === 'number');
  if (memShown.length) {
    out.push('\nMemory after a full GC (bytes):\n');
    out.push(table(memShown.map(([k, v]) => [k, formatNumber(v)]), { right: [1], indent: '  ' }));
  }
  if (out.length === 0) out.push('(the stack sent an empty stats reply; --json shows it raw)\n');
  return out.join('');
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(STATS_SPEC, argv);
  if (p.help) return printHelp(STATS_SPEC);
  const reply = await callStack<StatsResult>('stats', p.flags.control, ControlCommand.STATS);
  if (p.flags.json) printJson(reply);
  else process.stdout.write(renderStats(reply ?? {}, { all: p.flags.all }));
  return 0;
}
