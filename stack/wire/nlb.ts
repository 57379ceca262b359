/**
 * Network Load Balancing heartbeats: the payload of Ethernet frames of EtherType 0x886F
 * (older WLBS used 0xBF01). The layout is the one Wireshark's MS NLB dissector
 * (epan/dissectors/packet-msnlb.c) decodes; Microsoft has not published it. Multi-byte
 * integers are little-endian, the two IPv4 addresses are in network order.
 *
 * Common header (every heartbeat):
 *   0 signature u32     4 version u32     8 unique host id u32
 *   12 cluster IP       16 dedicated IP   = 20 bytes
 *
 * Cluster membership heartbeat (signature 0xC0DE01BF), 1496 bytes in all:
 *   20 my host id u16   22 default host id u16   24 convergence state u16
 *   26 number of port rules u16   28 unique host code u32   32 packets handled u32
 *   36 teaming configuration u32  40 reserved (4 bytes)
 *   44 port rule configuration, 33 x u32      176 current map, 33 x u64
 *   440 new map, 33 x u64                     704 idle map, 33 x u64
 *   968 ready map, 33 x u64                   1232 load weights, 33 x u32
 *   1364 reserved, 33 x u32                   = 1496
 * The dissector reads all 33 slots whatever the number of port rules, so a frame shorter
 * than 1496 bytes is malformed to it: we always send the whole structure, unused slots
 * zero. The maps are 64 bits wide: one bit per bucket, at most 64 buckets.
 *
 * Extended heartbeat (signature 0xC0DE01C0): after the common header, entries of
 *   0 type u8   1 length u8   2 reserved (6 bytes)   then by type:
 *   type 1, host name: UTF-16LE, NUL-terminated, then 6 bytes (the dissector skips them);
 *   type 2, an address (family u16 then the address): not sent by us;
 *   any other type: the dissector shows the rest of the frame as data of an unknown entry.
 *
 * What the fields mean is not public; ours (docs/nlb.md has the table):
 *   version 0x0200 (shown "2.0"); unique host id: a random incarnation number drawn at
 *   start (a host that restarts within AliveMsgTolerance is seen as lost and joined);
 *   my host id: the host priority 1-32; default host id: the lowest priority the sender
 *   sees; convergence state: NlbConvergenceState below; unique host code: a hash of the
 *   sender's port rules (hosts with other rules do not converge with it); the reserved
 *   word at 40: the hosts the sender sees, bit (id - 1) per host (the view hosts agree
 *   on before a convergence completes); a port rule word: a hash of the rule (range,
 *   protocol, filtering mode, affinity); idle map: buckets where the sender holds no
 *   connection descriptor; ready map: the new map once the sender has seen every host
 *   agree with it. Our own extended entry (type 0xFA, always last: the dissector shows it
 *   as an unknown entry) carries the sender's IPsec descriptors (identity hash, client
 *   address, opening sequence number, age: 20 bytes each) and, for rules with
 *   extended affinity, the clients it keeps outside its own buckets.
 *
 * Views/parses check every length before reading; representations are emitted.
 */
import { readU32, writeU32 } from './bytes';

export const NLB_SIGNATURE_MEMBERSHIP = 0xc0de01bf;
export const NLB_SIGNATURE_EXTENDED = 0xc0de01c0;
/** "NLB Reliable Protocol" in Wireshark's table; never sent by us. */
export const NLB_SIGNATURE_RELIABLE = 0xc0de01de;
export const NLB_VERSION = 0x0200;
export const NLB_COMMON_LEN = 20;
export const NLB_MEMBERSHIP_LEN = 1496;
/** Port-rule slots in a membership heartbeat. */
export const NLB_RULE_SLOTS = 33;
/** Bits in a bucket map. */
export const NLB_MAX_BUCKETS = 64;

