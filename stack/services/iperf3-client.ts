/**
 * An iperf3 client (TCP) over NetApi, for running tests against a stock
 * `iperf3 -s` (or against our own server). The control protocol is described
 * in ./iperf3.ts.
 *
 * Directions: normal (this end sends), `reverse` (the server sends), or
 * `bidirectional` (both; the first `parallel` streams carry our data, the
 * others the server's).
 */
import type { NetApi, TcpSocketLike } from '../api/net-api';
import {
  BlockSender,
  ByteReader,
  DEFAULT_IPERF3_PORT,
  IperfState,
  MAX_BLOCK_SIZE,
  MAX_STREAMS,
  encodeJson,
  makeCookie,
  resultsMessage,
  stateByte,
} from './iperf3';

export interface Iperf3ClientOptions {
  host: string;
  port?: number;
  /** Test length in seconds (iperf3 -t), default 10. */
  durationSec?: number;
  /** Parallel streams (iperf3 -P), default 1. */
  parallel?: number;
  /** Server sends, we receive (iperf3 -R). */
  reverse?: boolean;
  /** Both directions at once (iperf3 --bidir). */
  bidirectional?: boolean;
  /** Block size for writes (iperf3 -l), default 128 KiB. */
  blockSize?: number;
  /** Seconds at the start not counted (iperf3 -O), default 0. */
  omitSec?: number;
  /** Set TCP_NODELAY on the data streams (iperf3 -N). */
  noDelay?: boolean;
  localAddress?: string;
  log?: (line: string) => void;
  /** Give up if the whole test takes longer than durationSec + this (default 30 s). */
  graceMs?: number;
}

export interface Iperf3StreamResult {
  id: number;
  /** true: this end sent on the stream. */
  sending: boolean;
  /** Bytes this end sent (sending) or received (not sending), omit excluded. */
  bytes: number;
  /** Bytes the server reported for the same stream. */
  serverBytes: number | null;
}

export interface Iperf3ClientResult {
  /** Bytes this end wrote on its sending streams (after the omit period). */
  sentBytes: number;
  /** Bytes this end received on its receiving streams (after the omit period). */
  receivedBytes: number;
  /** Length of the measured data phase, seconds. */
  seconds: number;
  /** (sentBytes + receivedBytes) * 8 / seconds, as counted by this end. */
  bitsPerSecond: number;
  /**
   * Goodput as counted by the receiving side of each stream (the server's
   * report for streams we sent on, ours for streams we received on).
   */
  receiverBitsPerSecond: number;
  streams: Iperf3StreamResult[];
  /** The server's results JSON, as received. */
  serverResult: Record<string, unknown>;
}

interface ClientStream {
  sock: TcpSocketLike;
  id: number;
  sending: boolean;
  bytes: number;
  omitted: number;
  sender: BlockSender | null;
}

function num(v: unknown, dflt: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : dflt;
}

/** Server error numbers we can name; others are shown as numbers. */
const SERVER_ERRORS: Record<number, string> = {
  6: 'number of parallel streams too large',
  7: 'block size too large',
  13: 'an option is not implemented by the server',
  110: 'received an unknown control message',
  114: 'server could not receive the parameters',
  117: 'server could not receive the results',
  131: 'protocol not supported by the server',
  142: 'test authorization failed',
  204: 'server could not accept a stream connection',
};

