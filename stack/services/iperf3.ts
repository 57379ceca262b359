/**
 * An iperf3 server (TCP, port 5201 by default) compatible with the stock
 * iperf3 3.x client, written against NetApi.
 *
 * The iperf3 control protocol, as observed on the wire with iperf3 3.12:
 *
 *   client -> server  cookie: 36 random characters [a-z2-7] + NUL (37 bytes)
 *   server -> client  PARAM_EXCHANGE (one signed byte, 9)
 *   client -> server  parameters: 4-byte big-endian length + JSON
 *                     {"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,
 *                      "parallel":1,"reverse":true,"bidirectional":true,
 *                      "len":131072,"pacing_timer":1000,"client_version":"3.12",...}
 *   server -> client  CREATE_STREAMS (10)
 *   client -> server  opens `parallel` (x2 with bidirectional) TCP connections to
 *                     the same port, one after the other, each starting with the cookie
 *   server -> client  TEST_START (1), TEST_RUNNING (2)
 *                     data flows: client->server normally, server->client with
 *                     reverse; with bidirectional the first `parallel` streams
 *                     carry client->server and the rest server->client
 *   client -> server  TEST_END (4) when its timer (or byte/block count) expires
 *   server -> client  EXCHANGE_RESULTS (13)
 *   client -> server  its results (length + JSON), then server -> client its own:
 *                     {"cpu_util_total":..,"cpu_util_user":..,"cpu_util_system":..,
 *                      "sender_has_retransmits":..,"streams":[{"id":1,"bytes":..,
 *                      "retransmits":..,"jitter":0,"errors":0,"packets":0,
 *                      "start_time":0,"end_time":..}, ...]}
 *                     Stream ids are 1, 3, 4, 5, ... in stream creation order
 *                     (iperf3 skips id 2); both sides must agree on them.
 *   server -> client  DISPLAY_RESULTS (14)
 *   client -> server  IPERF_DONE (16), closes everything.
 *
 * A connection that arrives while a test runs (and is not one of its streams)
 * gets ACCESS_DENIED (-1) after its cookie, then is closed. Fatal server
 * problems are reported with SERVER_ERROR (-2) followed by two 4-byte
 * big-endian integers (iperf3 error number, errno). On shutdown the client of a
 * running test gets SERVER_TERMINATE (11). The client may send CLIENT_TERMINATE
 * (12) when interrupted.
 *
 * UDP (`-u`, iperf3's iperf_udp.c as of 3.12): parameters carry "udp": true, the
 * rate ("bandwidth", bits/s per stream) and the datagram size ("len"). At
 * CREATE_STREAMS the server listens on UDP at its own port; each stream is a client
 * socket connected to it, which sends a 4-byte UDP_CONNECT_MSG (0x36373839 in the
 * client's byte order; legacy 123456789) and waits for UDP_CONNECT_REPLY (0x39383736;
 * legacy 987654321) in the same byte order. Every data datagram starts with the
 * sender's time (seconds, microseconds, 32-bit each) and a packet count (32-bit, or
 * 64-bit with "udp_counters_64bit"), big-endian. The receiver keeps the highest count
 * seen, counts a gap as lost and a count that goes back as out of order (and one loss
 * fewer), and the jitter of RFC 1889 A.8 (J += (|D| - J) / 16 over transit times); its
 * results carry jitter (seconds), errors (lost) and packets (the highest count). The
 * sender paces datagrams to the rate.
 *
 * SCTP requests and authenticated tests are refused with SERVER_ERROR.
 */
import type { NetApi, TcpServerLike, TcpSocketLike, UdpSocketLike } from '../api/net-api';

type LogFn = (line: string) => void;

/** Control-channel state bytes (signed). */
export const IperfState = {
  TEST_START: 1,
  TEST_RUNNING: 2,
  TEST_END: 4,
  PARAM_EXCHANGE: 9,
  CREATE_STREAMS: 10,
  SERVER_TERMINATE: 11,
  CLIENT_TERMINATE: 12,
  EXCHANGE_RESULTS: 13,
  DISPLAY_RESULTS: 14,
  IPERF_START: 15,
  IPERF_DONE: 16,
  ACCESS_DENIED: -1,
  SERVER_ERROR: -2,
} as const;

/** iperf3 error numbers carried by SERVER_ERROR (the client prints their text). */
export const IperfError = {
  IENUMSTREAMS: 6,
  IEBLOCKSIZE: 7,
  IEUNIMP: 13,
  IERECVPARAMS: 114,
  IERECVRESULTS: 117,
  IECTRLREAD: 108,
  IEMESSAGE: 110,
  IEPROTOCOL: 131,
  IEAUTHTEST: 142,
  /** 3.11 and later: "idle timeout for receiving data". */
  IENOMSG: 144,
  IESTREAMACCEPT: 204,
} as const;

/** Linux's errno for a timed-out operation (sent after IECTRLREAD). */
const ETIMEDOUT = 110;

export const COOKIE_SIZE = 37;
export const DEFAULT_IPERF3_PORT = 5201;
/** Largest JSON message accepted on the control channel. */
export const MAX_JSON_BYTES = 1024 * 1024;
/** iperf3's own limit on parallel streams. */
export const MAX_STREAMS = 128;
/** Largest block size accepted for reverse sending. */
export const MAX_BLOCK_SIZE = 16 * 1024 * 1024;
/** UDP datagram sizes iperf3 accepts: the header (4 + 4 + 8) to 65535 - 8 - 20. */
export const MIN_UDP_BLOCKSIZE = 16;
export const MAX_UDP_BLOCKSIZE = 65535 - 8 - 20;
/** iperf3's UDP "connect" message and reply, as 32-bit values (sent in the host's byte order). */
export const UDP_CONNECT_MSG = 0x36373839;
export const UDP_CONNECT_REPLY = 0x39383736;
export const LEGACY_UDP_CONNECT_MSG = 123456789;
export const LEGACY_UDP_CONNECT_REPLY = 987654321;

