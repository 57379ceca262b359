/**
 * Two defects that, together, deadlocked a connection of the lossy-link test
 * (impair.test.ts: 10 MB each way through 5% loss with reordering, a kernel peer): about
 * one run in fifteen ended in ECONNRESET after nine retransmission timeouts. The capture
 * showed each end dropping the other's ACKs:
 *  - the kernel had filled the stack's receive window and lost a segment of it; its pure
 *    ACKs then sat exactly at the window's right edge, and the stack's acceptability test
 *    (RFC 9293's strict RCV.NXT <= SEG.SEQ < RCV.NXT + RCV.WND) dropped them, with the
 *    ACK of the stack's data they carried;
 *  - a retransmission timeout had pulled the stack's SND.NXT back to SND.UNA, below what
 *    the kernel had already received, and the stack's pure ACKs carried that SND.NXT: the
 *    kernel dropped them as old segments, with their ACK of its data.
 * Here a kernel socket talks to the stack's echo service while nft holds back its pure
 * ACKs, and scapy sends the segment of each case (TTL 99 tells it apart from the
 * kernel's). Window scaling is off in the namespace, so that the window the stack
 * advertises is its exact right edge. scapy runs with /usr/bin/python3.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Lab, StackProcess } from '../../lab/lab';
import { HOST, needTools, runScapyClient, scapyPrelude, startTunLab, type TunLab } from './helpers/tun-lab';

const NFT_TABLE = 'fsrecov';

let t: TunLab;
let lab: Lab;
let ns: string;
let stack: StackProcess;

beforeAll(async () => {
  needTools('nft', 'scapy');
  t = await startTunLab('rcv', {
    services: 'echo',
    prepare: async (l, n) => {
      await l.exec(n, 'sysctl', ['-q', '-w', 'net.ipv4.tcp_window_scaling=0'], { check: true });
    },
  });
  ({ lab, ns, stack } = t);
}, 60_000);

afterAll(async () => {
  await t?.cleanup();
});

interface Row {
  peer: string;
  state: string;
  sendQ: number;
}
async function connection(lport: number): Promise<Row | undefined> {
  const r = await lab.cli(ns, ['stats', '--all', '--json', '--control', stack.controlPath], { timeoutMs: 20_000 });
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { connections: Row[] }).connections.find((c) => c.peer === `${HOST}:${lport}`);
}

/**
 * The scapy client: a kernel socket to echo (MSS 536, so that 2,000 bytes are several
 * segments), a sniffer on the TUN device, then nft drops the kernel's pure ACKs on the
 * connection (IP length under 120: no data) and `mode` runs. Prints one JSON line, then
 * keeps the connection open while the test looks at it.
 */
