/**
 * The link-layer device contract every driver implements (TUN, memory, pcap wrapper).
 *
 * Frames are raw IPv4 packets (TUN in IFF_TUN|IFF_NO_PI mode: no Ethernet header).
 * Receive is push-based and batched: the driver calls `onReceive` once per burst.
 * The buffers handed to `onReceive` are only valid during that call (drivers may
 * reuse a slab); the stack copies whatever it keeps.
 * Transmit is batched: `send` queues a packet (the driver takes ownership of the
 * buffer and must not let the caller's later writes matter: the stack never reuses a
 * buffer it gave to `send`), `flush` hands the queued batch to the kernel.
 */
export interface OffloadMeta {
  /** virtio-net header fields, when the device runs with IFF_VNET_HDR. */
  flags: number;       // VIRTIO_NET_HDR_F_NEEDS_CSUM = 1, F_DATA_VALID = 2
  gsoType: number;     // VIRTIO_NET_HDR_GSO_NONE = 0, TCPV4 = 1, TCPV6 = 4
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export type ReceiveHandler = (packets: Buffer[], count: number, meta: (OffloadMeta | null)[] | null) => void;

export interface Device {
  readonly name: string;
  /** Largest IP packet the device carries without segmentation offload. */
  readonly mtu: number;
  /** Set by the stack; called with each received burst. */
  onReceive: ReceiveHandler | null;
  /** Queue one IPv4 packet for transmission (meta only when the device supports offloads). */
  send(packet: Buffer, meta?: OffloadMeta | null): void;
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
