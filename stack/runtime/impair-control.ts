/**
 * Control-socket handlers for `faultstack impair ...` (stack/impair/protocol.ts), on their
 * own so that the runtime's handler table only spreads them in.
 */
import type { ControlHandler } from '../control/server';
import { ImpairCommand } from '../impair/protocol';
import type { Impairments } from '../impair/registry';
import { ImpairSpecError } from '../impair/spec';
import { CodedError } from '../util/errors';

function wordsArg(args: Record<string, unknown>): string[] {
  const w = args.words;
  if (Array.isArray(w) && w.every((x) => typeof x === 'string')) return w as string[];
  if (typeof args.spec === 'string') return args.spec.trim().split(/\s+/).filter(Boolean);
  throw new ImpairSpecError('impair.add needs "words": the impairment as a list of strings, e.g. ["out", "loss", "3%"]');
}

export function impairHandlers(imp: Impairments): Record<string, ControlHandler> {
  return {
    [ImpairCommand.ADD]: (args) => imp.add(wordsArg(args)),
    [ImpairCommand.LIST]: () => ({ impairments: imp.list() }),
    [ImpairCommand.DEL]: (args) => imp.del(typeof args.id === 'number' ? args.id : Number(args.id)),
    [ImpairCommand.CLEAR]: () => ({ removed: imp.clear() }),
  };
}

/** For a runtime without impairments (--shards): every impair command says why. */
export function impairUnavailable(reason: string): Record<string, ControlHandler> {
  const fail = () => {
    throw new CodedError('ENOTSUP', reason);
  };
  return Object.fromEntries(Object.values(ImpairCommand).map((c) => [c, fail]));
}
