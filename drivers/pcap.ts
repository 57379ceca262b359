/**
 * pcap writer: a Device that wraps any Device and records both directions to a classic
 * libpcap file (magic 0xa1b2c3d4 written in host byte order, version 2.4, microsecond
 * timestamps, snaplen 262144 by default).
 *
 * Link type: 228 (LINKTYPE_IPV4, the default for an 'ip' device: every frame is a raw IPv4
 * packet), 101 (LINKTYPE_RAW, raw IPv4/IPv6, for older tools), or 1 (LINKTYPE_ETHERNET, i.e.
 * DLT_EN10MB: Ethernet II frames without FCS, the default when the wrapped device's linkType
 * is 'ethernet', a TAP device). On a TAP device the capture holds ARP and IGMP as well as IP.
 *
 * What is recorded: sent packets when `send` is called (before the inner device sees them),
 * received packets when the inner device delivers a burst (before the wrapped handler runs,
 * so the slab views are copied while still valid). Packets are written as they are: a GSO
 * "super segment" the stack hands to a TUN device with a virtio header (up to 64 KiB, IPv4
 * total length = its real length, TCP checksum only partial when NEEDS_CSUM is set) appears
 * as one big packet; the virtio header itself is not recorded (classic pcap has no room for it).
 * What tshark 4.0.17 (Debian 12) shows, checked by test/unit/pcap.test.ts:
 *  - a 20 KB TCP segment with a correct IPv4 total length and a partial (pseudo-header only)
 *    TCP checksum: one normal TCP segment, no malformed/expert error, checksum "Unverified"
 *    (tshark does not validate TCP checksums by default; with tcp.check_checksum:TRUE it is
 *    reported as "Bad checksum", as expected for a partial checksum);
 *  - IPv4 total length 0: dissected normally, with "[Total Length: N bytes (reported as 0,
 *    presumed to be because of "TCP segmentation offload" (TSO))]", no malformed/expert error.
 *
 * Timestamps come from `now()` (ms, float): by default wall time at construction advanced by
 * process.hrtime; memory tests pass the virtual clock (`now: () => clock.now`).
 *
 * Rotation, as tcpdump's -C and -W: with `rotateBytes`, before a record is added to a file
 * already larger than that, the file is closed and the next one opened (each starts with
 * its own global header). Names: FILE, then FILE1, FILE2, ...; with `maxFiles` N as well,
 * FILE0 .. FILE{N-1} with the number zero-padded to the width of N-1, reused in turn
 * (a ring of at most N files).
 *
 * Buffering: records collect in memory and go to disk (writeSync) when 64 KiB are pending,
 * on every `flush()` and on `close()`; an 'exit' hook writes what is pending if the process
 * exits without closing. A write error stops capturing (counted, one process warning) but
 * never breaks the wrapped device.
 */
import * as fs from 'node:fs';
import { VirtioNetHdr, type Device, type OffloadMeta, type ReceiveHandler } from './device';
import { completeChecksum } from './gso';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_IPV4 = 228;

export interface PcapOptions {
  /** File to create (truncated if it exists). */
  path: string;
  linktype?: typeof LINKTYPE_IPV4 | typeof LINKTYPE_RAW | typeof LINKTYPE_ETHERNET;
  snaplen?: number;
  /** Timestamp source in ms (float). */
  now?: () => number;
  /** Pending bytes that trigger a write (default 65536). */
  flushBytes?: number;
  /** Start a new file once the current one is larger than this (tcpdump -C, which counts millions of bytes). */
  rotateBytes?: number;
  /** With rotateBytes: keep at most this many files, overwriting the oldest (tcpdump -W). */
  maxFiles?: number;
}

/** The name of file number `n` of a capture, as tcpdump names them (MakeFilename). */
export function rotatedName(base: string, n: number, maxFiles: number | undefined): string {
  if (maxFiles === undefined) return n === 0 ? base : `${base}${n}`;
  let width = 0;
  for (let x = maxFiles - 1; x > 0; x = Math.floor(x / 10)) width++;
  return width === 0 ? base : `${base}${String(n).padStart(width, '0')}`;
}

const GLOBAL_HDR = 24;
const REC_HDR = 16;

const open = new Set<PcapWriter>();
let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const w of open) w.close();
  });
}

/**
 * Wall time in ms (float): the epoch at creation, advanced by process.hrtime. Captures
 * that should line up (both sides of the impairments) share one.
 */
export function wallClock(): () => number {
  const wall0 = Date.now();
  const hr0 = process.hrtime.bigint();
  return () => wall0 + Number(process.hrtime.bigint() - hr0) / 1e6;
}

