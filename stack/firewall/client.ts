/**
 * A Firewall Client for programs on the internal network: what the Firewall Client's
 * Winsock layer does for a Windows program, as a small library on Node's own sockets
 * (kernel TCP and UDP of the internal host). The program asks it to connect or bind
 * instead of asking the kernel; the library asks the firewall over the control
 * channel (TCP 1745, stack/wire/fwc.ts) to do it on the external address, and hands
 * back a socket that behaves as the program expects:
 *
 *   const fwc = await FirewallClient.open({ firewall: '198.18.1.1', application: 'player' });
 *   const tcp = await fwc.connect('198.19.0.2', 1755);      // a net.Socket, spliced by the firewall
 *   const udp = await fwc.bindUdp(7000);                    // datagrams for 198.19.0.1:7000 arrive here
 *   udp.address()                                           // { address: '198.19.0.1', port: 7000 }: as
 *                                                           //   getsockname() answers under the Firewall Client
 *   udp.send(buf, 1755, '198.19.0.2');                      // sent from 198.19.0.1:7000
 *   udp.close();                                            // Session End for the binding, at once
 *
 * A refusal rejects with a FwcRefusedError carrying the Windows Sockets error
 * (code 'WSAEADDRINUSE', wsa 10048, ...). It runs on any NetApi: the kernel's by default,
 * a faultstack stack's in the unit tests (the same code on the virtual clock).
 */
import { EventEmitter } from 'node:events';
import * as os from 'node:os';
import { kernelNet } from '../api/kernel-net';
import type { NetApi, TcpSocketLike, UdpSocketLike } from '../api/net-api';
import { formatIpv4, parseIpv4 } from '../wire/addr';
import {
  FWC_ERROR_TEXT,
  FWC_PORT,
  FWC_VERSION,
  FwcCommand,
  RELAY_HEADER,
  RelayError,
  emitFwc,
  emitRelay,
  newRelayRepr,
  nextFwc,
  parseRelay,
  wsaName,
  type FwcMessage,
} from '../wire/fwc';

export class FwcRefusedError extends Error {
  readonly code: string;
  constructor(
    readonly wsa: number,
    message: string,
    readonly refused: number,
  ) {
    super(message);
    this.name = 'FwcRefusedError';
    this.code = wsaName(wsa);
  }
}

export interface FirewallClientOptions {
  /** The firewall's internal address. */
  firewall: string;
  port?: number;
  user?: string;
  application?: string;
  computer?: string;
  /** How long a request waits for its answer (default 10 s). */
  timeoutMs?: number;
  /** The sockets to use (default: the kernel's, node:net and node:dgram). */
  net?: NetApi;
}

