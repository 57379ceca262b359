/**
 * faultstack's command dispatcher. Commands live in a table and are loaded with
 * require() only when used, so a slow or missing module never affects another command.
 *
 * Exit status: 0 ok, 1 failure (one line on stderr), 2 usage error (one line on stderr).
 * FAULTSTACK_DEBUG=1 adds stack traces.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../../stack/util/errors';
import { closest } from './args';
import { table } from './format';

export interface CommandEntry {
  summary: string;
  /** require() path relative to this file. */
  module: string;
  /** Shown in `faultstack --help`; false hides it. */
  listed?: boolean;
}

export type CommandModule = { run(argv: string[]): Promise<number> };

export const COMMANDS: Record<string, CommandEntry> = {
  run: { summary: 'start the stack on a TUN or TAP device', module: './commands/run' },
  stats: { summary: 'counters, connections, lock state and fault modes of a running stack', module: './commands/stats' },
  fault: { summary: 'fault set ID MODE: switch a fault of a running stack', module: './commands/fault' },
  param: { summary: 'param set NAME VALUE: change a parameter of a running stack', module: './commands/param' },
  events: { summary: "a running stack's event log (--follow to keep watching)", module: './commands/events' },
  connect: { summary: 'make a running stack open a TCP connection to HOST:PORT', module: './commands/connect' },
  unlock: { summary: 'release the connection-table lock of a hung stack', module: './commands/unlock' },
  routes: { summary: "a running stack's route table (PMTU host routes included)", module: './commands/routes' },
  trace: { summary: "record and show a connection's sequence numbers, cwnd, RTT and flight over time", module: './commands/trace' },
  impair: { summary: "impairments of a running stack: add|list|del|clear (netem's words, toxiproxy's toxics)", module: './commands/impair' },
  neigh: { summary: "a running stack's neighbour (ARP) table, like ip neigh", module: './commands/neigh' },
  ipsec: { summary: "a running stack's IPsec SAs (peer identities, SPIs, selectors), policies and counters", module: './commands/ipsec' },
  fw: { summary: "a running firewall's sessions, bindings, rules and counters (run --external-tun ...)", module: './commands/fw' },
  fwc: { summary: 'the Firewall Client: connect, bind and send through a firewall from the internal network', module: './commands/fwc' },
  nlb: { summary: 'nlb query|display|params|drainstop|stop|start: a running Network Load Balancing host', module: './commands/nlb' },
  faults: { summary: 'list the reproduced faults, their modes and parameters', module: './commands/faults' },
  certs: { summary: 'create the test certificates the mtls service needs', module: './commands/certs' },
  demo: { summary: 'run the end-to-end demo in a throwaway network namespace', module: '../demo' },
  lab: { summary: 'lab nlb: the KB 972183 lab (NLB cluster, strongSwan clients moving networks, sticky application)', module: './commands/lab' },
  scenario: { summary: 'scenario run|compare|check FILE: an experiment described in a YAML file (docs/scenarios.md)', module: './commands/scenario' },
};

function debug(): boolean {
  return process.env.FAULTSTACK_DEBUG === '1';
}

function version(): string {
  for (let dir = __dirname, i = 0; i < 6; i++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'faultstack') return pkg.version ?? 'unknown';
    } catch {
      /* keep looking */
    }
  }
  return 'unknown';
}

export function topUsage(): string {
  const rows = Object.entries(COMMANDS)
    .filter(([, c]) => c.listed !== false)
    .map(([n, c]) => [n, c.summary]);
  return [
    'Usage: faultstack COMMAND [options]',
    '',
    'A userspace TCP/IP stack on a TUN device that reproduces Windows protocol-stack faults.',
    '',
    'Commands:',
    table(rows, { indent: '  ' }).trimEnd(),
    '',
    'Run `faultstack COMMAND --help` for the options of one command.',
    '',
  ].join('\n');
}

