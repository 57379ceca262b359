/**
 * The IPv4 address flags shared by commands (`run --gateway`, `fwc --firewall`), apart
 * from any one command so that a light control command does not load `run` (and, through
 * it, the runtime).
 */
import { parseIpv4 } from '../../stack/wire/addr';
import { InvalidValue, type Validator } from './args';

/** A unicast IPv4 address (no prefix). */
export const hostAddress: Validator<number> = {
  valid: 'an IPv4 unicast address, e.g. 198.18.0.1',
  parse(raw) {
    const a = parseIpv4(raw.trim());
    if (a === null) throw new InvalidValue(`must be ${hostAddress.valid}`);
    const first = a >>> 24;
    if (first === 0 || first === 127 || first >= 224) throw new InvalidValue(`must be a unicast address (not in 0.0.0.0/8, 127.0.0.0/8 or 224.0.0.0 and above), e.g. 198.18.0.1`);
    return a;
  },
};
