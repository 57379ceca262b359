/**
 * The packet filter's state: sessions started inside and translated by SecureNAT
 * (one external port per session), and the openings on the external address that
 * the Firewall service and the application filters make. Both are found by what
 * arrives from outside, (protocol, external port), with one Map lookup on a number.
 *
 * Timeouts (ISA forgets an idle connection after about two minutes; the exact
 * values are ours): UDP and established TCP 120 s idle, ICMP echo 30 s, a TCP
 * session not yet established 60 s, one that has seen a FIN both ways or an RST 10 s.
 */
import { PROTO_ICMP, PROTO_TCP, PROTO_UDP } from '../wire/ipv4';
import { formatIpv4 } from '../wire/addr';

export interface SessionTimeouts {
  udpMs: number;
  icmpMs: number;
  tcpEstablishedMs: number;
  tcpOpeningMs: number;
  tcpClosingMs: number;
}

export const DEFAULT_TIMEOUTS: SessionTimeouts = {
  udpMs: 120_000,
  icmpMs: 30_000,
  tcpEstablishedMs: 120_000,
  tcpOpeningMs: 60_000,
  tcpClosingMs: 10_000,
};

export type TcpTrack = 'syn-sent' | 'established' | 'closing' | 'closed';

/** A SecureNAT session: started by an internal client, its source translated. */
export interface NatSession {
  readonly kind: 'session';
  readonly id: number;
  readonly proto: number;
  readonly inAddr: number;
  /** The client's port (ICMP: the echo identifier). */
  readonly inPort: number;
  readonly remoteAddr: number;
  readonly remotePort: number;
  readonly extPort: number;
  readonly created: number;
  lastSeen: number;
  tcp: TcpTrack;
  finOut: boolean;
  finIn: boolean;
  /** Client's initial sequence number + 1 (TCP), for an application filter reading the stream. */
  clientIsn: number;
  packetsOut: number;
  packetsIn: number;
  bytesOut: number;
  bytesIn: number;
  /** The application filter reading this session's payload, and its state (stack/firewall/media.ts). */
  filter: NatPayloadFilter | null;
  alg: unknown;
  /** Ports opened for this session by an application filter (they close with it). */
  expectations: Expectation[] | null;
}

/** A port an application filter opened on the external address for a SecureNAT client. */
export interface Expectation {
  readonly kind: 'expect';
  readonly proto: number;
  readonly extPort: number;
  readonly inAddr: number;
  readonly inPort: number;
  readonly remoteAddr: number;
  readonly remotePorts: readonly [number, number];
  /** The session whose negotiation opened it; it closes with it. */
  readonly owner: NatSession;
  readonly created: number;
  readonly why: string;
  lastSeen: number;
  packetsIn: number;
  bytesIn: number;
}

/**
 * A port of the firewall's own on the external address (a Firewall Client's binding, a
 * connection made for one): what arrives for it is delivered to the external stack if
 * `admit` says so, else dropped for the reason it gives.
 */
export interface LocalOpening {
  readonly kind: 'local';
  readonly proto: number;
  readonly extPort: number;
  /** Null: let it in; otherwise the drop reason. */
  admit(src: number, srcPort: number, now: number): DropReason | null;
  describe(): Record<string, unknown>;
}

/** An application filter that reads the TCP payload of SecureNAT sessions (stack/firewall/media.ts). */
export interface NatPayloadFilter {
  /** Wants to see the client's segments of this new session? */
  wants(s: NatSession): boolean;
  /**
   * A client -> server segment with payload, before translation (`tcp` is where its TCP
   * header starts, `tcpLen` the segment's length); may rewrite the payload in place and
   * fixes the TCP checksum for what it changed.
   */
  clientSegment(s: NatSession, pkt: Buffer, tcp: number, tcpLen: number, partial: boolean, now: number): void;
  /** The session is gone. */
  ended(s: NatSession): void;
}

export type ExternalEntry = NatSession | Expectation | LocalOpening;

