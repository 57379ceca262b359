/**
 * Test certificates for the mutual-TLS service (KB 903927's MTLS between servers):
 * a throwaway CA, a server certificate and a client certificate signed by it. Made
 * with the `openssl` command-line tool so that nothing here implements crypto.
 *
 * The CA's private key is deleted once both certificates are signed (unless asked to
 * keep it): nobody can issue more certificates under a CA that only a lab trusts.
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../util/errors';
import { parseIpv4 } from '../wire/addr';

export interface MakeCertsOptions {
  /** Server certificate common name (default "faultstack"). */
  serverCn?: string;
  /** IP subjectAltNames of the server certificate (default ["198.18.0.2"]). */
  ipSans?: string[];
  /** DNS subjectAltNames of the server certificate (default ["faultstack.lab"]). */
  dnsSans?: string[];
  /** Client certificate common name (default "faultstack-client"). */
  clientCn?: string;
  /** Validity in days (default 30). */
  days?: number;
  /** Key algorithm (default "ec": P-256, fast to generate). */
  keyType?: 'ec' | 'rsa';
  /** Keep ca.key beside ca.pem (default false: the CA is throwaway). */
  keepCaKey?: boolean;
  /** Replace files that already exist in outDir (default false). */
  overwrite?: boolean;
  /** The openssl binary (default "openssl" on PATH). */
  openssl?: string;
}

export interface CertFiles {
  dir: string;
  ca: string;
  caKey?: string;
  serverKey: string;
  serverCert: string;
  clientKey: string;
  clientCert: string;
}

export const CERT_FILE_NAMES = ['ca.pem', 'server.key', 'server.pem', 'client.key', 'client.pem'] as const;

