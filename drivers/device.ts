/**
 * The link-layer device contract every driver implements (TUN, TAP, memory, pcap wrapper).
 *
 * What a frame is depends on `linkType`: 'ip' (the default; TUN in IFF_TUN|IFF_NO_PI
 * mode, the memory link) carries raw IPv4 packets, 'ethernet' (TAP in IFF_TAP|IFF_NO_PI
 * mode, the memory Ethernet segment) carries Ethernet II frames without FCS. The stack
 * sits on an 'ip' device; on an 'ethernet' one it sits on an EthernetInterface
 * (stack/iface/ethernet.ts), which is itself an 'ip' device over it.
 * Receive is push-based and batched: the driver calls `onReceive` once per burst.
 * The buffers handed to `onReceive` are only valid during that call (drivers may
 * reuse a slab); the stack copies whatever it keeps.
 * Transmit is batched: `send` queues a packet (the driver takes ownership of the
 * buffer and must not let the caller's later writes matter: the stack never reuses a
 * buffer it gave to `send`), `flush` hands the queued batch to the kernel.
 */

/**
 * The virtio-net header (virtio 1.x 5.1.6, struct virtio_net_hdr in Linux's
 * include/uapi/linux/virtio_net.h) that a TUN/TAP device with IFF_VNET_HDR puts before
 * every packet: the one place its constants are defined.
 */
export const enum VirtioNetHdr {
  /** Bytes of the header without num_buffers (what TUNSETVNETHDRSZ 10 selects). */
  LEN = 10,
  /** flags: the checksum is partial; the device completes it from csum_start/csum_offset. */
  F_NEEDS_CSUM = 1,
  /** flags: the checksum was verified (receive). */
  F_DATA_VALID = 2,
  /** gso_type values. */
  GSO_NONE = 0,
  GSO_TCPV4 = 1,
  GSO_UDP = 3,
  GSO_TCPV6 = 4,
  GSO_UDP_L4 = 5,
  /** gso_type bit: the TCP segments carry ECN CWR. */
  GSO_ECN = 0x80,
}

export interface OffloadMeta {
  /** virtio-net header fields, when the device runs with IFF_VNET_HDR (VirtioNetHdr above). */
  flags: number; // F_NEEDS_CSUM, F_DATA_VALID
  gsoType: number; // GSO_NONE, GSO_TCPV4, ...
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  /**
   * The sender never writes this buffer again (TCP's freshly built segments): a device
   * may keep it and write it later, from another thread (TunOpenOptions.txThread).
   * Absent or false: the buffer may be reused once send() or flush() has returned.
   */
  owned?: boolean;
}

/**
 * A received packet whose TCP or UDP checksum is known to be good (DATA_VALID and nothing
 * else): the segments cut from a super-segment, or a packet the TUN addon checked. One
 * shared frozen object, so that saying so allocates nothing.
 */
export const CHECKSUM_VERIFIED: OffloadMeta = Object.freeze({
  flags: VirtioNetHdr.F_DATA_VALID,
  gsoType: VirtioNetHdr.GSO_NONE,
  hdrLen: 0,
  gsoSize: 0,
  csumStart: 0,
  csumOffset: 0,
});

export type ReceiveHandler = (packets: Buffer[], count: number, meta: (OffloadMeta | null)[] | null) => void;

export type LinkType = 'ip' | 'ethernet';

export interface Device {
  readonly name: string;
  /** What a frame is (see above); absent means 'ip'. */
  readonly linkType?: LinkType;
  /** Largest IP packet the device carries without segmentation offload (for Ethernet: the payload, not the frame). */
  readonly mtu: number;
  /** Set by the stack; called with each received burst. */
  onReceive: ReceiveHandler | null;
  /**
   * Queue one frame for transmission (meta only when the device supports offloads). The
   * driver owns `packet` and `meta` from here on (an Ethernet interface adjusts the meta's
   * offsets for its header in place).
   */
  send(packet: Buffer, meta?: OffloadMeta | null): void;
  /**
   * Optional gather send: the frame is `header[0, headerLength)` followed by `packet`, written
   * as one (writev), so a link header is added without copying a 64 KiB segment. The driver
   * copies the header bytes before returning (the caller reuses its buffer) and owns `packet`.
   * Offsets in `meta` count from the start of the header.
   */
  sendWithHeader?(header: Uint8Array, headerLength: number, packet: Buffer, meta?: OffloadMeta | null): void;
  /**
   * Optional: a small IP packet with no order to keep against any other (a stateless
   * reply: a SYN cookie, a reset for a segment of no connection), which the driver may
   * write from another thread at the next flush. Absent: the stack uses send().
   */
  sendDetached?(packet: Buffer): void;
  /**
   * Optional early SYN drop (a SYN flood's defence below the stack): while the device is
   * backlogged, at most `n` bare SYNs per burst from sources not allowed (allowSource)
   * reach the stack; the rest are dropped before any JavaScript runs. 0: off.
   */
  setSynBudget?(n: number): void;
  /** Optional: `addr` completed a handshake, so its SYNs are never dropped early. */
  allowSource?(addr: number): void;
  /** Write every queued packet. */
  flush(): void;
  /**
   * Optional zero-copy receive: during `onReceive`, the stack may ask to keep one of the
   * burst's packet buffers beyond the call. true: it is the stack's now (the driver reads
   * into other memory from then on); false: copy what you keep.
   */
  claim?(packet: Buffer): boolean;
  /** Stop receiving and release the device. Idempotent. */
  close(): void;
  /** Counters the driver keeps (rx/tx packets, bytes, drops). */
  stats(): Record<string, number>;
}
