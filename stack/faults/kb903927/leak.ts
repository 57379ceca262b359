/**
 * KB 903927's reset path: what an established connection that the Windows listener
 * reset (its backlog full at the delayed indication) leaves behind. This is the TCP
 * layer's service-level hook `resetBeforeAccept`, which hands over the closed
 * connection, the client's first flight and the application's per-connection state.
 *
 * - Buggy (the article): none of it is freed. The connection's control block, its
 *   receive buffer with the first flight and the application state (the mtls
 *   service's negotiation buffers, the article's "stacks") stay reachable for good.
 * - Hotfixed: the core's default, `releaseResetBeforeAccept`: the state is released and
 *   nothing keeps the rest.
 */
import type { Counters } from '../../counters';
import type { ApplicationState } from '../../tcp/listener';
import { releaseResetBeforeAccept, type ResetBeforeAccept } from '../../tcp/tcp';
import type { TcpConnection } from '../../tcp/connection';
import { formatIpv4 } from '../../wire/addr';
import type { FaultConfig } from '../config';
import { EventKind, type EventLog } from '../events';

/** What one leaked connection keeps reachable (buggy mode). */
export interface LeakedConnection {
  conn: TcpConnection;
  firstFlight: Buffer[];
  appState: ApplicationState | null;
  bytes: number;
  at: string;
}

/** Rough size of a control block with its scoreboards and timer (for the event's byte count). */
const CONTROL_BLOCK_BYTES = 1200;

export class ResetPathLeak {
  /** Buggy mode: every reset connection's allocations, kept reachable on purpose. */
  readonly leaked: LeakedConnection[] = [];
  leakedBytes = 0;
  /** Reset connections whose allocations the hotfixed path released. */
  freed = 0;

  constructor(
    readonly cfg: FaultConfig,
    readonly events: EventLog,
    readonly counters: Counters,
  ) {}

  /** The resetBeforeAccept hook. */
  onReset(r: ResetBeforeAccept): void {
    if (this.cfg.modes.kb903927 === 'buggy') {
      // The buggy reset path: nothing it allocated is released.
      const bytes = CONTROL_BLOCK_BYTES + r.firstFlightBytes + (r.state ? r.state.bytes : 0);
      this.leaked.push({ conn: r.conn, firstFlight: r.firstFlight, appState: r.state, bytes, at: new Date().toISOString() });
      this.leakedBytes += bytes;
      this.counters.FsLeakedConnections++;
      this.counters.FsLeakedBytes += bytes;
      const remote = `${formatIpv4(r.conn.remoteAddr)}:${r.conn.remotePort}`;
      this.events.emit({
        fault: 'kb903927',
        kind: EventKind.LeakRetained,
        message: `buggy reset path: ${bytes} bytes of ${remote} stay allocated (control block, ${r.firstFlightBytes}-byte first flight, application state)`,
        data: { connection: remote, bytes, totalBytes: this.leakedBytes, what: ['control block', 'receive buffer', 'application state'] },
      });
      return;
    }
    // Hotfixed: the reset path frees everything it allocated.
    releaseResetBeforeAccept(r);
    this.freed++;
  }

  /** Releases everything the buggy path kept (for tests and teaching). */
  releaseLeaks(): number {
    const n = this.leaked.length;
    this.leaked.length = 0;
    this.leakedBytes = 0;
    return n;
  }
}
