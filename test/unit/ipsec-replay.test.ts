/** The anti-replay window (RFC 4303 3.4.3, Appendix A) alone and through ESP input. */
import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { EspSa, OpenResult, espOpen, espSeal, type EspKeys } from '../../stack/ipsec/esp';
import { ReplayVerdict, ReplayWindow } from '../../stack/ipsec/replay';
import { Encr, Integ } from '../../stack/ipsec/transforms';

function accept(w: ReplayWindow, seq: number): ReplayVerdict {
  const v = w.check(seq >>> 0);
  if (v === ReplayVerdict.Ok) w.update(w.seq);
  return v;
}

describe('replay window', () => {
  test('refuses a window under 64 or not a multiple of 32', () => {
    expect(() => new ReplayWindow(32)).toThrow(/multiple of 32 from 64/);
    expect(() => new ReplayWindow(100)).toThrow(/multiple of 32/);
    expect(new ReplayWindow(64).size).toBe(64);
  });

  test('in order, duplicates, out of order inside the window, too old outside it', () => {
    const w = new ReplayWindow(64);
    expect(accept(w, 0)).toBe(ReplayVerdict.Zero);
    for (let s = 1; s <= 10; s++) expect(accept(w, s)).toBe(ReplayVerdict.Ok);
    expect(accept(w, 10)).toBe(ReplayVerdict.Replay);
    expect(accept(w, 3)).toBe(ReplayVerdict.Replay);
    // Jump ahead, then fill a gap behind the right edge.
    expect(accept(w, 70)).toBe(ReplayVerdict.Ok);
    expect(accept(w, 40)).toBe(ReplayVerdict.Ok);
    expect(accept(w, 40)).toBe(ReplayVerdict.Replay);
    // The left edge is 70 - 64 + 1 = 7: 7 was seen before the jump and stays marked,
    // 6 is too old, 11 (never seen) is inside and accepted.
    expect(accept(w, 7)).toBe(ReplayVerdict.Replay);
    expect(accept(w, 6)).toBe(ReplayVerdict.TooOld);
    expect(accept(w, 11)).toBe(ReplayVerdict.Ok);
    expect(accept(w, 11)).toBe(ReplayVerdict.Replay);
    // A jump of more than a window clears everything behind.
    expect(accept(w, 1000)).toBe(ReplayVerdict.Ok);
    expect(accept(w, 999)).toBe(ReplayVerdict.Ok);
    expect(accept(w, 1000 - 64)).toBe(ReplayVerdict.TooOld);
    expect(accept(w, 1000 - 63)).toBe(ReplayVerdict.Ok);
  });

  test('every sequence number of a shuffled run is accepted exactly once (window 128)', () => {
    const w = new ReplayWindow(128);
    const order: number[] = [];
    // Blocks of 100 delivered in random order inside each block: always within the window.
    for (let b = 0; b < 50; b++) {
      const block = Array.from({ length: 100 }, (_, i) => b * 100 + i + 1);
      for (let i = block.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [block[i], block[j]] = [block[j]!, block[i]!];
      }
      order.push(...block);
    }
    let ok = 0;
    for (const s of order) if (accept(w, s) === ReplayVerdict.Ok) ok++;
    expect(ok).toBe(5000);
    let again = 0;
    for (let s = 4901; s <= 5000; s++) if (accept(w, s) === ReplayVerdict.Replay) again++;
    expect(again).toBe(100);
  });

  test('ESN: the high half is inferred across the 2^32 boundary (Appendix A2)', () => {
    const w = new ReplayWindow(64, true);
    w.update(2 ** 32 - 10);
    // Low half 3 lies beyond the right edge: next subspace.
    expect(w.check(3)).toBe(ReplayVerdict.Ok);
    expect(w.seq).toBe(2 ** 32 + 3);
    w.update(w.seq);
    // Low half 2^32 - 20 is inside the window, behind the edge: previous subspace (Case B).
    expect(w.check(2 ** 32 - 20)).toBe(ReplayVerdict.Ok);
    expect(w.seq).toBe(2 ** 32 - 20);
    // Sequence number 0 is valid with ESN once the high half is above 0.
    expect(w.check(0)).toBe(ReplayVerdict.Ok);
    expect(w.seq).toBe(2 ** 32);
  });
});

function gcmKeys(): EspKeys {
  return { encr: Encr.AES_GCM_16, keyBits: 128, integ: Integ.NONE, esn: false, encKey: randomBytes(20), integKey: Buffer.alloc(0) };
}

describe('replay protection through ESP input', () => {
  test('replays are dropped and counted; a forged high sequence number does not move the window', () => {
    const k = gcmKeys();
    const out = new EspSa(0x1001, 'out', k);
    const inb = new EspSa(0x1001, 'in', k, 64);
    const payload = randomBytes(100);
    const pkts = Array.from({ length: 5 }, () => espSeal(out, 4, payload, 0, payload.length, 0)!);
    const o = { payload: Buffer.alloc(0), nextHeader: 0, seq: 0 };
    for (const p of pkts) expect(espOpen(inb, p, 0, p.length, o)).toBe(OpenResult.Ok);
    for (const p of pkts) expect(espOpen(inb, p, 0, p.length, o)).toBe(OpenResult.Replay);
    expect(inb.stats.replayDrops).toBe(5);
    expect(inb.stats.packets).toBe(5);
    // A forged packet: sequence number 1,000,000 with a garbage ICV.
    const forged = Buffer.from(pkts[0]!);
    forged.writeUInt32BE(1_000_000, 4);
    expect(espOpen(inb, forged, 0, forged.length, o)).toBe(OpenResult.Integrity);
    expect(inb.replay!.top).toBe(5);
    // So packet 6 is still accepted.
    const p6 = espSeal(out, 4, payload, 0, payload.length, 0)!;
    expect(espOpen(inb, p6, 0, p6.length, o)).toBe(OpenResult.Ok);
  });

  test('without ESN the sender stops before the sequence number cycles (RFC 4303 3.3.3)', () => {
    const out = new EspSa(0x1002, 'out', gcmKeys());
    out.seq = 2 ** 32 - 2;
    expect(espSeal(out, 4, Buffer.alloc(10), 0, 10, 0)).not.toBeNull();
    expect(espSeal(out, 4, Buffer.alloc(10), 0, 10, 0)).toBeNull();
  });

  test('HMAC with ESN covers the high half after the payload (RFC 4303 2.2.1)', () => {
    // scapy does not implement this case (see ipsec-esp.test.ts); computed here from the RFC.
    const k: EspKeys = { encr: Encr.AES_CBC, keyBits: 128, integ: Integ.HMAC_SHA2_256_128, esn: true, encKey: randomBytes(16), integKey: randomBytes(32) };
    const out = new EspSa(0x1003, 'out', k);
    out.seq = 3 * 2 ** 32 + 6;
    const p = espSeal(out, 4, randomBytes(33), 0, 33, 0)!;
    const icv = p.subarray(p.length - 16);
    const hi = Buffer.alloc(4);
    hi.writeUInt32BE(3);
    const mac = createHmac('sha256', k.integKey)
      .update(p.subarray(0, p.length - 16))
      .update(hi)
      .digest()
      .subarray(0, 16);
    expect(icv.equals(mac)).toBe(true);
    const inb = new EspSa(0x1003, 'in', k);
    inb.replay!.update(3 * 2 ** 32 + 1);
    const o = { payload: Buffer.alloc(0), nextHeader: 0, seq: 0 };
    expect(espOpen(inb, p, 0, p.length, o)).toBe(OpenResult.Ok);
    expect(o.seq).toBe(3 * 2 ** 32 + 7);
  });
});
