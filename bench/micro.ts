/**
 * Micro-benchmarks (tinybench): the Internet checksum at several sizes, parse and
 * emit of each header, and the TCP receive fast path (an in-order data segment into an
 * established connection, through Stack.input, with the ACKs it produces).
 */
import { Bench } from 'tinybench';
import type { Device, OffloadMeta } from '../drivers/device';
import { Stack, type Scheduler } from '../stack/stack';
import { checksumAdd, internetChecksum } from '../stack/wire/checksum';
import { emitIpv4Header, newIpv4Repr, parseIpv4Header, PROTO_TCP, PROTO_UDP, readU32, writeU32 } from '../stack/wire/ipv4';
import { asSeq } from '../stack/wire/seq';
import { ACK, PSH, SYN, emitTcp, newTcpRepr, parseTcp, type TcpOptionsOut } from '../stack/wire/tcp';
import { emitUdp, newUdpRepr, parseUdp } from '../stack/wire/udp';
import { finishIcmp, newIcmpRepr, parseIcmp } from '../stack/wire/icmp';
import type { ConnectionOwner } from '../stack/tcp/connection';
import { ImpairDevice } from '../drivers/impair';
import { type PacketImpairSpec, parseImpairment } from '../stack/impair/spec';
import { figure, fmt, progress, type Figure } from './figures';

export interface MicroOptions { quick: boolean }

const SRC = 0xc6120001; // 198.18.0.1
const DST = 0xc6120002; // 198.18.0.2

/** Runs one case synchronously with tinybench; returns operations per second (mean throughput). */
function measure(name: string, fn: () => void, quick: boolean): number {
  const bench = new Bench({ time: quick ? 250 : 1500, iterations: quick ? 5 : 20, throws: true });
  bench.add(name, fn);
  bench.runSync();
  const r = bench.tasks[0].result;
  if (r.state !== 'completed') throw new Error(`micro-benchmark ${name}: ${r.state}`);
  return r.throughput.mean;
}

let sink = 0;

function ipPacket(protocol: number, payloadLength: number): Buffer {
  const b = Buffer.alloc(20 + payloadLength);
  emitIpv4Header(b, 0, {
    src: SRC, dst: DST, protocol, ttl: 64, tos: 0, ident: 1, dontFragment: true, moreFragments: false,
    fragmentOffset: 0, headerLength: 20, totalLength: b.length,
  });
  return b;
}

function tsOptions(): TcpOptionsOut {
  return { mss: -1, wscale: -1, sackPermitted: false, hasTimestamp: true, tsVal: 1000, tsEcr: 2000, sackCount: 1, sack: new Uint32Array([5000, 6000, 0, 0, 0, 0, 0, 0]) };
}

/** A device that drops what it is given and remembers the last packet. */
class NullDevice implements Device {
  readonly name = 'null';
  readonly mtu = 1500;
  onReceive: Device['onReceive'] = null;
  last: Buffer | null = null;
  sent = 0;
  send(p: Buffer): void { this.last = p; this.sent++; }
  flush(): void { /* nothing to write */ }
  close(): void { /* nothing to release */ }
  stats(): Record<string, number> { return { sent: this.sent }; }
}

/** Time stands still; nothing deferred ever runs (the benchmark drives input directly). */
class FrozenScheduler implements Scheduler {
  t = 1000;
  now(): number { return this.t; }
  at(): unknown { return null; }
  cancel(): void { /* no timers */ }
  soon(): void { /* output is flushed by nobody: the device drops it anyway */ }
}

/** RFC 1624 incremental update of a checksum at `at` when a 32-bit field changes from `old` to `now`. */
function patchChecksum(b: Buffer, at: number, old: number, now: number): void {
  let sum = (~((b[at] << 8) | b[at + 1]) & 0xffff) + (~(old >>> 16) & 0xffff) + (~old & 0xffff) + (now >>> 16) + (now & 0xffff);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff;
  b[at] = c >> 8; b[at + 1] = c & 255;
}

