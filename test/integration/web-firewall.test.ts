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
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { FirewallLab, FW_IN, MEDIA } from '../../lab/firewall-lab';
import { repoRoot } from '../../lab/lab';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (process.env.CI === 'true' && !haveChromium) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (scripts/deps.sh)`);
const shotDir = process.env.FAULTSTACK_WEB_SCREENSHOTS ? path.resolve(repoRoot(), process.env.FAULTSTACK_WEB_SCREENSHOTS) : null;

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
    const url = / web (http:\/\/\S+?)(?:,|$| )/.exec(stack.readyLine)![1]!;
    const wrapper = path.join(fl.tmp, 'chromium.sh');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${fl.ns.fw} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
    browser = await chromium.launch({ executablePath: wrapper, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`${m.text()} (${m.location().url})`);
    });
    page.on('pageerror', (e) => errors.push(e.message));
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
