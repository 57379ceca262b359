/**
 * The Firewall service's side of the Firewall Client protocol (stack/wire/fwc.ts,
 * docs/fwc.md): a control channel on TCP 1745 of the internal address, on which a
 * client asks the firewall to connect, bind and send on its behalf, on the external
 * address.
 *
 * - Connect: the firewall opens the connection from its external address, then listens
 *   on a relay port of its internal address for the client's data connection (one, from
 *   the client's address) and splices the two. The streaming-media filter reads the
 *   client's bytes of connections to MMS (TCP 1755).
 * - UDP Bind: the firewall binds the port on its external address (the one asked for, or
 *   any) and a relay port on its internal address; datagrams for the external port that
 *   the packet filter admits go to the client's port with the relay header (the source
 *   in front); datagrams from the client to the relay port go out from the external
 *   port to the destination in their header. The packet filter admits what comes from
 *   an endpoint the binding has sent to, and what the streaming-media filter opened.
 * - Session End with a bind id releases that binding: the media filter closes its
 *   opening, and the port stays bound for the release delay (a hook; KB 319381's race).
 *   A UDP Bind of a port whose release is under way asks the hooks what to do.
 *
 * Malformed input gets a refusal with WSAEINVAL and the reason; a stream that can no
 * longer be framed (no signature, impossible length) is refused and closed. Nothing a
 * client sends reaches beyond its own session.
 */
import type { Stack } from '../stack';
import { Timer } from '../timers';
import { FsServer, createNetApi, type FsSocket } from '../api/net';
import type { UdpEndpoint } from '../udp/udp';
import { formatIpv4, parseIpv4 } from '../wire/addr';
import { PROTO_TCP, PROTO_UDP } from '../wire/ipv4';
import {
  FWC_ERROR_TEXT,
  FWC_MAX_MESSAGE,
  FWC_PORT,
  FWC_VERSION,
  FwcCommand,
  FwcError,
  Wsa,
  emitFwc,
  emitRelay,
  newRelayRepr,
  nextFwc,
  parseRelay,
  refusalOf,
  RelayError,
  RELAY_HEADER,
  wsaName,
  type FwcMessage,
  type FwcRepr,
} from '../wire/fwc';
import type { BindingInfo, Firewall } from './firewall';
import type { StreamingMediaFilter } from './media';
import type { DropReason, LocalOpening } from './sessions';

export function newFwcCounters() {
  return {
    FwcSessions: 0,
    FwcSessionsActive: 0,
    FwcMessages: 0,
    FwcBadMessages: 0,
    FwcRefused: 0,
    FwcConnects: 0,
    FwcConnectFailures: 0,
    FwcUdpBinds: 0,
    FwcReleases: 0,
    FwcAddrInUse: 0,
    FwcRelayedIn: 0,
    FwcRelayedOut: 0,
    FwcRelayedBytesIn: 0,
    FwcRelayedBytesOut: 0,
    FwcRelayUnknown: 0,
  };
}

export interface FwcServiceOptions {
  firewall: Firewall;
  media: StreamingMediaFilter;
  port?: number;
  /** Most control sessions at once (ours: 256). */
  maxSessions?: number;
  /** Most bindings and connections per session (ours: 64 each). */
  maxPerSession?: number;
  /** How long a relay port waits for the client's data connection (ms). */
  relayAcceptTimeoutMs?: number;
}

const WSA_OF_ERRNO: Record<string, number> = {
  ECONNREFUSED: Wsa.WSAECONNREFUSED,
  ETIMEDOUT: Wsa.WSAETIMEDOUT,
  EHOSTUNREACH: Wsa.WSAEHOSTUNREACH,
  ENETUNREACH: Wsa.WSAENETUNREACH,
  ECONNRESET: Wsa.WSAECONNRESET,
  EADDRINUSE: Wsa.WSAEADDRINUSE,
};

class FwcRefusal extends Error {
  constructor(
    readonly wsa: number,
    message: string,
  ) {
    super(message);
  }
}

