/** UDP sockets on the userspace stack with Node's `dgram` shape. */
import { EventEmitter } from 'node:events';
import type { Stack } from '../stack';
import type { UdpEndpoint } from '../udp/udp';
import { CodedError } from '../util/errors';
import { formatIpv4, parseIpv4 } from '../wire/addr';
import type { UdpSocketLike } from './net-api';

export class FsUdpSocket extends EventEmitter implements UdpSocketLike {
  private endpoint: UdpEndpoint | null = null;
  private closed = false;
  /** ICMP errors that arrived with no 'error' listener. */
  icmpErrors = 0;

  constructor(readonly stack: Stack) {
    super();
  }

  bind(port = 0, address?: string | (() => void), cb?: () => void): this {
    if (typeof address === 'function') {
      cb = address;
      address = undefined;
    }
    if (this.endpoint) throw new CodedError('ERR_SOCKET_ALREADY_BOUND', 'Socket is already bound');
    const addr = !address || address === '0.0.0.0' ? 0 : parseIpv4(address);
    if (addr === null) throw new CodedError('EINVAL', `bind EINVAL: bad address "${address}"`);
    const udp = this.stack.udp;
    const p = port === 0 ? udp.ephemeralPort() : port;
    const ep: UdpEndpoint = {
      port: p,
      addr,
      onMessage: (data, src, srcPort) => {
        this.emit('message', data, { address: formatIpv4(src), family: 'IPv4', port: srcPort, size: data.length });
      },
      // Node reports ICMP errors only to connected sockets; ours are never connected, so an
      // error is given to whoever listens for it and otherwise only counted, never thrown.
      onError: (err) => {
        if (this.listenerCount('error') > 0) this.emit('error', err);
        else this.icmpErrors++;
      },
    };
    try {
      udp.bind(ep);
    } catch (e) {
      process.nextTick(() => this.emit('error', e));
      return this;
    }
    this.endpoint = ep;
    if (cb) this.once('listening', cb);
    process.nextTick(() => this.emit('listening'));
    return this;
  }

  send(msg: Buffer | Uint8Array | string, port: number, address: string, cb?: (err: Error | null, bytes?: number) => void): void {
    if (this.closed) {
      const e = new CodedError('ERR_SOCKET_DGRAM_NOT_RUNNING', 'Not running');
      if (cb) cb(e);
      else this.emit('error', e);
      return;
    }
    if (!this.endpoint) this.bind(0);
    const dst = parseIpv4(address);
    const data = typeof msg === 'string' ? Buffer.from(msg) : msg;
    if (dst === null) {
      const e = new CodedError('EINVAL', `send EINVAL: "${address}" is not an IPv4 address`);
      process.nextTick(() => (cb ? cb(e) : this.emit('error', e)));
      return;
    }
    try {
      this.stack.clock();
      const src = this.endpoint!.addr || this.stack.address;
      this.stack.udp.send(src, this.endpoint!.port, dst, port, data);
      this.stack.flushSoon();
      if (cb) process.nextTick(() => cb(null, data.length));
    } catch (e) {
      process.nextTick(() => (cb ? cb(e as Error) : this.emit('error', e)));
    }
  }

  close(cb?: () => void): this {
    if (this.closed) return this;
    this.closed = true;
    if (this.endpoint) this.stack.udp.unbind(this.endpoint);
    this.endpoint = null;
    process.nextTick(() => {
      cb?.();
      this.emit('close');
    });
    return this;
  }

  address(): { address: string; family: string; port: number } {
    if (!this.endpoint) throw new CodedError('ERR_SOCKET_DGRAM_NOT_RUNNING', 'Not running');
    return { address: this.endpoint.addr ? formatIpv4(this.endpoint.addr) : '0.0.0.0', family: 'IPv4', port: this.endpoint.port };
  }

  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
}
