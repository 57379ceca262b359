/**
 * `faultstack lab nlb`: builds the KB 972183 lab in private namespaces (a bridge, N
 * NLB hosts, M strongSwan clients that move between two client networks through Linux
 * routers, the sticky application), runs the scenario for each mode, and prints per
 * mode: clients served, clients whose state spanned more than one host, reconnect
 * failures the sticky application gave, and how long after the last move every client
 * was on one host; the timelines go to an SVG chart. Needs root. See
 * docs/walkthrough-kb972183.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { defineCommand, integer, oneOf, parseArgs, printHelp, repeatableFlag, switchFlag, text, usageError, valueFlag } from '../args';
import { subcommand } from '../subcommand';
import { table } from '../format';
import { NlbLab, VARIANTS, scenarioLabel, timelineSvg, type FaultMode, type ScenarioResult, type Variant } from '../../../lab/nlb-lab';
import { outputFile } from '../value-flags';

export const LAB_NLB_SPEC = defineCommand({
  name: 'lab nlb',
  summary: 'Run the KB 972183 lab: an NLB cluster, strongSwan clients moving between networks, a sticky application.',
  details: [
    "Without --fault, both modes run (buggy, then hotfixed). --workaround adds runs with the article's",
    'workarounds (an IPsec exception for the application, or no IPsec), in buggy mode. Needs root.',
  ].join('\n'),
  flags: {
    hosts: valueFlag({ valueName: 'N', help: 'cluster hosts', ...integer(1, 8), default: 3 }),
    clients: valueFlag({ valueName: 'M', help: 'strongSwan clients', ...integer(1, 60), default: 4 }),
    fault: valueFlag({
      valueName: 'kb972183=MODE',
      help: 'run only this mode: kb972183=buggy or kb972183=hotfixed',
      ...text('kb972183=buggy or kb972183=hotfixed'),
    }),
    workaround: repeatableFlag({
      valueName: 'NAME',
      help: 'also run with a workaround: ipsec-exception, no-ipsec, or all',
      ...oneOf(['ipsec-exception', 'no-ipsec', 'all'] as const),
    }),
    moves: valueFlag({ valueName: 'K', help: 'moves per client (A -> B, B -> A, ...)', ...integer(1, 10), default: 2 }),
    mode: valueFlag({ valueName: 'MODE', help: 'cluster operation mode', ...oneOf(['unicast', 'multicast', 'igmp'] as const), default: 'unicast' as const }),
    svg: valueFlag({ valueName: 'FILE', help: 'write the timeline chart here', ...outputFile, defaultText: '/tmp/faultstack-lab-nlb.svg' }),
    json: switchFlag('print the results as JSON (progress on stderr)'),
  },
});

function parseFault(spec: { name: string }, raw: string | undefined): FaultMode[] {
  if (raw === undefined) return ['buggy', 'hotfixed'];
  const m = /^(?:kb)?972183=(buggy|hotfixed)$|^nlb-ipsec=(buggy|hotfixed)$/.exec(raw.trim());
  if (!m) throw usageError(spec, `--fault must be kb972183=buggy or kb972183=hotfixed, got "${raw}"`);
  return [(m[1] ?? m[2]) as FaultMode];
}

export function renderResults(results: ScenarioResult[]): string {
  const rows = [['mode', 'served', 'on >1 host', 'refusals', 'all on one host after']];
  for (const r of results) {
    rows.push([
      r.label,
      `${r.served}/${r.clients}`,
      `${r.spanning}/${r.clients}`,
      String(r.refusals),
      r.timeToOneHostMs === null ? 'not within the watch' : `${(r.timeToOneHostMs / 1000).toFixed(1)} s`,
    ]);
  }
  return table(rows, { right: [1, 2, 3] });
}

export async function run(argv: string[]): Promise<number> {
  const rest = subcommand('lab', argv, ['nlb'], LAB_NLB_SPEC);
  if (rest === null) return printHelp(LAB_NLB_SPEC);
  const p = parseArgs(LAB_NLB_SPEC, rest);
  if (p.help) return printHelp(LAB_NLB_SPEC);
  const f = p.flags;
  if (process.getuid?.() !== 0) throw usageError(LAB_NLB_SPEC, 'needs root (network namespaces, TAP devices, strongSwan)');
  const modes = parseFault(LAB_NLB_SPEC, f.fault);
  const extra = new Set<Variant>(f.workaround.includes('all') ? ['ipsec-exception', 'no-ipsec'] : (f.workaround as Variant[]));
  const runs: { fault: FaultMode; variant: Variant }[] = modes.map((fault) => ({ fault, variant: 'ipsec' as Variant }));
  for (const v of VARIANTS) if (extra.has(v)) runs.push({ fault: modes.includes('buggy') ? 'buggy' : modes[0]!, variant: v });
  const log = (s: string) => process.stderr.write(s + '\n');
  const lab = await NlbLab.create({ hosts: f.hosts, clients: f.clients, log, mode: f.mode });
  const results: ScenarioResult[] = [];
  try {
    for (const r of runs) results.push(await lab.runScenario({ fault: r.fault, variant: r.variant, moves: f.moves }));
  } finally {
    await lab.cleanup();
  }
  const svg = f.svg ?? '/tmp/faultstack-lab-nlb.svg';
  fs.writeFileSync(svg, timelineSvg(results));
  if (f.json) {
    process.stdout.write(JSON.stringify({ chart: path.resolve(svg), results: results.map((r) => ({ ...r, samples: undefined })) }, null, 2) + '\n');
    return 0;
  }
  process.stdout.write(`KB 972183 lab: ${f.hosts} hosts (${f.mode}), ${f.clients} strongSwan clients, ${f.moves} move(s) each\n\n`);
  process.stdout.write(renderResults(results));
  for (const r of results) {
    const refusal = r.reports.flatMap((c) => c.events.filter((e) => e.state === 'refused').map((e) => `${c.identity}: ${e.reason}`))[0];
    if (refusal) process.stdout.write(`\n${scenarioLabel(r.fault, r.variant)}, first refusal: ${refusal}\n`);
  }
  process.stdout.write(`\nchart: ${path.resolve(svg)}\n`);
  return 0;
}
