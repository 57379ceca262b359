/**
 * The one thing the core knows about forwarding: a hook in `Stack.input` that sees
 * every IPv4 datagram whose header passed validation, before the stack delivers it
 * locally or drops it as not addressed to it. A router (stack/firewall/) sets it on
 * the stacks of its interfaces; the stack itself never forwards.
 */
import type { OffloadMeta } from '../../drivers/device';
import type { Ipv4Repr } from '../wire/ipv4';

export interface IpInputHook {
  /**
   * `pkt` is the datagram as received (a view the device may reuse after the burst:
   * keep it only after `Stack.claimPacket`, or copy it), `ip` its parsed header (valid
   * during the call only), `local` whether the destination is one of the stack's
   * addresses. Return true when the hook took the datagram (forwarded, answered or
   * dropped): the stack then does nothing more with it. False: the stack goes on as if
   * there were no hook (local delivery, or IpInAddrErrors).
   */
  input(pkt: Buffer, ip: Readonly<Ipv4Repr>, meta: OffloadMeta | null, local: boolean, now: number): boolean;
}
