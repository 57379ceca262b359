/**
 * The Firewall Client service (stack/firewall/fwc-service.ts) and its client library
 * (stack/firewall/client.ts) on the virtual clock: the client on host A's sockets, the
 * firewall between the links, B outside. Connect and UDP Bind on the client's behalf,
 * the relay both ways, the bindings' own packet filter, release and re-bind with the
 * release delay and the race the hooks decide, and malformed control messages.
 */
import { describe, expect, it } from 'vitest';
import { FirewallClient, FwcRefusedError } from '../../stack/firewall/client';
import { FsUdpSocket } from '../../stack/api/dgram';
import type { FsSocket } from '../../stack/api/net';
import { FwcCommand, FWC_VERSION, emitFwc, nextFwc, Wsa } from '../../stack/wire/fwc';
import { B_ADDR, FE_ADDR, FI_ADDR, makeFirewall, runPromise, runUntil, type FirewallRig } from './helpers/firewall';
import { watch } from './helpers/pair';

async function open(rig: FirewallRig, application = 'test') {
  return runPromise(rig.clock, FirewallClient.open({ firewall: FI_ADDR, application, net: rig.netA }), 2000);
}

function udpOn(rig: FirewallRig, port: number) {
  const s = new FsUdpSocket(rig.b);
  const got: { data: Buffer; from: string; port: number }[] = [];
  s.on('message', (data: Buffer, r: { address: string; port: number }) => got.push({ data, from: r.address, port: r.port }));
  s.bind(port);
  return { s, got };
}

/** A raw control connection from A: what it gets back, message by message. */
async function raw(rig: FirewallRig) {
  const sock = rig.netA.connect({ host: FI_ADDR, port: 1745 });
  const sink = watch(sock);
  await runUntil(rig.clock, () => (sock as FsSocket).readyState === 'open' || sink.error !== null, 500);
  const replies = () => {
    const all = sink.data();
    const out = [];
    for (let off = 0; off < all.length;) {
      const r = nextFwc(all, off, all.length - off);
      if (!r || r.length === 0) break;
      out.push(r.repr!.message);
      off += r.length;
    }
    return out;
  };
  return { sock, sink, replies };
}
const hdr = (seq: number) => ({ clientId: 0, version: FWC_VERSION, serverId: 0, ack: 0, seq });