const COOKIE_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** A fresh cookie: 36 characters from iperf3's alphabet plus the NUL (37 bytes). */
/** One stream's line in the EXCHANGE_RESULTS message. */
export interface StreamResult {
  id: number;
  bytes: number;
  sending: boolean;
  endTime: number;
  /** TCP, sending: segments retransmitted during the test, when the socket can tell (TCP_INFO). */
  retransmits?: number | null;
  /** UDP: RFC 1889 jitter in seconds, datagrams lost, and the highest packet count seen (sent, for a sender). */
  jitter?: number;
  errors?: number;
  packets?: number;
}

/**
 * The EXCHANGE_RESULTS message both ends send: CPU use over the test's wall time and
 * one entry per stream. As iperf3's send_results: a sender reports retransmits only
 * when every sending stream knows them (sender_has_retransmits 1, else 0; -1 for a
 * pure receiver), and its congestion control as "congestion_used".
 */
export function resultsMessage(
  cpuStart: NodeJS.CpuUsage,
  wallMs: number,
  streams: StreamResult[],
  opts: { congestion?: string | null } = {},
): Record<string, unknown> {
  const wallUs = Math.max(1, wallMs * 1000);
  const cpu = process.cpuUsage(cpuStart);
  const user = (cpu.user / wallUs) * 100;
  const system = (cpu.system / wallUs) * 100;
  const senders = streams.filter((s) => s.sending);
  const hasRetransmits = senders.length > 0 && senders.every((s) => typeof s.retransmits === 'number');
  return {
    cpu_util_total: user + system,
    cpu_util_user: user,
    cpu_util_system: system,
    sender_has_retransmits: senders.length === 0 ? -1 : hasRetransmits ? 1 : 0,
    ...(opts.congestion ? { congestion_used: opts.congestion } : {}),
    streams: streams.map((s) => ({
      id: s.id,
      bytes: s.bytes,
      retransmits: s.sending && hasRetransmits ? s.retransmits : -1,
      jitter: s.jitter ?? 0,
      errors: s.errors ?? 0,
      omitted_errors: 0,
      packets: s.packets ?? 0,
      start_time: 0,
      end_time: s.endTime,
    })),
  };
}

/** The wall clock in microseconds (iperf3 stamps datagrams with seconds and microseconds). */
function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/**
 * One UDP stream's receive side, as iperf_udp_recv counts: the highest packet count
 * seen, lost (gaps), out of order (counts that go back, each also one loss fewer), and
 * the RFC 1889 A.8 jitter over the transit time (arrival - send stamp; the clocks need
 * not agree, only their rates).
 */
export class UdpReceiveStats {
  bytes = 0;
  packetCount = 0;
  cntError = 0;
  outOfOrder = 0;
  /** Seconds. */
  jitter = 0;
  private prevTransit = 0;

  constructor(readonly counters64 = false) {}

  onDatagram(d: Buffer, arrivalUs: number): void {
    if (d.length < (this.counters64 ? 16 : 12)) return;
    const first = this.bytes === 0;
    this.bytes += d.length;
    const sentUs = d.readUInt32BE(0) * 1e6 + d.readUInt32BE(4);
    const pcount = this.counters64 ? Number(d.readBigUInt64BE(8)) : d.readUInt32BE(8);
    if (pcount >= this.packetCount + 1) {
      if (pcount > this.packetCount + 1) this.cntError += pcount - 1 - this.packetCount;
      this.packetCount = pcount;
    } else {
      this.outOfOrder++;
      if (this.cntError > 0) this.cntError--;
    }
    const transit = (arrivalUs - sentUs) / 1e6;
    if (first) this.prevTransit = transit;
    const dd = Math.abs(transit - this.prevTransit);
    this.prevTransit = transit;
    this.jitter += (dd - this.jitter) / 16;
  }
}

/**
 * Sends UDP datagrams of `size` bytes to one peer at `rateBps` (bits/s; 0: as fast as
 * the event loop lets it), each stamped with the time and its count as iperf_udp_send
 * does. Paced on a 1 ms tick: what the rate allows since the start goes out, but at
 * most 4 ms' worth in one tick, so that a late timer (a GC pause, a busy machine) is
 * caught up over the next ticks instead of in one burst that overflows the receiver's
 * socket buffer.
 */
export class UdpSender {
  packets = 0;
  bytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  private startedAt = 0;
  private stopped = true;

  constructor(
    private readonly sock: UdpSocketLike,
    private readonly peer: { address: string; port: number },
    private readonly size: number,
    private readonly rateBps: number,
    private readonly opts: { counters64?: boolean; mayWrite?: () => boolean; onDatagram?: (n: number) => void } = {},
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.startedAt = performance.now();
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
  }

  private readonly tick = (): void => {
    this.timer = null;
    this.immediate = null;
    if (this.stopped) return;
    const perMs = this.rateBps / 8 / 1000 / this.size;
    const due = this.rateBps > 0 ? Math.min(Math.floor(perMs * (performance.now() - this.startedAt)) - this.packets, Math.max(1, Math.ceil(4 * perMs))) : 64;
    for (let i = 0; i < due; i++) {
      if (this.opts.mayWrite && !this.opts.mayWrite()) {
        this.stop();
        return;
      }
      this.sendOne();
    }
    if (this.rateBps > 0) this.timer = setTimeout(this.tick, 1);
    else this.immediate = setImmediate(this.tick);
  };

  private sendOne(): void {
    // A fresh buffer each time: a kernel socket may still hold the last one.
    const d = Buffer.allocUnsafe(this.size);
    const us = nowUs();
    const sec = Math.floor(us / 1e6);
    d.writeUInt32BE(sec >>> 0, 0);
    d.writeUInt32BE(us - sec * 1e6, 4);
    this.packets++;
    if (this.opts.counters64) d.writeBigUInt64BE(BigInt(this.packets), 8);
    else d.writeUInt32BE(this.packets >>> 0, 8);
    const head = this.opts.counters64 ? 16 : 12;
    // Like iperf3's default payload: not all zeroes.
    for (let i = head; i < d.length; i++) d[i] = 0x30 + (i % 64);
    this.bytes += d.length;
    this.opts.onDatagram?.(d.length);
    this.sock.send(d, this.peer.port, this.peer.address);
  }
}

