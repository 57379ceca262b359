/**
 * Connection descriptors: what a host remembers about each TCP connection it serves, so
 * that the connection stays on it after a convergence moves its bucket to another host
 * (the new owner sees the bucket is not idle here and leaves the connection's segments
 * alone). Descriptors come in blocks, as Windows allocates them: DescriptorsPerAlloc at a
 * time, at most MaxDescriptorAllocs blocks (Windows 2000 registry: 512 and 512; Server
 * 2008 replaced them with MaximumConnectionDescriptors, 262,144 = 512 x 512). A block,
 * once allocated, is kept (its descriptors return to the free list).
 *
 * When no descriptor can be had, the new connection's SYN is dropped and counted
 * (NlbDescriptorsExhausted): the client retries and the exhaustion is visible. What
 * Windows does then is not public; dropping is our choice, because a connection accepted
 * without a descriptor would be reset by the bucket's next owner after a convergence.
 *
 * Per port rule and bucket the table counts what it holds there (TCP descriptors, IPsec
 * descriptors, extended-affinity clients): a bucket with a count above zero is not idle,
 * which is what the idle map of the heartbeat says.
 */
import { NLB_MAX_BUCKETS, NLB_RULE_SLOTS } from '../wire/nlb';

export interface TcpDescriptor {
  remoteAddr: number;
  remotePort: number;
  localPort: number;
  rule: number;
  bucket: number;
  /** Affinity key (client address, or its /24), for extended affinity. */
  key: number;
  createdAt: number;
  finSeen: boolean;
  /** Next descriptor with the same remote address and port (another local port). */
  next: TcpDescriptor | null;
  inUse: boolean;
}

function blank(): TcpDescriptor {
  return { remoteAddr: 0, remotePort: 0, localPort: 0, rule: 0, bucket: 0, key: 0, createdAt: 0, finSeen: false, next: null, inUse: false };
}

export interface DescriptorLimits {
  perAlloc: number;
  maxAllocs: number;
}

export class DescriptorTable {
  private readonly byRemote = new Map<number, TcpDescriptor>();
  private readonly free: TcpDescriptor[] = [];
  /** Per (rule, bucket): descriptors, IPsec descriptors and sticky clients held there. */
  readonly held = new Uint32Array(NLB_RULE_SLOTS * NLB_MAX_BUCKETS);
  blocks = 0;
  capacity = 0;
  inUse = 0;
  allocated = 0;
  freed = 0;
  exhausted = 0;

  constructor(
    private readonly limits: () => DescriptorLimits,
    private readonly onBlock: (blocks: number, perAlloc: number, capacity: number) => void,
  ) {}

  private static key(addr: number, port: number): number {
    return addr * 65536 + port; // < 2^48: exact in a double
  }

  find(remoteAddr: number, remotePort: number, localPort: number): TcpDescriptor | undefined {
    let d = this.byRemote.get(DescriptorTable.key(remoteAddr, remotePort));
    while (d !== undefined && d !== null) {
      if (d.localPort === localPort) return d;
      d = d.next ?? undefined;
    }
    return undefined;
  }

  /** A descriptor for a new connection, or null when every block is in use and no more may be allocated. */
  alloc(remoteAddr: number, remotePort: number, localPort: number, rule: number, bucket: number, key: number, now: number): TcpDescriptor | null {
    if (this.free.length === 0 && !this.grow()) {
      this.exhausted++;
      return null;
    }
    const d = this.free.pop()!;
    d.remoteAddr = remoteAddr;
    d.remotePort = remotePort;
    d.localPort = localPort;
    d.rule = rule;
    d.bucket = bucket;
    d.key = key;
    d.createdAt = now;
    d.finSeen = false;
    d.inUse = true;
    const k = DescriptorTable.key(remoteAddr, remotePort);
    d.next = this.byRemote.get(k) ?? null;
    this.byRemote.set(k, d);
    this.inUse++;
    this.allocated++;
    this.held[rule * NLB_MAX_BUCKETS + bucket]++;
    return d;
  }

  release(d: TcpDescriptor): void {
    if (!d.inUse) return;
    const k = DescriptorTable.key(d.remoteAddr, d.remotePort);
    let p = this.byRemote.get(k) ?? null,
      prev: TcpDescriptor | null = null;
    while (p !== null && p !== d) {
      prev = p;
      p = p.next;
    }
    if (p === d) {
      if (prev) prev.next = d.next;
      else if (d.next) this.byRemote.set(k, d.next);
      else this.byRemote.delete(k);
    }
    d.next = null;
    d.inUse = false;
    this.inUse--;
    this.freed++;
    this.held[d.rule * NLB_MAX_BUCKETS + d.bucket]--;
    this.free.push(d);
  }

  private grow(): boolean {
    const { perAlloc, maxAllocs } = this.limits();
    if (this.blocks >= maxAllocs) return false;
    for (let i = 0; i < perAlloc; i++) this.free.push(blank());
    this.blocks++;
    this.capacity += perAlloc;
    this.onBlock(this.blocks, perAlloc, this.capacity);
    return true;
  }

  /** Every descriptor in use (a snapshot: the caller may release while iterating). */
  all(): TcpDescriptor[] {
    const out: TcpDescriptor[] = [];
    for (const head of this.byRemote.values()) for (let d: TcpDescriptor | null = head; d !== null; d = d.next) out.push(d);
    return out;
  }

  /** Descriptors in use per port rule. */
  perRule(rules: number): number[] {
    const out = new Array<number>(rules).fill(0);
    for (const d of this.all()) if (d.rule < rules) out[d.rule]!++;
    return out;
  }

  /** The idle map of a rule: bucket b's bit is set when nothing is held there. */
  idleBits(rule: number, buckets: number): bigint {
    let bits = 0n;
    const base = rule * NLB_MAX_BUCKETS;
    for (let b = 0; b < buckets; b++) if (this.held[base + b] === 0) bits |= 1n << BigInt(b);
    return bits;
  }

  clear(): void {
    for (const d of this.all()) this.release(d);
    this.held.fill(0);
  }
}
