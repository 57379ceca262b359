/**
 * Captures IKEv2 key-derivation vectors from real strongSwan: two charons
 * (kernel-libipsec) in lab namespaces run IKE_SA_INIT, IKE_AUTH, a child rekey and an
 * IKE rekey while tcpdump records the IKE datagrams; the initiator logs at level 4,
 * where charon prints the Diffie-Hellman secret, SKEYSEED, every SK_* key and the
 * child SA keys. The messages and those log values become
 * test/unit/fixtures/strongswan-ike.json, which test/unit/ipsec-vectors.test.ts checks
 * faultstack's prf+, SKEYSEED, SK_*, AUTH and KEYMAT against.
 *
 *   make ike-vectors      (root; rewrites the fixture)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, repoRoot } from './lab';
import { StrongSwan } from './strongswan';

interface Capture {
  name: string;
  psk: string;
  ikeProposal: string;
  espProposal: string;
  /** IKE messages in capture order (non-ESP marker removed); from: i = initiator, r = responder. */
  messages: { from: 'i' | 'r'; hex: string }[];
  /** What charon logged at level 4, in order. */
  log: { label: string; hex: string }[];
}

const LABELS =
  /^(shared Diffie Hellman secret|SKEYSEED|Sk_d secret|Sk_ai secret|Sk_ar secret|Sk_ei secret|Sk_er secret|Sk_pi secret|Sk_pr secret|encryption initiator key|encryption responder key|integrity initiator key|integrity responder key)$/;

/** charon's "%B" dumps: "NN[IKE] label => N bytes @ 0x...", then "NN[IKE]    0: AB CD ...  ascii". */
export function parseCharonLog(text: string): { label: string; hex: string }[] {
  const out: { label: string; hex: string }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^(?:.*? )?(\d+)\[(\w+)\] (.+?) => (\d+) bytes @ 0x[0-9a-f]+$/.exec(lines[i]!);
    if (!m || !LABELS.test(m[3]!)) continue;
    const thread = m[1]!,
      n = Number(m[4]);
    const bytes: string[] = [];
    for (let j = i + 1; j < lines.length && bytes.length < n; j++) {
      const d = new RegExp(`^(?:.*? )?${thread}\\[\\w+\\]\\s+\\d+: (.*)$`).exec(lines[j]!);
      if (!d) continue;
      const tokens = d[1]!.split(' ');
      for (const t of tokens) {
        if (bytes.length >= n) break;
        if (/^[0-9A-F]{2}$/.test(t)) bytes.push(t);
        else if (t !== '') break;
      }
    }
    if (bytes.length === n) out.push({ label: m[3]!, hex: bytes.join('').toLowerCase() });
  }
  return out;
}

/** UDP payloads to or from ports 500/4500 in an Ethernet pcap, with the non-ESP marker removed; ESP and keepalives skipped. */
export function ikeFromPcap(file: string, initiator: string): { from: 'i' | 'r'; hex: string }[] {
  const b = fs.readFileSync(file);
  const le = b.readUInt32LE(0) === 0xa1b2c3d4;
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const out: { from: 'i' | 'r'; hex: string }[] = [];
  for (let o = 24; o + 16 <= b.length;) {
    const incl = u32(o + 8);
    const p = b.subarray(o + 16, o + 16 + incl);
    o += 16 + incl;
    if (p.length < 14 + 28 || p.readUInt16BE(12) !== 0x0800) continue;
    const ip = p.subarray(14);
    if (ip[9] !== 17) continue;
    const ihl = (ip[0] & 15) * 4;
    const src = `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`;
    const sport = ip.readUInt16BE(ihl),
      dport = ip.readUInt16BE(ihl + 2);
    let payload = ip.subarray(ihl + 8, ip.readUInt16BE(2));
    if (dport === 4500 || sport === 4500) {
      if (payload.length < 4 || payload.readUInt32BE(0) !== 0) continue;
      payload = payload.subarray(4);
    } else if (dport !== 500 && sport !== 500) continue;
    if (payload.length < 28) continue;
    out.push({ from: src === initiator ? 'i' : 'r', hex: payload.toString('hex') });
  }
  return out;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function captureOne(name: string, ikeProposal: string, espProposal: string): Promise<Capture> {
  const lab = await Lab.create('vec');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-vec-'));
  try {
    const nsI = await lab.addNamespace('i');
    const nsR = await lab.addNamespace('r');
    const { devA } = await lab.veth('i', 'r', { addrA: '198.18.50.1/24', addrB: '198.18.50.2/24' });
    const pcap = path.join(tmp, 'ike.pcap');
    const dump = lab.spawn(nsI, 'tcpdump', ['-i', devA, '-U', '-s', '0', '-w', pcap, 'udp port 500 or udp port 4500']);
    await dump.waitFor(/listening on/, { timeoutMs: 10_000 });
    const psk = 'vector-secret';
    const common = { psk, proposals: ikeProposal, espProposals: espProposal };
    await StrongSwan.start(lab, nsR, path.join(tmp, 'r'), {
      ...common,
      localAddr: '198.18.50.2',
      id: 'server@lab',
      remoteId: 'client1@lab',
      localTs: '198.18.50.2/32',
      remoteTs: '198.18.50.1/32',
    });
    const ini = await StrongSwan.start(
      lab,
      nsI,
      path.join(tmp, 'i'),
      {
        ...common,
        localAddr: '198.18.50.1',
        remoteAddr: '198.18.50.2',
        id: 'client1@lab',
        remoteId: 'server@lab',
        localTs: '198.18.50.1/32',
        remoteTs: '198.18.50.2/32',
      },
      { logLevel: 4 },
    );
    const r = await ini.initiate();
    if (!/initiate completed successfully/.test(r.stdout)) throw new Error(`initiate failed: ${r.stdout.slice(-2000)}`);
    await ini.rekeyChild();
    await sleep(500);
    await ini.rekeyIke();
    await sleep(1000);
    dump.signal('SIGINT');
    await dump.exited;
    const messages = ikeFromPcap(pcap, '198.18.50.1');
    const log = parseCharonLog(ini.log());
    return { name, psk, ikeProposal, espProposal, messages, log };
  } finally {
    await lab.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const version = (await import('node:child_process')).execFileSync('dpkg-query', ['-W', '-f=${Version}', 'strongswan-charon'], { encoding: 'utf8' });
  const captures = [
    await captureOne('modp2048-aes128-sha256', 'aes128-sha256-modp2048', 'aes128gcm16'),
    await captureOne('ecp256-aes256gcm16-prfsha384', 'aes256gcm16-prfsha384-ecp256', 'aes256-sha256-ecp256'),
  ];
  const out = path.join(repoRoot(), 'test', 'unit', 'fixtures', 'strongswan-ike.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    JSON.stringify(
      {
        about:
          "IKEv2 exchanges between two strongSwan charons (kernel-libipsec) with the initiator's level-4 key log; made by lab/capture-ike-vectors.ts (make ike-vectors)",
        strongswan: version,
        captured: new Date().toISOString().slice(0, 10),
        captures,
      },
      null,
      1,
    ) + '\n',
  );
  for (const c of captures) process.stdout.write(`${c.name}: ${c.messages.length} IKE messages, ${c.log.length} logged values\n`);
  process.stdout.write(`wrote ${out}\n`);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`capture-ike-vectors: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
