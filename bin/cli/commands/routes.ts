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

/**
 * Renders RouteEntry[], or an object whose array fields are tables (routes, networks,
 * hosts...) and whose other fields are a summary (hostRouteCount: 12, atLimit: false).
 */
export function renderRoutes(r: unknown): string {
  const tables: [string, Record<string, unknown>[]][] = [];
  const summary: string[] = [];
  if (Array.isArray(r)) {
    tables.push(['routes', r.filter(isRow)]);
  } else if (isRow(r)) {
    for (const [k, v] of Object.entries(r)) {
      if (Array.isArray(v) && v.every(isRow)) tables.push([k, v]);
      else summary.push(`${k}: ${cell(v)}`);
    }
  }
  const parts: string[] = [];
  if (summary.length) parts.push(summary.join('\n') + '\n');
  for (const [name, rows] of tables) {
    parts.push(rows.length ? `${name} (${rows.length}):\n${objectTable(rows, '  ')}` : `${name}: (none)\n`);
  }
  return parts.length ? parts.join('\n') : '(no routes)\n';
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(ROUTES_SPEC, argv);
  if (p.help) return printHelp(ROUTES_SPEC);
  const r = await callStack<unknown>('routes', p.flags.control, ControlCommand.ROUTES);
  if (p.flags.json) printJson(r);
  else process.stdout.write(renderRoutes(r));
  return 0;
}
