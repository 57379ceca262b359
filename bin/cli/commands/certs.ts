/** `faultstack certs --out DIR`: the throwaway CA, server and client certificates the mtls service needs. */
import { makeCerts } from '../../../stack/services/certs';
import { UsageError } from '../../../stack/util/errors';
import { defineCommand, integer, oneOf, parseArgs, printHelp, repeatableFlag, requiredFlag, switchFlag, text, valueFlag } from '../args';

export const CERTS_SPEC = defineCommand({
  name: 'certs',
  summary: 'Create a throwaway CA and a server and a client certificate signed by it (with the openssl tool).',
  details:
    'Writes ca.pem, server.key, server.pem, client.key and client.pem into DIR. The CA key is deleted\n' +
    'after signing unless --keep-ca-key is given. Without --ip/--dns the server certificate names\n' +
    'IP 198.18.0.2 and DNS faultstack.lab.',
  flags: {
    out: requiredFlag(valueFlag({ ...text('a directory'), valueName: 'DIR', help: 'directory to write the files into (created if missing)' })),
    cn: valueFlag({ ...text('a common name'), valueName: 'NAME', help: 'server certificate common name', default: 'faultstack' }),
    ip: repeatableFlag({ ...text('an IPv4 address'), valueName: 'ADDR', help: 'IP subjectAltName of the server certificate' }),
    dns: repeatableFlag({ ...text('a DNS name'), valueName: 'NAME', help: 'DNS subjectAltName of the server certificate' }),
    'client-cn': valueFlag({ ...text('a common name'), valueName: 'NAME', help: 'client certificate common name', default: 'faultstack-client' }),
    days: valueFlag({ ...integer(1, 3650), valueName: 'N', help: 'validity in days', default: 30 }),
    key: valueFlag({ ...oneOf(['ec', 'rsa'] as const), valueName: 'TYPE', help: 'key type: ec (P-256) or rsa (2048 bits)', default: 'ec' as 'ec' | 'rsa' }),
    'keep-ca-key': switchFlag('also keep ca.key (to sign more certificates later)'),
    force: switchFlag('replace files that already exist'),
    json: switchFlag('print the file paths as JSON'),
  },
});

export async function run(argv: string[]): Promise<number> {
  const p = parseArgs(CERTS_SPEC, argv);
  if (p.help) return printHelp(CERTS_SPEC);
  const f = p.flags;
  const sansGiven = f.ip.length + f.dns.length > 0;
  const files = withCommandPrefix(() =>
    makeCerts(f.out, {
      serverCn: f.cn,
      ipSans: sansGiven ? f.ip : undefined,
      dnsSans: sansGiven ? f.dns : undefined,
      clientCn: f['client-cn'],
      days: f.days,
      keyType: f.key,
      keepCaKey: f['keep-ca-key'],
      overwrite: f.force,
    }),
  );
  if (f.json) {
    process.stdout.write(JSON.stringify(files) + '\n');
  } else {
    const names = [files.ca, files.serverKey, files.serverCert, files.clientKey, files.clientCert];
    if (files.caKey) names.push(files.caKey);
    process.stdout.write(`certs: wrote ${names.map((n) => n.slice(files.dir.length + 1)).join(', ')} in ${files.dir}\n`);
  }
  return 0;
}

/** makeCerts says "certs: ..."; on the command line that reads "faultstack certs: ...". */
function withCommandPrefix<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof Error) || !e.message.startsWith('certs: ')) throw e;
    const msg = `faultstack ${e.message}`;
    throw e instanceof UsageError ? new UsageError(msg) : new Error(msg);
  }
}