/** Why the firewall dropped a datagram; each has a counter (FwDrop<Reason> in `faultstack fw`). */
export const DROP_REASONS = {
  'inbound-no-rule': 'arrived from outside; no session, opening or rule lets it in (default deny)',
  'rule-deny': 'a deny rule matched',
  'media-port-closed': 'UDP to a Firewall Client port whose opening the streaming-media filter closed',
  'binding-not-open': 'UDP to a Firewall Client binding from a source it never sent to and no filter opened it for',
  'session-mismatch': "to a translated port from another endpoint than its session's",
  'tcp-no-session': 'a TCP segment other than a SYN with no session (never started, or forgotten after its idle timeout)',
  'ttl-exceeded': 'time to live exhausted here (ICMP time exceeded sent)',
  'frag-needed': "larger than the next hop's MTU with DF set (ICMP fragmentation needed sent)",
  spoofed: 'a source address on the wrong side: an internal one from outside, or a foreign one from inside',
  martian: "a destination the firewall neither serves nor routes (broadcast, multicast, another interface's address)",
  'bad-header': 'transport header cut short',
  'unsupported-protocol': 'neither TCP, UDP nor ICMP echo (SecureNAT translates those only)',
  'icmp-no-session': 'an ICMP error about no session of ours',
  'nat-exhausted': 'no free external port for a new session',
  'fwc-relay-unknown': 'a relay datagram from an endpoint that holds no Firewall Client binding',
} as const;
export type DropReason = keyof typeof DROP_REASONS;

export function extKey(proto: number, port: number): number {
  return proto * 65536 + port;
}

function protoName(p: number): string {
  return p === PROTO_TCP ? 'tcp' : p === PROTO_UDP ? 'udp' : p === PROTO_ICMP ? 'icmp' : String(p);
}

export class SessionTable {
  readonly byExt = new Map<number, ExternalEntry>();
  private readonly byInside = new Map<string, NatSession>();
  private last: NatSession | null = null;
  private nextId = 1;
  private readonly nextPort: Record<number, number> = {};
  created = 0;
  expired = 0;
  closed = 0;
  exhausted = 0;

  constructor(
    readonly timeouts: SessionTimeouts = DEFAULT_TIMEOUTS,
    /** External ports SecureNAT hands out (ours: clear of the stack's ephemeral ranges). */
    readonly portRange: readonly [number, number] = [10000, 29999],
    /** Is a port of the external address taken by something else (a socket of the external stack)? */
    readonly portTakenElsewhere: (proto: number, port: number) => boolean = () => false,
  ) {}

  get size(): number {
    return this.byInside.size;
  }

  /** The session of an outbound datagram, without allocating on a repeat hit. */
  lookupOut(proto: number, inAddr: number, inPort: number, remoteAddr: number, remotePort: number): NatSession | undefined {
    const l = this.last;
    if (l !== null && l.inPort === inPort && l.remotePort === remotePort && l.inAddr === inAddr && l.remoteAddr === remoteAddr && l.proto === proto) return l;
    const s = this.byInside.get(`${proto}|${inAddr}|${inPort}|${remoteAddr}|${remotePort}`);
    if (s !== undefined) this.last = s;
    return s;
  }

  lookupExt(proto: number, port: number): ExternalEntry | undefined {
    return this.byExt.get(extKey(proto, port));
  }

  isFree(proto: number, port: number): boolean {
    return port > 0 && !this.byExt.has(extKey(proto, port)) && !this.portTakenElsewhere(proto, port);
  }

  /** An external port for a new mapping: `preferred` when free, else the next free one in the range. */
  allocPort(proto: number, preferred = 0): number {
    if (preferred > 0 && this.isFree(proto, preferred)) return preferred;
    const [lo, hi] = this.portRange;
    const span = hi - lo + 1;
    let p = this.nextPort[proto] ?? lo;
    for (let i = 0; i < span; i++, p = p >= hi ? lo : p + 1) {
      if (this.isFree(proto, p)) {
        this.nextPort[proto] = p >= hi ? lo : p + 1;
        return p;
      }
    }
    this.exhausted++;
    return 0;
  }

  create(proto: number, inAddr: number, inPort: number, remoteAddr: number, remotePort: number, now: number): NatSession | null {
    const extPort = this.allocPort(proto);
    if (extPort === 0) return null;
    const s: NatSession = {
      kind: 'session',
      id: this.nextId++,
      proto,
      inAddr,
      inPort,
      remoteAddr,
      remotePort,
      extPort,
      created: now,
      lastSeen: now,
      tcp: 'syn-sent',
      finOut: false,
      finIn: false,
      clientIsn: 0,
      packetsOut: 0,
      packetsIn: 0,
      bytesOut: 0,
      bytesIn: 0,
      filter: null,
      alg: null,
      expectations: null,
    };
    this.byInside.set(`${proto}|${inAddr}|${inPort}|${remoteAddr}|${remotePort}`, s);
    this.byExt.set(extKey(proto, extPort), s);
    this.created++;
    this.last = s;
    return s;
  }

