/**
 * One IKE SA (RFC 7296 1.1, 2): its SPIs, addresses, negotiated suite and keys, the
 * peer's proven identity, its child SAs and both message-ID windows (2.1, 2.2):
 *
 *   - requests from the peer: the next ID expected, and the last response kept to be
 *     sent again when the same request comes again (the responder never retransmits
 *     on its own, 2.1);
 *   - requests of ours (liveness checks, deletes, and all of it as initiator): one at a
 *     time (window size 1), retransmitted with doubling timeouts until answered.
 */
import { formatIpv4 } from '../../wire/addr';
import type { PayloadRepr } from '../../wire/ike';
import type { PeerConfig } from '../config';
import type { IkeKeys } from '../keys';
import { hex32, type ChildSa, type Endpoint, type PeerIdentity } from '../sad';
import { suiteName, type ChosenSuite } from '../transforms';
import type { KeyExchange, SkKeys, SkSuite } from './crypto';

export type IkeState =
  /** Initiator: IKE_SA_INIT sent. */
  | 'connecting'
  /** IKE_SA_INIT done; IKE_AUTH not yet (a half-open SA on the responder). */
  | 'init'
  | 'established'
  /** Replaced by a rekeyed IKE SA; kept until its delete. */
  | 'rekeyed'
  | 'deleted';

/** A request of ours waiting for its response. */
export interface PendingRequest {
  messageId: number;
  exchange: number;
  packet: Buffer;
  sentAt: number;
  tries: number;
  retransmitAt: number;
  onResponse: (payloads: PayloadRepr[], now: number) => void;
  onTimeout?: (now: number) => void;
  /** What it is for, in `faultstack ipsec`. */
  what: string;
}

export interface QueuedRequest {
  exchange: number;
  payloads: PayloadRepr[];
  onResponse: (payloads: PayloadRepr[], now: number) => void;
  onTimeout?: (now: number) => void;
  what: string;
}

/** The read-only view of an IKE SA that other modules (the NLB fault) get. */
export interface IkeSaView {
  readonly id: number;
  readonly role: 'initiator' | 'responder';
  readonly state: IkeState;
  readonly identity: PeerIdentity | null;
  readonly local: Endpoint;
  readonly remote: Endpoint;
  readonly spiI: Buffer;
  readonly spiR: Buffer;
  readonly createdAt: number;
  readonly establishedAt: number;
  readonly children: ReadonlySet<ChildSa>;
}

export class IkeSa implements IkeSaView {
  state: IkeState;
  identity: PeerIdentity | null = null;
  peer: PeerConfig | null = null;
  suite!: ChosenSuite;
  keys!: IkeKeys;
  ni: Buffer = Buffer.alloc(0);
  nr: Buffer = Buffer.alloc(0);
  /** The IKE_SA_INIT request and response as sent (what AUTH signs, 2.15). */
  initRequest: Buffer = Buffer.alloc(0);
  initResponse: Buffer = Buffer.alloc(0);
  /** UDP encapsulation for ESP and IKE on port 4500 (NAT found, or the peer moved to 4500). */
  natT = false;
  natPeer = false;
  natLocal = false;
  establishedAt = 0;
  lastActivity: number;
  expiresAt = Infinity;
  readonly children = new Set<ChildSa>();

  /** Peer's requests. */
  nextPeerMessageId = 0;
  lastResponse: Buffer | null = null;
  lastResponseId = -1;
  /** Our requests. */
  nextMessageId = 0;
  pending: PendingRequest | null = null;
  readonly queue: QueuedRequest[] = [];
  /** Initiator only: the exchange state kept between IKE_SA_INIT and its response. */
  ke: KeyExchange | null = null;
  cookie: Buffer | null = null;
  /** The peer announced SIGNATURE_HASH_ALGORITHMS with SHA2-256 (and got ours): AUTH may use RFC 7427. */
  peerDigitalSignature = false;
  initRetries = 0;
  /** Set when a rekey replaced this SA, or on delete: why. */
  endReason = '';
  /** A deleted SA kept to answer retransmissions is dropped at this time. */
  lingerUntil = 0;
  /** The IKE SA this one replaced (rekey). */
  rekeyOf = 0;

  constructor(
    readonly id: number,
    readonly role: 'initiator' | 'responder',
    public spiI: Buffer,
    public spiR: Buffer,
    public local: Endpoint,
    public remote: Endpoint,
    readonly createdAt: number,
  ) {
    this.state = role === 'initiator' ? 'connecting' : 'init';
    this.lastActivity = createdAt;
  }

  /** Our SPI: the one that finds this SA when a message comes in. */
  get ourSpi(): Buffer {
    return this.role === 'initiator' ? this.spiI : this.spiR;
  }

  /** SK keys and suite for messages we send / receive (initiator's keys are _i). */
  get skSuite(): SkSuite {
    return { encr: this.suite.encr, keyBits: this.suite.keyBits, integ: this.suite.integ };
  }
  get sendKeys(): SkKeys {
    return this.role === 'initiator' ? { encr: this.keys.ei, integ: this.keys.ai } : { encr: this.keys.er, integ: this.keys.ar };
  }
  get recvKeys(): SkKeys {
    return this.role === 'initiator' ? { encr: this.keys.er, integ: this.keys.ar } : { encr: this.keys.ei, integ: this.keys.ai };
  }

  describe(now: number) {
    return {
      id: this.id,
      role: this.role,
      state: this.state,
      identity: this.identity?.value ?? null,
      local: `${formatIpv4(this.local.addr)}:${this.local.port}`,
      remote: `${formatIpv4(this.remote.addr)}:${this.remote.port}`,
      spiI: this.spiI.toString('hex'),
      spiR: this.spiR.toString('hex'),
      suite: this.suite ? suiteName(this.suite) : null,
      natT: this.natT,
      ageMs: Math.round(now - this.createdAt),
      establishedAgeMs: this.establishedAt ? Math.round(now - this.establishedAt) : null,
      children: [...this.children].map((c) => `${hex32(c.inbound.spi)}/${hex32(c.outbound.spi)}`),
      pending: this.pending ? this.pending.what : null,
    };
  }
}