/** Runs one test; resolves with the byte counts, rejects on any failure. */
export function runIperf3Client(api: NetApi, opts: Iperf3ClientOptions): Promise<Iperf3ClientResult> {
  const log = opts.log ?? ((): void => undefined);
  const port = opts.port ?? DEFAULT_IPERF3_PORT;
  const durationSec = opts.durationSec ?? 10;
  const parallel = opts.parallel ?? 1;
  const reverse = opts.reverse ?? false;
  const bidirectional = opts.bidirectional ?? false;
  const blockSize = opts.blockSize ?? 128 * 1024;
  const omitSec = opts.omitSec ?? 0;
  const graceMs = opts.graceMs ?? 30_000;

  if (!(durationSec > 0)) return Promise.reject(new Error('durationSec must be > 0'));
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > MAX_STREAMS) {
    return Promise.reject(new Error(`parallel must be an integer from 1 to ${MAX_STREAMS}`));
  }
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > MAX_BLOCK_SIZE) {
    return Promise.reject(new Error(`blockSize must be an integer from 1 to ${MAX_BLOCK_SIZE}`));
  }
  if (reverse && bidirectional) return Promise.reject(new Error('reverse and bidirectional are exclusive'));

  const cookie = makeCookie();
  const streams: ClientStream[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let control: TcpSocketLike | null = null;
  let reader: ByteReader | null = null;
  let running = false;
  let runStart = 0;
  let countStart = 0;
  let runEnd = 0;
  let cpuStart = process.cpuUsage();

  const setTimer = (ms: number, fn: () => void): NodeJS.Timeout => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };

  const teardown = (graceful: boolean): void => {
    running = false;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const s of streams) {
      s.sender?.stop();
      s.sock.destroy();
    }
    reader?.detach();
    if (control) {
      if (graceful) {
        const c = control;
        c.end();
        // The server closes after IPERF_DONE; do not wait for it forever.
        const t = setTimeout(() => c.destroy(), 2000);
        c.once('close', () => clearTimeout(t));
      } else {
        control.destroy();
      }
    }
  };

  const connect = (): Promise<TcpSocketLike> =>
    new Promise<TcpSocketLike>((resolve, reject) => {
      const o: { port: number; host: string; localAddress?: string } = { port, host: opts.host };
      if (opts.localAddress !== undefined) o.localAddress = opts.localAddress;
      const onError = (err: Error): void => {
        sock.destroy();
        reject(new Error(`connect to ${opts.host}:${port} failed: ${err.message}`));
      };
      // The connect listener is part of NetApi; a 'connect' event is not promised.
      const sock = api.connect(o, () => {
        sock.removeListener('error', onError);
        resolve(sock);
      });
      sock.once('error', onError);
    });

  const openStreams = async (): Promise<void> => {
    const total = parallel * (bidirectional ? 2 : 1);
    const block = Buffer.alloc(blockSize);
    for (let i = 0; i < block.length; i++) block[i] = 0x30 + (i % 64);
    // One after the other, so the server sees them in the same order (the ids depend on it).
    for (let i = 0; i < total; i++) {
      const sock = await connect();
      const st: ClientStream = {
        sock,
        id: i === 0 ? 1 : i + 2,
        sending: bidirectional ? i < parallel : !reverse,
        bytes: 0,
        omitted: 0,
        sender: null,
      };
      streams.push(st);
      sock.on('error', (err: Error) => {
        // The server closes the streams at TEST_END, often with a RST: only
        // errors during the data phase are worth a line.
        if (running) log(`iperf3-client: stream ${st.id} error: ${err.message}`);
      });
      if (opts.noDelay) sock.setNoDelay(true);
      sock.write(cookie);
      sock.on('data', (chunk: Buffer) => {
        if (running) st.bytes += chunk.length;
      });
      if (st.sending) {
        st.sender = new BlockSender(sock, block, {
          onBlock: (n) => {
            if (running) st.bytes += n;
          },
        });
      }
    }
  };

  const startTest = (onDone: () => void): void => {
    running = true;
    runStart = Date.now();
    countStart = runStart;
    cpuStart = process.cpuUsage();
    for (const s of streams) s.sender?.start();
    if (omitSec > 0) {
      setTimer(omitSec * 1000, () => {
        countStart = Date.now();
        for (const s of streams) s.omitted = s.bytes;
      });
    }
    setTimer((omitSec + durationSec) * 1000, () => {
      running = false;
      runEnd = Date.now();
      for (const s of streams) s.sender?.stop();
      onDone();
    });
  };

  const ourResults = (): Record<string, unknown> => {
    const secs = Math.max(0, (runEnd - countStart) / 1000);
    return resultsMessage(
      cpuStart,
      runEnd - runStart,
      streams.map((s) => ({ id: s.id, bytes: s.bytes - s.omitted, sending: s.sending, endTime: secs })),
    );
  };

  const main = async (): Promise<Iperf3ClientResult> => {
    control = await connect();
    control.setNoDelay(true);
    reader = new ByteReader(control);
    control.on('error', () => undefined); // surfaced through the reader
    control.write(cookie);
    let serverResult: Record<string, unknown> | null = null;

    for (;;) {
      const st = await reader.readState();
      switch (st) {
        case IperfState.PARAM_EXCHANGE: {
          const params: Record<string, unknown> = {
            tcp: true,
            omit: omitSec,
            time: durationSec,
            num: 0,
            blockcount: 0,
            parallel,
          };
          if (reverse) params.reverse = true;
          if (bidirectional) params.bidirectional = true;
          if (opts.noDelay) params.nodelay = true;
          params.len = blockSize;
          params.pacing_timer = 1000;
          params.client_version = '3.12';
          control.write(encodeJson(params));
          break;
        }
        case IperfState.CREATE_STREAMS:
          await openStreams();
          break;
        case IperfState.TEST_START:
          break;
        case IperfState.TEST_RUNNING:
          startTest(() => {
            if (control && !control.destroyed) control.write(stateByte(IperfState.TEST_END));
          });
          break;
        case IperfState.EXCHANGE_RESULTS:
          if (runEnd === 0) throw new Error('server asked for results before the test ended');
          control.write(encodeJson(ourResults()));
          serverResult = await reader.readJson();
          break;
        case IperfState.DISPLAY_RESULTS: {
          if (!serverResult) throw new Error('server sent DISPLAY_RESULTS without results');
          control.write(stateByte(IperfState.IPERF_DONE));
          return summarize(serverResult);
        }
        case IperfState.ACCESS_DENIED:
          throw new Error('iperf3 server is busy running a test (ACCESS_DENIED)');
        case IperfState.SERVER_ERROR: {
          const b = await reader.read(8);
          const ierr = b.readInt32BE(0);
          const errno = b.readInt32BE(4);
          const what = SERVER_ERRORS[ierr] ?? 'see iperf3 error numbers';
          throw new Error(`iperf3 server error ${ierr} (${what}), errno ${errno}`);
        }
        case IperfState.SERVER_TERMINATE:
          throw new Error('iperf3 server terminated the test');
        default:
          throw new Error(`unexpected iperf3 control message ${st}`);
      }
    }
  };

  const summarize = (serverResult: Record<string, unknown>): Iperf3ClientResult => {
    const seconds = Math.max(1e-6, (runEnd - countStart) / 1000);
    const serverStreams = new Map<number, Record<string, unknown>>();
    if (Array.isArray(serverResult.streams)) {
      for (const s of serverResult.streams as unknown[]) {
        if (s && typeof s === 'object') {
          const o = s as Record<string, unknown>;
          serverStreams.set(num(o.id, -1), o);
        }
      }
    }
    let sent = 0;
    let received = 0;
    let receiverSide = 0;
    let receiverSecs = 0;
    const out: Iperf3StreamResult[] = streams.map((s) => {
      const bytes = s.bytes - s.omitted;
      const srv = serverStreams.get(s.id);
      const serverBytes = srv ? num(srv.bytes, 0) : null;
      if (s.sending) {
        sent += bytes;
        receiverSide += serverBytes ?? 0;
        if (srv) receiverSecs = Math.max(receiverSecs, num(srv.end_time, 0) - num(srv.start_time, 0));
      } else {
        received += bytes;
        receiverSide += bytes;
        receiverSecs = Math.max(receiverSecs, seconds);
      }
      return { id: s.id, sending: s.sending, bytes, serverBytes };
    });
    if (!(receiverSecs > 0)) receiverSecs = seconds;
    return {
      sentBytes: sent,
      receivedBytes: received,
      seconds,
      bitsPerSecond: ((sent + received) * 8) / seconds,
      receiverBitsPerSecond: (receiverSide * 8) / receiverSecs,
      streams: out,
      serverResult,
    };
  };

  return new Promise<Iperf3ClientResult>((resolve, reject) => {
    let settled = false;
    const overall = setTimeout(
      () => {
        if (settled) return;
        settled = true;
        teardown(false);
        reject(new Error(`iperf3 test did not finish within ${durationSec + omitSec} s + ${graceMs} ms`));
      },
      (durationSec + omitSec) * 1000 + graceMs,
    );
    main().then(
      (res) => {
        clearTimeout(overall);
        if (settled) return;
        settled = true;
        teardown(true);
        log(
          `iperf3-client: ${opts.host}:${port} done: sent ${res.sentBytes} B, received ${res.receivedBytes} B` +
            ` in ${res.seconds.toFixed(2)} s (${(res.bitsPerSecond / 1e9).toFixed(2)} Gbit/s)`,
        );
        resolve(res);
      },
      (err: Error) => {
        clearTimeout(overall);
        if (settled) return;
        settled = true;
        teardown(false);
        reject(err);
      },
    );
  });
}