const OFF_RULES = 44;
const OFF_CURRENT = OFF_RULES + 4 * NLB_RULE_SLOTS;
const OFF_NEW = OFF_CURRENT + 8 * NLB_RULE_SLOTS;
const OFF_IDLE = OFF_NEW + 8 * NLB_RULE_SLOTS;
const OFF_READY = OFF_IDLE + 8 * NLB_RULE_SLOTS;
const OFF_WEIGHTS = OFF_READY + 8 * NLB_RULE_SLOTS;
const OFF_RESERVED2 = OFF_WEIGHTS + 4 * NLB_RULE_SLOTS;

/** Our codes for the convergence state word. */
export const enum NlbConvergenceState {
  Converging = 1,
  Converged = 2,
  /** drainstop: serving its connections, owning no bucket. */
  Draining = 3,
  /** The last heartbeat of a host that stops: the others converge without waiting. */
  Stopped = 4,
}

export const enum NlbError {
  None = 0,
  /** Shorter than the structure its signature calls for. */
  Truncated = 1,
  /** A signature we do not parse (the reliable protocol, or garbage). */
  UnknownSignature = 2,
  /** More port rules than the 33 slots. */
  BadRuleCount = 3,
  /** An extended entry that runs past the frame, or a host name without its terminator. */
  BadEntry = 4,
}

export interface NlbCommonRepr {
  signature: number;
  version: number;
  uniqueHostId: number;
  clusterIp: number;
  dedicatedIp: number;
}

/** One port rule's slot in a membership heartbeat. */
export interface NlbRuleSlot {
  /** Port rule configuration word (ours: a hash of the rule). */
  code: number;
  currentMap: bigint;
  newMap: bigint;
  idleMap: bigint;
  readyMap: bigint;
  loadWeight: number;
}

export interface NlbMembershipRepr extends NlbCommonRepr {
  hostId: number;
  defaultHostId: number;
  convergenceState: number;
  uniqueHostCode: number;
  packetsHandled: number;
  teaming: number;
  /** The reserved word at offset 40 (ours: the hosts the sender sees, bit id-1). */
  view: number;
  rules: NlbRuleSlot[];
}

export function newRuleSlot(): NlbRuleSlot {
  return { code: 0, currentMap: 0n, newMap: 0n, idleMap: 0n, readyMap: 0n, loadWeight: 0 };
}

export function newMembershipRepr(): NlbMembershipRepr {
  return {
    signature: NLB_SIGNATURE_MEMBERSHIP,
    version: NLB_VERSION,
    uniqueHostId: 0,
    clusterIp: 0,
    dedicatedIp: 0,
    hostId: 0,
    defaultHostId: 0,
    convergenceState: 0,
    uniqueHostCode: 0,
    packetsHandled: 0,
    teaming: 0,
    view: 0,
    rules: [],
  };
}

function readU32LE(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}
function writeU32LE(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 255;
  b[o + 1] = (v >>> 8) & 255;
  b[o + 2] = (v >>> 16) & 255;
  b[o + 3] = (v >>> 24) & 255;
}
function readU16LE(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}
function writeU16LE(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 255;
  b[o + 1] = (v >>> 8) & 255;
}
function readU64LE(b: Uint8Array, o: number): bigint {
  return (BigInt(readU32LE(b, o + 4)) << 32n) | BigInt(readU32LE(b, o));
}
function writeU64LE(b: Uint8Array, o: number, v: bigint): void {
  writeU32LE(b, o, Number(v & 0xffffffffn));
  writeU32LE(b, o + 4, Number((v >> 32n) & 0xffffffffn));
}

/** The signature of a heartbeat payload at buf[off, off+len), or -1 when it is shorter than one. */
export function nlbSignature(buf: Uint8Array, off: number, len: number): number {
  return len < 4 ? -1 : readU32LE(buf, off);
}

export function parseNlbCommon(buf: Uint8Array, off: number, len: number, out: NlbCommonRepr): NlbError {
  if (len < NLB_COMMON_LEN) return NlbError.Truncated;
  out.signature = readU32LE(buf, off);
  out.version = readU32LE(buf, off + 4);
  out.uniqueHostId = readU32LE(buf, off + 8);
  out.clusterIp = readU32(buf, off + 12);
  out.dedicatedIp = readU32(buf, off + 16);
  return NlbError.None;
}

