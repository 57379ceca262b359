/**
 * `faultstack impair add|list|del|clear`: packet impairments in netem's words and
 * connection toxics in toxiproxy's, on a running stack. A spec is checked here first
 * (a bad word: one line, exit 2, no stack needed), then by the stack.
 */
import { ImpairCommand } from '../../../stack/impair/protocol';
import type { ImpairmentRow } from '../../../stack/impair/registry';
import { ImpairSpecError, parseImpairment } from '../../../stack/impair/spec';
import { defineCommand, parseArgs, printHelp, usageError } from '../args';
import { callStack, controlFlags, printJson, socketPath } from '../control-target';
import { subcommand } from '../subcommand';
import { table } from '../format';
import { InvalidValue } from '../args';

const GRAMMAR = `Packets (netem's words and units, tc-netem(8)):
  in|out [MATCH...] [limit PACKETS] [delay TIME [JITTER [CORRELATION]]]
         [distribution uniform|normal|pareto|paretonormal]
         [loss [random] PERCENT [CORRELATION] | loss state P13 [P31 [P32 [P23 [P14]]]]
          | loss gemodel P [R [1-H [1-K]]]] [ecn]
         [corrupt PERCENT [CORRELATION]] [duplicate PERCENT [CORRELATION]]
         [reorder PERCENT [CORRELATION] [gap DISTANCE]]
         [rate RATE [PACKETOVERHEAD [CELLSIZE [CELLOVERHEAD]]]]
         [slot MIN [MAX] [packets N] [bytes N]] [seed N]
  MATCH: --src A[/P] --dst A[/P] --sport N[-M] --dport N[-M] --port N[-M]
         --proto tcp|udp|icmp|N --tcp-flags syn|syn-ack|fin|rst|FLAGS/MASK
         --conn A:P,B:P --nth N --every N --from TIME --until TIME
  TIME: 20ms, 1.5s, 500us; RATE: 10mbit, 512kbit, 100kbps; PERCENT: 3% (or 3)

Connections (toxiproxy's toxics and attributes; upstream = client to server):
  upstream|downstream [--port N[-M]] [--peer A[/P]] [--peer-port N[-M]]
         latency latency=MS jitter=MS | bandwidth rate=KB/s | slow_close delay=MS
         | timeout timeout=MS | reset_peer timeout=MS
         | slicer average_size=B size_variation=B delay=US | limit_data bytes=B
         [toxicity=P] [seed N]

Examples:
  faultstack impair add out --dport 80 loss 3% 25% delay 20ms 5ms distribution normal
  faultstack impair add in loss gemodel 1% 10% 70% 0.1% seed 7
  faultstack impair add out --tcp-flags syn-ack --nth 1 loss 100%
  faultstack impair add downstream --port 80 latency latency=300 jitter=50
  faultstack impair list
  faultstack impair del 2
  faultstack impair clear

The full reference: docs/impairments.md.`;

export const IMPAIR_ADD_SPEC = defineCommand({
  name: 'impair add',
  summary: "Add a packet impairment (netem's words) or a connection toxic (toxiproxy's) to a running stack.",
  args: 'SPEC...',
  details: GRAMMAR,
  flags: { ...controlFlags },
});
export const IMPAIR_LIST_SPEC = defineCommand({
  name: 'impair list',
  summary: "A running stack's impairments with their counters (matched, dropped, delayed, reordered, duplicated, corrupted, rate-queued, queue drops).",
  flags: { ...controlFlags },
});
export const IMPAIR_DEL_SPEC = defineCommand({
  name: 'impair del',
  summary: 'Remove one impairment; what it holds goes on at once.',
  args: 'ID',
  minArgs: 1,
  maxArgs: 1,
  flags: { ...controlFlags },
});
export const IMPAIR_CLEAR_SPEC = defineCommand({
  name: 'impair clear',
  summary: 'Remove every impairment.',
  flags: { ...controlFlags },
});
const GROUP = defineCommand({
  name: 'impair',
  summary: 'Impairments of a running stack: add, list, del, clear.',
  args: 'add|list|del|clear ...',
  details: GRAMMAR,
  flags: {},
});

/**
 * `impair add` takes the spec's own --flags (--dport, --src...), so only --control, --json
 * and --help are read here; everything else is the spec.
 */
export function splitAddArgs(argv: readonly string[]): { words: string[]; control?: string; json: boolean; help: boolean } {
  const words: string[] = [];
  let control: string | undefined;
  let json = false,
    help = false;
  for (let i = 0; i < argv.length; i++) {
    const t = argv[i]!;
    if (t === '--help' || t === '-h') {
      help = true;
      continue;
    }
    if (t === '--json') {
      json = true;
      continue;
    }
    if (t === '--control' || t.startsWith('--control=')) {
      const raw = t === '--control' ? argv[++i] : t.slice('--control='.length);
      if (raw === undefined) throw usageError(IMPAIR_ADD_SPEC, `--control needs a value: ${socketPath.valid}`);
      try {
        control = socketPath.parse(raw);
      } catch (e) {
        if (e instanceof InvalidValue) throw usageError(IMPAIR_ADD_SPEC, `--control ${e.message}, got ${JSON.stringify(raw)}`);
        throw e;
      }
      continue;
    }
    words.push(t);
  }
  return { words, control, json, help };
}

