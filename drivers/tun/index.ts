/**
 * TUN device driver: a Linux TUN interface (IFF_TUN | IFF_NO_PI, raw IPv4) behind the
 * Device contract, through a small native addon (drivers/tun/src/tun.cc). The same driver
 * opens TAP interfaces (`mode: 'tap'`, IFF_TAP: Ethernet frames; drivers/tap/index.ts):
 * everything below applies to both, a TAP frame being 14 bytes longer than its packet.
 *
 * Receive: the addon polls each queue fd with a uv_poll_t (on the main loop, no thread
 * pool) and, when readable, read()s up to `rxBurst` packets (default 64) or until EAGAIN
 * into one preallocated slab of fixed slots, then makes ONE call into JS per burst; after a
 * full burst it reads the next (up to 16 per readable event, so a turn of the event loop
 * empties the kernel's queue of txqueuelen packets instead of taking 64 from it). The
 * packets handed to `onReceive` are Buffer views into that slab: they are valid only during
 * the call (the next burst overwrites them); copy what you keep.
 *   Slot size: with vnetHdr, 10 (virtio_net_hdr) + 65536 + 1 rounded up to 64 = 65600
 *   bytes, enough for the largest GSO packet the kernel builds with offloads on (64 KiB);
 *   64 slots = 4.0 MiB per queue. Without vnetHdr: max(2048, (mtu + 1) rounded up to 64)
 *   bytes (2 KiB at MTU 1500; 128 KiB per queue). The kernel cuts a packet longer than the
 *   read buffer, so a read that fills its slot is dropped and counted as `rxTruncated` (only
 *   possible if the interface MTU is raised behind our back, e.g. `ip link set mtu`).
 * Transmit: `send` queues (no copy: the contract gives the driver ownership of the buffer),
 * `flush` makes one native call for the batch, one write()/writev() per packet. EAGAIN and
 * ENOBUFS are counted as `txDrops`, other errno as `txErrors`; nothing throws. The queue
 * flushes by itself when it holds `txBatchMax` (default 256) packets.
 *
 * Multi-queue: with `multiQueue`, `queues` fds are attached to the same interface; the kernel
 * spreads flows across them. `queue(i)` is a Device for queue i. On the TunDevice itself,
 * `send` uses queue 0, `flush`/`close` act on all queues, and every queue without its own
 * `onReceive` delivers to the TunDevice's `onReceive`.
 *
 * Lifetime: an interface we create (not persistent, not there before) disappears when the last
 * fd closes, so `close()` removes what we created. An existing persistent interface (made by
 * `ip tuntap add dev NAME mode tun`) is attached to and left in place.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { CHECKSUM_VERIFIED, VirtioNetHdr, type Device, type OffloadMeta, type ReceiveHandler } from '../device';

/** TUNSETOFFLOAD flags (linux/if_tun.h). */
export const TUN_F = {
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
  TSO_ECN: 0x08,
  UFO: 0x10,
  USO4: 0x20,
  USO6: 0x40,
} as const;

export interface OffloadState {
  /** TUN_F_* bits the kernel accepted (0: none). */
  flags: number;
  csum: boolean;
  tso4: boolean;
  tso6: boolean;
  /** e.g. ['csum', 'tso4', 'tso6'] */
  names: string[];
}

export interface TunOpenOptions {
  /** Interface name (max 15 bytes); '' or a pattern like 'fs%d' lets the kernel choose. */
  name: string;
  /** 'tun' (default): IFF_TUN, raw IPv4 packets. 'tap': IFF_TAP, Ethernet frames (linkType 'ethernet'). */
  mode?: 'tun' | 'tap';
  /** Set the interface MTU (SIOCSIFMTU) when given; otherwise the current MTU is reported. */
  mtu?: number;
  /** IFF_VNET_HDR: every packet carries a 10-byte virtio_net_hdr (parsed into OffloadMeta). */
  vnetHdr?: boolean;
  /** IFF_MULTI_QUEUE with `queues` fds (default 1 queue). */
  multiQueue?: boolean;
  queues?: number;
  /** 'probe' (default when vnetHdr) tries CSUM|TSO4|TSO6, CSUM|TSO4, CSUM, none.
   *  'off' (default without vnetHdr, and forced without vnetHdr) sets no offloads. */
  offloads?: 'probe' | 'off';
  /**
   * TUN_F_* bits the probe may ask for (default all). Models a kernel that refuses or
   * limits TUNSETOFFLOAD, so that the fallback paths can be tested on a kernel that
   * accepts everything.
   */
  offloadMask?: number;
  /** Packets read per burst (per queue), default 64. */
  rxBurst?: number;
  /** Packets queued by send() before an automatic flush, default 256. */
  txBatchMax?: number;
  /**
   * The interface's txqueuelen (the packets the kernel queues for each of our queues
   * before it drops them), set only on an interface this open creates; a device made
   * beforehand keeps its own. Absent: the kernel's default (500 for TUN).
   */
  txQueueLen?: number;
  /**
   * false: open the fds and probe offloads, but build no queues; `fds()` hands them to
   * whoever serves them (e.g. one worker thread per queue, `TunQueue.fromFd`). The device
   * still owns the fds and closes them on `close()`. Default true.
   */
  startQueues?: boolean;
  /**
   * Receive coalescing without the virtio header (TUN with offloads off): the addon
   * appends each TCP segment that continues an earlier one of its flow in the same burst
   * to it, so the stack gets one large packet where the kernel sent many (as the
   * kernel's GRO does for a NIC; tun.cc says what may be joined). Default true; false
   * hands every packet on as it came. Nothing changes with the virtio header (the kernel
   * then sends super-segments itself) or on TAP.
   */
  gro?: boolean;
  /**
   * Deferred writes: with the virtio header, a packet whose sender gives its buffer up
   * (OffloadMeta.owned: TCP's segments) is written by the queue's writer thread when it is
   * 8 KiB or more or its flush holds 4 packets or more,
   * and so is everything sent behind it until that thread has caught up (order kept). The
   * kernel's work inside a write (on TAP the bridge and the receiving namespace's whole
   * TCP, on TUN the receiver's) then runs beside JavaScript instead of in it. Default true.
   */
  txThread?: boolean;
}