export class UdpBinding implements LocalOpening {
  readonly kind = 'local' as const;
  readonly proto = PROTO_UDP;
  state: 'bound' | 'releasing' | 'released' = 'bound';
  /** Remote endpoints (addr * 65536 + port) the client has sent to: their replies are admitted. */
  readonly sentTo = new Set<number>();
  relayedIn = 0;
  relayedOut = 0;
  dropped = 0;
  releaseTimer: Timer | null = null;
  readonly boundAt: number;
  releasedAt = 0;

  constructor(
    readonly service: FwcService,
    readonly session: FwcSession,
    readonly id: number,
    readonly extPort: number,
    readonly clientPort: number,
    readonly relayPort: number,
    readonly extEndpoint: UdpEndpoint,
    readonly relayEndpoint: UdpEndpoint,
    now: number,
  ) {
    this.boundAt = now;
  }

  info(): BindingInfo {
    return this.service.media.info({ session: this.session.id, client: this.session.client, bindId: this.id, externalPort: this.extPort, media: null });
  }

  admit(src: number, srcPort: number): DropReason | null {
    const mp = this.service.media.portFor(this.session.id, this.extPort);
    if (this.state === 'bound' && this.sentTo.has(src * 65536 + srcPort)) return null;
    if (mp !== undefined) {
      if (this.state === 'bound' && this.service.media.admit(mp, src, srcPort)) return null;
      if (mp.state === 'closed' || this.state !== 'bound') {
        this.dropped++;
        return 'media-port-closed';
      }
    }
    this.dropped++;
    return 'binding-not-open';
  }

  describe(): Record<string, unknown> {
    const mp = this.service.media.portFor(this.session.id, this.extPort);
    const fw = this.service.fw;
    return {
      kind: 'fwc-udp',
      client: this.session.client,
      session: this.session.id,
      bindId: this.id,
      state: this.state,
      external: `${formatIpv4(fw.external.address)}:${this.extPort}`,
      relay: `${formatIpv4(fw.internal.address)}:${this.relayPort}`,
      clientPort: this.clientPort,
      sentTo: this.sentTo.size,
      relayedIn: this.relayedIn,
      relayedOut: this.relayedOut,
      dropped: this.dropped,
      media: mp ? { server: formatIpv4(mp.server), state: mp.state, admitted: mp.admitted, refused: mp.refused } : null,
    };
  }
}

interface RelayedConnection {
  readonly id: number;
  readonly session: FwcSession;
  readonly dstAddr: number;
  readonly dstPort: number;
  readonly ext: FsSocket;
  opening: LocalOpening | null;
  listener: FsServer | null;
  int: FsSocket | null;
  acceptTimer: Timer | null;
  media: { tap: (d: Buffer) => void; end: () => void } | null;
  bytesOut: number;
  bytesIn: number;
  readonly started: number;
  closed: boolean;
}

export class FwcSession {
  readonly bindings = new Map<number, UdpBinding>();
  readonly connections = new Set<RelayedConnection>();
  hello: { user: string; application: string; computer: string } | null = null;
  private rx: Buffer = Buffer.alloc(0);
  private seq = 0;
  nextBindId = 1;
  closed = false;
  readonly client: string;

  constructor(
    readonly service: FwcService,
    readonly id: number,
    readonly sock: FsSocket,
    readonly clientAddr: number,
    readonly started: number,
  ) {
    this.client = formatIpv4(clientAddr);
  }

