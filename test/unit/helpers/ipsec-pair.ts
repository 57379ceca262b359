/**
 * Two stacks on the memory link with IPsec: A initiates (stack to stack, the
 * engine's initiator), B responds as `faultstack run --ipsec` does. Virtual clock.
 */
import { parseIpv4 } from '../../../stack/wire/addr';
import { defaultConfig, type IpsecConfig, type PeerConfig } from '../../../stack/ipsec/config';
import { Ipsec } from '../../../stack/ipsec/ipsec';
import type { InitiateOptions, IpsecEvent } from '../../../stack/ipsec/ike/engine';
import type { IkeSa } from '../../../stack/ipsec/ike/ike-sa';
import type { ChildSa } from '../../../stack/ipsec/sad';
import { hostSelector } from '../../../stack/ipsec/ike/negotiate';
import { parseProposal } from '../../../stack/ipsec/transforms';
import { A_IP, B_IP, makePair, runUntil, type Pair } from './pair';
import type { MemoryLinkOptions } from '../../../drivers/memory';

export interface IpsecPair extends Pair {
  ipA: Ipsec;
  ipB: Ipsec;
  cfgA: IpsecConfig;
  cfgB: IpsecConfig;
  eventsA: IpsecEvent[];
  eventsB: IpsecEvent[];
}

export function peer(id: string, psk: string, extra: Partial<PeerConfig> = {}): PeerConfig {
  return { id, auth: 'psk', psk: Buffer.from(psk), localTs: null, remoteTs: 'dynamic', ...extra };
}

export function makeIpsecPair(opts: { link?: MemoryLinkOptions; b?: (c: IpsecConfig) => void; a?: (c: IpsecConfig) => void } = {}): IpsecPair {
  const p = makePair(opts.link ?? {});
  const cfgA = defaultConfig();
  const cfgB = defaultConfig();
  cfgB.localId = 'server@lab';
  cfgB.peers.push(peer('client1@lab', 'labsecret'));
  opts.a?.(cfgA);
  opts.b?.(cfgB);
  // Certificates are judged against the real date (the CA and certificates are made now).
  const ipA = new Ipsec(p.a, cfgA, { wallClock: () => Date.now() });
  const ipB = new Ipsec(p.b, cfgB, { wallClock: () => Date.now() });
  p.a.ipsec = ipA;
  p.b.ipsec = ipB;
  ipA.start(p.clock.now);
  ipB.start(p.clock.now);
  const eventsA: IpsecEvent[] = [],
    eventsB: IpsecEvent[] = [];
  ipA.subscribe((e) => eventsA.push(e));
  ipB.subscribe((e) => eventsB.push(e));
  return { ...p, ipA, ipB, cfgA, cfgB, eventsA, eventsB };
}

export interface Initiated {
  ike: IkeSa;
  result: { ike?: IkeSa; child?: ChildSa | null; failed?: string };
}

/** Starts an initiation from A (client1@lab, labsecret by default) to B; the caller runs the clock. */
export function initiateFromA(p: IpsecPair, o: Partial<InitiateOptions> = {}): Initiated {
  const result: Initiated['result'] = {};
  const ike = p.ipA.initiate({
    local: { addr: A_IP, port: 500 },
    remote: { addr: B_IP, port: 500 },
    id: 'client1@lab',
    psk: Buffer.from('labsecret'),
    remoteId: 'server@lab',
    localTs: [hostSelector(A_IP)],
    remoteTs: [hostSelector(B_IP)],
    onEstablished: (i, c) => {
      result.ike = i;
      result.child = c;
    },
    onFailed: (why) => {
      result.failed = why;
    },
    ...o,
  });
  return { ike, result };
}

/** Initiates and runs until established or failed. */
export async function connect(p: IpsecPair, o: Partial<InitiateOptions> = {}, maxMs = 10_000): Promise<Initiated> {
  const r = initiateFromA(p, o);
  await runUntil(p.clock, () => r.result.ike !== undefined || r.result.failed !== undefined, maxMs);
  return r;
}

export const ike = (s: string) => parseProposal(s, 'ike');
export const esp = (s: string) => parseProposal(s, 'esp');
export { A_IP, B_IP, parseIpv4 };