/** An established connection inside a Stack on a NullDevice, and a function that feeds it one data segment. */
export function receivePath(payload: number, offloadValid: boolean): { step: () => void; check: () => number } {
  const dev = new NullDevice();
  const sched = new FrozenScheduler();
  const stack = new Stack({ device: dev, scheduler: sched, address: DST, prefix: 24 });
  const listener = stack.tcp.listen(9, 0, 128);
  const o: TcpOptionsOut = { mss: 1460, wscale: 7, sackPermitted: true, hasTimestamp: true, tsVal: 1, tsEcr: 0, sackCount: 0, sack: null };
  const clientIsn = 1_000_000;
  const syn = ipPacket(PROTO_TCP, 40);
  emitTcp(syn, 20, SRC, DST, 40000, 9, asSeq(clientIsn), asSeq(0), SYN, 65535, o, 0);
  stack.input(syn, null, sched.t);
  const synAck = dev.last!;
  const serverIss = readU32(synAck, 24);
  const ack = ipPacket(PROTO_TCP, 32);
  const ao: TcpOptionsOut = { mss: -1, wscale: -1, sackPermitted: false, hasTimestamp: true, tsVal: 2, tsEcr: 0, sackCount: 0, sack: null };
  emitTcp(ack, 20, SRC, DST, 40000, 9, asSeq(clientIsn + 1), asSeq(serverIss + 1), ACK, 65535, ao, 0);
  stack.input(ack, null, sched.t);
  const conn = listener.accept();
  if (!conn) throw new Error('micro: the handshake did not complete');
  let received = 0;
  const owner: ConnectionOwner = {
    onEstablished() {}, onData(d) { received += d.length; }, onPeerFin() {}, onSendSpace() {}, onClosed() {}, unreadBytes: () => 0,
  };
  conn.attach(owner);
  const seg = ipPacket(PROTO_TCP, 32 + payload);
  const dopts: TcpOptionsOut = { mss: -1, wscale: -1, sackPermitted: false, hasTimestamp: true, tsVal: 3, tsEcr: 0, sackCount: 0, sack: null };
  let seq = clientIsn + 1;
  emitTcp(seg, 20, SRC, DST, 40000, 9, asSeq(seq), asSeq(serverIss + 1), ACK | PSH, 65535, dopts, payload);
  const meta: OffloadMeta | null = offloadValid ? { flags: 2, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 } : null;
  return {
    step: () => {
      if (!offloadValid) patchChecksum(seg, 20 + 16, readU32(seg, 24), seq);
      writeU32(seg, 24, seq);
      stack.input(seg, meta, sched.t);
      seq = (seq + payload) >>> 0;
    },
    check: () => received,
  };
}

