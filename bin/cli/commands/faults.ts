/** `faultstack faults [--json]`: the fault catalogue, its parameters and the profiles. */
import { DEFAULT_PROFILE, describeRange, FAULTS, PARAMS, PROFILES, type ParamSpec } from '../../../stack/faults/catalogue';
import { defineCommand, parseArgs, printHelp, switchFlag } from '../args';
import { table } from '../format';

export const FAULTS_SPEC = defineCommand({
  name: 'faults',
  summary: 'List the reproduced faults, their modes, their parameters and the system profiles.',
  details:
    'Profiles set parameters of the emulated system only; every implemented fault starts hotfixed and\n' +
    "`faultstack run --fault ID=buggy` turns the article's behaviour on. Default profile: " +
    DEFAULT_PROFILE +
    '.',
  flags: {
    json: switchFlag('print the whole catalogue as JSON'),
  },
});

function defaultText(p: ParamSpec): string {
  return String(p.default);
}

/** The value each profile gives a parameter, where it differs from the default. */
function profileText(p: ParamSpec): string {
  const parts: string[] = [];
  for (const prof of PROFILES) {
    const v = (prof.params as Record<string, unknown>)[p.name];
    if (v !== undefined && v !== p.default) parts.push(`${prof.name}=${String(v)}`);
  }
  return parts.join(' ');
}

export function renderText(): string {
  const out: string[] = [];
  for (const f of FAULTS) {
    out.push(`${f.id}  ${f.alias}${f.implemented ? '' : '  (not implemented yet)'}`);
    out.push(`  ${f.title}`);
    out.push(`  article: ${f.article}  applies to: ${f.appliesTo}`);
    out.push(`  modes: ${f.modes.join(', ')}  default: ${f.defaultMode}`);
    const rows: string[][] = [['parameter', 'default', 'range', 'profiles']];
    for (const name of f.params) {
      const p = PARAMS.find((x) => x.name === name)!;
      rows.push([p.name, defaultText(p), describeRange(p), profileText(p)]);
    }
    out.push(table(rows, { indent: '    ', right: [1] }).trimEnd());
    out.push('');
  }
  const general = PARAMS.filter((p) => p.general);
  if (general.length) {
    out.push('System parameters (read whatever the faults):');
    const rows: string[][] = [['parameter', 'default', 'range', 'profiles']];
    for (const p of general) rows.push([p.name, defaultText(p), describeRange(p), profileText(p)]);
    out.push(table(rows, { indent: '    ', right: [1] }).trimEnd());
    out.push('');
  }
  out.push('Profiles (set parameters only; fault modes start at their defaults):');
  const rows = PROFILES.map((p) => [`  ${p.name}${p.name === DEFAULT_PROFILE ? ' (default)' : ''}`, p.title]);
  out.push(table(rows).trimEnd());
  out.push('');
  out.push("Run with --json for every parameter's meaning, registry location and source.");
  return out.join('\n') + '\n';
}

export function renderJson(): string {
  return JSON.stringify({ defaultProfile: DEFAULT_PROFILE, faults: FAULTS, params: PARAMS, profiles: PROFILES }, null, 2) + '\n';
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(FAULTS_SPEC, argv);
  if (p.help) return printHelp(FAULTS_SPEC);
  process.stdout.write(p.flags.json ? renderJson() : renderText());
  return 0;
}
