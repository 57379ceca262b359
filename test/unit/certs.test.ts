import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCerts } from '../../stack/services/certs';
import { requireTool } from '../../lab/tools';
import { UsageError } from '../../stack/util/errors';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-certs-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Two connected in-memory streams: what one writes, the other reads. No network at all. */
function duplexPair(): [Duplex, Duplex] {
  const make = (): Duplex & { peer?: Duplex } => {
    const d: Duplex & { peer?: Duplex } = new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        d.peer!.push(chunk);
        cb();
      },
      final(cb) {
        d.peer!.push(null);
        cb();
      },
    });
    return d;
  };
  const a = make();
  const b = make();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

describe('makeCerts', () => {
  // openssl makes the certificates: without it these tests fail (scripts/deps.sh installs it).
  beforeAll(() => requireTool('openssl'));

  it('makes a CA, a server and a client certificate that chain and name the lab address', () => {
    const dir = tmp();
    const files = makeCerts(path.join(dir, 'out'));
    expect(fs.readdirSync(files.dir).sort()).toEqual(['ca.pem', 'client.key', 'client.pem', 'server.key', 'server.pem']);
    expect(fs.statSync(files.serverKey).mode & 0o777).toBe(0o600);
    expect(fs.statSync(files.clientKey).mode & 0o777).toBe(0o600);
    const ca = new X509Certificate(fs.readFileSync(files.ca));
    const server = new X509Certificate(fs.readFileSync(files.serverCert));
    const client = new X509Certificate(fs.readFileSync(files.clientCert));
    expect(ca.ca).toBe(true);
    expect(server.ca).toBe(false);
    expect(server.checkIssued(ca)).toBe(true);
    expect(client.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(client.verify(ca.publicKey)).toBe(true);
    expect(server.subject).toBe('CN=faultstack');
    expect(client.subject).toBe('CN=faultstack-client');
    expect(server.checkIP('198.18.0.2')).toBe('198.18.0.2');
    expect(server.checkHost('faultstack.lab')).toBe('faultstack.lab');
    expect(server.checkIP('198.18.0.3')).toBeUndefined();
    expect(server.keyUsage).toContain('1.3.6.1.5.5.7.3.1'); // serverAuth
    expect(client.keyUsage).toContain('1.3.6.1.5.5.7.3.2'); // clientAuth
    expect(server.checkPrivateKey(createPrivateKey(fs.readFileSync(files.serverKey)))).toBe(true);
  });

  it('completes a mutual-TLS handshake with the generated files (in memory)', async () => {
    const files = makeCerts(tmp(), { ipSans: ['198.18.0.2'], dnsSans: [] });
    const [a, b] = duplexPair();
    const server = new tls.TLSSocket(a, {
      isServer: true,
      requestCert: true,
      rejectUnauthorized: true,
      secureContext: tls.createSecureContext({
        key: fs.readFileSync(files.serverKey),
        cert: fs.readFileSync(files.serverCert),
        ca: fs.readFileSync(files.ca),
      }),
    });
    const peerCn = new Promise<string>((resolve, reject) => {
      server.on('secure', () => {
        resolve(String(server.getPeerCertificate().subject.CN));
        server.end();
      });
      server.on('error', reject);
    });
    const client = tls.connect({
      socket: b,
      key: fs.readFileSync(files.clientKey),
      cert: fs.readFileSync(files.clientCert),
      ca: fs.readFileSync(files.ca),
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity('198.18.0.2', cert),
    });
    await new Promise<void>((resolve, reject) => {
      client.on('secureConnect', () => resolve());
      client.on('error', reject);
    });
    expect(client.authorized).toBe(true);
    expect(await peerCn).toBe('faultstack-client');
    client.destroy();
    server.destroy();
  });

  it('takes names, key type and validity; keeps the CA key only when asked', () => {
    const files = makeCerts(tmp(), {
      serverCn: 'mtls-a',
      ipSans: ['198.18.0.2', '198.18.1.2'],
      dnsSans: ['a.lab'],
      clientCn: 'mtls-b',
      days: 2,
      keyType: 'rsa',
      keepCaKey: true,
    });
    const server = new X509Certificate(fs.readFileSync(files.serverCert));
    expect(server.subject).toBe('CN=mtls-a');
    expect(server.subjectAltName).toBe('IP Address:198.18.0.2, IP Address:198.18.1.2, DNS:a.lab');
    expect(server.publicKey.asymmetricKeyType).toBe('rsa');
    const lifeDays = (Date.parse(server.validTo) - Date.parse(server.validFrom)) / 86_400_000;
    expect(lifeDays).toBeCloseTo(2, 0);
    expect(files.caKey && fs.existsSync(files.caKey)).toBe(true);
  });

  it('refuses to overwrite unless asked, and explains bad input in one line', () => {
    const dir = tmp();
    makeCerts(dir);
    expect(() => makeCerts(dir)).toThrow(/already has ca\.pem.*--force/);
    makeCerts(dir, { overwrite: true });
    expect(() => makeCerts(tmp(), { ipSans: ['198.18.0'] })).toThrow(UsageError);
    expect(() => makeCerts(tmp(), { dnsSans: ['bad name'] })).toThrow(/not a DNS name/);
    expect(() => makeCerts(tmp(), { serverCn: 'a/CN=b' })).toThrow(/server CN/);
    expect(() => makeCerts(tmp(), { ipSans: [], dnsSans: [] })).toThrow(/at least one/);
    expect(() => makeCerts(tmp(), { days: 0 })).toThrow(/1 to 3650/);
    expect(() => makeCerts(tmp(), { openssl: '/nonexistent/openssl' })).toThrow(/not found: install OpenSSL/);
  });

  it('faultstack certs writes the files', async () => {
    const { run } = await import('../../bin/cli/commands/certs');
    const dir = path.join(tmp(), 'cli');
    const orig = process.stdout.write.bind(process.stdout);
    let out = '';
    (process.stdout as { write: unknown }).write = (c: string) => ((out += c), true);
    try {
      expect(await run(['--out', dir, '--dns', 'x.lab'])).toBe(0);
    } finally {
      (process.stdout as { write: unknown }).write = orig;
    }
    expect(out).toContain('certs: wrote ca.pem, server.key, server.pem, client.key, client.pem');
    expect(new X509Certificate(fs.readFileSync(path.join(dir, 'server.pem'))).subjectAltName).toBe('DNS:x.lab');
    await expect(run([])).rejects.toThrow(/--out is required/);
  });
});
