/**
 * The security association database (RFC 4301 4.4.2): every child SA in use, found by
 * its inbound SPI (for ESP input) or by its traffic selectors (for output, acting as
 * the SPD entry the negotiation created, RFC 4301 4.4.1 "SPD cache").
 *
 * A child SA is a pair of ESP SAs (inbound with the SPI we chose, outbound with the
 * peer's) plus what IKE negotiated: mode, encapsulation, selectors, and the peer's
 * proven identity with the outer addresses and time it was set up. The identity is
 * first class: the NLB fault keys its per-client state on it.
 */
import { formatIpv4 } from '../wire/addr';
import type { EspSa } from './esp';
import { formatSelector, intersect, selectorMatches, type Selector } from './spd';
import { suiteName, type ChosenSuite } from './transforms';

/** The peer identity IKE_AUTH proved (IDi, RFC 7296 3.5), as type and text. */
export interface PeerIdentity {
  /** ID type (IdType): 1 IPv4, 2 FQDN, 3 RFC822, 11 KEY_ID... */
  type: number;
  /** Text form: "client1@lab", "host.example", "198.18.50.1", a hex KEY_ID. */
  value: string;
}

export interface Endpoint {
  addr: number;
  port: number;
}

export type ChildState = 'installed' | 'rekeyed' | 'deleted';

export interface ChildSaInit {
  name: string;
  ikeSaId: number;
  identity: PeerIdentity;
  mode: 'tunnel' | 'transport';
  /** UDP encapsulation (RFC 3948) with the ports in use; null: ESP as IP protocol 50. */
  encap: boolean;
  local: Endpoint;
  remote: Endpoint;
  localTs: Selector[];
  remoteTs: Selector[];
  inbound: EspSa;
  outbound: EspSa;
  suite: ChosenSuite;
  createdAt: number;
  /** Hard lifetime: the SA is deleted at this time (ms, Infinity: none). */
  expiresAt: number;
  rekeyOf?: number;
}

export class ChildSa implements ChildSaInit {
  readonly id: number;
  name!: string;
  ikeSaId!: number;
  identity!: PeerIdentity;
  mode!: 'tunnel' | 'transport';
  encap!: boolean;
  local!: Endpoint;
  remote!: Endpoint;
  localTs!: Selector[];
  remoteTs!: Selector[];
  inbound!: EspSa;
  outbound!: EspSa;
  suite!: ChosenSuite;
  createdAt!: number;
  expiresAt!: number;
  rekeyOf?: number;
  state: ChildState = 'installed';
  /** A newer sending SA's selectors overlap this one's (a rekey, or overlapping peers): output must search. */
  shadowed = false;
  /** Used for output (false for the new SA of a rekey we answered, until it carries traffic). */
  outboundActive = true;

  constructor(id: number, init: ChildSaInit) {
    this.id = id;
    Object.assign(this, init);
  }

  /** Does an outbound packet (stack's side local) fall under this SA's selectors? */
  coversOutbound(protocol: number, src: number, sport: number, dst: number, dport: number): boolean {
    return anyMatches(this.localTs, protocol, src, sport) && anyMatches(this.remoteTs, protocol, dst, dport);
  }

  /** Does an inbound packet (peer's side remote) fall under them? */
  coversInbound(protocol: number, src: number, sport: number, dst: number, dport: number): boolean {
    return anyMatches(this.remoteTs, protocol, src, sport) && anyMatches(this.localTs, protocol, dst, dport);
  }

  describe(now: number) {
    const i = this.inbound.stats,
      o = this.outbound.stats;
    return {
      id: this.id,
      name: this.name,
      ikeSa: this.ikeSaId,
      state: this.state,
      identity: this.identity.value,
      spiIn: hex32(this.inbound.spi),
      spiOut: hex32(this.outbound.spi),
      mode: this.mode,
      encap: this.encap ? 'udp' : 'esp',
      local: `${formatIpv4(this.local.addr)}${this.encap ? `:${this.local.port}` : ''}`,
      remote: `${formatIpv4(this.remote.addr)}${this.encap ? `:${this.remote.port}` : ''}`,
      localTs: this.localTs.map(formatSelector).join(','),
      remoteTs: this.remoteTs.map(formatSelector).join(','),
      suite: suiteName(this.suite),
      ageMs: Math.round(now - this.createdAt),
      bytesIn: i.bytes,
      packetsIn: i.packets,
      bytesOut: o.bytes,
      packetsOut: o.packets,
      replayDrops: i.replayDrops,
      integrityFailures: i.integrityFailures,
      replayWindow: this.inbound.replay?.size ?? 0,
    };
  }
}

function overlaps(a: ChildSa, b: ChildSa): boolean {
  const some = (x: Selector[], y: Selector[]) => x.some((s) => y.some((t) => intersect(s, t) !== null));
  return some(a.localTs, b.localTs) && some(a.remoteTs, b.remoteTs);
}

function anyMatches(list: Selector[], protocol: number, addr: number, port: number): boolean {
  for (let i = 0; i < list.length; i++) if (selectorMatches(list[i]!, protocol, addr, port)) return true;
  return false;
}

