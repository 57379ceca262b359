/** Two stacks joined by an in-memory link on a virtual clock: the unit-test rig. */
import { createHash } from 'node:crypto';
import { MemoryLink, MemoryLinkOptions, VirtualClock } from '../../../drivers/memory';
import { Stack, StackOptions } from '../../../stack/stack';
import { VirtualScheduler } from '../../../stack/runtime/scheduler';
import { createNetApi, FsSocket } from '../../../stack/api/net';
import type { TcpSocketLike } from '../../../stack/api/net-api';
import { parseIpv4 } from '../../../stack/wire/addr';
import type { TcpConnection } from '../../../stack/tcp/connection';

export const A_ADDR = '198.18.0.1';
export const B_ADDR = '198.18.0.2';
export const A_IP = parseIpv4(A_ADDR)!;
export const B_IP = parseIpv4(B_ADDR)!;

export function makePair(link: MemoryLinkOptions = {}, a: Partial<StackOptions> = {}, b: Partial<StackOptions> = {}) {
  const clock = new VirtualClock(1000);
  const l = new MemoryLink({ latencyMs: 0.5, ...link, clock });
  const sched = new VirtualScheduler(clock);
  const stackA = new Stack({ device: l.a, scheduler: sched, address: A_IP, prefix: 24, ...a });
  const stackB = new Stack({ device: l.b, scheduler: sched, address: B_IP, prefix: 24, ...b });
  return { clock, link: l, a: stackA, b: stackB, netA: createNetApi(stackA), netB: createNetApi(stackB) };
}
export type Pair = ReturnType<typeof makePair>;

/** Runs the virtual clock until `cond` holds or `maxMs` of virtual time pass; also lets Node's microtasks/nextTicks run. */
export async function runUntil(clock: VirtualClock, cond: () => boolean, maxMs = 60_000, stepMs = 1): Promise<boolean> {
  const end = clock.now + maxMs;
  while (clock.now < end) {
    if (cond()) return true;
    clock.advance(Math.min(stepMs, end - clock.now));
    await new Promise((r) => setImmediate(r));
  }
  return cond();
}

/** Lets `ms` of virtual time pass (events inside run at their exact virtual times). */
export async function runFor(clock: VirtualClock, ms: number, stepMs = 1): Promise<void> {
  await runUntil(clock, () => false, ms, stepMs);
}

export function sha256(data: Buffer | Buffer[]): string {
  const h = createHash('sha256');
  for (const d of Array.isArray(data) ? data : [data]) h.update(d);
  return h.digest('hex');
}

/** Deterministic test data: `n` bytes from a seeded generator (not a repeating pattern, so misplaced bytes show). */
export function testData(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

export interface Sink {
  chunks: Buffer[];
  bytes: number;
  ended: boolean;
  closed: boolean;
  error: (Error & { code?: string }) | null;
  socket: FsSocket | null;
  data(): Buffer;
}

function newSink(): Sink {
  return {
    chunks: [],
    bytes: 0,
    ended: false,
    closed: false,
    error: null,
    socket: null,
    data() {
      return Buffer.concat(this.chunks);
    },
  };
}

/** Records what a socket receives and how it ends. */
export function watch(s: TcpSocketLike, sink: Sink = newSink()): Sink {
  sink.socket = s as FsSocket;
  s.on('data', (d: Buffer) => {
    sink.chunks.push(d);
    sink.bytes += d.length;
  });
  s.on('end', () => {
    sink.ended = true;
  });
  s.on('error', (e) => {
    sink.error = e;
  });
  s.on('close', () => {
    sink.closed = true;
  });
  return sink;
}

/**
 * A server on B (port `port`) that collects each connection's bytes and ends its side
 * when the peer ends (a discard server). Returns the sinks of accepted connections.
 */
export function sinkServer(p: Pair, port: number, onSocket?: (s: FsSocket) => void) {
  const sinks: Sink[] = [];
  const server = p.netB.createServer((s) => {
    const sink = watch(s);
    s.on('end', () => s.end());
    sinks.push(sink);
    onSocket?.(s as FsSocket);
  });
  server.listen(port);
  return { server, sinks };
}

/**
 * Sends `data` from A to a sink server on B and waits until B has seen the end.
 * Returns what B received and the client's socket.
 */
export async function transfer(p: Pair, data: Buffer, opts: { port?: number; maxMs?: number; stepMs?: number; onClient?: (c: FsSocket) => void } = {}) {
  const port = opts.port ?? 9000;
  const { sinks } = sinkServer(p, port);
  const client = p.netA.connect({ host: B_ADDR, port }) as FsSocket;
  const clientSink = watch(client);
  opts.onClient?.(client);
  client.end(data);
  const done = await runUntil(p.clock, () => sinks.length > 0 && sinks[0].ended && clientSink.closed, opts.maxMs ?? 60_000, opts.stepMs ?? 1);
  const got = sinks[0]?.data() ?? Buffer.alloc(0);
  return { done, got, client, clientSink, serverSink: sinks[0] ?? null };
}

/** The one connection in a stack's table matching a predicate (by default: any). */
export function connOf(stack: Stack, pred: (c: TcpConnection) => boolean = () => true): TcpConnection | undefined {
  for (const c of stack.tcp.table.all()) if (pred(c)) return c;
  return undefined;
}
