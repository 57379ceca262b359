/**
 * `faultstack ipsec`: a running stack's IKE SAs (peer identity, addresses, SPIs, state,
 * age), child SAs (SPIs, selectors, bytes, packets, replay drops), policies and
 * counters (Linux /proc/net/xfrm_stat names where one fits).
 */
import { ControlCommand } from '../../../stack/control/protocol';
import { CodedError } from '../../../stack/util/errors';
import { defineCommand, parseArgs, printHelp, switchFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { formatDuration, formatNumber, objectTable, table } from '../format';

export const IPSEC_SPEC = defineCommand({
  name: 'ipsec',
  summary: "Show a running stack's IPsec SAs, policies and counters.",
  details: 'The stack must run with --ipsec FILE or --ipsec-psk [ID=]SECRET.',
  flags: {
    ...controlFlags,
    all: switchFlag('also show counters that are zero'),
  },
});

interface IpsecResult {
  ikeSas?: Record<string, unknown>[];
  childSas?: Record<string, unknown>[];
  policies?: { default?: string; entries?: Record<string, unknown>[] };
  halfOpen?: number;
  counters?: Record<string, number>;
}

const age = (v: unknown) => (typeof v === 'number' ? formatDuration(v) : '-');

export function renderIpsec(r: IpsecResult, all = false): string {
  const out: string[] = [];
  const ike = r.ikeSas ?? [];
  out.push(
    ike.length
      ? `IKE SAs (${ike.length}, ${r.halfOpen ?? 0} half open):\n${objectTable(
          ike.map((s) => ({
            id: s.id,
            identity: s.identity,
            remote: s.remote,
            local: s.local,
            state: s.state,
            spiI: s.spiI,
            spiR: s.spiR,
            suite: s.suite,
            age: age(s.ageMs),
            pending: s.pending,
          })),
          '  ',
        )}`
      : 'IKE SAs: (none)\n',
  );
  const kids = r.childSas ?? [];
  out.push(
    kids.length
      ? `child SAs (${kids.length}):\n${objectTable(
          kids.map((c) => ({
            id: c.id,
            ike: c.ikeSa,
            identity: c.identity,
            state: c.state,
            'spi in/out': `${String(c.spiIn)}/${String(c.spiOut)}`,
            mode: c.mode,
            encap: c.encap,
            'local ts': c.localTs,
            'remote ts': c.remoteTs,
            'bytes in': c.bytesIn,
            'pkts in': c.packetsIn,
            'bytes out': c.bytesOut,
            'pkts out': c.packetsOut,
            'replay drops': c.replayDrops,
            age: age(c.ageMs),
          })),
          '  ',
        )}`
      : 'child SAs: (none)\n',
  );
  const pol = r.policies?.entries ?? [];
  out.push(`policies (default ${r.policies?.default ?? 'bypass'}; negotiated SAs first):\n${pol.length ? objectTable(pol, '  ') : '  (none configured)\n'}`);
  const counters = Object.entries(r.counters ?? {}).filter(([, v]) => all || v !== 0);
  out.push(
    counters.length
      ? `counters:\n${table(
          counters.map(([k, v]) => [k, formatNumber(v)]),
          { right: [1], indent: '  ' },
        )}`
      : 'counters: (all zero)\n',
  );
  return out.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(IPSEC_SPEC, argv);
  if (p.help) return printHelp(IPSEC_SPEC);
  let r: IpsecResult;
  try {
    r = await callStack<IpsecResult>('ipsec', p.flags.control, ControlCommand.IPSEC);
  } catch (e) {
    if (e instanceof CodedError && e.code === 'EUNKNOWNCMD') {
      throw new CodedError('ENOIPSEC', 'faultstack ipsec: this stack runs without IPsec (start it with --ipsec FILE or --ipsec-psk [ID=]SECRET)');
    }
    throw e;
  }
  if (p.flags.json) printJson(r);
  else process.stdout.write(renderIpsec(r, p.flags.all));
  return 0;
}
