/**
 * Which running stack a control command talks to, and the flags every control
 * command shares (--control PATH, --json).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ControlClient, ControlError } from '../../stack/control/client';
import { probeSocket } from '../../stack/control/server';
import { CodedError, UsageError } from '../../stack/util/errors';
import { InvalidValue, Validator, switchFlag, valueFlag } from './args';

/** Where `run` puts its control socket by default, and where the other commands look for one. */
export function defaultRunDir(): string {
  return process.env.FAULTSTACK_RUN_DIR || '/run/faultstack';
}

/** Linux sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export const socketPath: Validator<string> = {
  valid: `a Unix socket path of at most ${MAX_SOCKET_PATH_BYTES} bytes`,
  parse(raw) {
    if (raw === '') throw new InvalidValue(`must be a Unix socket path, not empty`);
    const abs = path.resolve(raw);
    if (Buffer.byteLength(abs) > MAX_SOCKET_PATH_BYTES) {
      throw new InvalidValue(`must be a Unix socket path of at most ${MAX_SOCKET_PATH_BYTES} bytes (it is ${Buffer.byteLength(abs)} as an absolute path)`);
    }
    return abs;
  },
};

export const controlFlags = {
  control: valueFlag({ valueName: 'PATH', help: `control socket of the stack (default: the only *.sock in ${defaultRunDir()})`, ...socketPath }),
  json: switchFlag('print the reply as JSON'),
};

/**
 * The control socket to use: --control when given, otherwise the only *.sock in the
 * run directory (when there are several, the only one that answers).
 */
export async function resolveControlPath(flag: string | undefined, dir = defaultRunDir()): Promise<string> {
  if (flag) return flag;
  let names: string[] = [];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => n.endsWith('.sock'))
      .sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const start = `(start one with \`faultstack run ...\` or pass --control PATH)`;
  if (names.length === 0) throw new CodedError('ENOENT', `no running faultstack found in ${dir} ${start}`);
  const paths = names.map((n) => path.join(dir, n));
  if (paths.length === 1) return paths[0]!;
  const live: string[] = [];
  for (const p of paths) {
    if ((await probeSocket(p, 500).catch(() => 'refused')) === 'live') live.push(p);
  }
  if (live.length === 1) return live[0]!;
  if (live.length === 0) throw new CodedError('ENOENT', `no running faultstack found in ${dir}: nothing answers on ${names.join(', ')} ${start}`);
  throw new CodedError('EAMBIGUOUS', `several faultstacks are running (${live.join(', ')}); pick one with --control PATH`);
}

/** Error replies with these codes mean the user's value was wrong: exit status 2. */
const USAGE_CODES = new Set(['EINVAL', 'EUSAGE']);

/**
 * One control request to the chosen stack. Error replies become errors whose message
 * starts with `faultstack <command>:` (UsageError for EINVAL/EUSAGE).
 */
export async function callStack<T = unknown>(
  command: string,
  control: string | undefined,
  cmd: string,
  args: Record<string, unknown> = {},
  timeoutMs = 10_000,
  onEvent?: (ev: unknown) => void,
): Promise<T> {
  const sock = await resolveControlPath(control);
  try {
    return await ControlClient.call<T>(sock, cmd, args, { timeoutMs, onEvent });
  } catch (e) {
    if (e instanceof ControlError) {
      const msg = `faultstack ${command}: ${e.message}`;
      if (USAGE_CODES.has(e.code)) throw new UsageError(msg);
      throw new CodedError(e.code, msg);
    }
    throw e;
  }
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}
