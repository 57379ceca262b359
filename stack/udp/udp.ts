/**
 * UDP (RFC 768): port demultiplexing, ICMP port unreachable for closed ports
 * (RFC 1122 4.1.3.1), ICMP errors delivered to the endpoint they concern.
 */
import type { Counters } from '../counters';
import { CodedError } from '../util/errors';
import { newUdpRepr, parseUdp, UdpError, emitUdp, UDP_HEADER } from '../wire/udp';
import type { ChecksumCaps } from '../wire/checksum';
import { PROTO_UDP } from '../wire/ipv4';

export interface UdpEndpoint {
  readonly port: number;
  /** 0 = any local address. */
  readonly addr: number;
  onMessage(data: Buffer, src: number, srcPort: number, dst: number): void;
  onError(err: CodedError): void;
}

export interface UdpHost {
  readonly counters: Counters;
  /** Sends a transport payload in one or more IP datagrams (fragmented if needed). */
  sendDatagram(protocol: number, src: number, dst: number, payload: Buffer, dontFragment: boolean): boolean;
  sendPortUnreachable(original: Buffer, off: number, len: number): void;
}

export class UdpLayer {
  readonly endpoints = new Map<number, UdpEndpoint>();
  private readonly repr = newUdpRepr();
  private readonly out = newUdpRepr();
  private nextEphemeral = 49152 + Math.floor(Math.random() * 10000);

  constructor(readonly host: UdpHost) {}

  bind(ep: UdpEndpoint): void {
    if (this.endpoints.has(ep.port)) throw new CodedError('EADDRINUSE', `bind EADDRINUSE 0.0.0.0:${ep.port}`);
    this.endpoints.set(ep.port, ep);
  }

  unbind(ep: UdpEndpoint): void {
    if (this.endpoints.get(ep.port) === ep) this.endpoints.delete(ep.port);
  }

  ephemeralPort(): number {
    for (let i = 0; i < 16384; i++) {
      const p = 49152 + ((this.nextEphemeral - 49152 + i) % 16384);
      if (!this.endpoints.has(p)) {
        this.nextEphemeral = p + 1;
        return p;
      }
    }
    throw new CodedError('EADDRINUSE', 'bind EADDRINUSE: no free UDP port');
  }

  /** `ipOff` is where the IP header starts (for the ICMP quote); `caps`: what the device verified. */
  input(src: number, dst: number, buf: Buffer, ipOff: number, off: number, len: number, caps: ChecksumCaps): void {
    const c = this.host.counters;
    const r = this.repr;
    const err = parseUdp(buf, off, len, src, dst, r, caps);
    if (err !== UdpError.None) {
      c.UdpInErrors++;
      if (err === UdpError.BadChecksum) c.UdpInCsumErrors++;
      return;
    }
    const ep = this.endpoints.get(r.dstPort);
    if (!ep || (ep.addr !== 0 && ep.addr !== dst)) {
      c.UdpNoPorts++;
      this.host.sendPortUnreachable(buf, ipOff, off + len - ipOff);
      return;
    }
    c.UdpInDatagrams++;
    ep.onMessage(Buffer.from(buf.subarray(r.payloadOffset, r.payloadOffset + r.payloadLength)), src, r.srcPort, dst);
  }

  send(src: number, srcPort: number, dst: number, dstPort: number, data: Uint8Array): boolean {
    if (data.length > 65507) throw new CodedError('EMSGSIZE', `send EMSGSIZE: ${data.length} bytes is more than a UDP datagram holds (65507)`);
    const pkt = Buffer.allocUnsafe(UDP_HEADER + data.length);
    pkt.set(data, UDP_HEADER);
    const r = this.out;
    r.srcPort = srcPort;
    r.dstPort = dstPort;
    r.payloadLength = data.length;
    emitUdp(pkt, 0, r, src, dst);
    this.host.counters.UdpOutDatagrams++;
    return this.host.sendDatagram(PROTO_UDP, src, dst, pkt, false);
  }

  /** An ICMP error quoting a datagram we sent from `srcPort`. */
  icmpError(srcPort: number, err: CodedError): void {
    const ep = this.endpoints.get(srcPort);
    if (ep) ep.onError(err);
  }

  /** Whether `addr` may have sent from the endpoint on `port` (its address, or any of ours). */
  sentFrom(port: number, addr: number, isLocal: (a: number) => boolean): boolean {
    const ep = this.endpoints.get(port);
    return !!ep && (ep.addr === 0 ? isLocal(addr) : ep.addr === addr);
  }
}
