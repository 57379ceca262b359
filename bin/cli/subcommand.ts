/** Shared handling of `<group> <sub> ...` commands (`fault set`, `param set`). */
import { CommandSpec, FlagSet, closest, usageError } from './args';

/**
 * Checks argv[0] against the valid subcommands; returns the remaining arguments, or
 * null when only help was asked for (`faultstack fault --help`).
 */
export function subcommand<S extends FlagSet>(group: string, argv: readonly string[], valid: readonly string[], spec: CommandSpec<S>): string[] | null {
  const first = argv[0];
  if (first === undefined) {
    throw usageError({ name: group }, `missing subcommand: ${valid.join(', ')}; usage: faultstack ${spec.name} ${spec.args ?? ''}`.trimEnd());
  }
  if (first === '-h' || first === '--help' || first === 'help') return null;
  if (!valid.includes(first)) {
    const guess = closest(first, valid);
    throw usageError({ name: group }, `unknown subcommand ${JSON.stringify(first)}${guess ? ` (did you mean ${guess}?)` : ''}; valid: ${valid.join(', ')}`);
  }
  return argv.slice(1);
}
