/**
 * A usage error: bad flag, bad value, bad scenario file. The CLI prints its message
 * on one line (no stack trace) and exits with status 2.
 */
export class UsageError extends Error {
  readonly exitCode = 2;
  /** Over the control socket a usage error is an error reply with this code: the CLI exits 2 on it. */
  readonly code = 'EUSAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** An error carrying a POSIX-style code (ECONNREFUSED, ETIMEDOUT...), as Node's net errors do. */
export class CodedError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'Error';
  }
}
