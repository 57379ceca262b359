import { expect } from 'vitest';
import { UsageError } from '../../../stack/util/errors';

/** Runs fn, expects a UsageError, returns its message (checked to be one line). */
export function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected a UsageError');
}