interface Pending {
  resolve: (m: FwcMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class FirewallClient extends EventEmitter {
  serverId = 0;
  externalAddress = '';
  private seq = 0;
  private lastServerSeq = 0;
  private rx: Buffer = Buffer.alloc(0);
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private readonly timeoutMs: number;

  private readonly net: NetApi;

  private constructor(
    private readonly sock: TcpSocketLike,
    readonly opts: FirewallClientOptions,
  ) {
    super();
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.net = opts.net ?? kernelNet;
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (e: Error) => this.fail(e));
    sock.on('close', () => this.fail(new Error('the Firewall Client control channel closed')));
  }

  /** Opens the control channel and says Hello. */
  static open(opts: FirewallClientOptions): Promise<FirewallClient> {
    return new Promise((resolve, reject) => {
      const sock = (opts.net ?? kernelNet).connect({ host: opts.firewall, port: opts.port ?? FWC_PORT, noDelay: true });
      const onErr = (e: Error) => reject(e);
      sock.once('error', onErr);
      sock.once('connect', () => {
        sock.off('error', onErr);
        const c = new FirewallClient(sock, opts);
        c.request({
          command: FwcCommand.Hello,
          user: opts.user ?? os.userInfo().username,
          application: opts.application ?? 'faultstack-fwc',
          computer: opts.computer ?? os.hostname().slice(0, 200),
        })
          .then((m) => {
            if (m.command !== FwcCommand.HelloAck) throw new Error(`Hello answered with 0x${String(m.command)}`);
            c.externalAddress = formatIpv4(m.externalAddr);
            resolve(c);
          })
          .catch((e) => {
            sock.destroy();
            reject(e);
          });
      });
    });
  }

  /** Sends a request and resolves with its answer (a refusal rejects). */
  request(message: FwcMessage): Promise<FwcMessage> {
    if (this.closed) return Promise.reject(new Error('the Firewall Client control channel is closed'));
    const seq = (this.seq = (this.seq + 1) & 255 || 1);
    const buf = emitFwc({ header: { clientId: this.serverId, version: FWC_VERSION, serverId: this.serverId, ack: this.lastServerSeq, seq }, message });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`no answer from the firewall within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(seq, { resolve, reject, timer });
      this.sock.write(buf);
    });
  }

  /** Sends a message that gets no answer (Session End). */
  tell(message: FwcMessage): void {
    if (this.closed) return;
    const seq = (this.seq = (this.seq + 1) & 255 || 1);
    this.sock.write(emitFwc({ header: { clientId: this.serverId, version: FWC_VERSION, serverId: this.serverId, ack: this.lastServerSeq, seq }, message }));
  }

  private onData(d: Buffer): void {
    this.rx = this.rx.length === 0 ? d : Buffer.concat([this.rx, d]);
    let off = 0;
    while (true) {
      const r = nextFwc(this.rx, off, this.rx.length - off);
      if (r === null) break;
      if (r.length === 0 || r.repr === null) {
        this.fail(new Error(`the firewall sent a malformed message: ${FWC_ERROR_TEXT[r.error]}`));
        this.sock.destroy();
        return;
      }
      off += r.length;
      const { header, message } = r.repr;
      this.lastServerSeq = header.seq;
      if (header.serverId !== 0) this.serverId = header.serverId;
      const p = this.pending.get(header.ack);
      if (p === undefined) {
        this.emit('unsolicited', message);
        continue;
      }
      this.pending.delete(header.ack);
      clearTimeout(p.timer);
      if (message.command === 'refused') p.reject(new FwcRefusedError(message.wsaError, message.reason, message.refused));
      else p.resolve(message);
    }
    this.rx = off >= this.rx.length ? Buffer.alloc(0) : Buffer.from(this.rx.subarray(off));
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.pending.clear();
    this.emit('close', e);
  }

  /** A TCP connection to host:port made by the firewall; resolves with the spliced socket. */
  async connect(host: string, port: number): Promise<TcpSocketLike> {
    const dst = parseIpv4(host);
    if (dst === null) throw new Error(`${host} is not an IPv4 address`);
    const m = await this.request({
      command: FwcCommand.Connect,
      dstAddr: dst,
      dstPort: port,
      clientPort: 0,
      application: this.opts.application ?? 'faultstack-fwc',
    });
    if (m.command !== FwcCommand.ConnectAck) throw new Error('Connect answered with something else than Connect Ack');
    return new Promise((resolve, reject) => {
      const s = this.net.connect({ host: formatIpv4(m.relayAddr), port: m.relayPort, noDelay: true });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        s.setNoDelay(true);
        resolve(s);
      });
    });
  }

  /** Binds `port` (0: any) on the firewall's external address; datagrams for it arrive on the returned socket. */
  async bindUdp(port: number): Promise<FwcUdpSocket> {
    const local = this.net.createUdpSocket();
    await new Promise<void>((resolve, reject) => {
      local.once('error', reject);
      local.bind(port, undefined, () => {
        local.off('error', reject);
        resolve();
      });
    });
    const clientPort = local.address().port;
    try {
      const m = await this.request({ command: FwcCommand.UdpBind, requestedPort: port, clientPort, application: this.opts.application ?? 'faultstack-fwc' });
      if (m.command !== FwcCommand.BindAck) throw new Error('UDP Bind answered with something else than Bind Ack');
      return new FwcUdpSocket(this, local, m.bindId, formatIpv4(m.externalAddr), m.externalPort, formatIpv4(m.relayAddr), m.relayPort);
    } catch (e) {
      local.close();
      throw e;
    }
  }

  /** Ends the session: the firewall releases everything it holds for us. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.tell({ command: FwcCommand.SessionEnd, bindId: 0 });
    return new Promise((resolve) => {
      this.sock.once('close', () => resolve());
      this.sock.end();
      setTimeout(() => {
        this.sock.destroy();
        resolve();
      }, 2000).unref();
    });
  }
}

/** A UDP socket whose port is on the firewall's external address. Events: 'message' (data, rinfo), 'close'. */
export class FwcUdpSocket extends EventEmitter {
  private closed = false;
  private readonly repr = newRelayRepr();
  received = 0;

  constructor(
    readonly client: FirewallClient,
    private readonly local: UdpSocketLike,
    readonly bindId: number,
    readonly externalAddress: string,
    readonly externalPort: number,
    private readonly relayAddress: string,
    private readonly relayPort: number,
  ) {
    super();
    local.on('message', (msg: Buffer, rinfo: { address: string; port: number }) => {
      // Only the firewall's relay speaks to this socket; anything else is not ours.
      if (rinfo.address !== relayAddress || rinfo.port !== relayPort) return;
      if (parseRelay(msg, 0, msg.length, this.repr) !== RelayError.None) return;
      this.received++;
      this.emit('message', msg.subarray(RELAY_HEADER), {
        address: formatIpv4(this.repr.addr),
        port: this.repr.port,
        family: 'IPv4',
        size: msg.length - RELAY_HEADER,
      });
    });
    local.on('error', (e: Error) => this.emit('error', e));
  }

  /** What getsockname() says under the Firewall Client: the firewall's external address and the bound port. */
  address(): { address: string; port: number; family: string } {
    return { address: this.externalAddress, port: this.externalPort, family: 'IPv4' };
  }

  /** The local (kernel) port the relayed datagrams arrive on. */
  get localPort(): number {
    return this.local.address().port;
  }

  send(data: Buffer, port: number, host: string, cb?: (e: Error | null) => void): void {
    const dst = parseIpv4(host);
    if (dst === null) {
      const e = new Error(`${host} is not an IPv4 address`);
      if (cb) cb(e);
      else this.emit('error', e);
      return;
    }
    const out = Buffer.allocUnsafe(RELAY_HEADER + data.length);
    emitRelay(out, 0, { addr: dst, port });
    data.copy(out, RELAY_HEADER);
    this.local.send(out, this.relayPort, this.relayAddress, (e) => cb?.(e ?? null));
  }

  /**
   * closesocket(): the binding's Session End goes to the firewall at once (it does not
   * wait for the firewall to free the port), then the local socket closes.
   */
  close(cb?: () => void): void {
    if (this.closed) {
      cb?.();
      return;
    }
    this.closed = true;
    this.client.tell({ command: FwcCommand.SessionEnd, bindId: this.bindId });
    this.local.close(() => {
      this.emit('close');
      cb?.();
    });
  }
}
