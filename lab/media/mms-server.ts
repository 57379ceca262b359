/**
 * The lab's media server: MMS as stack/wire/mms.ts models it (a minimal model, not
 * Microsoft's protocol), with a server-side playlist. Control on TCP 1755; for MMSU each
 * item is streamed from a new UDP socket whose port the server takes in order from 1025
 * up to 5000, as Windows 2000 handed out its ephemeral ports (MaxUserPort 5000), to the
 * address and port the client named in TransportUdp; for MMST the datagrams go inline on
 * the control connection. The end of each item is announced on the control connection
 * with the count and the SHA-256 of what was sent.
 *
 * It runs on any NetApi: kernel sockets in the lab's external namespace
 * (`node dist/lab/media/mms-server.js --listen 198.19.0.2 --playlist FILE`), or a
 * faultstack stack's sockets in the unit tests (on the virtual clock, with its timers).
 *
 * Playlist file: one item per line, "NAME DATAGRAMS SIZE" (# comments), e.g.
 *   intro.wmv 40 1000
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { NetApi, TcpServerLike, TcpSocketLike, UdpSocketLike } from '../../stack/api/net-api';
import { formatIpv4 } from '../../stack/wire/addr';
import { AF_LAST, MMS_PORT, MmsCommand, MmsStream, emitMedia, emitMms, mediaPayload, type MmsMessage } from '../../stack/wire/mms';

export interface PlaylistItem {
  name: string;
  datagrams: number;
  size: number;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(h: unknown): void;
}
export const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export const DEFAULT_PLAYLIST: PlaylistItem[] = [1, 2, 3, 4, 5, 6].map((i) => ({ name: `item${i}.wmv`, datagrams: 40, size: 1000 }));

export function parsePlaylist(text: string): PlaylistItem[] {
  const items: PlaylistItem[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const w = line.split(/\s+/);
    const n = Number(w[1]),
      size = Number(w[2]);
    if (w.length !== 3 || !Number.isInteger(n) || n < 1 || n > 100_000 || !Number.isInteger(size) || size < 1 || size > 1400) {
      throw new Error(`playlist line ${i + 1}: want "NAME DATAGRAMS SIZE" (DATAGRAMS 1..100000, SIZE 1..1400), got ${JSON.stringify(raw)}`);
    }
    items.push({ name: w[0]!, datagrams: n, size });
  });
  if (items.length === 0) throw new Error('the playlist has no items');
  return items;
}

export interface MediaServerOptions {
  net: NetApi;
  /** Listening address ('0.0.0.0' by default). */
  host?: string;
  port?: number;
  playlist?: PlaylistItem[];
  /** Source ports for MMSU streams, taken in turn (default 1025..5000). */
  udpPorts?: readonly [number, number];
  /** Datagrams sent per tick, and the tick (default 8 every 2 ms: about 4 MB/s). */
  burst?: number;
  tickMs?: number;
  timers?: Timers;
  log?: (line: string) => void;
}

export interface MediaServerStats {
  sessions: number;
  itemsStarted: number;
  datagramsSent: number;
  /** Source ports used for MMSU streams, in order. */
  sourcePorts: number[];
}

export class MediaServer {
  readonly playlist: PlaylistItem[];
  readonly stats: MediaServerStats = { sessions: 0, itemsStarted: 0, datagramsSent: 0, sourcePorts: [] };
  private server: TcpServerLike | null = null;
  private nextPort: number;
  private readonly ports: readonly [number, number];
  private readonly timers: Timers;
  private readonly conns = new Set<TcpSocketLike>();
  private readonly sockets = new Set<UdpSocketLike>();

  constructor(readonly opts: MediaServerOptions) {
    this.playlist = opts.playlist ?? DEFAULT_PLAYLIST;
    this.ports = opts.udpPorts ?? [1025, 5000];
    this.nextPort = this.ports[0];
    this.timers = opts.timers ?? realTimers;
  }

