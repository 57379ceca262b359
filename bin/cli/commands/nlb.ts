/**
 * `faultstack nlb query|display|params|drainstop|stop|start`: a running NLB host, in
 * the spirit of Windows' nlb.exe (wlbs.exe):
 *   query      the host's state (Converging, Converged, Converged as DEFAULT, Draining,
 *              Stopped) and the hosts it sees
 *   display    configuration, state, port rules with the buckets this host owns and the
 *              whole bucket map, descriptors, IPsec tunnels (and identities that hold
 *              tunnels on several hosts), counters
 *   params     the values in force, by their registry names
 *   drainstop  take no new connections; stop when the last one ends
 *   stop       leave the cluster now;   start   join it (again)
 */
import { defineCommand, parseArgs, printHelp, switchFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { formatNumber, objectTable, table } from '../format';
import { subcommand } from '../subcommand';

const SUBS = ['query', 'display', 'params', 'drainstop', 'stop', 'start'] as const;
type Sub = (typeof SUBS)[number];

export const NLB_SPEC = defineCommand({
  name: 'nlb',
  summary: 'Query and control a running Network Load Balancing host (like nlb.exe).',
  args: 'query|display|params|drainstop|stop|start',
  minArgs: 0,
  maxArgs: 0,
  details: 'The stack must run with --tap NAME --nlb CLUSTER_IP --nlb-priority N (docs/nlb.md).',
  flags: { ...controlFlags, all: switchFlag('display: also counters that are zero') },
});

interface QueryReply {
  host?: number;
  state?: string;
  text?: string;
  hosts?: number[];
  defaultHost?: number;
  convergingForMs?: number;
  members?: {
    host: number;
    dedicatedIp: string;
    hostName: string | null;
    state: string;
    lastHeardMs: number;
    packetsHandled: number;
    rulesMatch: boolean;
    tunnels: number;
  }[];
}

interface DisplayReply extends QueryReply {
  config?: Record<string, unknown>;
  rules?: {
    rule: number;
    spec: string;
    owned: string;
    ownedCount: number;
    proposed: string;
    map: number[] | null;
    idle: string;
    dirty: string;
    connections: number;
  }[];
  descriptors?: Record<string, number>;
  tunnels?: { identity: string; client: string; ikeSa: number; bucket: number; ownsBucket: boolean; ageMs: number; childSas: number }[];
  identitiesOnSeveralHosts?: { identity: string; hosts: number[] }[];
  sticky?: { rule: number; client: string; connections: number; expiresInMs: number | null }[];
  counters?: Record<string, number>;
  kb972183?: Record<string, unknown>;
  mailbox?: {
    counters: Record<string, number>;
    logons: { identity: string; via: string; connections: number }[];
    directory: { address: string; connected: boolean };
  };
}

export function renderQuery(r: QueryReply): string {
  const lines = [r.text ?? `Host ${r.host}: ${r.state}`];
  if (r.members && r.members.length > 0) {
    lines.push(
      '',
      objectTable(
        r.members.map((m) => ({
          host: m.host,
          'dedicated IP': m.dedicatedIp,
          name: m.hostName ?? '-',
          state: m.state,
          'heard ms ago': m.lastHeardMs,
          'packets handled': m.packetsHandled,
          rules: m.rulesMatch ? 'same' : 'CONFLICT',
          tunnels: m.tunnels,
        })),
      ).trimEnd(),
    );
  }
  return lines.join('\n') + '\n';
}

/** The bucket map of a rule as one line per owner: "host 1: 0,3,6-9". */
function mapLines(map: number[]): string[] {
  const by = new Map<number, number[]>();
  map.forEach((o, b) => {
    const l = by.get(o) ?? [];
    l.push(b);
    by.set(o, l);
  });
  return [...by.entries()].sort((a, b) => a[0] - b[0]).map(([o, bs]) => `${o === 0 ? 'nobody' : `host ${o}`}: ${bs.length} bucket(s) ${ranges(bs)}`);
}

function ranges(bs: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < bs.length; i++) {
    let j = i;
    while (j + 1 < bs.length && bs[j + 1] === bs[j]! + 1) j++;
    out.push(i === j ? String(bs[i]) : `${bs[i]}-${bs[j]}`);
    i = j;
  }
  return out.join(',');
}

