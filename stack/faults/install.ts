/**
 * Puts the fault catalogue's configuration into a running stack: which listener
 * (backlog policy) it is, the TCP timers the Windows parameters set, and the three
 * implemented faults' hooks. Every change made later over the control socket goes
 * through here too, so a student can flip a mode under traffic.
 *
 * Where each fault lives:
 * - KB 903927: stack/faults/synprotect.ts (WindowsBacklog), chosen here.
 * - KB 297040: the connect-failure hook below, and the lock in stack/tcp/conntable.ts.
 * - KB 898060: the counting rule in stack/iface/pmtu.ts, chosen here.
 */
import type { Stack } from '../stack';
import type { FaultConfig } from './catalogue';
import { EventKind, type EventLog } from './events';
import { WindowsBacklog } from './synprotect';
import { LinuxBacklog, LINUX_BACKLOG_DEFAULTS } from '../tcp/backlog';
import type { TcpConnection } from '../tcp/connection';
import { formatIpv4 } from '../wire/addr';

export interface InstalledFaults {
  windows: WindowsBacklog;
  linux: LinuxBacklog;
  /** Releases the connection-table lock by hand (KB 297040 teaching aid). */
  unlock(): { released: boolean; holder?: string; heldMs?: number };
  leakReport(): { connections: number; bytes: number; resets: number; freed: number };
  uninstall(): void;
}

export function installFaults(stack: Stack, cfg: FaultConfig, events: EventLog): InstalledFaults {
  const p = cfg.params;
  const tcp = stack.tcp;
  const windows = new WindowsBacklog(cfg, events);
  const linux = new LinuxBacklog(() => ({
    maxSynBacklog: p.tcp_max_syn_backlog, syncookies: p.tcp_syncookies, abortOnOverflow: p.tcp_abort_on_overflow === 1,
    somaxconn: p.somaxconn, synAckRetries: LINUX_BACKLOG_DEFAULTS.synAckRetries, // no catalogue parameter for it
  }));
  /** The failure that a hung connect could not report; delivered on unlock. */
  let stuck: { conn: TcpConnection; reason: 'timeout' | 'unreachable' } | null = null;

  const apply = () => {
    const win = p.TcpStackProfile === 'windows';
    tcp.backlog = win ? windows : linux;
    tcp.config.synRetries = win ? p.TcpMaxConnectRetransmissions : 6;
    tcp.config.synRtoMs = win ? p.TcpInitialRttMs : 1000;
    stack.ttl = p.DefaultTTL;
    const ifMtu = p.MTU > 0 ? Math.max(68, Math.min(p.MTU, stack.device.mtu)) : stack.device.mtu;
    if (ifMtu !== stack.routes.interfaceMtu) stack.routes.setInterfaceMtu(ifMtu);
  };
  apply();
  const unsubscribe = cfg.onChange(apply);

  // KB 898060: the host-route counting rule and the PMTU parameters.
  stack.pmtu.params = () => ({
    EnablePMTUDiscovery: p.EnablePMTUDiscovery, MaxIcmpHostRoutes: p.MaxIcmpHostRoutes, PMTUFloor: p.PMTUFloor,
    HostRouteAgingSec: p.HostRouteAgingSec, EnablePMTUBHDetect: p.EnablePMTUBHDetect,
  });
  stack.pmtu.countRule = () => (cfg.modes.kb898060 === 'buggy' ? 'buggy' : 'hotfixed');
  stack.pmtu.events = {
    limitReached: (count, real, limit) => events.emit({
      fault: 'kb898060', kind: EventKind.HostRouteLimitReached,
      message: `host-route count reached MaxIcmpHostRoutes (${count} >= ${limit}) while ${real} host routes really exist: ` +
        'from now on ICMP fragmentation-needed messages are ignored',
      data: { count, routes: real, limit },
    }),
    ignoredAtLimit: (dst, mtu, count) => events.emit({
      fault: 'kb898060', kind: EventKind.IcmpIgnoredAtLimit,
      message: `ICMP fragmentation needed for ${formatIpv4(dst)} (next-hop MTU ${mtu}) ignored: host-route count ${count} is at the limit`,
      data: { destination: formatIpv4(dst), nextHopMtu: mtu, count, limit: p.MaxIcmpHostRoutes },
    }),
  };

  // KB 297040: the failure path of an active open, with SynAttackProtect set.
  const lock = tcp.table.lock;
  tcp.hooks.connectFailed = (conn, reason, now) => {
    const holder = `failure path of the active open to ${formatIpv4(conn.remoteAddr)}:${conn.remotePort} (${reason === 'timeout' ? 'SYN retransmissions exhausted' : 'ICMP unreachable'})`;
    lock.acquire(holder, now);
    if (cfg.modes.kb297040 === 'buggy' && p.SynAttackProtect > 0) {
      // The buggy path returns without releasing the table lock: everything that
      // needs the table now waits forever. The attempt's own failure is stuck too.
      stuck = { conn, reason };
      events.emit({
        fault: 'kb297040', kind: EventKind.LockTakenNotReleased,
        message: `connection-table lock taken on the ${holder} and never released: the stack stops processing packets (ping, connections)`,
        data: { lock: 'tcp-connection-table', holder, since: new Date().toISOString() },
      });
      return;
    }
    lock.release();
    tcp.failConnect(conn, reason, now);
  };
  stack.inputGate = () => {
    if (!lock.held) return false;
    lock.blocked++;
    stack.counters.FsConnTableLockedDrops++;
    return true;
  };
  stack.outputGate = () => lock.held;

  return {
    windows,
    linux,
    unlock() {
      if (!lock.held) return { released: false };
      const heldMs = Math.round(stack.now - lock.since);
      const holder = lock.release()!;
      events.emit({
        fault: 'kb297040', kind: EventKind.LockReleased,
        message: `connection-table lock released by hand after ${heldMs} ms (was held by the ${holder})`,
        data: { lock: 'tcp-connection-table', holder },
      });
      const s = stuck;
      stuck = null;
      if (s) tcp.failConnect(s.conn, s.reason, stack.clock());
      stack.flushSoon();
      return { released: true, holder, heldMs };
    },
    leakReport: () => ({ connections: windows.leaked.length, bytes: windows.leakedBytes, resets: windows.resets, freed: windows.freed }),
    uninstall() { unsubscribe(); },
  };
}