  start(): Promise<void> {
    const server = this.opts.net.createServer((s) => this.session(s), { noDelay: true });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: this.opts.port ?? MMS_PORT, host: this.opts.host ?? '0.0.0.0' }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  close(): void {
    this.server?.close();
    for (const c of this.conns) c.destroy();
    for (const s of this.sockets) {
      try {
        s.close();
      } catch {
        /* closed */
      }
    }
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  /** A UDP socket on the next source port (skipping ports in use), as Windows hands out ephemeral ports. */
  private async udpSocket(): Promise<{ sock: UdpSocketLike; port: number }> {
    const [lo, hi] = this.ports;
    for (let i = 0; i <= hi - lo; i++) {
      const port = this.nextPort;
      this.nextPort = port >= hi ? lo : port + 1;
      const sock = this.opts.net.createUdpSocket();
      const ok = await new Promise<boolean>((resolve) => {
        const onErr = () => resolve(false);
        sock.once('error', onErr);
        sock.bind(port, undefined, () => {
          sock.off('error', onErr);
          resolve(true);
        });
      });
      if (ok) {
        sock.on('error', () => {
          /* ICMP errors: the client is gone or filtered */
        });
        return { sock, port };
      }
      try {
        sock.close();
      } catch {
        /* never bound */
      }
    }
    throw new Error(`no free UDP port in ${lo}-${hi}`);
  }

  private session(c: TcpSocketLike): void {
    this.stats.sessions++;
    this.conns.add(c);
    const stream = new MmsStream();
    const peer = `${c.remoteAddress}:${c.remotePort}`;
    let target: { addr: string; port: number } | null = null;
    let tcpMedia = false;
    let queue = Promise.resolve();
    let closed = false;
    const send = (m: MmsMessage) => {
      if (!closed) c.write(emitMms(m));
    };
    c.on('data', (d: Buffer) => {
      for (const { message, error } of stream.push(d)) {
        if (message === null) {
          send({ command: MmsCommand.Error, reason: `malformed message (error ${error})` });
          continue;
        }
        switch (message.command) {
          case MmsCommand.Connect:
            this.log(`session from ${peer}: player ${message.player}`);
            send({ command: MmsCommand.ConnectReply, items: this.playlist.length });
            break;
          case MmsCommand.TransportUdp:
            target = { addr: formatIpv4(message.addr), port: message.port };
            tcpMedia = false;
            this.log(`${peer}: MMSU to ${target.addr}:${target.port}`);
            break;
          case MmsCommand.TransportTcp:
            tcpMedia = true;
            this.log(`${peer}: MMST`);
            break;
          case MmsCommand.StartPlaying: {
            const { item, incarnation } = message;
            // Items play one after another on a session, in the order asked for.
            queue = queue
              .then(() => this.play(item, incarnation, tcpMedia ? null : target, send, () => closed))
              .catch((e: Error) => {
                send({ command: MmsCommand.Error, reason: e.message });
              });
            break;
          }
          case MmsCommand.Close:
            c.end();
            break;
          default:
            send({ command: MmsCommand.Error, reason: `command 0x${message.command.toString(16)} is not a request` });
        }
      }
      if (stream.error) {
        send({ command: MmsCommand.Error, reason: 'the control stream cannot be parsed any more' });
        c.end();
      }
    });
    c.on('error', () => {
      /* close follows */
    });
    c.on('close', () => {
      closed = true;
      this.conns.delete(c);
    });
    c.on('end', () => c.end());
  }

  private async play(
    item: number,
    incarnation: number,
    target: { addr: string; port: number } | null,
    send: (m: MmsMessage) => void,
    isClosed: () => boolean,
  ): Promise<void> {
    const it = this.playlist[item - 1];
    if (!it) {
      send({ command: MmsCommand.Error, reason: `no item ${item} (the playlist has ${this.playlist.length})` });
      return;
    }
    this.stats.itemsStarted++;
    const udp = target ? await this.udpSocket() : null;
    if (udp) {
      this.sockets.add(udp.sock);
      this.stats.sourcePorts.push(udp.port);
    }
    send({ command: MmsCommand.StartedPlaying, item, incarnation, datagrams: it.datagrams, sourcePort: udp?.port ?? 0 });
    this.log(
      `item ${item} (${it.name}) incarnation ${incarnation}: ${it.datagrams} datagrams ${udp ? `from UDP ${udp.port} to ${target!.addr}:${target!.port}` : 'inline (MMST)'}`,
    );
    const h = createHash('sha256');
    const burst = this.opts.burst ?? 8,
      tick = this.opts.tickMs ?? 2;
    for (let seq = 0; seq < it.datagrams && !isClosed(); seq += burst) {
      for (let k = seq; k < Math.min(it.datagrams, seq + burst); k++) {
        const payload = mediaPayload(item, k, it.size);
        h.update(payload);
        const dg = emitMedia({ seq: k, incarnation, flags: k === it.datagrams - 1 ? AF_LAST : 0, item }, payload);
        if (udp) udp.sock.send(dg, target!.port, target!.addr);
        else send({ command: MmsCommand.MediaData, media: dg });
        this.stats.datagramsSent++;
      }
      await new Promise<void>((r) => this.timers.setTimeout(r, tick));
    }
    send({ command: MmsCommand.EndOfItem, item, incarnation, datagrams: it.datagrams, sha256: h.digest() });
    if (udp) {
      this.sockets.delete(udp.sock);
      udp.sock.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// node dist/lab/media/mms-server.js [--listen ADDR] [--port N] [--playlist FILE] [--udp-ports LO-HI]

async function main(argv: string[]): Promise<void> {
  const { kernelNet } = await import('../../stack/api/kernel-net');
  const opts: MediaServerOptions = { net: kernelNet, log: (l) => process.stdout.write(`${l}\n`) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i],
      v = argv[i + 1];
    const need = () => {
      if (v === undefined) throw new Error(`${a} needs a value`);
      i++;
      return v;
    };
    if (a === '--listen') opts.host = need();
    else if (a === '--port') opts.port = Number(need());
    else if (a === '--playlist') opts.playlist = parsePlaylist(fs.readFileSync(need(), 'utf8'));
    else if (a === '--udp-ports') {
      const m = /^(\d+)-(\d+)$/.exec(need());
      if (!m || Number(m[1]) < 1 || Number(m[2]) > 65535 || Number(m[1]) > Number(m[2])) throw new Error('--udp-ports wants LO-HI, e.g. 1025-5000');
      opts.udpPorts = [Number(m[1]), Number(m[2])];
    } else throw new Error(`unknown argument ${a}; usage: mms-server [--listen ADDR] [--port N] [--playlist FILE] [--udp-ports LO-HI]`);
  }
  const srv = new MediaServer(opts);
  await srv.start();
  process.stdout.write(`mms-server ready on ${opts.host ?? '0.0.0.0'}:${opts.port ?? MMS_PORT}, ${srv.playlist.length} items\n`);
  const stop = () => {
    srv.close();
    process.stdout.write(`${JSON.stringify({ stats: srv.stats })}\n`);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) {
  // `... | head` must end quietly, not with an EPIPE trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  main(process.argv.slice(2)).catch((e: Error) => {
    process.stderr.write(`mms-server: ${e.message}\n`);
    process.exit(2);
  });
}