/** Loads a command module; a missing module is reported as "not available in this build". */
export function loadCommand(name: string): CommandModule {
  const entry = COMMANDS[name]!;
  let mod: Partial<CommandModule>;
  try {
    mod = require(entry.module) as Partial<CommandModule>;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const first = (err.message ?? '').split('\n')[0] ?? '';
    if (err.code === 'MODULE_NOT_FOUND' && first.includes(`'${entry.module}'`)) {
      throw new Error(
        `command "${name}" is not available in this build (${path.join(path.dirname(__filename), entry.module)}.js is missing; run \`make build\`)`,
        { cause: e },
      );
    }
    throw e;
  }
  if (typeof mod.run !== 'function') throw new Error(`command "${name}" is broken: its module does not export run(argv)`);
  return mod as CommandModule;
}

/** Runs one command line (without `node` and the script); resolves with the exit status. Never throws. */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    const [cmd, ...rest] = argv;
    if (cmd === undefined) {
      process.stderr.write(topUsage());
      return 2;
    }
    if (cmd === '-h' || cmd === '--help') {
      process.stdout.write(topUsage());
      return 0;
    }
    if (cmd === '-V' || cmd === '--version') {
      process.stdout.write(`faultstack ${version()}\n`);
      return 0;
    }
    if (cmd === 'help') {
      const topic = rest[0];
      if (topic === undefined) {
        process.stdout.write(topUsage());
        return 0;
      }
      if (!Object.prototype.hasOwnProperty.call(COMMANDS, topic)) throw unknownCommand(topic);
      return await loadCommand(topic).run(['--help']);
    }
    if (!Object.prototype.hasOwnProperty.call(COMMANDS, cmd)) throw unknownCommand(cmd);
    return await loadCommand(cmd).run(rest);
  } catch (e) {
    return report(e);
  }
}

function unknownCommand(cmd: string): UsageError {
  const names = Object.keys(COMMANDS);
  const guess = closest(cmd, names);
  const what = cmd.startsWith('-') ? `unknown option ${JSON.stringify(cmd)}` : `unknown command ${JSON.stringify(cmd)}`;
  return new UsageError(`${what}${guess ? ` (did you mean ${guess}?)` : ''}; commands: ${names.join(', ')} (faultstack --help)`);
}

/** One line on stderr (plus the stack with FAULTSTACK_DEBUG=1); returns the exit status. */
export function report(e: unknown): number {
  const usage = e instanceof UsageError || (e instanceof Error && e.name === 'UsageError');
  const raw = e instanceof Error ? e.message : String(e);
  const oneLine =
    raw
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean)
      .join(' ') || 'unknown error';
  const msg = oneLine.startsWith('faultstack ') || oneLine.startsWith('faultstack:') ? oneLine : `faultstack: ${oneLine}`;
  process.stderr.write(msg + '\n');
  if (debug() && e instanceof Error && e.stack) process.stderr.write(e.stack + '\n');
  return usage ? 2 : 1;
}

let installed = false;

/** Entry point for bin/faultstack and `node dist/bin/cli/main.js`: runs and exits. */
export function cli(argv: readonly string[] = process.argv.slice(2)): void {
  if (!installed) {
    installed = true;
    // `faultstack events --follow | head` must end quietly, not with an EPIPE trace.
    process.stdout.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
    });
    process.on('uncaughtException', (e) => process.exit(report(e) === 2 ? 2 : 1));
    process.on('unhandledRejection', (e) => process.exit(report(e) === 2 ? 2 : 1));
  }
  main(argv).then(exitAfterOutput);
}

/**
 * process.exit() does not wait for a pipe: whatever did not fit in the pipe buffer
 * (64 KiB) is lost, e.g. `faultstack stats --json | jq` during a SYN flood. Exit once
 * everything written to stdout and stderr has been handed to the kernel.
 */
function exitAfterOutput(code: number): void {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

if (require.main === module) cli();