describe('Firewall Client service', () => {
  it('Hello gives a session and the external address; Connect makes the firewall open the connection and splice it', async () => {
    const rig = await makeFirewall();
    const echoed: string[] = [];
    rig.netB
      .createServer((s) => {
        s.on('data', (d: Buffer) => {
          echoed.push(d.toString());
          s.write(`echo:${d}`);
        });
        s.on('end', () => s.end());
      })
      .listen(7777);
    const fwc = await open(rig);
    expect(fwc.externalAddress).toBe(FE_ADDR);
    const tcp = await runPromise(rig.clock, fwc.connect(B_ADDR, 7777), 2000);
    const got = watch(tcp);
    tcp.write('hello');
    await runUntil(rig.clock, () => got.bytes > 0, 500);
    expect(got.data().toString()).toBe('echo:hello');
    expect(echoed).toEqual(['hello']);
    // The server saw the firewall's external address, and the firewall lists the connection.
    const conns = rig.fwc.describeConnections();
    expect(conns).toEqual([expect.objectContaining({ kind: 'fwc-tcp', remote: `${B_ADDR}:7777`, state: 'relaying', bytesOut: 5, bytesIn: 10 })]);
    expect(String(conns[0]!.external)).toMatch(/^198\.19\.0\.1:/);
    expect(rig.fwc.counters).toMatchObject({ FwcSessions: 1, FwcConnects: 1 });
    // A connect nobody answers is refused with the Windows Sockets error.
    const refused = await runPromise(
      rig.clock,
      fwc.connect(B_ADDR, 7778).then(
        () => null,
        (e) => e,
      ),
      5000,
    );
    expect(refused).toBeInstanceOf(FwcRefusedError);
    expect(refused.code).toBe('WSAECONNREFUSED');
  });

  it('UDP Bind: the port on the external address, the relay both ways, and only endpoints the client sent to get in', async () => {
    const rig = await makeFirewall();
    const fwc = await open(rig);
    const udp = await runPromise(rig.clock, fwc.bindUdp(7000), 1000);
    expect(udp.address()).toEqual({ address: FE_ADDR, port: 7000, family: 'IPv4' });
    const got: { data: string; from: string; port: number }[] = [];
    udp.on('message', (d: Buffer, r: { address: string; port: number }) => got.push({ data: d.toString(), from: r.address, port: r.port }));
    const b = udpOn(rig, 5000),
      stranger = udpOn(rig, 5001);
    // A stranger's datagram: the binding was opened to nobody yet.
    stranger.s.send(Buffer.from('unasked'), 7000, FE_ADDR);
    await runUntil(rig.clock, () => rig.fw.drops['binding-not-open'] > 0, 100);
    udp.send(Buffer.from('hi'), 5000, B_ADDR);
    await runUntil(rig.clock, () => b.got.length > 0, 100);
    expect(b.got[0]).toMatchObject({ from: FE_ADDR, port: 7000 });
    b.s.send(Buffer.from('back'), 7000, FE_ADDR);
    await runUntil(rig.clock, () => got.length > 0, 100);
    expect(got).toEqual([{ data: 'back', from: B_ADDR, port: 5000 }]);
    const rows = rig.fwc.describeBindings();
    expect(rows).toEqual([
      expect.objectContaining({ kind: 'fwc-udp', external: `${FE_ADDR}:7000`, state: 'bound', relayedIn: 1, relayedOut: 1, dropped: 1, media: null }),
    ]);
  });

  it('release and re-bind: the port stays bound for the release delay; the hooks decide between ordering and WSAEADDRINUSE', async () => {
    const rig = await makeFirewall({ mode: 'hotfixed', params: { MediaPortReleaseDelayMs: 500 } });
    const fwc = await open(rig);
    let udp = await runPromise(rig.clock, fwc.bindUdp(7000), 1000);
    udp.close();
    await runUntil(rig.clock, () => rig.fwc.counters.FwcReleases === 1, 100);
    expect(rig.fwc.describeBindings()).toEqual([expect.objectContaining({ state: 'releasing' })]);
    // Hotfixed: the re-bind waits for nothing; the release is completed first.
    udp = await runPromise(rig.clock, fwc.bindUdp(7000), 1000);
    expect(udp.address().port).toBe(7000);
    expect(rig.fault.stats!()).toMatchObject({ rebindsWhileReleasing: 1, releasesCompletedFirst: 1, addrInUse: 0 });
    // Buggy: the same race answers WSAEADDRINUSE until the delay has passed.
    rig.config.setMode('kb319381', 'buggy');
    udp.close();
    const t0 = rig.clock.now;
    const err = await runPromise(
      rig.clock,
      fwc.bindUdp(7000).then(
        () => null,
        (e) => e,
      ),
      1000,
    );
    expect(err).toBeInstanceOf(FwcRefusedError);
    expect(err).toMatchObject({ code: 'WSAEADDRINUSE', wsa: Wsa.WSAEADDRINUSE, refused: 0x470b });
    expect(err.message).toMatch(/Address already in use/);
    expect(rig.fwc.counters.FwcAddrInUse).toBe(1);
    await runUntil(rig.clock, () => rig.fwc.describeBindings().length === 0, 1000);
    expect(rig.clock.now - t0).toBeGreaterThanOrEqual(499);
    udp = await runPromise(rig.clock, fwc.bindUdp(7000), 1000);
    expect(udp.address().port).toBe(7000);
    // Another session cannot take a port that is bound (its own client port is another).
    const other = await raw(rig);
    other.sock.write(emitFwc({ header: hdr(1), message: { command: FwcCommand.Hello, user: 'u', application: 'other', computer: 'c' } }));
    other.sock.write(emitFwc({ header: hdr(2), message: { command: FwcCommand.UdpBind, requestedPort: 7000, clientPort: 7100, application: 'other' } }));
    await runUntil(rig.clock, () => other.replies().length >= 2, 200);
    expect(other.replies()[1]).toMatchObject({ command: 'refused', refused: 0x470b, wsaError: Wsa.WSAEADDRINUSE, reason: expect.stringMatching(/is taken/) });
    // The end of a session frees everything it held.
    await runPromise(rig.clock, fwc.close(), 3000);
    await runUntil(rig.clock, () => rig.fwc.describeBindings().length === 0, 500);
    expect(rig.fw.sessions.locals()).toEqual([]);
  });

  it('malformed control messages: a clear refusal, the session stays when the framing holds, closes when it cannot; other sessions go on', async () => {
    const rig = await makeFirewall();
    const good = await open(rig, 'bystander');
    // A message before Hello, then a UDP Bind with a body cut short.
    const c1 = await raw(rig);
    c1.sock.write(emitFwc({ header: hdr(1), message: { command: FwcCommand.UdpBind, requestedPort: 0, clientPort: 5, application: 'x' } }));
    const cut = emitFwc({ header: hdr(2), message: { command: FwcCommand.UdpBind, requestedPort: 0, clientPort: 5, application: 'x' } }).subarray(0, 90);
    cut.writeUInt16BE(90, 28);
    c1.sock.write(cut);
    const unknown = emitFwc({ header: hdr(3), message: { command: FwcCommand.SessionEnd, bindId: 1 } });
    unknown.writeUInt16BE(0x0999, 36);
    c1.sock.write(unknown);
    await runUntil(rig.clock, () => c1.replies().length >= 3, 200);
    const r1 = c1.replies();
    expect(r1).toEqual([
      expect.objectContaining({ command: 'refused', refused: 0x470b, wsaError: Wsa.WSAEINVAL, reason: expect.stringMatching(/Hello \(0x0500\) first/) }),
      expect.objectContaining({ command: 'refused', refused: 0x470b, wsaError: Wsa.WSAEINVAL, reason: expect.stringMatching(/body too short/) }),
      expect.objectContaining({ command: 'refused', refused: 0x4999, wsaError: Wsa.WSAEINVAL, reason: expect.stringMatching(/unknown command/) }),
    ]);
    expect(c1.sink.closed).toBe(false);
    // Garbage that is not a Firewall Client message at all: refused and closed.
    const c2 = await raw(rig);
    c2.sock.write(Buffer.from('GET / HTTP/1.1\r\nHost: firewall\r\n\r\n'.repeat(2)));
    await runUntil(rig.clock, () => c2.sink.ended || c2.sink.closed, 500);
    expect(c2.replies()).toEqual([expect.objectContaining({ command: 'refused', wsaError: Wsa.WSAEINVAL, reason: expect.stringMatching(/RWSP/) })]);
    expect(rig.fwc.counters.FwcBadMessages).toBe(3);
    // The bystander's session was not touched.
    const udp = await runPromise(rig.clock, good.bindUdp(0), 1000);
    expect(udp.address().address).toBe(FE_ADDR);
    expect(rig.fwc.sessions.size).toBe(2);
  });
});
