/** The IPsec configuration file, --ipsec-psk, and `faultstack ipsec` rendering. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { buildRunOptions } from '../../bin/cli/commands/run';
import { renderIpsec } from '../../bin/cli/commands/ipsec';
import { loadIpsecConfig, pskPeer, IpsecConfigError } from '../../stack/ipsec/config';
import { parseSelector } from '../../stack/ipsec/ike/negotiate';
import { identityMatches, parseIdentity } from '../../stack/ipsec/ike/identity';
import { parseProposal, Encr, Integ, DhGroup, Prf } from '../../stack/ipsec/transforms';
import { IdType } from '../../stack/wire/ike';
import { usageMessage } from './helpers/usage';
import { REPO } from '../helpers/build';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-ipsec-cfg-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, text);
  return f;
}

function configError(text: string): string {
  const f = write('bad.yaml', text);
  try {
    loadIpsecConfig(f);
  } catch (e) {
    expect(e).toBeInstanceOf(IpsecConfigError);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    return m.replace(f, 'FILE');
  }
  throw new Error('expected an error');
}

describe('the --ipsec file', () => {
  test('a complete file', () => {
    const f = write(
      'good.yaml',
      [
        'local:',
        '  id: server@lab',
        'ike:',
        '  proposals: [aes128-sha256-modp2048, aes256gcm16-prfsha384-ecp256]',
        '  lifetime: 4h',
        '  dpd: 30s',
        '  cookie_threshold: 10',
        'esp:',
        '  proposals: aes128gcm16',
        '  lifetime: 3600',
        '  replay_window: 256',
        '  transport_mode: refuse',
        'peers:',
        '  - id: client1@lab',
        '    psk: labsecret',
        '    remote_ts: [198.18.60.0/24]',
        '    local_ts: ["198.18.0.2/32[tcp/80]"]',
        '  - id: "%any"',
        '    psk: 0x00ff',
        'policies:',
        '  - { name: nope, local: 0.0.0.0/0, remote: 198.18.99.0/24, action: discard }',
        'default: discard',
      ].join('\n'),
    );
    const c = loadIpsecConfig(f);
    expect(c.localId).toBe('server@lab');
    expect(c.ike.proposals.map((p) => p.text)).toEqual(['aes128-sha256-modp2048', 'aes256gcm16-prfsha384-ecp256']);
    expect(c.ike.lifetimeMs).toBe(4 * 3600_000);
    expect(c.ike.dpdMs).toBe(30_000);
    expect(c.ike.cookieThreshold).toBe(10);
    expect(c.esp.lifetimeMs).toBe(3600_000);
    expect(c.esp.replayWindow).toBe(256);
    expect(c.esp.transportMode).toBe('refuse');
    expect(c.peers[0]).toMatchObject({
      id: 'client1@lab',
      psk: Buffer.from('labsecret'),
      remoteTs: [parseSelector('198.18.60.0/24')],
      localTs: [parseSelector('198.18.0.2/32[tcp/80]')],
    });
    expect(c.peers[1]!.psk).toEqual(Buffer.from([0, 255]));
    expect(c.policies[0]).toMatchObject({ name: 'nope', action: 'discard' });
    expect(c.defaultPolicy).toBe('discard');
  });

  test('each mistake is one line naming the line, the field and what is valid', () => {
    expect(configError('peers:\n  - id: a@b\n    psk: 42\n')).toBe(
      'FILE:3: peers[0].psk: must be a non-empty string or 0x-prefixed hex, got 42 (quote it to use digits)',
    );
    expect(configError('peers:\n  - id: a@b\n')).toMatch(/^FILE:2: peers\[0\]\.psk: is missing/);
    expect(configError('ike:\n  proposals: [aes128-md5-modp2048]\n')).toMatch(
      /^FILE:2: ike\.proposals\[0\]: proposal "aes128-md5-modp2048" unknown algorithm "md5" \(known: /,
    );
    expect(configError('esp:\n  replay_window: 100\n')).toBe('FILE:2: esp.replay_window: must be a multiple of 32 from 64 to 4096, got 100');
    expect(configError('esp:\n  replay_window: 32\n')).toBe('FILE:2: esp.replay_window: must be an integer from 64 to 4096, got 32');
    expect(configError('ike:\n  lifetime: soon\n')).toMatch(/^FILE:2: ike\.lifetime: must be a duration/);
    expect(configError('ike:\n  lifetim: 1h\n')).toMatch(/^FILE:2: ike\.lifetim: unknown key; valid keys here: proposals, lifetime/);
    expect(configError('peers:\n  - id: a@b\n    psk: x\n    remote_ts: [198.18.0.0/33]\n')).toMatch(
      /^FILE:4: peers\[0\]\.remote_ts\[0\]: "198.18.0.0\/33" is not an IPv4 address/,
    );
    expect(configError('policies:\n  - local: 0.0.0.0/0\n    action: allow\n')).toBe(
      'FILE:3: policies[0].action: must be protect, bypass or discard, got "allow"',
    );
    expect(configError('default: maybe\n')).toBe('FILE:1: default: must be bypass or discard, got "maybe"');
    expect(configError('peers: [\n')).toMatch(/^FILE:\d+: not valid YAML: /);
    expect(configError('esp:\n  proposals: [aes128gcm16-sha256]\n')).toMatch(/gives an integrity algorithm with an AEAD cipher/);
  });

  test('faultstack run: --ipsec errors are usage errors; --ipsec-psk and --ipsec-keylog', () => {
    const bad = write('bad2.yaml', 'peers:\n  - id: a@b\n    psk: ""\n');
    expect(usageMessage(() => buildRunOptions(['--addr', '198.18.0.2/24', '--ipsec', bad]))).toMatch(
      /^faultstack run: --ipsec .*bad2\.yaml:3: peers\[0\]\.psk: (must be a non-empty string|the secret is empty)/,
    );
    expect(usageMessage(() => buildRunOptions(['--addr', '198.18.0.2/24', '--ipsec', path.join(tmp, 'missing.yaml')]))).toMatch(
      /--ipsec must be an existing file/,
    );
    expect(usageMessage(() => buildRunOptions(['--addr', '198.18.0.2/24', '--ipsec-keylog', tmp]))).toMatch(/--ipsec-keylog needs --ipsec FILE or --ipsec-psk/);
    expect(usageMessage(() => buildRunOptions(['--addr', '198.18.0.2/24', '--ipsec-psk', 'client1@lab=']))).toMatch(
      /--ipsec-psk must be \[ID=\]SECRET.*the secret is empty/,
    );
    expect(usageMessage(() => buildRunOptions(['--addr', '198.18.0.2/24', '--ipsec', write('nopeers.yaml', 'default: bypass\n')]))).toMatch(/no peers/);
    expect(usageMessage(() => buildRunOptions(['--addr', '198.18.0.2/24', '--queues', '2', '--shards', '--ipsec-psk', 's']))).toMatch(
      /--ipsec runs in one thread/,
    );
    const o = buildRunOptions([
      '--addr',
      '198.18.0.2/24',
      '--ipsec-psk',
      'client1@lab=lab=secret',
      '--ipsec-psk',
      'anyone',
      '--ipsec-keylog',
      path.join(tmp, 'keys'),
    ])!;
    expect(o.ipsec!.peers.map((p) => [p.id, p.psk.toString()])).toEqual([
      ['client1@lab', 'lab=secret'],
      ['%any', 'anyone'],
    ]);
    expect(o.ipsecKeylog).toBe(path.join(tmp, 'keys'));
  });

  test('the CLI exits 2 with one line for a bad file (no stack trace)', () => {
    const bad = write('bad3.yaml', 'esp:\n  transport_mode: yes-please\n');
    const r = spawnSync(process.execPath, [path.join(REPO, 'dist', 'bin', 'cli', 'main.js'), 'run', '--addr', '198.18.0.2/24', '--ipsec', bad], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([`faultstack run: --ipsec ${bad}:2: esp.transport_mode: must be accept or refuse, got "yes-please"`]);
  });
});

describe('proposals, identities, selectors', () => {
  test('strongSwan-style proposals', () => {
    expect(parseProposal('aes128-sha256-modp2048', 'ike')).toMatchObject({
      encr: [{ id: Encr.AES_CBC, keyBits: 128 }],
      integ: [Integ.HMAC_SHA2_256_128],
      prf: [Prf.HMAC_SHA2_256],
      dh: [DhGroup.MODP2048],
    });
    expect(parseProposal('aes256gcm16-prfsha384-ecp256-curve25519', 'ike')).toMatchObject({
      encr: [{ id: Encr.AES_GCM_16, keyBits: 256 }],
      integ: [],
      prf: [Prf.HMAC_SHA2_384],
      dh: [DhGroup.ECP256, DhGroup.CURVE25519],
    });
    expect(parseProposal('aes128gcm16', 'esp')).toMatchObject({ esn: [0], dh: [] });
    expect(() => parseProposal('aes128gcm16', 'ike')).toThrow(/needs a PRF/);
    expect(() => parseProposal('aes128', 'esp')).toThrow(/needs an integrity algorithm/);
    expect(() => parseProposal('aes128-sha256', 'ike')).toThrow(/Diffie-Hellman/);
  });

  test('identities in strongSwan notation', () => {
    expect(parseIdentity('client1@lab')).toEqual({ idType: IdType.RFC822_ADDR, data: Buffer.from('client1@lab') });
    expect(parseIdentity('@host.example')).toEqual({ idType: IdType.FQDN, data: Buffer.from('host.example') });
    expect(parseIdentity('198.18.50.1')).toEqual({ idType: IdType.IPV4_ADDR, data: Buffer.from([198, 18, 50, 1]) });
    expect(parseIdentity('@#0a0b')).toEqual({ idType: IdType.KEY_ID, data: Buffer.from([10, 11]) });
    expect(identityMatches('%any', IdType.FQDN, Buffer.from('x'))).toBe(true);
    expect(identityMatches('client1@lab', IdType.RFC822_ADDR, Buffer.from('client1@lab'))).toBe(true);
    expect(identityMatches('client1@lab', IdType.RFC822_ADDR, Buffer.from('client2@lab'))).toBe(false);
    expect(pskPeer('s3cret')).toMatchObject({ id: '%any', psk: Buffer.from('s3cret') });
  });

  test('selectors', () => {
    expect(parseSelector('198.18.0.0/24')).toEqual({ protocol: 0, start: 0xc6120000, end: 0xc61200ff, startPort: 0, endPort: 65535 });
    expect(parseSelector('198.18.0.5-198.18.0.9[udp/1000-2000]')).toEqual({ protocol: 17, start: 0xc6120005, end: 0xc6120009, startPort: 1000, endPort: 2000 });
    expect(() => parseSelector('198.18.0.1[icmp/5]')).toThrow(/ports need protocol tcp or udp/);
  });
});

describe('faultstack ipsec output', () => {
  test('tables of IKE SAs and child SAs, nonzero counters', () => {
    const text = renderIpsec({
      ikeSas: [
        {
          id: 1,
          identity: 'client1@lab',
          remote: '198.18.50.1:4500',
          local: '198.18.0.2:4500',
          state: 'established',
          spiI: 'aa',
          spiR: 'bb',
          suite: 'X',
          ageMs: 2000,
          pending: null,
        },
      ],
      childSas: [
        {
          id: 1,
          ikeSa: 1,
          identity: 'client1@lab',
          state: 'installed',
          spiIn: 'c1',
          spiOut: 'c2',
          mode: 'tunnel',
          encap: 'udp',
          localTs: '198.18.0.2/32',
          remoteTs: '198.18.50.1/32',
          bytesIn: 10,
          packetsIn: 1,
          bytesOut: 20,
          packetsOut: 2,
          replayDrops: 3,
          ageMs: 1000,
        },
      ],
      policies: { default: 'bypass', entries: [] },
      halfOpen: 0,
      counters: { XfrmInNoStates: 4, XfrmInStateSeqError: 0 },
    });
    expect(text).toMatch(/IKE SAs \(1, 0 half open\):/);
    expect(text).toMatch(/client1@lab\s+198\.18\.50\.1:4500/);
    expect(text).toMatch(/c1\/c2\s+tunnel\s+udp/);
    expect(text).toMatch(/XfrmInNoStates\s+4/);
    expect(text).not.toMatch(/XfrmInStateSeqError/);
  });
});
