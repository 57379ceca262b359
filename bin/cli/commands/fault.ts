/** `faultstack fault set ID MODE`: switch a fault's mode in a running stack. */
import type { FaultSetResult } from '../../../stack/control/protocol';
import { ControlCommand } from '../../../stack/control/protocol';
import { defineCommand, parseArgs, printHelp } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { subcommand } from '../subcommand';

export const FAULT_SET_SPEC = defineCommand({
  name: 'fault set',
  summary: 'Switch a fault of a running stack to a mode (normally off, buggy or hotfixed).',
  details: 'ID is the KB number or the alias (`faultstack faults` lists them), e.g. `faultstack fault set 297040 buggy`.',
  args: 'ID MODE',
  minArgs: 2,
  maxArgs: 2,
  flags: { ...controlFlags },
});

export function describeFaultSet(r: FaultSetResult | null, id: string, mode: string): string {
  if (!r || typeof r !== 'object') return `fault ${id}: ${mode}\n`;
  const name = `${r.id ?? id}${r.alias ? ` (${r.alias})` : ''}`;
  const prev = r.previous !== undefined && r.previous !== (r.mode ?? mode) ? `${r.previous} -> ` : '';
  return `fault ${name}: ${prev}${r.mode ?? mode}\n`;
}

export async function run(argv: string[]): Promise<number> {
  const rest = subcommand('fault', argv, ['set'], FAULT_SET_SPEC);
  if (rest === null) return printHelp(FAULT_SET_SPEC);
  const p = parseArgs(FAULT_SET_SPEC, rest);
  if (p.help) return printHelp(FAULT_SET_SPEC);
  const [id, mode] = p.args as [string, string];
  const r = await callStack<FaultSetResult>('fault set', p.flags.control, ControlCommand.FAULT_SET, { id, mode });
  if (p.flags.json) printJson(r);
  else process.stdout.write(describeFaultSet(r, id, mode));
  return 0;
}