function emitNlbCommon(buf: Uint8Array, off: number, r: NlbCommonRepr): void {
  writeU32LE(buf, off, r.signature);
  writeU32LE(buf, off + 4, r.version);
  writeU32LE(buf, off + 8, r.uniqueHostId);
  writeU32(buf, off + 12, r.clusterIp);
  writeU32(buf, off + 16, r.dedicatedIp);
}

/** Parses a cluster membership heartbeat; `out.rules` gets one slot per port rule the sender has. */
export function parseMembership(buf: Uint8Array, off: number, len: number, out: NlbMembershipRepr): NlbError {
  if (len < NLB_COMMON_LEN) return NlbError.Truncated;
  if (readU32LE(buf, off) !== NLB_SIGNATURE_MEMBERSHIP) return NlbError.UnknownSignature;
  if (len < NLB_MEMBERSHIP_LEN) return NlbError.Truncated;
  const n = readU16LE(buf, off + 26);
  if (n > NLB_RULE_SLOTS) return NlbError.BadRuleCount;
  parseNlbCommon(buf, off, len, out);
  out.hostId = readU16LE(buf, off + 20);
  out.defaultHostId = readU16LE(buf, off + 22);
  out.convergenceState = readU16LE(buf, off + 24);
  out.uniqueHostCode = readU32LE(buf, off + 28);
  out.packetsHandled = readU32LE(buf, off + 32);
  out.teaming = readU32LE(buf, off + 36);
  out.view = readU32LE(buf, off + 40);
  const rules: NlbRuleSlot[] = [];
  for (let i = 0; i < n; i++) {
    rules.push({
      code: readU32LE(buf, off + OFF_RULES + 4 * i),
      currentMap: readU64LE(buf, off + OFF_CURRENT + 8 * i),
      newMap: readU64LE(buf, off + OFF_NEW + 8 * i),
      idleMap: readU64LE(buf, off + OFF_IDLE + 8 * i),
      readyMap: readU64LE(buf, off + OFF_READY + 8 * i),
      loadWeight: readU32LE(buf, off + OFF_WEIGHTS + 4 * i),
    });
  }
  out.rules = rules;
  return NlbError.None;
}

/** Writes a membership heartbeat (all 1496 bytes) at buf[off]; returns its length. */
export function emitMembership(buf: Uint8Array, off: number, r: NlbMembershipRepr): number {
  if (r.rules.length > NLB_RULE_SLOTS) throw new RangeError(`a heartbeat carries at most ${NLB_RULE_SLOTS} port rules, not ${r.rules.length}`);
  buf.fill(0, off, off + NLB_MEMBERSHIP_LEN);
  emitNlbCommon(buf, off, { ...r, signature: NLB_SIGNATURE_MEMBERSHIP });
  writeU16LE(buf, off + 20, r.hostId);
  writeU16LE(buf, off + 22, r.defaultHostId);
  writeU16LE(buf, off + 24, r.convergenceState);
  writeU16LE(buf, off + 26, r.rules.length);
  writeU32LE(buf, off + 28, r.uniqueHostCode);
  writeU32LE(buf, off + 32, r.packetsHandled);
  writeU32LE(buf, off + 36, r.teaming);
  writeU32LE(buf, off + 40, r.view);
  r.rules.forEach((s, i) => {
    writeU32LE(buf, off + OFF_RULES + 4 * i, s.code);
    writeU64LE(buf, off + OFF_CURRENT + 8 * i, s.currentMap);
    writeU64LE(buf, off + OFF_NEW + 8 * i, s.newMap);
    writeU64LE(buf, off + OFF_IDLE + 8 * i, s.idleMap);
    writeU64LE(buf, off + OFF_READY + 8 * i, s.readyMap);
    writeU32LE(buf, off + OFF_WEIGHTS + 4 * i, s.loadWeight);
  });
  // OFF_RESERVED2: 33 reserved words, left zero.
  void OFF_RESERVED2;
  return NLB_MEMBERSHIP_LEN;
}

