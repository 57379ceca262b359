/**
 * The streaming-media application filter (ISA Server's, for MMS; the protocol is the
 * minimal model of stack/wire/mms.ts). MMSU media does not answer anything the client
 * sent: the server sends datagrams from its own ports (1024-5000) to the UDP port the
 * client named on the control connection (TCP 1755). A stateful packet filter would
 * drop them; the filter reads the control connection and opens that port on the
 * external side, for the server's address and those ports, for the session.
 *
 * Two kinds of client, as in ISA:
 * - Firewall Clients: the firewall itself holds the control connection (a Connect made
 *   through the control channel) and reads the client's bytes in the relay; the UDP
 *   port is a binding the client made with UDP Bind. The opening belongs to (client
 *   session, port): the Firewall service closes it when the client releases the
 *   binding, and re-opens it when the client binds the port again (KB 319381: the
 *   hooks decide; buggy leaves it closed).
 * - SecureNAT clients: the filter reads the client's segments of the translated TCP
 *   session, opens a port on the external address (the client's own number when it is
 *   free) that forwards to the client, and rewrites the port and address in the
 *   message (as an FTP ALG rewrites PORT), fixing the TCP checksum. Like Linux's
 *   conntrack helpers, it reads a message only when it lies whole in one segment that
 *   arrives in order; a split or out-of-order one is counted (MediaAlgUnparsed) and let
 *   through unchanged.
 */
import { formatIpv4 } from '../wire/addr';
import { checksumAdd, checksumFinish, pseudoHeaderSum } from '../wire/checksum';
import { PROTO_TCP, PROTO_UDP } from '../wire/ipv4';
import { readU16, readU32, writeU16, writeU32 } from '../wire/bytes';
import { MMS_HEADER, MMS_MAGIC, MMS_PORT, MmsCommand, MmsStream, mmsFrameLength } from '../wire/mms';
import type { BindingInfo, Firewall } from './firewall';
import type { Expectation, NatPayloadFilter, NatSession } from './sessions';

/** Where Windows Media Services sends MMSU media from (its ephemeral ports: MaxUserPort 5000). */
export const MEDIA_SERVER_PORTS: readonly [number, number] = [1024, 5000];

export function newMediaCounters() {
  return {
    MediaControlSessions: 0,
    MediaPortsOpened: 0,
    MediaPortsClosed: 0,
    MediaPortsReopened: 0,
    MediaPortsLeftClosed: 0,
    MediaDatagramsAdmitted: 0,
    MediaDatagramsRefused: 0,
    MediaAlgRewrites: 0,
    MediaAlgUnparsed: 0,
  };
}

/** An opening the filter made for a Firewall Client's binding. */
export interface MediaPort {
  readonly fwcSession: number;
  readonly client: string;
  readonly port: number;
  readonly server: number;
  /** The control connection that negotiated it (it goes with it). */
  readonly control: object;
  state: 'open' | 'closed';
  readonly openedAt: number;
  changedAt: number;
  admitted: number;
  refused: number;
  reopened: number;
}

interface AlgState {
  /** Sequence number of the next client byte not yet read. */
  next: number;
  /** Bytes of a message still to pass over (one that did not fit in its segment). */
  skip: number;
  /** A message header cut by a segment boundary (fewer than 8 bytes). */
  hdr: number[];
  broken: boolean;
  /** Rewritten fields, by the sequence number of their first byte: a retransmission gets the same. */
  rewrites: { seq: number; port: number; addr: number }[];
}

const seqLt = (a: number, b: number) => ((a - b) | 0) < 0;

export class StreamingMediaFilter implements NatPayloadFilter {
  /** Off: the filter is not in use (the fault's `off` mode); MMSU through the firewall then fails. */
  enabled = true;
  readonly counters = newMediaCounters();
  private readonly ports = new Map<string, MediaPort>();

  constructor(readonly fw: Firewall) {
    fw.natFilters.push(this);
    fw.media = this;
  }

  private key(session: number, port: number): string {
    return `${session}:${port}`;
  }

  // ------------------------------------------------------------------ Firewall Clients

  /**
   * A Firewall Client's connection to `server`:`serverPort` (through the control channel):
   * a function to hand the client's bytes to, when the filter reads this connection.
   */
  tapConnection(fwcSession: number, client: string, server: number, serverPort: number): { tap: (d: Buffer) => void; end: () => void } | null {
    if (!this.enabled || serverPort !== MMS_PORT) return null;
    this.counters.MediaControlSessions++;
    const control = {};
    const stream = new MmsStream();
    return {
      tap: (d) => {
        for (const m of stream.push(d)) {
          if (m.message?.command === MmsCommand.TransportUdp) this.negotiated(fwcSession, client, m.message.port, server, control);
        }
      },
      end: () => {
        for (const [k, mp] of this.ports) if (mp.control === control) this.ports.delete(k);
      },
    };
  }

