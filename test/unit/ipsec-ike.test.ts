/**
 * IKEv2 and ESP between two stacks on the memory link (virtual clock): A is the
 * engine's initiator, B the responder that `faultstack run --ipsec` runs.
 */
import { describe, expect, test } from 'vitest';
import { runFor, runUntil, testData, sha256, transfer } from './helpers/pair';
import { A_IP, B_IP, connect, esp, ike, initiateFromA, makeIpsecPair, peer, type IpsecPair } from './helpers/ipsec-pair';
import { PROTO_ESP } from '../../stack/wire/esp';
import { Exchange, IKE_HEADER, Notify, Payload, emitIkeMessage, IkeFlag } from '../../stack/wire/ike';
import { emitUdp } from '../../stack/wire/udp';
import { emitIpv4Header, newIpv4Repr } from '../../stack/wire/ipv4';
import { DhGroup } from '../../stack/ipsec/transforms';
import { hostSelector, parseSelector, proposalsFromSpecs } from '../../stack/ipsec/ike/negotiate';
import { KeyExchange } from '../../stack/ipsec/ike/crypto';
import { ProtocolId } from '../../stack/wire/ike';

/** Protocols (and UDP ports) seen on the link, A to B and back. */
function watchLink(p: IpsecPair) {
  const seen: { dir: string; proto: number; dport: number }[] = [];
  const prev = p.link.dropFilter;
  p.link.dropFilter = (pkt, dir, index) => {
    const proto = pkt[9];
    const dport = proto === 17 || proto === 6 ? pkt.readUInt16BE(22) : 0;
    seen.push({ dir, proto, dport });
    return prev ? prev(pkt, dir, index) : false;
  };
  return seen;
}

/** An IPv4/UDP datagram from A to B with `payload`, handed to B as if it came off the link. */
function injectUdp(p: IpsecPair, dport: number, payload: Buffer, sport = 500): void {
  const pkt = Buffer.alloc(28 + payload.length);
  payload.copy(pkt, 28);
  emitUdp(pkt, 20, { srcPort: sport, dstPort: dport, payloadOffset: 0, payloadLength: payload.length }, A_IP, B_IP);
  const r = newIpv4Repr();
  r.src = A_IP;
  r.dst = B_IP;
  r.protocol = 17;
  r.totalLength = pkt.length;
  r.ident = 1;
  emitIpv4Header(pkt, 0, r);
  p.b.input(pkt, null, p.clock.now);
}

function injectEsp(p: IpsecPair, payload: Buffer): void {
  const pkt = Buffer.alloc(20 + payload.length);
  payload.copy(pkt, 20);
  const r = newIpv4Repr();
  r.src = A_IP;
  r.dst = B_IP;
  r.protocol = PROTO_ESP;
  r.totalLength = pkt.length;
  r.ident = 2;
  emitIpv4Header(pkt, 0, r);
  p.b.input(pkt, null, p.clock.now);
}

