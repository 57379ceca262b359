/**
 * IPsec with real strongSwan clients (charon + kernel-libipsec, swanctl), each in its
 * own namespace with a private /run, against faultstack on a real TUN device:
 *
 *   [client ns: charon, ipsec0] 198.18.50.1 --veth-- 198.18.50.254 [stack ns: forwards]
 *        198.18.0.1 --TUN-- faultstack 198.18.0.2 (--ipsec FILE --ipsec-keylog DIR)
 *
 * The client's traffic to 198.18.0.2 goes through its tunnel: on the veth there is
 * only UDP 500/4500; tshark with the stack's keylog decrypts it down to TCP.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Lab, type LabProcess, type StackProcess, repoRoot } from '../../lab/lab';
import { StrongSwan, type SwanctlOptions } from '../../lab/strongswan';
import { makeIpsecCerts, type IpsecCerts } from '../../lab/ipsec-certs';
import { STACK, startTunLab, type TunLab } from './helpers/tun-lab';

const clients = path.join(repoRoot(), 'lab', 'clients');
const MB10 = 10 * 1000 * 1000;

let t: TunLab;
let lab: Lab;
let nsK: string, nsC: string, nsW: string;
let stack: StackProcess;
let tmp: string;
let keylog: string;
let vethK: string;
let client: StrongSwan | null = null;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const YAML = `
local:
  id: server@lab
  cert: certs/server.pem
  key: certs/server.key
ca: [certs/ca.pem]
ike:
  dpd: 0
peers:
  - id: client1@lab
    psk: labsecret
  - id: client2@lab
    psk: "other secret"
  - id: "%any"
    auth: pubkey
`;
let certs: IpsecCerts;

function clientConf(extra: Partial<SwanctlOptions> = {}): SwanctlOptions {
  // As a user writes it: addresses, identities, the secret, the subnets; strongSwan's default proposals.
  return {
    localAddr: '198.18.50.1',
    remoteAddr: STACK,
    id: 'client1@lab',
    psk: 'labsecret',
    localTs: '198.18.50.1/32',
    remoteTs: `${STACK}/32`,
    ...extra,
  };
}

async function ipsecJson(): Promise<{ ikeSas: Record<string, unknown>[]; childSas: Record<string, unknown>[]; counters: Record<string, number> }> {
  const r = await lab.cli(nsK, ['ipsec', '--json', '--control', stack.controlPath], { check: true });
  return JSON.parse(r.stdout);
}

async function waitFor<T>(what: string, f: () => Promise<T | null | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let last: T | null | false = null;
  while (Date.now() < end) {
    last = await f();
    if (last) return last;
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The client's SPIs from `swanctl --list-sas` (in/out, installed children only). */
function clientSpis(listing: string): { in: string; out: string }[] {
  const out: { in: string; out: string }[] = [];
  const re = /INSTALLED[^\n]*\n(?:[^\n]*\n)*?\s+in\s+([0-9a-f]{8})[^\n]*\n\s+out\s+([0-9a-f]{8})/g;
  for (const m of listing.matchAll(re)) out.push({ in: m[1]!, out: m[2]! });
  return out;
}

