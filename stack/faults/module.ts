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
import type { Stack } from '../stack';
import type { FaultConfig } from './config';
import type { EventLog } from './events';

/**
 * `off`: the feature that carries the bug is not in use. `buggy`: the article's
 * behaviour. `hotfixed`: the behaviour after the fix.
 */
export type FaultMode = 'off' | 'buggy' | 'hotfixed';

export type ParamType = 'int' | 'bool' | 'enum';

interface ParamDefBase {
  /** Where the value is set on the original system; null when the name is ours. */
  readonly registry: string | null;
  readonly meaning: string;
  readonly unit?: string;
  /** Where the default comes from, or "our choice: ..." with the reason. */
  readonly source: string;
  /** The system this knob belongs to: which listener profile reads it. */
  readonly system: 'windows' | 'linux' | 'any';
  /** Read by the emulated system whatever the faults (no fault lists it). */
  readonly general?: boolean;
}
export interface IntParamDef extends ParamDefBase {
  readonly type: 'int';
  readonly default: number;
  readonly min: number;
  readonly max: number;
}
export interface BoolParamDef extends ParamDefBase {
  readonly type: 'bool';
  readonly default: 0 | 1;
}
export interface EnumParamDef extends ParamDefBase {
  readonly type: 'enum';
  readonly values: readonly string[];
  readonly default: string;
}
export type ParamDef = IntParamDef | BoolParamDef | EnumParamDef;

/** A fault's catalogue entry: what `faultstack faults` prints about it. */
export interface FaultSpec {
  /** Canonical id: the KB number, 'kb903927'. */
  readonly id: string;
  readonly alias: string;
  readonly title: string;
  /** The article, by its number: 'KB 903927'. */
  readonly article: string;
  /** Affected system, as the article says. */
  readonly appliesTo: string;
  readonly summary: string;
  readonly modes: readonly FaultMode[];
  readonly defaultMode: FaultMode;
  /** The parameters this fault owns, by their registry (or sysctl) names. */
  readonly params: Readonly<Record<string, ParamDef>>;
  /** Parameters owned by another fault or by the emulated system that this fault's behaviour reads too (none when absent). */
  readonly reads?: readonly string[];
  /** The public documents the behaviour follows (articles, RFCs, references), named, never a path. */
  readonly sources: readonly string[];
  /** What we decided where the article is silent. */
  readonly ourChoices: readonly string[];
  readonly implemented: boolean;
}

/** Optional feature modules present in this process (the NLB host and the firewall join when they land). */
export interface FeatureSet {
  readonly ipsec?: Ipsec;
  readonly ethernet?: EthernetInterface;
  readonly firewall?: Firewall;
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
