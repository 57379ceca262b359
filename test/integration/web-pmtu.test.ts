/// <reference lib="dom" />
/**
 * The web view's host-route card under KB 898060 (buggy), behind real Linux routers (the
 * PMTU lab, lab/pmtu-lab.ts): eight destinations served over path A, then again over
 * path B, each route lowered twice; a headless Chromium in the stack's namespace watches
 * the card: counted 20 (MaxIcmpHostRoutes) against 8 real routes, the bar full, the note
 * that ICMP is ignored now; no console error.
 * FAULTSTACK_WEB_SCREENSHOTS=DIR writes the card's screenshot there.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import { haveChromium, launchIn, pageWithErrors, shotDir, webUrl } from './helpers/browser';
import { PmtuLab } from '../../lab/pmtu-lab';

const KNOWN = 8;
const LIMIT = 20;

let pl: PmtuLab;
let browser: Browser | null = null;

beforeAll(async () => {
  pl = await PmtuLab.create({ tag: 'web', clients: KNOWN });
}, 120_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  await pl?.cleanup();
});

describe.runIf(haveChromium || process.env.CI === 'true')('the web view of the host-route cache (KB 898060)', () => {
  test('buggy: the count reaches MaxIcmpHostRoutes with eight real routes, and the card says so', async () => {
    const stack = await pl.startStack({ mode: 'buggy', params: { MaxIcmpHostRoutes: LIMIT }, extraArgs: ['--web', '127.0.0.1:0'] });
    const url = webUrl(stack.readyLine);
    browser = await launchIn(pl.ns.k, pl.tmp);
    const { page, errors } = await pageWithErrors(browser);
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('routes-max')?.textContent === '20', null, { timeout: 10_000 });
    await pl.usePath('A');
    for (const a of pl.clients) await pl.curl(a, 200_000, 4);
    await page.waitForFunction(
      () => document.getElementById('routes-counted')?.textContent === '8' && document.getElementById('routes-real')?.textContent === '8',
      null,
      { timeout: 10_000 },
    );
    await pl.usePath('B');
    for (const a of pl.clients) await pl.curl(a, 200_000, 4);
    await page.waitForFunction((limit) => Number(document.getElementById('routes-counted')?.textContent) >= limit, LIMIT, { timeout: 10_000 });
    expect(await page.textContent('#routes-real')).toBe('8');
    expect(await page.textContent('#routes-note')).toContain('ICMP fragmentation-needed messages are ignored');
    expect(await page.locator('#routes-bar.full').count()).toBe(1);
    if (shotDir)
      await page
        .locator('#routes-counted')
        .locator('xpath=ancestor::div[contains(@class,"card")]')
        .screenshot({ path: path.join(shotDir, 'web-routes.png') });
    expect(errors).toEqual([]);
    await page.close();
  }, 180_000);
});
