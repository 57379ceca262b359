/**
 * `/metrics` in the Prometheus text exposition format (version 0.0.4), built from the
 * same replies as `faultstack stats` and `faultstack routes`, so a scrape and the CLI
 * never disagree:
 *   - every stack counter as `faultstack_<nstat name>` (TcpInSegs, TcpExtListenDrops,
 *     the Fs* ones), a counter except TcpCurrEstab, which nstat itself treats as a gauge;
 *   - gauges: connections by state, listeners' SYN and accept queues against their
 *     backlog, the connection-table lock, the PMTU host routes counted against the real
 *     ones and MaxIcmpHostRoutes, the process's memory, uptime;
 *   - each fault's mode as labels: faultstack_fault_mode{fault="kb297040",mode=MODE} 1
 *     (and 0 for its other modes), numeric parameters as faultstack_param{name=...}.
 */
import type { ControlContext, ControlHandler } from '../control/server';
import { ALL_MODES } from '../faults/catalogue';

/** Counters that go up and down (nstat reports them as they are, not as deltas). */
const GAUGE_COUNTERS = new Set(['TcpCurrEstab']);
/** The modes a fault can be in (the catalogue's). */
const MODES = ALL_MODES;

/** A label value, escaped as the format requires (backslash, double quote, newline). */
function label(v: unknown): string {
  return String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function num(v: unknown): number | null {
  if (typeof v === 'boolean') return v ? 1 : 0;
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** A metric name from a counter or field name: what the format allows, nothing else. */
function metricName(s: string): string {
  return s.replace(/[^a-zA-Z0-9_:]/g, '_');
}

class Exposition {
  private readonly lines: string[] = [];
  private readonly seen = new Set<string>();
  family(name: string, type: 'counter' | 'gauge' | 'untyped', help: string): void {
    if (this.seen.has(name)) return;
    this.seen.add(name);
    this.lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, ' ')}`, `# TYPE ${name} ${type}`);
  }
  sample(name: string, labels: Record<string, unknown>, value: number): void {
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${label(v)}"`)
      .join(',');
    this.lines.push(`${name}${l ? `{${l}}` : ''} ${Number.isFinite(value) ? value : 'NaN'}`);
  }
  one(name: string, type: 'counter' | 'gauge', help: string, value: unknown, labels: Record<string, unknown> = {}): void {
    const v = num(value);
    if (v === null) return;
    this.family(name, type, help);
    this.sample(name, labels, v);
  }
  text(): string {
    return this.lines.join('\n') + '\n';
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The exposition for a stats reply (and a routes reply, when the stack has one). */
export function prometheusText(stats: Obj, routes: Obj | null): string {
  const out = new Exposition();
  const counters = isObj(stats.counters) ? stats.counters : {};
  for (const [k, v] of Object.entries(counters)) {
    const gauge = GAUGE_COUNTERS.has(k);
    out.one(
      `faultstack_${metricName(k)}`,
      gauge ? 'gauge' : 'counter',
      `the stack's ${k} (nstat's name${k.startsWith('Fs') ? ', a faultstack counter' : ''})`,
      v,
    );
  }
  out.one('faultstack_uptime_seconds', 'gauge', 'seconds since the stack started', num(stats.uptimeMs) === null ? null : (stats.uptimeMs as number) / 1000);
  out.one('faultstack_connection_count', 'gauge', 'connections in the table plus half-open entries', stats.connectionCount);
  if (isObj(stats.states)) {
    out.family('faultstack_connections', 'gauge', "connections by RFC 9293 state (SYN-RECEIVED: the listeners' half-open entries)");
    for (const [state, n] of Object.entries(stats.states)) if (num(n) !== null) out.sample('faultstack_connections', { state }, n as number);
  }
  const listeners = Array.isArray(stats.listeners) ? stats.listeners.filter(isObj) : [];
  const perListener: [string, string, 'gauge' | 'counter', string][] = [
    ['synQueue', 'faultstack_listener_syn_queue', 'gauge', 'half-open entries (SYN queue) per listening port'],
    ['acceptQueue', 'faultstack_listener_accept_queue', 'gauge', 'established connections waiting for accept() per listening port'],
    [
      'synQueueLimit',
      'faultstack_listener_syn_queue_limit',
      'gauge',
      'what bounds the SYN queue: tcp_max_syn_backlog (Linux) or TcpMaxHalfOpen (Windows, where SYN attack protection starts)',
    ],
    ['backlog', 'faultstack_listener_backlog', 'gauge', "the listener's backlog: the accept queue's limit"],
    ['refusedSyns', 'faultstack_listener_refused_syns', 'counter', 'SYNs refused by the listener'],
    ['droppedSyns', 'faultstack_listener_dropped_syns', 'counter', 'SYNs dropped by the listener'],
    ['droppedAcks', 'faultstack_listener_dropped_acks', 'counter', 'handshake-completing ACKs dropped (accept queue full)'],
    ['resetAfterHandshake', 'faultstack_listener_reset_after_handshake', 'counter', 'connections reset after the handshake (KB 903927)'],
  ];
  for (const [field, name, type, help] of perListener) {
    const rows = listeners.filter((l) => num(l[field]) !== null);
    if (!rows.length) continue;
    out.family(name, type, help);
    for (const l of rows) out.sample(name, { port: l.port, ...(l.shard !== undefined ? { shard: l.shard } : {}) }, l[field] as number);
  }
  if (isObj(stats.lock)) {
    const lock = stats.lock;
    const name = lock.name ?? 'tcp-connection-table';
    out.one('faultstack_lock_held', 'gauge', 'the connection-table lock is held (KB 297040)', lock.held === true ? 1 : 0, { lock: name });
    out.one(
      'faultstack_lock_held_seconds',
      'gauge',
      'how long the lock has been held',
      num(lock.heldForMs) === null ? null : (lock.heldForMs as number) / 1000,
      { lock: name },
    );
    out.one('faultstack_lock_blocked_packets', 'counter', 'packets that met the held lock', lock.blockedPackets, { lock: name });
  }
  if (isObj(stats.leak)) {
    for (const [k, v] of Object.entries(stats.leak)) out.one(`faultstack_leak_${metricName(k)}`, 'gauge', `what the KB 903927 reset path leaked: ${k}`, v);
  }
  if (isObj(stats.faults)) {
    out.family('faultstack_fault_mode', 'gauge', "each fault's mode: 1 for the mode it is in");
    for (const [fault, mode] of Object.entries(stats.faults)) {
      const m = isObj(mode) ? mode.mode : mode;
      for (const each of MODES) out.sample('faultstack_fault_mode', { fault, mode: each }, m === each ? 1 : 0);
    }
  }
  if (isObj(stats.params)) {
    const numeric = Object.entries(stats.params).filter(([, v]) => num(v) !== null);
    if (numeric.length) {
      out.family('faultstack_param', 'gauge', 'numeric parameters (Windows registry names)');
      for (const [name, v] of numeric) out.sample('faultstack_param', { name }, num(v)!);
    }
  }
  if (isObj(stats.device)) {
    const d = Object.entries(stats.device).filter(([, v]) => num(v) !== null);
    if (d.length) {
      out.family('faultstack_device', 'untyped', "the device chain's own statistics (packets, bytes, drops)");
      for (const [stat, v] of d) out.sample('faultstack_device', { stat }, num(v)!);
    }
  }
  if (isObj(stats.memory)) {
    out.family('faultstack_memory_bytes', 'gauge', "the process's memory (process.memoryUsage)");
    for (const [kind, v] of Object.entries(stats.memory)) if (num(v) !== null) out.sample('faultstack_memory_bytes', { kind }, v as number);
  }
  if (routes) {
    out.one('faultstack_host_routes', 'gauge', 'PMTU host routes as the stack counts them against MaxIcmpHostRoutes (KB 898060)', routes.hostRouteCount);
    out.one('faultstack_host_routes_real', 'gauge', 'PMTU host routes that really exist', routes.hostRoutesReal);
    out.one(
      'faultstack_max_icmp_host_routes',
      'gauge',
      'MaxIcmpHostRoutes: the limit past which ICMP fragmentation needed is ignored',
      routes.maxIcmpHostRoutes,
    );
    out.one('faultstack_host_routes_at_limit', 'gauge', 'the count reached MaxIcmpHostRoutes', routes.atLimit);
  }
  return out.text();
}

/** A context for a handler called from inside the process (no client: rows are not asked for). */
function innerContext(cmd: string): ControlContext {
  return { cmd, id: null, stream: () => true, onClose: () => {}, closed: false, untilClosed: () => new Promise(() => {}) };
}

/** /metrics over a handler table: a stats call without rows and a routes call. */
export function metricsFrom(handlers: Record<string, ControlHandler>): () => Promise<string> {
  return async () => {
    const stats = (await handlers.stats!({}, innerContext('stats'))) as Obj;
    let routes: Obj | null = null;
    if (handlers.routes) {
      try {
        const r = await handlers.routes({}, innerContext('routes'));
        routes = isObj(r) ? r : null;
      } catch {
        /* a stack without routes: no route gauges */
      }
    }
    return prometheusText(stats, routes);
  };
}
