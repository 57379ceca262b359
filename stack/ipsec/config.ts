/**
 * The IPsec configuration: identities and their pre-shared keys, proposals, traffic
 * selectors, lifetimes and the static policy table, from a YAML file (`--ipsec FILE`)
 * and/or `--ipsec-psk [ID=]SECRET`. A bad file is refused with one message naming the
 * file, the line, the field and what would be valid:
 *
 *   lab.yaml:7: peers[0].psk: must be a non-empty string or 0x-prefixed hex, got 42
 *
 * The file (every key optional except that peers need an id and a psk):
 *
 *   local:
 *     id: server@lab                 # our IDr (default: the certificate's subject, else the address IKE was sent to)
 *     cert: server.pem               # our certificate and key (PEM, paths relative to this file):
 *     key: server.key                #   certificate peers get a signature from us
 *   ca: [ca.pem]                     # CAs whose certificates peers may authenticate with
 *   ike:
 *     proposals: [aes128-sha256-modp2048, aes128gcm16-prfsha256-ecp256]
 *     lifetime: 8h                   # hard lifetime of an IKE SA (longer than clients' rekey times)
 *     dpd: 30s                       # liveness check after this long without traffic (0: never)
 *     cookie_threshold: 32           # half-open IKE SAs before cookies are required (RFC 7296 2.6)
 *   esp:
 *     proposals: [aes128gcm16, aes128-sha256]
 *     lifetime: 2h                   # hard lifetime of a child SA
 *     replay_window: 128             # packets, a multiple of 32 from 64 to 4096
 *     transport_mode: accept         # accept | refuse USE_TRANSPORT_MODE (RFC 7296 1.3.1)
 *   peers:
 *     - id: client1@lab              # the identity the peer proves (IDi), or %any
 *       psk: labsecret               # or 0x6c6162...
 *     - id: "%any"                   # any identity its certificate (from a ca:) vouches for
 *       auth: pubkey
 *       remote_ts: [dynamic]         # its side: dynamic = its outer address, or CIDRs
 *       local_ts: [198.18.0.2/32]    # our side (default 0.0.0.0/0: narrowed to what it asks)
 *   policies:                        # static SPD entries, first match wins (after negotiated SAs)
 *     - { name: web, local: "198.18.0.2/32[tcp/80]", remote: 0.0.0.0/0, action: protect }
 *   default: bypass                  # bypass | discard: packets no entry matches
 */
import * as fs from 'node:fs';
import type { LineCounter, Node as YamlNode, Pair, Scalar, YAMLMap, YAMLSeq } from 'yaml';

/** The YAML parser, loaded when a file is read (`faultstack run` without --ipsec never needs it). */
function yaml(): typeof import('yaml') {
  return require('yaml') as typeof import('yaml');
}
import { ANY_SELECTOR, type Policy, type PolicyAction, type Selector } from './spd';
import * as path from 'node:path';
import { parseIdentity, ANY_ID } from './ike/identity';
import { identityInCert, loadCredential, loadTrust, subjectText, type LocalCredential, type TrustStore } from './ike/certs';
import { parseSelector } from './ike/negotiate';
import { MAX_REPLAY_WINDOW, MIN_REPLAY_WINDOW } from './replay';
import { parseProposal, type ProposalSpec } from './transforms';

export interface PeerConfig {
  /** As written: "client1@lab", "198.18.50.1", "%any"; a pubkey peer may also give its certificate's subject ("C=CH, O=lab, CN=c1"). */
  id: string;
  /** How the peer authenticates: a pre-shared key, or a certificate from one of `ca` (RFC 7296 2.15). */
  auth: 'psk' | 'pubkey';
  /** Empty for a pubkey peer. */
  psk: Buffer;
  /** Our side; null: anything (narrowed to what the peer proposes). */
  localTs: Selector[] | null;
  /** The peer's side; 'dynamic': its outer address only. */
  remoteTs: Selector[] | 'dynamic';
  espProposals?: ProposalSpec[];
}

