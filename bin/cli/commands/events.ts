/** `faultstack events`: the stack's event log (what happened and why), once or following. */
import type { EventRecord } from '../../../stack/control/protocol';
import { ControlCommand } from '../../../stack/control/protocol';
import { ControlClient, ControlError } from '../../../stack/control/client';
import { CodedError } from '../../../stack/util/errors';
import { defineCommand, integer, parseArgs, printHelp, switchFlag, valueFlag } from '../args';
import { callStack, controlFlags, resolveControlPath } from '../control-target';
import { cell, formatClock } from '../format';

export const EVENTS_SPEC = defineCommand({
  name: 'events',
  summary: "Print a running stack's event log; --follow keeps printing new events until Ctrl-C.",
  flags: {
    ...controlFlags,
    json: switchFlag('one JSON object per line (JSONL)'),
    follow: switchFlag('keep the connection open and print events as they happen'),
    limit: valueFlag({ valueName: 'N', help: 'only the last N events', ...integer(1, 1_000_000) }),
  },
});

const ORDER = ['ts', 'type', 'fault', 'kind', 'event', 'name'];

/** "14:03:07.125 syn-protect.on fault=903927 halfOpen=501" */
export function formatEvent(ev: unknown): string {
  if (!ev || typeof ev !== 'object' || Array.isArray(ev)) return cell(ev);
  const e = ev as EventRecord;
  const parts: string[] = [];
  const ts = e.ts ?? e.time ?? e.t;
  if (typeof ts === 'number') parts.push(ts > 1e11 ? formatClock(ts) : `+${ts.toFixed(3)}`);
  else if (typeof ts === 'string') parts.push(ts);
  const type = e.type ?? e.event ?? e.kind ?? e.name;
  if (type !== undefined) parts.push(cell(type));
  // An event that explains itself in words: the words are the line (--json has the rest).
  if (typeof e.message === 'string' && e.message) return [...parts, e.message].join(' ');
  for (const [k, v] of Object.entries(e)) {
    if (['ts', 'time', 't'].includes(k) || (ORDER.includes(k) && v === type)) continue;
    const s = cell(v);
    parts.push(`${k}=${/\s/.test(s) ? JSON.stringify(s) : s}`);
  }
  return parts.join(' ');
}

function printer(json: boolean): (ev: unknown) => void {
  return (ev) => process.stdout.write((json ? JSON.stringify(ev) : formatEvent(ev)) + '\n');
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(EVENTS_SPEC, argv);
  if (p.help) return printHelp(EVENTS_SPEC);
  const { json, follow, limit, control } = p.flags;
  const print = printer(json);
  const args: Record<string, unknown> = { follow };
  if (limit !== undefined) args.limit = limit;

  if (!follow) {
    const r = await callStack<unknown>('events', control, ControlCommand.EVENTS, args, 30_000);
    const list = Array.isArray(r) ? r : Array.isArray((r as { events?: unknown })?.events) ? (r as { events: unknown[] }).events : [];
    list.forEach(print);
    return 0;
  }

  const sock = await resolveControlPath(control);
  const stream = await ControlClient.stream(sock, ControlCommand.EVENTS, args, print);
  let interrupted = false;
  const stop = () => {
    interrupted = true;
    stream.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const final = await stream.done;
    if (!interrupted && Array.isArray(final)) final.forEach(print);
    return 0;
  } catch (e) {
    if (e instanceof ControlError) throw new CodedError(e.code, `faultstack events: ${e.message}`);
    if (e instanceof CodedError && e.code === 'ECONNRESET') {
      throw new CodedError('ECONNRESET', `faultstack events: the stack at ${sock} went away`);
    }
    throw e;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
