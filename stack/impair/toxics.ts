/**
 * Connection-level impairments: toxiproxy's toxics, with its names, attributes and units,
 * applied to the stack's own TCP sockets. They live above the socket API and wrap the
 * stream an application (a service) reads and writes; the TCP core knows nothing of them.
 *
 * Streams, as toxiproxy defines them: `upstream` is the client -> server direction,
 * `downstream` server -> client. For a connection a service accepted the stack is the
 * server: upstream is what the peer sends (the service reads it), downstream what the
 * service writes. For a connection the stack opened, the other way round.
 *
 * Each direction of a wrapped connection is a link: a chain of stages, one per toxic, in
 * the order they were added (toxiproxy appends too). A stage passes data, an end of stream
 * (the peer's or the application's FIN), or a close it caused itself, on to the next; the
 * end of the chain writes to the peer or pushes to the application. What toxiproxy's
 * toxics do, per their code:
 *   latency      every chunk waits latency +- jitter ms (a whole ms drawn uniformly from
 *                [-jitter, jitter)); chunks keep their order.
 *   bandwidth    at most `rate` KB/s (1 KB = 1000 bytes): a chunk leaves len/rate ms after
 *                the previous one, cut into 100 ms pieces when large.
 *   slow_close   data passes; the end of the stream waits `delay` ms.
 *   timeout      data is dropped; after `timeout` ms the connection is closed (0: never,
 *                data dropped until the toxic is removed).
 *   reset_peer   at the first data (or end), wait `timeout` ms, then reset the connection
 *                (RST to the peer, ECONNRESET to the application); the data is dropped.
 *   slicer       chunks are cut into pieces of about average_size +- size_variation bytes
 *                (toxiproxy's halving), `delay` microseconds apart.
 *   limit_data   `bytes` bytes pass, then the connection is closed.
 * A close caused by a toxic travels the rest of the chain like an end of stream (a later
 * latency delays it), and then closes the whole connection: the peer gets a FIN after what
 * was already written (an RST for reset_peer), the application's socket ends and closes.
 *
 * toxicity: the probability that a toxic applies to a connection, drawn once per
 * connection when the toxic meets it (seeded). Toxics added later apply to the wrapped
 * connections already open. A connection is wrapped when it opens while at least one toxic
 * exists: with no toxic the sockets are the stack's own, untouched (nothing costs a stream
 * hop). Removing a toxic passes on at once what it holds.
 *
 * Time comes from the scheduler the stack runs on (read at the socket API edge, like
 * FsSocket does); timers are that scheduler's.
 */
import { Duplex } from 'node:stream';
import type { NetApi, TcpServerLike, TcpSocketLike } from '../api/net-api';
import { CodedError } from '../util/errors';
import { parseIpv4, prefixMask } from '../wire/addr';
import { Rng } from './random';
import type { Stream, ToxicImpairSpec, ToxicMatch } from './spec';

export interface ToxicScheduler {
  now(): number;
  at(at: number, fn: () => void): unknown;
  cancel(handle: unknown): void;
}

export interface ToxicCounters {
  /** Connections the toxic's match took. */
  connections: number;
  /** Of those, the ones its toxicity let it act on. */
  affected: number;
  /** Bytes that went through it. */
  bytes: number;
  /** Chunks that left later than they came. */
  delayed: number;
  /** Bytes it dropped (timeout, reset_peer, limit_data). */
  dropped: number;
  /** Connections it closed (timeout, limit_data). */
  closed: number;
  /** Connections it reset (reset_peer). */
  resets: number;
}

/** One installed toxic. */
export class Toxic {
  readonly counters: ToxicCounters = { connections: 0, affected: 0, bytes: 0, delayed: 0, dropped: 0, closed: 0, resets: 0 };
  /** Per-toxic randomness: toxicity first, then jitter and slice sizes, in connection order. */
  readonly rng: Rng;
  constructor(
    readonly id: number,
    readonly spec: ToxicImpairSpec,
    readonly seed: number,
    readonly addedAt: number,
  ) {
    this.rng = new Rng(seed, 11);
  }

  get stream(): Stream {
    return this.spec.stream;
  }
  attr(name: string): number {
    return this.spec.attributes[name] ?? 0;
  }

