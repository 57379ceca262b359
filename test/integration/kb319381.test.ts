/**
 * KB 319381 and the firewall under real traffic (lab/firewall-lab.ts): faultstack
 * forwards between an internal host and an external media server, each a Linux kernel
 * in its own namespace; the lab's media server and player run on kernel sockets.
 *
 * - forwarding: ping's TTL expiry (traceroute's first hop), a UDP traceroute with scapy
 *   (time exceeded from the firewall, then port unreachable from the server translated
 *   back), DF too big for a smaller external link, a TCP transfer through SecureNAT;
 * - buggy: item 1 plays, every later item stalls, the datagrams are dropped and
 *   counted, the re-bind races the release (WSAEADDRINUSE), events 15104 and 15105 name
 *   the media server; with no release delay the port is just left closed;
 * - hotfixed: every item plays, no drops, no WSAEADDRINUSE, no port-scan events;
 * - SecureNAT and MMST players play every item in both modes;
 * - malformed control-channel messages get a refusal, and nothing else breaks.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { FirewallLab, FW_EXT, FW_IN, HOST_IN, MEDIA } from '../../lab/firewall-lab';

let fl: FirewallLab;

beforeAll(async () => {
  fl = await FirewallLab.create({ tag: 'kb3' });
  // On every address: the firewall, restarted between tests, brings the server's TUN address each time.
  await fl.startMediaServer();
}, 60_000);

afterAll(async () => {
  await fl?.cleanup();
});

const fwcPlayer = ['--server', MEDIA, '--via', 'fwc', '--firewall', FW_IN];
type Summary = { counters: Record<string, number>; drops: Record<string, number>; fwc: Record<string, number>; media: Record<string, number | boolean> };

describe('the firewall forwards, with the ICMP a router sends', () => {
  test('TTL expiry and a UDP traceroute: time exceeded from the firewall, then port unreachable from the server, translated back', async () => {
    await fl.startFirewall({ mode: 'hotfixed' });
    const p1 = await fl.lab.exec(fl.ns.in, 'ping', ['-n', '-c', '1', '-W', '2', '-t', '1', MEDIA]);
    expect(p1.stdout).toMatch(new RegExp(`From ${FW_IN.replace(/\./g, '\\.')} icmp_seq=1 Time to live exceeded`));
    const p2 = await fl.lab.exec(fl.ns.in, 'ping', ['-n', '-c', '1', '-W', '2', '-t', '2', MEDIA]);
    expect(p2.code, p2.stdout).toBe(0);
    expect(p2.stdout).toMatch(/1 received/);
    // A traceroute's UDP probes, crafted and matched with scapy (the kernel's own UDP stack sends nothing back to a raw probe).
    const py = `
from scapy.all import IP, UDP, ICMP, sr1, conf
from scapy.layers.inet import IPerror, UDPerror
conf.verb = 0
out = []
for ttl in (1, 2):
    r = sr1(IP(dst="${MEDIA}", ttl=ttl)/UDP(sport=40000 + ttl, dport=33434), timeout=3)
    if r is None:
        out.append("none")
    else:
        out.append("%s %d %d %s %d" % (r.src, r[ICMP].type, r[ICMP].code, r[IPerror].src, r[UDPerror].sport))
print(";".join(out))
`;
    const tr = await fl.lab.exec(fl.ns.in, '/usr/bin/python3', ['-c', py], { timeoutMs: 30_000 });
    expect(tr.code, tr.stderr).toBe(0);
    // Hop 1: the firewall, time exceeded, quoting the probe as the client sent it. Hop 2: the
    // server's port unreachable, whose quote the firewall translated back to the client's port.
    expect(tr.stdout.trim()).toBe(`${FW_IN} 11 0 ${HOST_IN} 40001;${MEDIA} 3 3 ${HOST_IN} 40002`);
    const s = await fl.fw<Summary>('summary');
    expect(s.counters.FwTtlExceeded).toBeGreaterThanOrEqual(2);
    expect(s.counters.FwIcmpErrorsTranslated).toBeGreaterThanOrEqual(1);
  }, 60_000);

  test('a TCP transfer through SecureNAT arrives whole, from the external address', async () => {
    const data = Buffer.alloc(2_000_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    const srv = `
import socket, hashlib
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("${MEDIA}", 9100)); s.listen(1)
print("listening", flush=True)
c, peer = s.accept(); h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b)
print(peer[0], h.hexdigest(), flush=True)
`;
    const listener = fl.lab.spawn(fl.ns.out, '/usr/bin/python3', ['-c', srv]);
    await listener.waitFor(/listening/, { timeoutMs: 10_000 });
    const send = await fl.lab.exec(fl.ns.in, 'nc', ['-N', MEDIA, '9100'], { input: data, timeoutMs: 30_000 });
    expect(send.code, send.stderr).toBe(0);
    const m = await listener.waitFor(/^(\S+) ([0-9a-f]{64})$/m, { timeoutMs: 10_000 });
    // The server saw the firewall's external address, and every byte.
    expect(m[1]).toBe(FW_EXT);
    expect(m[2]).toBe(createHash('sha256').update(data).digest('hex'));
  }, 60_000);

  test('DF and too big for the external link: fragmentation needed with its MTU', async () => {
    await fl.startFirewall({ mode: 'hotfixed', externalMtu: 1280 });
    const p = await fl.lab.exec(fl.ns.in, 'ping', ['-n', '-c', '1', '-W', '2', '-M', 'do', '-s', '1400', MEDIA]);
    expect(p.stdout).toMatch(new RegExp(`From ${FW_IN.replace(/\./g, '\\.')} icmp_seq=1 Frag needed and DF set \\(mtu = 1280\\)`));
    // Without DF the firewall fragments and the reply comes back.
    const q = await fl.lab.exec(fl.ns.in, 'ping', ['-n', '-c', '1', '-W', '2', '-M', 'dont', '-s', '1400', MEDIA]);
    expect(q.stdout).toMatch(/1 received/);
    const s = await fl.fw<Summary>('summary');
    expect(s.counters.FwFragNeeded).toBe(1);
    expect(s.counters.FwFragmentedDatagrams).toBeGreaterThanOrEqual(1);
  }, 60_000);
});

describe('KB 319381', () => {
  test('buggy: item 1 plays, every later item stalls; the drops are counted; WSAEADDRINUSE; 15104 and 15105 name the media server', async () => {
    await fl.startFirewall({ mode: 'buggy' });
    const r = await fl.play(fwcPlayer);
    expect(r.error, r.stdout).toBeUndefined();
    expect(r.items.map((i) => i.ok)).toEqual([true, false, false, false, false, false]);
    for (const it of r.items.slice(1)) expect(it).toMatchObject({ received: 0, receivedTotal: 0, attempts: 4 });
    expect(r.addrInUse).toBeGreaterThanOrEqual(5);
    const s = await fl.fw<Summary>('summary');
    expect(s.drops['media-port-closed']).toBe(5 * 4 * 40);
    expect(s.fwc.FwcAddrInUse).toBe(r.addrInUse);
    const ev = await fl.events();
    const scan = (id: number) => ev.find((e) => e.data?.eventId === id);
    expect(scan(15104)?.message).toBe(
      `ISA Server detected a well-known port scan attack from Internet Protocol (IP) address ${MEDIA}. A well-known port is any port in the range of 1-2048.`,
    );
    expect(scan(15105)?.message).toBe(`ISA Server detected an all port scan attack from Internet Protocol (IP) address ${MEDIA}.`);
    expect(ev.filter((e) => e.kind === 'media-port-left-closed' && e.fault === 'kb319381')).toHaveLength(5);
    expect(ev.some((e) => e.kind === 'media-port-addr-in-use')).toBe(true);
    const b = await fl.fw<{ media: { port: number; state: string }[] }>('bindings');
    expect(b.media).toEqual([]); // the player's session ended: its openings went with it
  }, 90_000);

  test('buggy, the race alone: with no release delay no WSAEADDRINUSE comes, and the port is still left closed', async () => {
    await fl.setParam('MediaPortReleaseDelayMs', 0);
    const before = (await fl.fw<Summary>('summary')).drops['media-port-closed'];
    const r = await fl.play(fwcPlayer);
    expect(r.addrInUse).toBe(0);
    expect(r.played).toBe(1);
    expect((await fl.fw<Summary>('summary')).drops['media-port-closed'] - before).toBe(5 * 4 * 40);
    await fl.setParam('MediaPortReleaseDelayMs', 500);
  }, 60_000);

  test('buggy: SecureNAT and MMST players play every item', async () => {
    const before = await fl.fw<Summary>('summary');
    for (const args of [
      ['--via', 'securenat'],
      ['--via', 'securenat', '--transport', 'tcp'],
      ['--via', 'fwc', '--firewall', FW_IN, '--transport', 'tcp'],
    ]) {
      const r = await fl.play(['--server', MEDIA, ...args]);
      expect(
        r.items.map((i) => i.ok),
        args.join(' '),
      ).toEqual([true, true, true, true, true, true]);
    }
    const after = await fl.fw<Summary>('summary');
    expect(after.counters.FwDropped).toBe(before.counters.FwDropped);
  }, 60_000);

  test('hotfixed: every item plays, nothing dropped, no WSAEADDRINUSE, no port-scan event; SecureNAT and MMST too', async () => {
    await fl.startFirewall({ mode: 'hotfixed' });
    const r = await fl.play(fwcPlayer);
    expect(r.items.map((i) => [i.ok, i.attempts])).toEqual(Array.from({ length: 6 }, () => [true, 1]));
    expect(r.addrInUse).toBe(0);
    for (const args of [
      ['--via', 'securenat'],
      ['--via', 'securenat', '--transport', 'tcp'],
      ['--via', 'fwc', '--firewall', FW_IN, '--transport', 'tcp'],
    ]) {
      expect((await fl.play(['--server', MEDIA, ...args])).played, args.join(' ')).toBe(6);
    }
    const s = await fl.fw<Summary>('summary');
    expect(s.counters.FwDropped).toBe(0);
    expect(s.media, JSON.stringify(s.media)).toMatchObject({ MediaPortsReopened: 5, MediaPortsLeftClosed: 0, MediaAlgRewrites: 1 });
    const ev = await fl.events();
    expect(ev.filter((e) => e.kind.startsWith('port-scan'))).toEqual([]);
    expect(ev.filter((e) => e.kind === 'media-port-reopened')).toHaveLength(5);
  }, 90_000);

  test('malformed control-channel messages: a refusal with the reason; the stream that cannot be framed is closed; players still play', async () => {
    // A header that frames (RWSP, length 100) around a UDP Bind cut short.
    const bad = Buffer.alloc(100);
    bad.write('RWSP', 24, 'ascii');
    bad.writeUInt16BE(100, 28);
    bad.writeUInt16BE(0x070b, 36);
    bad[16] = 1;
    const r1 = await fl.lab.cli(fl.ns.in, ['fwc', 'raw', '--firewall', FW_IN, bad.toString('hex')]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).toMatch(/"refused":18187,"wsaError":10022,"reason":"WSAEINVAL: malformed Firewall Client command 0x070b: body too short/);
    expect(r1.stdout).toContain('control channel still open');
    // Not a Firewall Client message at all.
    const r2 = await fl.lab.cli(fl.ns.in, ['fwc', 'raw', '--firewall', FW_IN, Buffer.from('GET / HTTP/1.0\r\n\r\n'.repeat(3)).toString('hex')]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stdout).toMatch(/"wsaError":10022,"reason":"WSAEINVAL: malformed Firewall Client message: no \\"RWSP\\" signature/);
    expect(r2.stdout).toContain('control channel closed by the firewall');
    // A bad flag is a usage error, not a trace.
    const r3 = await fl.lab.cli(fl.ns.in, ['fwc', 'raw', '--firewall', FW_IN, 'zz']);
    expect(r3.code).toBe(2);
    expect(r3.stderr.trim().split('\n')).toHaveLength(1);
    const s = await fl.fw<Summary>('summary');
    expect(s.fwc.FwcBadMessages).toBe(2);
    const r = await fl.play(fwcPlayer);
    expect(r.played, r.stdout).toBe(6);
  }, 60_000);
});