export interface IpsecConfig {
  localId: string | null;
  /** Our certificate and key (local.cert, local.key): we answer certificate peers with a signature. */
  localCredential: LocalCredential | null;
  /** The CAs whose certificates we accept (ca:); null: no certificate authentication. */
  trust: TrustStore | null;
  ike: {
    proposals: ProposalSpec[];
    lifetimeMs: number;
    dpdMs: number;
    cookieThreshold: number;
    /** An IKE SA that has not authenticated within this long is dropped. */
    halfOpenTimeoutMs: number;
    /** First retransmission timeout of our own requests (doubles, RFC 7296 2.1). */
    retransmitMs: number;
    retransmitTries: number;
    /** Upper bound on IKE SAs (half-open included); more IKE_SA_INIT requests are refused. */
    maxIkeSas: number;
  };
  esp: {
    proposals: ProposalSpec[];
    lifetimeMs: number;
    replayWindow: number;
    transportMode: 'accept' | 'refuse';
  };
  peers: PeerConfig[];
  policies: Omit<Policy, 'hits'>[];
  defaultPolicy: PolicyAction;
}

/**
 * What a stock strongSwan client offers by default, in the responder's order of
 * preference. The hard lifetimes default to twice strongSwan's rekey times (4 h IKE,
 * 1 h child): the responder does not rekey, the clients do, well before.
 */
export const DEFAULT_IKE_PROPOSALS = [
  'aes128gcm16-aes256gcm16-aes192gcm16-prfsha256-prfsha384-prfsha512-curve25519-ecp256-ecp384-ecp521-modp2048-modp3072-modp4096-curve448',
  'aes128-aes256-aes192-sha256-sha384-sha512-sha1-curve25519-ecp256-ecp384-ecp521-modp2048-modp3072-modp4096-curve448',
];
export const DEFAULT_ESP_PROPOSALS = ['aes128gcm16-aes256gcm16-aes192gcm16-noesn-esn', 'aes128-aes256-aes192-sha256-sha384-sha512-sha1-noesn-esn'];

export function defaultConfig(): IpsecConfig {
  return {
    localId: null,
    localCredential: null,
    trust: null,
    ike: {
      proposals: DEFAULT_IKE_PROPOSALS.map((p) => parseProposal(p, 'ike')),
      lifetimeMs: 8 * 3600_000,
      dpdMs: 30_000,
      cookieThreshold: 32,
      halfOpenTimeoutMs: 30_000,
      retransmitMs: 1000,
      retransmitTries: 5,
      maxIkeSas: 10_000,
    },
    esp: {
      proposals: DEFAULT_ESP_PROPOSALS.map((p) => parseProposal(p, 'esp')),
      lifetimeMs: 2 * 3600_000,
      replayWindow: 128,
      transportMode: 'accept',
    },
    peers: [],
    policies: [],
    defaultPolicy: 'bypass',
  };
}

/** A configuration error; the message is the whole one-line report. */
export class IpsecConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IpsecConfigError';
  }
}

/** `--ipsec-psk [ID=]SECRET`: a peer; without ID it is %any. */
export function pskPeer(raw: string): PeerConfig {
  const eq = raw.indexOf('=');
  // An ID never contains '=' (distinguished names are not supported), a secret may.
  const id = eq > 0 ? raw.slice(0, eq) : ANY_ID;
  const secret = eq > 0 ? raw.slice(eq + 1) : raw;
  if (id !== ANY_ID) parseIdentity(id);
  return { id, auth: 'psk', psk: secretBytes(secret), localTs: null, remoteTs: 'dynamic' };
}

function secretBytes(s: string): Buffer {
  if (s === '') throw new RangeError('the secret is empty');
  if (/^0x([0-9a-f]{2})+$/i.test(s)) return Buffer.from(s.slice(2), 'hex');
  return Buffer.from(s, 'utf8');
}

