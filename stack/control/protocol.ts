/**
 * The control protocol: newline-delimited JSON over a Unix stream socket.
 *
 *   request   {"id":1,"cmd":"stats","args":{...}}
 *   response  {"id":1,"ok":true,"result":...}
 *             {"id":1,"ok":false,"error":{"code":"EUNKNOWNCMD","message":"..."}}
 *   stream    {"id":1,"event":...}     zero or more, before the response
 *
 * A connection may carry several requests at once (replies are matched by id). A
 * streaming request (events --follow) sends event lines until the client closes the
 * connection, or until the handler finishes, which then sends the final response.
 *
 * The control plane is plain Node `net` on a Unix socket, deliberately separate from
 * the emulated stack: it keeps answering while a fault has the stack "hung".
 */
import { parseIpv4 } from '../wire/addr';

/**
 * Longest request line the server accepts, in bytes. Requests are small (a command and
 * a few arguments); the bound is what an unfinished line may cost the server per client.
 * Replies have no bound: the client reads lines of any length (a `stats --all` reply is
 * streamed as many lines anyway).
 */
export const MAX_REQUEST_LINE = 64 * 1024;
/** @deprecated the request limit: MAX_REQUEST_LINE. */
export const MAX_LINE = MAX_REQUEST_LINE;
/** Clients the server serves at once; one more is told so and closed. */
export const MAX_CLIENTS = 64;
/** Largest timer Node can arm (setTimeout fires at once, with a warning, beyond it). */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export type RequestId = number | string | null;

export interface ControlRequest {
  id: RequestId;
  cmd: string;
  args: Record<string, unknown>;
}

export interface ControlErrorBody {
  code: string;
  message: string;
}

export type ControlResponse = { id: RequestId; ok: true; result: unknown } | { id: RequestId; ok: false; error: ControlErrorBody };

export interface ControlEventLine {
  id: RequestId;
  event: unknown;
}

export type ControlLine = ControlResponse | ControlEventLine;

/** Error codes the server itself produces (handlers may use their own, e.g. ETIMEDOUT). */
export const ErrorCode = {
  BAD_JSON: 'EBADJSON',
  BAD_REQUEST: 'EBADREQUEST',
  UNKNOWN_COMMAND: 'EUNKNOWNCMD',
  HANDLER_FAILED: 'EHANDLER',
  UNENCODABLE: 'EENCODE',
  LINE_TOO_LONG: 'ETOOLONG',
  TOO_MANY_CLIENTS: 'EBUSY',
  BAD_ARGUMENT: 'EINVAL',
} as const;

/**
 * Command names the CLI sends. The runtime registers handlers under these names;
 * the result shapes below are what the CLI renders (every field optional: the CLI
 * prints what is there and `--json` prints the reply untouched).
 */
export const ControlCommand = {
  /**
   * args { gc?, limit?, all?, state?, port?, peer? } → StatsResult (counts and a summary).
   * With limit, all or a filter, the rows that match are streamed first as events
   * { rows: ConnectionRow[] } (at most STATS_ROWS_PER_EVENT each); the result then says
   * how many matched and were sent (`rows`). With gc: true, two full collections first
   * and heapUsedAfterGc / arrayBuffersAfterGc in the result.
   */
  STATS: 'stats',
  /** args { id, mode } → FaultSetResult */
  FAULT_SET: 'fault.set',
  /** args { name, value } → ParamSetResult */
  PARAM_SET: 'param.set',
  /** args { follow?: boolean, limit?: number } → EventRecord[]; with follow, streams EventRecord */
  EVENTS: 'events',
  /** args { host, port, timeoutMs? } → ConnectResult, or an error reply (code ETIMEDOUT, EHOSTUNREACH...) */
  CONNECT: 'connect',
  /** args {} → UnlockResult */
  UNLOCK: 'unlock',
  /** args {} → RouteEntry[] or { routes: RouteEntry[], ...summary } */
  ROUTES: 'routes',
  /** args {} → NeighResult (a TAP stack), or an error reply ENOTSUP (a TUN stack has no neighbours) */
  NEIGH: 'neigh',
  /** args {} → { ikeSas, childSas, policies, halfOpen, identities, counters } (runs with --ipsec only) */
  IPSEC: 'ipsec',
  /** Built into the server: args {} → { pong: true, pid, commands } */
  PING: 'ping',
} as const;