  matches(localPort: number | undefined, remoteAddress: string | undefined, remotePort: number | undefined): boolean {
    const m: ToxicMatch = this.spec.match;
    if (m.port && (localPort === undefined || localPort < m.port.lo || localPort > m.port.hi)) return false;
    if (m.peerPort && (remotePort === undefined || remotePort < m.peerPort.lo || remotePort > m.peerPort.hi)) return false;
    if (m.peer) {
      const a = remoteAddress === undefined ? null : parseIpv4(remoteAddress);
      if (a === null || (a & prefixMask(m.peer.prefix)) >>> 0 !== m.peer.addr) return false;
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// links and stages

const END = 1,
  CLOSE = 2,
  RESET = 3;
type Marker = typeof END | typeof CLOSE | typeof RESET;
type Item = Buffer | Marker;

interface Timed {
  at: number;
  item: Item;
}

/** One toxic on one direction of one connection. */
abstract class Stage {
  protected readonly q: Timed[] = [];
  /** When the last queued item leaves: later items never overtake. */
  protected last = -Infinity;
  private handle: unknown = null;
  private handleAt = Infinity;
  /** A marker went through: what comes after it is ignored. */
  protected done = false;

  constructor(
    readonly toxic: Toxic,
    protected readonly link: Link,
  ) {}

  abstract write(chunk: Buffer, now: number): void;
  /** End of stream or a close from before this stage. */
  mark(m: Marker, now: number): void {
    if (this.done) return;
    this.done = true;
    this.schedule(Math.max(this.last, now), m, now);
  }

  protected schedule(at: number, item: Item, now: number): void {
    if (at < this.last) at = this.last;
    this.last = at;
    if (Buffer.isBuffer(item) && at > now) this.toxic.counters.delayed++;
    this.q.push({ at, item });
    this.pump(now);
  }

  /** Sends on what is due; arms a wake-up for the rest. */
  protected pump(now: number): void {
    while (this.q.length > 0 && this.q[0]!.at <= now) {
      const { item } = this.q.shift()!;
      if (Buffer.isBuffer(item)) this.toxic.counters.bytes += item.length;
      this.link.pass(this, item, now);
      if (this.link.gone) return;
    }
    if (this.q.length > 0) this.arm(this.q[0]!.at);
    else this.disarm();
  }

  protected arm(at: number): void {
    if (at === this.handleAt) return;
    this.disarm();
    this.handleAt = at;
    const s = this.link.sock.scheduler;
    this.handle = s.at(at, () => {
      this.handle = null;
      this.handleAt = Infinity;
      this.onTimer(at);
    });
  }

  protected onTimer(at: number): void {
    // A real timer can fire up to a millisecond early (whole-ms timers): wait again then.
    this.link.sock.run((now) => {
      if (now < at) this.arm(at);
      else this.pump(now);
    });
  }

  protected disarm(): void {
    if (this.handle !== null) this.link.sock.scheduler.cancel(this.handle);
    this.handle = null;
    this.handleAt = Infinity;
  }

  /** Removal: what is held, in order; timers stop. */
  takeHeld(): Item[] {
    this.disarm();
    const items = this.q.map((t) => t.item);
    this.q.length = 0;
    return items;
  }

  cancel(): void {
    this.disarm();
    this.q.length = 0;
  }
}

class LatencyStage extends Stage {
  write(chunk: Buffer, now: number): void {
    if (this.done) return;
    const jitter = this.toxic.attr('jitter');
    let delay = this.toxic.attr('latency');
    if (jitter > 0) delay += this.toxic.rng.below(2 * jitter) - jitter;
    this.schedule(now + Math.max(0, delay), chunk, now);
  }
}

class BandwidthStage extends Stage {
  write(chunk: Buffer, now: number): void {
    if (this.done) return;
    const rate = this.toxic.attr('rate'); // KB/s = bytes per ms
    if (rate <= 0) {
      this.schedule(now, chunk, now);
      return;
    }
    const piece = rate * 100; // toxiproxy sends large chunks in 100 ms slices
    let t = Math.max(now, this.last);
    for (let off = 0; off < chunk.length; off += piece) {
      const part = chunk.subarray(off, Math.min(chunk.length, off + piece));
      t += part.length / rate;
      this.schedule(t, part, now);
    }
  }
}

class SlowCloseStage extends Stage {
  write(chunk: Buffer, now: number): void {
    if (!this.done) this.schedule(now, chunk, now);
  }
  override mark(m: Marker, now: number): void {
    if (this.done) return;
    this.done = true;
    this.schedule(Math.max(this.last, now) + this.toxic.attr('delay'), m, now);
  }
}

class TimeoutStage extends Stage {
  constructor(toxic: Toxic, link: Link, now: number) {
    super(toxic, link);
    const t = toxic.attr('timeout');
    if (t > 0) {
      this.done = false;
      this.q.push({ at: now + t, item: CLOSE });
      this.last = now + t;
      this.arm(now + t);
    }
  }
  write(chunk: Buffer): void {
    this.toxic.counters.dropped += chunk.length;
    this.link.dropped(chunk.length);
  }
  override mark(m: Marker, now: number): void {
    // An end from before: pass it on (toxiproxy closes its stub on EOF), at once.
    if (this.done) return;
    this.done = true;
    this.q.length = 0;
    this.last = -Infinity;
    this.schedule(now, m, now);
  }
}

class ResetPeerStage extends Stage {
  private armed = false;
  write(chunk: Buffer, now: number): void {
    this.toxic.counters.dropped += chunk.length;
    this.link.dropped(chunk.length);
    this.trigger(now);
  }
  override mark(_m: Marker, now: number): void {
    this.trigger(now);
  }
  private trigger(now: number): void {
    if (this.armed) return;
    this.armed = true;
    this.done = true;
    this.schedule(now + this.toxic.attr('timeout'), RESET, now);
  }
}

class SlicerStage extends Stage {
  /** toxiproxy's slicer: halve the range until a piece is within the variation of the average. */
  private cut(start: number, end: number, out: number[]): void {
    const avg = this.toxic.attr('average_size');
    const variation = this.toxic.attr('size_variation');
    if (end - start - avg <= variation) {
      out.push(end);
      return;
    }
    let mid = start + Math.floor((end - start) / 2);
    if (variation > 0) mid += this.toxic.rng.below(variation * 2) - variation;
    this.cut(start, mid, out);
    this.cut(mid, end, out);
  }
  write(chunk: Buffer, now: number): void {
    if (this.done) return;
    const ends: number[] = [];
    this.cut(0, chunk.length, ends);
    const gap = this.toxic.attr('delay') / 1000; // microseconds
    let t = Math.max(now, this.nextFree);
    let start = 0;
    for (const end of ends) {
      this.schedule(t, chunk.subarray(start, end), now);
      start = end;
      t += gap;
    }
    // The pause after the last piece holds back the next chunk, as toxiproxy's sleep does.
    this.nextFree = t;
  }
  private nextFree = -Infinity;
}

class LimitDataStage extends Stage {
  private sent = 0;
  write(chunk: Buffer, now: number): void {
    if (this.done) {
      this.toxic.counters.dropped += chunk.length;
      this.link.dropped(chunk.length);
      return;
    }
    const left = Math.max(0, this.toxic.attr('bytes') - this.sent);
    const pass = chunk.length <= left ? chunk : chunk.subarray(0, left);
    if (pass.length < chunk.length) {
      this.toxic.counters.dropped += chunk.length - pass.length;
      this.link.dropped(chunk.length - pass.length);
    }
    if (pass.length > 0) {
      this.sent += pass.length;
      this.schedule(now, pass, now);
    }
    if (this.sent >= this.toxic.attr('bytes')) {
      this.done = true;
      this.schedule(now, CLOSE, now);
    }
  }
}

function newStage(t: Toxic, link: Link, now: number): Stage {
  switch (t.spec.type) {
    case 'latency':
      return new LatencyStage(t, link);
    case 'bandwidth':
      return new BandwidthStage(t, link);
    case 'slow_close':
      return new SlowCloseStage(t, link);
    case 'timeout':
      return new TimeoutStage(t, link, now);
    case 'reset_peer':
      return new ResetPeerStage(t, link);
    case 'slicer':
      return new SlicerStage(t, link);
    case 'limit_data':
      return new LimitDataStage(t, link);
  }
}

/** One direction of a wrapped connection: its toxics, then the sink. */
class Link {
  readonly stages: Stage[] = [];
  /** Bytes inside the stages (for back-pressure). */
  pending = 0;
  gone = false;

  constructor(
    readonly sock: ToxicSocket,
    private readonly sinkData: (b: Buffer) => void,
    private readonly sinkMark: (m: Marker) => void,
  ) {}

  write(chunk: Buffer, now: number): void {
    if (this.gone) return;
    if (this.stages.length === 0) {
      this.sinkData(chunk);
      return;
    }
    this.pending += chunk.length;
    this.stages[0]!.write(chunk, now);
  }

  mark(m: Marker, now: number): void {
    if (this.gone) return;
    if (this.stages.length === 0) this.sinkMark(m);
    else this.stages[0]!.mark(m, now);
  }

  /** What stage `from` lets through goes to the next stage or the sink. */
  pass(from: Stage | null, item: Item, now: number): void {
    if (this.gone) return;
    const i = from === null ? -1 : this.stages.indexOf(from);
    const next = this.stages[i + 1];
    if (next) {
      if (Buffer.isBuffer(item)) next.write(item, now);
      else next.mark(item, now);
      return;
    }
    if (Buffer.isBuffer(item)) {
      this.pending -= item.length;
      this.sinkData(item);
    } else {
      this.sinkMark(item);
    }
    this.sock.pressure();
  }

  dropped(n: number): void {
    this.pending -= n;
    this.sock.pressure();
  }

  add(t: Toxic, now: number): void {
    this.stages.push(newStage(t, this, now));
  }

  remove(t: Toxic, now: number): void {
    const i = this.stages.findIndex((s) => s.toxic === t);
    if (i < 0) return;
    const s = this.stages[i]!;
    const held = s.takeHeld();
    this.stages.splice(i, 1);
    // What it held continues from where it was, through the rest of the chain.
    const before = i > 0 ? this.stages[i - 1]! : null;
    for (const item of held) {
      if (Buffer.isBuffer(item)) this.pending -= item.length;
      if (before) this.pass(before, item, now);
      else if (Buffer.isBuffer(item)) this.write(item, now);
      else this.mark(item, now);
    }
  }

  close(): void {
    this.gone = true;
    for (const s of this.stages) s.cancel();
  }
}

// ---------------------------------------------------------------------------------------------
// the wrapped socket

/** Above this many bytes held by a link's toxics, reads and writes wait. */
const HIGH_WATER = 1 << 20;

export type SocketRole = 'server' | 'client';

type Inner = TcpSocketLike & { resetAndDestroy?: () => unknown; allowHalfOpen?: boolean; connecting?: boolean };

export class ToxicSocket extends Duplex implements TcpSocketLike {
  /** Toward the application (what the peer sent). */
  private readonly inbound: Link;
  /** Toward the peer (what the application wrote). */
  private readonly outbound: Link;
  private readonly attached = new Set<Toxic>();
  private writeCb: ((err?: Error | null) => void) | null = null;
  private finalCb: ((err?: Error | null) => void) | null = null;
  private innerBlocked = false;
  private innerEnded = false;
  private closing = false;
  readonly remoteFamily = 'IPv4';

  constructor(
    readonly inner: Inner,
    readonly role: SocketRole,
    readonly registry: ToxicRegistry,
  ) {
    super({ allowHalfOpen: inner.allowHalfOpen ?? false, highWaterMark: 64 * 1024 });
    // The wrapper decides when the peer gets our FIN: delayed data must not be cut off
    // by the inner socket ending its side on its own.
    inner.allowHalfOpen = true;
    this.inbound = new Link(
      this,
      (b) => {
        if (!this.push(b)) this.inner.pause();
      },
      (m) => this.inboundMark(m),
    );
    this.outbound = new Link(
      this,
      (b) => this.toPeer(b),
      (m) => this.outboundMark(m),
    );
    inner.on('data', (d: Buffer) => this.run((now) => this.inbound.write(d, now)));
    inner.on('end', () => {
      this.innerEnded = true;
      this.run((now) => this.inbound.mark(END, now));
    });
    inner.on('error', (e: Error) => this.destroy(e));
    // Closed without an end (a reset, a destroy): nothing more will come either way.
    inner.on('close', () => {
      if (!this.innerEnded && !this.closing) this.destroy();
    });
    inner.on('drain', () => {
      this.innerBlocked = false;
      this.pressure();
    });
    inner.on('timeout', () => this.emit('timeout'));
    inner.on('connect', () => this.emit('connect'));
    inner.on('ready', () => this.emit('ready'));
    this.once('close', () => registry.forget(this));
    for (const t of registry.toxics()) this.attach(t, registry.scheduler.now());
  }

  get scheduler(): ToxicScheduler {
    return this.registry.scheduler;
  }

  /** Runs work at the scheduler's now (the socket API edge reads the time). */
  run(fn: (now: number) => void): void {
    fn(this.scheduler.now());
  }

  /** Upstream is client -> server: inbound for an accepted connection, outbound for one we opened. */
  private link(s: Stream): Link {
    return (s === 'upstream') === (this.role === 'server') ? this.inbound : this.outbound;
  }

  attach(t: Toxic, now: number): void {
    if (this.attached.has(t) || this.closing) return;
    if (!t.matches(this.inner.localPort, this.inner.remoteAddress, this.inner.remotePort)) return;
    t.counters.connections++;
    // toxicity: once per connection, as toxiproxy rolls it per link.
    if (t.spec.toxicity < 1 && !(t.rng.next() < t.spec.toxicity)) return;
    t.counters.affected++;
    this.attached.add(t);
    this.link(t.stream).add(t, now);
  }

  detach(t: Toxic, now: number): void {
    if (!this.attached.delete(t)) return;
    this.link(t.stream).remove(t, now);
  }

  // -- sinks

  private toPeer(b: Buffer): void {
    if (this.inner.destroyed || !this.inner.writable) return;
    if (!this.inner.write(b)) this.innerBlocked = true;
  }

  private outboundMark(m: Marker): void {
    if (m === END) {
      if (!this.inner.destroyed && !this.inner.writableEnded) this.inner.end();
      this.callFinal();
      return;
    }
    this.closeBy(m);
  }

  private inboundMark(m: Marker): void {
    // The application's socket ends and (both sides done) closes by itself, as net.Socket does.
    if (m === END) {
      this.push(null);
      return;
    }
    this.closeBy(m);
  }

  private callFinal(): void {
    const f = this.finalCb;
    this.finalCb = null;
    if (f) f();
  }

  /**
   * A toxic closed the link: the whole connection closes (toxiproxy closes the
   * connection whose link ended). At once: the application hears the end of what already
   * reached it, and nothing more comes from the peer. At the end of this turn of the event
   * loop (so that what the application writes in answer to the data it just got still goes
   * out): the peer gets a FIN after everything written, the socket is let go. reset_peer:
   * RST to the peer and ECONNRESET to the application, at once.
   */
  private closeBy(m: Marker): void {
    if (this.closing) return;
    this.closing = true;
    const inner = this.inner;
    for (const t of this.attached) {
      if (m === RESET && t.spec.type === 'reset_peer') t.counters.resets++;
      if (m === CLOSE && (t.spec.type === 'timeout' || t.spec.type === 'limit_data')) t.counters.closed++;
    }
    this.inbound.close();
    if (m === RESET) {
      this.outbound.close();
      if (typeof inner.resetAndDestroy === 'function') inner.resetAndDestroy();
      else inner.destroy();
      this.destroy(new CodedError('ECONNRESET', 'read ECONNRESET (reset_peer toxic)'));
      return;
    }
    // The peer's further data is read and ignored, so that unread bytes do not turn our
    // close into a reset.
    inner.removeAllListeners('data');
    inner.on('data', () => {});
    inner.resume();
    if (!this.readableEnded) this.push(null);
    setImmediate(() => {
      this.outbound.close();
      const letGo = () => {
        while (inner.read() !== null) {
          /* discard */
        }
        inner.destroy();
      };
      if (inner.writableFinished || inner.destroyed) letGo();
      else {
        inner.once('finish', letGo);
        if (!inner.writableEnded) inner.end();
      }
      this.callFinal();
      this.destroy();
    });
  }

  /** Back-pressure both ways, after anything left a link. */
  pressure(): void {
    if (this.inbound.pending > HIGH_WATER) this.inner.pause();
    const cb = this.writeCb;
    if (cb && !this.innerBlocked && this.outbound.pending <= HIGH_WATER) {
      this.writeCb = null;
      cb();
    }
  }

  // -- stream.Duplex

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.inner.destroyed || this.outbound.gone) {
      cb(new CodedError('EPIPE', 'write EPIPE'));
      return;
    }
    this.run((now) => this.outbound.write(chunk, now));
    if (this.innerBlocked || this.outbound.pending > HIGH_WATER) this.writeCb = cb;
    else cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    // 'finish' waits until the end has gone through the toxics and reached the peer's socket.
    this.finalCb = cb;
    if (this.outbound.gone) {
      this.callFinal();
      return;
    }
    this.run((now) => this.outbound.mark(END, now));
  }

  override _read(): void {
    if (this.inbound.pending <= HIGH_WATER && !this.inner.destroyed) this.inner.resume();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.inbound.close();
    this.outbound.close();
    const w = this.writeCb;
    this.writeCb = null;
    if (w) w(err ?? new CodedError('EPIPE', 'write EPIPE'));
    // Both sides done (the end went through, the peer's end reached us): the inner socket
    // finishes by itself, with nothing cut off. Otherwise the application let go early:
    // the inner socket goes as a destroyed net.Socket would (FIN, or RST over unread data).
    const completed = !err && this.readableEnded && this.writableFinished;
    if (!this.inner.destroyed && !this.closing && !completed) this.inner.destroy();
    cb(err);
  }

  /** Sends a RST and destroys the socket (Node's socket.resetAndDestroy). */
  resetAndDestroy(): this {
    this.closing = true;
    if (typeof this.inner.resetAndDestroy === 'function') this.inner.resetAndDestroy();
    else this.inner.destroy();
    return this.destroy();
  }

  // -- the net.Socket surface, from the inner socket
  get remoteAddress(): string | undefined {
    return this.inner.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.inner.remotePort;
  }
  get localAddress(): string | undefined {
    return this.inner.localAddress;
  }
  get localPort(): number | undefined {
    return this.inner.localPort;
  }
  get connecting(): boolean {
    return this.inner.connecting ?? false;
  }
  get bytesRead(): number {
    return (this.inner as unknown as { bytesRead?: number }).bytesRead ?? 0;
  }
  get bytesWritten(): number {
    return (this.inner as unknown as { bytesWritten?: number }).bytesWritten ?? 0;
  }
  setNoDelay(noDelay?: boolean): this {
    this.inner.setNoDelay(noDelay);
    return this;
  }
  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.inner.setKeepAlive(enable, initialDelay);
    return this;
  }
  setTimeout(ms: number, cb?: () => void): this {
    if (cb) this.once('timeout', cb);
    (this.inner as unknown as { setTimeout(ms: number): unknown }).setTimeout(ms);
    return this;
  }
  address(): unknown {
    return (this.inner as unknown as { address(): unknown }).address();
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
}

// ---------------------------------------------------------------------------------------------
// the registry

export class ToxicRegistry {
  private readonly list: Toxic[] = [];
  private readonly sockets = new Set<ToxicSocket>();

