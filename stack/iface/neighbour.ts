/**
 * The neighbour table: IPv4 address -> MAC address, learnt with ARP (RFC 826), with the
 * states and timers of Linux's neighbour subsystem (net/core/neighbour.c, the NUD_*
 * states of include/net/neighbour.h) and the host requirements of RFC 1122 2.3.2.
 *
 *   (none) --packet--> INCOMPLETE: broadcast request now, again every retrans_time,
 *                      mcast_solicit requests in all; packets wait in a bounded queue
 *   INCOMPLETE --reply--> REACHABLE (a unicast reply) or STALE (anything else): queue sent
 *   INCOMPLETE --mcast_solicit requests unanswered--> FAILED: every queued packet is
 *                      reported unreachable (the interface turns that into EHOSTUNREACH)
 *   REACHABLE --reachable_time without a confirmation--> STALE (no traffic needed)
 *   STALE --packet--> DELAY (the packet goes out with the cached MAC)
 *   DELAY --confirmation within delay_first_probe_time--> REACHABLE, else --> PROBE
 *   PROBE: unicast requests to the cached MAC every retrans_time (RFC 1122 2.3.2.1's
 *          unicast poll), ucast_solicit in all; a reply --> REACHABLE, none --> FAILED
 *   FAILED --packet--> INCOMPLETE again (resolution starts over)
 *
 * Defaults are Linux's for ARP (`ip ntable show dev eth0`), in DEFAULT_NEIGH_PARAMS.
 * Differences, on purpose: reachable_time is drawn once per table from
 * [base/2, 3*base/2) and redrawn every 300 s as Linux does, but there is no upper-layer
 * confirmation (Linux's TCP calls dst_confirm on forward progress): a busy connection's
 * neighbour goes STALE -> DELAY -> PROBE every ~35 s and costs one unicast request and
 * reply. The queue is bounded both in packets (unres_qlen 101) and in bytes of packet
 * (unres_qlen_bytes 212992; Linux counts skb truesize): when full, the oldest packet is
 * dropped and counted (unresolved_discards), as __neigh_event_send does. Entries are
 * created only by our own resolutions and by ARP requests that ask for one of our
 * addresses (neigh_event_ns), never by unsolicited replies or gratuitous ARP
 * (arp_accept 0); those only update an existing entry.
 *
 * Time is passed in (ms); nothing here reads a clock. Randomness (the reachable time)
 * comes from the `random` function given, so tests are deterministic.
 */
import { Timer, TimerQueue } from '../timers';
import { formatIpv4 } from '../wire/addr';
import { formatMac, MacAddr } from '../wire/ethernet';

export const enum Nud {
  Incomplete = 1,
  Reachable = 2,
  Stale = 3,
  Delay = 4,
  Probe = 5,
  Failed = 6,
}

export const NUD_NAMES: Record<Nud, string> = {
  [Nud.Incomplete]: 'INCOMPLETE',
  [Nud.Reachable]: 'REACHABLE',
  [Nud.Stale]: 'STALE',
  [Nud.Delay]: 'DELAY',
  [Nud.Probe]: 'PROBE',
  [Nud.Failed]: 'FAILED',
};

export interface NeighbourParams {
  /** base_reachable_time_ms: REACHABLE lasts a random time in [base/2, 3*base/2). */
  baseReachableTimeMs: number;
  /** retrans_time_ms: between two requests for the same address. */
  retransTimeMs: number;
  /** delay_first_probe_time: how long DELAY waits for a confirmation before probing. */
  delayFirstProbeTimeMs: number;
  /** mcast_solicit: broadcast requests while INCOMPLETE before giving up. */
  mcastSolicit: number;
  /** ucast_solicit: unicast requests in PROBE before giving up. */
  ucastSolicit: number;
  /** unres_qlen: packets queued per unresolved neighbour. */
  unresQlen: number;
  /** unres_qlen_bytes: bytes (of packet) queued per unresolved neighbour. */
  unresQlenBytes: number;
  /** locktime: an answer within this long after the last update does not replace the MAC (the first of several replies wins). */
  locktimeMs: number;
  /** gc_stale_time: STALE or FAILED entries unused this long may be collected. */
  gcStaleTimeMs: number;
  /** gc_thresh1: below this many entries nothing is collected. */
  gcThresh1: number;
  /** gc_thresh3: the table never holds more. */
  gcThresh3: number;
}

