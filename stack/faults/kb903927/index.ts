/**
 * KB 903927 (synprotect-leak), installed: the emulated system's listener and its reset path.
 *
 * - tcp.hooks.listenerAdmission: while TcpStackProfile is windows, the Windows listener
 *   with SYN attack protection (windows-listener.ts); otherwise the core's Linux policy
 *   with the profile's sysctls (tcp_syncookies, tcp_max_syn_backlog, ...).
 * - tcp.hooks.resetBeforeAccept: what the reset connection leaves behind (leak.ts),
 *   buggy or hotfixed by the fault's mode.
 * Its section in `faultstack stats` is `leak`.
 */
import { LinuxBacklog, LINUX_BACKLOG_DEFAULTS } from '../../tcp/backlog';
import type { FaultContext, FaultModule, InstalledFault } from '../module';
import { ResetPathLeak } from './leak';
import { spec } from './spec';
import { WindowsBacklog } from './windows-listener';

/** What the reset path kept or freed, as `faultstack stats` shows it. */
export interface LeakReport {
  connections: number;
  bytes: number;
  resets: number;
  freed: number;
}

export interface Kb903927Installed extends InstalledFault {
  /** The Windows listener (SYN attack protection, delayed indication). */
  readonly listener: WindowsBacklog;
  /** The Linux listener the linux profile uses. */
  readonly linux: LinuxBacklog;
  readonly leak: ResetPathLeak;
  leakReport(): LeakReport;
  stats(): { leak: LeakReport };
}

export const kb903927 = {
  spec,
  install(ctx: FaultContext): Kb903927Installed {
    const { stack, config: cfg, events } = ctx;
    const tcp = stack.tcp;
    const p = cfg.params;
    const listener = new WindowsBacklog(cfg, events);
    const linux = new LinuxBacklog(() => ({
      maxSynBacklog: p.tcp_max_syn_backlog,
      syncookies: p.tcp_syncookies,
      abortOnOverflow: p.tcp_abort_on_overflow === 1,
      somaxconn: p.somaxconn,
      synAckRetries: LINUX_BACKLOG_DEFAULTS.synAckRetries, // no catalogue parameter for it
    }));
    const leak = new ResetPathLeak(cfg, events, stack.counters);
    const before = { listenerAdmission: tcp.hooks.listenerAdmission, resetBeforeAccept: tcp.hooks.resetBeforeAccept };
    const apply = () => {
      tcp.hooks.listenerAdmission = p.TcpStackProfile === 'windows' ? listener : linux;
    };
    apply();
    const unsubscribe = cfg.onChange(apply);
    tcp.hooks.resetBeforeAccept = (r) => leak.onReset(r);
    const leakReport = (): LeakReport => ({ connections: leak.leaked.length, bytes: leak.leakedBytes, resets: listener.resets, freed: leak.freed });
    return {
      listener,
      linux,
      leak,
      leakReport,
      stats: () => ({ leak: leakReport() }),
      uninstall() {
        unsubscribe();
        tcp.hooks.listenerAdmission = before.listenerAdmission;
        tcp.hooks.resetBeforeAccept = before.resetBeforeAccept;
      },
    };
  },
} as const satisfies FaultModule;
