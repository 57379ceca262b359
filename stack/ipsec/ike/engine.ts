/**
 * The IKEv2 engine (RFC 7296): every IKE SA, the exchanges of the responder, and the
 * initiator's (used stack to stack and by the unit tests).
 *
 * Responder:
 *   IKE_SA_INIT (1.2, 2.6, 2.10, 2.23): proposal, KE group (INVALID_KE_PAYLOAD names
 *     ours), nonce, NAT detection; a COOKIE is demanded while too many SAs are half open.
 *   IKE_AUTH (1.2, 2.15): PSK of the identity the peer claims; a wrong one is answered
 *     AUTHENTICATION_FAILED and the SA is gone (2.21.2). INITIAL_CONTACT removes the
 *     identity's other IKE SAs. The first child SA with selector narrowing (2.9).
 *   CREATE_CHILD_SA (1.3): new child, child rekey (REKEY_SA), IKE SA rekey (2.18).
 *   INFORMATIONAL (1.4): deletes of either kind, liveness checks.
 * Message IDs (2.2): a retransmitted request gets the kept response again; anything
 * outside the window is dropped. Malformed messages are counted and dropped (or
 * answered INVALID_SYNTAX once authenticated, 2.21.3), never thrown.
 */
import { createHash, randomBytes } from 'node:crypto';
import { formatIpv4 } from '../../wire/addr';
import {
  AuthMethod,
  Exchange,
  IKE_HEADER,
  IKE_VERSION,
  IdType,
  IkeFlag,
  IkeSyntaxError,
  Notify,
  Payload,
  ProtocolId,
  emitIkeMessage,
  exchangeName,
  findNotify,
  findPayload,
  notifyName,
  parseIkeHeader,
  parsePayloadChain,
  type IkeHeader,
  type PayloadOf,
  type PayloadRepr,
  type ProposalRepr,
} from '../../wire/ike';
import type { IpsecConfig, PeerConfig } from '../config';
import { EspSa } from '../esp';
import { deriveChildKeys, deriveIkeKeys } from '../keys';
import { hex32, type ChildSa, type Endpoint, type PeerIdentity, type Sad } from '../sad';
import { ANY_SELECTOR, type Selector } from '../spd';
import { PRFS, type ChosenSuite, type ProposalSpec } from '../transforms';
import { X509Certificate } from 'node:crypto';
import { KeyExchange, SkIntegrityError, equalConstantTime, idBody, makeCookie, openMessage, pskAuth, sealMessage, signedOctets } from './crypto';
import {
  CERT_X509_SIGNATURE,
  HASH_SHA256,
  HASH_SHA384,
  HASH_SHA512,
  checkChain,
  identityInCert,
  isSignatureMethod,
  signAuth,
  subjectText,
  verifyAuth,
  type LocalCredential,
  type TrustStore,
} from './certs';
import { ANY_ID, identityMatches, parseIdentity, peerIdentity } from './identity';
import { IkeSa, type IkeSaView, type QueuedRequest } from './ike-sa';
import { hostSelector, narrow, proposalsFromSpecs, selectProposal, tsFromSelector } from './negotiate';

/** Counters of the IKE engine (faultstack's own: Linux has no IKE counters). */
export function newIkeCounters() {
  return {
    FsIkeInRequests: 0,
    FsIkeInResponses: 0,
    FsIkeOutRequests: 0,
    FsIkeOutResponses: 0,
    FsIkeRetransmitsAnswered: 0,
    FsIkeRetransmits: 0,
    FsIkeInvalidSyntax: 0,
    FsIkeIntegrityFailures: 0,
    FsIkeUnknownSpi: 0,
    FsIkeInvalidMessageId: 0,
    FsIkeInvalidVersion: 0,
    FsIkeCookiesSent: 0,
    FsIkeCookiesRefused: 0,
    FsIkeAuthFailures: 0,
    FsIkeNoProposalChosen: 0,
    FsIkeInvalidKe: 0,
    FsIkeTsUnacceptable: 0,
    FsIkeSasEstablished: 0,
    FsIkeSasRekeyed: 0,
    FsIkeSasDeleted: 0,
    FsIkeHalfOpenExpired: 0,
    FsIkeDpdSent: 0,
    FsIkeDeadPeers: 0,
    FsIkeInitialContacts: 0,
    FsIkeUnsupportedCritical: 0,
    FsIkeTooManySas: 0,
    FsChildSasInstalled: 0,
    FsChildSasRekeyed: 0,
    FsChildSasDeleted: 0,
    FsChildSasExpired: 0,
  };
}
export type IkeCounters = ReturnType<typeof newIkeCounters>;

/** What happened to SAs: other modules (the NLB fault, the event log) subscribe to these. */
export type IpsecEvent =
  | { kind: 'ike-sa-up'; ike: IkeSaView }
  | { kind: 'ike-sa-rekeyed'; old: IkeSaView; ike: IkeSaView }
  | { kind: 'ike-sa-down'; ike: IkeSaView; reason: string }
  | { kind: 'child-sa-up'; child: ChildSa; ike: IkeSaView }
  | { kind: 'child-sa-rekeyed'; old: ChildSa; child: ChildSa; ike: IkeSaView }
  | { kind: 'child-sa-down'; child: ChildSa; reason: string }
  | { kind: 'auth-failed'; identity: string; remote: string; reason: string };

export interface IkeHost {
  /** Sends an IKE message (without the non-ESP marker: the transport adds it on port 4500). */
  send(msg: Buffer, local: Endpoint, remote: Endpoint): void;
  readonly sad: Sad;
  readonly counters: IkeCounters;
  event(e: IpsecEvent): void;
  /** The keys of an IKE SA (after IKE_SA_INIT) or a child SA, for the keylog. */
  keysKnown?(ike: IkeSa, child?: ChildSa): void;
  /** Wall-clock time (ms since the epoch) for certificate validity; without it no certificate is valid. */
  wallClock?(): number;
}

/** What the initiator asks for (stack to stack, tests). */
export interface InitiateOptions {
  local: Endpoint;
  remote: Endpoint;
  /** Our identity (IDi) and the PSK (empty with `credential`). */
  id: string;
  psk: Buffer;
  /** Authenticate with this certificate and key instead of the PSK (RFC 7427 signature). */
  credential?: LocalCredential;
  /** CAs for the responder's certificate, when it answers with one. */
  trust?: TrustStore;
  /** Expected responder identity, sent as IDr when given. */
  remoteId?: string;
  ikeProposals?: ProposalSpec[];
  espProposals?: ProposalSpec[];
  /** Our and their side of the child SA. */
  localTs: Selector[];
  remoteTs: Selector[];
  transport?: boolean;
  initialContact?: boolean;
  /** Force this KE group first (else the first proposal's first group). */
  keGroup?: number;
  onEstablished?: (ike: IkeSa, child: ChildSa | null) => void;
  onFailed?: (reason: string) => void;
}

const NONCE_BYTES = 32;
/** RFC 7296 2.10: nonces are 16 to 256 bytes. */
const NONCE_MIN = 16,
  NONCE_MAX = 256;

export class IkeEngine {
  private readonly byOurSpi = new Map<string, IkeSa>();
  /** Half-open responder SAs by peer address and SPIi: a retransmitted IKE_SA_INIT finds its SA (2.1). */
  private readonly byInit = new Map<string, IkeSa>();
  private nextId = 1;
  private halfOpen = 0;
  private cookieSecret = randomBytes(32);
  private oldCookieSecret = randomBytes(32);
  private cookieVersion = 0;
  private cookieRotatedAt = -Infinity;

  constructor(
    private readonly host: IkeHost,
    private readonly config: () => IpsecConfig,
  ) {}

  get counters(): IkeCounters {
    return this.host.counters;
  }
  private wallClock(): number {
    return this.host.wallClock ? this.host.wallClock() : NaN;
  }

  all(): IkeSa[] {
    return [...this.byOurSpi.values()];
  }
  get halfOpenCount(): number {
    return this.halfOpen;
  }

  // ================================================================ input

  /** One IKE message from `remote` to `local` (non-ESP marker already removed). Never throws. */
  input(msg: Buffer, local: Endpoint, remote: Endpoint, now: number): void {
    let hdr: IkeHeader;
    try {
      hdr = parseIkeHeader(msg);
    } catch {
      this.counters.FsIkeInvalidSyntax++;
      return;
    }
    if (hdr.major !== 2) {
      this.counters.FsIkeInvalidVersion++;
      return;
    }
    const m = msg.subarray(0, hdr.length);
    try {
      if (hdr.flags & IkeFlag.RESPONSE) this.onResponse(hdr, m, local, remote, now);
      else this.onRequest(hdr, m, local, remote, now);
    } catch (e) {
      // A bug must not take the stack down: count it as a message we could not handle.
      this.counters.FsIkeInvalidSyntax++;
      if (process.env.FAULTSTACK_DEBUG === '1') console.error(e);
    }
  }

