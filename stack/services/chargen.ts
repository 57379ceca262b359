/**
 * Character generator (RFC 864), TCP port 19 by default.
 *
 * Sends the RFC's example pattern for as long as the client stays connected:
 * lines of 72 printable ASCII characters (the 95 codes 32..126, in a ring)
 * followed by CR LF, each line starting one character further along the ring
 * than the one before. Like the RFC's sample, the first line starts with '!'.
 * The pattern repeats every 95 lines (95 * 74 = 7030 bytes).
 *
 * Writes honour backpressure (write() returning false -> wait for 'drain') and
 * yield to the event loop regularly, so a fast peer cannot starve other work.
 * Received data is read and dropped. Sending stops when the peer ends or closes.
 */
import type { NetApi, TcpSocketLike } from '../api/net-api';
import { startTcpService, type ServiceHandle, type TcpServiceOptions } from './echo';

export const CHARGEN_LINE_CHARS = 72;
const FIRST = 32;
const COUNT = 95;
const LINE_BYTES = CHARGEN_LINE_CHARS + 2;
export const CHARGEN_PERIOD_BYTES = COUNT * LINE_BYTES;

/** Line `n` (0-based) of the pattern, without CR LF. */
export function chargenLine(n: number): string {
  let s = '';
  const start = (n + 1) % COUNT; // line 0 starts at '!' as in RFC 864's sample
  for (let i = 0; i < CHARGEN_LINE_CHARS; i++) s += String.fromCharCode(FIRST + ((start + i) % COUNT));
  return s;
}

/** One full period of the pattern (95 lines with CR LF). */
export function chargenPeriod(): Buffer {
  let s = '';
  for (let n = 0; n < COUNT; n++) s += chargenLine(n) + '\r\n';
  return Buffer.from(s, 'latin1');
}

// Nine periods per write (63 270 bytes): large writes, every one starts a period.
const CHUNK = Buffer.concat(Array.from({ length: 9 }, () => chargenPeriod()));
/** Max bytes written per event-loop turn before yielding. */
const TURN_BUDGET = 4 * 1024 * 1024;

export interface ChargenHandle extends ServiceHandle {
  stats(): { connections: number; bytes: number };
}

export function startChargen(api: NetApi, opts: TcpServiceOptions = {}): ChargenHandle {
  let bytes = 0;

  const serve = (socket: TcpSocketLike): void => {
    let stopped = false;
    let immediate: NodeJS.Immediate | null = null;
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      if (immediate) clearImmediate(immediate);
      immediate = null;
      socket.removeListener('drain', pump);
    };
    function pump(): void {
      immediate = null;
      if (stopped) return;
      let turn = 0;
      while (turn < TURN_BUDGET) {
        const ok = socket.write(CHUNK);
        bytes += CHUNK.length;
        turn += CHUNK.length;
        if (!ok) {
          socket.once('drain', pump);
          return;
        }
      }
      immediate = setImmediate(pump);
    }
    socket.on('data', () => undefined); // drain and ignore input
    socket.on('end', () => {
      stop();
      socket.end();
    });
    socket.on('close', stop);
    socket.on('error', stop);
    pump();
  };

  const svc = startTcpService(api, 'chargen', { port: opts.port ?? 19, host: opts.host, log: opts.log }, serve);
  return {
    name: 'chargen',
    ready: svc.ready,
    port: svc.port,
    connections: svc.connections,
    close: svc.close,
    stats: () => ({ connections: svc.accepted(), bytes }),
  };
}
