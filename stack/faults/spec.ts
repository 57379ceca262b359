/**
 * A fault's catalogue entry, as types: its modes and its parameters. Every spec.ts
 * and the catalogue read these; nothing here depends on a stack, so the catalogue,
 * the configuration and the modules form no cycle.
 */

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