  onData(d: Buffer): void {
    if (this.closed) return;
    this.rx = this.rx.length === 0 ? d : Buffer.concat([this.rx, d]);
    let off = 0;
    while (!this.closed) {
      const r = nextFwc(this.rx, off, this.rx.length - off);
      if (r === null) break;
      if (r.length === 0) {
        // Not a message at all: no way to find the next one in this stream.
        this.service.counters.FwcBadMessages++;
        this.refuse(0x4000, 0, Wsa.WSAEINVAL, `malformed Firewall Client message: ${FWC_ERROR_TEXT[r.error]}; closing the control channel`);
        this.service.fwcEvent('bad-message', `malformed message from ${this.client}: ${FWC_ERROR_TEXT[r.error]} (control channel closed)`, {
          client: this.client,
          error: FWC_ERROR_TEXT[r.error],
        });
        this.sock.end();
        this.service.endSession(this);
        return;
      }
      const raw = this.rx.subarray(off, off + r.length);
      off += r.length;
      this.service.counters.FwcMessages++;
      const ack = raw[16];
      if (r.error !== FwcError.None || r.repr === null) {
        this.service.counters.FwcBadMessages++;
        const what = r.command >= 0 ? `command 0x${r.command.toString(16).padStart(4, '0')}` : 'message';
        this.refuse(r.command >= 0 ? r.command : 0, ack, Wsa.WSAEINVAL, `malformed Firewall Client ${what}: ${FWC_ERROR_TEXT[r.error]}`);
        this.service.fwcEvent('bad-message', `malformed ${what} from ${this.client}: ${FWC_ERROR_TEXT[r.error]}`, {
          client: this.client,
          command: r.command,
          error: FWC_ERROR_TEXT[r.error],
        });
        continue;
      }
      this.handle(r.repr, ack);
    }
    this.rx = off >= this.rx.length ? Buffer.alloc(0) : Buffer.from(this.rx.subarray(off));
    if (this.rx.length > FWC_MAX_MESSAGE) {
      this.sock.destroy();
      this.service.endSession(this);
    }
  }

  send(message: FwcMessage, ack: number): void {
    if (this.closed) return;
    const r: FwcRepr = { header: { clientId: 0, version: FWC_VERSION, serverId: this.id, ack, seq: (this.seq = (this.seq + 1) & 255) }, message };
    this.sock.write(emitFwc(r));
  }

  refuse(request: number, ack: number, wsaError: number, reason: string): void {
    this.service.counters.FwcRefused++;
    this.send({ command: 'refused', refused: refusalOf(request), wsaError, reason: `${wsaName(wsaError)}: ${reason}` }, ack);
  }

  private handle(r: FwcRepr, ack: number): void {
    const m = r.message;
    const svc = this.service;
    const cmd = m.command === 'refused' ? m.refused : m.command;
    try {
      if (m.command === FwcCommand.Hello) {
        this.hello = { user: m.user, application: m.application, computer: m.computer };
        this.send({ command: FwcCommand.HelloAck, externalAddr: svc.fw.external.address, externalPort: 0 }, ack);
        svc.fwcEvent(
          'hello',
          `Firewall Client session ${this.id} from ${this.client} (user ${m.user || '-'}, application ${m.application || '-'}, computer ${m.computer || '-'})`,
          { client: this.client, session: this.id, user: m.user, application: m.application, computer: m.computer },
        );
        return;
      }
      if (m.command === 'refused' || m.command === FwcCommand.HelloAck || m.command === FwcCommand.ConnectAck || m.command === FwcCommand.BindAck) {
        throw new FwcRefusal(Wsa.WSAEINVAL, `0x${(cmd as number).toString(16).padStart(4, '0')} is a reply, not a request`);
      }
      if (this.hello === null) throw new FwcRefusal(Wsa.WSAEINVAL, 'send Hello (0x0500) first');
      switch (m.command) {
        case FwcCommand.Connect:
          svc.connect(this, m.dstAddr, m.dstPort, ack);
          return;
        case FwcCommand.UdpBind:
          svc.udpBind(this, m.requestedPort, m.clientPort, ack);
          return;
        case FwcCommand.SessionEnd:
          if (m.bindId === 0) {
            this.sock.end();
            svc.endSession(this);
            return;
          }
          svc.release(this, m.bindId);
          return;
      }
    } catch (e) {
      if (e instanceof FwcRefusal) {
        this.refuse(cmd as number, ack, e.wsa, e.message);
        return;
      }
      throw e;
    }
  }
}

