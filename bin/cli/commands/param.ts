/** `faultstack param set NAME VALUE`: change a parameter (registry-style name) in a running stack. */
import type { ParamSetResult } from '../../../stack/control/protocol';
import { ControlCommand } from '../../../stack/control/protocol';
import { defineCommand, parseArgs, printHelp } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { cell } from '../format';
import { subcommand } from '../subcommand';

export const PARAM_SET_SPEC = defineCommand({
  name: 'param set',
  summary: 'Change a parameter of a running stack, by its Windows registry name.',
  details: 'e.g. `faultstack param set SynAttackProtect 2` or `faultstack param set TcpMaxHalfOpen 100`.\nThe value is sent as typed; the stack checks it.',
  args: 'NAME VALUE',
  minArgs: 2,
  maxArgs: 2,
  flags: { ...controlFlags },
});

export async function run(argv: string[]): Promise<number> {
  const rest = subcommand('param', argv, ['set'], PARAM_SET_SPEC);
  if (rest === null) return printHelp(PARAM_SET_SPEC);
  const p = parseArgs(PARAM_SET_SPEC, rest);
  if (p.help) return printHelp(PARAM_SET_SPEC);
  const [name, value] = p.args as [string, string];
  const r = await callStack<ParamSetResult>('param set', p.flags.control, ControlCommand.PARAM_SET, { name, value });
  if (p.flags.json) {
    printJson(r);
  } else {
    const res = r && typeof r === 'object' ? r : {};
    const shown = res.value !== undefined ? cell(res.value) : value;
    const prev = res.previous !== undefined && cell(res.previous) !== shown ? `${cell(res.previous)} -> ` : '';
    process.stdout.write(`${res.name ?? name} = ${prev}${shown}\n`);
  }
  return 0;
}