/** What a TunQueue reads from its owner: a TunDevice, or a bare one built in a worker. */
export interface TunQueueOwner {
  readonly name: string;
  readonly vnetHdr: boolean;
  readonly mtu: number;
  /** Bytes of link header in front of each packet: 14 on a TAP device, 0 (absent) on TUN. */
  readonly linkHeaderLen?: number;
  /** Receive coalescing (TunOpenOptions.gro), default true. */
  readonly gro?: boolean;
  /** Deferred writes (TunOpenOptions.txThread), default true. */
  readonly txThread?: boolean;
  onReceive: ReceiveHandler | null;
  reportError(err: TunError): void;
}

/** An Error with a `code` (ENOENT, EPERM, EBUSY, EINVAL, ERR_TUN_ADDON, ERR_IP_COMMAND...). */
export class TunError extends Error {
  readonly code: string;
  readonly errno?: number;
  readonly syscall?: string;
  constructor(code: string, message: string, errno?: number, syscall?: string) {
    super(message);
    this.name = 'TunError';
    this.code = code;
    if (errno !== undefined) this.errno = errno;
    if (syscall !== undefined) this.syscall = syscall;
  }
}

// ---------------------------------------------------------------------------------------------
// native addon

interface NativeQueue {
  start(): void;
  close(): void;
  ref(): void;
  unref(): void;
  write(packets: Buffer[], count: number, metas: Uint32Array | null): number;
  setSlot(i: number, buffer: Buffer): void;
  /** TAP: packet i written as heads[i*headStride, +headLens[i]) ++ packets[i] (one writev). */
  writeFramed(packets: Buffer[], count: number, metas: Uint32Array | null, heads: Buffer, headStride: number, headLens: Uint8Array): number;
  /** Small stateless packets, copied into a ring that the queue's writer thread writes (tun.cc). */
  writeDetached(packets: Buffer[], count: number): number;
  /** Early SYN drop (tun.cc): bare SYNs of unverified sources beyond n per backlogged burst; 0 off. */
  setSynBudget(n: number): void;
  /** Software receive checksum (tun.cc): good TCP/UDP checksums marked DATA_VALID in info[2]. */
  setRxChecksum(on: boolean): void;
  /** Receive coalescing (tun.cc); true when it is on (needs no virtio header and 64 KiB slots). */
  setGro(on: boolean): boolean;
  /** A source that completed a handshake: its SYNs are never dropped early. */
  allowSource(addr: number): void;
  /** One read loop now (busy polling): packets read (in the slots), 0, or -errno. */
  pollNow(): number;
  /** Deferred writes (tun.cc): owned packets of 8 KiB or more, or in a flush of 4 or more, go to the writer thread. */
  setTxThread(on: boolean): void;
  /** The writer thread's counts into the counters (tun.cc Sync). */
  sync(): void;
}

/** The largest packet writeDetached takes (kDetachedMax in tun.cc). */
export const DETACHED_MAX = 120;

interface NativeTun {
  open(
    name: string,
    vnetHdr: boolean,
    multiQueue: boolean,
    queues: number,
    tap?: boolean,
  ): {
    name: string;
    fds: number[];
    created: boolean;
    flags: number;
  };
  setVnetHdrSize(fd: number, size: number): boolean;
  setOffload(fd: number, flags: number): boolean;
  setSteeringBpf(fd: number, insns: Buffer): boolean;
  getIfFlags(fd: number): number;
  ifExists(name: string): boolean;
  getMtu(name: string): number;
  setMtu(name: string, mtu: number): number;
  getTxQueueLen(name: string): number;
  setTxQueueLen(name: string, n: number): void;
  closeFd(fd: number): void;
  Queue: new (
    fd: number,
    vnetHdr: boolean,
    slab: Buffer,
    slotSize: number,
    slots: number,
    info: Uint32Array,
    counters: Float64Array,
    onBurst: (n: number) => void,
    ownsFd?: boolean,
  ) => NativeQueue;
  constants: Record<string, number>;
}

const ADDON = 'faultstack_tun.node';
let native: NativeTun | null = null;

function loadNative(): NativeTun {
  if (native) return native;
  const req = createRequire(__filename);
  // Source layout (drivers/tun/index.ts) and compiled layout (dist/drivers/tun/index.js).
  const candidates = [path.join(__dirname, 'build', 'Release', ADDON), path.join(__dirname, '..', '..', '..', 'drivers', 'tun', 'build', 'Release', ADDON)];
  for (const c of candidates) {
    if (fs.existsSync(c)) {
      native = req(c) as NativeTun;
      return native;
    }
  }
  throw new TunError('ERR_TUN_ADDON', `TUN addon not built (looked for ${candidates[0]}): run \`make addon\``);
}

