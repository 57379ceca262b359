/**
 * `faultstack connect HOST:PORT`: make the stack itself open a TCP connection (an
 * active open), e.g. to a nonexistent address to trigger KB 297040.
 */
import type { ConnectResult } from '../../../stack/control/protocol';
import { ControlCommand } from '../../../stack/control/protocol';
import { parseIpv4 } from '../../../stack/wire/addr';
import { decimal, defineCommand, parseArgs, printHelp, usageError, valueFlag } from '../args';
import { callStack, controlFlags, printJson } from '../control-target';
import { cell, formatDuration } from '../format';

export const CONNECT_SPEC = defineCommand({
  name: 'connect',
  summary: 'Make the running stack open a TCP connection to HOST:PORT and report how it went.',
  details: 'HOST is an IPv4 address, e.g. `faultstack connect 198.18.0.99:80 --timeout 30`.',
  args: 'HOST:PORT',
  minArgs: 1,
  maxArgs: 1,
  flags: {
    ...controlFlags,
    timeout: valueFlag({
      valueName: 'SEC',
      help: "give up after this many seconds (default: the stack's SYN retransmission limit)",
      ...decimal(0.1, 3600, 'seconds'),
    }),
  },
});

/** How long the CLI waits for the reply when --timeout is absent: longer than any SYN retry schedule. */
const DEFAULT_WAIT_S = 180;

export function parseHostPort(raw: string): { host: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(raw.trim());
  const valid = 'HOST:PORT with an IPv4 address and a port from 1 to 65535, e.g. 198.18.0.99:80';
  if (!m || parseIpv4(m[1]!) === null || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw usageError(CONNECT_SPEC, `the target must be ${valid}, got ${JSON.stringify(raw)}`);
  }
  return { host: m[1]!, port: Number(m[2]) };
}

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(CONNECT_SPEC, argv);
  if (p.help) return printHelp(CONNECT_SPEC);
  const { host, port } = parseHostPort(p.args[0]!);
  const timeoutS = p.flags.timeout;
  const args: Record<string, unknown> = { host, port };
  if (timeoutS !== undefined) args.timeoutMs = Math.round(timeoutS * 1000);
  const waitMs = ((timeoutS ?? DEFAULT_WAIT_S) + 5) * 1000;
  const started = Date.now();
  const r = await callStack<ConnectResult>(`connect ${host}:${port}`, p.flags.control, ControlCommand.CONNECT, args, waitMs);
  if (p.flags.json) {
    printJson(r);
    return 0;
  }
  const res = r && typeof r === 'object' ? r : {};
  const ms = typeof res.ms === 'number' ? res.ms : Date.now() - started;
  const extra = Object.entries(res)
    .filter(([k]) => !['connected', 'ms'].includes(k))
    .map(([k, v]) => `${k}=${cell(v)}`);
  process.stdout.write(`connected to ${host}:${port} in ${formatDuration(ms)}${extra.length ? ` (${extra.join(', ')})` : ''}\n`);
  return 0;
}