export async function runMicro(opts: MicroOptions): Promise<Figure[]> {
  const q = opts.quick;
  const out: Figure[] = [];
  const add = (key: string, name: string, hz: number, extra?: { bytes?: number }) => {
    const note = extra?.bytes ? `${fmt((hz * extra.bytes * 8) / 1e9)} Gbit/s of data` : undefined;
    out.push(figure({ group: 'micro', key: `micro.${key}`, name, value: hz, unit: 'ops/s', note }));
    progress(`  micro  ${name.padEnd(46)} ${fmt(hz).padStart(12)} ops/s${note ? `  (${note})` : ''}`);
  };

  for (const size of [20, 64, 576, 1500, 9000, 65535]) {
    const b = Buffer.alloc(size);
    for (let i = 0; i < size; i++) b[i] = (i * 31 + 7) & 255;
    add(`checksum.${size}`, `checksum ${size} B`, measure(`checksum ${size}`, () => { sink ^= checksumAdd(b, 0, size); }, q), { bytes: size });
  }

  const ip = ipPacket(PROTO_TCP, 0);
  const ipr = newIpv4Repr();
  add('ipv4.parse', 'IPv4 header parse (with checksum)', measure('ipv4 parse', () => { sink ^= parseIpv4Header(ip, 0, 20, ipr, false); }, q));
  const ipOut = Buffer.alloc(20);
  const ipRepr = { src: SRC, dst: DST, protocol: PROTO_TCP, ttl: 64, tos: 0, ident: 7, dontFragment: true, moreFragments: false, fragmentOffset: 0, headerLength: 20, totalLength: 20 };
  add('ipv4.emit', 'IPv4 header emit (with checksum)', measure('ipv4 emit', () => { sink ^= emitIpv4Header(ipOut, 0, ipRepr); }, q));

  const topts = tsOptions();
  const tcpPkt = ipPacket(PROTO_TCP, 20 + 24);
  emitTcp(tcpPkt, 20, SRC, DST, 40000, 80, asSeq(1), asSeq(2), ACK, 1000, topts, 0);
  const tr = newTcpRepr();
  add('tcp.parse', 'TCP header parse (TS + SACK options, checksum)', measure('tcp parse', () => { sink ^= parseTcp(tcpPkt, 20, 44, SRC, DST, tr, false); }, q));
  add('tcp.emit', 'TCP header emit (TS + SACK options, checksum)', measure('tcp emit', () => { sink ^= emitTcp(tcpPkt, 20, SRC, DST, 40000, 80, asSeq(1), asSeq(2), ACK, 1000, topts, 0); }, q));

  const udpPkt = ipPacket(PROTO_UDP, 8 + 64);
  emitUdp(udpPkt, 20, SRC, DST, 5000, 7, 64);
  const ur = newUdpRepr();
  add('udp.parse', 'UDP parse (64 B payload, checksum)', measure('udp parse', () => { sink ^= parseUdp(udpPkt, 20, 72, SRC, DST, ur, false); }, q));
  add('udp.emit', 'UDP emit (64 B payload, checksum)', measure('udp emit', () => { sink ^= emitUdp(udpPkt, 20, SRC, DST, 5000, 7, 64); }, q));

  const icmpPkt = Buffer.alloc(64);
  finishIcmp(icmpPkt, 0, 8, 0, 0x12340001, 56);
  const ir = newIcmpRepr();
  add('icmp.parse', 'ICMP echo parse (56 B body, checksum)', measure('icmp parse', () => { sink ^= parseIcmp(icmpPkt, 0, 64, ir) ? 1 : 0; }, q));
  add('icmp.emit', 'ICMP echo emit (56 B body, checksum)', measure('icmp emit', () => { sink ^= finishIcmp(icmpPkt, 0, 0, 0, 0x12340001, 56); }, q));

  for (const [payload, valid] of [[1448, true], [1448, false], [64_000, true]] as const) {
    const rp = receivePath(payload, valid);
    const hz = measure(`rx ${payload}`, rp.step, q);
    if (rp.check() === 0) throw new Error('micro: the receive path delivered nothing');
    const label = `TCP receive fast path, ${payload} B segment${valid ? ' (csum offloaded)' : ' (csum checked)'}`;
    add(`tcp.rx.${payload}.${valid ? 'offload' : 'sw'}`, label, hz, { bytes: payload });
  }
  // The impairment device in the send path: pass-through (no impairment), an impairment
  // that takes nothing, one that takes every packet (netem's loss 1%: 99% go straight on).
  const udp1500 = ipPacket(PROTO_UDP, 1480);
  const direct = new NullDevice();
  const directHz = measure('send direct', () => { direct.send(udp1500); }, q);
  add('impair.send.direct', 'send 1500 B to a device (no ImpairDevice)', directHz);
  for (const [key, words, label] of [
    ['none', null, 'send through an ImpairDevice, no impairment'],
    ['nomatch', 'out --dport 1 loss 1% seed 1', 'send through an ImpairDevice, one impairment, no match'],
    ['match', 'out loss 1% seed 1', 'send through an ImpairDevice, every packet through loss 1%'],
  ] as const) {
    const dev = new ImpairDevice(new NullDevice(), new FrozenScheduler());
    if (words) dev.add(1, parseImpairment(words) as PacketImpairSpec, 1);
    const hz = measure(`send ${key}`, () => { dev.send(udp1500, null); }, q);
    out.push(figure({ group: 'micro', key: `micro.impair.send.${key}`, name: label, value: hz, unit: 'ops/s', note: `${fmt(hz / directHz * 100)}% of a direct send` }));
    progress(`  micro  ${label.padEnd(46)} ${fmt(hz).padStart(12)} ops/s  (${fmt(hz / directHz * 100)}% of a direct send)`);
  }
  void internetChecksum; void sink;
  return out;
}
