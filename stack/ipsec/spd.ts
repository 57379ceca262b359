/**
 * The security policy database (RFC 4301 4.4.1): which traffic must be protected,
 * which may pass in the clear (bypass) and which is dropped (discard).
 *
 * Entries are ordered; the first whose selectors match decides. Selectors are
 * ranges (RFC 4301 4.4.1.1, the same shape as IKEv2 traffic selectors, RFC 7296
 * 3.13.1): an address range, an IP protocol (0 = any) and a port range on each side.
 * "local" is the stack's side, "remote" the peer's: an outbound packet matches with
 * (src, sport) against local, an inbound one with (dst, dport).
 *
 * Negotiated child SAs act as protect entries of their own (the SAD keeps them, see
 * sad.ts); configured entries here come after them. A configured protect entry
 * without a matching SA drops outbound packets (an initiator would start IKE here,
 * RFC 4301 5.1; the responder waits for the peer) and refuses inbound cleartext.
 */
import { formatIpv4 } from '../wire/addr';

export interface Selector {
  /** IP protocol; 0 = any. */
  protocol: number;
  start: number;
  end: number;
  startPort: number;
  endPort: number;
}

export type PolicyAction = 'protect' | 'bypass' | 'discard';

export interface Policy {
  name: string;
  local: Selector;
  remote: Selector;
  action: PolicyAction;
  /** Packets this entry decided, both directions. */
  hits: number;
}

export const ANY_SELECTOR: Selector = { protocol: 0, start: 0, end: 0xffffffff, startPort: 0, endPort: 65535 };

/** Do (addr, port, protocol) fall inside `s`? `port` -1: unknown (a non-first fragment, ICMP): only a full port range matches. */
export function selectorMatches(s: Selector, protocol: number, addr: number, port: number): boolean {
  if (addr < s.start || addr > s.end) return false;
  if (s.protocol !== 0 && s.protocol !== protocol) return false;
  if (s.startPort === 0 && s.endPort === 65535) return true;
  if (port < 0) return false;
  return port >= s.startPort && port <= s.endPort;
}

/** The intersection of two selectors, or null (RFC 7296 2.9 narrowing). */
export function intersect(a: Selector, b: Selector): Selector | null {
  if (a.protocol !== 0 && b.protocol !== 0 && a.protocol !== b.protocol) return null;
  const start = Math.max(a.start, b.start),
    end = Math.min(a.end, b.end);
  const startPort = Math.max(a.startPort, b.startPort),
    endPort = Math.min(a.endPort, b.endPort);
  if (start > end || startPort > endPort) return null;
  return { protocol: a.protocol || b.protocol, start, end, startPort, endPort };
}

/** Is `inner` wholly inside `outer`? */
export function contains(outer: Selector, inner: Selector): boolean {
  return (
    (outer.protocol === 0 || outer.protocol === inner.protocol) &&
    inner.start >= outer.start &&
    inner.end <= outer.end &&
    inner.startPort >= outer.startPort &&
    inner.endPort <= outer.endPort
  );
}

/** "198.18.0.0/24", "198.18.0.5-198.18.0.9", with "[tcp/80]" when not every protocol and port. */
export function formatSelector(s: Selector): string {
  let addr: string;
  const size = s.end - s.start + 1;
  const bits = Math.log2(size);
  if (s.start === s.end) addr = `${formatIpv4(s.start)}/32`;
  else if (Number.isInteger(bits) && s.start % size === 0) addr = `${formatIpv4(s.start)}/${32 - bits}`;
  else addr = `${formatIpv4(s.start)}-${formatIpv4(s.end)}`;
  if (s.protocol === 0 && s.startPort === 0 && s.endPort === 65535) return addr;
  const proto = PROTOCOL_NAMES[s.protocol] ?? String(s.protocol);
  const ports = s.startPort === 0 && s.endPort === 65535 ? '' : s.startPort === s.endPort ? `/${s.startPort}` : `/${s.startPort}-${s.endPort}`;
  return `${addr}[${s.protocol === 0 ? 'any' : proto}${ports}]`;
}

export const PROTOCOL_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp' };

export class Spd {
  readonly entries: Policy[] = [];

  constructor(public defaultAction: PolicyAction = 'bypass') {}

  add(p: Omit<Policy, 'hits'>): Policy {
    const e = { ...p, hits: 0 };
    this.entries.push(e);
    return e;
  }

  /**
   * The first entry matching a packet: `localAddr/localPort` are the stack's side (the
   * source of an outbound packet, the destination of an inbound one).
   */
  lookup(protocol: number, localAddr: number, localPort: number, remoteAddr: number, remotePort: number): Policy | null {
    for (const e of this.entries) {
      if (selectorMatches(e.local, protocol, localAddr, localPort) && selectorMatches(e.remote, protocol, remoteAddr, remotePort)) {
        e.hits++;
        return e;
      }
    }
    return null;
  }

  describe(): { default: PolicyAction; entries: { name: string; local: string; remote: string; action: PolicyAction; hits: number }[] } {
    return {
      default: this.defaultAction,
      entries: this.entries.map((e) => ({ name: e.name, local: formatSelector(e.local), remote: formatSelector(e.remote), action: e.action, hits: e.hits })),
    };
  }
}
