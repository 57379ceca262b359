/**
 * The fault-module contract (types only). Each reproduced fault is a folder of
 * stack/faults/ holding its catalogue entry (spec.ts) and its whole behaviour
 * (index.ts and the files it needs): the buggy path and the fixed path side by side.
 *
 * A module changes the stack only through the hooks the core and the feature modules
 * define, each with a default that is the correct (hotfixed) behaviour:
 *   stack.hooks.gate                      input/output gate (stack.ts)
 *   stack.tcp.hooks.listenerAdmission     listener admission and backlog overflow (tcp/backlog.ts)
 *   stack.tcp.hooks.activeOpenFailed      the failure path of an active open (tcp/tcp.ts)
 *   stack.tcp.hooks.resetBeforeAccept     service level: what a connection reset before accept
 *                                         leaves behind, its application state included (tcp/tcp.ts)
 *   stack.pmtu.hooks.hostRouteAccounting  how host routes count against MaxIcmpHostRoutes (iface/pmtu.ts)
 * Dependencies point down: the core and the features never import a fault module.
 * docs/design.md ("Hooks") has the table: where the core calls each hook, its
 * default, which fault implements it.
 */
import type { ControlHandler } from '../control/server';
import type { EthernetInterface } from '../iface/ethernet';
import type { Firewall } from '../firewall/firewall';
import type { Ipsec } from '../ipsec/ipsec';
import type { NlbHost } from '../nlb/host';
import type { Stack } from '../stack';
import type { FaultConfig } from './config';
import type { EventLog } from './events';

import type { FaultSpec } from './spec';
export type { BoolParamDef, EnumParamDef, FaultMode, FaultSpec, IntParamDef, ParamDef, ParamType } from './spec';

/** Optional feature modules present in this process (a fault acts on the ones it needs, and changes nothing without them). */
export interface FeatureSet {
  readonly ipsec?: Ipsec;
  readonly ethernet?: EthernetInterface;
  readonly firewall?: Firewall;
  readonly nlb?: NlbHost;
}

export interface FaultContext {
  /** Reached only through the core's typed hooks and intent methods. */
  readonly stack: Stack;
  /** config.modes[id], config.params[name], config.onChange(fn). */
  readonly config: FaultConfig;
  readonly events: EventLog;
  readonly features: FeatureSet;
}

export interface InstalledFault {
  /** Extra control-socket requests (e.g. 'unlock'). */
  readonly control?: Record<string, ControlHandler>;
  /** Its sections in `faultstack stats` (top-level keys, e.g. { lock }). */
  stats?(): Record<string, unknown>;
  /** Puts back every hook it replaced and stops following the configuration. */
  uninstall(): void;
}

export interface FaultModule {
  readonly spec: FaultSpec;
  install(ctx: FaultContext): InstalledFault;
}
