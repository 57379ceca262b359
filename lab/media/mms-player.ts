/**
 * The lab's media player: plays a server-side playlist item by item (the MMS model of
 * stack/wire/mms.ts), as Windows Media Player does in KB 319381:
 *
 * - `--via fwc`: through the Firewall Client (stack/firewall/client.ts): the control
 *   connection is a Connect made by the firewall, the UDP port a binding on the
 *   firewall's external address. Between two items it closes that port and binds the
 *   same port again (what the article says the player does), at once or after
 *   `--rebind-gap-ms`; a bind refused with WSAEADDRINUSE is tried again after
 *   `--bind-retry-ms`, up to `--bind-retries` times.
 * - `--via securenat`: plain kernel sockets, routed and translated by the firewall; it
 *   closes and re-binds its local port between items the same way.
 * - `--transport tcp` (MMST): the media comes inline on the control connection; no UDP.
 *
 * An item whose datagrams did not all arrive by the end of the item (count and SHA-256
 * from the server's EndOfItem, after a short grace for datagrams still in flight) is
 * asked for again (a new play incarnation) up to `--retries` times, then counted as
 * stalled and the player moves on. Output: one JSON line per item, then a summary line.
 */
import { createHash } from 'node:crypto';
import type { NetApi, TcpSocketLike, UdpSocketLike } from '../../stack/api/net-api';
import { kernelNet } from '../../stack/api/kernel-net';
import { parseIpv4 } from '../../stack/wire/addr';
import { MMS_PORT, MmsCommand, MmsStream, emitMms, parseMedia, type MmsMessage } from '../../stack/wire/mms';
import { FirewallClient, FwcRefusedError, type FwcUdpSocket } from '../../stack/firewall/client';
import { realTimers, type Timers } from './mms-server';

export interface PlayerOptions {
  server: string;
  port?: number;
  via: 'fwc' | 'securenat';
  transport: 'udp' | 'tcp';
  /** The firewall's internal address (--via fwc). */
  firewall?: string;
  /** The UDP port the player binds, and binds again between items (default 7000). */
  udpPort?: number;
  retries?: number;
  rebindGapMs?: number;
  bindRetries?: number;
  bindRetryMs?: number;
  /** Wait after EndOfItem for datagrams still on the way (default 150 ms). */
  graceMs?: number;
  /** Give up an item whose EndOfItem does not come (default 10 s). */
  itemTimeoutMs?: number;
  /** Play only the first N items of the playlist (default all). */
  maxItems?: number;
  net?: NetApi;
  timers?: Timers;
  log?: (line: string) => void;
}

export interface ItemResult {
  item: number;
  ok: boolean;
  /** Play requests sent for it (1 when it played the first time). */
  attempts: number;
  expected: number;
  /** Datagrams of the last attempt that arrived. */
  received: number;
  /** Datagrams received over all attempts. */
  receivedTotal: number;
  sourcePorts: number[];
}

export interface PlayResult {
  via: string;
  transport: string;
  items: ItemResult[];
  played: number;
  stalled: number;
  /** UDP Bind refusals with WSAEADDRINUSE (Firewall Client). */
  addrInUse: number;
  bindErrors: string[];
  error?: string;
}

interface UdpLike {
  on(ev: 'message', fn: (d: Buffer, r: { address: string; port: number }) => void): void;
  close(cb?: () => void): void;
}

export class MmsPlayer {
  private readonly timers: Timers;
  private readonly net: NetApi;
  private fwc: FirewallClient | null = null;
  private ctl: TcpSocketLike | null = null;
  private readonly stream = new MmsStream();
  private waiting: ((m: MmsMessage) => boolean)[] = [];
  private inbox: MmsMessage[] = [];
  private udp: UdpLike | null = null;
  private current: { item: number; incarnation: number; got: Map<number, Buffer> } | null = null;
  private ended = false;

  constructor(readonly opts: PlayerOptions) {
    this.timers = opts.timers ?? realTimers;
    this.net = opts.net ?? kernelNet;
  }