// ---------------------------------------------------------------------------------------------
// errors

interface NativeErr {
  code?: string;
  errno?: number;
  syscall?: string;
  message?: string;
}

function openError(e: unknown, name: string, kind = 'TUN'): TunError {
  const n = (e ?? {}) as NativeErr;
  const code = n.code ?? 'EUNKNOWN';
  const sys = n.syscall ?? '';
  const dev = name === '' ? `a new ${kind} device` : `${kind} device '${name}'`;
  let msg: string;
  if (sys === 'open') {
    switch (code) {
      case 'ENOENT':
        msg = 'cannot open /dev/net/tun: no such file (is the tun module loaded? try: modprobe tun)';
        break;
      case 'ENODEV':
      case 'ENXIO':
        msg = 'cannot open /dev/net/tun: the kernel has no TUN support (modprobe tun)';
        break;
      case 'EACCES':
      case 'EPERM':
        msg = 'cannot open /dev/net/tun: permission denied (run as root or with CAP_NET_ADMIN)';
        break;
      default:
        msg = `cannot open /dev/net/tun: ${n.message ?? code}`;
    }
  } else if (sys === 'TUNSETIFF') {
    switch (code) {
      case 'EPERM':
      case 'EACCES':
        msg = `cannot create or attach ${dev}: operation not permitted (needs CAP_NET_ADMIN, or the persistent device belongs to another user/group)`;
        break;
      case 'EBUSY':
        msg = `${dev} is busy: another file descriptor already has it (a single-queue TUN device takes one owner)`;
        break;
      case 'EINVAL':
        msg = `cannot attach ${dev}: the name exists but is not a compatible ${kind} device (${kind === 'TAP' ? 'TUN' : 'TAP'} mode, another link type, or a different multi_queue setting), or the name is invalid`;
        break;
      case 'ENAMETOOLONG':
        msg = `invalid TUN device name '${name}': longer than 15 bytes`;
        break;
      default:
        msg = `cannot create or attach ${dev}: ${n.message ?? code}`;
    }
  } else {
    msg = `cannot set up ${dev}: ${n.message ?? code}`;
  }
  return new TunError(code, msg, n.errno, sys || undefined);
}

function checkName(name: string): void {
  const bad = (why: string) => new TunError('EINVAL', `invalid TUN device name '${name}': ${why}`);
  if (Buffer.byteLength(name) > 15) throw bad('longer than 15 bytes');
  if (name === '.' || name === '..') throw bad('reserved name');
  if (/[\s/:]/.test(name)) throw bad('must not contain whitespace, "/" or ":"');
  if ((name.match(/%/g) ?? []).length > 1 || (name.includes('%') && !name.includes('%d'))) throw bad('only one "%d" pattern allowed');
}

// ---------------------------------------------------------------------------------------------
// queue

const INFO_STRIDE = 8;
const META_STRIDE = 6;
/** In a meta's flags word (above the virtio header's 8 bits): OffloadMeta.owned (tun.cc kOwnedFlag). */
const META_OWNED = 0x100;
/** Room per queued packet for its link header (TAP: 14 bytes of Ethernet header). */
const HEAD_STRIDE = 16;
// counters shared with the addon (see tun.cc)
const C_RX_TRUNC = 0,
  C_RX_ERR = 1,
  C_TX_PKTS = 2,
  C_TX_BYTES = 3,
  C_TX_DROPS = 4,
  C_TX_ERR = 5,
  C_ERRNO = 6,
  C_SYN_EARLY = 8,
  C_RX_CSUM = 9,
  C_RX_GRO = 10,
  C_TX_DEFERRED = 11;