  private negotiated(fwcSession: number, client: string, port: number, server: number, control: object): void {
    const now = this.fw.internal.clock();
    const k = this.key(fwcSession, port);
    const mp: MediaPort = {
      fwcSession,
      client,
      port,
      server,
      control,
      state: 'open',
      openedAt: now,
      changedAt: now,
      admitted: 0,
      refused: 0,
      reopened: 0,
    };
    this.ports.set(k, mp);
    this.counters.MediaPortsOpened++;
    this.fw.emit({
      kind: 'media',
      action: 'opened',
      message: `streaming media filter opened UDP port ${port} on ${formatIpv4(this.fw.external.address)} for Firewall Client ${client} (MMSU from ${formatIpv4(server)}, ports ${MEDIA_SERVER_PORTS[0]}-${MEDIA_SERVER_PORTS[1]})`,
      data: { client, session: fwcSession, port, server: formatIpv4(server) },
    });
  }

  portFor(fwcSession: number, port: number): MediaPort | undefined {
    return this.ports.get(this.key(fwcSession, port));
  }

  /** Does the opening let this datagram in? Counts either way. */
  admit(mp: MediaPort, src: number, srcPort: number): boolean {
    if (mp.state === 'open' && src === mp.server && srcPort >= MEDIA_SERVER_PORTS[0] && srcPort <= MEDIA_SERVER_PORTS[1]) {
      mp.admitted++;
      this.counters.MediaDatagramsAdmitted++;
      return true;
    }
    mp.refused++;
    this.counters.MediaDatagramsRefused++;
    return false;
  }

  /** The client released its binding of the port: the opening closes (both modes). */
  released(b: BindingInfo, now: number): void {
    const mp = this.portFor(b.session, b.externalPort);
    if (mp === undefined || mp.state === 'closed') return;
    mp.state = 'closed';
    mp.changedAt = now;
    this.counters.MediaPortsClosed++;
    this.fw.emit({
      kind: 'media',
      action: 'closed',
      message: `Firewall Client ${b.client} released UDP port ${b.externalPort}: the streaming media filter closed it`,
      data: { client: b.client, session: b.session, port: b.externalPort, server: formatIpv4(mp.server) },
    });
    this.fw.hooks.mediaPortReleased(this.info(b), now);
  }

  /** The client bound the port again: re-open what release closed, if the hooks say so. */
  rebound(b: BindingInfo, now: number): void {
    const mp = this.portFor(b.session, b.externalPort);
    if (mp === undefined || mp.state === 'open') return;
    if (this.fw.hooks.reopenOnRebind(this.info(b), now)) {
      mp.state = 'open';
      mp.changedAt = now;
      mp.reopened++;
      this.counters.MediaPortsReopened++;
      this.fw.emit({
        kind: 'media',
        action: 'reopened',
        message: `Firewall Client ${b.client} bound UDP port ${b.externalPort} again: the streaming media filter re-opened it for ${formatIpv4(mp.server)}`,
        data: { client: b.client, session: b.session, port: b.externalPort, server: formatIpv4(mp.server) },
      });
    } else {
      this.counters.MediaPortsLeftClosed++;
      this.fw.emit({
        kind: 'media',
        action: 'left-closed',
        message: `Firewall Client ${b.client} bound UDP port ${b.externalPort} again, but the port has already been closed: the packet filter drops the MMSU datagrams from ${formatIpv4(mp.server)}`,
        data: { client: b.client, session: b.session, port: b.externalPort, server: formatIpv4(mp.server) },
      });
    }
  }

  /** The binding with its media state, as hooks see it. */
  info(b: BindingInfo): BindingInfo {
    const mp = this.portFor(b.session, b.externalPort);
    return { ...b, media: mp ? { server: formatIpv4(mp.server), state: mp.state } : null };
  }

  /** The client's whole session ended: its openings go. */
  sessionEnded(fwcSession: number): void {
    for (const [k, mp] of this.ports) if (mp.fwcSession === fwcSession) this.ports.delete(k);
  }

  describe(now: number): Record<string, unknown>[] {
    return [...this.ports.values()].map((mp) => ({
      client: mp.client,
      session: mp.fwcSession,
      port: mp.port,
      server: formatIpv4(mp.server),
      state: mp.state,
      sinceMs: Math.round(now - mp.changedAt),
      admitted: mp.admitted,
      refused: mp.refused,
      reopened: mp.reopened,
    }));
  }

  // ------------------------------------------------------------------ SecureNAT clients

  wants(s: NatSession): boolean {
    return this.enabled && s.proto === PROTO_TCP && s.remotePort === MMS_PORT;
  }