export interface ConnectionRow {
  /** ss-style (ESTAB, SYN-SENT...) or RFC 793 names (ESTABLISHED, SYN_SENT...): both are shown ss-style. */
  state: string;
  recvQ?: number;
  sendQ?: number;
  /** "198.18.0.2:80", or split into address/port fields. */
  local?: string;
  peer?: string;
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
  /** The runtime's extra columns (stack/runtime/stats.ts): smoothed RTT in ms, cwnd in segments, retransmitted segments. */
  rtt?: number;
  cwnd?: number;
  retrans?: number;
}

export interface LockState {
  name?: string;
  held: boolean;
  /** Who holds it: free text, e.g. "active open to 198.18.0.99:80". */
  holder?: string | null;
  /** When it was taken: ms since the Unix epoch, or an ISO 8601 string. */
  since?: number | string | null;
  heldForMs?: number;
  acquisitions?: number;
  /** Packets that waited on (or were dropped at) the held lock. */
  blockedPackets?: number;
  /** How many are waiting, or what is waiting. */
  waiters?: number | string[];
}

export interface FaultState {
  id: string;
  alias?: string;
  mode: string;
}

export interface StatsResult {
  tun?: string;
  addr?: string;
  uptimeMs?: number;
  /** Flat ("tcp.segsIn": 12) or nested ({ tcp: { segsIn: 12 } }); nested names are joined with dots. */
  counters?: Record<string, unknown>;
  connections?: ConnectionRow[];
  /** One lock (the connection table's) or several. */
  lock?: LockState | null;
  locks?: LockState[];
  /** As a list, or as { id: mode } / { id: { alias, mode } }. */
  faults?: FaultState[] | Record<string, string | { alias?: string; mode: string }>;
  params?: Record<string, unknown>;
  /** Per-port listen queues: shown as a table. */
  listeners?: Record<string, unknown>[];
  /** What the KB 903927 reset path leaked (or freed): shown as counters. */
  leak?: Record<string, unknown>;
  /** V8 heap in use after a forced full GC, bytes. */
  heapUsedAfterGc?: number;
  /** ArrayBuffer (Buffer) backing stores still held after that GC, bytes: outside the V8 heap. */
  arrayBuffersAfterGc?: number;
  [other: string]: unknown;
}

export interface FaultSetResult {
  id?: string;
  alias?: string;
  mode?: string;
  previous?: string;
}
export interface ParamSetResult {
  name?: string;
  value?: unknown;
  previous?: unknown;
}
export interface ConnectResult {
  connected?: boolean;
  ms?: number;
  localPort?: number;
  [k: string]: unknown;
}
export interface UnlockResult {
  released?: boolean;
  holder?: string;
  heldMs?: number;
  [k: string]: unknown;
}
export interface RouteEntry {
  [column: string]: unknown;
}

/** One neighbour, as `ip neigh` shows it (plus what `ip -s neigh` adds). */
export interface NeighEntry {
  dst: string;
  dev?: string;
  lladdr?: string | null;
  /** INCOMPLETE, REACHABLE, STALE, DELAY, PROBE, FAILED */
  state: string;
  probes?: number;
  queued?: number;
  confirmedAgoMs?: number | null;
  usedAgoMs?: number;
  updatedAgoMs?: number;
}
export interface NeighResult {
  dev?: string;
  mac?: string;
  entries: NeighEntry[];
  proxy?: string[];
  counters?: Record<string, number>;
  [k: string]: unknown;
}

export interface EventRecord {
  /** ms since the Unix epoch */
  ts?: number;
  type?: string;
  [field: string]: unknown;
}

/** Rows per `{ rows }` event of a stats reply. */
export const STATS_ROWS_PER_EVENT = 1000;