export const DEFAULT_NEIGH_PARAMS: Readonly<NeighbourParams> = Object.freeze({
  baseReachableTimeMs: 30_000,
  retransTimeMs: 1000,
  delayFirstProbeTimeMs: 5000,
  mcastSolicit: 3,
  ucastSolicit: 3,
  unresQlen: 101,
  unresQlenBytes: 212_992,
  locktimeMs: 1000,
  gcStaleTimeMs: 60_000,
  gcThresh1: 128,
  gcThresh3: 1024,
});

/** Linux redraws reachable_time from base_reachable_time this often (neigh_periodic_work). */
const REACHABLE_REDRAW_MS = 300_000;
/** A forced collection (table full) spares entries updated within this long (neigh_forced_gc: 5 s). */
const FORCED_GC_SPARE_MS = 5000;

/** What the table needs from the interface it serves. */
export interface NeighbourHost<P> {
  /**
   * Send an ARP request for `target`: broadcast when `unicastTo` is null, else to that
   * MAC (PROBE). `about` is a packet waiting for the answer, or null; its source address
   * may pick the request's sender address.
   */
  solicit(target: number, unicastTo: MacAddr | null, about: P | null, now: number): void;
  /** The neighbour resolved: send a packet that waited for it. */
  transmit(packet: P, mac: MacAddr, now: number): void;
  /** Resolution failed: a packet that waited is dropped and its sender told (EHOSTUNREACH). */
  unreachable(packet: P, target: number, now: number): void;
  /** Bytes a queued packet counts for against unres_qlen_bytes. */
  sizeOf(packet: P): number;
  /** A resolution gave up (INCOMPLETE or PROBE ran out of requests); `waiting` packets are reported next. */
  resolutionFailed?(target: number, waiting: number, now: number): void;
}

export interface NeighbourCounters {
  /** Entries created. */
  allocs: number;
  destroys: number;
  lookups: number;
  hits: number;
  /** Resolutions that failed (INCOMPLETE or PROBE ran out of requests). */
  res_failed: number;
  /** Requests for one of our addresses seen, broadcast and unicast. */
  rcv_probes_mcast: number;
  rcv_probes_ucast: number;
  periodic_gc_runs: number;
  forced_gc_runs: number;
  /** Packets dropped from a full resolution queue (oldest first). */
  unresolved_discards: number;
  /** Entries that could not be created: the table held gc_thresh3 and nothing could go. */
  table_fulls: number;
  /** Requests we sent: broadcast while INCOMPLETE, unicast while PROBE. */
  solicits_mcast: number;
  solicits_ucast: number;
}

class Entry<P> {
  mac: MacAddr = 0;
  state: Nud = Nud.Incomplete;
  /** Requests sent in the current INCOMPLETE or PROBE phase. */
  probes = 0;
  /** Last confirmation of reachability (a unicast reply). */
  confirmed = -Infinity;
  /** Last change of state or MAC. */
  updated: number;
  /** Last packet sent through it. */
  used: number;
  readonly queue: P[] = [];
  queueBytes = 0;
  readonly timer: Timer;
  constructor(
    readonly addr: number,
    now: number,
    fire: (e: Entry<P>, now: number) => void,
  ) {
    this.updated = now;
    this.used = now;
    this.timer = new Timer((t) => fire(this, t));
  }
}

export interface NeighbourRow {
  dst: string;
  lladdr: string | null;
  state: string;
  probes: number;
  queued: number;
  /** ms since the last confirmation (null: never confirmed). */
  confirmedAgoMs: number | null;
  usedAgoMs: number;
  updatedAgoMs: number;
}

