/**
 * Certificate authentication for IKEv2 (RFC 7296 2.15, 3.6, 3.7, 3.8; RFC 7427 for the
 * Digital Signature method; RFC 4754 for ECDSA): our certificate and key, the CAs we
 * trust, the CERT/CERTREQ payload contents, the chain check, whether an identity is
 * the certificate's, and AUTH signatures made and checked with node:crypto.
 *
 *   AUTH method 1   RSA, RSASSA-PKCS1-v1_5 with SHA-1 over the signed octets
 *   AUTH method 9/10/11  ECDSA P-256/384/521 with SHA-256/384/512, r | s (RFC 4754)
 *   AUTH method 14  RFC 7427: length of the AlgorithmIdentifier, its DER, the signature
 *                   (sha{256,384,512}WithRSAEncryption, ecdsa-with-SHA{256,384,512} in DER, Ed25519)
 * The signed octets are the same as for a shared key: the sender's first message | the
 * peer's nonce | prf(SK_p, ID payload body).
 */
import { X509Certificate, createHash, createPrivateKey, sign, verify, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import { formatIpv4 } from '../../wire/addr';
import { AuthMethod, IdType } from '../../wire/ike';

/** CERT/CERTREQ encoding "X.509 Certificate - Signature" (RFC 7296 3.6). */
export const CERT_X509_SIGNATURE = 4;
/** SIGNATURE_HASH_ALGORITHMS values (RFC 7427 7): SHA2-256, SHA2-384, SHA2-512, Identity (EdDSA). */
export const HASH_SHA256 = 2,
  HASH_SHA384 = 3,
  HASH_SHA512 = 4,
  HASH_IDENTITY = 5;

export interface LocalCredential {
  cert: X509Certificate;
  der: Buffer;
  key: KeyObject;
  /** DER of the subject Name: our ID_DER_ASN1_DN when no other identity is configured. */
  subjectDer: Buffer;
}

export interface TrustStore {
  cas: X509Certificate[];
  /** SHA-1 of each CA's SubjectPublicKeyInfo, concatenated in CERTREQ (3.7). */
  keyHashes: Buffer[];
}

function readPemCerts(file: string): X509Certificate[] {
  const text = fs.readFileSync(file, 'utf8');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new RangeError(`${file} holds no PEM certificate`);
  return blocks.map((b) => new X509Certificate(b));
}

export function loadCredential(certFile: string, keyFile: string): LocalCredential {
  const [cert] = readPemCerts(certFile);
  let key: KeyObject;
  try {
    key = createPrivateKey(fs.readFileSync(keyFile));
  } catch (e) {
    throw new RangeError(`${keyFile} is not a PEM private key (${(e as Error).message})`, { cause: e });
  }
  if (!cert!.checkPrivateKey(key)) throw new RangeError(`${keyFile} is not the private key of ${certFile}`);
  const der = cert!.raw;
  return { cert: cert!, der, key, subjectDer: subjectDer(der) };
}

export function loadTrust(files: string[]): TrustStore {
  const cas = files.flatMap(readPemCerts);
  return { cas, keyHashes: cas.map(spkiSha1) };
}

export function spkiSha1(c: X509Certificate): Buffer {
  return createHash('sha1')
    .update(c.publicKey.export({ type: 'spki', format: 'der' }))
    .digest();
}

// ---------------------------------------------------------------- a little DER

interface Tlv {
  tag: number;
  start: number;
  valueStart: number;
  end: number;
}

function tlv(b: Buffer, off: number): Tlv {
  if (off + 2 > b.length) throw new RangeError('DER truncated');
  const tag = b[off]!;
  let len = b[off + 1]!;
  let p = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > b.length) throw new RangeError('DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[p + i]!;
    p += n;
  }
  if (p + len > b.length) throw new RangeError('DER value truncated');
  return { tag, start: off, valueStart: p, end: p + len };
}