describe('IKEv2 responder against the stack-to-stack initiator', () => {
  for (const [name, ikeP, espP] of [
    ['MODP-2048, AES-CBC/SHA-256, ESP AES-GCM', 'aes128-sha256-modp2048', 'aes128gcm16'],
    ['ECP-256, AES-GCM IKE, ESP AES-CBC/SHA-256', 'aes256gcm16-prfsha384-ecp256', 'aes256-sha256'],
    ['Curve25519, AES-GCM', 'aes128gcm16-prfsha256-curve25519', 'aes128gcm16'],
  ] as const) {
    test(`PSK: IKE_SA_INIT + IKE_AUTH, child SA, TCP through ESP intact (${name})`, async () => {
      const p = makeIpsecPair({
        a: (c) => {
          c.ike.proposals = [ike(ikeP)];
          c.esp.proposals = [esp(espP)];
        },
      });
      const seen = watchLink(p);
      const r = await connect(p);
      expect(r.result.failed).toBeUndefined();
      expect(r.result.child).toBeTruthy();
      const [onB] = p.ipB.ike.all();
      expect(onB!.state).toBe('established');
      expect(onB!.identity).toEqual({ type: 3, value: 'client1@lab' });
      expect(p.ipB.sad.size).toBe(1);
      const child = p.ipB.sad.all()[0]!;
      expect(child.identity.value).toBe('client1@lab');
      expect(child.remote.addr).toBe(A_IP);
      expect(child.createdAt).toBeGreaterThan(0);
      // Narrowed to what the initiator asked and the responder allows.
      expect(child.remoteTs).toEqual([hostSelector(A_IP)]);
      expect(child.localTs).toEqual([hostSelector(B_IP)]);
      expect(p.ipA.sad.all()[0]!.inbound.spi).toBe(child.outbound.spi);
      // A TCP transfer through the tunnel.
      const data = testData(300_000, 7);
      const t = await transfer(p, data, { maxMs: 30_000 });
      expect(t.done).toBe(true);
      expect(sha256(t.got)).toBe(sha256(data));
      // On the link: IKE on UDP 500 and ESP, no TCP in the clear.
      expect(seen.some((s) => s.proto === PROTO_ESP)).toBe(true);
      expect(seen.filter((s) => s.proto === 6)).toEqual([]);
      expect(seen.every((s) => s.proto === PROTO_ESP || (s.proto === 17 && s.dport === 500))).toBe(true);
      expect(child.inbound.stats.packets).toBeGreaterThan(100);
      expect(child.outbound.stats.packets).toBeGreaterThan(10);
      // Events and the identity API.
      expect(p.eventsB.map((e) => e.kind)).toEqual(['ike-sa-up', 'child-sa-up']);
      const by = p.ipB.sasByIdentity().get('client1@lab')!;
      expect(by.ike.length).toBe(1);
      expect(by.children).toEqual([child]);
    });
  }

  test('a wrong PSK ends in AUTHENTICATION_FAILED; nothing is installed', async () => {
    const p = makeIpsecPair();
    const r = await connect(p, { psk: Buffer.from('wrong') });
    expect(r.result.failed).toBe('AUTHENTICATION_FAILED');
    expect(p.ipB.counters.FsIkeAuthFailures).toBe(1);
    expect(p.ipB.sad.size).toBe(0);
    expect(p.ipA.sad.size).toBe(0);
    expect(p.eventsB.map((e) => e.kind)).toEqual(['auth-failed']);
    // An unknown identity fails the same way.
    const r2 = await connect(p, { id: 'mallory@lab' });
    expect(r2.result.failed).toBe('AUTHENTICATION_FAILED');
    expect(p.ipB.counters.FsIkeAuthFailures).toBe(2);
    // The half-open count is back to zero once the lingering SAs go.
    await runFor(p.clock, 12_000, 50);
    expect(p.ipB.ike.halfOpenCount).toBe(0);
    expect(p.ipB.ike.all()).toEqual([]);
  });

  test('INVALID_KE_PAYLOAD: the responder names its group, the initiator retries with it', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.ike.proposals = [ike('aes128-sha256-modp2048')];
      },
    });
    p.cfgA.ike.proposals = [ike('aes128-sha256-ecp256-modp2048')];
    const r = await connect(p, { keGroup: DhGroup.ECP256 });
    expect(r.result.failed).toBeUndefined();
    expect(p.ipB.counters.FsIkeInvalidKe).toBe(1);
    expect(p.ipB.ike.all()[0]!.suite.dh).toBe(DhGroup.MODP2048);
  });

  test('no common proposal: NO_PROPOSAL_CHOSEN', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.ike.proposals = [ike('aes256-sha512-modp4096')];
      },
    });
    p.cfgA.ike.proposals = [ike('aes128-sha1-modp2048')];
    const r = await connect(p);
    expect(r.result.failed).toBe('NO_PROPOSAL_CHOSEN');
    expect(p.ipB.ike.all()).toEqual([]);
  });

  test('cookies under load (RFC 7296 2.6): past the half-open threshold a COOKIE is required, and the initiator that returns it gets in', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.ike.cookieThreshold = 2;
      },
    });
    // Two half-open SAs from a flood of IKE_SA_INIT requests that never continue.
    for (let i = 0; i < 2; i++) {
      const fake = initiateFromA(p, {});
      // Drop everything A would send after IKE_SA_INIT for these.
      void fake;
    }
    p.link.dropFilter = (pkt) => pkt[9] === 17 && pkt.readUInt16BE(20) === 500 && pkt.length > 28 + IKE_HEADER && pkt[28 + 18] === Exchange.IKE_AUTH;
    await runUntil(p.clock, () => p.ipB.ike.halfOpenCount === 2, 5000);
    p.link.dropFilter = undefined;
    const r = await connect(p);
    expect(r.result.failed).toBeUndefined();
    expect(p.ipB.counters.FsIkeCookiesSent).toBe(1);
    expect(p.ipB.ike.all().filter((s) => s.state === 'established').length).toBe(1);
    // A full IKE_SA_INIT with a forged cookie is refused and answered with a fresh cookie.
    const before = { refused: p.ipB.counters.FsIkeCookiesRefused, sent: p.ipB.counters.FsIkeCookiesSent, sas: p.ipB.ike.all().length };
    const kex = new KeyExchange(DhGroup.MODP2048);
    const msg = emitIkeMessage(
      {
        spiI: Buffer.from('0102030405060708', 'hex'),
        spiR: Buffer.alloc(8),
        major: 2,
        minor: 0,
        exchange: Exchange.IKE_SA_INIT,
        flags: IkeFlag.INITIATOR,
        messageId: 0,
      },
      [
        { type: Payload.NOTIFY, protocol: 0, spi: Buffer.alloc(0), notifyType: Notify.COOKIE, data: Buffer.alloc(17, 9) },
        { type: Payload.SA, proposals: proposalsFromSpecs([ike('aes128-sha256-modp2048')], ProtocolId.IKE, Buffer.alloc(0)) },
        { type: Payload.KE, group: DhGroup.MODP2048, data: kex.publicKey },
        { type: Payload.NONCE, data: Buffer.alloc(32, 1) },
      ],
    );
    injectUdp(p, 500, msg);
    expect(p.ipB.counters.FsIkeCookiesRefused).toBe(before.refused + 1);
    expect(p.ipB.counters.FsIkeCookiesSent).toBe(before.sent + 1);
    expect(p.ipB.ike.all().length).toBe(before.sas);
  });

  test('the responder answers a retransmitted request from its kept response (message IDs, 2.1)', async () => {
    const p = makeIpsecPair();
    // Lose B's first IKE_AUTH response: A retransmits after its timeout, B resends what it kept.
    let dropped = 0;
    p.link.dropFilter = (pkt, dir) => {
      if (dir === 'b->a' && pkt[9] === 17 && pkt[28 + 18] === Exchange.IKE_AUTH && dropped === 0) {
        dropped++;
        return true;
      }
      return false;
    };
    const r = await connect(p, {}, 20_000);
    expect(r.result.failed).toBeUndefined();
    expect(dropped).toBe(1);
    expect(p.ipA.counters.FsIkeRetransmits).toBeGreaterThanOrEqual(1);
    expect(p.ipB.counters.FsIkeRetransmitsAnswered).toBeGreaterThanOrEqual(1);
    // Processed once: one IKE SA, one child.
    expect(p.ipB.sad.size).toBe(1);
    expect(p.ipB.counters.FsIkeSasEstablished).toBe(1);
  });

  test('child SA rekey (CREATE_CHILD_SA, REKEY_SA) with and without PFS; traffic keeps flowing', async () => {
    const p = makeIpsecPair();
    const r = await connect(p);
    const ikeA = r.result.ike!;
    for (const pfs of [0, DhGroup.MODP2048]) {
      const oldA = p.ipA.sad.all()[0]!;
      const oldSpiOnB = p.ipB.sad.all()[0]!.inbound.spi;
      p.ipA.ike.rekeyChild(ikeA, oldA, p.clock.now, pfs);
      await runUntil(p.clock, () => p.ipB.sad.size === 1 && p.ipB.sad.all()[0]!.inbound.spi !== oldSpiOnB, 5000);
      expect(p.ipB.sad.size).toBe(1);
      expect(p.ipA.sad.size).toBe(1);
      const nb = p.ipB.sad.all()[0]!;
      expect(nb.rekeyOf).toBeDefined();
      expect(nb.suite.dh).toBe(pfs);
      expect(nb.identity.value).toBe('client1@lab');
      const data = testData(50_000, pfs + 3);
      const t = await transfer(p, data, { port: 9100 + pfs });
      expect(t.done).toBe(true);
      expect(sha256(t.got)).toBe(sha256(data));
      expect(nb.inbound.stats.packets).toBeGreaterThan(0);
    }
    expect(p.eventsB.filter((e) => e.kind === 'child-sa-rekeyed').length).toBe(2);
    expect(p.eventsB.filter((e) => e.kind === 'child-sa-down').length).toBe(2);
  });

  test('IKE SA rekey (2.18): the children move to the new IKE SA, the old one is deleted', async () => {
    const p = makeIpsecPair();
    const r = await connect(p);
    const oldB = p.ipB.ike.all()[0]!;
    const child = p.ipB.sad.all()[0]!;
    p.ipA.ike.rekeyIke(r.result.ike!, p.clock.now);
    await runUntil(p.clock, () => p.ipB.ike.all().length === 1 && p.ipB.ike.all()[0] !== oldB, 5000);
    const newB = p.ipB.ike.all()[0]!;
    expect(newB).not.toBe(oldB);
    expect(newB.identity!.value).toBe('client1@lab');
    expect([...newB.children]).toEqual([child]);
    expect(child.ikeSaId).toBe(newB.id);
    expect(p.eventsB.map((e) => e.kind)).toContain('ike-sa-rekeyed');
    // The new IKE SA works: a liveness check and then a child rekey on it.
    const newA = p.ipA.ike.all().find((s) => s.state === 'established')!;
    let alive: boolean | undefined;
    p.ipA.ike.liveness(newA, p.clock.now, (ok) => {
      alive = ok;
    });
    await runUntil(p.clock, () => alive !== undefined, 5000);
    expect(alive).toBe(true);
    p.ipA.ike.rekeyChild(newA, p.ipA.sad.all()[0]!, p.clock.now);
    await runUntil(p.clock, () => p.ipB.sad.all()[0] !== child, 5000);
    expect(p.ipB.sad.size).toBe(1);
    const t = await transfer(p, testData(20_000));
    expect(t.done).toBe(true);
  });

  test('INFORMATIONAL delete from the initiator: child, then IKE SA', async () => {
    const p = makeIpsecPair();
    const r = await connect(p);
    p.ipA.ike.deleteChild(r.result.ike!, p.ipA.sad.all()[0]!, 'test', p.clock.now);
    await runUntil(p.clock, () => p.ipB.sad.size === 0, 5000);
    expect(p.ipB.sad.size).toBe(0);
    expect(p.ipB.ike.all().length).toBe(1);
    p.ipA.ike.deleteIke(r.result.ike!, 'test', p.clock.now);
    await runUntil(p.clock, () => p.ipB.ike.all().length === 0, 5000);
    expect(p.eventsB.map((e) => e.kind)).toEqual(['ike-sa-up', 'child-sa-up', 'child-sa-down', 'ike-sa-down']);
    expect(p.ipB.sasByIdentity().size).toBe(0);
  });

  test('INITIAL_CONTACT: the same identity connecting afresh replaces its old SAs', async () => {
    const p = makeIpsecPair();
    await connect(p);
    const first = p.ipB.ike.all()[0]!;
    // The client "restarted": A forgets everything without telling B.
    p.ipA.ike.clear();
    const r = await connect(p, { initialContact: true });
    expect(r.result.failed).toBeUndefined();
    expect(p.ipB.counters.FsIkeInitialContacts).toBe(1);
    const live = p.ipB.ike.all();
    expect(live.length).toBe(1);
    expect(live[0]).not.toBe(first);
    expect(p.ipB.sad.size).toBe(1);
    const down = p.eventsB.find((e) => e.kind === 'ike-sa-down');
    expect(down && 'reason' in down ? down.reason : '').toMatch(/INITIAL_CONTACT/);
    // Without INITIAL_CONTACT a second SA of the same identity is kept next to the first.
    p.ipA.ike.clear();
    await connect(p, { initialContact: false });
    expect(p.ipB.ike.all().length).toBe(2);
  });

  test('liveness: the responder checks an idle peer and gives up on a dead one', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.ike.dpdMs = 5000;
        c.ike.retransmitMs = 500;
        c.ike.retransmitTries = 3;
      },
    });
    await connect(p);
    await runFor(p.clock, 6000, 50);
    expect(p.ipB.counters.FsIkeDpdSent).toBe(1);
    expect(p.ipB.ike.all()[0]!.state).toBe('established');
    // The peer goes silent.
    p.link.dropFilter = () => true;
    await runFor(p.clock, 12_000, 50);
    expect(p.ipB.counters.FsIkeDeadPeers).toBe(1);
    expect(p.ipB.ike.all()).toEqual([]);
    expect(p.ipB.sad.size).toBe(0);
  });

  test('hard lifetimes: an expired child SA is deleted on both sides', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.esp.lifetimeMs = 3000;
        c.ike.dpdMs = 0;
      },
    });
    await connect(p);
    expect(p.ipA.sad.size).toBe(1);
    await runFor(p.clock, 4000, 50);
    expect(p.ipB.counters.FsChildSasExpired).toBe(1);
    expect(p.ipB.sad.size).toBe(0);
    expect(p.ipA.sad.size).toBe(0);
  });

  test('transport mode when the initiator asks and policy accepts; tunnel when refused', async () => {
    const p = makeIpsecPair();
    const r = await connect(p, { transport: true });
    expect(r.result.child!.mode).toBe('transport');
    expect(p.ipB.sad.all()[0]!.mode).toBe('transport');
    const t = await transfer(p, testData(100_000, 5));
    expect(t.done).toBe(true);
    expect(sha256(t.got)).toBe(sha256(testData(100_000, 5)));
    const q = makeIpsecPair({
      b: (c) => {
        c.esp.transportMode = 'refuse';
      },
    });
    const r2 = await connect(q, { transport: true });
    expect(r2.result.child!.mode).toBe('tunnel');
  });

  test('traffic selectors are narrowed to what the peer config allows; nothing allowed is TS_UNACCEPTABLE', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.peers = [peer('client1@lab', 'labsecret', { localTs: [parseSelector('198.18.0.2/32[tcp/9000]')] })];
      },
    });
    const r = await connect(p, { remoteTs: [parseSelector('198.18.0.0/24')] });
    expect(r.result.child).toBeTruthy();
    const c = p.ipB.sad.all()[0]!;
    expect(c.localTs).toEqual([parseSelector('198.18.0.2/32[tcp/9000]')]);
    const q = makeIpsecPair({
      b: (c2) => {
        c2.peers = [peer('client1@lab', 'labsecret', { remoteTs: [parseSelector('198.18.9.0/24')] })];
      },
    });
    const r2 = await connect(q);
    expect(r2.result.ike).toBeTruthy();
    expect(r2.result.child).toBeNull();
    expect(q.ipB.counters.FsIkeTsUnacceptable).toBe(1);
  });

  test('NAT traversal: IKE from port 4500 means ESP in UDP 4500 with the non-ESP marker for IKE', async () => {
    const p = makeIpsecPair();
    const seen = watchLink(p);
    const r = await connect(p, { local: { addr: A_IP, port: 4500 }, remote: { addr: B_IP, port: 4500 } });
    expect(r.result.failed).toBeUndefined();
    const c = p.ipB.sad.all()[0]!;
    expect(c.encap).toBe(true);
    const t = await transfer(p, testData(30_000));
    expect(t.done).toBe(true);
    expect(seen.every((s) => s.proto === 17 && s.dport === 4500)).toBe(true);
    expect(p.ipB.counters.FsEspInUdpEncap).toBeGreaterThan(0);
  });

  test('the SPD: discard and bypass entries, and cleartext that an SA covers is refused', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.policies = [{ name: 'no-9999', local: parseSelector('0.0.0.0/0[tcp/9999]'), remote: parseSelector('0.0.0.0/0'), action: 'discard' }];
      },
    });
    // Before any SA: plaintext TCP passes (default bypass), except the discarded port.
    const ok = await transfer(p, testData(1000), { port: 9001, maxMs: 5000 });
    expect(ok.done).toBe(true);
    const blocked = await transfer(p, testData(1000), { port: 9999, maxMs: 3000 });
    expect(blocked.done).toBe(false);
    expect(p.ipB.counters.XfrmInPolBlock).toBeGreaterThan(0);
    expect(p.ipB.spd.describe().entries[0]!.hits).toBeGreaterThan(0);
    // With an SA between A and B, cleartext from A (A's IPsec switched off) is refused.
    await connect(p);
    p.a.ipsec = null;
    const before = p.ipB.counters.XfrmInTmplMismatch;
    const clear = await transfer(p, testData(1000), { port: 9002, maxMs: 3000 });
    expect(clear.done).toBe(false);
    expect(p.ipB.counters.XfrmInTmplMismatch).toBeGreaterThan(before);
  });

  test('a static protect entry without an SA: outbound dropped (XfrmOutNoStates), inbound cleartext refused', async () => {
    const p = makeIpsecPair({
      b: (c) => {
        c.policies = [
          { name: 'in9003', local: parseSelector('0.0.0.0/0[tcp/9003]'), remote: parseSelector('0.0.0.0/0'), action: 'protect' },
          { name: 'out9005', local: parseSelector('0.0.0.0/0'), remote: parseSelector('0.0.0.0/0[tcp/9005]'), action: 'protect' },
        ];
      },
    });
    const t = await transfer(p, testData(1000), { port: 9003, maxMs: 3000 });
    expect(t.done).toBe(false);
    expect(p.ipB.counters.XfrmInTmplMismatch).toBeGreaterThan(0);
    // From B's side: a connection B opens to port 9005 on A goes nowhere either.
    const before = p.ipB.counters.XfrmOutNoStates;
    p.netB.connect({ host: '198.18.0.1', port: 9005 }).on('error', () => {});
    await runFor(p.clock, 100);
    expect(p.ipB.counters.XfrmOutNoStates).toBeGreaterThan(before);
    // Other ports are not affected.
    expect((await transfer(p, testData(1000), { port: 9004, maxMs: 3000 })).done).toBe(true);
  });

  test('garbage never crashes: malformed IKE, truncated and unknown-SPI ESP, keepalives, replays are counted', async () => {
    const p = makeIpsecPair();
    await connect(p);
    const c = p.ipB.counters;
    for (let i = 0; i < 300; i++) {
      const n = (i * 37) % 200;
      const junk = Buffer.from(testData(n, i + 1));
      injectUdp(p, 500, junk);
      injectUdp(p, 4500, Buffer.concat([Buffer.alloc(4), junk]), 4500);
      injectUdp(p, 4500, junk, 4500);
      injectEsp(p, junk);
    }
    // Valid header, nonsense payloads, for every exchange type, with the live SA's SPIs.
    const sa = p.ipB.ike.all()[0]!;
    for (const ex of [34, 35, 36, 37, 99]) {
      for (let len = 0; len < 60; len += 7) {
        const m = Buffer.alloc(IKE_HEADER + len, 0xa5);
        sa.spiI.copy(m, 0);
        sa.spiR.copy(m, 8);
        m[16] = 46;
        m[17] = 0x20;
        m[18] = ex;
        m[19] = IkeFlag.INITIATOR;
        m.writeUInt32BE(1, 20);
        m.writeUInt32BE(m.length, 24);
        injectUdp(p, 500, m);
      }
    }
    injectUdp(p, 4500, Buffer.from([0xff]), 4500);
    expect(c.FsNatKeepalives).toBe(1);
    expect(c.XfrmInNoStates).toBeGreaterThan(100);
    expect(c.XfrmInHdrError).toBeGreaterThan(0);
    expect(c.FsIkeInvalidSyntax + c.FsIkeUnknownSpi + c.FsIkeInvalidMessageId + c.FsIkeIntegrityFailures).toBeGreaterThan(300);
    // The tunnel still works.
    const t = await transfer(p, testData(10_000));
    expect(t.done).toBe(true);
  });
});