  private onRequest(hdr: IkeHeader, msg: Buffer, local: Endpoint, remote: Endpoint, now: number): void {
    this.counters.FsIkeInRequests++;
    if (hdr.exchange === Exchange.IKE_SA_INIT) {
      if (!isZero(hdr.spiR)) {
        // A retransmitted IKE_SA_INIT carries SPIr 0; with SPIr it is out of place.
        this.counters.FsIkeInvalidSyntax++;
        return;
      }
      this.onInitRequest(hdr, msg, local, remote, now);
      return;
    }
    // The sender set INITIATOR when it is the original initiator: then we are the responder (our SPI is SPIr).
    const ours = hdr.flags & IkeFlag.INITIATOR ? hdr.spiR : hdr.spiI;
    const sa = this.byOurSpi.get(ours.toString('hex'));
    if (!sa || !(sa.role === 'responder' ? sa.spiI : sa.spiR).equals(hdr.flags & IkeFlag.INITIATOR ? hdr.spiI : hdr.spiR)) {
      this.counters.FsIkeUnknownSpi++;
      return;
    }
    if (hdr.messageId === sa.lastResponseId && sa.lastResponse) {
      // The peer did not get our response (2.1): the same bytes again (also for an SA that
      // just failed authentication, so the peer learns AUTHENTICATION_FAILED).
      this.counters.FsIkeRetransmitsAnswered++;
      this.sendRaw(sa.lastResponse, local, remote);
      return;
    }
    if (sa.state === 'deleted') {
      this.counters.FsIkeUnknownSpi++;
      return;
    }
    if (hdr.messageId !== sa.nextPeerMessageId) {
      this.counters.FsIkeInvalidMessageId++;
      return;
    }
    if (sa.state === 'connecting') {
      this.counters.FsIkeInvalidSyntax++;
      return;
    }
    let payloads: PayloadRepr[];
    try {
      payloads = this.decrypt(sa, hdr, msg);
    } catch (e) {
      if (e instanceof SkIntegrityError) {
        this.counters.FsIkeIntegrityFailures++;
        return;
      }
      // Could not even be decrypted into payloads: drop (2.21.3 allows INVALID_SYNTAX only for
      // messages that pass the integrity check, which is exactly what IkeSyntaxError after it means).
      this.counters.FsIkeInvalidSyntax++;
      if (e instanceof IkeSyntaxError && e.afterIntegrity) {
        this.respond(sa, hdr, [notify(Notify.INVALID_SYNTAX)], local, remote);
      }
      return;
    }
    // Authentic: the peer is alive, and its address is the one to answer (2.11, 2.23).
    sa.lastActivity = now;
    this.floatTo(sa, local, remote);
    const critical = payloads.find((p) => 'unknown' in p && p.critical);
    if (critical) {
      this.counters.FsIkeUnsupportedCritical++;
      const d = Buffer.alloc(1);
      d[0] = critical.type;
      this.respond(sa, hdr, [notify(Notify.UNSUPPORTED_CRITICAL_PAYLOAD, d)], local, remote);
      return;
    }
    switch (hdr.exchange) {
      case Exchange.IKE_AUTH:
        if (sa.role !== 'responder' || sa.state !== 'init') {
          this.respond(sa, hdr, [notify(Notify.INVALID_SYNTAX)], local, remote);
          return;
        }
        this.onAuthRequest(sa, hdr, payloads, local, remote, now);
        return;
      case Exchange.CREATE_CHILD_SA:
        if (sa.state !== 'established') {
          this.respond(sa, hdr, [notify(Notify.TEMPORARY_FAILURE)], local, remote);
          return;
        }
        this.onCreateChildRequest(sa, hdr, payloads, local, remote, now);
        return;
      case Exchange.INFORMATIONAL:
        this.onInformationalRequest(sa, hdr, payloads, local, remote, now);
        return;
      default:
        this.counters.FsIkeInvalidSyntax++;
    }
  }

  /** Decrypts the SK payload of a message of `sa`. */
  private decrypt(sa: IkeSa, hdr: IkeHeader, msg: Buffer): PayloadRepr[] {
    if (hdr.nextPayload !== Payload.SK) throw new IkeSyntaxError(`${exchangeName(hdr.exchange)} without an Encrypted payload`);
    const outer = parsePayloadChain(msg, IKE_HEADER, hdr.length, hdr.nextPayload);
    const sk = outer[outer.length - 1] as PayloadOf<typeof Payload.SK>;
    return openMessage(msg, hdr.length, sk.offset, sk.innerFirst, sa.skSuite, sa.recvKeys);
  }

  /** NAT traversal (2.23): answer where authentic requests come from; port 4500 means UDP encapsulation. */
  private floatTo(sa: IkeSa, local: Endpoint, remote: Endpoint): void {
    if (local.port === 4500) sa.natT = true;
    if (sa.local.addr === local.addr && sa.local.port === local.port && sa.remote.addr === remote.addr && sa.remote.port === remote.port) return;
    sa.local = { ...local };
    sa.remote = { ...remote };
    for (const c of sa.children) {
      c.local = { ...local };
      c.remote = { ...remote };
      c.encap = sa.natT;
    }
  }

  // ---------------------------------------------------------------- IKE_SA_INIT (responder)

  private onInitRequest(hdr: IkeHeader, msg: Buffer, local: Endpoint, remote: Endpoint, now: number): void {
    const cfg = this.config();
    const initKey = `${remote.addr}:${hdr.spiI.toString('hex')}`;
    const existing = this.byInit.get(initKey);
    if (existing && existing.state === 'init') {
      if (existing.initRequest.equals(msg)) {
        this.counters.FsIkeRetransmitsAnswered++;
        this.sendRaw(existing.initResponse, local, remote);
      }
      // A different IKE_SA_INIT with the same SPIi: a retry after COOKIE/INVALID_KE is a new SA; this is not.
      return;
    }
    let payloads: PayloadRepr[];
    try {
      payloads = parsePayloadChain(msg, IKE_HEADER, hdr.length, hdr.nextPayload);
    } catch {
      this.counters.FsIkeInvalidSyntax++;
      this.initError(hdr, Notify.INVALID_SYNTAX, Buffer.alloc(0), local, remote);
      return;
    }
    const sa = findPayload(payloads, Payload.SA);
    const ke = findPayload(payloads, Payload.KE);
    const ni = findPayload(payloads, Payload.NONCE);
    if (!sa || !ke || !ni || ni.data.length < NONCE_MIN || ni.data.length > NONCE_MAX) {
      this.counters.FsIkeInvalidSyntax++;
      this.initError(hdr, Notify.INVALID_SYNTAX, Buffer.alloc(0), local, remote);
      return;
    }
    const critical = payloads.find((p) => 'unknown' in p && p.critical);
    if (critical) {
      this.counters.FsIkeUnsupportedCritical++;
      this.initError(hdr, Notify.UNSUPPORTED_CRITICAL_PAYLOAD, Buffer.from([critical.type]), local, remote);
      return;
    }
    // Cookies (2.6): while many SAs are half open, spend nothing on a peer that cannot
    // show it receives at its address.
    this.rotateCookie(now);
    if (this.halfOpen >= cfg.ike.cookieThreshold) {
      const got = findNotify(payloads, Notify.COOKIE);
      if (!got || !this.cookieValid(got.data, ni.data, remote.addr, hdr.spiI)) {
        if (got) this.counters.FsIkeCookiesRefused++;
        this.counters.FsIkeCookiesSent++;
        this.initError(hdr, Notify.COOKIE, makeCookie(this.cookieVersion, this.cookieSecret, ni.data, remote.addr, hdr.spiI), local, remote);
        return;
      }
    }
    if (this.byOurSpi.size >= cfg.ike.maxIkeSas) {
      this.counters.FsIkeTooManySas++;
      this.initError(hdr, Notify.TEMPORARY_FAILURE, Buffer.alloc(0), local, remote);
      return;
    }
    const sel = selectProposal(sa.proposals, cfg.ike.proposals, ProtocolId.IKE, { keGroup: ke.group });
    if (!sel) {
      this.counters.FsIkeNoProposalChosen++;
      this.initError(hdr, Notify.NO_PROPOSAL_CHOSEN, Buffer.alloc(0), local, remote);
      return;
    }
    if (sel.suite.dh !== ke.group) {
      // 1.2: name the group we want; the initiator retries with it.
      this.counters.FsIkeInvalidKe++;
      const d = Buffer.alloc(2);
      d.writeUInt16BE(sel.suite.dh);
      this.initError(hdr, Notify.INVALID_KE_PAYLOAD, d, local, remote);
      return;
    }
    let dh: KeyExchange, secret: Buffer;
    try {
      dh = new KeyExchange(ke.group);
      secret = dh.sharedSecret(ke.data);
    } catch {
      this.counters.FsIkeInvalidSyntax++;
      this.initError(hdr, Notify.INVALID_SYNTAX, Buffer.alloc(0), local, remote);
      return;
    }
    const spiR = this.newSpi();
    const ike = new IkeSa(this.nextId++, 'responder', Buffer.from(hdr.spiI), spiR, { ...local }, { ...remote }, now);
    ike.suite = sel.suite;
    ike.ni = Buffer.from(ni.data);
    ike.nr = randomBytes(Math.max(NONCE_BYTES, PRFS[sel.suite.prf!]!.size));
    ike.keys = deriveIkeKeys(sel.suite, ike.ni, ike.nr, secret, ike.spiI, ike.spiR);
    ike.initRequest = Buffer.from(msg);
    // NAT detection (2.23): the hashes cover the SPIs as in the request (SPIr zero there).
    const zero = Buffer.alloc(8);
    const srcHashes = payloads.filter(
      (p): p is PayloadOf<typeof Payload.NOTIFY> =>
        p.type === Payload.NOTIFY && (p as PayloadOf<typeof Payload.NOTIFY>).notifyType === Notify.NAT_DETECTION_SOURCE_IP,
    );
    const dstHash = findNotify(payloads, Notify.NAT_DETECTION_DESTINATION_IP);
    if (srcHashes.length) ike.natPeer = !srcHashes.some((n) => n.data.equals(natHash(hdr.spiI, zero, remote)));
    if (dstHash) ike.natLocal = !dstHash.data.equals(natHash(hdr.spiI, zero, local));
    ike.natT = ike.natPeer || ike.natLocal || local.port === 4500;
    const out: PayloadRepr[] = [
      { type: Payload.SA, proposals: [{ num: sel.proposal.num, protocol: ProtocolId.IKE, spi: Buffer.alloc(0), transforms: sel.transforms }] },
      { type: Payload.KE, group: ke.group, data: dh.publicKey },
      { type: Payload.NONCE, data: ike.nr },
    ];
    if (srcHashes.length || dstHash) {
      out.push(notify(Notify.NAT_DETECTION_SOURCE_IP, natHash(ike.spiI, ike.spiR, local)));
      out.push(notify(Notify.NAT_DETECTION_DESTINATION_IP, natHash(ike.spiI, ike.spiR, remote)));
    }
    // Certificates (3.7): name the CAs we accept, so that a client that sends its
    // certificate only when asked (strongSwan's default) sends it.
    if (cfg.trust) out.push({ type: Payload.CERTREQ, encoding: CERT_X509_SIGNATURE, data: Buffer.concat(cfg.trust.keyHashes) });
    const hashes = findNotify(payloads, Notify.SIGNATURE_HASH_ALGORITHMS);
    if (hashes && (cfg.trust || cfg.localCredential)) {
      // RFC 7427 4: answered only when offered; then AUTH may use Digital Signature (14).
      const offered = new Set<number>();
      for (let i = 0; i + 1 < hashes.data.length; i += 2) offered.add(hashes.data.readUInt16BE(i));
      ike.peerDigitalSignature = offered.has(HASH_SHA256);
      out.push(notify(Notify.SIGNATURE_HASH_ALGORITHMS, Buffer.from([0, HASH_SHA256, 0, HASH_SHA384, 0, HASH_SHA512])));
    }
    const resp = emitIkeMessage(
      { spiI: ike.spiI, spiR: ike.spiR, major: 2, minor: 0, exchange: Exchange.IKE_SA_INIT, flags: IkeFlag.RESPONSE, messageId: 0 },
      out,
    );
    ike.initResponse = resp;
    ike.nextPeerMessageId = 1;
    ike.lastResponse = resp;
    ike.lastResponseId = 0;
    this.byOurSpi.set(spiR.toString('hex'), ike);
    this.byInit.set(initKey, ike);
    this.halfOpen++;
    this.host.keysKnown?.(ike);
    this.counters.FsIkeOutResponses++;
    this.sendRaw(resp, local, remote);
  }