export class FwcService {
  readonly counters = newFwcCounters();
  readonly fw: Firewall;
  readonly media: StreamingMediaFilter;
  readonly sessions = new Map<number, FwcSession>();
  readonly port: number;
  private server: FsServer | null = null;
  private nextSession = 1;
  private nextConn = 1;
  private readonly extNet: ReturnType<typeof createNetApi>;
  private readonly maxSessions: number;
  private readonly maxPerSession: number;
  private readonly relayAcceptTimeoutMs: number;

  constructor(opts: FwcServiceOptions) {
    this.fw = opts.firewall;
    this.media = opts.media;
    this.port = opts.port ?? FWC_PORT;
    this.maxSessions = opts.maxSessions ?? 256;
    this.maxPerSession = opts.maxPerSession ?? 64;
    this.relayAcceptTimeoutMs = opts.relayAcceptTimeoutMs ?? 10_000;
    this.extNet = createNetApi(this.fw.external);
  }

  private get internal(): Stack {
    return this.fw.internal;
  }
  private get external(): Stack {
    return this.fw.external;
  }

  start(): Promise<void> {
    const server = new FsServer(this.internal, { noDelay: true }, (s) => this.accept(s));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, formatIpv4(this.internal.address), () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  close(): void {
    this.server?.close();
    this.server = null;
    for (const s of [...this.sessions.values()]) {
      s.sock.destroy();
      this.endSession(s);
    }
  }

  fwcEvent(action: string, message: string, data: Record<string, unknown>): void {
    this.fw.emit({ kind: 'fwc', action, message, data });
  }

  private accept(sock: FsSocket): void {
    const addr = parseIpv4(sock.remoteAddress ?? '') ?? 0;
    const now = this.internal.clock();
    const s = new FwcSession(this, this.nextSession++, sock, addr, now);
    if (this.sessions.size >= this.maxSessions) {
      s.refuse(FwcCommand.Hello, 0, Wsa.WSAENOBUFS, `${this.maxSessions} Firewall Client sessions are open already`);
      sock.end();
      return;
    }
    this.sessions.set(s.id, s);
    this.counters.FwcSessions++;
    this.counters.FwcSessionsActive++;
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => s.onData(d));
    sock.on('error', () => {
      /* the close that follows ends the session */
    });
    sock.on('close', () => this.endSession(s));
    sock.on('end', () => sock.end());
  }

  /** The control channel is gone: everything the session holds goes at once. */
  endSession(s: FwcSession): void {
    if (s.closed) return;
    s.closed = true;
    this.sessions.delete(s.id);
    this.counters.FwcSessionsActive--;
    for (const b of [...s.bindings.values()]) this.free(b);
    for (const c of [...s.connections]) this.closeConnection(c);
    this.media.sessionEnded(s.id);
  }

  // ------------------------------------------------------------------ Connect