  private log(l: string): void {
    this.opts.log?.(l);
  }
  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.timers.setTimeout(r, ms));
  }

  private send(m: MmsMessage): void {
    this.ctl?.write(emitMms(m));
  }

  /** The next control message matching `pred`, or null after `ms`. */
  private next(pred: (m: MmsMessage) => boolean, ms: number): Promise<MmsMessage | null> {
    const i = this.inbox.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]!);
    return new Promise((resolve) => {
      let done = false;
      const h = this.timers.setTimeout(() => {
        if (done) return;
        done = true;
        this.waiting = this.waiting.filter((w) => w !== check);
        resolve(null);
      }, ms);
      const check = (m: MmsMessage) => {
        if (done || !pred(m)) return false;
        done = true;
        this.timers.clearTimeout(h);
        resolve(m);
        return true;
      };
      this.waiting.push(check);
    });
  }

  private onControl(d: Buffer): void {
    for (const { message } of this.stream.push(d)) {
      if (message === null) continue;
      if (message.command === MmsCommand.MediaData) {
        this.onMedia(message.media);
        continue;
      }
      const w = this.waiting.find((f) => f(message));
      if (w) this.waiting = this.waiting.filter((f) => f !== w);
      else this.inbox.push(message);
    }
  }

  private onMedia(dg: Buffer): void {
    const m = parseMedia(dg, 0, dg.length);
    const c = this.current;
    if (!m || !c || m.item !== c.item || m.incarnation !== c.incarnation) return;
    c.got.set(m.seq, Buffer.from(dg.subarray(m.payloadOffset)));
  }

  private async openControl(): Promise<void> {
    const port = this.opts.port ?? MMS_PORT;
    if (this.opts.via === 'fwc') {
      if (!this.opts.firewall) throw new Error('--via fwc needs --firewall ADDR');
      this.fwc = await FirewallClient.open({ firewall: this.opts.firewall, application: 'mms-player', net: this.net });
      this.ctl = await this.fwc.connect(this.opts.server, port);
    } else {
      this.ctl = await new Promise<TcpSocketLike>((resolve, reject) => {
        const s = this.net.connect({ host: this.opts.server, port, noDelay: true });
        s.once('error', reject);
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
      });
    }
    this.ctl.on('data', (d: Buffer) => this.onControl(d));
    this.ctl.on('error', () => {
      /* the close follows */
    });
    this.ctl.on('close', () => {
      this.ended = true;
    });
  }

  /** Binds the UDP port (through the Firewall Client or locally); returns the address to name in TransportUdp. */
  private async bind(result: PlayResult): Promise<{ addr: string; port: number } | null> {
    const want = this.opts.udpPort ?? 7000;
    const tries = (this.opts.bindRetries ?? 10) + 1;
    for (let t = 0; t < tries; t++) {
      try {
        if (this.fwc) {
          const s: FwcUdpSocket = await this.fwc.bindUdp(want);
          s.on('message', (d: Buffer) => this.onMedia(d));
          this.udp = s;
          const a = s.address();
          return { addr: a.address, port: a.port };
        }
        const s: UdpSocketLike = this.net.createUdpSocket();
        await new Promise<void>((resolve, reject) => {
          s.once('error', reject);
          s.bind(want, undefined, () => {
            s.off('error', reject);
            resolve();
          });
        });
        s.on('message', (d: Buffer) => this.onMedia(d));
        this.udp = s;
        return { addr: this.ctl!.localAddress ?? '0.0.0.0', port: want };
      } catch (e) {
        const code = (e as { code?: string }).code ?? 'error';
        result.bindErrors.push(code);
        if (e instanceof FwcRefusedError && e.code === 'WSAEADDRINUSE') result.addrInUse++;
        this.log(`bind UDP ${want}: ${(e as Error).message}`);
        if (t + 1 < tries) await this.sleep(this.opts.bindRetryMs ?? 100);
      }
    }
    return null;
  }

  private closeUdp(): Promise<void> {
    const u = this.udp;
    this.udp = null;
    if (!u) return Promise.resolve();
    return new Promise((r) => u.close(() => r()));
  }

  async play(): Promise<PlayResult> {
    const result: PlayResult = { via: this.opts.via, transport: this.opts.transport, items: [], played: 0, stalled: 0, addrInUse: 0, bindErrors: [] };
    try {
      await this.openControl();
      this.send({ command: MmsCommand.Connect, player: `faultstack-mms-player/1.0 (${this.opts.via}, ${this.opts.transport})` });
      const reply = await this.next((m) => m.command === MmsCommand.ConnectReply, 10_000);
      if (!reply || reply.command !== MmsCommand.ConnectReply) throw new Error('no ConnectReply from the server');
      const n = Math.min(reply.items, this.opts.maxItems ?? reply.items);
      if (this.opts.transport === 'udp') {
        const where = await this.bind(result);
        if (!where) throw new Error(`cannot bind UDP port ${this.opts.udpPort ?? 7000}`);
        const addr = parseIpv4(where.addr);
        this.send({ command: MmsCommand.TransportUdp, port: where.port, addr: addr ?? 0 });
      } else {
        this.send({ command: MmsCommand.TransportTcp });
      }
      for (let item = 1; item <= n && !this.ended; item++) {
        const r = await this.playItem(item);
        result.items.push(r);
        if (r.ok) result.played++;
        else result.stalled++;
        this.log(JSON.stringify(r));
        if (item < n && this.opts.transport === 'udp') {
          // Next item of the server-side playlist: release the port and bind the same one again.
          await this.closeUdp();
          if (this.opts.rebindGapMs) await this.sleep(this.opts.rebindGapMs);
          const where = await this.bind(result);
          if (!where) {
            result.error = `cannot bind UDP port ${this.opts.udpPort ?? 7000} again`;
            break;
          }
        }
      }
      this.send({ command: MmsCommand.Close });
    } catch (e) {
      result.error = (e as Error).message;
    } finally {
      await this.closeUdp();
      this.ctl?.end();
      await this.fwc?.close();
    }
    return result;
  }

  private async playItem(item: number): Promise<ItemResult> {
    const r: ItemResult = { item, ok: false, attempts: 0, expected: 0, received: 0, receivedTotal: 0, sourcePorts: [] };
    const retries = this.opts.retries ?? 3;
    for (let incarnation = 0; incarnation <= retries && !this.ended; incarnation++) {
      r.attempts++;
      const cur = { item, incarnation, got: new Map<number, Buffer>() };
      this.current = cur;
      this.send({ command: MmsCommand.StartPlaying, item, incarnation });
      const started = await this.next(
        (m) => m.command === MmsCommand.StartedPlaying && m.item === item && m.incarnation === incarnation,
        this.opts.itemTimeoutMs ?? 10_000,
      );
      if (started?.command === MmsCommand.StartedPlaying && started.sourcePort) r.sourcePorts.push(started.sourcePort);
      const end = await this.next(
        (m) => m.command === MmsCommand.EndOfItem && m.item === item && m.incarnation === incarnation,
        this.opts.itemTimeoutMs ?? 10_000,
      );
      if (!end || end.command !== MmsCommand.EndOfItem) break;
      r.expected = end.datagrams;
      // Datagrams may still be on the way when the end comes over TCP.
      const grace = this.opts.graceMs ?? 150;
      for (let waited = 0; cur.got.size < end.datagrams && waited < grace; waited += 10) await this.sleep(10);
      r.received = cur.got.size;
      r.receivedTotal += cur.got.size;
      if (cur.got.size === end.datagrams) {
        const h = createHash('sha256');
        for (let k = 0; k < end.datagrams; k++) h.update(cur.got.get(k)!);
        if (h.digest().equals(end.sha256)) {
          r.ok = true;
          break;
        }
      }
    }
    this.current = null;
    return r;
  }
}