export function makeCookie(): Buffer {
  const b = Buffer.alloc(COOKIE_SIZE);
  for (let i = 0; i < COOKIE_SIZE - 1; i++) b[i] = COOKIE_ALPHABET.charCodeAt(Math.floor(Math.random() * 32));
  b[COOKIE_SIZE - 1] = 0;
  return b;
}

/** The cookie's text (up to the first NUL), for comparing and logging. */
export function cookieText(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('latin1');
}

export function stateByte(state: number): Buffer {
  return Buffer.from([state & 0xff]);
}

/** 4-byte big-endian length + JSON text. */
export function encodeJson(obj: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(obj), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/**
 * Reads exact byte counts from a socket as promises (the control channel is a
 * byte stream; a state byte, a length or a JSON body can be split or merged
 * across segments). Any end/close/error fails the pending and later reads.
 */
export class ByteReader {
  private chunks: Buffer[] = [];
  private avail = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor(
    private readonly sock: TcpSocketLike,
    initial?: Buffer,
    private readonly maxBuffered = MAX_JSON_BYTES + 64,
  ) {
    if (initial && initial.length > 0) {
      this.chunks.push(initial);
      this.avail = initial.length;
    }
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onClose);
    sock.on('error', this.onError);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.chunks.push(chunk);
    this.avail += chunk.length;
    if (this.avail > this.maxBuffered) {
      this.fail(new Error('too much unsolicited data on the control connection'));
      this.sock.destroy();
      return;
    }
    this.settle();
  };
  private readonly onEnd = (): void => this.fail(new Error('control connection closed by peer'));
  private readonly onClose = (): void => this.fail(new Error('control connection closed'));
  private readonly onError = (err: Error): void => this.fail(new Error(`control connection error: ${err.message}`));

  private fail(err: Error): void {
    if (!this.failure) this.failure = err;
    this.settle();
  }

  private take(n: number): Buffer {
    if (this.chunks[0]!.length === n) {
      this.avail -= n;
      return this.chunks.shift()!;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.avail -= n;
    return out;
  }

  private settle(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.avail >= w.n) {
      this.waiter = null;
      w.resolve(this.take(w.n));
    } else if (this.failure) {
      this.waiter = null;
      w.reject(this.failure);
    }
  }

  /** Resolves with exactly n bytes (n > 0). One read at a time. */
  read(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('ByteReader: concurrent read'));
    return new Promise<Buffer>((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.settle();
    });
  }

  /** A signed state byte. */
  async readState(): Promise<number> {
    const b = await this.read(1);
    return b.readInt8(0);
  }

  /** Length-prefixed JSON; rejects on absurd lengths or bad JSON. */
  async readJson(): Promise<Record<string, unknown>> {
    const len = (await this.read(4)).readUInt32BE(0);
    if (len === 0 || len > MAX_JSON_BYTES) throw new Error(`bad JSON length ${len}`);
    const text = (await this.read(len)).toString('utf8');
    const v: unknown = JSON.parse(text);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('JSON message is not an object');
    return v as Record<string, unknown>;
  }

  /** Stops listening to the socket; returns nothing buffered (callers are done). */
  detach(): void {
    this.sock.removeListener('data', this.onData);
    this.sock.removeListener('end', this.onEnd);
    this.sock.removeListener('close', this.onClose);
    this.sock.removeListener('error', this.onError);
    this.fail(new Error('reader detached'));
    this.chunks = [];
    this.avail = 0;
  }
}

/** Bytes a sender writes per event-loop turn before yielding (keeps TEST_END latency low). */
const SEND_TURN_BYTES = 1024 * 1024;

/**
 * Sends `block` over a socket as fast as backpressure allows: writes until
 * write() returns false, then waits for 'drain'; yields to the event loop every
 * megabyte so the control channel and timers keep running. Optional limits: a
 * rate in bits/s (iperf3 -b, per stream) and a shared byte budget (-n / -k).
 */
export class BlockSender {
  bytes = 0;
  blocks = 0;
  private stopped = true;
  private immediate: NodeJS.Immediate | null = null;
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;

  constructor(
    private readonly sock: TcpSocketLike,
    private readonly block: Buffer,
    private readonly opts: {
      rateBps?: number;
      /** Called before each block; return false to stop sending (byte/block limit). */
      mayWrite?: () => boolean;
      onBlock?: (n: number) => void;
    } = {},
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.startedAt = Date.now();
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    if (this.immediate) clearImmediate(this.immediate);
    if (this.timer) clearTimeout(this.timer);
    this.immediate = null;
    this.timer = null;
    this.sock.removeListener('drain', this.pump);
  }

  private readonly pump = (): void => {
    this.immediate = null;
    this.timer = null;
    if (this.stopped) return;
    const rate = this.opts.rateBps ?? 0;
    let turn = 0;
    while (turn < SEND_TURN_BYTES) {
      if (this.sock.destroyed || !this.sock.writable) {
        this.stop();
        return;
      }
      if (this.opts.mayWrite && !this.opts.mayWrite()) {
        this.stop();
        return;
      }
      if (rate > 0) {
        const allowed = (rate / 8) * ((Date.now() - this.startedAt) / 1000) - this.bytes;
        if (allowed < this.block.length) {
          const waitMs = Math.max(1, Math.ceil(((this.block.length - allowed) * 8 * 1000) / rate));
          this.timer = setTimeout(this.pump, waitMs);
          return;
        }
      }
      const ok = this.sock.write(this.block);
      this.bytes += this.block.length;
      this.blocks++;
      turn += this.block.length;
      this.opts.onBlock?.(this.block.length);
      if (!ok) {
        this.sock.once('drain', this.pump);
        return;
      }
    }
    this.immediate = setImmediate(this.pump);
  };
}

/** One data connection of a test, as seen by this end. */
interface DataStream {
  /** TCP: the stream's connection; null for a UDP stream. */
  sock: TcpSocketLike | null;
  /** UDP: the client's socket this stream talks to. */
  peer: { address: string; port: number } | null;
  udpRx: UdpReceiveStats | null;
  udpTx: UdpSender | null;
  /** TCP, sending: TCP_INFO's retransmissions when the data phase started and ended. */
  retransAtStart: number | null;
  retransAtEnd: number | null;
  acceptSeq: number;
  id: number;
  /** true: this end sends on the stream; false: it receives. */
  sending: boolean;
  bytes: number;
  omittedBytes: number;
  sender: BlockSender | null;
  endedAt: number | null;
}