/** The file side on its own: usable without a Device (e.g. to dump a list of packets). */
export class PcapWriter {
  /** The file being written (with rotation: the current one of the set). */
  path: string;
  readonly basePath: string;
  readonly linktype: number;
  readonly snaplen: number;
  packets = 0;
  bytes = 0;
  fileBytes = 0;
  writes = 0;
  writeErrors = 0;
  /** Files opened so far (1 without rotation). */
  files = 0;
  private fileNo = 0;
  /** Bytes in the current file, pending ones included. */
  private currentBytes = 0;
  private readonly rotateBytes: number;
  private readonly maxFiles: number | undefined;
  private fd: number | null;
  private buf: Buffer;
  private used = 0;
  private readonly flushBytes: number;
  private failed = false;

  constructor(opts: PcapOptions) {
    this.basePath = opts.path;
    this.rotateBytes = opts.rotateBytes ?? Infinity;
    if (!(this.rotateBytes > 0)) throw new RangeError(`pcap: bad rotateBytes ${String(opts.rotateBytes)}`);
    this.maxFiles = opts.maxFiles;
    if (this.maxFiles !== undefined && !(Number.isInteger(this.maxFiles) && this.maxFiles >= 1)) throw new RangeError(`pcap: bad maxFiles ${this.maxFiles}`);
    this.path = rotatedName(this.basePath, 0, this.maxFiles);
    this.linktype = opts.linktype ?? LINKTYPE_IPV4;
    if (this.linktype !== LINKTYPE_IPV4 && this.linktype !== LINKTYPE_RAW && this.linktype !== LINKTYPE_ETHERNET) {
      throw new RangeError(`pcap: linktype must be 228 (IPV4), 101 (RAW) or 1 (ETHERNET), got ${this.linktype}`);
    }
    this.snaplen = opts.snaplen ?? 262144;
    if (!(Number.isInteger(this.snaplen) && this.snaplen > 0)) throw new RangeError(`pcap: bad snaplen ${this.snaplen}`);
    this.flushBytes = Math.max(opts.flushBytes ?? 65536, 1);
    this.buf = Buffer.allocUnsafe(Math.max(this.flushBytes, 4096) + REC_HDR);
    this.fd = fs.openSync(this.path, 'w');
    this.startFile();
    open.add(this);
    hookExit();
  }

  /** The global header at the start of the current file. */
  private startFile(): void {
    this.files++;
    this.currentBytes = 0;
    const h = this.reserve(GLOBAL_HDR);
    this.buf.writeUInt32LE(0xa1b2c3d4, h);
    this.buf.writeUInt16LE(2, h + 4);
    this.buf.writeUInt16LE(4, h + 6);
    this.buf.writeInt32LE(0, h + 8); // thiszone
    this.buf.writeUInt32LE(0, h + 12); // sigfigs
    this.buf.writeUInt32LE(this.snaplen, h + 16);
    this.buf.writeUInt32LE(this.linktype, h + 20);
    this.used += GLOBAL_HDR;
    this.currentBytes += GLOBAL_HDR;
    this.writeOut(); // a file with just the header is already valid
  }

  /** tcpdump -C: the current file is past the limit; close it and go on in the next one. */
  private rotate(): void {
    this.writeOut();
    try {
      fs.closeSync(this.fd!);
    } catch {
      /* already gone */
    }
    this.fd = null;
    this.fileNo = this.maxFiles !== undefined ? (this.fileNo + 1) % this.maxFiles : this.fileNo + 1;
    this.path = rotatedName(this.basePath, this.fileNo, this.maxFiles);
    try {
      this.fd = fs.openSync(this.path, 'w');
    } catch (e) {
      this.writeErrors++;
      this.failed = true;
      process.emitWarning(`pcap ${this.path}: cannot open the next file, capture stopped: ${(e as Error).message}`, { code: 'ERR_PCAP_WRITE' });
      return;
    }
    this.startFile();
  }

  get isOpen(): boolean {
    return this.fd !== null;
  }

  /** Appends one record with timestamp `ms` (float, ms since the epoch or virtual). */
  record(pkt: Uint8Array, ms: number): void {
    if (this.fd === null || this.failed) return;
    if (this.currentBytes > this.rotateBytes) {
      this.rotate();
      if (this.fd === null || this.failed) return;
    }
    const orig = pkt.length;
    const incl = Math.min(orig, this.snaplen);
    let us = Math.round(Math.max(ms, 0) * 1000);
    if (!Number.isFinite(us)) us = 0;
    const sec = Math.floor(us / 1e6);
    const usec = us - sec * 1e6;
    const o = this.reserve(REC_HDR);
    this.buf.writeUInt32LE(sec >>> 0, o);
    this.buf.writeUInt32LE(usec, o + 4);
    this.buf.writeUInt32LE(incl, o + 8);
    this.buf.writeUInt32LE(orig, o + 12);
    this.used += REC_HDR;
    if (incl <= this.buf.length - this.used) {
      this.buf.set(incl === orig ? pkt : pkt.subarray(0, incl), this.used);
      this.used += incl;
    } else {
      // Bigger than what is left: write the pending bytes and the packet straight through.
      this.writeOut();
      this.writeRaw(pkt.subarray(0, incl));
    }
    this.packets++;
    this.bytes += orig;
    this.currentBytes += REC_HDR + incl;
    if (this.used >= this.flushBytes) this.writeOut();
  }