/** The subject Name of a certificate (TBSCertificate's sixth field, RFC 5280 4.1). */
export function subjectDer(cert: Buffer): Buffer {
  const c = tlv(cert, 0);
  const tbs = tlv(cert, c.valueStart);
  let p = tbs.valueStart;
  let f = tlv(cert, p);
  if (f.tag === 0xa0) {
    p = f.end;
    f = tlv(cert, p);
  } // [0] version
  // serialNumber, signature, issuer, validity, subject
  for (let i = 0; i < 4; i++) {
    p = f.end;
    f = tlv(cert, p);
  }
  return Buffer.from(cert.subarray(f.start, f.end));
}

const OIDS: Record<string, { hash: string | null; kind: 'rsa' | 'ecdsa' | 'ed25519' }> = {
  '2a864886f70d01010b': { hash: 'sha256', kind: 'rsa' },
  '2a864886f70d01010c': { hash: 'sha384', kind: 'rsa' },
  '2a864886f70d01010d': { hash: 'sha512', kind: 'rsa' },
  '2a8648ce3d040302': { hash: 'sha256', kind: 'ecdsa' },
  '2a8648ce3d040303': { hash: 'sha384', kind: 'ecdsa' },
  '2a8648ce3d040304': { hash: 'sha512', kind: 'ecdsa' },
  '2b6570': { hash: null, kind: 'ed25519' },
};

/** AlgorithmIdentifier DER for our signatures (RFC 7427 Appendix A). */
function algorithmIdentifier(kind: 'rsa' | 'ecdsa' | 'ed25519', hash: string): Buffer {
  const oid = Object.entries(OIDS).find(([, v]) => v.kind === kind && (v.hash === hash || kind === 'ed25519'))![0];
  const o = Buffer.from(oid, 'hex');
  const inner = Buffer.concat([Buffer.from([6, o.length]), o, kind === 'rsa' ? Buffer.from([5, 0]) : Buffer.alloc(0)]);
  return Buffer.concat([Buffer.from([0x30, inner.length]), inner]);
}

// ---------------------------------------------------------------- chains and identities

/**
 * Checks that `leaf` (with the other CERT payloads as possible intermediates) chains to
 * a trusted CA and is valid at `wallMs`. Returns null when good, else why not.
 */
export function checkChain(leafDer: Buffer, others: Buffer[], trust: TrustStore, wallMs: number): string | null {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(leafDer);
  } catch {
    return 'the CERT payload is not an X.509 certificate';
  }
  const pool: X509Certificate[] = [];
  for (const d of others) {
    try {
      pool.push(new X509Certificate(d));
    } catch {
      /* ignore what does not parse */
    }
  }
  const valid = (c: X509Certificate) => wallMs >= Date.parse(c.validFrom) && wallMs <= Date.parse(c.validTo);
  for (let depth = 0; depth < 5; depth++) {
    if (!valid(cert)) return `certificate "${cert.subject.replace(/\n/g, ', ')}" is not valid now (${cert.validFrom} to ${cert.validTo})`;
    const ca = trust.cas.find((a) => cert.checkIssued(a) && cert.verify(a.publicKey));
    if (ca) return valid(ca) ? null : `CA "${ca.subject.replace(/\n/g, ', ')}" is not valid now`;
    const up = pool.find((a) => a !== cert && cert.checkIssued(a) && cert.verify(a.publicKey) && a.ca);
    if (!up) return `certificate "${cert.subject.replace(/\n/g, ', ')}" is not issued by a trusted CA`;
    cert = up;
  }
  return 'certificate chain too long';
}

/** The subject as text: "C=CH, O=lab, CN=client1". */
export function subjectText(c: X509Certificate): string {
  return c.subject.split('\n').join(', ');
}

/** Is the identity (ID payload type and data) one the certificate vouches for (RFC 7296 3.5, RFC 4945 3.1)? */
export function identityInCert(c: X509Certificate, idType: number, data: Buffer): boolean {
  switch (idType) {
    case IdType.RFC822_ADDR:
      return c.checkEmail(data.toString('utf8'), { subject: 'default' }) !== undefined;
    case IdType.FQDN:
      return c.checkHost(data.toString('utf8'), { subject: 'default', wildcards: false }) !== undefined;
    case IdType.IPV4_ADDR:
      return data.length === 4 && c.checkIP(formatIpv4(data.readUInt32BE(0))) !== undefined;
    case IdType.DER_ASN1_DN:
      return data.equals(subjectDer(c.raw));
    default:
      return false;
  }
}