/** What a stats request asks for beyond the summary (validated by statsQuery). */
export interface StatsQuery {
  gc: boolean;
  /** Rows to send: 0 none, Infinity all. */
  limit: number;
  /** ss-style state name (established, syn-recv, time-wait...), normalised to ours (ESTABLISHED...). */
  state: string | null;
  /** Local or remote port. */
  port: number | null;
  /** Remote address (with a prefix length: a CIDR) and, optionally, port. */
  peer: { addr: number; prefix: number; port: number | null } | null;
}

/** The count of rows shown when a filter is given without --limit or --all. */
export const DEFAULT_FILTERED_ROWS = 100;

/** RFC 793 state names as the stack reports them, and the ss spellings that mean each. */
export const STATE_ALIASES: Record<string, string> = {
  established: 'ESTABLISHED',
  estab: 'ESTABLISHED',
  'syn-sent': 'SYN-SENT',
  'syn-received': 'SYN-RECEIVED',
  'syn-recv': 'SYN-RECEIVED',
  'fin-wait-1': 'FIN-WAIT-1',
  'fin-wait-2': 'FIN-WAIT-2',
  'close-wait': 'CLOSE-WAIT',
  closing: 'CLOSING',
  'last-ack': 'LAST-ACK',
  'time-wait': 'TIME-WAIT',
};

/** A control argument of the wrong type or out of range: EINVAL, which the CLI reports with exit status 2. */
export function badArgument(message: string): Error {
  return Object.assign(new Error(message), { code: ErrorCode.BAD_ARGUMENT });
}

