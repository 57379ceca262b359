/**
 * faultstack's own command-line parser: small on purpose, strict on purpose.
 *
 * A command declares its flags as data (name, value placeholder, help, validator,
 * default). The parser accepts `--flag value`, `--flag=value`, repeatable flags,
 * switches (`--json`, or `--json=true|false`), `--` to end flags, and `-h`/`--help`.
 * Everything it rejects becomes a UsageError whose message is one line and says both
 * what is wrong and what would be valid, e.g.
 *   faultstack run: --mtu must be an integer from 68 to 65535, got "abc"
 */
import { UsageError } from '../../stack/util/errors';
import { editDistance } from '../../stack/util/edit-distance';

/** Thrown by validators; the message is the "must be ..." part of the final error. */
export class InvalidValue extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'InvalidValue';
  }
}

/** Turns a raw string into a typed value; `valid` describes an acceptable value ("an integer from 1 to 8"). */
export interface Validator<T> {
  readonly valid: string;
  parse(raw: string): T;
}

export interface Flag<T> {
  readonly takesValue: boolean;
  /** Placeholder in usage text: `--mtu N`. */
  readonly valueName: string;
  readonly help: string;
  readonly valid: string;
  readonly repeatable: boolean;
  readonly required: boolean;
  /** Shown in usage as [default: ...]. */
  readonly defaultText?: string;
  /** The value when the flag is absent. */
  initial(): T;
  /** Folds one occurrence into the value so far (repeatable flags accumulate). */
  apply(prev: T, raw: string): T;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type FlagSet = Record<string, Flag<any>>;
export type FlagValues<S extends FlagSet> = { [K in keyof S]: S[K] extends Flag<infer T> ? T : never };

export interface CommandSpec<S extends FlagSet> {
  /** As typed after `faultstack`: "run", "fault set". */
  readonly name: string;
  readonly summary: string;
  /** Positional arguments in the synopsis, e.g. "ID MODE". */
  readonly args?: string;
  readonly minArgs?: number;
  readonly maxArgs?: number;
  readonly flags: S;
  /** Extra paragraphs for --help. */
  readonly details?: string;
}

/** Identity, for inference: `const SPEC = defineCommand({ name, summary, flags: {...} })` keeps the flag types. */
export function defineCommand<S extends FlagSet>(spec: CommandSpec<S>): CommandSpec<S> {
  return spec;
}

export type ParseResult<S extends FlagSet> = { help: true } | { help: false; flags: FlagValues<S>; args: string[] };

// ---------------------------------------------------------------------------
// Flag builders

export function switchFlag(help: string): Flag<boolean> {
  return {
    takesValue: false,
    valueName: '',
    help,
    valid: 'a switch',
    repeatable: false,
    required: false,
    initial: () => false,
    apply: (_prev, raw) => {
      if (/^(true|yes|on|1)$/i.test(raw)) return true;
      if (/^(false|no|off|0)$/i.test(raw)) return false;
      throw new InvalidValue('is a switch: give it alone, or as =true or =false');
    },
  };
}

export interface ValueFlagOptions<T> extends Validator<T> {
  readonly valueName: string;
  readonly help: string;
  readonly defaultText?: string;
}

/** A flag taking one value; without a default its value is undefined when absent. */
export function valueFlag<T>(o: ValueFlagOptions<T> & { default: T }): Flag<T>;
export function valueFlag<T>(o: ValueFlagOptions<T>): Flag<T | undefined>;
export function valueFlag<T>(o: ValueFlagOptions<T> & { default?: T }): Flag<T | undefined> {
  const dflt = o.default;
  return {
    takesValue: true,
    valueName: o.valueName,
    help: o.help,
    valid: o.valid,
    repeatable: false,
    required: false,
    defaultText: o.defaultText ?? (dflt === undefined ? undefined : String(dflt)),
    initial: () => dflt,
    apply: (_prev, raw) => o.parse(raw),
  };
}

/** A flag that may be given any number of times; values are kept in order. */
export function repeatableFlag<T>(o: ValueFlagOptions<T>): Flag<T[]> {
  return {
    takesValue: true,
    valueName: o.valueName,
    help: o.help,
    valid: o.valid,
    repeatable: true,
    required: false,
    initial: () => [],
    apply: (prev, raw) => [...prev, o.parse(raw)],
  };
}

/** Marks a value flag as mandatory: the parser fails when it is absent. */
export function requiredFlag<T>(f: Flag<T | undefined>): Flag<T> {
  return { ...f, required: true } as Flag<T>;
}

// ---------------------------------------------------------------------------
// Validators

export function integer(min: number, max: number): Validator<number> {
  const valid = `an integer from ${min} to ${max}`;
  return {
    valid,
    parse(raw) {
      const s = raw.trim();
      if (!/^[+-]?\d{1,15}$/.test(s)) throw new InvalidValue(`must be ${valid}`);
      const n = Number(s);
      if (n < min || n > max) throw new InvalidValue(`must be ${valid}`);
      return n;
    },
  };
}

/** A decimal number (fractions allowed), e.g. seconds. */
export function decimal(min: number, max: number, unit = ''): Validator<number> {
  const u = unit ? ` ${unit}` : '';
  const valid = `a number from ${min} to ${max}${u}`;
  return {
    valid,
    parse(raw) {
      const s = raw.trim();
      if (!/^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(s)) throw new InvalidValue(`must be ${valid}`);
      const n = Number(s);
      if (!(n >= min && n <= max)) throw new InvalidValue(`must be ${valid}`);
      return n;
    },
  };
}

export function oneOf<T extends string>(values: readonly T[]): Validator<T> {
  const valid = `one of ${values.join(', ')}`;
  return {
    valid,
    parse(raw) {
      const s = raw.trim();
      if ((values as readonly string[]).includes(s)) return s as T;
      throw new InvalidValue(`must be ${valid}`);
    },
  };
}

/**
 * A comma-separated subset of `values`, returned deduplicated in the canonical order
 * of `values`. `all` (when given) stands for the set it maps to; `none` (when
 * allowed) for the empty set.
 */
export function commaSubset<T extends string>(values: readonly T[], all?: readonly T[], opts: { none?: boolean } = {}): Validator<T[]> {
  const names = [...values, ...(all ? ['all'] : [])];
  const valid = `a comma-separated list of ${names.join(', ')}${opts.none ? ', or none' : ''}`;
  return {
    valid,
    parse(raw) {
      const items = raw.split(',').map((s) => s.trim());
      if (opts.none && items.includes('none')) {
        if (items.length === 1) return [];
        throw new InvalidValue(`must be ${valid} (none stands alone)`);
      }
      if (items.some((s) => s === '')) throw new InvalidValue(`must be ${valid} (no empty items)`);
      const chosen = new Set<T>();
      for (const it of items) {
        if (all && it === 'all') {
          all.forEach((v) => chosen.add(v));
          continue;
        }
        if (!(values as readonly string[]).includes(it)) {
          throw new InvalidValue(`has unknown item "${it}": must be ${valid}`);
        }
        chosen.add(it as T);
      }
      return values.filter((v) => chosen.has(v));
    },
  };
}

/** Any non-empty string (optionally checked: `check` returns a reason or undefined). */
export function text(valid: string, check?: (s: string) => string | undefined): Validator<string> {
  return {
    valid,
    parse(raw) {
      if (raw === '') throw new InvalidValue(`must be ${valid}, not empty`);
      const why = check?.(raw);
      if (why) throw new InvalidValue(why);
      return raw;
    },
  };
}

/** `KEY=VALUE` with both sides non-empty, e.g. `903927=buggy`. */
export function keyValue(keyName: string, valueName: string, example: string): Validator<{ key: string; value: string }> {
  const valid = `${keyName}=${valueName} (e.g. ${example})`;
  return {
    valid,
    parse(raw) {
      const eq = raw.indexOf('=');
      const key = eq < 0 ? '' : raw.slice(0, eq).trim();
      const value = eq < 0 ? '' : raw.slice(eq + 1).trim();
      if (eq < 0 || key === '' || value === '') throw new InvalidValue(`must be ${valid}`);
      return { key, value };
    },
  };
}

// ---------------------------------------------------------------------------
// Parsing

/** JSON-quoted (so control characters cannot break the one-line message) and shortened. */
export function quote(raw: string): string {
  const s = raw.length > 80 ? raw.slice(0, 77) + '...' : raw;
  return JSON.stringify(s);
}

/** The closest candidate when it is plausibly a typo. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const dist = editDistance(word, c);
    if (dist < bestD) {
      bestD = dist;
      best = c;
    }
  }
  if (word.length < 3) return undefined;
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

function prefixOf(spec: CommandSpec<FlagSet>): string {
  return `faultstack ${spec.name}`;
}

function usageLine(spec: CommandSpec<FlagSet>): string {
  const parts = [`faultstack ${spec.name}`];
  if (spec.args) parts.push(spec.args);
  for (const [name, f] of Object.entries(spec.flags)) {
    if (f.required) parts.push(`--${name} ${f.valueName}`);
  }
  if (Object.values(spec.flags).some((f) => !f.required)) parts.push('[options]');
  return parts.join(' ');
}

/** The full --help text of a command. */
export function formatUsage<S extends FlagSet>(spec: CommandSpec<S>): string {
  const s = spec as unknown as CommandSpec<FlagSet>;
  const lines = [`Usage: ${usageLine(s)}`, '', spec.summary];
  if (spec.details) lines.push('', spec.details.trimEnd());
  const rows: [string, string][] = [];
  for (const [name, f] of Object.entries(s.flags)) {
    const left = f.takesValue ? `--${name} ${f.valueName}` : `--${name}`;
    let right = f.help;
    if (f.required) right += ' (required)';
    if (f.repeatable) right += ' (repeatable)';
    if (f.defaultText !== undefined) right += ` [default: ${f.defaultText}]`;
    rows.push([left, right]);
  }
  rows.push(['-h, --help', 'show this help']);
  const w = Math.min(30, Math.max(...rows.map(([l]) => l.length)));
  lines.push('', 'Options:');
  for (const [l, r] of rows) {
    lines.push(l.length > w ? `  ${l}\n  ${' '.repeat(w)}  ${r}` : `  ${l.padEnd(w)}  ${r}`);
  }
  return lines.join('\n') + '\n';
}

/** Throws a UsageError prefixed with the command, e.g. `faultstack run: ...`. */
export function usageError(spec: { name: string }, message: string): UsageError {
  return new UsageError(`faultstack ${spec.name}: ${message}`);
}

export function parseArgs<S extends FlagSet>(spec: CommandSpec<S>, argv: readonly string[]): ParseResult<S> {
  const s = spec as unknown as CommandSpec<FlagSet>;
  const prefix = prefixOf(s);
  const fail = (msg: string): never => {
    throw new UsageError(`${prefix}: ${msg}`);
  };
  const flagNames = Object.keys(s.flags);
  const values: Record<string, unknown> = {};
  const seen = new Map<string, string>();
  for (const [name, f] of Object.entries(s.flags)) values[name] = f.initial();
  const args: string[] = [];
  // Help wins wherever it is (before --), even after a bad value.
  const end = argv.indexOf('--');
  if ((end < 0 ? argv : argv.slice(0, end)).some((t) => t === '-h' || t === '--help')) return { help: true };

  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === '--') {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (!tok.startsWith('-') || tok === '-' || /^-\d/.test(tok)) {
      args.push(tok);
      continue;
    }

    const eq = tok.indexOf('=');
    const name = tok.startsWith('--') ? tok.slice(2, eq < 0 ? undefined : eq) : tok.slice(1);
    const f = tok.startsWith('--') ? s.flags[name] : undefined;
    if (!f || !Object.prototype.hasOwnProperty.call(s.flags, name)) {
      const shown = eq < 0 ? tok : tok.slice(0, eq);
      const guess = closest(name, flagNames);
      const list = flagNames.length ? flagNames.map((n) => `--${n}`).join(', ') + ', --help' : 'only --help';
      return fail(`unknown flag ${shown}${guess ? ` (did you mean --${guess}?)` : ''}; valid flags: ${list}`);
    }
    let raw: string;
    if (!f.takesValue) {
      raw = eq < 0 ? 'true' : tok.slice(eq + 1);
    } else if (eq >= 0) {
      raw = tok.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        fail(`--${name} needs a value: ${f.valid}`);
      }
      raw = next!;
      i++;
    }
    if (f.takesValue && !f.repeatable && seen.has(name)) {
      fail(`--${name} given more than once (${quote(seen.get(name)!)} and ${quote(raw)}); give it once: ${f.valid}`);
    }
    seen.set(name, raw);
    try {
      values[name] = f.apply(values[name], raw);
    } catch (e) {
      if (!(e instanceof InvalidValue)) throw e;
      fail(`--${name} ${e.message}, got ${quote(raw)}`);
    }
  }

  for (const [name, f] of Object.entries(s.flags)) {
    if (f.required && !seen.has(name)) fail(`--${name} is required: ${f.valid}`);
  }
  const min = s.minArgs ?? 0;
  const max = s.maxArgs ?? 0;
  if (args.length > max) {
    fail(`unexpected argument ${quote(args[max]!)}; usage: ${usageLine(s)}`);
  }
  if (args.length < min) {
    const want = (s.args ?? '').split(/\s+/).filter((w) => w && !w.startsWith('['));
    fail(`missing ${want.slice(args.length).join(' ') || 'arguments'}; usage: ${usageLine(s)}`);
  }
  return { help: false, flags: values as FlagValues<S>, args };
}

/** Prints --help for a command and returns exit status 0. */
export function printHelp<S extends FlagSet>(spec: CommandSpec<S>): number {
  process.stdout.write(formatUsage(spec));
  return 0;
}
