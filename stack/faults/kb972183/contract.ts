/**
 * The fault-module contract (issue 9 item 1), as this module is written against it,
 * until stack/faults/module.ts lands with the exact names: a module is its catalogue
 * entry (spec) and an install() that implements the hooks the core and the feature
 * modules define. Types only. When module.ts exists, these names map one to one:
 * FaultSpecContract -> FaultSpec, the rest keep their names.
 */
import type { ControlHandler } from '../../control/server';
import type { EthernetInterface } from '../../iface/ethernet';
import type { Ipsec } from '../../ipsec/ipsec';
import type { NlbHost } from '../../nlb/host';
import type { Stack } from '../../stack';
import type { FaultConfig } from '../catalogue';
import type { EventLog } from '../events';

export type FaultModeName = 'off' | 'buggy' | 'hotfixed';

interface ParamDefBase {
  readonly registry: string | null;
  readonly meaning: string;
  readonly unit?: string;
  readonly source: string;
  readonly system: 'windows' | 'linux' | 'any';
  readonly general?: boolean;
}
export type ParamDefContract =
  | (ParamDefBase & { readonly type: 'int'; readonly default: number; readonly min: number; readonly max: number })
  | (ParamDefBase & { readonly type: 'bool'; readonly default: 0 | 1 })
  | (ParamDefBase & { readonly type: 'enum'; readonly values: readonly string[]; readonly default: string });

export interface FaultSpecContract {
  readonly id: string;
  readonly alias: string;
  readonly title: string;
  /** The article by its number: 'KB 972183'. */
  readonly article: string;
  readonly appliesTo: string;
  readonly summary: string;
  readonly modes: readonly FaultModeName[];
  readonly defaultMode: FaultModeName;
  readonly params: Readonly<Record<string, ParamDefContract>>;
  readonly reads: readonly string[];
  readonly sources: readonly string[];
  readonly ourChoices: readonly string[];
  readonly implemented: boolean;
}

/** Optional feature modules present in this process. */
export interface FeatureSet {
  readonly ipsec?: Ipsec;
  readonly ethernet?: EthernetInterface;
  readonly nlb?: NlbHost;
}

export interface FaultContext {
  readonly stack: Stack;
  readonly config: FaultConfig;
  readonly events: EventLog;
  readonly features: FeatureSet;
}

export interface InstalledFault {
  readonly control?: Record<string, ControlHandler>;
  stats?(): Record<string, unknown>;
  uninstall(): void;
}

export interface FaultModule {
  readonly spec: FaultSpecContract;
  install(ctx: FaultContext): InstalledFault;
}
