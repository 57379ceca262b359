/** `faultstack routes`: the stack's route table, host routes from PMTU discovery included (KB 898060). */
import { ControlCommand } from '../../../stack/control/protocol';
import { defineCommand, parseArgs, printHelp } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { cell, objectTable } from '../format';

export const ROUTES_SPEC = defineCommand({
  name: 'routes',
  summary: "Show a running stack's route table, including the host routes path MTU discovery added.",
  flags: { ...controlFlags },
});

function isRow(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Renders RouteEntry[] or { routes: RouteEntry[], ...summary fields }. */
export function renderRoutes(r: unknown): string {
  let rows: unknown[] = [];
  const summary: string[] = [];
  if (Array.isArray(r)) {
    rows = r;
  } else if (isRow(r)) {
    for (const [k, v] of Object.entries(r)) {
      if (k === 'routes' && Array.isArray(v)) rows = v;
      else summary.push(`${k}: ${cell(v)}`);
    }
  }
  const out = summary.length ? summary.join('\n') + '\n' : '';
  const objs = rows.filter(isRow);
  if (objs.length === 0) return out + '(no routes)\n';
  return out + (out ? '\n' : '') + objectTable(objs);
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(ROUTES_SPEC, argv);
  if (p.help) return printHelp(ROUTES_SPEC);
  const r = await callStack<unknown>('routes', p.flags.control, ControlCommand.ROUTES);
  if (p.flags.json) printJson(r);
  else process.stdout.write(renderRoutes(r));
  return 0;
}
