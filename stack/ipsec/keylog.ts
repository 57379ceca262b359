/**
 * `--ipsec-keylog DIR`: the keys of every SA in the two tables Wireshark reads, so a
 * capture opens decrypted down to the inner TCP.
 *
 *   DIR/esp_sa                    Wireshark's ESP SA table (Preferences > Protocols > ESP):
 *                                 protocol, outer source, outer destination, SPI, cipher + key, integrity + key
 *   DIR/ikev2_decryption_table    its IKEv2 table: SPIi, SPIr, SK_ei, SK_er, cipher, SK_ai, SK_ar, integrity
 *   DIR/preferences               turns ESP decryption on (esp.enable_encryption_decode)
 *
 * DIR is a complete Wireshark configuration directory:
 *   WIRESHARK_CONFIG_DIR=DIR tshark -r capture.pcap          (or: wireshark with the same variable)
 * Lines are appended as SAs come up (and rekey), never rewritten, so a capture of a
 * long run decrypts across rekeys. The files hold secrets: created mode 0600.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatIpv4 } from '../wire/addr';
import type { ChildSa } from './sad';
import { Encr, Integ } from './transforms';
import type { IkeSa } from './ike/ike-sa';

const ESP_ENCR: Record<number, (bits: number) => string> = {
  [Encr.AES_GCM_16]: () => 'AES-GCM with 16 octet ICV [RFC4106]',
  [Encr.AES_CBC]: () => 'AES-CBC [RFC3602]',
};
const ESP_INTEG: Record<number, string> = {
  [Integ.NONE]: 'NULL',
  [Integ.HMAC_SHA1_96]: 'HMAC-SHA-1-96 [RFC2404]',
  [Integ.HMAC_SHA2_256_128]: 'HMAC-SHA-256-128 [RFC4868]',
  [Integ.HMAC_SHA2_384_192]: 'HMAC-SHA-384-192 [RFC4868]',
  [Integ.HMAC_SHA2_512_256]: 'HMAC-SHA-512-256 [RFC4868]',
};
const IKE_ENCR: Record<number, (bits: number) => string> = {
  [Encr.AES_GCM_16]: (b) => `AES-GCM-${b} with 16 octet ICV [RFC5282]`,
  [Encr.AES_CBC]: (b) => `AES-CBC-${b} [RFC3602]`,
};
const IKE_INTEG: Record<number, string> = {
  [Integ.NONE]: 'NONE [RFC4306]',
  [Integ.HMAC_SHA1_96]: 'HMAC_SHA1_96 [RFC2404]',
  [Integ.HMAC_SHA2_256_128]: 'HMAC_SHA2_256_128 [RFC4868]',
  [Integ.HMAC_SHA2_384_192]: 'HMAC_SHA2_384_192 [RFC4868]',
  [Integ.HMAC_SHA2_512_256]: 'HMAC_SHA2_512_256 [RFC4868]',
};

const q = (s: string) => `"${s}"`;

/** One line of Wireshark's esp_sa table for one direction of a child SA. */
export function espSaLine(src: number, dst: number, spi: number, encr: number, keyBits: number, encKey: Buffer, integ: number, integKey: Buffer): string {
  return [
    q('IPv4'),
    q(formatIpv4(src)),
    q(formatIpv4(dst)),
    q(`0x${spi.toString(16).padStart(8, '0')}`),
    q(ESP_ENCR[encr]!(keyBits)),
    q(`0x${encKey.toString('hex')}`),
    q(ESP_INTEG[integ] ?? 'NULL'),
    q(integKey.length ? `0x${integKey.toString('hex')}` : ''),
  ].join(',');
}

/**
 * One line of Wireshark's ikev2_decryption_table. Its SPI and key fields are byte
 * fields, which a UAT file holds as bare hex (quoted, Wireshark refuses them); the
 * algorithm fields are quoted names.
 */
export function ikev2Line(ike: IkeSa): string {
  const k = ike.keys;
  return [
    ike.spiI.toString('hex'),
    ike.spiR.toString('hex'),
    k.ei.toString('hex'),
    k.er.toString('hex'),
    q(IKE_ENCR[ike.suite.encr]!(ike.suite.keyBits)),
    k.ai.toString('hex'),
    k.ar.toString('hex'),
    q(IKE_INTEG[ike.suite.integ] ?? 'NONE [RFC4306]'),
  ].join(',');
}

export class KeyLog {
  readonly espFile: string;
  readonly ikeFile: string;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.espFile = path.join(dir, 'esp_sa');
    this.ikeFile = path.join(dir, 'ikev2_decryption_table');
    for (const f of [this.espFile, this.ikeFile]) fs.closeSync(fs.openSync(f, 'a', 0o600));
    const prefs = path.join(dir, 'preferences');
    if (!fs.existsSync(prefs)) fs.writeFileSync(prefs, '# written by faultstack --ipsec-keylog\nesp.enable_encryption_decode: TRUE\n', { mode: 0o600 });
  }

  ikeSa(ike: IkeSa): void {
    this.append(this.ikeFile, ikev2Line(ike));
  }

  /** Both directions of a child SA: inbound (peer to us) and outbound. */
  child(c: ChildSa): void {
    const i = c.inbound.keys,
      o = c.outbound.keys;
    this.append(this.espFile, espSaLine(c.remote.addr, c.local.addr, c.inbound.spi, i.encr, i.keyBits, i.encKey, i.integ, i.integKey));
    this.append(this.espFile, espSaLine(c.local.addr, c.remote.addr, c.outbound.spi, o.encr, o.keyBits, o.encKey, o.integ, o.integKey));
  }

  private append(file: string, line: string): void {
    // A few hundred bytes per SA set-up: synchronous, so the keys are on disk before the
    // first packet under them can be captured.
    fs.appendFileSync(file, line + '\n');
  }
}