  connect(s: FwcSession, dstAddr: number, dstPort: number, ack: number): void {
    if (dstPort === 0 || dstAddr === 0 || dstAddr >>> 28 >= 0xe || dstAddr === 0xffffffff)
      throw new FwcRefusal(Wsa.WSAEINVAL, `cannot connect to ${formatIpv4(dstAddr)}:${dstPort}`);
    if (s.connections.size >= this.maxPerSession) throw new FwcRefusal(Wsa.WSAENOBUFS, `${this.maxPerSession} connections are open in this session`);
    this.counters.FwcConnects++;
    const ext = this.extNet.connect({ host: formatIpv4(dstAddr), port: dstPort, noDelay: true }) as FsSocket;
    const now = this.internal.clock();
    const c: RelayedConnection = {
      id: this.nextConn++,
      session: s,
      dstAddr,
      dstPort,
      ext,
      opening: null,
      listener: null,
      int: null,
      acceptTimer: null,
      media: null,
      bytesOut: 0,
      bytesIn: 0,
      started: now,
      closed: false,
    };
    s.connections.add(c);
    if (ext.localPort !== undefined) {
      const opening: LocalOpening = {
        kind: 'local',
        proto: PROTO_TCP,
        extPort: ext.localPort,
        admit: (src, sport) => (src === dstAddr && sport === dstPort ? null : 'session-mismatch'),
        describe: () => this.describeConnection(c),
      };
      if (this.fw.sessions.addLocal(opening)) c.opening = opening;
    }
    const fail = (e: Error & { code?: string }) => {
      if (c.closed) return;
      this.counters.FwcConnectFailures++;
      const wsa = WSA_OF_ERRNO[e.code ?? ''] ?? Wsa.WSAECONNREFUSED;
      s.refuse(FwcCommand.Connect, ack, wsa, `connect to ${formatIpv4(dstAddr)}:${dstPort} failed (${e.code ?? e.message})`);
      this.closeConnection(c);
    };
    ext.once('error', fail);
    ext.once('connect', () => {
      ext.off('error', fail);
      ext.on('error', () => {
        /* close follows */
      });
      const listener = new FsServer(this.internal, { noDelay: true }, (sock) => this.relayAccepted(c, sock));
      c.listener = listener;
      listener.listen(0, formatIpv4(this.internal.address), () => {
        const a = listener.address();
        if (a === null || c.closed) return;
        s.send(
          {
            command: FwcCommand.ConnectAck,
            relayAddr: this.internal.address,
            relayPort: a.port,
            externalAddr: this.external.address,
            externalPort: ext.localPort ?? 0,
          },
          ack,
        );
        c.acceptTimer = this.timer(this.relayAcceptTimeoutMs, () => {
          if (c.int === null) this.closeConnection(c);
        });
      });
    });
    ext.on('close', () => this.closeConnection(c));
  }

  private relayAccepted(c: RelayedConnection, sock: FsSocket): void {
    if (c.int !== null || c.closed || parseIpv4(sock.remoteAddress ?? '') !== c.session.clientAddr) {
      sock.destroy();
      return;
    }
    c.int = sock;
    c.listener?.close();
    c.listener = null;
    if (c.acceptTimer) {
      this.internal.timers.disarm(c.acceptTimer);
      c.acceptTimer = null;
    }
    c.media = this.media.tapConnection(c.session.id, c.session.client, c.dstAddr, c.dstPort);
    const int = sock,
      ext = c.ext;
    int.setNoDelay(true);
    int.on('data', (d: Buffer) => {
      c.bytesOut += d.length;
      c.media?.tap(d);
      if (!ext.write(d)) int.pause();
    });
    ext.on('drain', () => int.resume());
    ext.on('data', (d: Buffer) => {
      c.bytesIn += d.length;
      if (!int.write(d)) ext.pause();
    });
    int.on('drain', () => ext.resume());
    int.on('end', () => ext.end());
    ext.on('end', () => int.end());
    int.on('error', () => {
      /* close follows */
    });
    int.on('close', () => this.closeConnection(c));
  }

  private closeConnection(c: RelayedConnection): void {
    if (c.closed) return;
    c.closed = true;
    c.session.connections.delete(c);
    if (c.opening) this.fw.sessions.removeLocal(c.opening);
    c.listener?.close();
    if (c.acceptTimer) this.internal.timers.disarm(c.acceptTimer);
    c.media?.end();
    c.int?.destroy();
    c.ext.destroy();
  }

  private describeConnection(c: RelayedConnection): Record<string, unknown> {
    const now = this.internal.clock();
    return {
      kind: 'fwc-tcp',
      client: c.session.client,
      session: c.session.id,
      id: c.id,
      external: `${formatIpv4(this.external.address)}:${c.ext.localPort ?? 0}`,
      remote: `${formatIpv4(c.dstAddr)}:${c.dstPort}`,
      relay: c.int ? `${c.int.localAddress}:${c.int.localPort}` : null,
      state: c.int ? 'relaying' : 'connecting',
      ageMs: Math.round(now - c.started),
      bytesOut: c.bytesOut,
      bytesIn: c.bytesIn,
      mediaFilter: c.media !== null,
    };
  }

