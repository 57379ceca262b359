/**
 * `faultstack trace`: per-connection traces of a running stack (stack/runtime/trace.ts).
 *   faultstack trace start CONN [--samples N]   start recording a live connection
 *   faultstack trace CONN [--json]               what was recorded (start it first)
 *   faultstack trace stop CONN                   stop recording (the record stays)
 *   faultstack trace list                        the traces taken
 * CONN is PEER:PORT or LOCAL:PORT-PEER:PORT, as `faultstack stats --all` shows them.
 */
import { defineCommand, integer, parseArgs, printHelp, switchFlag, usageError, valueFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { table } from '../format';
import type { TraceReply } from '../../../stack/runtime/trace';

export const TRACE_SPEC = defineCommand({
  name: 'trace',
  summary: "Record and show a connection's snd.una/snd.nxt/rcv.nxt, cwnd, ssthresh, srtt, rto and flight over time.",
  details: [
    'faultstack trace start CONN [--samples N] [--wait]   start recording a live connection (--wait: the next one CONN names)',
    'faultstack trace [show] CONN [--json]       show what was recorded',
    'faultstack trace stop CONN                  stop recording (the record stays)',
    'faultstack trace list                       the traces taken',
    'CONN is PEER:PORT or LOCAL:PORT-PEER:PORT (faultstack stats --all lists them).',
  ].join('\n'),
  args: '[start|show|stop|list] [CONN]',
  minArgs: 1,
  maxArgs: 2,
  flags: {
    ...controlFlags,
    wait: switchFlag(
      'with start: a connection that does not exist yet is traced from the moment it is made (give its PEER:PORT, e.g. a client bound with --local-port)',
    ),
    samples: valueFlag({ valueName: 'N', help: 'with start: samples (and segments) kept, the oldest overwritten past it', ...integer(16, 200_000) }),
  },
});

const SUBS = ['start', 'show', 'stop', 'list'] as const;

/** A trace as text: a summary line, then the changes as a table (the last `limit` of them). */
export function renderTrace(r: TraceReply, limit = 40): string {
  const head =
    `${r.conn} ${r.state}${r.active ? ' (tracing)' : ' (stopped)'}: ${r.samples.length} samples, ${r.segments.length} segments sent, ${r.retransmissions} retransmitted` +
    (r.droppedSamples || r.droppedSegments ? `, oldest ${r.droppedSamples} samples and ${r.droppedSegments} segments overwritten` : '') +
    '\n';
  const rows: string[][] = [['t ms', 'snd.una', 'snd.nxt', 'rcv.nxt', 'cwnd', 'ssthresh', 'srtt', 'rto', 'flight']];
  const show = r.samples.slice(-limit);
  for (const s of show) {
    rows.push([
      s.t.toFixed(1),
      String(s.una),
      String(s.nxt),
      String(s.rcvNxt),
      String(s.cwnd),
      s.ssthresh >= 0x7fffffff ? 'inf' : String(s.ssthresh),
      s.srtt.toFixed(1),
      String(Math.round(s.rto)),
      String(s.inflight),
    ]);
  }
  const more = r.samples.length > show.length ? `(the last ${show.length} of ${r.samples.length}; --json has them all)\n` : '';
  return head + more + table(rows, { indent: '  ', right: [0, 1, 2, 3, 4, 5, 6, 7, 8] });
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(TRACE_SPEC, argv);
  if (p.help) return printHelp(TRACE_SPEC);
  let [sub, conn] = p.args as [string, string | undefined];
  if (!(SUBS as readonly string[]).includes(sub)) {
    conn = sub;
    sub = 'show';
    if (p.args.length > 1) throw usageError(TRACE_SPEC, `unknown subcommand ${JSON.stringify(p.args[0])}: start, show, stop or list`);
  }
  if (sub === 'list') {
    if (conn !== undefined) throw usageError(TRACE_SPEC, 'trace list takes no CONN');
    const r = await callStack<{ traces: Record<string, unknown>[] }>('trace', p.flags.control, 'trace.list');
    if (p.flags.json) printJson(r);
    else
      process.stdout.write(
        r.traces.length
          ? table(
              [
                ['conn', 'active', 'samples', 'segments', 'retrans'],
                ...r.traces.map((t) => [String(t.conn), String(t.active), String(t.samples), String(t.segments), String(t.retransmissions)]),
              ],
              { indent: '' },
            )
          : 'no traces\n',
      );
    return 0;
  }
  if (conn === undefined) throw usageError(TRACE_SPEC, `trace ${sub} needs CONN: PEER:PORT or LOCAL:PORT-PEER:PORT`);
  if (sub === 'start') {
    const r = await callStack<{ conn: string; started: boolean; pending?: boolean; capacity: number }>('trace', p.flags.control, 'trace.start', {
      conn,
      ...(p.flags.samples !== undefined ? { samples: p.flags.samples } : {}),
      ...(p.flags.wait ? { wait: true } : {}),
    });
    if (p.flags.json) printJson(r);
    else process.stdout.write(`${r.pending ? 'waiting to trace' : r.started ? 'tracing' : 'already tracing'} ${r.conn} (up to ${r.capacity} samples)\n`);
    return 0;
  }
  if (p.flags.samples !== undefined || p.flags.wait) throw usageError(TRACE_SPEC, '--samples and --wait go with trace start');
  if (sub === 'stop') {
    const r = await callStack<{ conn: string; stopped: boolean }>('trace', p.flags.control, 'trace.stop', { conn });
    if (p.flags.json) printJson(r);
    else process.stdout.write(`${r.stopped ? 'stopped tracing' : 'was not tracing'} ${r.conn}\n`);
    return 0;
  }
  const r = await callStack<TraceReply>('trace', p.flags.control, 'trace.get', { conn });
  if (p.flags.json) printJson(r);
  else process.stdout.write(renderTrace(r));
  return 0;
}