  /** An unprotected IKE_SA_INIT answer carrying one notify (2.6, 2.21.1). */
  private initError(hdr: IkeHeader, type: number, data: Buffer, local: Endpoint, remote: Endpoint): void {
    const resp = emitIkeMessage(
      { spiI: hdr.spiI, spiR: Buffer.alloc(8), major: 2, minor: 0, exchange: Exchange.IKE_SA_INIT, flags: IkeFlag.RESPONSE, messageId: hdr.messageId },
      [notify(type, data)],
    );
    this.counters.FsIkeOutResponses++;
    this.sendRaw(resp, local, remote);
  }

  private rotateCookie(now: number): void {
    // A new secret every 5 minutes; cookies of the previous one stay valid (2.6).
    if (now - this.cookieRotatedAt < 300_000) return;
    this.cookieRotatedAt = now;
    this.oldCookieSecret = this.cookieSecret;
    this.cookieSecret = randomBytes(32);
    this.cookieVersion = (this.cookieVersion + 1) & 255;
  }

  private cookieValid(cookie: Buffer, ni: Buffer, addr: number, spiI: Buffer): boolean {
    if (cookie.length !== 17) return false;
    const secret = cookie[0] === this.cookieVersion ? this.cookieSecret : cookie[0] === ((this.cookieVersion + 255) & 255) ? this.oldCookieSecret : null;
    return secret !== null && equalConstantTime(cookie, makeCookie(cookie[0], secret, ni, addr, spiI));
  }

  // ---------------------------------------------------------------- IKE_AUTH (responder)

  private onAuthRequest(sa: IkeSa, hdr: IkeHeader, p: PayloadRepr[], local: Endpoint, remote: Endpoint, now: number): void {
    const cfg = this.config();
    const idi = findPayload(p, Payload.IDi);
    const auth = findPayload(p, Payload.AUTH);
    const remoteText = `${formatIpv4(remote.addr)}:${remote.port}`;
    if (!idi) {
      this.counters.FsIkeInvalidSyntax++;
      this.respond(sa, hdr, [notify(Notify.INVALID_SYNTAX)], local, remote);
      return;
    }
    const claimed = peerIdentity(idi.idType, idi.data);
    const fail = (reason: string) => {
      this.counters.FsIkeAuthFailures++;
      this.respond(sa, hdr, [notify(Notify.AUTHENTICATION_FAILED)], local, remote);
      this.host.event({ kind: 'auth-failed', identity: claimed.value, remote: remoteText, reason });
      // 2.21.2: after AUTHENTICATION_FAILED the IKE SA is not established; it is kept a
      // while only to answer a retransmission of this request.
      this.forget(sa, 'authentication failed', now, false, 10_000);
    };
    if (!auth) {
      fail('no AUTH payload (EAP is not supported)');
      return;
    }
    const prfId = sa.suite.prf!;
    let peer: PeerConfig | null;
    let proven: PeerIdentity = claimed;
    if (auth.method === AuthMethod.SHARED_KEY_MIC) {
      peer = this.peerFor(idi.idType, idi.data, cfg, 'psk');
      if (!peer) {
        fail(`no pre-shared key for identity ${claimed.value}`);
        return;
      }
      const expected = pskAuth(prfId, peer.psk, sa.initRequest, sa.nr, sa.keys.pi, idBody(idi.idType, idi.data));
      if (!equalConstantTime(expected, auth.data)) {
        fail('AUTH does not match the pre-shared key');
        return;
      }
    } else if (isSignatureMethod(auth.method)) {
      // 2.15 with a certificate: the chain to one of our CAs, the identity in the
      // certificate, the signature over the same octets a shared key would MAC.
      if (!cfg.trust) {
        fail(`certificate authentication (method ${auth.method}) but no ca: is configured`);
        return;
      }
      const certs = p
        .filter((x): x is PayloadOf<typeof Payload.CERT> => x.type === Payload.CERT && (x as PayloadOf<typeof Payload.CERT>).encoding === CERT_X509_SIGNATURE)
        .map((x) => x.data);
      if (certs.length === 0) {
        fail('no X.509 certificate in IKE_AUTH');
        return;
      }
      const why = checkChain(certs[0]!, certs.slice(1), cfg.trust, this.wallClock());
      if (why) {
        fail(why);
        return;
      }
      const leaf = new X509Certificate(certs[0]!);
      if (!identityInCert(leaf, idi.idType, idi.data)) {
        fail(`identity ${claimed.value} is not in its certificate (${subjectText(leaf)})`);
        return;
      }
      if (idi.idType === IdType.DER_ASN1_DN) proven = { type: idi.idType, value: subjectText(leaf) };
      peer = this.peerFor(idi.idType, idi.data, cfg, 'pubkey', proven.value);
      if (!peer) {
        fail(`no pubkey peer configured for ${proven.value}`);
        return;
      }
      const bad = verifyAuth(auth.method, auth.data, leaf.publicKey, signedOctets(prfId, sa.initRequest, sa.nr, sa.keys.pi, idBody(idi.idType, idi.data)));
      if (bad) {
        fail(bad);
        return;
      }
    } else {
      fail(`authentication method ${auth.method} is not supported (2: shared key, 1/9/10/11/14: signatures)`);
      return;
    }
    const myId = this.localId(cfg, local);
    let myAuth: PayloadRepr[];
    if (auth.method !== AuthMethod.SHARED_KEY_MIC && cfg.localCredential) {
      const octets = signedOctets(prfId, sa.initResponse, sa.ni, sa.keys.pr, idBody(myId.idType, myId.data));
      const sig = signAuth(cfg.localCredential.key, octets, sa.peerDigitalSignature);
      myAuth = [
        { type: Payload.CERT, encoding: CERT_X509_SIGNATURE, data: cfg.localCredential.der },
        { type: Payload.AUTH, method: sig.method, data: sig.data },
      ];
    } else if (peer.psk.length > 0) {
      myAuth = [
        {
          type: Payload.AUTH,
          method: AuthMethod.SHARED_KEY_MIC,
          data: pskAuth(prfId, peer.psk, sa.initResponse, sa.ni, sa.keys.pr, idBody(myId.idType, myId.data)),
        },
      ];
    } else {
      fail('the peer authenticated with a certificate but we have no local.cert to answer with');
      return;
    }
    const claimedIdentity = proven;

    // Authenticated.
    sa.identity = claimedIdentity;
    sa.peer = peer;
    sa.state = 'established';
    sa.establishedAt = now;
    sa.expiresAt = now + cfg.ike.lifetimeMs;
    this.halfOpen--;
    this.byInit.delete(`${sa.remote.addr}:${sa.spiI.toString('hex')}`);
    this.counters.FsIkeSasEstablished++;
    if (findNotify(p, Notify.INITIAL_CONTACT)) {
      // 2.4: the peer has no state left from before: every other IKE SA of this identity goes.
      for (const other of this.all()) {
        if (
          other !== sa &&
          other.identity &&
          other.identity.type === claimedIdentity.type &&
          other.identity.value === claimedIdentity.value &&
          other.state !== 'deleted'
        ) {
          this.counters.FsIkeInitialContacts++;
          this.forget(other, `replaced: ${claimedIdentity.value} connected afresh (INITIAL_CONTACT)`, now, true);
        }
      }
    }
    const out: PayloadRepr[] = [{ type: Payload.IDr, idType: myId.idType, data: myId.data }, ...myAuth];
    this.host.event({ kind: 'ike-sa-up', ike: sa });
    let child: ChildSa | null = null;
    if (findPayload(p, Payload.SA)) {
      const r = this.negotiateChild(sa, p, sa.ni, sa.nr, now, { ignoreDh: true });
      out.push(...r.payloads);
      child = r.child;
    }
    this.respond(sa, hdr, out, local, remote);
    if (child) this.host.event({ kind: 'child-sa-up', child, ike: sa });
  }