  // ------------------------------------------------------------------ UDP Bind and release

  udpBind(s: FwcSession, requested: number, clientPort: number, ack: number): void {
    const now = this.internal.clock();
    if (clientPort === 0) throw new FwcRefusal(Wsa.WSAEINVAL, "the client port (byte 72) must be the client's own UDP port, not 0");
    if (s.bindings.size >= this.maxPerSession) throw new FwcRefusal(Wsa.WSAENOBUFS, `${this.maxPerSession} bindings are open in this session`);
    let port = requested;
    if (port !== 0) {
      const held = this.fw.sessions.lookupExt(PROTO_UDP, port);
      if (held instanceof UdpBinding && held.state === 'releasing' && held.session === s) {
        const verdict = this.fw.hooks.rebindWhileReleasing(held.info(), now);
        if (verdict === 'address-in-use') {
          this.counters.FwcAddrInUse++;
          this.fw.emit({
            kind: 'media',
            action: 'addr-in-use',
            message: `Firewall Client ${s.client} bound UDP port ${port} again before the firewall had freed it: WSAEADDRINUSE (Address already in use)`,
            data: { client: s.client, session: s.id, port, releasedMsAgo: Math.round(now - held.releasedAt) },
          });
          throw new FwcRefusal(Wsa.WSAEADDRINUSE, `Address already in use: UDP port ${port} of ${formatIpv4(this.external.address)} is still being released`);
        }
        this.free(held);
      } else if (held !== undefined || !this.fw.sessions.isFree(PROTO_UDP, port)) {
        this.counters.FwcAddrInUse++;
        throw new FwcRefusal(Wsa.WSAEADDRINUSE, `Address already in use: UDP port ${port} of ${formatIpv4(this.external.address)} is taken`);
      }
    } else {
      port = this.freeUdpPort();
      if (port === 0) throw new FwcRefusal(Wsa.WSAENOBUFS, 'no free UDP port on the external address');
    }
    const id = s.nextBindId++;
    let binding: UdpBinding | null = null;
    const extEp: UdpEndpoint = {
      port,
      addr: this.external.address,
      onMessage: (data, src, srcPort) => {
        if (binding) this.relayIn(binding, data, src, srcPort);
      },
      onError: () => {
        /* an ICMP error for a datagram sent on the client's behalf: nothing to tell over UDP */
      },
    };
    const relayPort = this.internal.udp.ephemeralPort();
    const relayEp: UdpEndpoint = {
      port: relayPort,
      addr: this.internal.address,
      onMessage: (data, src, srcPort) => {
        if (binding) this.relayOut(binding, data, src, srcPort);
      },
      onError: () => {
        /* the client's port went away */
      },
    };
    try {
      this.external.udp.bind(extEp);
    } catch {
      this.counters.FwcAddrInUse++;
      throw new FwcRefusal(Wsa.WSAEADDRINUSE, `Address already in use: UDP port ${port} of ${formatIpv4(this.external.address)}`);
    }
    this.internal.udp.bind(relayEp);
    binding = new UdpBinding(this, s, id, port, clientPort, relayPort, extEp, relayEp, now);
    this.fw.sessions.addLocal(binding);
    s.bindings.set(id, binding);
    this.counters.FwcUdpBinds++;
    s.send(
      {
        command: FwcCommand.BindAck,
        bindId: id,
        externalAddr: this.external.address,
        externalPort: port,
        relayAddr: this.internal.address,
        relayPort,
      },
      ack,
    );
    this.media.rebound(binding.info(), now);
  }

  private freeUdpPort(): number {
    for (let i = 0; i < 1000; i++) {
      const p = this.external.udp.ephemeralPort();
      if (this.fw.sessions.isFree(PROTO_UDP, p)) return p;
    }
    return 0;
  }

