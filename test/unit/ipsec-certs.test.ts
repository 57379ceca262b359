/**
 * IKE_AUTH with certificates (RFC 7296 2.15, 3.6-3.8; RFC 7427 Digital Signature;
 * RFC 4754 ECDSA), stack to stack on the virtual clock, with certificates made by openssl.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { afterAll, describe, expect, test } from 'vitest';
import { makeIpsecCerts } from '../../lab/ipsec-certs';
import { loadCredential, loadTrust, signAuth, verifyAuth, subjectDer, identityInCert } from '../../stack/ipsec/ike/certs';
import { loadIpsecConfig } from '../../stack/ipsec/config';
import { AuthMethod, IdType } from '../../stack/wire/ike';
import { connect, makeIpsecPair } from './helpers/ipsec-pair';
import { sha256, testData, transfer } from './helpers/pair';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-ipsec-certs-'));
const certs = makeIpsecCerts(tmp);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const trust = loadTrust([certs.ca]);
const serverCred = loadCredential(certs.server.cert, certs.server.key);

function certPair() {
  return makeIpsecPair({
    b: (c) => {
      c.localId = 'server@lab';
      c.localCredential = serverCred;
      c.trust = trust;
      c.peers = [{ id: '%any', auth: 'pubkey', psk: Buffer.alloc(0), localTs: null, remoteTs: 'dynamic' }];
    },
  });
}

describe('certificate authentication', () => {
  test('an RSA client certificate and an ECDSA server certificate, RFC 7427 signatures both ways', async () => {
    const p = certPair();
    const r = await connect(p, { credential: loadCredential(certs.clients.client1!.cert, certs.clients.client1!.key), trust, psk: Buffer.alloc(0) });
    expect(r.result.failed).toBeUndefined();
    expect(r.result.ike!.identity!.value).toBe('server@lab');
    const b = p.ipB.ike.all()[0]!;
    expect(b.identity).toEqual({ type: IdType.RFC822_ADDR, value: 'client1@lab' });
    expect(b.peerDigitalSignature).toBe(true);
    const t = await transfer(p, testData(50_000, 9));
    expect(t.done).toBe(true);
    expect(sha256(t.got)).toBe(sha256(testData(50_000, 9)));
  });

  test('an identity given as the certificate subject (ID_DER_ASN1_DN)', async () => {
    const p = certPair();
    const c2 = certs.clients.client2!;
    const r = await connect(p, { id: c2.subject, credential: loadCredential(c2.cert, c2.key), trust, psk: Buffer.alloc(0) });
    expect(r.result.failed).toBeUndefined();
    expect(p.ipB.ike.all()[0]!.identity).toEqual({ type: IdType.DER_ASN1_DN, value: c2.subject });
    expect(p.ipB.sasByIdentity().has(c2.subject)).toBe(true);
  });

  test('refused with AUTHENTICATION_FAILED: another CA, an identity not in the certificate, no CA configured', async () => {
    const rogue = certs.clients.rogue!;
    const p = certPair();
    const r = await connect(p, { credential: loadCredential(rogue.cert, rogue.key), trust, psk: Buffer.alloc(0) });
    expect(r.result.failed).toBe('AUTHENTICATION_FAILED');
    const ev = p.eventsB.find((e) => e.kind === 'auth-failed');
    expect(ev && 'reason' in ev ? ev.reason : '').toMatch(/not issued by a trusted CA/);
    const q = certPair();
    const c1 = certs.clients.client1!;
    const r2 = await connect(q, { id: 'client2@lab', credential: loadCredential(c1.cert, c1.key), trust, psk: Buffer.alloc(0) });
    expect(r2.result.failed).toBe('AUTHENTICATION_FAILED');
    const ev2 = q.eventsB.find((e) => e.kind === 'auth-failed');
    expect(ev2 && 'reason' in ev2 ? ev2.reason : '').toMatch(/identity client2@lab is not in its certificate/);
    // A responder without ca: refuses certificates but still takes PSK clients.
    const n = makeIpsecPair();
    const r3 = await connect(n, { credential: loadCredential(c1.cert, c1.key), psk: Buffer.alloc(0) });
    expect(r3.result.failed).toBe('AUTHENTICATION_FAILED');
    expect((await connect(n)).result.failed).toBeUndefined();
  });

  test('a wrong signature is refused', async () => {
    const p = certPair();
    const c1 = certs.clients.client1!;
    // client1's certificate with client2's key: the signature does not verify under the certificate.
    const cred = { ...loadCredential(c1.cert, c1.key), key: loadCredential(certs.clients.client2!.cert, certs.clients.client2!.key).key };
    const r = await connect(p, { credential: cred, trust, psk: Buffer.alloc(0) });
    expect(r.result.failed).toBe('AUTHENTICATION_FAILED');
  });

  test('classic signature methods without RFC 7427: RSA (1) and ECDSA (9, 10), made and checked', () => {
    const octets = randomBytes(300);
    for (const [opts, method] of [
      [{ type: 'rsa', modulusLength: 2048 }, AuthMethod.RSA_SIG],
      [{ type: 'ec', namedCurve: 'prime256v1' }, AuthMethod.ECDSA_256],
      [{ type: 'ec', namedCurve: 'secp384r1' }, AuthMethod.ECDSA_384],
    ] as const) {
      const { privateKey, publicKey } =
        opts.type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: opts.modulusLength }) : generateKeyPairSync('ec', { namedCurve: opts.namedCurve });
      const s = signAuth(privateKey, octets, false);
      expect(s.method).toBe(method);
      expect(verifyAuth(s.method, s.data, publicKey, octets)).toBeNull();
      expect(verifyAuth(s.method, s.data, publicKey, randomBytes(300))).toMatch(/does not verify/);
      const d = signAuth(privateKey, octets, true);
      expect(d.method).toBe(AuthMethod.DIGITAL_SIGNATURE);
      expect(verifyAuth(d.method, d.data, publicKey, octets)).toBeNull();
    }
  });

  test('the subject DN and subjectAltName checks', () => {
    const c = serverCred.cert;
    expect(identityInCert(c, IdType.RFC822_ADDR, Buffer.from('server@lab'))).toBe(true);
    expect(identityInCert(c, IdType.IPV4_ADDR, Buffer.from([198, 18, 0, 2]))).toBe(true);
    expect(identityInCert(c, IdType.IPV4_ADDR, Buffer.from([198, 18, 0, 3]))).toBe(false);
    expect(identityInCert(c, IdType.DER_ASN1_DN, subjectDer(c.raw))).toBe(true);
  });

  test('the file: local.cert/key, ca, pubkey peers; one-line errors', () => {
    const f = path.join(tmp, 'certs.yaml');
    fs.writeFileSync(f, `local:\n  id: server@lab\n  cert: server.pem\n  key: server.key\nca: [ca.pem]\npeers:\n  - id: "%any"\n    auth: pubkey\n`);
    const c = loadIpsecConfig(f);
    expect(c.localCredential!.cert.subject).toMatch(/CN=server/);
    expect(c.trust!.cas.length).toBe(1);
    expect(c.peers[0]).toMatchObject({ id: '%any', auth: 'pubkey' });
    fs.writeFileSync(f, `local:\n  id: other@lab\n  cert: server.pem\n  key: server.key\n`);
    expect(() => loadIpsecConfig(f)).toThrow(/:2: local\.id: "other@lab" is not in local\.cert/);
    fs.writeFileSync(f, `local:\n  cert: server.pem\n  key: client1.key\n`);
    try {
      loadIpsecConfig(f);
      throw new Error('no error');
    } catch (e) {
      expect((e as Error).message).toMatch(/:2: local\.cert: .*client1\.key is not the private key of/);
    }
    fs.writeFileSync(f, `peers:\n  - id: a@b\n    auth: pubkey\n`);
    expect(() => loadIpsecConfig(f)).toThrow(/:3: peers\[0\]\.auth: pubkey needs a ca: list/);
  });
});
