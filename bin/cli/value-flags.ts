/**
 * Flag values shared by commands (`run --gateway`, `fwc --firewall`, `run --pcap`, `lab
 * nlb --svg`), apart from any one command so that a light command does not load `run`
 * (and, through it, the runtime).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseIpv4 } from '../../stack/wire/addr';
import { InvalidValue, type Validator } from './args';

/** A unicast IPv4 address (no prefix). */
export const hostAddress: Validator<number> = {
  valid: 'an IPv4 unicast address, e.g. 198.18.0.1',
  parse(raw) {
    const a = parseIpv4(raw.trim());
    if (a === null) throw new InvalidValue(`must be ${hostAddress.valid}`);
    const first = a >>> 24;
    if (first === 0 || first === 127 || first >= 224)
      throw new InvalidValue(`must be a unicast address (not in 0.0.0.0/8, 127.0.0.0/8 or 224.0.0.0 and above), e.g. 198.18.0.1`);
    return a;
  },
};

/** A file to create: its directory must exist. */
export const outputFile: Validator<string> = {
  valid: 'a file path in an existing directory',
  parse(raw) {
    if (raw === '') throw new InvalidValue('must be a file path in an existing directory, not empty');
    const abs = path.resolve(raw);
    const dir = path.dirname(abs);
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(dir);
    } catch {
      /* missing */
    }
    if (!st || !st.isDirectory()) throw new InvalidValue(`must be a file path in an existing directory (${dir} does not exist)`);
    try {
      if (fs.statSync(abs).isDirectory()) throw new InvalidValue(`must be a file path, not a directory`);
    } catch (e) {
      if (e instanceof InvalidValue) throw e;
    }
    return abs;
  },
};
