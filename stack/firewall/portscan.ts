/**
 * Port-scan detection, as ISA Server's intrusion detection reports it: event 15104
 * ("well-known port scan", ports 1-2048) and 15105 ("all port scan") naming the address
 * the packets came from.
 *
 * What is counted is not public; our choices (docs/firewall.md):
 * - only datagrams the packet filter dropped count (what was let in is no attack);
 * - a dropped TCP or UDP datagram touches two ports, its destination port on the
 *   firewall and its source port: a scan varies the first, a server that keeps
 *   sending from new ports to a closed one (the media server of KB 319381, its ports
 *   1024-5000) varies the second. Ports of other protocols are not counted;
 * - per source address, the distinct ports touched within the detection interval
 *   (`intervalMs`, default 60 s: a port not touched again for that long is forgotten);
 * - 15104 when the well-known ones among them reach the well-known threshold, 15105
 *   when all of them reach the all-ports threshold (TMG's defaults: 10 and 20); each
 *   event at most once per address until that address has been quiet for an interval.
 * Bounded: `maxAddresses` sources (the least recently seen is forgotten first) and
 * `maxPortsPerAddress` ports each.
 */

export const EVENT_WELL_KNOWN_PORT_SCAN = 15104;
export const EVENT_ALL_PORT_SCAN = 15105;
export const WELL_KNOWN_PORT_MAX = 2048;

export interface PortScanThresholds {
  wellKnown: number;
  allPorts: number;
}

export interface PortScanEvent {
  id: typeof EVENT_WELL_KNOWN_PORT_SCAN | typeof EVENT_ALL_PORT_SCAN;
  address: number;
  /** Distinct ports (of the kind the event is about) when it fired. */
  ports: number;
  threshold: number;
  /** The first ports counted, ascending (at most 32), for the log. */
  sample: number[];
}

interface Source {
  /** port -> last time touched */
  ports: Map<number, number>;
  lastSeen: number;
  /** How many of `ports` are well-known (kept as they come and go). */
  wellKnown: number;
  lastExpire: number;
  firedWellKnown: boolean;
  firedAll: boolean;
}

export interface PortScanOptions {
  intervalMs?: number;
  maxAddresses?: number;
  maxPortsPerAddress?: number;
}

export class PortScanDetector {
  readonly intervalMs: number;
  readonly maxAddresses: number;
  readonly maxPortsPerAddress: number;
  private readonly sources = new Map<number, Source>();
  /** Events raised so far, by id. */
  readonly raised = { [EVENT_WELL_KNOWN_PORT_SCAN]: 0, [EVENT_ALL_PORT_SCAN]: 0 };

  constructor(
    readonly thresholds: () => PortScanThresholds,
    readonly onEvent: (e: PortScanEvent) => void,
    opts: PortScanOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 60_000;
    this.maxAddresses = opts.maxAddresses ?? 1024;
    this.maxPortsPerAddress = opts.maxPortsPerAddress ?? 4096;
  }

  get trackedAddresses(): number {
    return this.sources.size;
  }

  /** A dropped datagram from `src` (ports -1 for a protocol without ports). */
  dropped(src: number, srcPort: number, dstPort: number, now: number): void {
    if (srcPort < 0 && dstPort < 0) return;
    let s = this.sources.get(src);
    if (s === undefined) {
      if (this.sources.size >= this.maxAddresses) this.forgetOldest();
      s = { ports: new Map(), lastSeen: now, wellKnown: 0, lastExpire: now, firedWellKnown: false, firedAll: false };
      this.sources.set(src, s);
    } else {
      if (now - s.lastSeen >= this.intervalMs) {
        s.firedWellKnown = false;
        s.firedAll = false;
      }
      // Most recently seen last, so the first entry is the one to forget.
      this.sources.delete(src);
      this.sources.set(src, s);
    }
    s.lastSeen = now;
    this.touch(s, dstPort, now);
    this.touch(s, srcPort, now);
    // Forgetting old ports walks them all: at most once a second per source, so a flood
    // of dropped packets costs a map update each, not a walk.
    if (now - s.lastExpire >= 1000) this.expire(s, now);
    const t = this.thresholds();
    const wellKnown = s.wellKnown;
    if (!s.firedWellKnown && wellKnown >= t.wellKnown) {
      s.firedWellKnown = true;
      this.raise(EVENT_WELL_KNOWN_PORT_SCAN, src, wellKnown, t.wellKnown, s, true);
    }
    if (!s.firedAll && s.ports.size >= t.allPorts) {
      s.firedAll = true;
      this.raise(EVENT_ALL_PORT_SCAN, src, s.ports.size, t.allPorts, s, false);
    }
  }

  /** What is tracked for `src` now: distinct ports in the interval. */
  describe(src: number, now: number): { ports: number; wellKnown: number } | null {
    const s = this.sources.get(src);
    if (!s) return null;
    this.expire(s, now);
    return { ports: s.ports.size, wellKnown: s.wellKnown };
  }

  /** Forgets sources quiet for an interval (called from the firewall's housekeeping). */
  sweep(now: number): void {
    for (const [a, s] of this.sources) if (now - s.lastSeen >= this.intervalMs) this.sources.delete(a);
  }

  private touch(s: Source, port: number, now: number): void {
    if (port <= 0) return;
    if (!s.ports.has(port)) {
      if (s.ports.size >= this.maxPortsPerAddress) return;
      if (port <= WELL_KNOWN_PORT_MAX) s.wellKnown++;
    }
    s.ports.set(port, now);
  }

  private expire(s: Source, now: number): void {
    s.lastExpire = now;
    for (const [p, at] of s.ports) {
      if (now - at < this.intervalMs) continue;
      s.ports.delete(p);
      if (p <= WELL_KNOWN_PORT_MAX) s.wellKnown--;
    }
  }

  private forgetOldest(): void {
    const first = this.sources.keys().next();
    if (!first.done) this.sources.delete(first.value);
  }

  private raise(id: PortScanEvent['id'], address: number, ports: number, threshold: number, s: Source, wellKnownOnly: boolean): void {
    this.raised[id]++;
    const sample = [...s.ports.keys()]
      .filter((p) => !wellKnownOnly || p <= WELL_KNOWN_PORT_MAX)
      .sort((a, b) => a - b)
      .slice(0, 32);
    this.onEvent({ id, address, ports, threshold, sample });
  }
}