// ------------------------------------------------------------------ extended heartbeats

export const NLB_EXT_HOST_NAME = 1;
export const NLB_EXT_ADDRESS = 2;
/** Ours: IPsec descriptors and extended-affinity clients (faultstack; shown by Wireshark as an unknown entry). */
export const NLB_EXT_FAULTSTACK = 0xfa;
const EXT_ENTRY_HEADER = 8;
/** Our entry: type, format, part, parts, tunnel count u16, sticky count u16. */
const FS_HEADER = 8;
export const NLB_TUNNEL_ENTRY_LEN = 20;
export const NLB_STICKY_ENTRY_LEN = 8;

/** One IPsec descriptor as other hosts learn it: an IKE SA (tunnel) this host holds. */
export interface NlbTunnelEntry {
  /** The first 8 bytes of SHA-256 over the peer identity's text. */
  identityHash: Buffer;
  /** The client's outer address (the IKE SA's remote address). */
  clientAddr: number;
  /** Per-host sequence number of the tunnel's opening: a new number is a new tunnel. */
  openSeq: number;
  /** ms since it opened, as the sender sends the heartbeat (saturates at 2^32-1): lets hosts order tunnels without a common clock. */
  ageMs: number;
}

/** A client that keeps a connection or an extended-affinity timer on this host outside the host's buckets. */
export interface NlbStickyEntry {
  /** The affinity key: the client address, or its /24 under network affinity. */
  key: number;
  rule: number;
}

export interface NlbExtendedRepr extends NlbCommonRepr {
  hostName: string | null;
  /** Our entry, absent in heartbeats of other implementations. */
  faultstack: { part: number; parts: number; tunnels: NlbTunnelEntry[]; sticky: NlbStickyEntry[] } | null;
}

export function newExtendedRepr(): NlbExtendedRepr {
  return { signature: NLB_SIGNATURE_EXTENDED, version: NLB_VERSION, uniqueHostId: 0, clusterIp: 0, dedicatedIp: 0, hostName: null, faultstack: null };
}

/** Bytes an extended heartbeat with this host name and these entries takes. */
export function extendedLength(hostName: string | null, tunnels: number, sticky: number, withOurs = true): number {
  let n = NLB_COMMON_LEN;
  if (hostName !== null) n += EXT_ENTRY_HEADER + 2 * (hostName.length + 1) + 6;
  if (withOurs) n += FS_HEADER + tunnels * NLB_TUNNEL_ENTRY_LEN + sticky * NLB_STICKY_ENTRY_LEN;
  return n;
}

/** How many tunnel entries fit in one extended heartbeat of at most `maxLen` bytes. */
export function tunnelsPerFrame(hostName: string | null, maxLen: number): number {
  return Math.max(0, Math.floor((maxLen - extendedLength(hostName, 0, 0)) / NLB_TUNNEL_ENTRY_LEN));
}