/** Duration: a number of seconds, or "500ms", "30s", "10m", "4h", "1d". */
function duration(v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v * 1000;
  if (typeof v === 'string') {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v.trim());
    if (m) return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 }[m[2] as 'ms']!;
  }
  throw new RangeError('must be a duration: seconds, or a number with ms, s, m, h or d (e.g. 30s, 4h)');
}

class Walker {
  constructor(
    private readonly file: string,
    private readonly lc: LineCounter,
    private readonly text: string,
  ) {}

  /** The node as written in the file (YAML reads 0x00ff as the number 255; a key is bytes). */
  source(node: unknown): string | null {
    const r = (node as YamlNode | null)?.range;
    return r ? this.text.slice(r[0], r[1]).trim() : null;
  }

  fail(node: YamlNode | Pair | null | undefined, field: string, why: string): never {
    const range = node && 'range' in node ? node.range : node && 'key' in node ? ((node.key as YamlNode | null)?.range ?? null) : null;
    const line = range ? this.lc.linePos(range[0]).line : 1;
    throw new IpsecConfigError(`${this.file}:${line}: ${field}: ${why}`);
  }

  map(node: unknown, field: string, keys: readonly string[]): Map<string, { pair: Pair; value: unknown }> {
    if (!yaml().isMap(node)) this.fail(node as YamlNode, field, `must be a mapping with the keys ${keys.join(', ')}`);
    const out = new Map<string, { pair: Pair; value: unknown }>();
    for (const pair of (node as YAMLMap).items) {
      const k = yaml().isScalar(pair.key) ? String((pair.key as Scalar).value) : '';
      if (!keys.includes(k)) this.fail(pair, `${field}${field ? '.' : ''}${k || '?'}`, `unknown key; valid keys here: ${keys.join(', ')}`);
      out.set(k, { pair, value: pair.value });
    }
    return out;
  }

  scalar(node: unknown, field: string): unknown {
    if (!yaml().isScalar(node)) this.fail(node as YamlNode, field, 'must be a single value, not a list or mapping');
    return (node as Scalar).value;
  }

  string(node: unknown, field: string): string {
    const v = this.scalar(node, field);
    if (typeof v !== 'string' || v.trim() === '') this.fail(node as YamlNode, field, `must be a non-empty string, got ${JSON.stringify(v)}`);
    return v as string;
  }

  list(node: unknown, field: string): YamlNode[] {
    if (yaml().isSeq(node)) return (node as YAMLSeq).items as YamlNode[];
    if (yaml().isScalar(node)) return [node as YamlNode];
    this.fail(node as YamlNode, field, 'must be a list (or one value)');
  }

  /** Runs `f` and turns its RangeError into a located error. */
  check<T>(node: unknown, field: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof IpsecConfigError) throw e;
      this.fail(node as YamlNode, field, (e as Error).message);
    }
  }
}