const DNS_NAME = /^(?=.{1,253}$)([a-zA-Z0-9*]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
/** Characters that would change the meaning of an openssl -subj or config line. */
const SAFE_CN = /^[A-Za-z0-9 ._@-]{1,64}$/;

/** The reason openssl failed, in one line: its last meaningful stderr line. */
function opensslReason(e: unknown): string {
  const err = e as { stderr?: Buffer | string; message?: string };
  const text = err.stderr ? err.stderr.toString() : (err.message ?? String(e));
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  // openssl 3 prints "error:...:reason" lines; prefer the first such line.
  const errLine = lines.find((l) => /error:/i.test(l));
  return (errLine ?? lines[lines.length - 1] ?? 'unknown error').slice(0, 200);
}

function validate(o: Required<Omit<MakeCertsOptions, 'openssl' | 'keepCaKey' | 'overwrite'>>): void {
  if (!SAFE_CN.test(o.serverCn))
    throw new UsageError(`certs: server CN ${JSON.stringify(o.serverCn)} must be 1-64 characters of letters, digits, space, . _ @ -`);
  if (!SAFE_CN.test(o.clientCn))
    throw new UsageError(`certs: client CN ${JSON.stringify(o.clientCn)} must be 1-64 characters of letters, digits, space, . _ @ -`);
  for (const ip of o.ipSans) {
    if (parseIpv4(ip) === null) throw new UsageError(`certs: ${JSON.stringify(ip)} is not an IPv4 address (IP SAN)`);
  }
  for (const d of o.dnsSans) {
    if (!DNS_NAME.test(d)) throw new UsageError(`certs: ${JSON.stringify(d)} is not a DNS name (DNS SAN)`);
  }
  if (o.ipSans.length + o.dnsSans.length === 0) throw new UsageError('certs: the server certificate needs at least one IP or DNS subjectAltName');
  if (!Number.isInteger(o.days) || o.days < 1 || o.days > 3650) throw new UsageError(`certs: days must be an integer from 1 to 3650, got ${o.days}`);
}

/**
 * Creates ca.pem, server.key, server.pem, client.key and client.pem in `outDir`
 * (created if missing). Keys are written with mode 0600.
 */
export function makeCerts(outDir: string, opts: MakeCertsOptions = {}): CertFiles {
  const o = {
    serverCn: opts.serverCn ?? 'faultstack',
    ipSans: opts.ipSans ?? ['198.18.0.2'],
    dnsSans: opts.dnsSans ?? ['faultstack.lab'],
    clientCn: opts.clientCn ?? 'faultstack-client',
    days: opts.days ?? 30,
    keyType: opts.keyType ?? 'ec',
  };
  validate(o);
  const openssl = opts.openssl ?? 'openssl';
  const dir = path.resolve(outDir);

  try {
    execFileSync(openssl, ['version'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`certs: ${openssl} not found: install OpenSSL (apt-get install openssl)`, { cause: e });
    }
    throw new Error(`certs: ${openssl} does not run: ${opensslReason(e)}`, { cause: e });
  }

  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new Error(`certs: cannot create ${dir}: ${(e as Error).message}`, { cause: e });
  }
  if (!opts.overwrite) {
    const existing = CERT_FILE_NAMES.filter((f) => fs.existsSync(path.join(dir, f)));
    if (existing.length) throw new UsageError(`certs: ${dir} already has ${existing.join(', ')} (overwrite them with --force)`);
  }

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'faultstack-certs-'));
  const run = (step: string, args: string[]): void => {
    try {
      execFileSync(openssl, args, { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      throw new Error(`certs: openssl failed to ${step}: ${opensslReason(e)}`, { cause: e });
    }
  };
  const newKey = o.keyType === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'] : ['-newkey', 'rsa:2048'];
  const days = String(o.days);

  try {
    // The CA: self-signed, allowed to sign certificates and nothing else.
    run('create the CA', [
      'req',
      '-x509',
      ...newKey,
      '-nodes',
      '-sha256',
      '-days',
      days,
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-subj',
      '/CN=faultstack lab CA (throwaway)',
      '-addext',
      'basicConstraints=critical,CA:TRUE,pathlen:0',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-addext',
      'subjectKeyIdentifier=hash',
    ]);

    const sans = [...o.ipSans.map((a) => `IP:${a}`), ...o.dnsSans.map((d) => `DNS:${d}`)].join(',');
    fs.writeFileSync(
      path.join(work, 'server.ext'),
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        // Servers in an MTLS mesh also connect out to each other with the same certificate.
        'extendedKeyUsage=serverAuth,clientAuth',
        `subjectAltName=${sans}`,
        'authorityKeyIdentifier=keyid',
        '',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(work, 'client.ext'),
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=clientAuth',
        'authorityKeyIdentifier=keyid',
        '',
      ].join('\n'),
    );

    for (const [who, cn] of [
      ['server', o.serverCn],
      ['client', o.clientCn],
    ] as const) {
      run(`create the ${who} key and request`, [
        'req',
        '-new',
        ...newKey,
        '-nodes',
        '-sha256',
        '-keyout',
        `${who}.key`,
        '-out',
        `${who}.csr`,
        '-subj',
        `/CN=${cn}`,
      ]);
      run(`sign the ${who} certificate`, [
        'x509',
        '-req',
        '-sha256',
        '-days',
        days,
        '-in',
        `${who}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-set_serial',
        '0x' + randomSerial(),
        '-extfile',
        `${who}.ext`,
        '-out',
        `${who}.pem`,
      ]);
    }

    const files: CertFiles = {
      dir,
      ca: path.join(dir, 'ca.pem'),
      serverKey: path.join(dir, 'server.key'),
      serverCert: path.join(dir, 'server.pem'),
      clientKey: path.join(dir, 'client.key'),
      clientCert: path.join(dir, 'client.pem'),
    };
    const copy = (name: string, to: string, mode: number): void => {
      fs.writeFileSync(to, fs.readFileSync(path.join(work, name)), { mode });
      fs.chmodSync(to, mode); // writeFileSync's mode applies only to new files
    };
    copy('ca.pem', files.ca, 0o644);
    copy('server.key', files.serverKey, 0o600);
    copy('server.pem', files.serverCert, 0o644);
    copy('client.key', files.clientKey, 0o600);
    copy('client.pem', files.clientCert, 0o644);
    if (opts.keepCaKey) {
      files.caKey = path.join(dir, 'ca.key');
      copy('ca.key', files.caKey, 0o600);
    }
    return files;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** 128 random bits, positive, as hex (RFC 5280 serials: up to 20 octets, non-negative). */
function randomSerial(): string {
  const b = new Uint8Array(16);
  randomFillSync(b);
  b[0] &= 0x7f;
  b[0] |= 0x10; // no leading zero nibble, so the serial keeps all 16 octets
  return Buffer.from(b).toString('hex');
}