  remove(s: NatSession): void {
    this.byInside.delete(`${s.proto}|${s.inAddr}|${s.inPort}|${s.remoteAddr}|${s.remotePort}`);
    if (this.byExt.get(extKey(s.proto, s.extPort)) === s) this.byExt.delete(extKey(s.proto, s.extPort));
    if (this.last === s) this.last = null;
    for (const e of s.expectations ?? []) this.removeExpectation(e);
    s.expectations = null;
  }

  addExpectation(e: Expectation): void {
    this.byExt.set(extKey(e.proto, e.extPort), e);
    (e.owner.expectations ??= []).push(e);
  }

  removeExpectation(e: Expectation): void {
    const k = extKey(e.proto, e.extPort);
    if (this.byExt.get(k) === e) this.byExt.delete(k);
    const list = e.owner.expectations;
    if (list) {
      const i = list.indexOf(e);
      if (i >= 0) list.splice(i, 1);
    }
  }

  addLocal(o: LocalOpening): boolean {
    const k = extKey(o.proto, o.extPort);
    if (this.byExt.has(k)) return false;
    this.byExt.set(k, o);
    return true;
  }

  removeLocal(o: LocalOpening): void {
    const k = extKey(o.proto, o.extPort);
    if (this.byExt.get(k) === o) this.byExt.delete(k);
  }

  /**
   * TCP state from the flags of a segment (out: from the client). A session that closes
   * lets go of the ports an application filter opened for it at once (they are the
   * control connection's; the session itself stays a little for the last segments).
   */
  trackTcp(s: NatSession, flags: number, out: boolean): void {
    const before = s.tcp;
    this.track(s, flags, out);
    if (s.tcp === 'closed' && before !== 'closed' && s.expectations !== null) {
      for (const e of [...s.expectations]) this.removeExpectation(e);
    }
  }

  private track(s: NatSession, flags: number, out: boolean): void {
    const SYN = 0x02,
      FIN = 0x01,
      RST = 0x04,
      ACK = 0x10;
    if (flags & RST) {
      s.tcp = 'closed';
      return;
    }
    if (s.tcp === 'syn-sent' && !out && (flags & (SYN | ACK)) === (SYN | ACK)) s.tcp = 'established';
    if (flags & FIN) {
      if (out) s.finOut = true;
      else s.finIn = true;
      if (s.finOut && s.finIn) s.tcp = 'closed';
      else if (s.tcp === 'established') s.tcp = 'closing';
    }
  }

  timeoutOf(s: NatSession): number {
    const t = this.timeouts;
    if (s.proto === PROTO_UDP) return t.udpMs;
    if (s.proto === PROTO_ICMP) return t.icmpMs;
    if (s.tcp === 'established') return t.tcpEstablishedMs;
    if (s.tcp === 'syn-sent') return t.tcpOpeningMs;
    return t.tcpClosingMs;
  }

  /** Forgets idle sessions and expectations; returns how many sessions went. */
  expire(now: number, onRemove?: (s: NatSession, why: 'expired' | 'closed') => void): number {
    let n = 0;
    for (const s of this.byInside.values()) {
      if (now - s.lastSeen < this.timeoutOf(s)) continue;
      const why = s.tcp === 'closed' ? 'closed' : 'expired';
      this.remove(s);
      if (why === 'closed') this.closed++;
      else this.expired++;
      n++;
      onRemove?.(s, why);
    }
    return n;
  }

  sessions(): NatSession[] {
    return [...this.byInside.values()];
  }
  expectations(): Expectation[] {
    return [...this.byExt.values()].filter((e): e is Expectation => e.kind === 'expect');
  }
  locals(): LocalOpening[] {
    return [...this.byExt.values()].filter((e): e is LocalOpening => e.kind === 'local');
  }

  describeSession(s: NatSession, extAddr: number, now: number): Record<string, unknown> {
    const ep = (a: number, p: number) => `${formatIpv4(a)}:${p}`;
    return {
      kind: 'securenat',
      id: s.id,
      proto: protoName(s.proto),
      internal: ep(s.inAddr, s.inPort),
      external: ep(extAddr, s.extPort),
      remote: ep(s.remoteAddr, s.remotePort),
      ...(s.proto === PROTO_TCP ? { state: s.tcp } : {}),
      idleMs: Math.round(now - s.lastSeen),
      timeoutMs: this.timeoutOf(s),
      packetsOut: s.packetsOut,
      packetsIn: s.packetsIn,
      bytesOut: s.bytesOut,
      bytesIn: s.bytesIn,
    };
  }
}