/** Reads and validates a configuration file on top of the defaults. */
export function loadIpsecConfig(file: string, text = fs.readFileSync(file, 'utf8')): IpsecConfig {
  const { LineCounter: Lines, parseDocument, isSeq } = yaml();
  const lc = new Lines();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const line = lc.linePos(e.pos[0]).line;
    throw new IpsecConfigError(`${file}:${line}: not valid YAML: ${e.message.split('\n')[0]}`);
  }
  const w = new Walker(file, lc, text);
  const cfg = defaultConfig();
  if (doc.contents === null) return cfg;
  const top = w.map(doc.contents, '', ['local', 'ca', 'ike', 'esp', 'peers', 'policies', 'default']);
  const rel = (f: string) => path.resolve(path.dirname(path.resolve(file)), f);

  const ca = top.get('ca');
  if (ca) {
    const files = w.list(ca.value, 'ca').map((n, i) => ({ n, f: rel(w.string(n, `ca[${i}]`)) }));
    cfg.trust = w.check(ca.value, 'ca', () => {
      for (const { f } of files) if (!fs.existsSync(f)) throw new RangeError(`${f} does not exist (a PEM CA certificate is needed)`);
      return loadTrust(files.map((x) => x.f));
    });
  }

  const local = top.get('local');
  if (local) {
    const m = w.map(local.value, 'local', ['id', 'cert', 'key']);
    if (m.has('cert') !== m.has('key'))
      w.fail(local.pair, m.has('cert') ? 'local.key' : 'local.cert', 'local.cert and local.key go together (our certificate and its private key, PEM)');
    if (m.has('cert')) {
      const c = rel(w.string(m.get('cert')!.value, 'local.cert'));
      const k = rel(w.string(m.get('key')!.value, 'local.key'));
      cfg.localCredential = w.check(m.get('cert')!.value, 'local.cert', () => {
        for (const f of [c, k]) if (!fs.existsSync(f)) throw new RangeError(`${f} does not exist`);
        return loadCredential(c, k);
      });
    }
    const id = m.get('id');
    if (id) {
      const s = w.string(id.value, 'local.id');
      const cred = cfg.localCredential;
      if (cred && s.includes('=')) {
        if (s !== subjectText(cred.cert))
          w.fail(id.value as YamlNode, 'local.id', `a distinguished name must be the certificate's subject "${subjectText(cred.cert)}"`);
      } else {
        const wire = w.check(id.value, 'local.id', () => parseIdentity(s));
        if (cred && !identityInCert(cred.cert, wire.idType, wire.data))
          w.fail(id.value as YamlNode, 'local.id', `"${s}" is not in local.cert (its subjectAltName or subject); the peer would refuse it`);
      }
      cfg.localId = s;
    }
  }

  const proposals = (node: unknown, field: string, kind: 'ike' | 'esp') =>
    w.list(node, field).map((n, i) => {
      const s = w.string(n, `${field}[${i}]`);
      return w.check(n, `${field}[${i}]`, () => {
        try {
          return parseProposal(s, kind);
        } catch (e) {
          throw new RangeError(`proposal "${s}" ${(e as Error).message}`, { cause: e });
        }
      });
    });

  const ike = top.get('ike');
  if (ike) {
    const m = w.map(ike.value, 'ike', [
      'proposals',
      'lifetime',
      'dpd',
      'cookie_threshold',
      'half_open_timeout',
      'retransmit',
      'retransmit_tries',
      'max_ike_sas',
    ]);
    const get = (k: string) => m.get(k)?.value;
    if (m.has('proposals')) cfg.ike.proposals = proposals(get('proposals'), 'ike.proposals', 'ike');
    if (m.has('lifetime')) cfg.ike.lifetimeMs = w.check(get('lifetime'), 'ike.lifetime', () => positive(duration(w.scalar(get('lifetime'), 'ike.lifetime'))));
    if (m.has('dpd')) cfg.ike.dpdMs = w.check(get('dpd'), 'ike.dpd', () => duration(w.scalar(get('dpd'), 'ike.dpd')));
    if (m.has('half_open_timeout'))
      cfg.ike.halfOpenTimeoutMs = w.check(get('half_open_timeout'), 'ike.half_open_timeout', () =>
        positive(duration(w.scalar(get('half_open_timeout'), 'ike.half_open_timeout'))),
      );
    if (m.has('retransmit'))
      cfg.ike.retransmitMs = w.check(get('retransmit'), 'ike.retransmit', () => positive(duration(w.scalar(get('retransmit'), 'ike.retransmit'))));
    if (m.has('cookie_threshold'))
      cfg.ike.cookieThreshold = w.check(get('cookie_threshold'), 'ike.cookie_threshold', () =>
        int(w.scalar(get('cookie_threshold'), 'ike.cookie_threshold'), 0, 1_000_000),
      );
    if (m.has('retransmit_tries'))
      cfg.ike.retransmitTries = w.check(get('retransmit_tries'), 'ike.retransmit_tries', () =>
        int(w.scalar(get('retransmit_tries'), 'ike.retransmit_tries'), 1, 20),
      );
    if (m.has('max_ike_sas'))
      cfg.ike.maxIkeSas = w.check(get('max_ike_sas'), 'ike.max_ike_sas', () => int(w.scalar(get('max_ike_sas'), 'ike.max_ike_sas'), 1, 10_000_000));
  }

  const esp = top.get('esp');
  if (esp) {
    const m = w.map(esp.value, 'esp', ['proposals', 'lifetime', 'replay_window', 'transport_mode']);
    const get = (k: string) => m.get(k)?.value;
    if (m.has('proposals')) cfg.esp.proposals = proposals(get('proposals'), 'esp.proposals', 'esp');
    if (m.has('lifetime')) cfg.esp.lifetimeMs = w.check(get('lifetime'), 'esp.lifetime', () => positive(duration(w.scalar(get('lifetime'), 'esp.lifetime'))));
    if (m.has('replay_window')) {
      cfg.esp.replayWindow = w.check(get('replay_window'), 'esp.replay_window', () => {
        const n = int(w.scalar(get('replay_window'), 'esp.replay_window'), MIN_REPLAY_WINDOW, MAX_REPLAY_WINDOW);
        if (n % 32 !== 0) throw new RangeError(`must be a multiple of 32 from ${MIN_REPLAY_WINDOW} to ${MAX_REPLAY_WINDOW}, got ${n}`);
        return n;
      });
    }
    if (m.has('transport_mode')) {
      const v = w.scalar(get('transport_mode'), 'esp.transport_mode');
      if (v !== 'accept' && v !== 'refuse')
        w.fail(get('transport_mode') as YamlNode, 'esp.transport_mode', `must be accept or refuse, got ${JSON.stringify(v)}`);
      cfg.esp.transportMode = v as 'accept' | 'refuse';
    }
  }

  const selectors = (node: unknown, field: string, allowDynamic: boolean): Selector[] | 'dynamic' => {
    const items = w.list(node, field);
    const out: Selector[] = [];
    for (let i = 0; i < items.length; i++) {
      const s = w.string(items[i], `${field}[${i}]`);
      if (s === 'dynamic') {
        if (!allowDynamic || items.length !== 1)
          w.fail(items[i], `${field}[${i}]`, allowDynamic ? '"dynamic" must be alone' : '"dynamic" is only valid in remote_ts');
        return 'dynamic';
      }
      out.push(w.check(items[i], `${field}[${i}]`, () => parseSelector(s)));
    }
    if (out.length === 0) w.fail(node as YamlNode, field, 'must list at least one selector');
    return out;
  };

  const peers = top.get('peers');
  if (peers) {
    if (!isSeq(peers.value)) w.fail(peers.pair, 'peers', 'must be a list of peers, each with id and psk');
    ((peers.value as YAMLSeq).items as YamlNode[]).forEach((n, i) => {
      const f = `peers[${i}]`;
      const m = w.map(n, f, ['id', 'auth', 'psk', 'local_ts', 'remote_ts', 'esp_proposals']);
      if (!m.has('id')) w.fail(n, `${f}.id`, 'is missing: the identity the peer proves, e.g. client1@lab, or %any');
      let auth: 'psk' | 'pubkey' = 'psk';
      if (m.has('auth')) {
        const a = w.scalar(m.get('auth')!.value, `${f}.auth`);
        if (a !== 'psk' && a !== 'pubkey') w.fail(m.get('auth')!.value as YamlNode, `${f}.auth`, `must be psk or pubkey, got ${JSON.stringify(a)}`);
        auth = a as 'psk' | 'pubkey';
      }
      const idNode = m.get('id')!.value;
      const id = w.string(idNode, `${f}.id`);
      if (auth === 'pubkey') {
        if (!cfg.trust) w.fail(m.get('auth')!.value as YamlNode, `${f}.auth`, 'pubkey needs a ca: list (the CAs whose certificates are accepted)');
        if (id !== ANY_ID && !id.includes('=')) w.check(idNode, `${f}.id`, () => parseIdentity(id));
        if (m.has('psk')) w.fail(m.get('psk')!.pair, `${f}.psk`, 'a pubkey peer has no psk');
        const peer: PeerConfig = { id, auth, psk: Buffer.alloc(0), localTs: null, remoteTs: 'dynamic' };
        if (m.has('local_ts')) peer.localTs = selectors(m.get('local_ts')!.value, `${f}.local_ts`, false) as Selector[];
        if (m.has('remote_ts')) peer.remoteTs = selectors(m.get('remote_ts')!.value, `${f}.remote_ts`, true);
        if (m.has('esp_proposals')) peer.espProposals = proposals(m.get('esp_proposals')!.value, `${f}.esp_proposals`, 'esp');
        cfg.peers.push(peer);
        return;
      }
      if (!m.has('psk')) w.fail(n, `${f}.psk`, 'is missing: the pre-shared key (a string, or 0x-prefixed hex)');
      if (id !== ANY_ID) w.check(idNode, `${f}.id`, () => parseIdentity(id));
      const pskNode = m.get('psk')!.value;
      let pskRaw = w.scalar(pskNode, `${f}.psk`);
      const written = w.source(pskNode);
      if (typeof pskRaw === 'number' && written && /^0x([0-9a-f]{2})+$/i.test(written)) pskRaw = written;
      if (typeof pskRaw !== 'string' && typeof pskRaw !== 'number') w.fail(pskNode as YamlNode, `${f}.psk`, 'must be a non-empty string or 0x-prefixed hex');
      if (typeof pskRaw === 'number')
        w.fail(pskNode as YamlNode, `${f}.psk`, `must be a non-empty string or 0x-prefixed hex, got ${pskRaw} (quote it to use digits)`);
      const psk = w.check(pskNode, `${f}.psk`, () => secretBytes(pskRaw as string));
      const peer: PeerConfig = { id, auth: 'psk', psk, localTs: null, remoteTs: 'dynamic' };
      if (m.has('local_ts')) peer.localTs = selectors(m.get('local_ts')!.value, `${f}.local_ts`, false) as Selector[];
      if (m.has('remote_ts')) peer.remoteTs = selectors(m.get('remote_ts')!.value, `${f}.remote_ts`, true);
      if (m.has('esp_proposals')) peer.espProposals = proposals(m.get('esp_proposals')!.value, `${f}.esp_proposals`, 'esp');
      cfg.peers.push(peer);
    });
  }

  const policies = top.get('policies');
  if (policies) {
    if (!isSeq(policies.value)) w.fail(policies.pair, 'policies', 'must be a list of {name, local, remote, action}');
    ((policies.value as YAMLSeq).items as YamlNode[]).forEach((n, i) => {
      const f = `policies[${i}]`;
      const m = w.map(n, f, ['name', 'local', 'remote', 'action']);
      const sel = (k: string) => {
        const e = m.get(k);
        if (!e) return ANY_SELECTOR;
        const s = w.string(e.value, `${f}.${k}`);
        return w.check(e.value, `${f}.${k}`, () => parseSelector(s));
      };
      const a = m.get('action');
      if (!a) return w.fail(n, `${f}.action`, 'is missing: protect, bypass or discard');
      const action = w.scalar(a.value, `${f}.action`);
      if (action !== 'protect' && action !== 'bypass' && action !== 'discard')
        w.fail(a.value as YamlNode, `${f}.action`, `must be protect, bypass or discard, got ${JSON.stringify(action)}`);
      const name = m.has('name') ? w.string(m.get('name')!.value, `${f}.name`) : `policy${i + 1}`;
      cfg.policies.push({ name, local: sel('local'), remote: sel('remote'), action: action as PolicyAction });
    });
  }

  const dflt = top.get('default');
  if (dflt) {
    const v = w.scalar(dflt.value, 'default');
    if (v !== 'bypass' && v !== 'discard') w.fail(dflt.value as YamlNode, 'default', `must be bypass or discard, got ${JSON.stringify(v)}`);
    cfg.defaultPolicy = v as PolicyAction;
  }
  return cfg;
}

function int(v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new RangeError(`must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

function positive(ms: number): number {
  if (ms <= 0) throw new RangeError('must be longer than 0');
  return ms;
}
