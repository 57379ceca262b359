/** `faultstack unlock`: release the connection-table lock by hand (the KB 297040 hang). */
import type { UnlockResult } from '../../../stack/control/protocol';
import { ControlCommand } from '../../../stack/control/protocol';
import { defineCommand, parseArgs, printHelp } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { formatDuration } from '../format';

export const UNLOCK_SPEC = defineCommand({
  name: 'unlock',
  summary: "Release a running stack's connection-table lock by hand, ending a KB 297040 hang.",
  flags: { ...controlFlags },
});

export function describeUnlock(r: UnlockResult | null): string {
  if (!r || typeof r !== 'object') return 'unlock: done\n';
  if (r.released === false) return 'the connection-table lock was not held; nothing to release\n';
  let s = 'released the connection-table lock';
  if (r.holder) s += ` held by ${r.holder}`;
  if (typeof r.heldMs === 'number') s += ` for ${formatDuration(r.heldMs)}`;
  return s + '\n';
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(UNLOCK_SPEC, argv);
  if (p.help) return printHelp(UNLOCK_SPEC);
  const r = await callStack<UnlockResult>('unlock', p.flags.control, ControlCommand.UNLOCK);
  if (p.flags.json) printJson(r);
  else process.stdout.write(describeUnlock(r));
  return 0;
}