  /** The peer entry for an identity and method: an exact identity first, then %any. `text`: a certificate subject, for DN identities. */
  private peerFor(idType: number, data: Buffer, cfg: IpsecConfig, auth: 'psk' | 'pubkey', text?: string): PeerConfig | null {
    const of = cfg.peers.filter((x) => x.auth === auth);
    return (
      of.find((x) => x.id !== ANY_ID && (identityMatches(x.id, idType, data) || (text !== undefined && x.id === text))) ??
      of.find((x) => x.id === ANY_ID) ??
      null
    );
  }

  /** Our IDr: the configured identity, else our certificate's subject, else the address the peer sent to. */
  private localId(cfg: IpsecConfig, local: Endpoint): { idType: number; data: Buffer } {
    const cred = cfg.localCredential;
    if (cfg.localId && cred && cfg.localId.includes('=')) return { idType: IdType.DER_ASN1_DN, data: cred.subjectDer };
    if (cfg.localId) return parseIdentity(cfg.localId);
    if (cred) return { idType: IdType.DER_ASN1_DN, data: cred.subjectDer };
    const b = Buffer.alloc(4);
    b.writeUInt32BE(local.addr >>> 0);
    return { idType: IdType.IPV4_ADDR, data: b };
  }

  /**
   * Negotiates a child SA from SA/TSi/TSr/notifies of a request and installs it.
   * Returns the payloads to answer with (the SA or an error notify).
   */
  private negotiateChild(
    ike: IkeSa,
    p: PayloadRepr[],
    ni: Buffer,
    nr: Buffer,
    now: number,
    o: { ignoreDh: boolean; secret?: Buffer; keGroup?: number; rekeyOf?: ChildSa },
  ): { payloads: PayloadRepr[]; child: ChildSa | null } {
    const cfg = this.config();
    const sa = findPayload(p, Payload.SA)!;
    const tsi = findPayload(p, Payload.TSi),
      tsr = findPayload(p, Payload.TSr);
    if (!tsi || !tsr) {
      this.counters.FsIkeInvalidSyntax++;
      return { payloads: [notify(Notify.INVALID_SYNTAX)], child: null };
    }
    const specs = ike.peer?.espProposals ?? cfg.esp.proposals;
    const sel = selectProposal(sa.proposals, specs, ProtocolId.ESP, { ignoreDh: o.ignoreDh, keGroup: o.keGroup });
    if (!sel || sel.proposal.spi.length !== 4) {
      this.counters.FsIkeNoProposalChosen++;
      return { payloads: [notify(Notify.NO_PROPOSAL_CHOSEN)], child: null };
    }
    if (!o.ignoreDh && sel.suite.dh !== 0 && sel.suite.dh !== o.keGroup) {
      this.counters.FsIkeInvalidKe++;
      const d = Buffer.alloc(2);
      d.writeUInt16BE(sel.suite.dh);
      return { payloads: [notify(Notify.INVALID_KE_PAYLOAD, d)], child: null };
    }
    const transport = !!findNotify(p, Notify.USE_TRANSPORT_MODE) && cfg.esp.transportMode === 'accept';
    let allowedRemote: Selector[], allowedLocal: Selector[];
    if (transport) {
      allowedRemote = [hostSelector(ike.remote.addr)];
      allowedLocal = [hostSelector(ike.local.addr)];
    } else {
      allowedRemote = ike.peer && ike.peer.remoteTs !== 'dynamic' ? ike.peer.remoteTs : [hostSelector(ike.remote.addr)];
      allowedLocal = ike.peer?.localTs ?? [ANY_SELECTOR];
    }
    const remoteTs = narrow(tsi.selectors, allowedRemote);
    const localTs = narrow(tsr.selectors, allowedLocal);
    if (remoteTs.length === 0 || localTs.length === 0) {
      this.counters.FsIkeTsUnacceptable++;
      return { payloads: [notify(Notify.TS_UNACCEPTABLE)], child: null };
    }
    const useSecret = sel.suite.dh !== 0 ? o.secret : undefined;
    const keys = deriveChildKeys(ike.suite.prf!, ike.keys.d, sel.suite, ni, nr, useSecret);
    const child = this.install(
      ike,
      sel.suite,
      sel.proposal.spi.readUInt32BE(0),
      ike.role === 'responder' ? keys.encI : keys.encR,
      ike.role === 'responder' ? keys.integI : keys.integR,
      ike.role === 'responder' ? keys.encR : keys.encI,
      ike.role === 'responder' ? keys.integR : keys.integI,
      transport,
      localTs,
      remoteTs,
      now,
      o.rekeyOf,
      undefined,
      // As the responder of a rekey, keep sending on the old SA until the new one carries traffic (2.8).
      o.rekeyOf === undefined,
    );
    const out: PayloadRepr[] = [
      { type: Payload.SA, proposals: [{ num: sel.proposal.num, protocol: ProtocolId.ESP, spi: u32(child.inbound.spi), transforms: sel.transforms }] },
      { type: Payload.TSi, selectors: remoteTs.map(tsFromSelector) },
      { type: Payload.TSr, selectors: localTs.map(tsFromSelector) },
    ];
    if (transport) out.push(notify(Notify.USE_TRANSPORT_MODE));
    return { payloads: out, child };
  }

  private install(
    ike: IkeSa,
    suite: ChosenSuite,
    peerSpi: number,
    encIn: Buffer,
    integIn: Buffer,
    encOut: Buffer,
    integOut: Buffer,
    transport: boolean,
    localTs: Selector[],
    remoteTs: Selector[],
    now: number,
    rekeyOf: ChildSa | undefined,
    inSpi: number | undefined,
    outboundActive = true,
  ): ChildSa {
    const cfg = this.config();
    const spiIn = inSpi ?? this.host.sad.allocateSpi();
    const base = { encr: suite.encr, keyBits: suite.keyBits, integ: suite.integ, esn: suite.esn };
    const inbound = new EspSa(spiIn, 'in', { ...base, encKey: encIn, integKey: integIn }, cfg.esp.replayWindow);
    const outbound = new EspSa(peerSpi, 'out', { ...base, encKey: encOut, integKey: integOut });
    inbound.lastUsed = now;
    const child = this.host.sad.install(
      {
        name: rekeyOf?.name ?? 'child',
        ikeSaId: ike.id,
        identity: ike.identity ?? { type: 0, value: '' },
        mode: transport ? 'transport' : 'tunnel',
        encap: ike.natT,
        local: { ...ike.local },
        remote: { ...ike.remote },
        localTs,
        remoteTs,
        inbound,
        outbound,
        suite,
        createdAt: now,
        expiresAt: now + cfg.esp.lifetimeMs,
        rekeyOf: rekeyOf?.id,
      },
      outboundActive,
    );
    ike.children.add(child);
    this.counters.FsChildSasInstalled++;
    this.host.keysKnown?.(ike, child);
    return child;
  }

  // ---------------------------------------------------------------- CREATE_CHILD_SA (responder)