export interface Iperf3TestSummary {
  client: string;
  startedAt: string;
  parallel: number;
  reverse: boolean;
  bidirectional: boolean;
  blockSize: number;
  durationSec: number;
  /** Wall-clock seconds the data phase lasted (TEST_RUNNING .. TEST_END, minus omit). */
  seconds: number;
  bytesReceived: number;
  bytesSent: number;
  bitsPerSecondReceived: number;
  bitsPerSecondSent: number;
  ok: boolean;
  error?: string;
  /** Sum of the byte counts the client reported in its results. */
  clientReportedBytes?: number;
  /** UDP (-u): what this end's receiving streams counted, summed (iperf3's receiver figures). */
  udp?: { packets: number; lost: number; outOfOrder: number; jitterMs: number; sentPackets: number };
}

export interface Iperf3ServerStats {
  port: number;
  running: boolean;
  testsStarted: number;
  testsCompleted: number;
  testsFailed: number;
  rejectedBusy: number;
  bytesReceived: number;
  bytesSent: number;
  lastTest: Iperf3TestSummary | null;
}

export interface Iperf3ServerHandle {
  /** Resolves when listening (rejects if the port cannot be bound). */
  readonly ready: Promise<void>;
  /** The TCP port bound (0 before ready). */
  port(): number;
  /** Stops listening, terminates a running test, closes every connection. */
  close(): Promise<void>;
  stats(): Iperf3ServerStats;
}

export interface Iperf3ServerOptions {
  port?: number;
  host?: string;
  log?: (line: string) => void;
  /** How long a new connection may take to send its cookie (default 10 s). */
  cookieTimeoutMs?: number;
  /** How long the client may take to open all streams (default 10 s). */
  streamsTimeoutMs?: number;
  /** A test without any byte moving or control message for this long is aborted (default 60 s). */
  idleTimeoutMs?: number;
  /** How long the client may take to send its parameters, its results, IPERF_DONE (default 30 s). */
  controlTimeoutMs?: number;
  /** How long past the test's duration (and omit) TEST_END may take to arrive (default 30 s). */
  endGraceMs?: number;
}

class TestAbort extends Error {
  constructor(
    message: string,
    readonly ierr?: number,
  ) {
    super(message);
  }
}

function num(v: unknown, dflt: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : dflt;
}