  release(s: FwcSession, bindId: number): void {
    const b = s.bindings.get(bindId);
    if (b === undefined || b.state !== 'bound') throw new FwcRefusal(Wsa.WSAEINVAL, `no binding ${bindId} in this session`);
    const now = this.internal.clock();
    b.state = 'releasing';
    b.releasedAt = now;
    this.counters.FwcReleases++;
    this.media.released(b.info(), now);
    const delay = this.fw.hooks.releaseDelayMs();
    if (delay <= 0) {
      this.free(b);
      return;
    }
    b.releaseTimer = this.timer(delay, () => {
      b.releaseTimer = null;
      this.free(b);
    });
  }

  /** The port is free again: sockets closed, the opening gone. */
  free(b: UdpBinding): void {
    if (b.state === 'released') return;
    b.state = 'released';
    if (b.releaseTimer) {
      this.internal.timers.disarm(b.releaseTimer);
      b.releaseTimer = null;
    }
    this.external.udp.unbind(b.extEndpoint);
    this.internal.udp.unbind(b.relayEndpoint);
    this.fw.sessions.removeLocal(b);
    b.session.bindings.delete(b.id);
  }

  private relayIn(b: UdpBinding, data: Buffer, src: number, srcPort: number): void {
    const out = Buffer.allocUnsafe(RELAY_HEADER + data.length);
    emitRelay(out, 0, { addr: src, port: srcPort });
    data.copy(out, RELAY_HEADER);
    b.relayedIn++;
    this.counters.FwcRelayedIn++;
    this.counters.FwcRelayedBytesIn += data.length;
    this.internal.clock();
    this.internal.udp.send(this.internal.address, b.relayPort, b.session.clientAddr, b.clientPort, out);
    this.internal.flushSoon();
  }

  private readonly relayRepr = newRelayRepr();

  private relayOut(b: UdpBinding, data: Buffer, src: number, srcPort: number): void {
    const r = this.relayRepr;
    if (src !== b.session.clientAddr || srcPort !== b.clientPort || b.state !== 'bound' || parseRelay(data, 0, data.length, r) !== RelayError.None) {
      this.counters.FwcRelayUnknown++;
      this.fw.drop('fwc-relay-unknown');
      return;
    }
    if (r.port === 0 || r.addr === 0 || r.addr >>> 28 >= 0xe) {
      this.fw.drop('martian');
      return;
    }
    b.sentTo.add(r.addr * 65536 + r.port);
    b.relayedOut++;
    this.counters.FwcRelayedOut++;
    this.counters.FwcRelayedBytesOut += r.payloadLength;
    this.external.clock();
    this.external.udp.send(this.external.address, b.extPort, r.addr, r.port, data.subarray(r.payloadOffset));
    this.external.flushSoon();
  }

  private timer(ms: number, fn: () => void): Timer {
    const t = new Timer(() => fn());
    this.internal.timers.arm(t, this.internal.clock() + ms);
    this.internal.flushSoon();
    return t;
  }

  // ------------------------------------------------------------------ `faultstack fw bindings`

  describeBindings(): Record<string, unknown>[] {
    const rows: Record<string, unknown>[] = [];
    for (const s of this.sessions.values()) for (const b of s.bindings.values()) rows.push(b.describe());
    return rows;
  }

  describeConnections(): Record<string, unknown>[] {
    const rows: Record<string, unknown>[] = [];
    for (const s of this.sessions.values()) for (const c of s.connections) rows.push(this.describeConnection(c));
    return rows;
  }

  describeSessions(): Record<string, unknown>[] {
    const now = this.internal.clock();
    return [...this.sessions.values()].map((s) => ({
      session: s.id,
      client: s.client,
      user: s.hello?.user ?? null,
      application: s.hello?.application ?? null,
      computer: s.hello?.computer ?? null,
      ageMs: Math.round(now - s.started),
      bindings: s.bindings.size,
      connections: s.connections.size,
    }));
  }
}
