/**
 * `faultstack fw [summary|sessions|bindings|rules] [--json]`: a running firewall's state
 * (stack/firewall/, started with `faultstack run --external-tun ...`).
 *
 *   summary   interfaces, routes, forwarding counters, drops by reason, Firewall Client,
 *             streaming-media filter and port-scan figures, the KB 319381 fault
 *   sessions  SecureNAT sessions, filter openings, Firewall Client sessions and connections
 *   bindings  Firewall Client UDP bindings with their media state, the filter's openings
 *   rules     the packet-filter rules with their hits, the default policy, drops by reason
 */
import { CodedError, UsageError } from '../../../stack/util/errors';
import { closest, defineCommand, parseArgs, printHelp, switchFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { formatDuration, formatNumber, objectTable, table } from '../format';

const VIEWS = ['summary', 'sessions', 'bindings', 'rules'] as const;
type View = (typeof VIEWS)[number];

export const FW_SPEC = defineCommand({
  name: 'fw',
  summary: "Show a running firewall's sessions, bindings, rules and counters.",
  details: [
    'faultstack fw [summary|sessions|bindings|rules]; the stack must run as a firewall',
    '(faultstack run --tun IN --addr IP/PREFIX --external-tun OUT --external-addr IP/PREFIX).',
  ].join('\n'),
  args: '[summary|sessions|bindings|rules]',
  maxArgs: 1,
  flags: { ...controlFlags, all: switchFlag('also show counters and drop reasons that are zero') },
});

type Row = Record<string, unknown>;
const ms = (v: unknown) => (typeof v === 'number' ? formatDuration(v) : '-');
const counters = (o: Record<string, unknown> | undefined, all: boolean, indent = '  ') => {
  const rows = Object.entries(o ?? {})
    .filter(([, v]) => typeof v === 'number' && (all || v !== 0))
    .map(([k, v]) => [k, formatNumber(v as number)]);
  return rows.length ? table(rows, { right: [1], indent }) : `${indent}(all zero)\n`;
};

export function renderFw(view: View, r: Row, all = false): string {
  const out: string[] = [];
  if (view === 'summary') {
    const ifs = (r.interfaces as Row[] | undefined) ?? [];
    out.push(
      `interfaces:\n${objectTable(
        ifs.map((i) => ({ name: i.name, device: i.device, address: i.address, mtu: i.mtu, 'kernel side in': i.hostNetns })),
        '  ',
      )}`,
    );
    out.push(`routes:\n${objectTable((r.routes as Row[] | undefined) ?? [], '  ')}`);
    out.push(`forwarding:\n${counters(r.counters as Row, all)}`);
    out.push(`drops by reason:\n${counters(r.drops as Row, all)}`);
    out.push(`Firewall Client:\n${counters(r.fwc as Row, all)}`);
    const media = (r.media as Row | undefined) ?? {};
    out.push(`streaming media filter (${media.enabled ? 'in use' : 'not in use'}):\n${counters(media, all)}`);
    const ps = (r.portScan as Row | undefined) ?? {};
    const raised = (ps.raised as Row | undefined) ?? {};
    out.push(
      `port-scan detection: well-known threshold ${String(ps.wellKnown)}, all-ports threshold ${String(ps.allPorts)}, interval ${ms(ps.intervalMs)}; events 15104: ${String(raised['15104'] ?? 0)}, 15105: ${String(raised['15105'] ?? 0)}\n`,
    );
    const f = (r.fault as Row | undefined) ?? {};
    out.push(
      `fault ${String(f.id)}: ${String(f.mode)} (release delay ${ms(f.releaseDelayMs)}; re-binds while releasing ${String(f.rebindsWhileReleasing ?? 0)}, WSAEADDRINUSE ${String(f.addrInUse ?? 0)}, left closed ${String(f.leftClosed ?? 0)}, re-opened ${String(f.reopened ?? 0)})\n`,
    );
  } else if (view === 'sessions') {
    const s = (r.sessions as Row[] | undefined) ?? [];
    out.push(
      s.length
        ? `sessions (${s.length}):\n${objectTable(
            s.map((x) => ({
              kind: x.kind,
              proto: x.proto,
              internal: x.internal,
              external: x.external,
              remote: x.remote,
              state: x.state,
              idle: ms(x.idleMs),
              'pkts out': x.packetsOut,
              'pkts in': x.packetsIn,
              'bytes out': x.bytesOut,
              'bytes in': x.bytesIn,
            })),
            '  ',
          )}`
        : 'sessions: (none)\n',
    );
    const c = (r.fwcConnections as Row[] | undefined) ?? [];
    out.push(
      c.length
        ? `Firewall Client connections (${c.length}):\n${objectTable(
            c.map((x) => ({
              client: x.client,
              session: x.session,
              external: x.external,
              remote: x.remote,
              relay: x.relay,
              state: x.state,
              age: ms(x.ageMs),
              'bytes out': x.bytesOut,
              'bytes in': x.bytesIn,
              'media filter': x.mediaFilter,
            })),
            '  ',
          )}`
        : 'Firewall Client connections: (none)\n',
    );
    const fs = (r.fwcSessions as Row[] | undefined) ?? [];
    out.push(
      fs.length
        ? `Firewall Client sessions (${fs.length}):\n${objectTable(
            fs.map(({ ageMs, ...x }) => ({ ...x, age: ms(ageMs) })),
            '  ',
          )}`
        : 'Firewall Client sessions: (none)\n',
    );
  } else if (view === 'bindings') {
    const b = (r.bindings as Row[] | undefined) ?? [];
    out.push(
      b.length
        ? `Firewall Client UDP bindings (${b.length}):\n${objectTable(
            b.map((x) => {
              const m = x.media as Row | null;
              return {
                client: x.client,
                session: x.session,
                bind: x.bindId,
                external: x.external,
                relay: x.relay,
                'client port': x.clientPort,
                state: x.state,
                media: m ? `${String(m.state)} for ${String(m.server)}` : '-',
                'relayed in': x.relayedIn,
                'relayed out': x.relayedOut,
                dropped: x.dropped,
              };
            }),
            '  ',
          )}`
        : 'Firewall Client UDP bindings: (none)\n',
    );
    const m = (r.media as Row[] | undefined) ?? [];
    out.push(
      m.length
        ? `streaming media filter ports (${m.length}):\n${objectTable(
            m.map(({ sinceMs, ...x }) => ({ ...x, since: ms(sinceMs) })),
            '  ',
          )}`
        : 'streaming media filter ports: (none)\n',
    );
    const o = (r.openings as Row[] | undefined) ?? [];
    if (o.length)
      out.push(
        `openings for SecureNAT clients (${o.length}):\n${objectTable(
          o.map((x) => ({ internal: x.internal, external: x.external, remote: x.remote, 'pkts in': x.packetsIn, why: x.why })),
          '  ',
        )}`,
      );
  } else {
    const rules = (r.rules as Row[] | undefined) ?? [];
    out.push(`rules (first match wins; inbound default ${String(r.defaultInbound)}):\n${objectTable(rules, '  ')}`);
    out.push(`drops by reason:\n${counters(r.drops as Row, all)}`);
  }
  return out.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(FW_SPEC, argv);
  if (p.help) return printHelp(FW_SPEC);
  const arg = p.args[0] ?? 'summary';
  if (!(VIEWS as readonly string[]).includes(arg)) {
    const guess = closest(arg, VIEWS);
    throw new UsageError(`faultstack fw: unknown view ${JSON.stringify(arg)}${guess ? ` (did you mean ${guess}?)` : ''}; valid: ${VIEWS.join(', ')}`);
  }
  const view = arg as View;
  let r: Row;
  try {
    r = await callStack<Row>('fw', p.flags.control, 'fw', { what: view });
  } catch (e) {
    if (e instanceof CodedError && e.code === 'EUNKNOWNCMD') {
      throw new CodedError('ENOFIREWALL', 'faultstack fw: this stack is not a firewall (start it with --external-tun NAME --external-addr IP/PREFIX)');
    }
    throw e;
  }
  if (p.flags.json) printJson(r);
  else process.stdout.write(renderFw(view, r, p.flags.all));
  return 0;
}