  /** Writes everything pending to the file. */
  flush(): void {
    this.writeOut();
  }

  /** Writes the tail and closes the file. Idempotent. */
  close(): void {
    if (this.fd === null) return;
    this.writeOut();
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already gone */
    }
    this.fd = null;
    open.delete(this);
  }

  private reserve(n: number): number {
    if (this.buf.length - this.used < n) this.writeOut();
    return this.used;
  }

  private writeOut(): void {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    this.writeRaw(this.buf.subarray(0, n));
  }

  private writeRaw(b: Uint8Array): void {
    if (this.fd === null || this.failed) return;
    try {
      let off = 0;
      while (off < b.length) off += fs.writeSync(this.fd, b, off, b.length - off);
      this.writes++;
      this.fileBytes += b.length;
    } catch (e) {
      this.writeErrors++;
      this.failed = true;
      process.emitWarning(`pcap ${this.path}: write failed, capture stopped: ${(e as Error).message}`, { code: 'ERR_PCAP_WRITE' });
    }
  }
}

/** A Device that records everything through `inner` to a pcap file. */
export class PcapDevice implements Device {
  onReceive: ReceiveHandler | null = null;
  readonly writer: PcapWriter;
  private readonly now: () => number;
  private closed = false;

  constructor(
    readonly inner: Device,
    opts: PcapOptions,
  ) {
    this.writer = new PcapWriter({ ...opts, linktype: opts.linktype ?? (inner.linkType === 'ethernet' ? LINKTYPE_ETHERNET : LINKTYPE_IPV4) });
    this.now = opts.now ?? wallClock();
    inner.onReceive = (pkts, count, metas) => {
      if (!this.closed) {
        const t = this.now();
        for (let i = 0; i < count; i++) this.writer.record(wireCopy(pkts[i]!, metas ? metas[i] : null), t);
      }
      const h = this.onReceive;
      if (h) h(pkts, count, metas);
    };
  }

  get name(): string {
    return this.inner.name;
  }

  get mtu(): number {
    return this.inner.mtu;
  }

  get linkType(): 'ip' | 'ethernet' {
    return this.inner.linkType ?? 'ip';
  }

  send(packet: Buffer, meta?: OffloadMeta | null): void {
    if (!this.closed) this.writer.record(wireCopy(packet, meta ?? null), this.now());
    this.inner.send(packet, meta);
  }

  /** Records header + packet as one frame, then passes both on (gathered again below when the device can). */
  sendWithHeader(header: Uint8Array, headerLength: number, packet: Buffer, meta?: OffloadMeta | null): void {
    if (!this.closed) {
      const frame = Buffer.allocUnsafe(headerLength + packet.length);
      frame.set(header.subarray(0, headerLength), 0);
      packet.copy(frame, headerLength);
      this.writer.record(wireCopy(frame, meta ?? null), this.now());
      if (this.inner.sendWithHeader === undefined) {
        this.inner.send(frame, meta);
        return;
      }
    }
    if (this.inner.sendWithHeader !== undefined) this.inner.sendWithHeader(header, headerLength, packet, meta);
    else {
      const frame = Buffer.allocUnsafe(headerLength + packet.length);
      frame.set(header.subarray(0, headerLength), 0);
      packet.copy(frame, headerLength);
      this.inner.send(frame, meta);
    }
  }

  flush(): void {
    this.inner.flush();
    this.writer.flush();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.inner.close();
    } finally {
      this.writer.close();
    }
  }

  stats(): Record<string, number> {
    return {
      ...this.inner.stats(),
      pcapPackets: this.writer.packets,
      pcapBytes: this.writer.bytes,
      pcapFileBytes: this.writer.fileBytes,
      pcapWrites: this.writer.writes,
      pcapWriteErrors: this.writer.writeErrors,
      pcapFiles: this.writer.files,
    };
  }
}

/**
 * A packet whose transport checksum is left to the device (virtio NEEDS_CSUM) holds
 * only the pseudo-header sum in its checksum field. The capture records what the
 * wire carries: a copy with the checksum completed, as the kernel would complete it.
 */
function wireCopy(pkt: Buffer, meta: OffloadMeta | null): Buffer {
  if (!meta || (meta.flags & VirtioNetHdr.F_NEEDS_CSUM) === 0 || meta.csumStart + meta.csumOffset + 2 > pkt.length) return pkt;
  const copy = Buffer.from(pkt);
  completeChecksum(copy, meta);
  return copy;
}