// ---------------------------------------------------------------------------------------------
// node dist/lab/media/mms-player.js --server ADDR --via fwc|securenat [--firewall ADDR] [--transport udp|tcp] ...

function parse(argv: string[]): PlayerOptions {
  const o: Partial<PlayerOptions> & { via?: 'fwc' | 'securenat'; transport?: 'udp' | 'tcp' } = {};
  const int = (a: string, v: string, lo: number, hi: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${a} wants an integer from ${lo} to ${hi}, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!,
      v = argv[i + 1];
    const need = () => {
      if (v === undefined) throw new Error(`${a} needs a value`);
      i++;
      return v;
    };
    switch (a) {
      case '--server':
        o.server = need();
        break;
      case '--port':
        o.port = int(a, need(), 1, 65535);
        break;
      case '--via': {
        const x = need();
        if (x !== 'fwc' && x !== 'securenat') throw new Error('--via is fwc or securenat');
        o.via = x;
        break;
      }
      case '--transport': {
        const x = need();
        if (x !== 'udp' && x !== 'tcp') throw new Error('--transport is udp (MMSU) or tcp (MMST)');
        o.transport = x;
        break;
      }
      case '--firewall':
        o.firewall = need();
        break;
      case '--udp-port':
        o.udpPort = int(a, need(), 1, 65535);
        break;
      case '--retries':
        o.retries = int(a, need(), 0, 20);
        break;
      case '--rebind-gap-ms':
        o.rebindGapMs = int(a, need(), 0, 60_000);
        break;
      case '--bind-retries':
        o.bindRetries = int(a, need(), 0, 100);
        break;
      case '--bind-retry-ms':
        o.bindRetryMs = int(a, need(), 0, 60_000);
        break;
      case '--grace-ms':
        o.graceMs = int(a, need(), 0, 60_000);
        break;
      case '--max-items':
        o.maxItems = int(a, need(), 1, 65535);
        break;
      default:
        throw new Error(`unknown argument ${a}`);
    }
  }
  if (!o.server || !o.via)
    throw new Error(
      'usage: mms-player --server ADDR --via fwc|securenat [--firewall ADDR] [--transport udp|tcp] [--udp-port N] [--retries N] [--rebind-gap-ms MS] [--bind-retries N] [--bind-retry-ms MS] [--grace-ms MS] [--max-items N]',
    );
  return { transport: 'udp', ...o } as PlayerOptions;
}

if (require.main === module) {
  // `... | head` must end quietly, not with an EPIPE trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  let opts: PlayerOptions;
  try {
    opts = parse(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`mms-player: ${(e as Error).message}\n`);
    process.exit(2);
  }
  new MmsPlayer({ ...opts, log: (l) => process.stdout.write(`${l}\n`) }).play().then((r) => {
    process.stdout.write(`${JSON.stringify({ summary: r })}\n`);
    process.exit(r.error ? 1 : 0);
  });
}
