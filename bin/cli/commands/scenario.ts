/**
 * `faultstack scenario run|compare|check FILE`: scenario files (docs/scenarios.md). `check`
 * validates only (no privilege); `run` builds the file's lab in private namespaces, runs
 * its steps and checks its expectations (exit 1 when one fails); `compare` runs it once
 * per mode of one fault and prints the runs side by side. A bad file or flag: one line,
 * exit 2. Progress goes to stderr, the report to stdout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ALL_MODES, lookupFault } from '../../../stack/faults/catalogue';
import { loadScenario, type Scenario } from '../../../lab/scenario/format';
import { renderCompare, renderRun } from '../../../lab/scenario/report';
import type { ScenarioRunResult } from '../../../lab/scenario/run';
import { defineCommand, parseArgs, printHelp, repeatableFlag, switchFlag, text, usageError, valueFlag } from '../args';
import { subcommand } from '../subcommand';

const SET_FLAG = repeatableFlag({
  valueName: 'KEY=VALUE',
  help: 'override a field of the file before it is checked, e.g. stack.params.MaxIcmpHostRoutes=6',
  ...text('KEY=VALUE with a dotted KEY, e.g. stack.faults.kb898060=buggy'),
});
const CHART_FLAG = valueFlag({
  valueName: 'DIR',
  help: 'write charts into this directory',
  defaultText: 'the system temporary directory',
  ...text('an existing directory', (s) =>
    fs.existsSync(s) && fs.statSync(s).isDirectory() ? undefined : `must be an existing directory (${path.resolve(s)} is not one)`,
  ),
});

export const SCENARIO_RUN_SPEC = defineCommand({
  name: 'scenario run',
  summary: 'Run a scenario file in private network namespaces and check its expectations (exit 1 if one fails).',
  args: 'FILE',
  minArgs: 1,
  maxArgs: 1,
  details: 'Needs root. Progress on stderr, the report on stdout; docs/scenarios.md has the format.',
  flags: { json: switchFlag('print the results as JSON'), set: SET_FLAG, 'chart-dir': CHART_FLAG },
});
export const SCENARIO_COMPARE_SPEC = defineCommand({
  name: 'scenario compare',
  summary: 'Run a scenario file once per mode of one fault and print the runs side by side.',
  args: 'FILE',
  minArgs: 1,
  maxArgs: 1,
  details: 'e.g. faultstack scenario compare scenarios/kb898060.yaml --fault kb898060=buggy,hotfixed. Needs root.',
  flags: {
    fault: valueFlag({
      valueName: 'ID=MODE,MODE',
      help: 'the fault and the modes to run, e.g. kb898060=buggy,hotfixed',
      ...text('ID=MODE,MODE, e.g. kb898060=buggy,hotfixed'),
    }),
    json: switchFlag('print the results as JSON'),
    set: SET_FLAG,
    'chart-dir': CHART_FLAG,
  },
});
export const SCENARIO_CHECK_SPEC = defineCommand({
  name: 'scenario check',
  summary: 'Validate scenario files only: one line per file, exit 2 at the first bad one.',
  args: 'FILE...',
  minArgs: 1,
  maxArgs: 1000,
  flags: { json: switchFlag('print what each file describes as JSON'), set: SET_FLAG },
});
const GROUP = defineCommand({ name: 'scenario', summary: 'Scenario files: run, compare, check.', args: 'run|compare|check FILE', flags: {} });

type Runner = typeof import('../../../lab/scenario/run');

function needRoot(spec: { name: string }): void {
  if (process.getuid?.() !== 0) throw usageError(spec, 'needs root (it builds network namespaces, veth pairs and TUN devices)');
}

function runner(): Runner {
  // Loaded on use: `scenario check` and --help stay light.
  return require('../../../lab/scenario/run') as Runner;
}

const log = (line: string) => process.stderr.write(line + '\n');
const clock = () => performance.now();

function summary(s: Scenario): string {
  return s.parts.map((p) => `${p.lab.topology}: ${p.steps.length} steps, ${p.expect.length} expectations`).join('; ');
}

export function parseCompareFault(raw: string | undefined): { fault: string; modes: string[] } {
  const valid = `ID=MODE,MODE with modes ${ALL_MODES.join(', ')}, e.g. kb898060=buggy,hotfixed`;
  if (raw === undefined) throw usageError(SCENARIO_COMPARE_SPEC, `--fault is required: ${valid}`);
  const m = /^([^=]+)=(.+)$/.exec(raw.trim());
  if (!m) throw usageError(SCENARIO_COMPARE_SPEC, `--fault must be ${valid}, got ${JSON.stringify(raw)}`);
  const f = lookupFault(m[1]!);
  if (!f) throw usageError(SCENARIO_COMPARE_SPEC, `--fault: unknown fault ${JSON.stringify(m[1])}; ${valid}`);
  const modes = m[2]!.split(',').map((x) => x.trim());
  const bad = modes.find((x) => !(ALL_MODES as readonly string[]).includes(x));
  if (bad !== undefined) throw usageError(SCENARIO_COMPARE_SPEC, `--fault: mode ${JSON.stringify(bad)} is not one of ${ALL_MODES.join(', ')}; ${valid}`);
  if (modes.length < 2 || new Set(modes).size !== modes.length)
    throw usageError(SCENARIO_COMPARE_SPEC, `--fault needs at least two different modes to compare; ${valid}`);
  return { fault: f.id, modes };
}

export async function run(argv: string[]): Promise<number> {
  const rest = subcommand('scenario', argv, ['run', 'compare', 'check'], GROUP);
  if (rest === null) return printHelp(GROUP);
  const sub = argv[0]!;
  if (sub === 'check') {
    const p = parseArgs(SCENARIO_CHECK_SPEC, rest);
    if (p.help) return printHelp(SCENARIO_CHECK_SPEC);
    const all = p.args.map((f) => loadScenario(f, { set: p.flags.set }));
    if (p.flags.json) process.stdout.write(JSON.stringify(all, null, 2) + '\n');
    else for (const s of all) process.stdout.write(`${s.file}: ok (${summary(s)})\n`);
    return 0;
  }
  if (sub === 'run') {
    const p = parseArgs(SCENARIO_RUN_SPEC, rest);
    if (p.help) return printHelp(SCENARIO_RUN_SPEC);
    const s = loadScenario(p.args[0]!, { set: p.flags.set });
    needRoot(SCENARIO_RUN_SPEC);
    const r = await runner().runScenario(s, { log, clock, chartDir: p.flags['chart-dir'] });
    process.stdout.write(p.flags.json ? JSON.stringify(r, null, 2) + '\n' : renderRun(r));
    return r.ok ? 0 : 1;
  }
  const p = parseArgs(SCENARIO_COMPARE_SPEC, rest);
  if (p.help) return printHelp(SCENARIO_COMPARE_SPEC);
  const { fault, modes } = parseCompareFault(p.flags.fault);
  // Every mode's file is checked before anything runs.
  const scenarios = modes.map((mode) => ({ mode, s: loadScenario(p.args[0]!, { set: [...p.flags.set, `stack.faults.${fault}=${mode}`] }) }));
  needRoot(SCENARIO_COMPARE_SPEC);
  const runs: { mode: string; result: ScenarioRunResult }[] = [];
  for (const { mode, s } of scenarios) {
    log(`[scenario] ${fault}=${mode}`);
    runs.push({ mode, result: await runner().runScenario(s, { log, clock, chartDir: p.flags['chart-dir'] }) });
  }
  process.stdout.write(p.flags.json ? JSON.stringify({ fault, runs }, null, 2) + '\n' : renderCompare(fault, runs));
  return runs.every((x) => x.result.ok) ? 0 : 1;
}
