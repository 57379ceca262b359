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

/** Longest accepted line (a request or a reply), in characters. */
export const MAX_LINE = 1 << 20;

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

export type ControlResponse =
  | { id: RequestId; ok: true; result: unknown }
  | { id: RequestId; ok: false; error: ControlErrorBody };

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
} as const;

/**
 * Command names the CLI sends. The runtime registers handlers under these names;
 * the result shapes below are what the CLI renders (every field optional: the CLI
 * prints what is there and `--json` prints the reply untouched).
 */
export const ControlCommand = {
  /** args {} → StatsResult */
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

export interface FaultSetResult { id?: string; alias?: string; mode?: string; previous?: string }
export interface ParamSetResult { name?: string; value?: unknown; previous?: unknown }
export interface ConnectResult { connected?: boolean; ms?: number; localPort?: number; [k: string]: unknown }
export interface UnlockResult { released?: boolean; holder?: string; heldMs?: number; [k: string]: unknown }
export interface RouteEntry { [column: string]: unknown }

export interface EventRecord {
  /** ms since the Unix epoch */
  ts?: number;
  type?: string;
  [field: string]: unknown;
}

/** JSON with BigInt support (as a number when exact, else a decimal string). */
export function encodeLine(msg: unknown): string {
  return JSON.stringify(msg, (_k, v: unknown) => {
    if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
    return v;
  }) + '\n';
}

/** Splits a byte stream into lines; refuses lines longer than `max` characters. */
export class LineSplitter {
  private pending = '';
  private readonly decoder = new TextDecoder('utf-8');
  constructor(private readonly max = MAX_LINE) {}

  /** Complete lines in this chunk (without '\n'); throws RangeError if a line grows past `max`. */
  push(chunk: Uint8Array): string[] {
    this.pending += this.decoder.decode(chunk, { stream: true });
    const out: string[] = [];
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, nl).replace(/\r$/, '');
      this.pending = this.pending.slice(nl + 1);
      if (line.length > this.max) throw new RangeError(`line longer than ${this.max} characters`);
      if (line.trim() !== '') out.push(line);
    }
    if (this.pending.length > this.max) throw new RangeError(`line longer than ${this.max} characters`);
    return out;
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