  clientSegment(s: NatSession, pkt: Buffer, tcp: number, tcpLen: number, partial: boolean, now: number): void {
    let st = s.alg as AlgState | null;
    if (st === null) {
      st = { next: s.clientIsn, skip: 0, hdr: [], broken: false, rewrites: [] };
      s.alg = st;
      this.counters.MediaControlSessions++;
    }
    const thl = (pkt[tcp + 12] >> 4) * 4;
    const seq = readU32(pkt, tcp + 4);
    const pay = tcp + thl,
      payLen = tcpLen - thl;
    let changed = false;
    // A retransmitted segment carries what we rewrote before: rewrite it the same way.
    for (const rw of st.rewrites) {
      const d = (rw.seq - seq) | 0;
      if (d >= 0 && d + 6 <= payLen) {
        writeU16(pkt, pay + d, rw.port);
        writeU32(pkt, pay + d + 2, rw.addr);
        changed = true;
      }
    }
    if (!st.broken && seq === st.next) {
      let i = 0;
      while (i < payLen && !st.broken) {
        if (st.skip > 0) {
          const n = Math.min(st.skip, payLen - i);
          st.skip -= n;
          i += n;
          continue;
        }
        if (st.hdr.length > 0 || payLen - i < MMS_HEADER) {
          while (st.hdr.length < MMS_HEADER && i < payLen) st.hdr.push(pkt[pay + i++]);
          if (st.hdr.length < MMS_HEADER) break;
          const h = Buffer.from(st.hdr);
          st.hdr = [];
          const len = mmsFrameLength(h, 0, MMS_HEADER);
          if (len < 0) {
            st.broken = true;
            break;
          }
          if (readU16(h, 6) === MmsCommand.TransportUdp) this.counters.MediaAlgUnparsed++;
          st.skip = len - MMS_HEADER;
          continue;
        }
        const len = mmsFrameLength(pkt, pay + i, payLen - i);
        if (len < 0) {
          st.broken = true;
          break;
        }
        if (len > payLen - i) {
          if (readU16(pkt, pay + i + 6) === MmsCommand.TransportUdp) this.counters.MediaAlgUnparsed++;
          st.skip = len - (payLen - i);
          i = payLen;
          break;
        }
        if (readU16(pkt, pay + i + 6) === MmsCommand.TransportUdp && len >= 14 && this.natNegotiated(s, pkt, pay + i, (seq + i) >>> 0, st, now)) changed = true;
        i += len;
      }
      if (st.broken) this.counters.MediaAlgUnparsed++;
      st.next = (seq + payLen) >>> 0;
    } else if (!st.broken && seqLt(st.next, (seq + payLen) >>> 0)) {
      // New bytes after a gap, or overlapping what was read: the stream can no longer be
      // followed (a pure retransmission ends at or before st.next and changes nothing).
      st.broken = true;
      this.counters.MediaAlgUnparsed++;
    }
    if (changed && !partial) {
      // The payload changed at an offset of any parity: recompute the checksum (with the
      // addresses as they are now; the translation after this updates it incrementally).
      writeU16(pkt, tcp + 16, 0);
      const c = checksumFinish(checksumAdd(pkt, tcp, tcpLen, pseudoHeaderSum(readU32(pkt, 12), readU32(pkt, 16), PROTO_TCP, tcpLen)));
      writeU16(pkt, tcp + 16, c);
    }
  }

  /** A SecureNAT client's TransportUdp: open a port for it and rewrite the message to name it. */
  private natNegotiated(s: NatSession, pkt: Buffer, at: number, msgSeq: number, st: AlgState, now: number): boolean {
    if (readU32(pkt, at) !== MMS_MAGIC) return false;
    const port = readU16(pkt, at + 8);
    const fw = this.fw;
    let e = (s.expectations ?? []).find((x) => x.inPort === port);
    if (e === undefined) {
      const extPort = fw.sessions.allocPort(PROTO_UDP, port);
      if (extPort === 0) return false;
      e = {
        kind: 'expect',
        proto: PROTO_UDP,
        extPort,
        inAddr: s.inAddr,
        inPort: port,
        remoteAddr: s.remoteAddr,
        remotePorts: MEDIA_SERVER_PORTS,
        owner: s,
        created: now,
        lastSeen: now,
        packetsIn: 0,
        bytesIn: 0,
        why: `streaming media (MMSU) negotiated on session ${s.id}`,
      } satisfies Expectation;
      fw.sessions.addExpectation(e);
      this.counters.MediaPortsOpened++;
      fw.emit({
        kind: 'media',
        action: 'opened',
        message: `streaming media filter opened UDP port ${extPort} on ${formatIpv4(fw.external.address)} for SecureNAT client ${formatIpv4(s.inAddr)}:${port} (MMSU from ${formatIpv4(s.remoteAddr)})`,
        data: { client: formatIpv4(s.inAddr), port, externalPort: extPort, server: formatIpv4(s.remoteAddr), securenat: true },
      });
    }
    writeU16(pkt, at + 8, e.extPort);
    writeU32(pkt, at + 10, fw.external.address);
    if (st.rewrites.length >= 8) st.rewrites.shift();
    st.rewrites.push({ seq: (msgSeq + 8) >>> 0, port: e.extPort, addr: fw.external.address });
    this.counters.MediaAlgRewrites++;
    return true;
  }

  ended(_s: NatSession): void {
    /* its expectations go with the session (SessionTable.remove) */
  }
}