  private onCreateChildRequest(sa: IkeSa, hdr: IkeHeader, p: PayloadRepr[], local: Endpoint, remote: Endpoint, now: number): void {
    const saP = findPayload(p, Payload.SA);
    const nonce = findPayload(p, Payload.NONCE);
    const ke = findPayload(p, Payload.KE);
    if (!saP || !nonce || nonce.data.length < NONCE_MIN || nonce.data.length > NONCE_MAX) {
      this.counters.FsIkeInvalidSyntax++;
      this.respond(sa, hdr, [notify(Notify.INVALID_SYNTAX)], local, remote);
      return;
    }
    const nr = randomBytes(NONCE_BYTES);
    const isIke = saP.proposals.some((x) => x.protocol === ProtocolId.IKE);
    let dh: KeyExchange | null = null,
      secret: Buffer | undefined;
    const doKe = (group: number): boolean => {
      if (!ke) return true;
      if (ke.group !== group) return true;
      try {
        dh = new KeyExchange(ke.group);
        secret = dh.sharedSecret(ke.data);
        return true;
      } catch {
        return false;
      }
    };
    if (isIke) {
      // 2.18: rekey of this IKE SA; a KE is mandatory.
      const cfg = this.config();
      const sel = selectProposal(saP.proposals, cfg.ike.proposals, ProtocolId.IKE, { keGroup: ke?.group });
      if (!sel || sel.proposal.spi.length !== 8) {
        this.counters.FsIkeNoProposalChosen++;
        this.respond(sa, hdr, [notify(Notify.NO_PROPOSAL_CHOSEN)], local, remote);
        return;
      }
      if (!ke || ke.group !== sel.suite.dh) {
        this.counters.FsIkeInvalidKe++;
        const d = Buffer.alloc(2);
        d.writeUInt16BE(sel.suite.dh);
        this.respond(sa, hdr, [notify(Notify.INVALID_KE_PAYLOAD, d)], local, remote);
        return;
      }
      if (!doKe(ke.group) || !secret) {
        this.counters.FsIkeInvalidSyntax++;
        this.respond(sa, hdr, [notify(Notify.INVALID_SYNTAX)], local, remote);
        return;
      }
      // 2.18: the peer initiated the rekey, so it is the initiator of the new SA: its SPI
      // and nonce come first, and we are the responder whatever we were before.
      const newSpi = this.newSpi();
      const peerSpi = Buffer.from(sel.proposal.spi);
      const fresh = new IkeSa(this.nextId++, 'responder', peerSpi, newSpi, { ...sa.local }, { ...sa.remote }, now);
      fresh.suite = sel.suite;
      fresh.ni = Buffer.from(nonce.data);
      fresh.nr = nr;
      fresh.keys = deriveIkeKeys(sel.suite, fresh.ni, fresh.nr, secret, peerSpi, newSpi, sa.keys.d);
      this.adoptRekey(sa, fresh, now);
      this.respond(
        sa,
        hdr,
        [
          { type: Payload.SA, proposals: [{ num: sel.proposal.num, protocol: ProtocolId.IKE, spi: newSpi, transforms: sel.transforms }] },
          { type: Payload.NONCE, data: nr },
          { type: Payload.KE, group: ke.group, data: (dh as KeyExchange | null)!.publicKey },
        ],
        local,
        remote,
      );
      return;
    }
    const rekey = findNotify(p, Notify.REKEY_SA);
    let old: ChildSa | undefined;
    if (rekey) {
      // 1.3.3: the SPI the exchange initiator receives on, i.e. our outbound SPI.
      const spi = rekey.spi.length === 4 ? rekey.spi.readUInt32BE(0) : -1;
      old = [...sa.children].find((c) => c.outbound.spi === spi && c.state === 'installed');
      if (!old) {
        this.respond(sa, hdr, [notify(Notify.CHILD_SA_NOT_FOUND, Buffer.alloc(0), ProtocolId.ESP, rekey.spi)], local, remote);
        return;
      }
    }
    if (ke && !doKe(ke.group)) {
      this.counters.FsIkeInvalidSyntax++;
      this.respond(sa, hdr, [notify(Notify.INVALID_SYNTAX)], local, remote);
      return;
    }
    const r = this.negotiateChild(sa, p, nonce.data, nr, now, { ignoreDh: false, secret, keGroup: ke?.group, rekeyOf: old });
    const out: PayloadRepr[] = r.child ? [r.payloads[0]!, { type: Payload.NONCE, data: nr }] : r.payloads;
    if (r.child && dh && secret && r.child.suite.dh !== 0)
      out.push({ type: Payload.KE, group: (dh as KeyExchange).group, data: (dh as KeyExchange).publicKey });
    if (r.child) out.push(...r.payloads.slice(1));
    this.respond(sa, hdr, out, local, remote);
    if (r.child) {
      if (old) {
        old.state = 'rekeyed';
        this.counters.FsChildSasRekeyed++;
        this.host.event({ kind: 'child-sa-rekeyed', old, child: r.child, ike: sa });
      } else {
        this.host.event({ kind: 'child-sa-up', child: r.child, ike: sa });
      }
    }
  }

  /** `fresh` takes over from `old` (2.18): children move, old stays until deleted. */
  private adoptRekey(old: IkeSa, fresh: IkeSa, now: number): void {
    const cfg = this.config();
    fresh.identity = old.identity;
    fresh.peer = old.peer;
    fresh.state = 'established';
    fresh.establishedAt = now;
    fresh.expiresAt = now + cfg.ike.lifetimeMs;
    fresh.natT = old.natT;
    fresh.natPeer = old.natPeer;
    fresh.natLocal = old.natLocal;
    fresh.rekeyOf = old.id;
    for (const c of old.children) {
      c.ikeSaId = fresh.id;
      fresh.children.add(c);
    }
    old.children.clear();
    old.state = 'rekeyed';
    old.endReason = `rekeyed into IKE SA ${fresh.id}`;
    this.byOurSpi.set(fresh.ourSpi.toString('hex'), fresh);
    this.counters.FsIkeSasRekeyed++;
    this.host.keysKnown?.(fresh);
    this.host.event({ kind: 'ike-sa-rekeyed', old, ike: fresh });
  }

  // ---------------------------------------------------------------- INFORMATIONAL (responder)

  private onInformationalRequest(sa: IkeSa, hdr: IkeHeader, p: PayloadRepr[], local: Endpoint, remote: Endpoint, now: number): void {
    const deletes = p.filter((x): x is PayloadOf<typeof Payload.DELETE> => x.type === Payload.DELETE);
    if (deletes.some((d) => d.protocol === ProtocolId.IKE)) {
      // 1.4.1: the answer is empty; the SA and its children are gone.
      this.respond(sa, hdr, [], local, remote);
      this.forget(sa, sa.state === 'rekeyed' ? sa.endReason : 'deleted by the peer', now, true);
      return;
    }
    const ours: Buffer[] = [];
    for (const d of deletes) {
      if (d.protocol !== ProtocolId.ESP || d.spiSize !== 4) continue;
      for (const s of d.spis) {
        const spi = s.readUInt32BE(0);
        const c = [...sa.children].find((x) => x.outbound.spi === spi);
        if (!c) continue;
        // Answer with our inbound SPI of the pair (1.4.1), unless we deleted it already (simultaneous delete).
        ours.push(u32(c.inbound.spi));
        this.removeChild(sa, c, 'deleted by the peer');
      }
    }
    this.respond(sa, hdr, ours.length ? [{ type: Payload.DELETE, protocol: ProtocolId.ESP, spiSize: 4, spis: ours }] : [], local, remote);
  }

  // ================================================================ our requests, responses

  private onResponse(hdr: IkeHeader, msg: Buffer, local: Endpoint, remote: Endpoint, now: number): void {
    this.counters.FsIkeInResponses++;
    const ours = hdr.flags & IkeFlag.INITIATOR ? hdr.spiR : hdr.spiI;
    const sa = this.byOurSpi.get(ours.toString('hex'));
    if (!sa || sa.state === 'deleted') {
      this.counters.FsIkeUnknownSpi++;
      return;
    }
    if (hdr.exchange === Exchange.IKE_SA_INIT) {
      if (sa.role === 'initiator' && sa.state === 'connecting') this.onInitResponse(sa, hdr, msg, now);
      return;
    }
    const pend = sa.pending;
    if (!pend || pend.messageId !== hdr.messageId) {
      this.counters.FsIkeInvalidMessageId++;
      return;
    }
    let payloads: PayloadRepr[];
    try {
      payloads = this.decrypt(sa, hdr, msg);
    } catch (e) {
      if (e instanceof SkIntegrityError) this.counters.FsIkeIntegrityFailures++;
      else this.counters.FsIkeInvalidSyntax++;
      return;
    }
    sa.lastActivity = now;
    this.floatTo(sa, local, remote);
    sa.pending = null;
    pend.onResponse(payloads, now);
    this.sendNext(sa, now);
  }

  /** Queues a request of ours on `sa`; sent when the window is free. */
  request(sa: IkeSa, r: QueuedRequest, now: number): void {
    sa.queue.push(r);
    this.sendNext(sa, now);
  }

  private sendNext(sa: IkeSa, now: number): void {
    if (sa.pending || sa.queue.length === 0 || sa.state === 'deleted') return;
    const r = sa.queue.shift()!;
    const flags = sa.role === 'initiator' ? IkeFlag.INITIATOR : 0;
    const messageId = sa.nextMessageId++;
    const packet = sealMessage(
      { spiI: sa.spiI, spiR: sa.spiR, major: 2, minor: 0, exchange: r.exchange, flags, messageId },
      r.payloads,
      sa.skSuite,
      sa.sendKeys,
    );
    sa.pending = {
      messageId,
      exchange: r.exchange,
      packet,
      sentAt: now,
      tries: 1,
      retransmitAt: now + this.config().ike.retransmitMs,
      onResponse: r.onResponse,
      onTimeout: r.onTimeout,
      what: r.what,
    };
    this.counters.FsIkeOutRequests++;
    this.sendRaw(packet, sa.local, sa.remote);
  }