export function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}

export class Sad {
  private readonly byInboundSpi = new Map<number, ChildSa>();
  /** Installed children, oldest first: output picks the newest that matches (after a rekey, the new SA). */
  private readonly list: ChildSa[] = [];
  private nextId = 1;
  /** The SA the last outbound packet used: a flow's packets keep finding it first. */
  private lastOut: ChildSa | null = null;
  /** Changes whenever an SA is installed, removed or starts sending (for caches of lookups). */
  version = 0;

  constructor(private readonly random: () => number) {}

  get size(): number {
    return this.list.length;
  }

  /** A fresh inbound SPI: random, not in use, not in the reserved range 1-255 (RFC 4303 2.1). */
  allocateSpi(): number {
    for (;;) {
      const spi = this.random() >>> 0;
      if (spi >= 256 && !this.byInboundSpi.has(spi) && !this.reserved.has(spi)) {
        this.reserved.add(spi);
        return spi;
      }
    }
  }
  /** SPIs handed out in a response whose SA is not installed yet. */
  private readonly reserved = new Set<number>();
  releaseSpi(spi: number): void {
    this.reserved.delete(spi);
  }

  /**
   * Installs a child SA. `outboundActive` false: the SA receives but does not send yet
   * (the responder of a rekey, RFC 7296 2.8: it SHOULD wait for traffic on the new SA or
   * the old one's delete); `activate` switches it on.
   */
  install(init: ChildSaInit, outboundActive = true): ChildSa {
    const c = new ChildSa(this.nextId++, init);
    c.outboundActive = outboundActive;
    this.reserved.delete(init.inbound.spi);
    this.byInboundSpi.set(init.inbound.spi, c);
    this.list.push(c);
    if (outboundActive) this.shadowOlder(c);
    this.version++;
    return c;
  }

  /** The new SA of a rekey starts sending; the one it replaced stops. */
  activate(c: ChildSa): void {
    if (c.outboundActive || c.state === 'deleted') return;
    c.outboundActive = true;
    this.version++;
    if (c.rekeyOf !== undefined) {
      const old = this.list.find((x) => x.id === c.rekeyOf);
      if (old) {
        old.outboundActive = false;
        this.unshadow(old);
      }
    }
    this.shadowOlder(c);
  }

  remove(c: ChildSa): void {
    if (this.byInboundSpi.get(c.inbound.spi) === c) this.byInboundSpi.delete(c.inbound.spi);
    const i = this.list.indexOf(c);
    if (i >= 0) this.list.splice(i, 1);
    if (this.lastOut === c) this.lastOut = null;
    const wasActive = c.outboundActive;
    this.version++;
    c.state = 'deleted';
    c.outboundActive = false;
    if (wasActive) this.unshadow(c);
    // The replacement of a deleted SA sends from now on.
    for (const x of this.list) if (x.rekeyOf === c.id && !x.outboundActive) this.activate(x);
  }

  private shadowOlder(c: ChildSa): void {
    for (const old of this.list) {
      if (old === c) break;
      if (old.outboundActive && !old.shadowed && overlaps(old, c)) old.shadowed = true;
    }
  }

  /** `gone` stopped sending: the SAs it shadowed may be the newest of their kind again. */
  private unshadow(gone: ChildSa): void {
    for (let j = 0; j < this.list.length; j++) {
      const x = this.list[j]!;
      if (!x.shadowed || !overlaps(x, gone)) continue;
      let still = false;
      for (let k = j + 1; k < this.list.length && !still; k++) {
        const y = this.list[k]!;
        still = y.outboundActive && overlaps(x, y);
      }
      x.shadowed = still;
    }
  }

  byInbound(spi: number): ChildSa | undefined {
    return this.byInboundSpi.get(spi);
  }

  all(): readonly ChildSa[] {
    return this.list;
  }

  /** The SA that protects an outbound packet, or null: the newest sending SA whose selectors cover it. */
  outbound(protocol: number, src: number, sport: number, dst: number, dport: number): ChildSa | null {
    // The cached SA answers when it covers the packet and no newer sending SA overlaps it
    // (then no newer one can cover this packet either).
    const last = this.lastOut;
    if (last !== null && !last.shadowed && last.outboundActive && last.coversOutbound(protocol, src, sport, dst, dport)) return last;
    for (let i = this.list.length - 1; i >= 0; i--) {
      const c = this.list[i]!;
      if (c.outboundActive && c.coversOutbound(protocol, src, sport, dst, dport)) {
        this.lastOut = c;
        return c;
      }
    }
    return null;
  }

  /** Is there an SA whose selectors say this inbound cleartext packet should have come protected? */
  inboundCovered(protocol: number, src: number, sport: number, dst: number, dport: number): ChildSa | null {
    for (let i = this.list.length - 1; i >= 0; i--) {
      const c = this.list[i]!;
      if (c.state !== 'deleted' && c.coversInbound(protocol, src, sport, dst, dport)) return c;
    }
    return null;
  }
}
