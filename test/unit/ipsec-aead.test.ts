/**
 * ESP's AES-GCM on one OpenSSL context per SA (stack/ipsec/aead.ts) against node:crypto,
 * and the output path that cuts a TCP super-segment straight into ESP packets
 * (protectTcpSegment) against cutting first and protecting each segment.
 */
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { VirtioNetHdr, type OffloadMeta } from '../../drivers/device';
import { newTcp4GsoLayout, parseTcp4Gso, segmentTcp4 } from '../../drivers/gso';
import { aeadAddon, newCbcHmac, newGcm } from '../../stack/ipsec/aead';
import { EspSa, OpenResult, espOpen, type EspKeys, type OpenedPacket } from '../../stack/ipsec/esp';
import { protectPacket, protectTcpSegment, type OuterSpec } from '../../stack/ipsec/packet';
import { Encr, Integ } from '../../stack/ipsec/transforms';
import { internetChecksum } from '../../stack/wire/checksum';

describe('AES-GCM context', () => {
  test('the addon is built and in use (make build builds it)', () => {
    expect(aeadAddon()).toBe('native');
  });

  for (const keyLen of [16, 24, 32]) {
    test(`seal and open agree with node:crypto, AES-${keyLen * 8}-GCM, every length 0..80 and 1420`, () => {
      const key = randomBytes(keyLen);
      const g = newGcm(key)!;
      for (const len of [...Array.from({ length: 81 }, (_, i) => i), 1420]) {
        const nonce = randomBytes(12),
          aad = randomBytes(12),
          pt = randomBytes(len);
        const aadLen = len % 2 ? 8 : 12;
        const c = createCipheriv(`aes-${keyLen * 8}-gcm` as 'aes-128-gcm', key, nonce, { authTagLength: 16 });
        c.setAAD(aad.subarray(0, aadLen));
        const want = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
        const buf = Buffer.alloc(3 + len + 16);
        pt.copy(buf, 3);
        expect(g.seal(nonce, aad, aadLen, buf, 3, len, 3 + len)).toBe(true);
        expect(buf.subarray(3).equals(want)).toBe(true);
        const back = Buffer.alloc(len);
        expect(g.open(nonce, aad, aadLen, buf, 3, len, 3 + len, back, 0)).toBe(true);
        expect(back.equals(pt)).toBe(true);
        // Any flipped bit of ciphertext, tag or AAD fails.
        const bad = Buffer.from(buf);
        bad[3 + Math.floor(Math.random() * (len + 16))]! ^= 1;
        expect(g.open(nonce, aad, aadLen, bad, 3, len, 3 + len, back, 0)).toBe(false);
        const badAad = Buffer.from(aad);
        badAad[0]! ^= 0x80;
        expect(g.open(nonce, badAad, aadLen, buf, 3, len, 3 + len, back, 0)).toBe(false);
      }
    });
  }

  test('ranges outside the buffers throw instead of writing past them', () => {
    const g = newGcm(randomBytes(16))!;
    const n = Buffer.alloc(12),
      a = Buffer.alloc(8),
      b = Buffer.alloc(100);
    expect(() => g.seal(n, a, 8, b, 0, 90, 85)).toThrow(RangeError);
    expect(() => g.seal(n, a, 9, b, 0, 10, 10)).toThrow(RangeError);
    expect(() => g.seal(n, a, 8, b, -1, 10, 20)).toThrow(RangeError);
    expect(() => g.open(n, a, 8, b, 0, 50, 50, Buffer.alloc(49), 0)).toThrow(RangeError);
    expect(() => new (Object.getPrototypeOf(g).constructor as new (k: Buffer) => unknown)(Buffer.alloc(15))).toThrow(RangeError);
  });
});

