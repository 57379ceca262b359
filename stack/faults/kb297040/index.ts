/**
 * KB 297040 (conntable-hang), installed: the failure path of an active open and the
 * connection-table lock it may never release.
 *
 * - tcp.hooks.activeOpenFailed (SYN retransmissions exhausted, or an ICMP unreachable):
 *   the path takes the lock (lock.ts). Hotfixed, or without the precondition
 *   (SynAttackProtect 0): it releases it and the attempt fails as the core's default
 *   does. Buggy with SynAttackProtect set: it returns holding the lock, and the
 *   attempt's own failure is stuck with it.
 * - stack.hooks.gate: while the lock is held, nothing is received, sent or timed.
 * - The `unlock` control request releases it by hand and delivers the stuck failure.
 * - The active open's schedule of the Windows profiles: TcpMaxConnectRetransmissions
 *   SYN retransmissions, the first after TcpInitialRttMs (Linux: the core's defaults).
 * Its section in `faultstack stats` is `lock`.
 */
import type { ControlHandler } from '../../control/server';
import type { TcpConnection } from '../../tcp/connection';
import { defaultTcpConfig } from '../../tcp/tcp';
import { formatIpv4 } from '../../wire/addr';
import { EventKind } from '../events';
import type { FaultContext, FaultModule, InstalledFault } from '../module';
import { ConnTableLock, type LockReport } from './lock';
import { spec } from './spec';

export interface UnlockResult {
  released: boolean;
  holder?: string;
  heldMs?: number;
}

export interface Kb297040Installed extends InstalledFault {
  readonly lock: ConnTableLock;
  /** Releases the connection-table lock by hand (the teaching aid behind `faultstack unlock`). */
  unlock(): UnlockResult;
  readonly control: { unlock: ControlHandler };
  stats(): { lock: LockReport };
}

/** The Linux active open: the core's own SYN schedule (tcp_syn_retries 6, first retransmission after 1 s). */
const CORE_TCP = defaultTcpConfig();

export const kb297040 = {
  spec,
  install(ctx: FaultContext): Kb297040Installed {
    const { stack, config: cfg, events } = ctx;
    const tcp = stack.tcp;
    const p = cfg.params;
    const lock = new ConnTableLock();
    /** The failure that a hung connect could not report; delivered on unlock. */
    let stuck: { conn: TcpConnection; reason: 'timeout' | 'unreachable' } | null = null;

    const applySchedule = () => {
      const win = p.TcpStackProfile === 'windows';
      tcp.config.synRetries = win ? p.TcpMaxConnectRetransmissions : CORE_TCP.synRetries;
      tcp.config.synRtoMs = win ? p.TcpInitialRttMs : CORE_TCP.synRtoMs;
    };
    applySchedule();
    const unsubscribe = cfg.onChange(applySchedule);

    const before = { activeOpenFailed: tcp.hooks.activeOpenFailed, gate: stack.hooks.gate };
    tcp.hooks.activeOpenFailed = (conn, reason, now) => {
      const holder = `failure path of the active open to ${formatIpv4(conn.remoteAddr)}:${conn.remotePort} (${reason === 'timeout' ? 'SYN retransmissions exhausted' : 'ICMP unreachable'})`;
      lock.acquire(holder, now);
      if (cfg.modes.kb297040 === 'buggy' && p.SynAttackProtect > 0) {
        // The buggy path returns without releasing the table lock: everything that
        // needs the table now waits forever. The attempt's own failure is stuck too.
        stuck = { conn, reason };
        events.emit({
          fault: 'kb297040',
          kind: EventKind.LockTakenNotReleased,
          message: `connection-table lock taken on the ${holder} and never released: the stack stops processing packets (ping, connections)`,
          data: { lock: 'tcp-connection-table', holder, since: new Date().toISOString() },
        });
        return;
      }
      lock.release();
      before.activeOpenFailed(conn, reason, now);
    };
    stack.hooks.gate = {
      refuseInput: () => {
        if (!lock.held) return false;
        lock.blocked++;
        stack.counters.FsConnTableLockedDrops++;
        return true;
      },
      refuseOutput: () => lock.held,
      reason: () =>
        lock.held ? `the connection-table lock is held by the ${lock.holder}: see \`faultstack stats\`, release it with \`faultstack unlock\`` : null,
    };

    const unlock = (): UnlockResult => {
      if (!lock.held) return { released: false };
      const heldMs = Math.round(stack.now - lock.since);
      const holder = lock.release()!;
      events.emit({
        fault: 'kb297040',
        kind: EventKind.LockReleased,
        message: `connection-table lock released by hand after ${heldMs} ms (was held by the ${holder})`,
        data: { lock: 'tcp-connection-table', holder },
      });
      const s = stuck;
      stuck = null;
      if (s) tcp.failConnect(s.conn, s.reason, stack.clock());
      stack.flushSoon();
      return { released: true, holder, heldMs };
    };

    return {
      lock,
      unlock,
      control: { unlock: () => unlock() },
      stats: () => ({ lock: { name: 'tcp-connection-table', ...lock.describe(stack.now) } }),
      uninstall() {
        unsubscribe();
        tcp.hooks.activeOpenFailed = before.activeOpenFailed;
        stack.hooks.gate = before.gate;
      },
    };
  },
} as const satisfies FaultModule;