  /** Sends a response to the peer's request and keeps it for retransmissions. */
  private respond(sa: IkeSa, hdr: IkeHeader, payloads: PayloadRepr[], local: Endpoint, remote: Endpoint): void {
    const flags = IkeFlag.RESPONSE | (sa.role === 'initiator' ? IkeFlag.INITIATOR : 0);
    const resp = sealMessage(
      { spiI: sa.spiI, spiR: sa.spiR, major: 2, minor: 0, exchange: hdr.exchange, flags, messageId: hdr.messageId },
      payloads,
      sa.skSuite,
      sa.sendKeys,
    );
    sa.lastResponse = resp;
    sa.lastResponseId = hdr.messageId;
    sa.nextPeerMessageId = hdr.messageId + 1;
    this.counters.FsIkeOutResponses++;
    this.sendRaw(resp, local, remote);
  }

  private sendRaw(msg: Buffer, local: Endpoint, remote: Endpoint): void {
    this.host.send(msg, local, remote);
  }

  // ================================================================ lifetimes, liveness, deletion

  /** Runs every few hundred ms: retransmissions, half-open expiry, lifetimes, liveness checks. */
  tick(now: number): void {
    const cfg = this.config();
    this.rotateCookie(now);
    for (const sa of this.all()) {
      if (sa.state === 'deleted') {
        if (now >= sa.lingerUntil) this.drop(sa);
        continue;
      }
      const p = sa.pending;
      if (p && now >= p.retransmitAt) {
        if (p.tries >= cfg.ike.retransmitTries) {
          sa.pending = null;
          this.counters.FsIkeDeadPeers++;
          p.onTimeout?.(now);
          this.forget(sa, `peer did not answer ${p.what} (${p.tries} tries)`, now, true);
          continue;
        }
        p.tries++;
        p.retransmitAt = now + cfg.ike.retransmitMs * 2 ** (p.tries - 1);
        this.counters.FsIkeRetransmits++;
        this.sendRaw(p.packet, sa.local, sa.remote);
      }
      if ((sa.state === 'init' || sa.state === 'connecting') && now - sa.createdAt >= cfg.ike.halfOpenTimeoutMs) {
        this.counters.FsIkeHalfOpenExpired++;
        this.forget(sa, 'not authenticated in time (half-open)', now, false);
        continue;
      }
      if (sa.state === 'rekeyed' && now - sa.lastActivity >= cfg.ike.halfOpenTimeoutMs && !sa.pending) {
        // The peer rekeyed but never deleted the old SA: drop it quietly.
        this.forget(sa, sa.endReason || 'rekeyed', now, false);
        continue;
      }
      if (sa.state !== 'established') continue;
      for (const c of [...sa.children]) {
        if (now >= c.expiresAt) {
          this.counters.FsChildSasExpired++;
          this.deleteChild(sa, c, 'lifetime expired', now);
        }
      }
      if (now >= sa.expiresAt) {
        this.deleteIke(sa, 'lifetime expired', now);
        continue;
      }
      if (cfg.ike.dpdMs > 0 && !sa.pending && sa.queue.length === 0) {
        let last = sa.lastActivity;
        for (const c of sa.children) if (c.inbound.lastUsed > last) last = c.inbound.lastUsed;
        if (now - last >= cfg.ike.dpdMs) {
          // 1.4: an empty INFORMATIONAL request is the liveness check.
          this.counters.FsIkeDpdSent++;
          this.request(sa, { exchange: Exchange.INFORMATIONAL, payloads: [], what: 'liveness check', onResponse: () => {} }, now);
        }
      }
    }
  }

  /** Deletes a child SA with the peer (INFORMATIONAL Delete, 1.4.1) and locally. */
  deleteChild(sa: IkeSa, c: ChildSa, reason: string, now: number): void {
    const spi = u32(c.inbound.spi);
    this.removeChild(sa, c, reason);
    this.request(
      sa,
      {
        exchange: Exchange.INFORMATIONAL,
        payloads: [{ type: Payload.DELETE, protocol: ProtocolId.ESP, spiSize: 4, spis: [spi] }],
        what: `delete of child ${hex32(c.inbound.spi)}`,
        onResponse: () => {},
      },
      now,
    );
  }

  /** Deletes an IKE SA with the peer, and its children with it. */
  deleteIke(sa: IkeSa, reason: string, now: number): void {
    for (const c of [...sa.children]) this.removeChild(sa, c, reason);
    sa.endReason = reason;
    this.request(
      sa,
      {
        exchange: Exchange.INFORMATIONAL,
        payloads: [{ type: Payload.DELETE, protocol: ProtocolId.IKE, spiSize: 0, spis: [] }],
        what: 'delete of the IKE SA',
        onResponse: (_p, t) => this.forget(sa, reason, t, true),
        onTimeout: (t) => this.forget(sa, reason, t, true),
      },
      now,
    );
  }

  private removeChild(sa: IkeSa, c: ChildSa, reason: string): void {
    if (c.state === 'deleted') return;
    sa.children.delete(c);
    this.host.sad.remove(c);
    this.counters.FsChildSasDeleted++;
    this.host.event({ kind: 'child-sa-down', child: c, reason });
  }

  /**
   * Removes an IKE SA locally (no message), and its children. `announce`: emit
   * ike-sa-down (for SAs that were up). `lingerMs`: keep it that long to answer a
   * retransmitted request with the response kept (a failed IKE_AUTH).
   */
  private forget(sa: IkeSa, reason: string, now: number, announce: boolean, lingerMs = 0): void {
    if (sa.state === 'deleted') {
      if (lingerMs === 0) this.drop(sa);
      return;
    }
    const wasUp = sa.establishedAt > 0;
    if (sa.state === 'init' && sa.role === 'responder') this.halfOpen = Math.max(0, this.halfOpen - 1);
    for (const c of [...sa.children]) this.removeChild(sa, c, reason);
    const key = `${sa.remote.addr}:${sa.spiI.toString('hex')}`;
    if (this.byInit.get(key) === sa) this.byInit.delete(key);
    sa.state = 'deleted';
    sa.endReason = sa.endReason || reason;
    sa.pending = null;
    sa.queue.length = 0;
    if (wasUp) this.counters.FsIkeSasDeleted++;
    if (lingerMs > 0) sa.lingerUntil = now + lingerMs;
    else this.drop(sa);
    if (announce && wasUp) this.host.event({ kind: 'ike-sa-down', ike: sa, reason });
  }

  private drop(sa: IkeSa): void {
    if (this.byOurSpi.get(sa.ourSpi.toString('hex')) === sa) this.byOurSpi.delete(sa.ourSpi.toString('hex'));
  }

  /** Removes everything without telling peers (shutdown). */
  clear(): void {
    for (const sa of this.all()) {
      for (const c of [...sa.children]) this.host.sad.remove(c);
      sa.children.clear();
      sa.state = 'deleted';
    }
    this.byOurSpi.clear();
    this.byInit.clear();
    this.halfOpen = 0;
  }

  private newSpi(): Buffer {
    for (;;) {
      const s = randomBytes(8);
      if (!isZero(s) && !this.byOurSpi.has(s.toString('hex'))) return s;
    }
  }

  // ================================================================ initiator

  /** Starts IKE_SA_INIT towards a responder; the SA comes up through IKE_AUTH on its own. */
  initiate(o: InitiateOptions, now: number): IkeSa {
    const cfg = this.config();
    const ike = new IkeSa(this.nextId++, 'initiator', this.newSpi(), Buffer.alloc(8), { ...o.local }, { ...o.remote }, now);
    this.byOurSpi.set(ike.spiI.toString('hex'), ike);
    const proposals = o.ikeProposals ?? cfg.ike.proposals;
    const group = o.keGroup ?? proposals[0]!.dh[0]!;
    (ike as IkeSa & { initOpts: InitiateOptions }).initOpts = o;
    this.sendInit(ike, group, now);
    return ike;
  }

