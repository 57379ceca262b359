/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The web view of a firewall (KB 319381): the firewall lab (lab/firewall-lab.ts) with the
 * stack started with --web, a Firewall Client player streaming from the media server
 * while a headless Chromium inside the firewall's namespace watches the bindings card:
 * the media bindings appear on the page while the player runs, with no console error.
 * FAULTSTACK_WEB_SCREENSHOTS=DIR writes the card's screenshot there.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import { haveChromium, launchIn, pageWithErrors, shotDir, webUrl } from './helpers/browser';
import { FirewallLab, FW_IN, MEDIA } from '../../lab/firewall-lab';

let fl: FirewallLab;
let browser: Browser | null = null;

beforeAll(async () => {
  fl = await FirewallLab.create({ tag: 'web' });
  await fl.startMediaServer();
}, 60_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  await fl?.cleanup();
});

describe.runIf(haveChromium || process.env.CI === 'true')('the web view of a firewall', () => {
  test('buggy: the media bindings of a Firewall Client player show on the page while it plays', async () => {
    const stack = await fl.startFirewall({ mode: 'buggy', extraArgs: ['--web', '127.0.0.1:0'] });
    const url = webUrl(stack.readyLine);
    browser = await launchIn(fl.ns.fw, fl.tmp);
    const { page, errors } = await pageWithErrors(browser);
    await page.goto(url);
    await page.waitForSelector('#fw-card:not([hidden])', { timeout: 15_000 });
    const play = fl.play(['--server', MEDIA, '--via', 'fwc', '--firewall', FW_IN]);
    await page.waitForFunction(() => [...document.querySelectorAll('#fw h3')].some((h) => /^media \([1-9]/.test(h.textContent ?? '')), null, {
      timeout: 30_000,
    });
    if (shotDir) await page.locator('#fw-card').screenshot({ path: path.join(shotDir, 'web-firewall.png') });
    const r = await play;
    expect(r.items[0]!.ok).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);
});
