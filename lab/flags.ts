/**
 * Flags of the lab's programs and the benchmark tools, read by node:util's parseArgs
 * (strict: unknown flags, missing values and stray arguments are errors), with a flag
 * given twice refused too. A mistake is one line naming the program and what is valid
 * (a UsageError), never a stack trace. The faultstack CLI has its own parser
 * (bin/cli/args.ts) for its typed, per-command flags.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../stack/util/errors';

type Options = NonNullable<ParseArgsConfig['options']>;
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ options: O; strict: true; allowPositionals: true; tokens: true }>>;

/** What node's parseArgs said, as the end of one line ("unknown flag --x", "--count needs a value"). */
function reason(e: Error & { code?: string }): string {
  const flag = /'(-[^' ]+)/.exec(e.message)?.[1];
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown flag ${flag ?? ''}`.trim();
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /does not take an argument/.test(e.message) ? `${flag ?? 'the flag'} takes no value` : `${flag ?? 'the flag'} needs a value`;
    default:
      return e.message.split('\n')[0]!;
  }
}

/**
 * Parses `argv` against `options` (parseArgs' own option table). `maxPositionals`
 * arguments that are not flags may follow (default none).
 */
export function parseFlags<const O extends Options>(
  prog: string,
  argv: readonly string[],
  options: O,
  maxPositionals = 0,
): { values: Parsed<O>['values']; positionals: string[] } {
  const valid = `flags: ${Object.keys(options)
    .map((k) => `--${k}`)
    .join(', ')}`;
  let r: Parsed<O>;
  try {
    r = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true, tokens: true });
  } catch (e) {
    throw new UsageError(`${prog}: ${reason(e as Error)}; ${valid}`);
  }
  const seen = new Set<string>();
  for (const t of r.tokens) {
    if (t.kind !== 'option' || options[t.name]?.multiple) continue;
    if (seen.has(t.name)) throw new UsageError(`${prog}: --${t.name} given twice`);
    seen.add(t.name);
  }
  if (r.positionals.length > maxPositionals) {
    throw new UsageError(`${prog}: unexpected argument ${JSON.stringify(r.positionals[maxPositionals])}; ${valid}`);
  }
  return { values: r.values, positionals: r.positionals };
}