  constructor(readonly scheduler: ToxicScheduler) {}

  toxics(): readonly Toxic[] {
    return this.list;
  }

  /** Live wrapped connections. */
  get connections(): number {
    return this.sockets.size;
  }

  add(id: number, spec: ToxicImpairSpec, seed: number): Toxic {
    const now = this.scheduler.now();
    const t = new Toxic(id, spec, seed, now);
    this.list.push(t);
    for (const s of this.sockets) s.attach(t, now);
    return t;
  }

  remove(id: number): Toxic | null {
    const i = this.list.findIndex((t) => t.id === id);
    if (i < 0) return null;
    const t = this.list[i]!;
    this.list.splice(i, 1);
    const now = this.scheduler.now();
    for (const s of this.sockets) s.detach(t, now);
    return t;
  }

  /** The socket as it is when no toxic exists; a wrapped one otherwise. */
  wrap<S extends TcpSocketLike>(sock: S, role: SocketRole): S | ToxicSocket {
    if (this.list.length === 0) return sock;
    const w = new ToxicSocket(sock as Inner, role, this);
    this.sockets.add(w);
    return w;
  }

  /** @internal */
  forget(s: ToxicSocket): void {
    this.sockets.delete(s);
  }

  /** A NetApi whose TCP sockets go through the toxics (UDP is untouched). */
  wrapApi(api: NetApi): NetApi {
    return {
      createServer: (listener?: (socket: TcpSocketLike) => void): TcpServerLike =>
        api.createServer(listener ? (s) => listener(this.wrap(s, 'server')) : undefined),
      connect: (options, cb) => {
        const s = this.wrap(api.connect(options), 'client');
        if (cb) s.once('connect', cb);
        return s;
      },
      createUdpSocket: () => api.createUdpSocket(),
    };
  }
}