export class NeighbourTable<P> {
  readonly counters: NeighbourCounters = {
    allocs: 0,
    destroys: 0,
    lookups: 0,
    hits: 0,
    res_failed: 0,
    rcv_probes_mcast: 0,
    rcv_probes_ucast: 0,
    periodic_gc_runs: 0,
    forced_gc_runs: 0,
    unresolved_discards: 0,
    table_fulls: 0,
    solicits_mcast: 0,
    solicits_ucast: 0,
  };
  readonly timers = new TimerQueue();
  readonly params: NeighbourParams;
  private readonly entries = new Map<number, Entry<P>>();
  private last: Entry<P> | null = null;
  private reachableTime: number;
  private reachableDrawnAt: number;
  private readonly gcTimer: Timer;

  constructor(
    private readonly host: NeighbourHost<P>,
    now: number,
    params: Partial<NeighbourParams> = {},
    private readonly random: () => number = Math.random,
  ) {
    this.params = { ...DEFAULT_NEIGH_PARAMS, ...params };
    this.reachableTime = this.drawReachableTime();
    this.reachableDrawnAt = now;
    this.gcTimer = new Timer((t) => this.periodicGc(t));
    // Linux runs neigh_periodic_work every base_reachable_time / 2.
    this.timers.arm(this.gcTimer, now + this.params.baseReachableTimeMs / 2);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The REACHABLE lifetime now in force (ms). */
  get currentReachableTime(): number {
    return this.reachableTime;
  }

  /** Earliest time `run` has work (Infinity: none). */
  nextDeadline(): number {
    return this.timers.next();
  }

  /** Runs every timer due at `now`. */
  run(now: number): void {
    this.timers.run(now);
  }

  /** The state of `addr`'s entry, or null. */
  state(addr: number): Nud | null {
    return this.entries.get(addr)?.state ?? null;
  }

  /** The MAC of a usable entry (REACHABLE, STALE, DELAY, PROBE), or null. */
  macOf(addr: number): MacAddr | null {
    const e = this.entries.get(addr);
    return e && e.state !== Nud.Incomplete && e.state !== Nud.Failed ? e.mac : null;
  }

  /**
   * The transmit path, first step: the MAC to send to `addr` now, or -1 when there is none
   * yet (then `enqueue` the packet). A STALE entry is used, and moves to DELAY.
   */
  output(addr: number, now: number): MacAddr {
    const c = this.counters;
    c.lookups++;
    const last = this.last;
    const e = last !== null && last.addr === addr ? last : this.entries.get(addr);
    if (e === undefined) return -1;
    this.last = e;
    switch (e.state) {
      case Nud.Reachable:
      case Nud.Delay:
      case Nud.Probe:
        c.hits++;
        e.used = now;
        return e.mac;
      case Nud.Stale:
        // First use of a stale entry: send with it, and look for proof within a while.
        c.hits++;
        e.used = now;
        this.enter(e, Nud.Delay, now);
        this.timers.arm(e.timer, now + this.params.delayFirstProbeTimeMs);
        return e.mac;
      default:
        return -1;
    }
  }

  /**
   * The transmit path, second step: `packet` waits for `addr` (after `output` said -1).
   * Creates the entry and starts resolution if needed; a FAILED entry starts over
   * (__neigh_event_send). When the table is full, the packet is lost (table_fulls).
   */
  enqueue(addr: number, packet: P, now: number): void {
    let e = this.entries.get(addr);
    if (e === undefined) {
      const fresh = this.create(addr, now);
      if (fresh === null) return;
      e = fresh;
      this.last = e;
    }
    e.used = now;
    if (e.state === Nud.Incomplete && e.probes > 0) {
      this.enqueue1(e, packet);
      return;
    }
    if (e.state === Nud.Incomplete || e.state === Nud.Failed) {
      this.startResolution(e, packet, now);
      return;
    }
    // Usable after all (resolved in between): the caller should have sent it; send it now.
    this.host.transmit(packet, e.mac, now);
  }

  /**
   * What an ARP packet from `addr` at `mac` says (RFC 826's merge step, Linux's
   * arp_process + neigh_update). `reply`: an ARP reply sent to our unicast MAC, which
   * confirms reachability; anything else (a request, a broadcast reply) only says where
   * the address is (STALE). `forUs`: a request asking for one of our addresses, which
   * creates the entry if there is none (the asker will talk to us next).
   * `gratuitous`: may change the MAC even within locktime.
   */
  learn(addr: number, mac: MacAddr, how: { reply: boolean; forUs: boolean; gratuitous: boolean }, now: number): void {
    let e = this.entries.get(addr);
    if (e === undefined) {
      if (!how.forUs) return; // arp_accept 0: unsolicited answers create nothing
      const fresh = this.create(addr, now);
      if (fresh === null) return;
      e = fresh;
      e.mac = mac;
      this.enter(e, how.reply ? Nud.Reachable : Nud.Stale, now);
      if (how.reply) this.confirm(e, now);
      return;
    }
    const newState = how.reply ? Nud.Reachable : Nud.Stale;
    if (e.state === Nud.Incomplete || e.state === Nud.Failed) {
      e.mac = mac;
      this.timers.disarm(e.timer);
      this.enter(e, newState, now);
      if (how.reply) this.confirm(e, now);
      this.flushQueue(e, now);
      return;
    }
    if (mac !== e.mac) {
      // Several different answers back to back: the first one wins (locktime), unless
      // the host announced itself (gratuitous ARP), which is how a moved address says so.
      if (!how.gratuitous && now < e.updated + this.params.locktimeMs) return;
      e.mac = mac;
      this.timers.disarm(e.timer);
      this.enter(e, newState, now);
      if (how.reply) this.confirm(e, now);
      return;
    }
    // Same MAC. A STALE-level update never downgrades a better state (neigh_update keeps
    // the old state when the address is unchanged); a confirmation makes it REACHABLE.
    if (how.reply) {
      this.timers.disarm(e.timer);
      if (e.state !== Nud.Reachable) this.enter(e, Nud.Reachable, now);
      this.confirm(e, now);
    }
  }

  /** Forgets one entry (its queued packets are reported unreachable). */
  delete(addr: number, now: number): boolean {
    const e = this.entries.get(addr);
    if (!e) return false;
    this.failQueue(e, now);
    this.destroy(e);
    return true;
  }

  rows(now: number): NeighbourRow[] {
    const out: NeighbourRow[] = [];
    for (const e of this.entries.values()) {
      const known = e.state !== Nud.Incomplete && !(e.state === Nud.Failed && e.mac === 0);
      out.push({
        dst: formatIpv4(e.addr),
        lladdr: known && e.state !== Nud.Failed ? formatMac(e.mac) : null,
        state: NUD_NAMES[e.state],
        probes: e.probes,
        queued: e.queue.length,
        confirmedAgoMs: Number.isFinite(e.confirmed) ? Math.round(now - e.confirmed) : null,
        usedAgoMs: Math.round(now - e.used),
        updatedAgoMs: Math.round(now - e.updated),
      });
    }
    return out.sort((a, b) => a.dst.localeCompare(b.dst, 'en', { numeric: true }));
  }

  // ------------------------------------------------------------------ internals

  private drawReachableTime(): number {
    // neigh_rand_reach_time: uniform in [base/2, 3*base/2).
    const base = this.params.baseReachableTimeMs;
    return base / 2 + Math.floor(this.random() * base);
  }

  private create(addr: number, now: number): Entry<P> | null {
    if (this.entries.size >= this.params.gcThresh3) {
      this.forcedGc(now);
      if (this.entries.size >= this.params.gcThresh3) {
        this.counters.table_fulls++;
        return null;
      }
    }
    const e = new Entry<P>(addr, now, (x, t) => this.onTimer(x, t));
    this.entries.set(addr, e);
    this.counters.allocs++;
    return e;
  }

  private destroy(e: Entry<P>): void {
    this.timers.disarm(e.timer);
    this.entries.delete(e.addr);
    if (this.last === e) this.last = null;
    this.counters.destroys++;
  }

  private enter(e: Entry<P>, state: Nud, now: number): void {
    e.state = state;
    e.updated = now;
    if (state === Nud.Incomplete || state === Nud.Probe) e.probes = 0;
  }

  private confirm(e: Entry<P>, now: number): void {
    e.confirmed = now;
    if (now - this.reachableDrawnAt >= REACHABLE_REDRAW_MS) {
      this.reachableTime = this.drawReachableTime();
      this.reachableDrawnAt = now;
    }
    this.timers.arm(e.timer, now + this.reachableTime);
  }

  private startResolution(e: Entry<P>, packet: P, now: number): void {
    this.enter(e, Nud.Incomplete, now);
    this.enqueue1(e, packet);
    this.solicit(e, now);
  }

  private solicit(e: Entry<P>, now: number): void {
    e.probes++;
    const unicast = e.state === Nud.Probe;
    if (unicast) this.counters.solicits_ucast++;
    else this.counters.solicits_mcast++;
    this.timers.arm(e.timer, now + this.params.retransTimeMs);
    this.host.solicit(e.addr, unicast ? e.mac : null, e.queue.length > 0 ? e.queue[e.queue.length - 1]! : null, now);
  }

  private enqueue1(e: Entry<P>, packet: P): void {
    const size = this.host.sizeOf(packet);
    const p = this.params;
    // Make room: the oldest packets go first (a resolution that takes long keeps the newest).
    while (e.queue.length > 0 && (e.queue.length + 1 > p.unresQlen || e.queueBytes + size > p.unresQlenBytes)) {
      const old = e.queue.shift()!;
      e.queueBytes -= this.host.sizeOf(old);
      this.counters.unresolved_discards++;
    }
    if (size > p.unresQlenBytes || p.unresQlen < 1) {
      this.counters.unresolved_discards++;
      return;
    }
    e.queue.push(packet);
    e.queueBytes += size;
  }

  private flushQueue(e: Entry<P>, now: number): void {
    if (e.queue.length === 0) return;
    const q = e.queue.splice(0, e.queue.length);
    e.queueBytes = 0;
    e.used = now;
    for (const pkt of q) this.host.transmit(pkt, e.mac, now);
  }

  private failQueue(e: Entry<P>, now: number): void {
    if (e.queue.length === 0) return;
    const q = e.queue.splice(0, e.queue.length);
    e.queueBytes = 0;
    for (const pkt of q) this.host.unreachable(pkt, e.addr, now);
  }

  private onTimer(e: Entry<P>, now: number): void {
    const p = this.params;
    switch (e.state) {
      case Nud.Reachable:
        if (now >= e.confirmed + this.reachableTime) this.enter(e, Nud.Stale, now);
        else this.timers.arm(e.timer, e.confirmed + this.reachableTime);
        return;
      case Nud.Delay:
        if (now < e.confirmed + p.delayFirstProbeTimeMs) {
          // Confirmed while we waited: reachable again, for what is left of its time.
          this.enter(e, Nud.Reachable, now);
          this.timers.arm(e.timer, e.confirmed + this.reachableTime);
          return;
        }
        this.enter(e, Nud.Probe, now);
        this.solicit(e, now);
        return;
      case Nud.Incomplete:
      case Nud.Probe: {
        const max = e.state === Nud.Incomplete ? p.mcastSolicit : p.ucastSolicit;
        if (e.probes >= max) {
          this.counters.res_failed++;
          this.enter(e, Nud.Failed, now);
          this.host.resolutionFailed?.(e.addr, e.queue.length, now);
          this.failQueue(e, now);
          return;
        }
        this.solicit(e, now);
        return;
      }
      default:
        return;
    }
  }

  private periodicGc(now: number): void {
    this.counters.periodic_gc_runs++;
    if (this.entries.size >= this.params.gcThresh1) {
      for (const e of [...this.entries.values()]) {
        if ((e.state === Nud.Stale || e.state === Nud.Failed) && now - e.used >= this.params.gcStaleTimeMs) this.destroy(e);
      }
    }
    this.timers.arm(this.gcTimer, now + this.params.baseReachableTimeMs / 2);
  }

  private forcedGc(now: number): void {
    this.counters.forced_gc_runs++;
    for (const e of [...this.entries.values()]) {
      if (e.state === Nud.Incomplete || e.state === Nud.Probe || e.state === Nud.Delay) continue;
      if (now - e.updated < FORCED_GC_SPARE_MS && e.state !== Nud.Failed) continue;
      this.failQueue(e, now);
      this.destroy(e);
    }
  }
}
