/**
 * FaultConfig: the live configuration the stack reads on its hot paths (each fault's
 * mode, each parameter's value), built from the catalogue (catalogue.ts).
 *
 * A code path that differs between the article's behaviour and the fixed one reads
 * `cfg.modes.kb903927` (inside that fault's module only); a limit reads
 * `cfg.params.TcpMaxHalfOpen`. Both objects are plain, mutated in place by the setters
 * below, so a reference taken once stays valid and a read costs one property load.
 */
import { UsageError } from '../util/errors';
import {
  DEFAULT_PROFILE,
  FAULTS,
  PARAMS,
  findFault,
  findParam,
  findProfile,
  parseParamValue,
  type FaultId,
  type FaultModes,
  type ParamName,
  type ParamValue,
  type ParamValues,
} from './catalogue';
import type { FaultMode } from './spec';

export type ConfigChange =
  | { readonly kind: 'mode'; readonly fault: FaultId; readonly alias: string; readonly from: FaultMode; readonly to: FaultMode }
  | { readonly kind: 'param'; readonly name: ParamName; readonly from: ParamValue; readonly to: ParamValue }
  | { readonly kind: 'profile'; readonly from: string | null; readonly to: string };

export type ConfigListener = (change: ConfigChange) => void;

export interface FaultConfigSnapshot {
  profile: string | null;
  modes: FaultModes;
  params: ParamValues;
}

function defaultModes(): FaultModes {
  const m = {} as Record<string, FaultMode>;
  for (const f of FAULTS) m[f.id] = f.defaultMode;
  return m as FaultModes;
}

function defaultParams(): ParamValues {
  const v = {} as Record<string, ParamValue>;
  for (const p of PARAMS) v[p.name] = p.default;
  return v as ParamValues;
}

export class FaultConfig {
  /** Current mode of every fault by canonical id. Read freely; change with setMode. */
  readonly modes: Readonly<FaultModes>;
  /** Current value of every parameter by canonical name. Read freely; change with setParam. */
  readonly params: Readonly<ParamValues>;
  private profileName: string | null = null;
  private readonly listeners = new Set<ConfigListener>();

  /** Starts from the parameter defaults and applies `profile` (pass null for none). */
  constructor(profile: string | null = DEFAULT_PROFILE) {
    this.modes = defaultModes();
    this.params = defaultParams();
    if (profile !== null) this.applyProfile(profile);
  }

  get profile(): string | null {
    return this.profileName;
  }

  mode(idOrAlias: string): FaultMode {
    return this.modes[findFault(idOrAlias).id as FaultId];
  }

  /** True when the fault's article behaviour is on. */
  isBuggy(id: FaultId): boolean {
    return this.modes[id] === 'buggy';
  }

  setMode(idOrAlias: string, mode: string): void {
    const f = findFault(idOrAlias);
    const m = mode.trim().toLowerCase() as FaultMode;
    if (!f.modes.includes(m)) {
      throw new UsageError(`fault ${f.id} (${f.alias}) has no mode '${mode}': valid modes are ${f.modes.join(', ')}`);
    }
    if (!f.implemented && m !== 'off') {
      throw new UsageError(
        `fault ${f.id} (${f.alias}) is not implemented yet: it can only be 'off'; implemented faults are ` +
          FAULTS.filter((x) => x.implemented)
            .map((x) => `${x.id} (${x.alias})`)
            .join(', '),
      );
    }
    const id = f.id as FaultId;
    const from = this.modes[id];
    if (from === m) return;
    (this.modes as FaultModes)[id] = m;
    this.notify({ kind: 'mode', fault: id, alias: f.alias, from, to: m });
  }

  /** Sets a parameter by name (case-insensitive), validating type and range; returns the canonical name. */
  setParam(name: string, value: string | number): ParamName {
    const p = findParam(name);
    const v = parseParamValue(p, value);
    this.assign(p.name, v);
    return p.name;
  }

  /** Resets every parameter to its default and applies the profile's values. Fault modes are left alone. */
  applyProfile(name: string): void {
    const prof = findProfile(name);
    const from = this.profileName;
    for (const p of PARAMS) {
      const override = (prof.params as Record<string, ParamValue | undefined>)[p.name];
      this.assign(p.name, override === undefined ? p.default : override);
    }
    this.profileName = prof.name;
    if (from !== prof.name) this.notify({ kind: 'profile', from, to: prof.name });
  }

  /** Calls `listener` after every effective change; returns the unsubscribe function. */
  onChange(listener: ConfigListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** A JSON-able copy of the whole configuration. */
  snapshot(): FaultConfigSnapshot {
    return { profile: this.profileName, modes: { ...this.modes }, params: { ...this.params } };
  }

  private assign(name: ParamName, v: ParamValue): void {
    const params = this.params as Record<ParamName, ParamValue>;
    const from = params[name];
    if (from === v) return;
    params[name] = v;
    this.notify({ kind: 'param', name, from, to: v });
  }

  /** Every listener hears every change; the first listener error is rethrown after all have run. */
  private notify(change: ConfigChange): void {
    let first: unknown = null;
    for (const l of [...this.listeners]) {
      try {
        l(change);
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== null) throw first;
  }
}

function splitAssignment(what: string, example: string, text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) {
    throw new UsageError(`bad ${what} '${text}': expected NAME=VALUE, for example ${example}`);
  }
  return [text.slice(0, eq).trim(), text.slice(eq + 1).trim()];
}

export interface FaultConfigInput {
  /** System profile; DEFAULT_PROFILE when absent. */
  profile?: string;
  /** "kb903927=buggy" or "synprotect-leak=hotfixed". */
  faults: string[];
  /** "SynAttackProtect=2". */
  params: string[];
}

/** Builds the configuration from CLI-style input: profile first, then faults, then parameters. */
export function buildFaultConfig(input: FaultConfigInput): FaultConfig {
  const cfg = new FaultConfig(input.profile ?? DEFAULT_PROFILE);
  for (const text of input.faults) {
    const [id, mode] = splitAssignment('fault setting', 'kb903927=buggy or synprotect-leak=hotfixed', text);
    cfg.setMode(id, mode);
  }
  for (const text of input.params) {
    const [name, value] = splitAssignment('parameter setting', 'SynAttackProtect=2', text);
    cfg.setParam(name, value);
  }
  return cfg;
}