function errnoName(errno: number): string {
  for (const [k, v] of Object.entries(os.constants.errno)) if (v === errno) return k;
  return `errno ${errno}`;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** One TUN queue (one fd). A Device of its own. */
export class TunQueue implements Device {
  onReceive: ReceiveHandler | null = null;
  readonly index: number;
  /** Set when a fatal receive error stopped this queue (e.g. the interface was deleted). */
  lastError: TunError | null = null;

  private readonly nq: NativeQueue;
  private readonly slab: Buffer;
  private readonly slotSize: number;
  /** The buffer each slot is read into: a slice of the slab, or a fresh one after a claim. */
  private readonly slotBufs: Buffer[] = [];
  /** Slots whose packet the stack kept during the current burst (see claim()). */
  private readonly claimed: number[] = [];
  private rxCount = 0;
  private rxClaimed = 0;
  private readonly info: Uint32Array;
  private readonly counters = new Float64Array(12);
  private readonly rxPackets: Buffer[] = [];
  private readonly rxMeta: (OffloadMeta | null)[] = [];
  private txPackets: Buffer[] = [];
  private txMeta: Uint32Array | null;
  private txCount = 0;
  /** Stateless packets for the writer thread (sendDetached), written by flush(). */
  private readonly txDetached: Buffer[] = [];
  private txDetachedCount = 0;
  /** TAP: link headers of the queued packets (sendWithHeader), written in front of them by writeFramed. */
  private readonly txHeads: Buffer | null;
  private readonly txHeadLens: Uint8Array | null;
  private nextHeadLen = 0;
  private closed = false;
  private rxPkts = 0;
  private rxBytes = 0;
  private rxBursts = 0;
  private rxNoHandler = 0;
  private rxOffload = 0;
  private txFlushes = 0;
  private txQueuedDrops = 0;

  constructor(
    private readonly owner: TunQueueOwner,
    fd: number,
    index: number,
    rxBurst: number,
    private readonly txBatchMax: number,
    ownsFd = true,
  ) {
    const n = loadNative();
    this.index = index;
    const link = owner.linkHeaderLen ?? 0;
    // Without the virtio header a slot holds one packet of the MTU, unless receive
    // coalescing joins segments into it (then 64 KiB, as with the header).
    const gro = !owner.vnetHdr && link === 0 && owner.gro !== false;
    const slotSize = owner.vnetHdr || gro ? align(VirtioNetHdr.LEN + link + 65536 + 1, 64) : Math.max(2048, align(owner.mtu + link + 1, 64));
    this.slab = Buffer.allocUnsafeSlow(slotSize * rxBurst);
    this.slotSize = slotSize;
    for (let i = 0; i < rxBurst; i++) this.slotBufs.push(this.slab.subarray(i * slotSize, (i + 1) * slotSize));
    this.info = new Uint32Array(rxBurst * INFO_STRIDE);
    this.txMeta = owner.vnetHdr ? new Uint32Array(txBatchMax * META_STRIDE) : null;
    this.txHeads = link > 0 ? Buffer.alloc(txBatchMax * HEAD_STRIDE) : null;
    this.txHeadLens = link > 0 ? new Uint8Array(txBatchMax) : null;
    this.nq = new n.Queue(fd, owner.vnetHdr, this.slab, slotSize, rxBurst, this.info, this.counters, (c: number) => this.burst(c), ownsFd);
    // Without the virtio header nothing says the kernel's checksums are good: the addon
    // checks TCP and UDP ones right after the read (TUN: the IP header leads the packet).
    this.rxChecksum = !owner.vnetHdr && link === 0;
    if (this.rxChecksum) this.nq.setRxChecksum(true);
    this.gro = gro && this.nq.setGro(true);
    this.txThread = owner.vnetHdr && owner.txThread !== false;
    if (this.txThread) this.nq.setTxThread(true);
  }
  /** Deferred writes are on (see TunOpenOptions.txThread). */
  readonly txThread: boolean;
  /** Receive coalescing is on (see TunOpenOptions.gro). */
  readonly gro: boolean;
  /** The addon checks receive checksums and marks good packets DATA_VALID (no virtio header, TUN). */
  private readonly rxChecksum: boolean;

  get name(): string {
    return this.owner.name;
  }
  get mtu(): number {
    return this.owner.mtu;
  }

  get linkType(): 'ip' | 'ethernet' {
    return (this.owner.linkHeaderLen ?? 0) > 0 ? 'ethernet' : 'ip';
  }

  /**
   * A started queue over an fd opened elsewhere (e.g. `TunDevice.fds()` in the main thread,
   * used in a worker thread: the addon keeps no static state). The caller keeps owning the
   * fd: `close()` of this queue stops polling and leaves the fd open (its TunDevice closes it).
   */
  static fromFd(
    fd: number,
    opts: {
      name: string;
      vnetHdr: boolean;
      mtu: number;
      rxBurst?: number;
      txBatchMax?: number;
      gro?: boolean;
      txThread?: boolean;
      onError?: (err: TunError) => void;
    },
  ): TunQueue {
    const owner: TunQueueOwner = {
      name: opts.name,
      vnetHdr: opts.vnetHdr,
      mtu: opts.mtu,
      gro: opts.gro,
      txThread: opts.txThread,
      onReceive: null,
      reportError: (err) => {
        if (opts.onError) opts.onError(err);
        else process.emitWarning(err.message, { code: err.code });
      },
    };
    const q = new TunQueue(owner, fd, 0, opts.rxBurst ?? 64, opts.txBatchMax ?? 256, false);
    q.start();
    return q;
  }

  /** @internal */
  start(): void {
    this.nq.start();
  }

  private burst(count: number): void {
    if (count < 0) {
      const errno = -count;
      const code = errnoName(errno);
      this.lastError = new TunError(
        code,
        `TUN device '${this.name}' queue ${this.index}: receive stopped: ${code} (was the interface deleted?)`,
        -errno,
        'read',
      );
      this.owner.reportError(this.lastError);
      return;
    }
    const handler = this.onReceive ?? this.owner.onReceive;
    this.rxBursts++;
    const info = this.info;
    const pkts = this.rxPackets;
    pkts.length = count;
    let bytes = 0;
    const slots = this.slotBufs;
    for (let i = 0; i < count; i++) {
      const o = i * INFO_STRIDE;
      const off = info[o]!;
      const len = info[o + 1]!;
      bytes += len;
      pkts[i] = slots[i]!.subarray(off, off + len);
    }
    this.rxPkts += count;
    this.rxBytes += bytes;
    let metas: (OffloadMeta | null)[] | null = null;
    if (this.rxChecksum) {
      metas = this.rxMeta;
      metas.length = count;
      for (let i = 0; i < count; i++) {
        const o = i * INFO_STRIDE;
        if (info[o + 3] !== 0) {
          // Segments the addon joined (GRO): one TCPv4 super-segment of gsoSize pieces.
          this.rxOffload++;
          metas[i] = { flags: info[o + 2]!, gsoType: info[o + 3]!, hdrLen: info[o + 4]!, gsoSize: info[o + 5]!, csumStart: 0, csumOffset: 0 };
        } else metas[i] = info[o + 2] !== 0 ? CHECKSUM_VERIFIED : null;
      }
    } else if (this.owner.vnetHdr) {
      metas = this.rxMeta;
      metas.length = count;
      for (let i = 0; i < count; i++) {
        const o = i * INFO_STRIDE;
        const flags = info[o + 2]!;
        const gsoType = info[o + 3]!;
        if (flags === 0 && gsoType === 0) {
          metas[i] = null;
        } else {
          this.rxOffload++;
          metas[i] = {
            flags,
            gsoType,
            hdrLen: info[o + 4]!,
            gsoSize: info[o + 5]!,
            csumStart: info[o + 6]!,
            csumOffset: info[o + 7]!,
          };
        }
      }
    }
    if (!handler) {
      this.rxNoHandler += count;
      return;
    }
    this.rxCount = count;
    try {
      handler(pkts, count, metas);
    } finally {
      this.rxCount = 0;
      // Slots whose packet the stack kept are given a fresh buffer before the next read.
      const cl = this.claimed;
      for (let k = 0; k < cl.length; k++) {
        const i = cl[k]!;
        const fresh = Buffer.allocUnsafeSlow(this.slotSize);
        this.slotBufs[i] = fresh;
        if (!this.closed) this.nq.setSlot(i, fresh);
      }
      cl.length = 0;
    }
  }

  /**
   * Zero-copy receive: the stack keeps `packet` (one of the current burst's) instead of
   * copying out of it, and this queue reads that slot into a new buffer from the next
   * burst on. Only worth it for large packets (a slot is 64 KiB with the virtio header).
   */
  claim(packet: Buffer): boolean {
    const pkts = this.rxPackets;
    for (let i = 0; i < this.rxCount; i++) {
      if (pkts[i] === packet) {
        if (!this.claimed.includes(i)) {
          this.claimed.push(i);
          this.rxClaimed++;
        }
        return true;
      }
    }
    return false;
  }

  send(packet: Buffer, meta?: OffloadMeta | null): void {
    if (this.closed) {
      this.txQueuedDrops++;
      return;
    }
    const i = this.txCount;
    this.txPackets[i] = packet;
    if (this.txHeadLens !== null) {
      this.txHeadLens[i] = this.nextHeadLen;
      this.nextHeadLen = 0;
    }
    if (this.txMeta) {
      const o = i * META_STRIDE;
      const m = this.txMeta;
      if (meta) {
        m[o] = meta.owned === true ? meta.flags | META_OWNED : meta.flags;
        m[o + 1] = meta.gsoType;
        m[o + 2] = meta.hdrLen;
        m[o + 3] = meta.gsoSize;
        m[o + 4] = meta.csumStart;
        m[o + 5] = meta.csumOffset;
      } else {
        m.fill(0, o, o + META_STRIDE);
      }
    }
    this.txCount = i + 1;
    if (this.txCount >= this.txBatchMax) this.flush();
  }

  /**
   * Device.sendDetached: a small packet ordered against no other (a SYN cookie, a reset
   * for no connection) goes to the addon's writer thread at the next flush, so that the
   * kernel's receive path for it runs in that thread instead of the stack's (a TUN
   * write runs it in the writer's context: most of the stack's time during a SYN flood).
   * TUN only, and only packets of at most DETACHED_MAX bytes; anything else is sent.
   */
  sendDetached(packet: Buffer): void {
    if (this.txHeads !== null || packet.length > DETACHED_MAX) {
      this.send(packet, null);
      return;
    }
    if (this.closed) {
      this.txQueuedDrops++;
      return;
    }
    this.txDetached[this.txDetachedCount++] = packet;
    if (this.txDetachedCount >= this.txBatchMax) this.flushDetached();
  }

  /**
   * Device.setSynBudget: while this queue is backlogged (more was waiting when its last
   * read loop stopped), at most `n` bare SYNs from sources that never completed a
   * handshake (allowSource) reach the stack per burst; the rest are dropped in the addon
   * right after their read (counted in synEarlyDrops). 0 turns it off. TUN only (a TAP
   * frame's IP header is behind its link header).
   */
  setSynBudget(n: number): void {
    if ((this.owner.linkHeaderLen ?? 0) > 0 || this.closed) return;
    this.nq.setSynBudget(Math.max(0, Math.floor(n)));
  }

  /**
   * Busy polling: reads what is waiting now and delivers it as a burst, without waiting
   * for libuv's poll (the wake-up through epoll is most of a ping's round trip). Returns
   * the packets delivered (0: none waiting).
   */
  pollNow(): number {
    if (this.closed) return 0;
    const c = this.nq.pollNow();
    if (c !== 0) this.burst(c);
    return c > 0 ? c : 0;
  }

  /** Device.allowSource: `addr` completed a handshake; its SYNs are never dropped early. */
  allowSource(addr: number): void {
    if (!this.closed) this.nq.allowSource(addr >>> 0);
  }

  private flushDetached(): void {
    const n = this.txDetachedCount;
    if (n === 0) return;
    this.txDetachedCount = 0;
    this.nq.writeDetached(this.txDetached, n);
    for (let i = 0; i < n; i++) this.txDetached[i] = EMPTY;
  }

  /**
   * Device.sendWithHeader: on a TAP queue the header is copied into the queue's header slab
   * and written in front of the packet by one writev; elsewhere, header and packet are joined.
   */
  sendWithHeader(header: Uint8Array, headerLength: number, packet: Buffer, meta?: OffloadMeta | null): void {
    const heads = this.txHeads;
    if (heads === null || headerLength > HEAD_STRIDE) {
      const frame = Buffer.allocUnsafe(headerLength + packet.length);
      frame.set(header.subarray(0, headerLength), 0);
      packet.copy(frame, headerLength);
      this.send(frame, meta);
      return;
    }
    if (this.closed) {
      this.txQueuedDrops++;
      return;
    }
    // A byte loop: 14 bytes, and no view object per packet.
    const o = this.txCount * HEAD_STRIDE;
    for (let k = 0; k < headerLength; k++) heads[o + k] = header[k]!;
    this.nextHeadLen = headerLength;
    this.send(packet, meta);
  }

  flush(): void {
    if (this.txDetachedCount > 0) this.flushDetached();
    const n = this.txCount;
    if (n === 0) return;
    this.txCount = 0;
    this.txFlushes++;
    if (this.txHeads !== null) this.nq.writeFramed(this.txPackets, n, this.txMeta, this.txHeads, HEAD_STRIDE, this.txHeadLens!);
    else this.nq.write(this.txPackets, n, this.txMeta);
    // drop references so the buffers can be collected
    for (let i = 0; i < n; i++) this.txPackets[i] = EMPTY;
  }

  close(): void {
    if (this.closed) return;
    if (this.txCount > 0 || this.txDetachedCount > 0) this.flush();
    this.closed = true;
    this.nq.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  ref(): void {
    this.nq.ref();
  }
  unref(): void {
    this.nq.unref();
  }

  stats(): Record<string, number> {
    if (this.txThread && !this.closed) this.nq.sync();
    const c = this.counters;
    return {
      rxPackets: this.rxPkts,
      rxBytes: this.rxBytes,
      rxBursts: this.rxBursts,
      rxOffloadPackets: this.rxOffload,
      rxClaimed: this.rxClaimed,
      rxNoHandler: this.rxNoHandler,
      rxTruncated: c[C_RX_TRUNC]!,
      rxErrors: c[C_RX_ERR]!,
      txPackets: c[C_TX_PKTS]!,
      txBytes: c[C_TX_BYTES]!,
      txDrops: c[C_TX_DROPS]! + this.txQueuedDrops,
      txErrors: c[C_TX_ERR]!,
      txFlushes: this.txFlushes,
      txQueued: this.txCount,
      lastErrno: c[C_ERRNO]!,
      synEarlyDrops: c[C_SYN_EARLY]!,
      rxCsumVerified: c[C_RX_CSUM]!,
      rxGroMerged: c[C_RX_GRO]!,
      txDeferred: c[C_TX_DEFERRED]!,
    };
  }
}

const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// device

const PROBE_ORDER = [TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6, TUN_F.CSUM | TUN_F.TSO4, TUN_F.CSUM, 0];

export function describeOffloads(flags: number): OffloadState {
  const names: string[] = [];
  const table: [number, string][] = [
    [TUN_F.CSUM, 'csum'],
    [TUN_F.TSO4, 'tso4'],
    [TUN_F.TSO6, 'tso6'],
    [TUN_F.TSO_ECN, 'tso_ecn'],
    [TUN_F.UFO, 'ufo'],
    [TUN_F.USO4, 'uso4'],
    [TUN_F.USO6, 'uso6'],
  ];
  for (const [bit, n] of table) if (flags & bit) names.push(n);
  return {
    flags,
    csum: (flags & TUN_F.CSUM) !== 0,
    tso4: (flags & TUN_F.TSO4) !== 0,
    tso6: (flags & TUN_F.TSO6) !== 0,
    names,
  };
}

export class TunDevice implements Device {
  onReceive: ReceiveHandler | null = null;
  /** Called when a queue stops on a fatal receive error; without it a process warning is emitted. */
  onError: ((err: TunError) => void) | null = null;

  readonly name: string;
  readonly vnetHdr: boolean;
  readonly multiQueue: boolean;
  /** Receive coalescing asked for (TunOpenOptions.gro). */
  readonly gro: boolean;
  /** Deferred writes asked for (TunOpenOptions.txThread). */
  readonly txThread: boolean;
  /** 'tap': Ethernet frames (IFF_TAP); 'tun': IPv4 packets. */
  readonly mode: 'tun' | 'tap';
  /** true when this open created the interface (it vanishes on close). */
  readonly created: boolean;
  /** IFF_* flags reported by TUNGETIFF after open. */
  readonly ifFlags: number;
  private _mtu: number;
  private _offloads: OffloadState = describeOffloads(0);
  private readonly fdList: number[];
  private readonly qs: TunQueue[] = [];
  private closed = false;

  private constructor(
    info: { name: string; fds: number[]; created: boolean; flags: number },
    vnetHdr: boolean,
    multiQueue: boolean,
    mtu: number,
    mode: 'tun' | 'tap' = 'tun',
    gro = true,
    txThread = true,
  ) {
    this.mode = mode;
    this.gro = gro;
    this.txThread = txThread;
    this.name = info.name;
    this.fdList = info.fds;
    this.created = info.created;
    this.ifFlags = info.flags;
    this.vnetHdr = vnetHdr;
    this.multiQueue = multiQueue;
    this._mtu = mtu;
  }

  static open(opts: TunOpenOptions): TunDevice {
    const name = opts.name ?? '';
    checkName(name);
    const vnetHdr = opts.vnetHdr ?? false;
    const multiQueue = opts.multiQueue ?? false;
    const queues = multiQueue ? (opts.queues ?? 1) : 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 256) {
      throw new TunError('EINVAL', `invalid queue count ${String(opts.queues)}: must be an integer 1..256`);
    }
    if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 68 || opts.mtu > 65535)) {
      throw new TunError('EINVAL', `invalid MTU ${String(opts.mtu)}: must be an integer 68..65535`);
    }
    const rxBurst = opts.rxBurst ?? 64;
    const txBatchMax = opts.txBatchMax ?? 256;
    if (!Number.isInteger(rxBurst) || rxBurst < 1 || rxBurst > 1024) throw new TunError('EINVAL', 'rxBurst must be 1..1024');
    if (!Number.isInteger(txBatchMax) || txBatchMax < 1) throw new TunError('EINVAL', 'txBatchMax must be >= 1');
    if (opts.txQueueLen !== undefined && (!Number.isInteger(opts.txQueueLen) || opts.txQueueLen < 1 || opts.txQueueLen > 1_000_000)) {
      throw new TunError('EINVAL', `invalid txQueueLen ${String(opts.txQueueLen)}: must be an integer 1..1000000`);
    }

    const n = loadNative();
    const mode = opts.mode ?? 'tun';
    let info: { name: string; fds: number[]; created: boolean; flags: number };
    try {
      info = n.open(name, vnetHdr, multiQueue, queues, mode === 'tap');
    } catch (e) {
      throw openError(e, name, mode === 'tap' ? 'TAP' : 'TUN');
    }
    let dev: TunDevice | null = null;
    try {
      let mtu: number;
      try {
        if (opts.mtu !== undefined && n.getMtu(info.name) !== opts.mtu) n.setMtu(info.name, opts.mtu);
        mtu = n.getMtu(info.name);
      } catch (e) {
        const ne = e as NativeErr;
        throw new TunError(
          ne.code ?? 'EUNKNOWN',
          `cannot ${opts.mtu !== undefined ? `set MTU ${opts.mtu} on` : 'read the MTU of'} TUN device '${info.name}': ${ne.message ?? String(e)}`,
          ne.errno,
          ne.syscall,
        );
      }
      if (opts.txQueueLen !== undefined && info.created) {
        try {
          n.setTxQueueLen(info.name, opts.txQueueLen);
        } catch (e) {
          const ne = e as NativeErr;
          throw new TunError(
            ne.code ?? 'EUNKNOWN',
            `cannot set txqueuelen ${opts.txQueueLen} on TUN device '${info.name}': ${ne.message ?? String(e)}`,
            ne.errno,
            ne.syscall,
          );
        }
      }
      dev = new TunDevice(info, vnetHdr, multiQueue, mtu, mode, opts.gro !== false, opts.txThread !== false);
      // Offloads are per interface and survive on a persistent one: always start from a known state.
      const offloadMode = vnetHdr ? (opts.offloads ?? 'probe') : 'off';
      if (offloadMode === 'probe') dev.probeOffloads(opts.offloadMask);
      else dev.setOffload(0);
      if (opts.startQueues === false) return dev;
      for (let i = 0; i < info.fds.length; i++) dev.qs.push(new TunQueue(dev, info.fds[i]!, i, rxBurst, txBatchMax));
      for (const q of dev.qs) q.start();
      return dev;
    } catch (e) {
      if (dev && dev.qs.length > 0) {
        for (const q of dev.qs) q.close();
        for (let i = dev.qs.length; i < info.fds.length; i++) n.closeFd(info.fds[i]!);
      } else {
        for (const fd of info.fds) n.closeFd(fd);
      }
      throw e;
    }
  }

  get mtu(): number {
    return this._mtu;
  }

  get linkType(): 'ip' | 'ethernet' {
    return this.mode === 'tap' ? 'ethernet' : 'ip';
  }

  /** @internal TunQueueOwner: a TAP frame carries a 14-byte Ethernet header. */
  get linkHeaderLen(): number {
    return this.mode === 'tap' ? 14 : 0;
  }

  /** What the kernel accepted for TUNSETOFFLOAD (flags 0 without vnetHdr). */
  get offloads(): OffloadState {
    return this._offloads;
  }

  get queueCount(): number {
    return this.qs.length;
  }

  /** The queue fds, in queue order (with `startQueues: false`, nobody polls them here). */
  fds(): number[] {
    return [...this.fdList];
  }

  queue(i: number): TunQueue {
    const q = this.qs[i];
    if (!q) throw new TunError('EINVAL', `TUN device '${this.name}' has no queue ${i} (it has ${this.qs.length})`);
    return q;
  }

  /**
   * TUNSETOFFLOAD wrapper: true if the kernel accepted `flags` (TUN_F_*). Offloads need the
   * virtio header to describe partial checksums and GSO, so without vnetHdr only 0 is accepted.
   */
  setOffload(flags: number): boolean {
    if (this.closed) return false;
    if (!this.vnetHdr && flags !== 0) return false;
    const ok = loadNative().setOffload(this.fdList[0]!, flags >>> 0);
    if (ok) this._offloads = describeOffloads(flags >>> 0);
    return ok;
  }

  /**
   * Attaches a queue-steering eBPF program (TUNSETSTEERINGEBPF; steering.ts builds it):
   * from now on it, not the kernel's flow hash, picks the queue of every packet for us.
   * Throws a TunError with the kernel's reason (and the verifier's log) when refused.
   */
  setSteering(program: Buffer): void {
    if (this.closed) throw new TunError('EBADF', `TUN device '${this.name}' is closed`);
    try {
      loadNative().setSteeringBpf(this.fdList[0]!, program);
    } catch (e) {
      const err = e as NativeErr;
      throw new TunError(err.code ?? 'EIO', `cannot attach the steering program to '${this.name}': ${err.message}`);
    }
  }

  /**
   * Tries CSUM|TSO4|TSO6, then CSUM|TSO4, then CSUM, then none (each within `mask`);
   * returns what was accepted.
   */
  probeOffloads(mask = 0xff): OffloadState {
    for (const f of PROBE_ORDER) {
      if ((f & mask) !== f) continue;
      if (this.setOffload(f)) return this._offloads;
    }
    this._offloads = describeOffloads(0);
    return this._offloads;
  }

  send(packet: Buffer, meta?: OffloadMeta | null): void {
    this.qs[0]!.send(packet, meta);
  }

  sendWithHeader(header: Uint8Array, headerLength: number, packet: Buffer, meta?: OffloadMeta | null): void {
    this.qs[0]!.sendWithHeader(header, headerLength, packet, meta);
  }

  sendDetached(packet: Buffer): void {
    this.qs[0]!.sendDetached(packet);
  }

  setSynBudget(n: number): void {
    for (const q of this.qs) q.setSynBudget(n);
  }

  /** Busy polling over every queue (TunQueue.pollNow): packets delivered. */
  pollNow(): number {
    let n = 0;
    for (const q of this.qs) n += q.pollNow();
    return n;
  }

  allowSource(addr: number): void {
    for (const q of this.qs) q.allowSource(addr);
  }

  /** See TunQueue.claim: whichever queue delivered `packet` gives it away. */
  claim(packet: Buffer): boolean {
    for (const q of this.qs) if (q.claim(packet)) return true;
    return false;
  }

  flush(): void {
    for (const q of this.qs) q.flush();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const q of this.qs) q.close();
    // Unstarted queues: the fds are ours alone to close.
    if (this.qs.length === 0) for (const fd of this.fdList) loadNative().closeFd(fd);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Let the process exit while the device is open (the poll handles stop holding the loop). */
  unref(): void {
    for (const q of this.qs) q.unref();
  }
  ref(): void {
    for (const q of this.qs) q.ref();
  }

  /** @internal */
  reportError(err: TunError): void {
    if (this.onError) this.onError(err);
    else process.emitWarning(err.message, { code: err.code });
  }

  stats(): Record<string, number> {
    const sum: Record<string, number> = {};
    for (const q of this.qs) {
      const s = q.stats();
      for (const k of Object.keys(s)) {
        if (k === 'lastErrno') continue;
        sum[k] = (sum[k] ?? 0) + s[k]!;
      }
    }
    sum.queues = this.qs.length;
    return sum;
  }
}

