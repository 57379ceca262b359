/**
 * Micro-benchmarks (tinybench): the Internet checksum at several sizes, parse and
 * emit of each header, and the TCP receive fast path (an in-order data segment into an
 * established connection, through Stack.input, with the ACKs it produces).
 */
import { Bench } from 'tinybench';
import { VirtioNetHdr, type Device, type OffloadMeta } from '../drivers/device';
import { Stack, type Scheduler } from '../stack/stack';
import { checksumAdd, internetChecksum } from '../stack/wire/checksum';
import { emitIpv4Header, newIpv4Repr, parseIpv4Header, PROTO_TCP, PROTO_UDP } from '../stack/wire/ipv4';
import { readU32, writeU32 } from '../stack/wire/bytes';
import { asSeq } from '../stack/wire/seq';
import { ACK, PSH, SYN, emitTcp, newTcpRepr, parseTcp, type TcpRepr } from '../stack/wire/tcp';
import { emitUdp, newUdpRepr, parseUdp } from '../stack/wire/udp';
import { ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, emitIcmp, newIcmpRepr, parseIcmp } from '../stack/wire/icmp';
import type { ConnectionOwner } from '../stack/tcp/connection';
import { ImpairDevice } from '../stack/impair/device';
import { type PacketImpairSpec, parseImpairment } from '../stack/impair/spec';
import { figure, fmt, progress, type Figure } from './figures';

export interface MicroOptions {
  quick: boolean;
}

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
    src: SRC,
    dst: DST,
    protocol,
    ttl: 64,
    tos: 0,
    ident: 1,
    dontFragment: true,
    moreFragments: false,
    fragmentOffset: 0,
    headerLength: 20,
    totalLength: b.length,
  });
  return b;
}

/** A TCP representation to emit: `fields` over a fresh one (no options unless given). */
function tcp(fields: Partial<TcpRepr>): TcpRepr {
  return Object.assign(newTcpRepr(), fields);
}

/** An ACK with timestamps and one SACK block: the options of a typical segment during recovery. */
function tsSackSegment(): TcpRepr {
  return tcp({
    srcPort: 40000,
    dstPort: 80,
    seq: asSeq(1),
    ack: asSeq(2),
    flags: ACK,
    window: 1000,
    hasTimestamp: true,
    tsVal: 1000,
    tsEcr: 2000,
    sackCount: 1,
    sack: new Uint32Array([5000, 6000, 0, 0, 0, 0, 0, 0]),
  });
}

/** A device that drops what it is given and remembers the last packet. */
class NullDevice implements Device {
  readonly name = 'null';
  readonly mtu = 1500;
  onReceive: Device['onReceive'] = null;
  last: Buffer | null = null;
  sent = 0;
  send(p: Buffer): void {
    this.last = p;
    this.sent++;
  }
  flush(): void {
    /* nothing to write */
  }
  close(): void {
    /* nothing to release */
  }
  stats(): Record<string, number> {
    return { sent: this.sent };
  }
}

/** Time stands still; nothing deferred ever runs (the benchmark drives input directly). */
class FrozenScheduler implements Scheduler {
  t = 1000;
  now(): number {
    return this.t;
  }
  at(): unknown {
    return null;
  }
  cancel(): void {
    /* no timers */
  }
  soon(): void {
    /* output is flushed by nobody: the device drops it anyway */
  }
}

/** RFC 1624 incremental update of a checksum at `at` when a 32-bit field changes from `old` to `now`. */
function patchChecksum(b: Buffer, at: number, old: number, now: number): void {
  let sum = (~((b[at] << 8) | b[at + 1]) & 0xffff) + (~(old >>> 16) & 0xffff) + (~old & 0xffff) + (now >>> 16) + (now & 0xffff);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff;
  b[at] = c >> 8;
  b[at + 1] = c & 255;
}

