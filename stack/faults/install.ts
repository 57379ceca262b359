/**
 * Puts the fault catalogue's configuration into a running stack: the parameters of the
 * emulated system (DefaultTTL), then every fault module (index.ts), each of which
 * applies its own parameters and attaches its behaviour to the core's hooks. Every
 * change made later over the control socket reaches them through FaultConfig's
 * onChange, so a student can flip a mode under traffic.
 *
 * Where each fault lives: stack/faults/kb903927/ (the Windows listener and its reset
 * path), kb297040/ (the failure path of an active open and the connection-table lock),
 * kb898060/ (the host-route count). docs/design.md has the hook table.
 */
import type { ControlHandler } from '../control/server';
import type { Stack } from '../stack';
import type { FaultConfig } from './config';
import type { EventLog } from './events';
import { FAULT_MODULES, type InstalledById } from './index';
import type { LeakReport } from './kb903927';
import type { LockReport } from './kb297040/lock';
import type { FaultContext, FeatureSet, InstalledFault } from './module';

/** The faults' sections of `faultstack stats` (each module adds its own). */
export interface FaultStats {
  /** KB 297040's connection-table lock. */
  lock: LockReport;
  /** What KB 903927's reset path kept or freed. */
  leak: LeakReport;
  [section: string]: unknown;
}

export interface InstalledFaults {
  /** Each module's installation, by fault id. */
  readonly faults: InstalledById;
  /** The control requests the modules add (KB 297040's `unlock`). */
  readonly control: Record<string, ControlHandler>;
  /** Every module's stats sections, merged. */
  stats(): FaultStats;
  /** Uninstalls the modules (last first) and stops following the configuration. */
  uninstall(): void;
}

/** The emulated system's own parameters: what the stack reads whatever the faults. */
function installSystem(ctx: FaultContext): InstalledFault {
  const p = ctx.config.params;
  const apply = () => {
    ctx.stack.ttl = p.DefaultTTL;
  };
  apply();
  const unsubscribe = ctx.config.onChange(apply);
  return { uninstall: unsubscribe };
}

export function installFaults(stack: Stack, config: FaultConfig, events: EventLog, features: FeatureSet = {}): InstalledFaults {
  const ctx: FaultContext = { stack, config, events, features };
  const system = installSystem(ctx);
  const installed: [string, InstalledFault][] = FAULT_MODULES.map((m) => [m.spec.id, m.install(ctx)]);
  const faults = Object.fromEntries(installed) as InstalledById;
  const control: Record<string, ControlHandler> = {};
  for (const [id, f] of installed) {
    for (const [name, h] of Object.entries(f.control ?? {})) {
      if (name in control) throw new Error(`control request ${name} is offered by two fault modules (the second: ${id})`);
      control[name] = h;
    }
  }
  return {
    faults,
    control,
    stats: () => Object.assign({}, ...installed.map(([, f]) => f.stats?.() ?? {})) as FaultStats,
    uninstall() {
      for (const [, f] of [...installed].reverse()) f.uninstall();
      system.uninstall();
    },
  };
}