const PACKET_COLS: [string, string][] = [
  ['matched', 'MATCHED'],
  ['dropped', 'DROPPED'],
  ['delayed', 'DELAYED'],
  ['reordered', 'REORDERED'],
  ['duplicated', 'DUPLICATED'],
  ['corrupted', 'CORRUPTED'],
  ['rateQueued', 'RATE-QUEUED'],
  ['queueDrops', 'QUEUE-DROPS'],
  ['queued', 'QUEUED'],
];
const TOXIC_COLS: [string, string][] = [
  ['connections', 'CONNECTIONS'],
  ['affected', 'AFFECTED'],
  ['bytes', 'BYTES'],
  ['delayed', 'DELAYED'],
  ['dropped', 'DROPPED'],
  ['closed', 'CLOSED'],
  ['resets', 'RESETS'],
];

export function renderImpairments(rows: ImpairmentRow[]): string {
  if (rows.length === 0) return 'no impairments\n';
  const parts: string[] = [];
  for (const [kind, cols, title] of [
    ['packet', PACKET_COLS, 'packet impairments'],
    ['toxic', TOXIC_COLS, 'connection toxics'],
  ] as const) {
    const mine = rows.filter((r) => r.kind === kind);
    if (mine.length === 0) continue;
    const c = (r: ImpairmentRow, k: string) => String((r.counters as unknown as Record<string, number>)[k] ?? 0);
    const body = [['ID', ...cols.map(([, h]) => h), 'SPEC'], ...mine.map((r) => [String(r.id), ...cols.map(([k]) => c(r, k)), r.spec])];
    parts.push(`${title} (${mine.length}):\n${table(body, { right: [0, ...cols.map((_, i) => i + 1)], indent: '  ' })}`);
  }
  return parts.join('\n');
}

function counterLine(r: ImpairmentRow): string {
  const cols = r.kind === 'packet' ? PACKET_COLS : TOXIC_COLS;
  const c = r.counters as unknown as Record<string, number>;
  return cols.map(([k, h]) => `${h.toLowerCase()} ${c[k] ?? 0}`).join(', ');
}

async function add(argv: string[]): Promise<number> {
  const a = splitAddArgs(argv);
  if (a.help) return printHelp(IMPAIR_ADD_SPEC);
  if (a.words.length === 0) throw usageError(IMPAIR_ADD_SPEC, 'missing SPEC: e.g. faultstack impair add out loss 3% delay 20ms (faultstack impair add --help)');
  try {
    parseImpairment(a.words);
  } catch (e) {
    if (e instanceof ImpairSpecError) throw usageError(IMPAIR_ADD_SPEC, e.message);
    throw e;
  }
  const r = await callStack<ImpairmentRow>('impair add', a.control, ImpairCommand.ADD, { words: a.words });
  if (a.json) printJson(r);
  else process.stdout.write(`impairment ${r.id} added: ${r.spec}\n`);
  return 0;
}

export async function run(argv: string[]): Promise<number> {
  const rest = subcommand('impair', argv, ['add', 'list', 'del', 'clear'], GROUP);
  if (rest === null) return printHelp(GROUP);
  switch (argv[0]) {
    case 'add':
      return add(rest);
    case 'list': {
      const p = parseArgs(IMPAIR_LIST_SPEC, rest);
      if (p.help) return printHelp(IMPAIR_LIST_SPEC);
      const r = await callStack<{ impairments: ImpairmentRow[] }>('impair list', p.flags.control, ImpairCommand.LIST);
      if (p.flags.json) printJson(r);
      else process.stdout.write(renderImpairments(r.impairments ?? []));
      return 0;
    }
    case 'del': {
      const p = parseArgs(IMPAIR_DEL_SPEC, rest);
      if (p.help) return printHelp(IMPAIR_DEL_SPEC);
      const raw = p.args[0]!;
      if (!/^\d{1,9}$/.test(raw) || Number(raw) < 1)
        throw usageError(IMPAIR_DEL_SPEC, `ID must be an impairment number (faultstack impair list shows them), got ${JSON.stringify(raw)}`);
      const r = await callStack<ImpairmentRow>('impair del', p.flags.control, ImpairCommand.DEL, { id: Number(raw) });
      if (p.flags.json) printJson(r);
      else process.stdout.write(`impairment ${r.id} removed: ${r.spec} (${counterLine(r)})\n`);
      return 0;
    }
    default: {
      const p = parseArgs(IMPAIR_CLEAR_SPEC, rest);
      if (p.help) return printHelp(IMPAIR_CLEAR_SPEC);
      const r = await callStack<{ removed: ImpairmentRow[] }>('impair clear', p.flags.control, ImpairCommand.CLEAR);
      if (p.flags.json) printJson(r);
      else
        process.stdout.write(
          r.removed.length ? r.removed.map((x) => `impairment ${x.id} removed: ${x.spec} (${counterLine(x)})\n`).join('') : 'no impairments to remove\n',
        );
      return 0;
    }
  }
}