/** An established connection inside a Stack on a NullDevice, and a function that feeds it one data segment. */
export function receivePath(payload: number, offloadValid: boolean): { step: () => void; check: () => number } {
  const dev = new NullDevice();
  const sched = new FrozenScheduler();
  const stack = new Stack({ device: dev, scheduler: sched, address: DST, prefix: 24 });
  const listener = stack.tcp.listen(9, 0, 128);
  const clientIsn = 1_000_000;
  const syn = ipPacket(PROTO_TCP, 40);
  emitTcp(
    syn,
    20,
    tcp({
      srcPort: 40000,
      dstPort: 9,
      seq: asSeq(clientIsn),
      flags: SYN,
      window: 65535,
      mss: 1460,
      wscale: 7,
      sackPermitted: true,
      hasTimestamp: true,
      tsVal: 1,
      tsEcr: 0,
    }),
    SRC,
    DST,
  );
  stack.input(syn, null, sched.t);
  const synAck = dev.last!;
  const serverIss = readU32(synAck, 24);
  const ack = ipPacket(PROTO_TCP, 32);
  emitTcp(
    ack,
    20,
    tcp({
      srcPort: 40000,
      dstPort: 9,
      seq: asSeq(clientIsn + 1),
      ack: asSeq(serverIss + 1),
      flags: ACK,
      window: 65535,
      hasTimestamp: true,
      tsVal: 2,
      tsEcr: 0,
    }),
    SRC,
    DST,
  );
  stack.input(ack, null, sched.t);
  const conn = listener.accept();
  if (!conn) throw new Error('micro: the handshake did not complete');
  let received = 0;
  const owner: ConnectionOwner = {
    onEstablished() {},
    onData(d) {
      received += d.length;
    },
    onPeerFin() {},
    onSendSpace() {},
    onClosed() {},
    unreadBytes: () => 0,
  };
  conn.attach(owner);
  const seg = ipPacket(PROTO_TCP, 32 + payload);
  let seq = clientIsn + 1;
  emitTcp(
    seg,
    20,
    tcp({
      srcPort: 40000,
      dstPort: 9,
      seq: asSeq(seq),
      ack: asSeq(serverIss + 1),
      flags: ACK | PSH,
      window: 65535,
      hasTimestamp: true,
      tsVal: 3,
      tsEcr: 0,
      payloadLength: payload,
    }),
    SRC,
    DST,
  );
  const meta: OffloadMeta | null = offloadValid
    ? { flags: VirtioNetHdr.F_DATA_VALID, gsoType: VirtioNetHdr.GSO_NONE, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 }
    : null;
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
    add(
      `checksum.${size}`,
      `checksum ${size} B`,
      measure(
        `checksum ${size}`,
        () => {
          sink ^= checksumAdd(b, 0, size);
        },
        q,
      ),
      { bytes: size },
    );
  }

  const ip = ipPacket(PROTO_TCP, 0);
  const ipr = newIpv4Repr();
  add(
    'ipv4.parse',
    'IPv4 header parse (with checksum)',
    measure(
      'ipv4 parse',
      () => {
        sink ^= parseIpv4Header(ip, 0, 20, ipr);
      },
      q,
    ),
  );
  const ipOut = Buffer.alloc(20);
  const ipRepr = {
    src: SRC,
    dst: DST,
    protocol: PROTO_TCP,
    ttl: 64,
    tos: 0,
    ident: 7,
    dontFragment: true,
    moreFragments: false,
    fragmentOffset: 0,
    headerLength: 20,
    totalLength: 20,
  };
  add(
    'ipv4.emit',
    'IPv4 header emit (with checksum)',
    measure(
      'ipv4 emit',
      () => {
        sink ^= emitIpv4Header(ipOut, 0, ipRepr);
      },
      q,
    ),
  );

  const tseg = tsSackSegment();
  const tcpPkt = ipPacket(PROTO_TCP, 20 + 24);
  emitTcp(tcpPkt, 20, tseg, SRC, DST);
  const tr = newTcpRepr();
  add(
    'tcp.parse',
    'TCP header parse (TS + SACK options, checksum)',
    measure(
      'tcp parse',
      () => {
        sink ^= parseTcp(tcpPkt, 20, 44, SRC, DST, tr);
      },
      q,
    ),
  );
  add(
    'tcp.emit',
    'TCP header emit (TS + SACK options, checksum)',
    measure(
      'tcp emit',
      () => {
        sink ^= emitTcp(tcpPkt, 20, tseg, SRC, DST);
      },
      q,
    ),
  );

  const udpPkt = ipPacket(PROTO_UDP, 8 + 64);
  const uout = Object.assign(newUdpRepr(), { srcPort: 5000, dstPort: 7, payloadLength: 64 });
  emitUdp(udpPkt, 20, uout, SRC, DST);
  const ur = newUdpRepr();
  add(
    'udp.parse',
    'UDP parse (64 B payload, checksum)',
    measure(
      'udp parse',
      () => {
        sink ^= parseUdp(udpPkt, 20, 72, SRC, DST, ur);
      },
      q,
    ),
  );
  add(
    'udp.emit',
    'UDP emit (64 B payload, checksum)',
    measure(
      'udp emit',
      () => {
        sink ^= emitUdp(udpPkt, 20, uout, SRC, DST);
      },
      q,
    ),
  );

  const icmpPkt = Buffer.alloc(64);
  const echo = Object.assign(newIcmpRepr(), { type: ICMP_ECHO_REQUEST, ident: 0x1234, seq: 1, bodyLength: 56 });
  emitIcmp(icmpPkt, 0, echo);
  const ir = newIcmpRepr();
  const reply = Object.assign(newIcmpRepr(), { type: ICMP_ECHO_REPLY, ident: 0x1234, seq: 1, bodyLength: 56 });
  add(
    'icmp.parse',
    'ICMP echo parse (56 B body, checksum)',
    measure(
      'icmp parse',
      () => {
        sink ^= parseIcmp(icmpPkt, 0, 64, ir);
      },
      q,
    ),
  );
  add(
    'icmp.emit',
    'ICMP echo emit (56 B body, checksum)',
    measure(
      'icmp emit',
      () => {
        sink ^= emitIcmp(icmpPkt, 0, reply);
      },
      q,
    ),
  );

  for (const [payload, valid] of [
    [1448, true],
    [1448, false],
    [64_000, true],
  ] as const) {
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
  const directHz = measure(
    'send direct',
    () => {
      direct.send(udp1500);
    },
    q,
  );
  add('impair.send.direct', 'send 1500 B to a device (no ImpairDevice)', directHz);
  for (const [key, words, label] of [
    ['none', null, 'send through an ImpairDevice, no impairment'],
    ['nomatch', 'out --dport 1 loss 1% seed 1', 'send through an ImpairDevice, one impairment, no match'],
    ['match', 'out loss 1% seed 1', 'send through an ImpairDevice, every packet through loss 1%'],
  ] as const) {
    const dev = new ImpairDevice(new NullDevice(), new FrozenScheduler());
    if (words) dev.add(1, parseImpairment(words) as PacketImpairSpec, 1);
    const hz = measure(
      `send ${key}`,
      () => {
        dev.send(udp1500, null);
      },
      q,
    );
    out.push(
      figure({
        group: 'micro',
        key: `micro.impair.send.${key}`,
        name: label,
        value: hz,
        unit: 'ops/s',
        note: `${fmt((hz / directHz) * 100)}% of a direct send`,
      }),
    );
    progress(`  micro  ${label.padEnd(46)} ${fmt(hz).padStart(12)} ops/s  (${fmt((hz / directHz) * 100)}% of a direct send)`);
  }
  void internetChecksum;
  void sink;
  return out;
}