/** curl in `ns` fetches `n` bytes of the stack's http service (through the tunnel, when one is up): 200, every byte, nothing on stderr. */
async function fetchBytes(ns: string, n: number): Promise<void> {
  const curl = await lab.exec(ns, 'curl', ['-sS', '--max-time', '20', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://${STACK}/bytes/${n}`]);
  expect(curl.stderr).toBe('');
  expect(curl.stdout.trim()).toBe(`200 ${n}`);
}

async function startClient(dirName: string, ns: string, conf: SwanctlOptions): Promise<StrongSwan> {
  return StrongSwan.start(lab, ns, path.join(tmp, dirName), conf, { logLevel: 2 });
}

beforeAll(async () => {
  t = await startTunLab('ips', {
    services: 'echo,http',
    prepare: async (l, k, dir) => {
      keylog = path.join(dir, 'keys');
      nsC = await l.addNamespace('c');
      nsW = await l.addNamespace('w');
      const v = await l.veth('k', 'c', { addrA: '198.18.50.254/24', addrB: '198.18.50.1/24' });
      vethK = v.devA;
      await l.veth('k', 'w', { addrA: '198.18.52.254/24', addrB: '198.18.52.1/24' });
      await l.sysctl(k, 'net.ipv4.ip_forward', 1);
      await l.ip('c', 'route', 'add', 'default', 'via', '198.18.50.254');
      await l.ip('w', 'route', 'add', 'default', 'via', '198.18.52.254');
      certs = makeIpsecCerts(path.join(dir, 'certs'));
      const cfg = path.join(dir, 'ipsec.yaml');
      fs.writeFileSync(cfg, YAML);
      return ['--ipsec', cfg, '--ipsec-keylog', keylog, '--events', path.join(dir, 'events.jsonl')];
    },
  });
  ({ lab, ns: nsK, stack, tmp } = t);
}, 90_000);

afterAll(async () => {
  await t?.cleanup();
});

describe('faultstack as IPsec responder for real strongSwan clients', () => {
  let dump: LabProcess;
  const pcap = () => path.join(tmp, 'veth.pcap');

  test('a stock strongSwan client with a PSK gets a tunnel; the stack records its identity', async () => {
    // Everything IPv4 between the client and the stack (IGMP is the kernel joining multicast groups on the veth, not traffic).
    dump = lab.spawn(nsK, 'tcpdump', ['-i', vethK, '-U', '-s', '0', '-w', pcap(), 'ip and not igmp']);
    await dump.waitFor(/listening on/, { timeoutMs: 10_000 });
    client = await startClient('c1', nsC, clientConf());
    const r = await client.initiate();
    expect(r.stdout).toMatch(/initiate completed successfully/);
    const st = await ipsecJson();
    expect(st.ikeSas.length).toBe(1);
    expect(st.ikeSas[0]!.identity).toBe('client1@lab');
    expect(st.ikeSas[0]!.remote).toBe('198.18.50.1:4500');
    expect(st.childSas.length).toBe(1);
    // The stack's SPIs are the client's, the other way round.
    const spis = clientSpis(await client.listSas());
    expect(spis).toEqual([{ in: st.childSas[0]!.spiOut, out: st.childSas[0]!.spiIn }]);
  }, 60_000);

  test('ping, curl and a 10 MB SHA-checked echo through the tunnel', async () => {
    const ping = await lab.exec(nsC, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', STACK]);
    expect(ping.stdout).toMatch(/3 packets transmitted, 3 received/);
    await fetchBytes(nsC, 1_000_000);
    const r = await lab.exec(nsC, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', String(MB10)], { timeoutMs: 120_000 });
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(j.error).toBeUndefined();
    expect(j.receivedBytes).toBe(MB10);
    expect(j.receivedSha).toBe(j.sentSha);
    const st = await ipsecJson();
    expect(st.childSas[0]!.bytesIn as number).toBeGreaterThan(MB10);
    expect(st.childSas[0]!.bytesOut as number).toBeGreaterThan(MB10);
    expect(st.counters.XfrmInStateProtoError).toBe(0);
  }, 180_000);

  test('on the path only UDP 500/4500; tshark with the keylog decrypts IKE and ESP down to TCP', async () => {
    dump.signal('SIGINT');
    await dump.exited;
    const protos = await lab.exec(null, 'tshark', ['-r', pcap(), '-T', 'fields', '-e', 'ip.proto', '-e', 'udp.dstport', '-e', 'udp.srcport']);
    const rows = protos.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
    expect(rows.length).toBeGreaterThan(5000);
    const bad = rows.filter(([proto, d, s]) => !(proto === '17' && (['500', '4500'].includes(d!) || ['500', '4500'].includes(s!))));
    expect(bad).toEqual([]);
    // Without keys: no TCP visible at all.
    const clear = await lab.exec(null, 'tshark', ['-r', pcap(), '-Y', 'tcp || icmp']);
    expect(clear.stdout.trim()).toBe('');
    // With the stack's key directory: ESP opens to the inner TCP (the HTTP request among it).
    const env = { WIRESHARK_CONFIG_DIR: keylog };
    const tcp = await lab.exec(null, 'tshark', ['-r', pcap(), '-Y', 'esp && tcp', '-T', 'fields', '-e', 'tcp.dstport'], { env });
    const tcpRows = tcp.stdout.trim().split('\n').filter(Boolean);
    expect(tcpRows.length).toBeGreaterThan(1000);
    const http = await lab.exec(null, 'tshark', ['-r', pcap(), '-Y', 'http.request.uri == "/bytes/1000000"'], { env });
    expect(http.stdout).toMatch(/GET \/bytes\/1000000/);
    const icmp = await lab.exec(null, 'tshark', ['-r', pcap(), '-Y', 'esp && icmp.type == 0'], { env });
    expect(icmp.stdout.trim().split('\n').filter(Boolean).length).toBe(3);
    // And IKE_AUTH opens to the identities.
    const ike = await lab.exec(null, 'tshark', ['-r', pcap(), '-Y', 'isakmp.exchangetype == 35', '-V'], { env });
    expect(ike.stdout).toMatch(/Identification Data:client1@lab/);
    expect(ike.stdout).toMatch(/Identification Data:server@lab/);
  }, 120_000);

  test('the client rekeys the child SA (with PFS) and the IKE SA; the stack follows, traffic keeps flowing', async () => {
    await client!.stop();
    // A client that rekeys on its own, quickly, with PFS for the child SA.
    client = await startClient(
      'c2',
      nsC,
      clientConf({
        proposals: 'aes128-sha256-modp2048',
        espProposals: 'aes128-sha256-modp2048',
        remoteId: 'server@lab',
        childRekeyTime: '6s',
        childLifeTime: '20s',
        ikeRekeyTime: '14s',
      }),
    );
    const r = await client.initiate();
    expect(r.stdout).toMatch(/initiate completed successfully/);
    const events = () =>
      fs
        .readFileSync(path.join(tmp, 'events.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { kind: string; message: string });
    const base = events().length;
    await waitFor(
      'a child rekey and an IKE rekey by the client',
      async () => {
        const k = events()
          .slice(base)
          .map((e) => e.kind);
        return k.includes('ipsec-child-sa-rekeyed') && k.includes('ipsec-ike-sa-rekeyed');
      },
      40_000,
    );
    // After the dust settles: one IKE SA, one child, and the client agrees on the SPIs.
    await sleep(1500);
    const st = await waitFor('one child SA on the stack', async () => {
      const s = await ipsecJson();
      return s.childSas.length === 1 && s.ikeSas.length === 1 ? s : null;
    });
    const spis = clientSpis(await client.listSas());
    expect(spis).toEqual([{ in: st.childSas[0]!.spiOut, out: st.childSas[0]!.spiIn }]);
    expect(st.childSas[0]!.suite).toMatch(/MODP_2048/);
    await fetchBytes(nsC, 200_000);
    expect((await ipsecJson()).counters.XfrmInStateProtoError).toBe(0);
  }, 90_000);

  test('the client deletes the child SA, then the IKE SA; the stack follows', async () => {
    await client!.terminateChild();
    await waitFor('no child SA on the stack', async () => (await ipsecJson()).childSas.length === 0);
    expect((await ipsecJson()).ikeSas.length).toBe(1);
    await client!.terminateIke();
    await waitFor('no IKE SA on the stack', async () => (await ipsecJson()).ikeSas.length === 0);
    // Without an SA the stack answers in the clear again (default policy: bypass).
    const ping = await lab.exec(nsC, 'ping', ['-c', '1', '-W', '2', STACK]);
    expect(ping.stdout).toMatch(/1 received/);
    await client!.stop();
  }, 60_000);

  test('a client restarted with the same identity (INITIAL_CONTACT) replaces its old SAs', async () => {
    client = await startClient('c3', nsC, clientConf({ remoteId: 'server@lab' }));
    expect((await client.initiate()).stdout).toMatch(/initiate completed successfully/);
    const first = await ipsecJson();
    expect(first.ikeSas.length).toBe(1);
    // The client dies without a word (SIGKILL) and comes back.
    client.proc.signal('SIGKILL');
    await client.proc.exited;
    client = await startClient('c4', nsC, clientConf({ remoteId: 'server@lab' }));
    const r = await client.initiate();
    expect(r.stdout).toMatch(/IKE_AUTH request 1 \[ IDi N\(INIT_CONTACT\)/);
    expect(r.stdout).toMatch(/initiate completed successfully/);
    const st = await ipsecJson();
    expect(st.ikeSas.length).toBe(1);
    expect(st.ikeSas[0]!.spiI).not.toBe(first.ikeSas[0]!.spiI);
    expect(st.childSas.length).toBe(1);
    expect(st.counters.FsIkeInitialContacts).toBe(1);
    const ping = await lab.exec(nsC, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', STACK]);
    expect(ping.stdout).toMatch(/2 received/);
    await client.stop();
  }, 60_000);

  test('a wrong pre-shared key is refused with AUTHENTICATION_FAILED', async () => {
    const before = (await ipsecJson()).counters.FsIkeAuthFailures ?? 0;
    const bad = await startClient('w1', nsW, {
      localAddr: '198.18.52.1',
      remoteAddr: STACK,
      id: 'client2@lab',
      psk: 'not the secret',
      localTs: '198.18.52.1/32',
      remoteTs: `${STACK}/32`,
    });
    const r = await bad.initiate(20_000);
    expect(r.stdout).toMatch(/received AUTHENTICATION_FAILED notify error/);
    expect(r.stdout).not.toMatch(/initiate completed successfully/);
    const st = await ipsecJson();
    expect(st.counters.FsIkeAuthFailures).toBe(before + 1);
    expect(st.childSas.length).toBe(0);
    // The event log reaches its file within a flush interval.
    await waitFor(
      'the auth-failed event in the log',
      async () => /ipsec-auth-failed.*client2@lab/.test(fs.readFileSync(path.join(tmp, 'events.jsonl'), 'utf8')),
      5000,
    );
    await bad.stop();
  }, 60_000);

  test('a strongSwan client with an RSA certificate; the stack answers with its ECDSA certificate (RFC 7427)', async () => {
    const c1 = certs.clients.client1!;
    const cc = await startClient('w2', nsW, {
      localAddr: '198.18.52.1',
      remoteAddr: STACK,
      id: 'client1@lab',
      remoteId: 'server@lab',
      psk: '',
      localTs: '198.18.52.1/32',
      remoteTs: `${STACK}/32`,
      pubkey: { cert: c1.cert, key: c1.key, ca: certs.ca },
    });
    const r = await cc.initiate();
    expect(r.stdout).toMatch(/authentication of 'server@lab' with (RSA|ECDSA)[^\n]*successful/);
    expect(r.stdout).toMatch(/initiate completed successfully/);
    const st = await ipsecJson();
    const mine = st.ikeSas.find((s) => s.remote === '198.18.52.1:4500');
    expect(mine?.identity).toBe('client1@lab');
    await fetchBytes(nsW, 100_000);
    await cc.stop();
    // A certificate from a CA the stack does not trust is refused.
    const rogue = certs.clients.rogue!;
    const bad = await startClient('w3', nsW, {
      localAddr: '198.18.52.1',
      remoteAddr: STACK,
      id: 'client1@lab',
      remoteId: 'server@lab',
      psk: '',
      localTs: '198.18.52.1/32',
      remoteTs: `${STACK}/32`,
      pubkey: { cert: rogue.cert, key: rogue.key, ca: certs.ca },
    });
    const r2 = await bad.initiate(20_000);
    expect(r2.stdout).toMatch(/received AUTHENTICATION_FAILED notify error/);
    await bad.stop();
  }, 60_000);
});