// ---------------------------------------------------------------- AUTH signatures

export function isSignatureMethod(m: number): boolean {
  return (
    m === AuthMethod.RSA_SIG || m === AuthMethod.ECDSA_256 || m === AuthMethod.ECDSA_384 || m === AuthMethod.ECDSA_521 || m === AuthMethod.DIGITAL_SIGNATURE
  );
}

/** Verifies AUTH data of a signature method with the peer's public key. Null when good, else why not. */
export function verifyAuth(method: number, data: Buffer, key: KeyObject, octets: Buffer): string | null {
  try {
    switch (method) {
      case AuthMethod.RSA_SIG:
        if (key.asymmetricKeyType !== 'rsa') return 'RSA signature from a certificate without an RSA key';
        return verify('sha1', octets, key, data) ? null : 'the RSA signature does not verify';
      case AuthMethod.ECDSA_256:
      case AuthMethod.ECDSA_384:
      case AuthMethod.ECDSA_521: {
        const hash = method === AuthMethod.ECDSA_256 ? 'sha256' : method === AuthMethod.ECDSA_384 ? 'sha384' : 'sha512';
        return verify(hash, octets, { key, dsaEncoding: 'ieee-p1363' }, data) ? null : 'the ECDSA signature does not verify';
      }
      case AuthMethod.DIGITAL_SIGNATURE: {
        // RFC 7427 3: one length byte, the AlgorithmIdentifier, the signature.
        const n = data[0] ?? 0;
        if (data.length < 1 + n) return 'Digital Signature AUTH shorter than its AlgorithmIdentifier';
        const ai = data.subarray(1, 1 + n),
          sig = data.subarray(1 + n);
        const seq = tlv(ai, 0),
          oid = tlv(ai, seq.valueStart);
        if (seq.tag !== 0x30 || oid.tag !== 6) return 'AlgorithmIdentifier is not a SEQUENCE with an OID';
        const alg = OIDS[ai.subarray(oid.valueStart, oid.end).toString('hex')];
        if (!alg) return `signature algorithm ${ai.subarray(oid.valueStart, oid.end).toString('hex')} is not supported (RSA PKCS#1 v1.5, ECDSA, Ed25519 are)`;
        const ok = alg.kind === 'ed25519' ? verify(null, octets, key, sig) : verify(alg.hash, octets, key, sig);
        return ok ? null : 'the signature does not verify';
      }
      default:
        return `authentication method ${method} is not a signature`;
    }
  } catch (e) {
    return `signature check failed: ${(e as Error).message}`;
  }
}

/**
 * Signs the octets with our key: RFC 7427 (method 14, SHA-256) when the peer announced
 * SIGNATURE_HASH_ALGORITHMS, the key type's classic method otherwise.
 */
export function signAuth(key: KeyObject, octets: Buffer, digitalSignature: boolean): { method: number; data: Buffer } {
  const type = key.asymmetricKeyType;
  if (digitalSignature) {
    if (type === 'ed25519') return { method: AuthMethod.DIGITAL_SIGNATURE, data: withAlg(algorithmIdentifier('ed25519', ''), sign(null, octets, key)) };
    const kind = type === 'rsa' ? 'rsa' : 'ecdsa';
    return { method: AuthMethod.DIGITAL_SIGNATURE, data: withAlg(algorithmIdentifier(kind, 'sha256'), sign('sha256', octets, key)) };
  }
  if (type === 'rsa') return { method: AuthMethod.RSA_SIG, data: sign('sha1', octets, key) };
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const [method, hash] =
      curve === 'secp384r1' ? [AuthMethod.ECDSA_384, 'sha384'] : curve === 'secp521r1' ? [AuthMethod.ECDSA_521, 'sha512'] : [AuthMethod.ECDSA_256, 'sha256'];
    return { method, data: sign(hash, octets, { key, dsaEncoding: 'ieee-p1363' }) };
  }
  throw new RangeError(`cannot sign IKE AUTH with a ${type} key without RFC 7427`);
}

function withAlg(ai: Buffer, sig: Buffer): Buffer {
  return Buffer.concat([Buffer.from([ai.length]), ai, sig]);
}