  private sendInit(ike: IkeSa, group: number, now: number): void {
    const o = (ike as IkeSa & { initOpts: InitiateOptions }).initOpts;
    const cfg = this.config();
    ike.ke = new KeyExchange(group);
    // The nonce stays the same across COOKIE and INVALID_KE retries (2.6: "all other
    // payloads the same"; the cookie covers Ni).
    if (ike.ni.length === 0) ike.ni = randomBytes(NONCE_BYTES);
    const payloads: PayloadRepr[] = [];
    if (ike.cookie) payloads.push(notify(Notify.COOKIE, ike.cookie));
    payloads.push(
      { type: Payload.SA, proposals: proposalsFromSpecs(o.ikeProposals ?? cfg.ike.proposals, ProtocolId.IKE, Buffer.alloc(0)) },
      { type: Payload.KE, group, data: ike.ke.publicKey },
      { type: Payload.NONCE, data: ike.ni },
      notify(Notify.NAT_DETECTION_SOURCE_IP, natHash(ike.spiI, Buffer.alloc(8), ike.local)),
      notify(Notify.NAT_DETECTION_DESTINATION_IP, natHash(ike.spiI, Buffer.alloc(8), ike.remote)),
    );
    if (o.credential || o.trust) payloads.push(notify(Notify.SIGNATURE_HASH_ALGORITHMS, Buffer.from([0, HASH_SHA256, 0, HASH_SHA384, 0, HASH_SHA512])));
    const msg = emitIkeMessage(
      { spiI: ike.spiI, spiR: Buffer.alloc(8), major: 2, minor: 0, exchange: Exchange.IKE_SA_INIT, flags: IkeFlag.INITIATOR, messageId: 0 },
      payloads,
    );
    ike.initRequest = msg;
    ike.nextMessageId = 1;
    ike.pending = {
      messageId: 0,
      exchange: Exchange.IKE_SA_INIT,
      packet: msg,
      sentAt: now,
      tries: 1,
      retransmitAt: now + cfg.ike.retransmitMs,
      what: 'IKE_SA_INIT',
      onResponse: () => {},
      onTimeout: () => o.onFailed?.('no answer to IKE_SA_INIT'),
    };
    this.counters.FsIkeOutRequests++;
    this.sendRaw(msg, ike.local, ike.remote);
  }

  private onInitResponse(ike: IkeSa, hdr: IkeHeader, msg: Buffer, now: number): void {
    const o = (ike as IkeSa & { initOpts: InitiateOptions }).initOpts;
    let p: PayloadRepr[];
    try {
      p = parsePayloadChain(msg, IKE_HEADER, hdr.length, hdr.nextPayload);
    } catch {
      this.counters.FsIkeInvalidSyntax++;
      return;
    }
    const cookie = findNotify(p, Notify.COOKIE);
    const invalidKe = findNotify(p, Notify.INVALID_KE_PAYLOAD);
    if (cookie || (invalidKe && invalidKe.data.length === 2)) {
      ike.pending = null;
      // A few retries at most: a responder that keeps asking is not going to let us in.
      if (++ike.initRetries > 4) {
        this.forget(ike, 'too many COOKIE/INVALID_KE_PAYLOAD retries', now, false);
        o.onFailed?.('too many IKE_SA_INIT retries');
        return;
      }
      if (cookie) ike.cookie = Buffer.from(cookie.data);
      this.sendInit(ike, invalidKe ? invalidKe.data.readUInt16BE(0) : ike.ke!.group, now);
      return;
    }
    const err = p.find((x) => x.type === Payload.NOTIFY && (x as PayloadOf<typeof Payload.NOTIFY>).notifyType < 16384) as
      PayloadOf<typeof Payload.NOTIFY> | undefined;
    if (err) {
      ike.pending = null;
      this.forget(ike, notifyName(err.notifyType), now, false);
      o.onFailed?.(notifyName(err.notifyType));
      return;
    }
    const saP = findPayload(p, Payload.SA),
      ke = findPayload(p, Payload.KE),
      nr = findPayload(p, Payload.NONCE);
    if (!saP || !ke || !nr || saP.proposals.length !== 1) {
      this.counters.FsIkeInvalidSyntax++;
      return;
    }
    const cfg = this.config();
    const sel = selectProposal(saP.proposals, o.ikeProposals ?? cfg.ike.proposals, ProtocolId.IKE, { keGroup: ke.group });
    if (!sel || ke.group !== ike.ke!.group) {
      ike.pending = null;
      this.forget(ike, 'responder chose a proposal we did not offer', now, false);
      o.onFailed?.('bad proposal');
      return;
    }
    let secret: Buffer;
    try {
      secret = ike.ke!.sharedSecret(ke.data);
    } catch {
      ike.pending = null;
      this.forget(ike, 'bad KE', now, false);
      o.onFailed?.('bad KE');
      return;
    }
    ike.pending = null;
    ike.spiR = Buffer.from(hdr.spiR);
    ike.suite = sel.suite;
    ike.nr = Buffer.from(nr.data);
    ike.keys = deriveIkeKeys(sel.suite, ike.ni, ike.nr, secret, ike.spiI, ike.spiR);
    ike.initResponse = Buffer.from(msg);
    ike.state = 'init';
    const natD = findNotify(p, Notify.NAT_DETECTION_SOURCE_IP);
    if (natD) ike.natPeer = !natD.data.equals(natHash(ike.spiI, ike.spiR, ike.remote));
    const natL = findNotify(p, Notify.NAT_DETECTION_DESTINATION_IP);
    if (natL) ike.natLocal = !natL.data.equals(natHash(ike.spiI, ike.spiR, ike.local));
    if (ike.natPeer || ike.natLocal) {
      // 2.23: behind a NAT, continue on port 4500.
      ike.natT = true;
      ike.local = { ...ike.local, port: 4500 };
      ike.remote = { ...ike.remote, port: 4500 };
    }
    ike.nextPeerMessageId = 0;
    ike.peerDigitalSignature = !!findNotify(p, Notify.SIGNATURE_HASH_ALGORITHMS);
    this.host.keysKnown?.(ike);
    // IKE_AUTH with the first child.
    const myId = o.credential && o.id.includes('=') ? { idType: IdType.DER_ASN1_DN, data: o.credential.subjectDer } : parseIdentity(o.id);
    const childSpi = this.host.sad.allocateSpi();
    const payloads: PayloadRepr[] = [{ type: Payload.IDi, idType: myId.idType, data: myId.data }];
    if (o.credential) payloads.push({ type: Payload.CERT, encoding: CERT_X509_SIGNATURE, data: o.credential.der });
    if (o.initialContact) payloads.push(notify(Notify.INITIAL_CONTACT));
    if (o.trust) payloads.push({ type: Payload.CERTREQ, encoding: CERT_X509_SIGNATURE, data: Buffer.concat(o.trust.keyHashes) });
    if (o.remoteId) {
      const r = parseIdentity(o.remoteId);
      payloads.push({ type: Payload.IDr, idType: r.idType, data: r.data });
    }
    if (o.credential) {
      const sig = signAuth(
        o.credential.key,
        signedOctets(sel.suite.prf!, ike.initRequest, ike.nr, ike.keys.pi, idBody(myId.idType, myId.data)),
        ike.peerDigitalSignature,
      );
      payloads.push({ type: Payload.AUTH, method: sig.method, data: sig.data });
    } else {
      payloads.push({
        type: Payload.AUTH,
        method: AuthMethod.SHARED_KEY_MIC,
        data: pskAuth(sel.suite.prf!, o.psk, ike.initRequest, ike.nr, ike.keys.pi, idBody(myId.idType, myId.data)),
      });
    }
    if (o.transport) payloads.push(notify(Notify.USE_TRANSPORT_MODE));
    payloads.push(
      { type: Payload.SA, proposals: proposalsFromSpecs(o.espProposals ?? cfg.esp.proposals, ProtocolId.ESP, u32(childSpi), false) },
      { type: Payload.TSi, selectors: o.localTs.map(tsFromSelector) },
      { type: Payload.TSr, selectors: o.remoteTs.map(tsFromSelector) },
    );
    ike.peer = {
      id: o.remoteId ?? ANY_ID,
      auth: o.trust ? 'pubkey' : 'psk',
      psk: o.psk,
      localTs: o.localTs,
      remoteTs: o.remoteTs,
      espProposals: o.espProposals,
    };
    this.request(
      ike,
      {
        exchange: Exchange.IKE_AUTH,
        payloads,
        what: 'IKE_AUTH',
        onResponse: (rp, t) => this.onAuthResponse(ike, rp, childSpi, o, t),
        onTimeout: () => {
          this.host.sad.releaseSpi(childSpi);
          o.onFailed?.('no answer to IKE_AUTH');
        },
      },
      now,
    );
  }