/** The string argument `name` (absent: undefined); anything but a string is refused. */
export function stringArg(args: Record<string, unknown>, name: string, what: string): string | undefined {
  const v = args[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badArgument(`"${name}" must be a string (${what}), not ${describeJson(v)}`);
  return v;
}

export function requiredString(args: Record<string, unknown>, name: string, what: string): string {
  const v = stringArg(args, name, what);
  if (v === undefined || v.trim() === '') throw badArgument(`"${name}" is required: ${what}`);
  return v;
}

/** An integer argument in [min, max] (absent: undefined). */
export function integerArg(args: Record<string, unknown>, name: string, min: number, max: number, unit = ''): number | undefined {
  const v = args[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw badArgument(`"${name}" must be an integer from ${min} to ${max}${unit ? ` ${unit}` : ''}, not ${describeJson(v)}`);
  }
  return v;
}

export function booleanArg(args: Record<string, unknown>, name: string): boolean | undefined {
  const v = args[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badArgument(`"${name}" must be true or false, not ${describeJson(v)}`);
  return v;
}

function describeJson(v: unknown): string {
  const t = Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
  return t.length > 60 ? `${t.slice(0, 57)}...` : t;
}

/** Validates a stats request's arguments. */
export function statsQuery(args: Record<string, unknown>): StatsQuery {
  const gc = booleanArg(args, 'gc') ?? false;
  const all = booleanArg(args, 'all') ?? false;
  const limit = integerArg(args, 'limit', 0, Number.MAX_SAFE_INTEGER);
  const stateRaw = stringArg(args, 'state', 'a TCP state such as established, syn-recv or time-wait');
  let state: string | null = null;
  if (stateRaw !== undefined) {
    state = STATE_ALIASES[stateRaw.trim().toLowerCase().replace(/_/g, '-')] ?? null;
    if (!state) throw badArgument(`"state" must be one of ${Object.keys(STATE_ALIASES).join(', ')}, not ${JSON.stringify(stateRaw)}`);
  }
  const port = integerArg(args, 'port', 1, 65535) ?? null;
  const peerRaw = stringArg(args, 'peer', 'an IPv4 address, ADDR:PORT or a CIDR such as 198.18.100.0/24');
  let peer: StatsQuery['peer'] = null;
  if (peerRaw !== undefined) {
    peer = parsePeer(peerRaw);
    if (!peer) throw badArgument(`"peer" must be an IPv4 address, ADDR:PORT or a CIDR such as 198.18.100.0/24, not ${JSON.stringify(peerRaw)}`);
  }
  const filtered = state !== null || port !== null || peer !== null;
  const rows = all ? Infinity : limit !== undefined ? limit : filtered ? DEFAULT_FILTERED_ROWS : 0;
  return { gc, limit: rows, state, port, peer };
}

function parsePeer(text: string): StatsQuery['peer'] {
  const m = /^\s*([0-9.]+)(?:\/(\d{1,2})|:(\d{1,5}))?\s*$/.exec(text);
  const addr = m ? parseIpv4(m[1]!) : null;
  if (!m || addr === null) return null;
  const prefix = m[2] !== undefined ? Number(m[2]) : 32;
  const port = m[3] !== undefined ? Number(m[3]) : null;
  if (prefix > 32 || (port !== null && (port < 1 || port > 65535))) return null;
  return { addr, prefix, port };
}

/** JSON with BigInt support (as a number when exact, else a decimal string). */
export function encodeLine(msg: unknown): string {
  return (
    JSON.stringify(msg, (_k, v: unknown) => {
      if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
      return v;
    }) + '\n'
  );
}

/**
 * Splits a byte stream into lines. Each chunk is searched only for its own newlines
 * (an unfinished line is kept as the chunks that make it, not re-scanned), and a line
 * longer than `max` bytes is refused (RangeError) as soon as it is that long, finished
 * or not. `end()` hands back a last line that had no newline.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private pendingBytes = 0;
  constructor(private readonly max = MAX_REQUEST_LINE) {}

  /** Bytes of the unfinished line held so far. */
  get pending(): number {
    return this.pendingBytes;
  }

  /** Complete lines in this chunk (without '\n' and a trailing '\r'); blank lines are skipped. */
  push(chunk: Uint8Array): string[] {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const out: string[] = [];
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      if (this.pendingBytes + (nl - start) > this.max) throw new RangeError(`line longer than ${this.max} bytes`);
      this.parts.push(buf.subarray(start, nl));
      this.take(out);
      start = nl + 1;
    }
    if (start < buf.length) {
      if (this.pendingBytes + (buf.length - start) > this.max) throw new RangeError(`line longer than ${this.max} bytes`);
      // A copy: the caller's chunk may be reused, and a subarray would pin all of it.
      this.parts.push(Buffer.from(buf.subarray(start)));
      this.pendingBytes += buf.length - start;
    }
    return out;
  }

  /** The stream ended: the unfinished line, if it holds anything but blanks. */
  end(): string | null {
    const out: string[] = [];
    if (this.parts.length) this.take(out);
    return out[0] ?? null;
  }

  private take(out: string[]): void {
    const bytes = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts = [];
    this.pendingBytes = 0;
    let line = bytes.toString('utf8');
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.trim() !== '') out.push(line);
  }
}

/** Validates one request line; returns the request or the error to reply with. */
export function parseRequest(line: string): { ok: true; req: ControlRequest } | { ok: false; id: RequestId; error: ControlErrorBody } {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    return { ok: false, id: null, error: { code: ErrorCode.BAD_JSON, message: `request is not valid JSON: ${(e as Error).message}` } };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    return { ok: false, id: null, error: { code: ErrorCode.BAD_REQUEST, message: 'request must be a JSON object {"id":N,"cmd":"...","args":{...}}' } };
  }
  const o = v as Record<string, unknown>;
  const id: RequestId = typeof o.id === 'number' || typeof o.id === 'string' ? o.id : null;
  if (typeof o.cmd !== 'string' || o.cmd === '') {
    return { ok: false, id, error: { code: ErrorCode.BAD_REQUEST, message: 'request needs a "cmd" string' } };
  }
  if (o.args !== undefined && (typeof o.args !== 'object' || o.args === null || Array.isArray(o.args))) {
    return { ok: false, id, error: { code: ErrorCode.BAD_REQUEST, message: '"args" must be a JSON object' } };
  }
  return { ok: true, req: { id, cmd: o.cmd, args: (o.args as Record<string, unknown> | undefined) ?? {} } };
}
