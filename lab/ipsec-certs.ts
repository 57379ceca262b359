/**
 * Throwaway X.509 material for IPsec certificate tests, made with the openssl tool:
 * a CA, the responder's certificate (subjectAltName email:server@lab, IP 198.18.0.2),
 * clients' certificates (email:<name>@lab), and a second CA nobody trusts.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface IpsecCerts {
  dir: string;
  ca: string;
  otherCa: string;
  server: { cert: string; key: string };
  /** By name: client1 (RSA 2048), client2 (EC P-256), rogue (client1's identity, signed by otherCa). */
  clients: Record<string, { cert: string; key: string; subject: string }>;
}

export function makeIpsecCerts(dir: string): IpsecCerts {
  fs.mkdirSync(dir, { recursive: true });
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  for (const [name, cn] of [
    ['ca', 'faultstack ipsec lab CA'],
    ['other-ca', 'an untrusted CA'],
  ] as const) {
    run([
      'req',
      '-x509',
      ...ec,
      '-nodes',
      '-sha256',
      '-days',
      '30',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-subj',
      `/O=faultstack lab/CN=${cn}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
  }
  const issue = (name: string, key: string[], subject: string, sans: string, ca = 'ca') => {
    run(['req', ...key, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
    fs.writeFileSync(path.join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nsubjectAltName=${sans}\n`);
    run([
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}.pem`,
      '-CAkey',
      `${ca}.key`,
      '-CAcreateserial',
      '-days',
      '30',
      '-sha256',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    ]);
    return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  };
  const server = issue('server', ec, '/O=faultstack lab/CN=server', 'email:server@lab,IP:198.18.0.2');
  const clients = {
    client1: { ...issue('client1', ['-newkey', 'rsa:2048'], '/O=faultstack lab/CN=client1', 'email:client1@lab'), subject: 'O=faultstack lab, CN=client1' },
    client2: { ...issue('client2', ec, '/O=faultstack lab/CN=client2', 'email:client2@lab'), subject: 'O=faultstack lab, CN=client2' },
    rogue: { ...issue('rogue', ec, '/O=faultstack lab/CN=client1', 'email:client1@lab', 'other-ca'), subject: 'O=faultstack lab, CN=client1' },
  };
  return { dir, ca: path.join(dir, 'ca.pem'), otherCa: path.join(dir, 'other-ca.pem'), server, clients };
}