export function renderDisplay(r: DisplayReply, all = false): string {
  const out: string[] = [];
  out.push('=== Configuration ===');
  out.push(
    table(
      Object.entries(r.config ?? {}).map(([k, v]) => [k, String(v)]),
      { indent: '  ' },
    ).trimEnd(),
  );
  out.push('', '=== State ===', renderQuery(r).trimEnd());
  for (const rule of r.rules ?? []) {
    out.push('', `=== Port rule ${rule.rule}: ${rule.spec} ===`);
    out.push(`  this host owns ${rule.ownedCount} bucket(s): ${rule.owned}${rule.proposed !== rule.owned ? ` (converging to ${rule.proposed})` : ''}`);
    out.push(`  idle here: ${rule.idle}; held by other hosts (dirty): ${rule.dirty}; connections here: ${rule.connections}`);
    if (rule.map) for (const l of mapLines(rule.map)) out.push(`  ${l}`);
  }
  if (r.descriptors) {
    const d = r.descriptors;
    out.push(
      '',
      '=== Connection descriptors ===',
      `  ${d.inUse} in use of ${d.capacity} allocated (${d.blocks} block(s) of ${d.perAlloc}; at most ${d.maxAllocs} blocks = ${d.maxDescriptors})`,
      `  allocated ${d.allocated}, freed ${d.freed}, refused for want of a descriptor ${d.exhausted}`,
    );
  }
  out.push('', '=== IPsec descriptors (tunnels) ===');
  out.push(
    (r.tunnels ?? []).length
      ? objectTable(
          (r.tunnels ?? []).map((t) => ({
            identity: t.identity,
            client: t.client,
            'IKE SA': t.ikeSa,
            bucket: t.bucket,
            'owns bucket': t.ownsBucket ? 'yes' : 'NO',
            'child SAs': t.childSas,
            'age s': Math.round(t.ageMs / 1000),
          })),
          '  ',
        ).trimEnd()
      : '  (none)',
  );
  const several = r.identitiesOnSeveralHosts ?? [];
  out.push(
    several.length
      ? `  identities with tunnels on more than one host: ${several.map((x) => `${x.identity} (hosts ${x.hosts.join(', ')})`).join('; ')}`
      : '  no identity holds tunnels on more than one host',
  );
  if ((r.sticky ?? []).length) {
    out.push(
      '',
      '=== Extended affinity ===',
      objectTable(
        (r.sticky ?? []).map((s) => ({
          rule: s.rule,
          client: s.client,
          connections: s.connections,
          'expires in s': s.expiresInMs === null ? '-' : Math.round(s.expiresInMs / 1000),
        })),
        '  ',
      ).trimEnd(),
    );
  }
  if (r.kb972183)
    out.push(
      '',
      '=== KB 972183 ===',
      table(
        Object.entries(r.kb972183).map(([k, v]) => [k, String(v)]),
        { indent: '  ' },
      ).trimEnd(),
    );
  if (r.mailbox) {
    out.push('', `=== Sticky application (directory ${r.mailbox.directory.address}${r.mailbox.directory.connected ? '' : ', NOT connected'}) ===`);
    out.push(
      r.mailbox.logons.length
        ? objectTable(
            r.mailbox.logons.map((l) => ({ identity: l.identity, via: l.via, connections: l.connections })),
            '  ',
          ).trimEnd()
        : '  no logons',
    );
  }
  const counters = Object.entries(r.counters ?? {}).filter(([, v]) => all || v !== 0);
  out.push(
    '',
    '=== Counters ===',
    counters.length
      ? table(
          counters.map(([k, v]) => [k, formatNumber(v)]),
          { right: [1], indent: '  ' },
        ).trimEnd()
      : '  (all zero)',
  );
  return out.join('\n') + '\n';
}

export async function run(argv: string[]): Promise<number> {
  const rest = subcommand('nlb', argv, SUBS, NLB_SPEC);
  if (rest === null) return printHelp(NLB_SPEC);
  const sub = argv[0] as Sub;
  const p = parseArgs(NLB_SPEC, rest);
  if (p.help) return printHelp(NLB_SPEC);
  let r: unknown;
  try {
    r = await callStack<unknown>(`nlb ${sub}`, p.flags.control, `nlb.${sub}`);
  } catch (e) {
    if ((e as { code?: string }).code === 'EUNKNOWNCMD') {
      const err = new Error(`faultstack nlb ${sub}: this stack is not an NLB host (start it with --tap NAME --nlb CLUSTER_IP --nlb-priority N)`);
      (err as Error & { code?: string }).code = 'ENONLB';
      throw err;
    }
    throw e;
  }
  if (p.flags.json) {
    printJson(r);
    return 0;
  }
  if (sub === 'display') process.stdout.write(renderDisplay(r as DisplayReply, p.flags.all));
  else if (sub === 'params')
    process.stdout.write(table(Object.entries(r as Record<string, unknown>).map(([k, v]) => [k, Array.isArray(v) ? v.join('; ') : String(v)])));
  else process.stdout.write(renderQuery(r as QueryReply));
  return 0;
}