export function startIperf3Server(api: NetApi, opts: Iperf3ServerOptions = {}): Iperf3ServerHandle {
  const log: LogFn = opts.log ?? ((): void => undefined);
  const cookieTimeoutMs = opts.cookieTimeoutMs ?? 10_000;
  const streamsTimeoutMs = opts.streamsTimeoutMs ?? 10_000;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
  const controlTimeoutMs = opts.controlTimeoutMs ?? 30_000;
  const endGraceMs = opts.endGraceMs ?? 30_000;

  const stats: Omit<Iperf3ServerStats, 'port' | 'running'> = {
    testsStarted: 0,
    testsCompleted: 0,
    testsFailed: 0,
    rejectedBusy: 0,
    bytesReceived: 0,
    bytesSent: 0,
    lastTest: null,
  };

  /** Every socket we hold, so close() can destroy them all. */
  const sockets = new Set<TcpSocketLike>();
  let acceptSeq = 0;
  let closing = false;
  let current: Test | null = null;

  class Test {
    readonly cookie: string;
    readonly reader: ByteReader;
    readonly client: string;
    phase: 'params' | 'streams' | 'running' | 'results' | 'done' = 'params';
    streams: DataStream[] = [];
    expectedStreams = 0;
    params: Record<string, unknown> = {};
    parallel = 1;
    reverse = false;
    bidirectional = false;
    blockSize = 131072;
    durationSec = 0;
    omitSec = 0;
    udp = false;
    private udp64 = false;
    /** UDP: the socket on the server's port every stream talks through (bound at CREATE_STREAMS). */
    private udpSock: UdpSocketLike | null = null;
    private readonly udpByPeer = new Map<string, DataStream>();
    /** TCP: the congestion control of the streams (TCP_INFO), reported as iperf3's congestion_used. */
    private congestion: string | null = null;
    private timers = new Set<NodeJS.Timeout>();
    private streamsWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
    private runStart = 0;
    private countStart = 0;
    private endAt = 0;
    private lastProgress = Date.now();
    private lastBytes = 0;
    private cpuStart = process.cpuUsage();
    private aborted: string | null = null;
    private limitBytes = 0;
    private limitBlocks = 0;
    private totalSentForLimit = 0;
    private totalBlocksForLimit = 0;

    constructor(
      readonly control: TcpSocketLike,
      cookie: Buffer,
      rest: Buffer,
    ) {
      this.cookie = cookieText(cookie);
      this.client = `${control.remoteAddress ?? '?'}:${control.remotePort ?? '?'}`;
      this.reader = new ByteReader(control, rest);
      // State bytes are tiny writes in a row: Nagle would hold TEST_RUNNING
      // back for a delayed ACK (~40 ms) and skew both sides' test durations.
      control.setNoDelay(true);
      // While waiting for streams nobody reads the control connection: its
      // closing must still end the test at once.
      control.on('close', () => {
        if (this.phase === 'streams' || this.phase === 'params') this.abort('control connection closed');
      });
    }

    private setTimer(ms: number, fn: () => void): NodeJS.Timeout {
      const t = setTimeout(() => {
        this.timers.delete(t);
        fn();
      }, ms);
      this.timers.add(t);
      return t;
    }

    private clearTimer(t: NodeJS.Timeout | null): void {
      if (!t) return;
      clearTimeout(t);
      this.timers.delete(t);
    }

    /**
     * Fails the test from outside the control flow (timeouts, shutdown). SERVER_ERROR
     * carries iperf3's error number and an errno: the client prints the error's text
     * (with strerror(errno) after it for the errors iperf3 pairs with one).
     */
    abort(reason: string, notify?: number, ierr?: number, errno = 0): void {
      if (this.aborted || this.phase === 'done') return;
      this.aborted = reason;
      if (notify !== undefined && !this.control.destroyed && this.control.writable) {
        const parts = [stateByte(notify)];
        if (notify === IperfState.SERVER_ERROR) {
          const b = Buffer.alloc(8);
          b.writeInt32BE(ierr ?? 0, 0);
          b.writeInt32BE(errno, 4);
          parts.push(b);
        }
        this.control.end(Buffer.concat(parts));
        // Give the bytes a moment to leave, then make sure everything is gone.
        this.setTimer(200, () => this.control.destroy());
      } else {
        this.control.destroy();
      }
      for (const s of this.streams) s.sock?.destroy();
      this.closeUdp();
      this.streamsWaiter?.reject(new TestAbort(reason));
      this.streamsWaiter = null;
    }

    addStream(sock: TcpSocketLike, seq: number, rest: Buffer): boolean {
      // A UDP test's streams arrive on the UDP socket (onUdp), not as connections.
      if (this.udp || this.phase !== 'streams' || this.streams.length >= this.expectedStreams) return false;
      const st: DataStream = {
        sock,
        peer: null,
        udpRx: null,
        udpTx: null,
        retransAtStart: null,
        retransAtEnd: null,
        acceptSeq: seq,
        id: 0,
        sending: false,
        bytes: 0,
        omittedBytes: 0,
        sender: null,
        endedAt: null,
      };
      this.streams.push(st);
      const onData = (chunk: Buffer): void => {
        // Only the data phase counts (TEST_RUNNING .. TEST_END). Nothing is
        // expected on a stream this end sends on; whatever arrives is counted.
        if (this.phase !== 'running') return;
        st.bytes += chunk.length;
        stats.bytesReceived += chunk.length;
      };
      if (rest.length > 0) onData(rest);
      sock.on('data', onData);
      sock.on('close', () => {
        if (st.endedAt === null) st.endedAt = Date.now();
        st.sender?.stop();
        if (this.phase === 'streams') this.abort('a data stream closed before the test started');
      });
      if (this.streams.length === this.expectedStreams && this.streamsWaiter) {
        this.streamsWaiter.resolve();
        this.streamsWaiter = null;
      }
      return true;
    }

    /**
     * UDP: listens on the server's port for the streams' connect messages (each from
     * its own client socket), answers each in the byte order it came in, then counts
     * the stream's data (while the test runs).
     */
    private async listenUdp(): Promise<void> {
      const u = api.createUdpSocket();
      this.udpSock = u;
      u.on('error', (err: Error) => log(`iperf3: UDP socket error: ${err.message}`));
      u.on('message', (msg: Buffer, rinfo: { address: string; port: number }) => this.onUdp(msg, rinfo));
      await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error) => reject(new TestAbort(`cannot listen on UDP port ${boundPort()}: ${e.message}`, IperfError.IESTREAMACCEPT));
        u.once('error', onErr);
        u.bind(boundPort(), opts.host, () => {
          u.removeListener('error', onErr);
          resolve();
        });
      });
    }

    private onUdp(msg: Buffer, rinfo: { address: string; port: number }): void {
      const key = `${rinfo.address}:${rinfo.port}`;
      const st = this.udpByPeer.get(key);
      if (st) {
        if (this.phase !== 'running' || !st.udpRx) return;
        st.udpRx.onDatagram(msg, nowUs());
        st.bytes = st.udpRx.bytes;
        stats.bytesReceived += msg.length;
        return;
      }
      if (this.phase !== 'streams' || this.streams.length >= this.expectedStreams || msg.length < 4) return;
      const le = msg.readUInt32LE(0),
        be = msg.readUInt32BE(0);
      let reply: Buffer;
      if (le === UDP_CONNECT_MSG || le === LEGACY_UDP_CONNECT_MSG) {
        reply = Buffer.alloc(4);
        reply.writeUInt32LE(le === UDP_CONNECT_MSG ? UDP_CONNECT_REPLY : LEGACY_UDP_CONNECT_REPLY, 0);
      } else if (be === UDP_CONNECT_MSG || be === LEGACY_UDP_CONNECT_MSG) {
        reply = Buffer.alloc(4);
        reply.writeUInt32BE(be === UDP_CONNECT_MSG ? UDP_CONNECT_REPLY : LEGACY_UDP_CONNECT_REPLY, 0);
      } else return; // not a stream being opened
      const ds: DataStream = {
        sock: null,
        peer: { address: rinfo.address, port: rinfo.port },
        udpRx: null,
        udpTx: null,
        retransAtStart: null,
        retransAtEnd: null,
        acceptSeq: ++acceptSeq,
        id: 0,
        sending: false,
        bytes: 0,
        omittedBytes: 0,
        sender: null,
        endedAt: null,
      };
      this.udpByPeer.set(key, ds);
      this.streams.push(ds);
      this.udpSock!.send(reply, rinfo.port, rinfo.address);
      if (this.streams.length === this.expectedStreams && this.streamsWaiter) {
        this.streamsWaiter.resolve();
        this.streamsWaiter = null;
      }
    }

    private closeUdp(): void {
      for (const st of this.streams) st.udpTx?.stop();
      const u = this.udpSock;
      this.udpSock = null;
      if (u) {
        try {
          u.close();
        } catch {
          /* closed already */
        }
      }
    }

    private waitForStreams(): Promise<void> {
      if (this.streams.length >= this.expectedStreams) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = this.setTimer(streamsTimeoutMs, () => {
          this.streamsWaiter = null;
          reject(
            new TestAbort(`only ${this.streams.length} of ${this.expectedStreams} streams connected in ${streamsTimeoutMs} ms`, IperfError.IESTREAMACCEPT),
          );
        });
        this.streamsWaiter = {
          resolve: () => {
            this.clearTimer(t);
            resolve();
          },
          reject: (e) => {
            this.clearTimer(t);
            reject(e);
          },
        };
      });
    }

    /** Awaits `fn()`, aborting the test if it takes longer than `ms`. */
    private async within<T>(ms: number, what: string, fn: () => Promise<T>): Promise<T> {
      const t = this.setTimer(ms, () => this.abort(`no ${what} from the client within ${ms} ms`));
      try {
        return await fn();
      } finally {
        this.clearTimer(t);
      }
    }

    private send(buf: Buffer): void {
      if (!this.control.destroyed && this.control.writable) this.control.write(buf);
    }

    private checkParams(p: Record<string, unknown>): void {
      if (p.sctp === true) throw new TestAbort('unsupported protocol requested (SCTP)', IperfError.IEUNIMP);
      this.udp = p.udp === true;
      this.udp64 = p.udp_counters_64bit !== undefined && p.udp_counters_64bit !== 0 && p.udp_counters_64bit !== false;
      if (typeof p.authtoken === 'string') {
        throw new TestAbort('authenticated tests are not supported', IperfError.IEAUTHTEST);
      }
      this.parallel = Math.trunc(num(p.parallel, 1));
      if (this.parallel < 1 || this.parallel > MAX_STREAMS) {
        throw new TestAbort(`bad number of parallel streams ${this.parallel}`, IperfError.IENUMSTREAMS);
      }
      this.reverse = p.reverse === true || p.reverse === 1;
      this.bidirectional = p.bidirectional === true || p.bidirectional === 1;
      this.blockSize = Math.trunc(num(p.len, this.udp ? 1460 : 131072));
      const [minBlk, maxBlk] = this.udp ? [MIN_UDP_BLOCKSIZE, MAX_UDP_BLOCKSIZE] : [1, MAX_BLOCK_SIZE];
      if (this.blockSize < minBlk || this.blockSize > maxBlk) {
        throw new TestAbort(`bad block size ${this.blockSize}`, IperfError.IEBLOCKSIZE);
      }
      this.durationSec = Math.max(0, num(p.time, 10));
      this.omitSec = Math.max(0, num(p.omit, 0));
      this.limitBytes = Math.max(0, num(p.num, 0));
      this.limitBlocks = Math.max(0, num(p.blockcount, 0));
      this.expectedStreams = this.parallel * (this.bidirectional ? 2 : 1);
    }

    /** The whole test, driven by the control connection. Never throws. */
    async run(): Promise<void> {
      const started = new Date();
      stats.testsStarted++;
      let error: string | undefined;
      let clientReported: number | undefined;
      try {
        this.send(stateByte(IperfState.PARAM_EXCHANGE));
        try {
          this.params = await this.within(controlTimeoutMs, 'parameters', () => this.reader.readJson());
        } catch (err) {
          if (err instanceof SyntaxError || /bad JSON|not an object/.test((err as Error).message)) {
            throw new TestAbort(`bad parameters: ${(err as Error).message}`, IperfError.IERECVPARAMS);
          }
          throw err;
        }
        this.checkParams(this.params);
        log(
          `iperf3: test from ${this.client}: ${this.udp ? 'UDP, ' : ''}${this.parallel} stream(s)` +
            `${this.reverse ? ', reverse' : ''}${this.bidirectional ? ', bidirectional' : ''}` +
            `, ${this.durationSec} s, block ${this.blockSize}`,
        );

        this.phase = 'streams';
        if (this.udp) await this.listenUdp();
        this.send(stateByte(IperfState.CREATE_STREAMS));
        await this.waitForStreams();
        this.assignStreams();

        this.phase = 'running';
        this.send(stateByte(IperfState.TEST_START));
        this.send(stateByte(IperfState.TEST_RUNNING));
        this.startData();

        // Wait for TEST_END (or an interruption).
        for (;;) {
          const st = await this.reader.readState();
          this.lastProgress = Date.now();
          if (st === IperfState.TEST_END) break;
          if (st === IperfState.CLIENT_TERMINATE) throw new TestAbort('client terminated the test');
          if (st === IperfState.IPERF_DONE) throw new TestAbort('client ended without TEST_END');
          throw new TestAbort(`unexpected control message ${st} during the test`, IperfError.IEMESSAGE);
        }
        this.stopData();
        // Like iperf3, close the data streams now. A reverse-mode client keeps
        // reading its streams after TEST_END, with a blocking read for a whole
        // block; only our FIN gets it out of there and on to the results.
        // (UDP streams have nothing to close: the socket stays until the test is done,
        // so that late datagrams are not answered with port unreachable.)
        for (const st of this.streams) st.sock?.end();

        this.phase = 'results';
        this.send(stateByte(IperfState.EXCHANGE_RESULTS));
        let clientResults: Record<string, unknown>;
        try {
          clientResults = await this.within(controlTimeoutMs, 'client results', () => this.reader.readJson());
        } catch (err) {
          if (err instanceof SyntaxError || /bad JSON|not an object/.test((err as Error).message)) {
            throw new TestAbort(`bad results from client: ${(err as Error).message}`, IperfError.IERECVRESULTS);
          }
          throw err;
        }
        clientReported = sumStreamBytes(clientResults);
        this.send(encodeJson(this.results()));
        this.send(stateByte(IperfState.DISPLAY_RESULTS));

        // IPERF_DONE, or the client just closing, both end the test cleanly.
        try {
          const st = await this.within(Math.min(controlTimeoutMs, 10_000), 'IPERF_DONE', () => this.reader.readState());
          if (st !== IperfState.IPERF_DONE && st !== IperfState.CLIENT_TERMINATE) {
            log(`iperf3: unexpected control message ${st} after results`);
          }
        } catch {
          /* closed after the results: fine */
        }
        stats.testsCompleted++;
      } catch (err) {
        error = this.aborted ?? (err as Error).message;
        stats.testsFailed++;
        if (err instanceof TestAbort && err.ierr !== undefined) {
          this.abort(error, IperfState.SERVER_ERROR, err.ierr);
        } else {
          this.abort(error);
        }
        log(`iperf3: test from ${this.client} failed: ${error}`);
      } finally {
        this.stopData();
        this.finish(started, error, clientReported);
      }
    }

    private assignStreams(): void {
      // Ids follow creation (accept) order: 1, 3, 4, 5, ...
      this.streams.sort((a, b) => a.acceptSeq - b.acceptSeq);
      this.streams.forEach((s, i) => {
        s.id = i === 0 ? 1 : i + 2;
        s.sending = this.bidirectional ? i >= this.parallel : this.reverse;
        if (s.sock && (this.params.nodelay === true || this.params.nodelay === 1)) s.sock.setNoDelay(true);
        if (s.peer && !s.sending) s.udpRx = new UdpReceiveStats(this.udp64);
      });
    }

    private startData(): void {
      this.runStart = Date.now();
      this.countStart = this.runStart;
      this.cpuStart = process.cpuUsage();
      const block = Buffer.alloc(this.blockSize);
      // Like iperf3's default, the payload is not all zeroes (compressible links).
      for (let i = 0; i < block.length; i++) block[i] = 0x30 + (i % 64);
      const rate = Math.max(0, num(this.params.bandwidth, 0));
      for (const st of this.streams) this.congestion ??= st.sock?.tcpInfo?.()?.congestion ?? null;
      const mayWrite = () =>
        !(this.limitBytes > 0 && this.totalSentForLimit >= this.limitBytes) && !(this.limitBlocks > 0 && this.totalBlocksForLimit >= this.limitBlocks);
      for (const st of this.streams) {
        if (!st.sending) continue;
        if (st.peer) {
          // UDP: at the rate (iperf3's default for UDP, 1 Mbit/s, comes as "bandwidth").
          st.udpTx = new UdpSender(this.udpSock!, st.peer, this.blockSize, rate, {
            counters64: this.udp64,
            mayWrite,
            onDatagram: (n) => {
              st.bytes += n;
              stats.bytesSent += n;
              this.totalSentForLimit += n;
              this.totalBlocksForLimit++;
            },
          });
          st.udpTx.start();
          continue;
        }
        st.retransAtStart = st.sock!.tcpInfo?.()?.retransmits ?? null;
        st.sender = new BlockSender(st.sock!, block, {
          rateBps: rate,
          mayWrite,
          onBlock: (n) => {
            st.bytes += n;
            stats.bytesSent += n;
            this.totalSentForLimit += n;
            this.totalBlocksForLimit++;
          },
        });
        st.sender.start();
      }
      if (this.omitSec > 0) {
        this.setTimer(this.omitSec * 1000, () => {
          this.countStart = Date.now();
          for (const st of this.streams) st.omittedBytes = st.bytes;
        });
      }
      // A dead client (no FIN, no RST) must not keep the server busy forever. What the
      // client is told says which wait ran out: IEMESSAGE ("received an unknown control
      // message") is for a state byte we do not know, and a TEST_END that never arrived
      // (a CI run's was dropped, with its retransmissions, for 30 s) reported as one sent
      // the search to the bytes on the control connection, which were all correct.
      const watchdog = (): void => {
        const moved = this.streams.reduce((a, s) => a + s.bytes, 0);
        if (moved !== this.lastBytes) {
          this.lastBytes = moved;
          this.lastProgress = Date.now();
        }
        if (Date.now() - this.lastProgress > idleTimeoutMs) {
          this.abort(`no progress for ${idleTimeoutMs} ms`, IperfState.SERVER_ERROR, IperfError.IENOMSG);
          return;
        }
        const endBy = (this.durationSec + this.omitSec) * 1000 + endGraceMs;
        if (this.durationSec > 0 && Date.now() - this.runStart > endBy) {
          // The control connection's read of TEST_END timed out: "unable to read from
          // the control socket: Connection timed out" at the client.
          this.abort(
            `client did not end the test in time (no TEST_END ${endGraceMs} ms after its end)`,
            IperfState.SERVER_ERROR,
            IperfError.IECTRLREAD,
            ETIMEDOUT,
          );
          return;
        }
        if (this.phase === 'running') this.setTimer(Math.min(1000, idleTimeoutMs), watchdog);
      };
      this.setTimer(Math.min(1000, idleTimeoutMs), watchdog);
    }

    private stopData(): void {
      if (this.endAt === 0 && this.runStart !== 0) this.endAt = Date.now();
      for (const st of this.streams) {
        st.sender?.stop();
        st.udpTx?.stop();
        if (st.sock && st.sending && st.retransAtStart !== null && st.retransAtEnd === null) {
          const now = st.sock.tcpInfo?.()?.retransmits;
          st.retransAtEnd = now ?? null;
        }
        if (st.endedAt === null || st.endedAt > this.endAt) st.endedAt = this.endAt || Date.now();
      }
    }

    private results(): Record<string, unknown> {
      const streams: StreamResult[] = this.streams.map((s) => ({
        id: s.id,
        bytes: s.bytes - s.omittedBytes,
        sending: s.sending,
        endTime: Math.max(0, ((s.endedAt ?? this.endAt) - this.countStart) / 1000),
        ...(s.sock && s.sending && s.retransAtStart !== null && s.retransAtEnd !== null ? { retransmits: s.retransAtEnd - s.retransAtStart } : {}),
        ...(s.udpRx ? { jitter: s.udpRx.jitter, errors: s.udpRx.cntError, packets: s.udpRx.packetCount } : {}),
        ...(s.udpTx ? { packets: s.udpTx.packets } : {}),
      }));
      return {
        ...resultsMessage(this.cpuStart, this.endAt - this.runStart, streams, { congestion: this.udp ? null : this.congestion }),
        ...(this.params.get_server_output ? { server_output_text: this.serverText() } : {}),
      };
    }

    private serverText(): string {
      const secs = Math.max(1e-6, (this.endAt - this.countStart) / 1000);
      const lines = [`faultstack iperf3 server: test from ${this.client}`];
      for (const s of this.streams) {
        const b = s.bytes - s.omittedBytes;
        lines.push(
          `[${String(s.id).padStart(3)}] ${secs.toFixed(2)} sec ${b} bytes ` +
            `${((b * 8) / secs / 1e6).toFixed(1)} Mbits/sec ${s.sending ? 'sender' : 'receiver'}`,
        );
      }
      return lines.join('\n') + '\n';
    }

    private finish(started: Date, error: string | undefined, clientReported: number | undefined): void {
      this.phase = 'done';
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
      this.reader.detach();
      if (!error) this.control.end();
      // Whatever the client does next, nothing of this test survives long.
      const ctl = this.control;
      const streams = this.streams;
      const reap = setTimeout(() => {
        ctl.destroy();
        for (const s of streams) s.sock?.destroy();
      }, 2000);
      ctl.once('close', () => clearTimeout(reap));
      for (const s of streams) s.sock?.destroy();
      this.closeUdp();

      const secs = this.runStart ? Math.max(0, (this.endAt - this.countStart) / 1000) : 0;
      let rx = 0;
      let tx = 0;
      for (const s of streams) {
        if (s.sending) tx += s.bytes - s.omittedBytes;
        else rx += s.bytes - s.omittedBytes;
      }
      const summary: Iperf3TestSummary = {
        client: this.client,
        startedAt: started.toISOString(),
        parallel: this.parallel,
        reverse: this.reverse,
        bidirectional: this.bidirectional,
        blockSize: this.blockSize,
        durationSec: this.durationSec,
        seconds: secs,
        bytesReceived: rx,
        bytesSent: tx,
        bitsPerSecondReceived: secs > 0 ? (rx * 8) / secs : 0,
        bitsPerSecondSent: secs > 0 ? (tx * 8) / secs : 0,
        ok: !error,
      };
      if (this.udp) {
        const rxs = streams.filter((x) => x.udpRx).map((x) => x.udpRx!);
        summary.udp = {
          packets: rxs.reduce((a, r) => a + r.packetCount, 0),
          lost: rxs.reduce((a, r) => a + r.cntError, 0),
          outOfOrder: rxs.reduce((a, r) => a + r.outOfOrder, 0),
          jitterMs: rxs.length ? (rxs.reduce((a, r) => a + r.jitter, 0) / rxs.length) * 1000 : 0,
          sentPackets: streams.reduce((a, x) => a + (x.udpTx?.packets ?? 0), 0),
        };
      }
      if (error) summary.error = error;
      if (clientReported !== undefined) summary.clientReportedBytes = clientReported;
      stats.lastTest = summary;
      if (!error) {
        log(
          `iperf3: test from ${this.client} done: ${secs.toFixed(2)} s, received ${rx} B` +
            ` (${(summary.bitsPerSecondReceived / 1e9).toFixed(2)} Gbit/s), sent ${tx} B` +
            ` (${(summary.bitsPerSecondSent / 1e9).toFixed(2)} Gbit/s)`,
        );
      }
      if (current === this) current = null;
    }
  }

  function sumStreamBytes(r: Record<string, unknown>): number | undefined {
    if (!Array.isArray(r.streams)) return undefined;
    let total = 0;
    for (const s of r.streams as unknown[]) {
      if (s && typeof s === 'object') total += num((s as Record<string, unknown>).bytes, 0);
    }
    return total;
  }

  /** Rejects a connection the way iperf3 does: ACCESS_DENIED after the cookie. */
  function deny(sock: TcpSocketLike): void {
    stats.rejectedBusy++;
    sock.end(stateByte(IperfState.ACCESS_DENIED));
    const t = setTimeout(() => sock.destroy(), 2000);
    sock.once('close', () => clearTimeout(t));
  }

  function onConnection(sock: TcpSocketLike): void {
    if (closing) {
      sock.destroy();
      return;
    }
    const seq = ++acceptSeq;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', (err: Error) => {
      // Errors are expected when clients vanish; the 'close' that follows cleans up.
      if (current && current.control === sock) log(`iperf3: control connection error: ${err.message}`);
    });

    // Collect the 37-byte cookie, then decide what this connection is.
    const parts: Buffer[] = [];
    let have = 0;
    const timer = setTimeout(() => {
      cleanup();
      sock.destroy();
    }, cookieTimeoutMs);
    const onData = (chunk: Buffer): void => {
      parts.push(chunk);
      have += chunk.length;
      if (have < COOKIE_SIZE) return;
      cleanup();
      const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      dispatch(sock, seq, all.subarray(0, COOKIE_SIZE), all.subarray(COOKIE_SIZE));
    };
    const onGone = (): void => cleanup();
    function cleanup(): void {
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('close', onGone);
    }
    sock.on('data', onData);
    sock.on('close', onGone);
  }

  function dispatch(sock: TcpSocketLike, seq: number, cookie: Buffer, rest: Buffer): void {
    if (closing) {
      sock.destroy();
      return;
    }
    const test = current;
    if (test) {
      if (cookieText(cookie) === test.cookie && test.addStream(sock, seq, rest)) return;
      log(`iperf3: busy, denying ${sock.remoteAddress ?? '?'}:${sock.remotePort ?? '?'}`);
      deny(sock);
      return;
    }
    const t = new Test(sock, cookie, rest);
    current = t;
    void t.run();
  }

  const server: TcpServerLike = api.createServer(onConnection);
  const port = opts.port ?? DEFAULT_IPERF3_PORT;
  const ready = new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    const lo: { port: number; host?: string } = { port };
    if (opts.host !== undefined) lo.host = opts.host;
    server.listen(lo, () => {
      server.removeListener('error', onError);
      server.on('error', (err: Error) => log(`iperf3: server error: ${err.message}`));
      log(`iperf3: listening on tcp port ${boundPort()}`);
      resolve();
    });
  });
  ready.catch(() => undefined);

  function boundPort(): number {
    const a = server.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  let closePromise: Promise<void> | null = null;
  return {
    ready,
    port: boundPort,
    stats: (): Iperf3ServerStats => ({
      port: boundPort(),
      running: current !== null,
      ...stats,
      lastTest: stats.lastTest ? { ...stats.lastTest } : null,
    }),
    close(): Promise<void> {
      if (closePromise) return closePromise;
      closing = true;
      closePromise = (async () => {
        if (current) current.abort('server shutting down', IperfState.SERVER_TERMINATE);
        // Let SERVER_TERMINATE leave, then drop everything.
        await new Promise<void>((r) => setTimeout(r, 50));
        for (const s of sockets) s.destroy();
        sockets.clear();
        await ready.then(
          () => new Promise<void>((r) => server.close(() => r())),
          () => undefined,
        );
      })();
      return closePromise;
    },
  };
}
