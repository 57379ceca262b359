/**
 * Issue 8 item 13: a TUN device made beforehand (`ip tuntap add`), inside a lab
 * namespace. Before, `run` failed on it ("Address already assigned") and left it
 * configured. Now it is used as it is: faultstack adds only what is missing, and on exit
 * undoes exactly what it changed (address, MTU, up state), so the device and its
 * addresses are as before; with --no-host-config it touches nothing of the kernel side.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Lab } from '../../lab/lab';

const STACK = '198.18.0.2';

let lab: Lab;

beforeAll(async () => {
  lab = await Lab.create('tx');
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
});

/**
 * What an administrator would look at: flags, MTU, state, addresses, the TUN flags. The
 * IPv6 link-local address the kernel itself gives an up interface once it has carrier
 * (an fd attached: any user of the device causes it) is not ours and not compared.
 */
async function snapshot(ns: string, dev: string) {
  const r = await lab.exec(ns, 'ip', ['-j', '-d', 'addr', 'show', 'dev', dev], { check: true });
  const j = JSON.parse(r.stdout)[0];
  return {
    flags: [...j.flags].sort(),
    mtu: j.mtu,
    operstate: j.operstate,
    txqlen: j.txqlen,
    tun: j.linkinfo?.info_data,
    addrs: (j.addr_info ?? [])
      .filter((a: { family: string; scope: string }) => !(a.family === 'inet6' && a.scope === 'link'))
      .map((a: { family: string; local: string; prefixlen: number; scope: string }) => `${a.family} ${a.local}/${a.prefixlen} ${a.scope}`)
      .sort(),
  };
}

async function pingOk(ns: string): Promise<void> {
  const r = await lab.exec(ns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', STACK], { timeoutMs: 15_000 });
  expect(r.stdout, r.stderr).toMatch(/3 packets transmitted, 3 received/);
}

describe('a TUN device made beforehand', () => {
  test('with an address, down: run adds nothing it finds, sets MTU and up, and puts back MTU and down on exit', async () => {
    const ns = await lab.addNamespace('a');
    const dev = lab.ifname('pa');
    await lab.ip('a', 'tuntap', 'add', 'dev', dev, 'mode', 'tun');
    await lab.ip('a', 'addr', 'add', '198.18.0.1/24', 'dev', dev);
    const before = await snapshot(ns, dev);
    expect(before.operstate).toBe('DOWN');
    const stack = await lab.startStack(ns, [
      '--tun',
      dev,
      '--addr',
      `${STACK}/24`,
      '--mtu',
      '1400',
      '--services',
      'echo',
      '--control',
      `/run/faultstack/${dev}.sock`,
      '--json',
    ]);
    const ready = JSON.parse(stack.readyLine);
    expect(ready).toMatchObject({ created: false, hostConfig: true, mtu: 1400, hostAddr: '198.18.0.1/24' });
    // A device without vnet_hdr is used without it: its flags stay what they were.
    expect(ready.offloads).toEqual([]);
    const during = await snapshot(ns, dev);
    expect(during.mtu).toBe(1400);
    expect(during.flags).toContain('UP');
    expect(during.tun).toEqual(before.tun);
    await pingOk(ns);
    expect((await stack.kill(8000)).code).toBe(0);
    expect(await snapshot(ns, dev)).toEqual(before);
  }, 60_000);

  test('a host address it lacks is added, and removed on exit; the one it had stays', async () => {
    const ns = await lab.addNamespace('b');
    const dev = lab.ifname('pb');
    await lab.ip('b', 'tuntap', 'add', 'dev', dev, 'mode', 'tun');
    await lab.ip('b', 'addr', 'add', '198.18.9.1/24', 'dev', dev); // someone else's address
    const before = await snapshot(ns, dev);
    const stack = await lab.startStack(ns, ['--tun', dev, '--addr', `${STACK}/24`, '--services', 'echo', '--control', `/run/faultstack/${dev}.sock`]);
    expect((await snapshot(ns, dev)).addrs).toContain('inet 198.18.0.1/24 global');
    await pingOk(ns);
    expect((await stack.kill(8000)).code).toBe(0);
    expect(await snapshot(ns, dev)).toEqual(before);
  }, 60_000);

  test('--no-host-config: the device is used as it is (address, MTU, up state untouched), and is as before on exit', async () => {
    const ns = await lab.addNamespace('c');
    const dev = lab.ifname('pc');
    await lab.ip('c', 'tuntap', 'add', 'dev', dev, 'mode', 'tun');
    await lab.ip('c', 'addr', 'add', '198.18.0.1/24', 'dev', dev);
    await lab.ip('c', 'link', 'set', 'dev', dev, 'mtu', '1300');
    await lab.ip('c', 'link', 'set', 'dev', dev, 'up');
    const before = await snapshot(ns, dev);
    const stack = await lab.startStack(ns, [
      '--tun',
      dev,
      '--addr',
      `${STACK}/24`,
      '--no-host-config',
      '--services',
      'echo',
      '--control',
      `/run/faultstack/${dev}.sock`,
    ]);
    expect(stack.readyLine).toMatch(/on \S+ \(kernel side left as it is, mtu 1300,/);
    await pingOk(ns);
    // A 1300-byte MTU: the stack fragments a larger echo reply to fit it.
    const big = await lab.exec(ns, 'ping', ['-c', '1', '-s', '2000', '-W', '2', STACK], { timeoutMs: 10_000 });
    expect(big.stdout).toMatch(/1 received/);
    expect((await stack.kill(8000)).code).toBe(0);
    expect(await snapshot(ns, dev)).toEqual(before);
  }, 60_000);

  test('--no-host-config needs an existing device and takes neither --host-addr nor --mtu (exit 2)', async () => {
    const ns = await lab.addNamespace('d');
    const absent = await lab.cli(
      ns,
      [
        'run',
        '--tun',
        lab.ifname('pd'),
        '--addr',
        `${STACK}/24`,
        '--no-host-config',
        '--services',
        'none',
        '--control',
        `/run/faultstack/${lab.ifname('pd')}.sock`,
      ],
      { timeoutMs: 20_000 },
    );
    expect(absent.code).toBe(2);
    expect(absent.stderr).toBe(
      `faultstack: --no-host-config uses an existing TUN device, and ${lab.ifname('pd')} does not exist: make it with \`ip tuntap add dev ${lab.ifname('pd')} mode tun\` and configure its address, or drop --no-host-config\n`,
    );
    expect((await lab.exec(ns, 'ip', ['link', 'show', 'dev', lab.ifname('pd')])).code).not.toBe(0); // nothing was made
    const withAddr = await lab.cli(ns, ['run', '--addr', `${STACK}/24`, '--host-addr', '198.18.0.1/24', '--no-host-config']);
    expect(withAddr.code).toBe(2);
    expect(withAddr.stderr).toBe('faultstack run: --no-host-config leaves the kernel side as it is: give --host-addr only without it\n');
    const withMtu = await lab.cli(ns, ['run', '--addr', `${STACK}/24`, '--mtu', '1400', '--no-host-config']);
    expect(withMtu.code).toBe(2);
    expect(withMtu.stderr).toBe(
      "faultstack run: --no-host-config uses the device's own MTU: set it with `ip link set dev NAME mtu N`, or drop --no-host-config\n",
    );
  }, 60_000);
});
