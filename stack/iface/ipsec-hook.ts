/**
 * The one place where IPsec meets the core stack (RFC 4301 5: the SPD and SAD sit
 * between IP and the transports). The core calls these three methods and knows
 * nothing else about IPsec; stack/ipsec/ implements them.
 *
 *   input:    every IPv4 packet addressed to the stack, after header checks and
 *             reassembly, before transport demultiplexing. The implementation takes ESP
 *             (protocol 50, UDP 4500) and IKE (UDP 500, 4500) for itself, feeds
 *             decrypted inner packets back into `Stack.input`, and applies the
 *             inbound policy to cleartext (protected traffic must not arrive in the clear).
 *   output:   every packet the stack sends; a packet the policy protects is encrypted
 *             and sent by the implementation, one it discards is dropped.
 *   overhead: bytes IPsec adds on the way to `dst`, taken off the path MTU so TCP's
 *             MSS leaves room for ESP (as Linux's xfrm does).
 */
import type { OffloadMeta } from '../../drivers/device';
import type { Ipv4Repr } from '../wire/ipv4';
import type { ChecksumCaps } from '../wire/checksum';

export interface IpsecHook {
  /** true: the hook consumed the packet (it was IPsec, or the policy dropped it). */
  input(ip: Readonly<Ipv4Repr>, buf: Buffer, ipOff: number, off: number, len: number, caps: ChecksumCaps, now: number): boolean;
  /** true: the hook consumed the packet (sent it protected, or dropped it). */
  output(pkt: Buffer, meta: OffloadMeta | null, now: number): boolean;
  overhead(dst: number): number;
}
