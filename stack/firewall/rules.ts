/**
 * Packet-filter rules: what may start a session (out), and what may come in without
 * one (in). First match wins; a packet from outside that no session, no opening made
 * by the Firewall service or an application filter, and no rule allows is dropped
 * (ISA's default: deny).
 *
 *   allow|deny in|out PROTO[/PORT[-PORT]] [from CIDR] [to CIDR]
 *   PROTO: any, tcp, udp, icmp; PORT: the destination port (tcp, udp)
 *
 * `in` rules are about what arrives on the external interface, addressed to the
 * firewall's external address or routed to the internal network; `out` rules about
 * what the internal network sends out (SecureNAT clients).
 */
import { formatIpv4, parseCidr, prefixMask, type Ipv4Cidr } from '../wire/addr';
import { PROTO_ICMP, PROTO_TCP, PROTO_UDP } from '../wire/ipv4';

export type RuleAction = 'allow' | 'deny';
export type RuleDirection = 'in' | 'out';
export type RuleProto = 'any' | 'tcp' | 'udp' | 'icmp';

export interface Rule {
  readonly action: RuleAction;
  readonly direction: RuleDirection;
  readonly proto: RuleProto;
  readonly ports: readonly [number, number] | null;
  readonly from: Ipv4Cidr | null;
  readonly to: Ipv4Cidr | null;
  /** The rule as written, normalised. */
  readonly text: string;
  /** Packets that matched it. */
  hits: number;
}

export class RuleSyntaxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuleSyntaxError';
  }
}

export const RULE_SYNTAX = 'allow|deny in|out any|tcp|udp|icmp[/PORT[-PORT]] [from CIDR] [to CIDR], e.g. "allow in tcp/80 to 198.19.0.1/32"';

const PROTO_NUM: Record<RuleProto, number> = { any: -1, tcp: PROTO_TCP, udp: PROTO_UDP, icmp: PROTO_ICMP };

function cidr(word: string | undefined, what: string): Ipv4Cidr {
  const c = word === undefined ? null : parseCidr(word.includes('/') ? word : `${word}/32`);
  if (!c) throw new RuleSyntaxError(`"${what}" needs an IPv4 address or CIDR, got ${word === undefined ? 'nothing' : JSON.stringify(word)}: ${RULE_SYNTAX}`);
  return { addr: (c.addr & prefixMask(c.prefix)) >>> 0, prefix: c.prefix };
}

export function parseRule(text: string): Rule {
  const w = text.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const bad = (why: string): never => {
    throw new RuleSyntaxError(`bad rule "${text.trim()}": ${why}; a rule is ${RULE_SYNTAX}`);
  };
  const action = w[0];
  if (action !== 'allow' && action !== 'deny') bad('it must start with allow or deny');
  const direction = w[1];
  if (direction !== 'in' && direction !== 'out') bad('the second word must be in or out');
  const [protoWord, portWord] = (w[2] ?? '').split('/');
  if (!['any', 'tcp', 'udp', 'icmp'].includes(protoWord ?? '')) bad(`the protocol must be any, tcp, udp or icmp, not ${JSON.stringify(w[2] ?? '')}`);
  const proto = protoWord as RuleProto;
  let ports: [number, number] | null = null;
  if (portWord !== undefined) {
    if (proto !== 'tcp' && proto !== 'udp') bad('ports go with tcp or udp only');
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(portWord);
    const lo = m ? Number(m[1]) : NaN,
      hi = m ? Number(m[2] ?? m[1]) : NaN;
    if (!m || lo < 1 || hi > 65535 || lo > hi) bad(`the port must be 1..65535 or a range LO-HI, not ${JSON.stringify(portWord)}`);
    ports = [lo, hi];
  }
  let from: Ipv4Cidr | null = null,
    to: Ipv4Cidr | null = null;
  for (let i = 3; i < w.length; i += 2) {
    if (w[i] === 'from' && from === null) from = cidr(w[i + 1], 'from');
    else if (w[i] === 'to' && to === null) to = cidr(w[i + 1], 'to');
    else bad(`unexpected ${JSON.stringify(w[i])}`);
  }
  const parts = [action, direction, ports ? `${proto}/${ports[0] === ports[1] ? ports[0] : `${ports[0]}-${ports[1]}`}` : proto];
  if (from) parts.push('from', `${formatIpv4(from.addr)}/${from.prefix}`);
  if (to) parts.push('to', `${formatIpv4(to.addr)}/${to.prefix}`);
  return { action: action as RuleAction, direction: direction as RuleDirection, proto, ports, from, to, text: parts.join(' '), hits: 0 };
}

function inCidr(a: number, c: Ipv4Cidr | null): boolean {
  if (c === null) return true;
  const m = prefixMask(c.prefix);
  return (a & m) >>> 0 === c.addr;
}

/** The default rule set: SecureNAT clients may go out; nothing comes in unasked. */
export const DEFAULT_RULES: readonly string[] = ['allow out any'];

export class RuleSet {
  readonly rules: Rule[];
  constructor(texts: readonly string[] = DEFAULT_RULES) {
    this.rules = texts.map(parseRule);
  }

  /**
   * First matching rule's action, or null when none matches (the caller's default
   * applies). `count` false: a look that is not a packet the rule decides (no hit).
   */
  match(direction: RuleDirection, proto: number, src: number, dst: number, dstPort: number, count = true): RuleAction | null {
    for (const r of this.rules) {
      if (r.direction !== direction) continue;
      const p = PROTO_NUM[r.proto];
      if (p !== -1 && p !== proto) continue;
      if (r.ports !== null && (dstPort < r.ports[0] || dstPort > r.ports[1])) continue;
      if (!inCidr(src, r.from) || !inCidr(dst, r.to)) continue;
      if (count) r.hits++;
      return r.action;
    }
    return null;
  }

  describe(): { rule: string; hits: number }[] {
    return this.rules.map((r) => ({ rule: r.text, hits: r.hits }));
  }
}