/**
 * The interface's txqueuelen (SIOCGIFTXQLEN): how many packets the kernel queues for each
 * TUN queue's reader before it drops (TX dropped in `ip -s link`); 500 for a new TUN device.
 * Read in the calling thread's network namespace.
 */
export function txQueueLen(name: string): number {
  try {
    return loadNative().getTxQueueLen(name);
  } catch (e) {
    const ne = e as NativeErr;
    throw new TunError(ne.code ?? 'EUNKNOWN', `cannot read the txqueuelen of TUN device '${name}': ${ne.message ?? String(e)}`, ne.errno, ne.syscall);
  }
}

/**
 * Configures the kernel side of a TUN interface with iproute2: `ip addr add ADDR dev NAME`
 * (an address that is already there is fine) and `ip link set dev NAME [mtu N] up|down`.
 * Throws a TunError (code ERR_IP_COMMAND, or EINVAL for bad arguments) with one line saying
 * what failed.
 */
export function configureHostSide(name: string, opts: { hostAddr?: string; mtu?: number; up: boolean }): void {
  checkName(name);
  if (name === '' || name.includes('%')) throw new TunError('EINVAL', `configureHostSide: need a concrete interface name, got '${name}'`);
  if (opts.hostAddr !== undefined) {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(opts.hostAddr);
    if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) {
      throw new TunError('EINVAL', `configureHostSide: bad host address '${opts.hostAddr}' (want IPv4/prefix, e.g. 198.18.0.1/24)`);
    }
  }
  if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 68 || opts.mtu > 65535)) {
    throw new TunError('EINVAL', `configureHostSide: bad MTU ${String(opts.mtu)} (want 68..65535)`);
  }
  if (opts.hostAddr !== undefined) {
    // Already there (iproute2 says "File exists" or "Address already assigned"): fine.
    runIp(['addr', 'add', opts.hostAddr, 'dev', name], /File exists|Address already assigned/);
  }
  const link = ['link', 'set', 'dev', name];
  if (opts.mtu !== undefined) link.push('mtu', String(opts.mtu));
  link.push(opts.up ? 'up' : 'down');
  runIp(link);
}

function runIp(args: string[], okIf?: RegExp): void {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 10_000 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; status?: number | null };
    if (err.code === 'ENOENT') {
      throw new TunError('ERR_IP_COMMAND', `configureHostSide: 'ip' not found (install iproute2)`);
    }
    const stderr = (err.stderr ?? '').toString().trim();
    if (okIf && okIf.test(stderr)) return;
    const first = stderr.split('\n')[0] || (err.status != null ? `exit status ${err.status}` : err.message.split('\n')[0]);
    throw new TunError('ERR_IP_COMMAND', `configureHostSide: 'ip ${args.join(' ')}' failed: ${first}`);
  }
}