export function emitExtended(buf: Uint8Array, off: number, r: NlbExtendedRepr): number {
  emitNlbCommon(buf, off, { ...r, signature: NLB_SIGNATURE_EXTENDED });
  let o = off + NLB_COMMON_LEN;
  if (r.hostName !== null) {
    const total = EXT_ENTRY_HEADER + 2 * (r.hostName.length + 1) + 6;
    buf.fill(0, o, o + total);
    buf[o] = NLB_EXT_HOST_NAME;
    // The length byte's meaning is not public and the dissector does not read it: ours is the entry's length in 8-byte units, rounded up.
    buf[o + 1] = Math.min(255, Math.ceil(total / 8));
    for (let i = 0; i < r.hostName.length; i++) writeU16LE(buf, o + EXT_ENTRY_HEADER + 2 * i, r.hostName.charCodeAt(i));
    o += total;
  }
  const f = r.faultstack;
  if (f !== null) {
    buf[o] = NLB_EXT_FAULTSTACK;
    buf[o + 1] = 1; // our format version
    buf[o + 2] = f.part;
    buf[o + 3] = f.parts;
    writeU16LE(buf, o + 4, f.tunnels.length);
    writeU16LE(buf, o + 6, f.sticky.length);
    o += FS_HEADER;
    for (const t of f.tunnels) {
      if (t.identityHash.length !== 8) throw new RangeError('an identity hash is 8 bytes');
      t.identityHash.copy(buf as Buffer, o);
      writeU32(buf, o + 8, t.clientAddr);
      writeU32LE(buf, o + 12, t.openSeq);
      writeU32LE(buf, o + 16, Math.min(0xffffffff, Math.max(0, Math.round(t.ageMs))));
      o += NLB_TUNNEL_ENTRY_LEN;
    }
    for (const s of f.sticky) {
      writeU32(buf, o, s.key);
      buf[o + 4] = s.rule;
      buf[o + 5] = 0;
      buf[o + 6] = 0;
      buf[o + 7] = 0;
      o += NLB_STICKY_ENTRY_LEN;
    }
  }
  return o - off;
}

/** Parses an extended heartbeat; entries of types we do not know are skipped (they run to the end, as the dissector reads them). */
export function parseExtended(buf: Uint8Array, off: number, len: number, out: NlbExtendedRepr): NlbError {
  if (len < NLB_COMMON_LEN) return NlbError.Truncated;
  if (readU32LE(buf, off) !== NLB_SIGNATURE_EXTENDED) return NlbError.UnknownSignature;
  parseNlbCommon(buf, off, len, out);
  out.hostName = null;
  out.faultstack = null;
  const end = off + len;
  let o = off + NLB_COMMON_LEN;
  while (o < end) {
    const type = buf[o];
    if (type === NLB_EXT_HOST_NAME) {
      if (end - o < EXT_ENTRY_HEADER + 2) return NlbError.BadEntry;
      let s = o + EXT_ENTRY_HEADER;
      let name = '';
      for (;;) {
        if (s + 2 > end) return NlbError.BadEntry;
        const c = readU16LE(buf, s);
        s += 2;
        if (c === 0) break;
        name += String.fromCharCode(c);
      }
      if (s + 6 > end) return NlbError.BadEntry;
      out.hostName = name;
      o = s + 6;
    } else if (type === NLB_EXT_FAULTSTACK) {
      if (end - o < FS_HEADER) return NlbError.BadEntry;
      const nt = readU16LE(buf, o + 4),
        ns = readU16LE(buf, o + 6);
      const need = FS_HEADER + nt * NLB_TUNNEL_ENTRY_LEN + ns * NLB_STICKY_ENTRY_LEN;
      if (end - o < need) return NlbError.BadEntry;
      const part = buf[o + 2],
        parts = buf[o + 3];
      let p = o + FS_HEADER;
      const tunnels: NlbTunnelEntry[] = [];
      for (let i = 0; i < nt; i++, p += NLB_TUNNEL_ENTRY_LEN) {
        tunnels.push({
          identityHash: Buffer.from(buf.subarray(p, p + 8)),
          clientAddr: readU32(buf, p + 8),
          openSeq: readU32LE(buf, p + 12),
          ageMs: readU32LE(buf, p + 16),
        });
      }
      const sticky: NlbStickyEntry[] = [];
      for (let i = 0; i < ns; i++, p += NLB_STICKY_ENTRY_LEN) sticky.push({ key: readU32(buf, p), rule: buf[p + 4] });
      out.faultstack = { part, parts, tunnels, sticky };
      return NlbError.None; // it runs to the end of the frame
    } else {
      // An address entry or an unknown one: the dissector takes the rest of the frame for it.
      return NlbError.None;
    }
  }
  return NlbError.None;
}