  private onAuthResponse(ike: IkeSa, p: PayloadRepr[], childSpi: number, o: InitiateOptions, now: number): void {
    const cfg = this.config();
    const failN = p.find((x) => x.type === Payload.NOTIFY && (x as PayloadOf<typeof Payload.NOTIFY>).notifyType === Notify.AUTHENTICATION_FAILED);
    const idr = findPayload(p, Payload.IDr),
      auth = findPayload(p, Payload.AUTH);
    const fail = (why: string) => {
      this.host.sad.releaseSpi(childSpi);
      this.forget(ike, why, now, false);
      o.onFailed?.(why);
    };
    if (failN) {
      fail('AUTHENTICATION_FAILED');
      return;
    }
    if (!idr || !auth) {
      fail('IKE_AUTH response without IDr/AUTH');
      return;
    }
    if (o.remoteId && !identityMatches(o.remoteId, idr.idType, idr.data)) {
      fail(`responder is ${peerIdentity(idr.idType, idr.data).value}, not ${o.remoteId}`);
      return;
    }
    let identity = peerIdentity(idr.idType, idr.data);
    if (auth.method === AuthMethod.SHARED_KEY_MIC) {
      const expected = pskAuth(ike.suite.prf!, o.psk, ike.initResponse, ike.ni, ike.keys.pr, idBody(idr.idType, idr.data));
      if (o.psk.length === 0 || !equalConstantTime(expected, auth.data)) {
        fail('responder AUTH does not match');
        return;
      }
    } else {
      const certs = p
        .filter((x): x is PayloadOf<typeof Payload.CERT> => x.type === Payload.CERT && (x as PayloadOf<typeof Payload.CERT>).encoding === CERT_X509_SIGNATURE)
        .map((x) => x.data);
      if (!o.trust || certs.length === 0) {
        fail('responder authenticated with a certificate we cannot check');
        return;
      }
      const why = checkChain(certs[0]!, certs.slice(1), o.trust, this.wallClock());
      if (why) {
        fail(why);
        return;
      }
      const leaf = new X509Certificate(certs[0]!);
      if (!identityInCert(leaf, idr.idType, idr.data)) {
        fail(`responder identity ${identity.value} is not in its certificate`);
        return;
      }
      if (idr.idType === IdType.DER_ASN1_DN) identity = { type: idr.idType, value: subjectText(leaf) };
      const bad = verifyAuth(
        auth.method,
        auth.data,
        leaf.publicKey,
        signedOctets(ike.suite.prf!, ike.initResponse, ike.ni, ike.keys.pr, idBody(idr.idType, idr.data)),
      );
      if (bad) {
        fail(bad);
        return;
      }
    }
    ike.identity = identity;
    ike.state = 'established';
    ike.establishedAt = now;
    ike.expiresAt = now + cfg.ike.lifetimeMs;
    this.counters.FsIkeSasEstablished++;
    this.host.event({ kind: 'ike-sa-up', ike });
    const child = this.childFromResponse(ike, p, childSpi, ike.ni, ike.nr, undefined, undefined, now);
    if (!child) this.host.sad.releaseSpi(childSpi);
    else this.host.event({ kind: 'child-sa-up', child, ike });
    o.onEstablished?.(ike, child);
  }

  /** Installs the child SA a responder accepted (initiator side). */
  private childFromResponse(
    ike: IkeSa,
    p: PayloadRepr[],
    inSpi: number,
    ni: Buffer,
    nr: Buffer,
    secret: Buffer | undefined,
    rekeyOf: ChildSa | undefined,
    now: number,
  ): ChildSa | null {
    const saP = findPayload(p, Payload.SA),
      tsi = findPayload(p, Payload.TSi),
      tsr = findPayload(p, Payload.TSr);
    if (!saP || !tsi || !tsr || saP.proposals.length !== 1 || saP.proposals[0]!.spi.length !== 4) return null;
    const cfg = this.config();
    const sel = selectProposal(saP.proposals, ike.peer?.espProposals ?? cfg.esp.proposals, ProtocolId.ESP, {
      ignoreDh: secret === undefined,
      keGroup: saP.proposals[0]!.transforms.find((t) => t.type === 4)?.id,
    });
    if (!sel) return null;
    const keys = deriveChildKeys(ike.suite.prf!, ike.keys.d, sel.suite, ni, nr, sel.suite.dh ? secret : undefined);
    const localTs = narrow(tsi.selectors, [ANY_SELECTOR]);
    const remoteTs = narrow(tsr.selectors, [ANY_SELECTOR]);
    const transport = !!findNotify(p, Notify.USE_TRANSPORT_MODE);
    return this.install(
      ike,
      sel.suite,
      saP.proposals[0]!.spi.readUInt32BE(0),
      keys.encR,
      keys.integR,
      keys.encI,
      keys.integI,
      transport,
      localTs,
      remoteTs,
      now,
      rekeyOf,
      inSpi,
    );
  }

  /** Initiator side of a child rekey (1.3.3): a new child with the same selectors, then the old one is deleted. */
  rekeyChild(ike: IkeSa, old: ChildSa, now: number, pfsGroup = 0): void {
    const cfg = this.config();
    const spi = this.host.sad.allocateSpi();
    const ni = randomBytes(NONCE_BYTES);
    const dh = pfsGroup ? new KeyExchange(pfsGroup) : null;
    const specs = (ike.peer?.espProposals ?? cfg.esp.proposals).map((s) => (pfsGroup ? { ...s, dh: [pfsGroup] } : s));
    const payloads: PayloadRepr[] = [
      notify(Notify.REKEY_SA, Buffer.alloc(0), ProtocolId.ESP, u32(old.inbound.spi)),
      { type: Payload.SA, proposals: proposalsFromSpecs(specs, ProtocolId.ESP, u32(spi), !!pfsGroup) },
      { type: Payload.NONCE, data: ni },
    ];
    if (dh) payloads.push({ type: Payload.KE, group: pfsGroup, data: dh.publicKey });
    payloads.push({ type: Payload.TSi, selectors: old.localTs.map(tsFromSelector) }, { type: Payload.TSr, selectors: old.remoteTs.map(tsFromSelector) });
    if (old.mode === 'transport') payloads.push(notify(Notify.USE_TRANSPORT_MODE));
    this.request(
      ike,
      {
        exchange: Exchange.CREATE_CHILD_SA,
        payloads,
        what: `rekey of child ${hex32(old.inbound.spi)}`,
        onResponse: (rp, t) => {
          const nr = findPayload(rp, Payload.NONCE),
            ke = findPayload(rp, Payload.KE);
          let secret: Buffer | undefined;
          if (dh && ke) {
            try {
              secret = dh.sharedSecret(ke.data);
            } catch {
              secret = undefined;
            }
          }
          const child = nr ? this.childFromResponse(ike, rp, spi, ni, nr.data, secret, old, t) : null;
          if (!child) {
            this.host.sad.releaseSpi(spi);
            return;
          }
          old.state = 'rekeyed';
          this.counters.FsChildSasRekeyed++;
          this.host.event({ kind: 'child-sa-rekeyed', old, child, ike });
          this.deleteChild(ike, old, 'rekeyed', t);
        },
      },
      now,
    );
  }

  /** Initiator side of an IKE SA rekey (2.18). */
  rekeyIke(ike: IkeSa, now: number): void {
    const cfg = this.config();
    const group = ike.suite.dh;
    const dh = new KeyExchange(group);
    const ni = randomBytes(NONCE_BYTES);
    const newSpi = this.newSpi();
    const specs = (ike.role === 'initiator' ? (ike as IkeSa & { initOpts?: InitiateOptions }).initOpts?.ikeProposals : undefined) ?? cfg.ike.proposals;
    this.request(
      ike,
      {
        exchange: Exchange.CREATE_CHILD_SA,
        what: 'rekey of the IKE SA',
        payloads: [
          { type: Payload.SA, proposals: proposalsFromSpecs(specs, ProtocolId.IKE, newSpi) },
          { type: Payload.NONCE, data: ni },
          { type: Payload.KE, group, data: dh.publicKey },
        ],
        onResponse: (rp, t) => {
          const saP = findPayload(rp, Payload.SA),
            nr = findPayload(rp, Payload.NONCE),
            ke = findPayload(rp, Payload.KE);
          if (!saP || !nr || !ke || saP.proposals.length !== 1 || saP.proposals[0]!.spi.length !== 8) return;
          const sel = selectProposal(saP.proposals, specs, ProtocolId.IKE, { keGroup: ke.group });
          if (!sel) return;
          let secret: Buffer;
          try {
            secret = dh.sharedSecret(ke.data);
          } catch {
            return;
          }
          const peerSpi = Buffer.from(saP.proposals[0]!.spi);
          // We initiated the rekey: we are the initiator of the new SA (2.18).
          const fresh = new IkeSa(this.nextId++, 'initiator', newSpi, peerSpi, { ...ike.local }, { ...ike.remote }, t);
          fresh.suite = sel.suite;
          fresh.ni = ni;
          fresh.nr = Buffer.from(nr.data);
          fresh.keys = deriveIkeKeys(sel.suite, ni, fresh.nr, secret, newSpi, peerSpi, ike.keys.d);
          (fresh as IkeSa & { initOpts?: InitiateOptions }).initOpts = (ike as IkeSa & { initOpts?: InitiateOptions }).initOpts;
          this.adoptRekey(ike, fresh, t);
          this.deleteIke(ike, `rekeyed into IKE SA ${fresh.id}`, t);
        },
      },
      now,
    );
  }

  /** Initiator or responder: a liveness check now (1.4). */
  liveness(ike: IkeSa, now: number, done?: (ok: boolean) => void): void {
    this.request(
      ike,
      { exchange: Exchange.INFORMATIONAL, payloads: [], what: 'liveness check', onResponse: () => done?.(true), onTimeout: () => done?.(false) },
      now,
    );
  }
}

// ---------------------------------------------------------------- helpers

function notify(type: number, data: Buffer = Buffer.alloc(0), protocol = 0, spi: Buffer = Buffer.alloc(0)): PayloadOf<typeof Payload.NOTIFY> {
  return { type: Payload.NOTIFY, protocol, spi, notifyType: type, data };
}

/** NAT_DETECTION_*_IP data (2.23): SHA-1(SPIi | SPIr | IP address | port). */
export function natHash(spiI: Buffer, spiR: Buffer, ep: Endpoint): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt32BE(ep.addr >>> 0, 0);
  b.writeUInt16BE(ep.port, 4);
  return createHash('sha1').update(spiI).update(spiR).update(b).digest();
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export type { IkeSa, IkeSaView, PeerIdentity, ProposalRepr };
export { IKE_VERSION };
