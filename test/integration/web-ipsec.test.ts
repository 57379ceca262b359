/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The web view's IPsec card with a real strongSwan client (charon with kernel-libipsec, in
 * a namespace behind the kernel's router, as in ipsec.test.ts): a headless Chromium in the
 * stack's namespace watches the card while the client brings its tunnel up and takes it
 * down. The IKE SA appears with the identity the key exchange proved and the outer
 * address it came from, its child SA beside it, then both go; no console error.
 * FAULTSTACK_WEB_SCREENSHOTS=DIR writes the card's screenshot there.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import type { Lab, StackProcess } from '../../lab/lab';
import { StrongSwan } from '../../lab/strongswan';
import { haveChromium, launchIn, pageWithErrors, shotDir, webUrl } from './helpers/browser';
import { STACK, startTunLab, type TunLab } from './helpers/tun-lab';

const CLIENT = '198.18.50.1';

let t: TunLab;
let lab: Lab;
let nsK: string, nsC: string;
let tmp: string;
let stack: StackProcess;
let browser: Browser | null = null;
let client: StrongSwan | null = null;

beforeAll(async () => {
  t = await startTunLab('wips', {
    services: 'http',
    args: ['--web', '127.0.0.1:0'],
    prepare: async (l, k, dir) => {
      nsC = await l.addNamespace('c');
      await l.veth('k', 'c', { addrA: '198.18.50.254/24', addrB: `${CLIENT}/24` });
      await l.sysctl(k, 'net.ipv4.ip_forward', 1);
      await l.ip('c', 'route', 'add', 'default', 'via', '198.18.50.254');
      const cfg = path.join(dir, 'ipsec.yaml');
      fs.writeFileSync(cfg, 'local:\n  id: server@lab\nike:\n  dpd: 0\npeers:\n  - id: client1@lab\n    psk: labsecret\n');
      return ['--ipsec', cfg];
    },
  });
  ({ lab, ns: nsK, stack, tmp } = t);
}, 90_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  await client?.stop().catch(() => {});
  await t?.cleanup();
});

describe.runIf(haveChromium || process.env.CI === 'true')('the web view of IPsec', () => {
  test("a strongSwan client's tunnel shows on the IPsec card with its proven identity, then goes", async () => {
    browser = await launchIn(nsK, tmp);
    const { page, errors } = await pageWithErrors(browser);
    await page.goto(webUrl(stack.readyLine));
    await page.waitForSelector('#ipsec-card:not([hidden])', { timeout: 15_000 });
    const heading = (name: string, n: number) =>
      page.waitForFunction(([k, c]) => [...document.querySelectorAll('#ipsec h3')].some((h) => h.textContent === `${k} (${c})`), [name, n] as const, {
        timeout: 20_000,
      });
    await heading('ikeSas', 0);

    client = await StrongSwan.start(lab, nsC, path.join(tmp, 'c1'), {
      localAddr: CLIENT,
      remoteAddr: STACK,
      id: 'client1@lab',
      psk: 'labsecret',
      localTs: `${CLIENT}/32`,
      remoteTs: `${STACK}/32`,
    });
    const r = await client.initiate();
    expect(r.stdout).toMatch(/initiate completed successfully/);
    // Traffic through the tunnel, so the child SA has bytes to show.
    const curl = await lab.exec(nsC, 'curl', [
      '-sS',
      '--max-time',
      '20',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{size_download}',
      `http://${STACK}/bytes/100000`,
    ]);
    expect(curl.stdout.trim(), curl.stderr).toBe('200 100000');
    await heading('ikeSas', 1);
    await heading('childSas', 1);
    const text = (await page.textContent('#ipsec')) ?? '';
    expect(text).toContain('client1@lab');
    expect(text).toContain(`${CLIENT}:4500`); // the outer address it came from (NAT-T port)
    if (shotDir) await page.locator('#ipsec-card').screenshot({ path: path.join(shotDir, 'web-ipsec.png') });

    await client.terminateIke();
    await heading('ikeSas', 0);
    await heading('childSas', 0);
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);
});
