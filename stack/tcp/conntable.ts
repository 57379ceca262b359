/**
 * The TCP connection table.
 *
 * Connections are found by (local address, local port, remote address, remote
 * port). The table hashes the remote half into a Map of chains, and keeps the last
 * hit: a bulk transfer finds its connection without touching the Map.
 *
 * The table has no lock, and needs none: the stack runs on one thread and each
 * operation below runs to its end before anything else touches the table. The
 * connection-table lock of KB 297040 is a lock of the *emulated* Windows stack; the
 * fault module models it (stack/faults/kb297040/lock.ts) together with what holding
 * it does to the stack.
 */
import type { TcpConnection } from './connection';

export class ConnTable {
  private readonly buckets = new Map<number, TcpConnection>();
  private last: TcpConnection | null = null;
  size = 0;

  private static remoteKey(remoteAddr: number, remotePort: number): number {
    return remoteAddr * 65536 + remotePort; // < 2^48: exact in a double
  }

  lookup(localAddr: number, localPort: number, remoteAddr: number, remotePort: number): TcpConnection | undefined {
    const l = this.last;
    if (l && l.remotePort === remotePort && l.localPort === localPort && l.remoteAddr === remoteAddr && l.localAddr === localAddr) return l;
    let c = this.buckets.get(ConnTable.remoteKey(remoteAddr, remotePort)) ?? null;
    while (c) {
      if (c.localPort === localPort && c.localAddr === localAddr) {
        this.last = c;
        return c;
      }
      c = c.chainNext;
    }
    return undefined;
  }

  insert(conn: TcpConnection): void {
    const k = ConnTable.remoteKey(conn.remoteAddr, conn.remotePort);
    conn.chainNext = this.buckets.get(k) ?? null;
    this.buckets.set(k, conn);
    this.size++;
  }

  remove(conn: TcpConnection): boolean {
    if (this.last === conn) this.last = null;
    const k = ConnTable.remoteKey(conn.remoteAddr, conn.remotePort);
    let c = this.buckets.get(k) ?? null;
    let prev: TcpConnection | null = null;
    while (c) {
      if (c === conn) {
        const next = c.chainNext;
        if (prev) prev.chainNext = next;
        else if (next) this.buckets.set(k, next);
        else this.buckets.delete(k);
        c.chainNext = null;
        this.size--;
        return true;
      }
      prev = c;
      c = c.chainNext;
    }
    return false;
  }

  *all(): IterableIterator<TcpConnection> {
    for (const head of this.buckets.values()) {
      let c: TcpConnection | null = head;
      while (c) {
        yield c;
        c = c.chainNext;
      }
    }
  }
}
