/**
 * What `faultstack stats` and the status page report, built so that neither costs the
 * stack's thread more than the answer needs.
 *
 * - The summary counts connections per state (one pass over the table, no strings),
 *   half-open entries per listener (their queue sizes), and copies counters: cheap at
 *   100k connections.
 * - Rows are only built when asked for (a limit, --all or a filter), from a snapshot
 *   of references, a batch at a time with a turn of the event loop between batches:
 *   ping and traffic go on while 100k rows are listed.
 * - A forced full GC only on request (gc: true).
 * - The status page (statusSummary) is the summary without anything that names a
 *   peer, cached for a second: parallel fetches share one computation.
 */
import type { Stack } from '../stack';
import { STATE_NAMES, State, type TcpConnection } from '../tcp/connection';
import type { HalfOpen } from '../tcp/halfopen';
import { formatIpv4, prefixMask } from '../wire/addr';
import type { StatsQuery } from '../control/protocol';
import { STATS_ROWS_PER_EVENT } from '../control/protocol';

export interface ConnectionCounts {
  /** Connections in the table plus half-open entries. */
  total: number;
  /** By RFC 793 state name (SYN-RECEIVED: the listeners' half-open entries). */
  states: Record<string, number>;
}

export function connectionCounts(stack: Stack): ConnectionCounts {
  const byState = new Array<number>(STATE_NAMES.length).fill(0);
  for (const c of stack.tcp.table.all()) byState[c.state]++;
  let halfOpen = 0;
  for (const l of stack.tcp.listeners.values()) halfOpen += l.synQueue.size;
  byState[State.SynReceived] += halfOpen;
  const states: Record<string, number> = {};
  let total = 0;
  byState.forEach((n, i) => {
    if (n > 0) {
      states[STATE_NAMES[i]!] = n;
      total += n;
    }
  });
  return { total, states };
}

export function listenerRows(stack: Stack): Record<string, number>[] {
  const policy = stack.tcp.hooks.listenerAdmission;
  return [...stack.tcp.listeners.values()].map((l) => ({
    port: l.port,
    backlog: l.backlog,
    synQueue: l.synQueue.size,
    ...(policy.synQueueLimit ? { synQueueLimit: policy.synQueueLimit(l).limit } : {}),
    acceptQueue: l.acceptQueue.length,
    refusedSyns: l.refusedSyns,
    droppedSyns: l.droppedSyns,
    droppedAcks: l.droppedAcks,
    resetAfterHandshake: l.resetAfterHandshake,
    recycled: l.recycled,
  }));
}

export interface ConnectionRow {
  state: string;
  recvQ: number;
  sendQ: number;
  local: string;
  peer: string;
  rtt?: number;
  cwnd?: number;
  retrans?: number;
}

function connectionRow(c: TcpConnection): ConnectionRow {
  return {
    state: c.stateName,
    recvQ: c.receiveQueued,
    sendQ: c.sendQueued,
    local: `${formatIpv4(c.localAddr)}:${c.localPort}`,
    peer: `${formatIpv4(c.remoteAddr)}:${c.remotePort}`,
    rtt: Math.round(c.srtt * 1000) / 1000,
    cwnd: Math.round(c.cc.cwnd / Math.max(1, c.mss)),
    retrans: c.retransSegs,
  };
}

function halfOpenRow(r: HalfOpen): ConnectionRow {
  return { ...r.describe(), recvQ: 0, sendQ: 0 };
}

type Entry = { conn: TcpConnection; req?: undefined } | { req: HalfOpen; conn?: undefined };

function matches(q: StatsQuery, state: string, localPort: number, remoteAddr: number, remotePort: number): boolean {
  if (q.state !== null && state !== q.state) return false;
  if (q.port !== null && localPort !== q.port && remotePort !== q.port) return false;
  if (q.peer) {
    const m = prefixMask(q.peer.prefix);
    if ((remoteAddr & m) >>> 0 !== (q.peer.addr & m) >>> 0) return false;
    if (q.peer.port !== null && remotePort !== q.peer.port) return false;
  }
  return true;
}

const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * The rows matching `q`, up to q.limit, handed to `send` a batch at a time (one turn
 * of the event loop between batches). Returns how many matched and how many were sent.
 * `send` returning false (the client went away) stops the listing.
 */
export async function streamRows(stack: Stack, q: StatsQuery, send: (rows: ConnectionRow[]) => boolean): Promise<{ matched: number; sent: number }> {
  // References only: which connections exist now. Rows are built (strings and all)
  // for the matching ones, batch by batch.
  const entries: Entry[] = [];
  for (const conn of stack.tcp.table.all()) entries.push({ conn });
  for (const l of stack.tcp.listeners.values()) for (const req of l.synQueue.values()) entries.push({ req });
  let matched = 0,
    sent = 0;
  let batch: ConnectionRow[] = [];
  let sinceTurn = 0;
  for (const e of entries) {
    if (++sinceTurn >= 4 * STATS_ROWS_PER_EVENT) {
      sinceTurn = 0;
      await turn();
    }
    let ok: boolean;
    if (e.conn) {
      const c = e.conn;
      if (c.state === State.Closed) continue;
      ok = matches(q, c.stateName, c.localPort, c.remoteAddr, c.remotePort);
    } else {
      const r = e.req;
      if (!r.queued) continue;
      ok = matches(q, 'SYN-RECEIVED', r.localPort, r.remoteAddr, r.remotePort);
    }
    if (!ok) continue;
    matched++;
    if (sent >= q.limit) continue;
    batch.push(e.conn ? connectionRow(e.conn) : halfOpenRow(e.req));
    sent++;
    if (batch.length >= STATS_ROWS_PER_EVENT) {
      if (!send(batch)) return { matched, sent };
      batch = [];
      sinceTurn = 0;
      await turn();
    }
  }
  if (batch.length) send(batch);
  return { matched, sent };
}

/** The rows matching `q` as one array (for a shard's reply to its main thread). */
export async function collectRows(stack: Stack, q: StatsQuery): Promise<{ rows: ConnectionRow[]; matched: number }> {
  const rows: ConnectionRow[] = [];
  const r = await streamRows(stack, q, (b) => {
    rows.push(...b);
    return true;
  });
  return { rows, matched: r.matched };
}

/**
 * The status page's view: counts per state, listeners' queue occupancy, counters and
 * fault modes. Nothing that names a peer (no rows, no lock holder text). Recomputed at
 * most once a second.
 */
export function cachedSummary<T>(build: () => T, maxAgeMs = 1000): () => T {
  let at = -Infinity;
  let value: T | null = null;
  return () => {
    const now = Date.now();
    if (value === null || now - at >= maxAgeMs) {
      value = build();
      at = now;
    }
    return value;
  };
}
