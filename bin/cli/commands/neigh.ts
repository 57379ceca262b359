/**
 * `faultstack neigh`: the neighbour (ARP) table of a stack on a TAP device, printed as
 * `ip neigh` prints the kernel's ("198.18.0.1 dev t0 lladdr 52:54:00:12:34:56 REACHABLE");
 * `-s` adds what `ip -s neigh` adds (probes, and how long ago it was used and confirmed).
 * `--json` gives the whole reply: entries, proxy subnets, parameters and counters.
 */
import { ControlCommand, NeighEntry, NeighResult } from '../../../stack/control/protocol';
import { defineCommand, parseArgs, printHelp, switchFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';

export const NEIGH_SPEC = defineCommand({
  name: 'neigh',
  summary: "Show a running stack's neighbour table (ARP), like ip neigh.",
  flags: { ...controlFlags, stats: switchFlag('also probes and ages, as ip -s neigh') },
});

function ago(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? '-' : String(Math.round(ms / 1000));
}

/** One `ip neigh` line. */
export function neighLine(e: NeighEntry, stats = false): string {
  let s = `${e.dst} dev ${e.dev ?? '?'}`;
  s += e.lladdr ? ` lladdr ${e.lladdr}` : ' ';
  if (stats) s += ` used ${ago(e.usedAgoMs)}/${ago(e.confirmedAgoMs)}/${ago(e.updatedAgoMs)} probes ${e.probes ?? 0}`;
  if (stats && e.queued) s += ` queued ${e.queued}`;
  return `${s} ${e.state}`;
}

export function renderNeigh(r: NeighResult, stats = false): string {
  return (r.entries ?? []).map((e) => neighLine({ ...e, dev: e.dev ?? r.dev }, stats) + '\n').join('');
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(NEIGH_SPEC, argv);
  if (p.help) return printHelp(NEIGH_SPEC);
  const r = await callStack<NeighResult>('neigh', p.flags.control, ControlCommand.NEIGH);
  if (p.flags.json) printJson(r);
  else process.stdout.write(renderNeigh(r, p.flags.stats));
  return 0;
}