describe('AES-CBC + HMAC context', () => {
  const HASHES = [
    ['sha1', 20, 12],
    ['sha256', 32, 16],
    ['sha384', 48, 24],
    ['sha512', 64, 32],
  ] as const;
  for (const [hash, keyLen, icvLen] of HASHES) {
    for (const encLen of [16, 32]) {
      test(`seal and open agree with node:crypto, AES-${encLen * 8}-CBC + HMAC-${hash}, with and without the ESN high half`, () => {
        const ek = randomBytes(encLen),
          ik = randomBytes(keyLen);
        const g = newCbcHmac(ek, hash, ik)!;
        for (const blocks of [1, 2, 5, 89]) {
          for (const seqHigh of [-1, 0, 7, 0xfffffffe]) {
            // ESP layout: header (8) | IV (16) | ciphertext | ICV, after 5 bytes of headroom.
            const hdr = 5,
              iv = hdr + 8,
              ct = iv + 16,
              len = blocks * 16,
              icv = ct + len;
            const buf = randomBytes(icv + icvLen);
            const orig = Buffer.from(buf);
            const c = createCipheriv(`aes-${encLen * 8}-cbc`, ek, orig.subarray(iv, iv + 16));
            c.setAutoPadding(false);
            const wantCt = Buffer.concat([c.update(orig.subarray(ct, icv)), c.final()]);
            expect(g.seal(buf, hdr, iv, ct, len, icv, icvLen, seqHigh)).toBe(true);
            expect(buf.subarray(ct, icv).equals(wantCt)).toBe(true);
            const m = createHmac(hash, ik).update(buf.subarray(hdr, icv));
            if (seqHigh >= 0) {
              const hi = Buffer.alloc(4);
              hi.writeUInt32BE(seqHigh);
              m.update(hi);
            }
            expect(buf.subarray(icv, icv + icvLen).equals(m.digest().subarray(0, icvLen))).toBe(true);
            const back = Buffer.alloc(len);
            expect(g.open(buf, hdr, iv, ct, len, icv, icvLen, seqHigh, back, 0)).toBe(true);
            expect(back.equals(orig.subarray(ct, icv))).toBe(true);
            // The ICV covers header, IV, ciphertext and the high half: change any and it fails.
            const bad = Buffer.from(buf);
            bad[hdr + Math.floor(Math.random() * (icv + icvLen - hdr))]! ^= 4;
            expect(g.open(bad, hdr, iv, ct, len, icv, icvLen, seqHigh, back, 0)).toBe(false);
            expect(g.open(buf, hdr, iv, ct, len, icv, icvLen, seqHigh === -1 ? 0 : seqHigh + 1, back, 0)).toBe(false);
          }
        }
      });
    }
  }

  test('bad keys, hashes and ranges throw', () => {
    expect(() => newCbcHmac(Buffer.alloc(15), 'sha256', Buffer.alloc(32))).toThrow(RangeError);
    expect(() => newCbcHmac(Buffer.alloc(16), 'md5', Buffer.alloc(32))).toThrow(RangeError);
    const g = newCbcHmac(Buffer.alloc(16), 'sha256', Buffer.alloc(32))!;
    const b = Buffer.alloc(100);
    expect(() => g.seal(b, 0, 8, 24, 17, 41, 16, -1)).toThrow(RangeError); // not whole blocks
    expect(() => g.seal(b, 0, 8, 24, 64, 88, 16, -1)).toThrow(RangeError); // ICV past the end
    expect(() => g.seal(b, 0, 8, 24, 32, 56, 33, -1)).toThrow(RangeError); // ICV longer than the hash
    expect(() => g.open(b, 0, 8, 24, 32, 56, 16, -1, Buffer.alloc(31), 0)).toThrow(RangeError);
  });
});

function keys(encKey: Buffer): EspKeys {
  return { encr: Encr.AES_GCM_16, keyBits: 128, integ: Integ.NONE, esn: false, encKey, integKey: Buffer.alloc(0) };
}

/** A TCP/IPv4 super-segment of `payload` bytes with TS options, checksum fields left as the stack leaves them for offload. */
function superSegment(payload: number, flags: number): Buffer {
  const ihl = 20,
    thl = 32;
  const p = Buffer.alloc(ihl + thl + payload);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(0x1234, 4);
  p[6] = 0x40;
  p[8] = 64;
  p[9] = 6;
  p.writeUInt32BE(0xc6120002, 12);
  p.writeUInt32BE(0xc6123201, 16);
  p.writeUInt16BE(5201, ihl);
  p.writeUInt16BE(40000, ihl + 2);
  p.writeUInt32BE(0xfffff000, ihl + 4);
  p.writeUInt32BE(77, ihl + 8);
  p[ihl + 12] = (thl / 4) << 4;
  p[ihl + 13] = flags;
  p.writeUInt16BE(65535, ihl + 14);
  p[ihl + 20] = 1;
  p[ihl + 21] = 1;
  p[ihl + 22] = 8;
  p[ihl + 23] = 10;
  randomBytes(payload).copy(p, ihl + thl);
  return p;
}

describe('protectTcpSegment', () => {
  test('cutting into the ESP packet gives the bytes of cutting first, and each opens to a valid segment', () => {
    const k = randomBytes(20);
    const a = new EspSa(0xabc, 'out', keys(k)),
      b = new EspSa(0xabc, 'out', keys(k)),
      inb = new EspSa(0xabc, 'in', keys(k));
    const spec: OuterSpec = { mode: 'tunnel', src: 0xc6120002, dst: 0xc6123201, encap: { sport: 4500, dport: 4500 }, ident: 9 };
    const pkt = superSegment(10 * 1388 + 500, 0x18 | 0x80 | 0x01);
    const meta: OffloadMeta = { flags: VirtioNetHdr.F_NEEDS_CSUM, gsoType: VirtioNetHdr.GSO_TCPV4, hdrLen: 52, gsoSize: 1388, csumStart: 20, csumOffset: 16 };
    const l = newTcp4GsoLayout();
    expect(parseTcp4Gso(pkt, meta, l)).toBe(true);
    expect(l.count).toBe(11);
    const segs = segmentTcp4(pkt, meta);
    expect(segs.length).toBe(11);
    const o: OpenedPacket = { payload: Buffer.alloc(0), nextHeader: 0, seq: 0 };
    for (let i = 0; i < l.count; i++) {
      const fused = protectTcpSegment(a, pkt, l, i, spec)!;
      const cut = protectPacket(b, segs[i]!, spec)!;
      expect(fused.equals(cut)).toBe(true);
      expect(espOpen(inb, fused, 28, fused.length - 28, o)).toBe(OpenResult.Ok);
      const inner = o.payload;
      expect(inner.equals(segs[i]!)).toBe(true);
      expect(internetChecksum(inner, 0, 20)).toBe(0);
      // ACK on all, FIN and PSH only on the last, CWR only on the first; sequence numbers advance by the payload (and wrap).
      expect(inner[33]).toBe(i === 0 ? 0x90 : i === l.count - 1 ? 0x19 : 0x10);
      expect(inner.readUInt32BE(24)).toBe((0xfffff000 + i * 1388) >>> 0);
    }
  });
});