function script(mode: 'edge' | 'sndmax', iface: string): string {
  return `${scapyPrelude(iface, { mss: 536 })}
MODE = '${mode}'
sock.connect((S, 7))
out = {'lport': lport, 'first': echo(b'a' * 1000)}
time.sleep(0.3)
subprocess.run(['nft', '-f', '-'], text=True, check=True, input=
    'add table ip ${NFT_TABLE}\\nadd chain ip ${NFT_TABLE} out { type filter hook output priority 0 ; }\\n'
    f'add rule ip ${NFT_TABLE} out ip saddr {H} tcp sport {lport} ip length < 120 ip ttl != 99 drop\\n')
if MODE == 'edge':
    out['second'] = echo(b'c' * 100)
    cseq, cln, cwin, cts = last_data(H, b'c' * 100)
    sseq, sln, swin, sts = last_data(S, b'c' * 100)
    time.sleep(0.3)  # any window update the stack sends after the echo is in by now
    latest = segs(S)[-1][TCP]
    # The stack's echo is unacknowledged (the kernel's ACK was held back). A pure ACK of
    # it from the right edge of the latest window the stack advertised.
    out['edge'] = (latest.ack + latest.window) % 2**32
    out['sndMax'] = (sseq + sln) % 2**32
    send(IP(src=H, dst=S, ttl=99) / TCP(sport=lport, dport=7, flags='A', seq=out['edge'], ack=out['sndMax'],
         window=cwin, options=[('Timestamp', ((cts[0] + 1) % 2**32, sts[0]))]))
else:
    # Four full segments of the stack's MSS (536 less the timestamp option's 12), so that
    # Nagle holds nothing back while the ACKs are missing.
    data = bytes(range(256)) * 8 + bytes(48)
    n1 = len(segs(S))
    out['second'] = echo(data)
    cseq, cln, cwin, cts = last_data(H, data[-100:])
    echoed = wait(lambda: (lambda e: e if sum(len(p[TCP].payload) for p in e) >= len(data) else None)(
        [p for p in segs(S)[n1:] if len(p[TCP].payload) > 0]))
    first = echoed[0][TCP].seq
    out['sndUna'] = first
    out['sndMax'] = (first + len(data)) % 2**32
    out['segments'] = len(echoed)
    # The kernel got all of it, but its ACKs are held back: the stack's retransmission
    # timer resends from SND.UNA.
    out['resent'] = wait(lambda: len([p for p in segs(S) if p[TCP].seq == first and len(p[TCP].payload) > 0]) >= 2) is not None
    n0 = len(segs(S))
    # Data out of order from the kernel's side: the stack answers with a duplicate ACK at once.
    send(IP(src=H, dst=S, ttl=99) / TCP(sport=lport, dport=7, flags='PA', seq=(cseq + cln + 100) % 2**32, ack=first,
         window=cwin, options=[('Timestamp', ((cts[0] + 1) % 2**32, 0))]) / (b'z' * 10))
    ack = wait(lambda: ([p for p in segs(S)[n0:] if len(p[TCP].payload) == 0 and p[TCP].flags == 'A'] or [None])[0])
    out['ackSeq'] = ack[TCP].seq if ack is not None else None
sn.stop()
print(json.dumps(out)); sys.stdout.flush()
time.sleep(30)
`;
}

async function runScapy(mode: 'edge' | 'sndmax'): Promise<{ out: Record<string, number | boolean | null>; done: () => Promise<void> }> {
  const { out, stop } = await runScapyClient<Record<string, number | boolean | null>>(t, script(mode, stack.tun));
  return {
    out,
    done: async () => {
      await lab.exec(ns, 'nft', ['delete', 'table', 'ip', NFT_TABLE]);
      await stop();
    },
  };
}

describe('ACKs that a lossy, reordering path needs to get through', () => {
  test("a pure ACK exactly at the right edge of the stack's window is accepted: the stack's data counts as acknowledged", async () => {
    const { out, done } = await runScapy('edge');
    try {
      expect(out.first).toBe(true);
      expect(out.second).toBe(true);
      const lport = out.lport as number;
      // Waits for the forged ACK to take effect; before the fix the stack dropped it and
      // its echo stayed unacknowledged (the kernel's own ACKs are held back).
      let row: Row | undefined;
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        row = await connection(lport);
        if (row?.sendQ === 0) break;
      }
      expect(row, 'the connection is in the stack').toBeDefined();
      expect(row!.state).toBe('ESTABLISHED');
      expect(row!.sendQ, JSON.stringify(out)).toBe(0);
    } finally {
      await done();
    }
  }, 90_000);

  test('after a retransmission timeout, the duplicate ACK the stack sends carries SND.MAX, not the SND.NXT below what the kernel has received', async () => {
    const { out, done } = await runScapy('sndmax');
    try {
      expect(out.first).toBe(true);
      expect(out.second).toBe(true);
      expect(out.resent, 'the stack resent from SND.UNA').toBe(true);
      // Before the fix: SND.UNA plus the one segment resent, below the kernel's RCV.NXT.
      expect(out.ackSeq, JSON.stringify(out)).toBe(out.sndMax);
    } finally {
      await done();
    }
  }, 90_000);
});
