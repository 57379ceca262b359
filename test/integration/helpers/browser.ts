/**
 * Headless Chromium for the web-view tests: Debian's /usr/bin/chromium driven by
 * playwright-core, started inside a lab namespace (the web view listens there). Under
 * CI=true a missing Chromium is a failure, not a skip.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';
import { repoRoot } from '../../../lab/lab';

export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = fs.existsSync(CHROMIUM);
if (process.env.CI === 'true' && !haveChromium) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (scripts/deps.sh)`);
/** FAULTSTACK_WEB_SCREENSHOTS=DIR: where the tests write their screenshots (null: none). */
export const shotDir = process.env.FAULTSTACK_WEB_SCREENSHOTS ? path.resolve(repoRoot(), process.env.FAULTSTACK_WEB_SCREENSHOTS) : null;

/** Starts Chromium in namespace `ns` (through a wrapper script written to `dir`). */
export async function launchIn(ns: string, dir: string): Promise<Browser> {
  const wrapper = path.join(dir, `chromium-${ns}.sh`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  return chromium.launch({ executablePath: wrapper, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
}

/** A page whose console errors and page errors are collected in `errors` (`ignore` lets a known one pass). */
export async function pageWithErrors(browser: Browser, ignore: (m: ConsoleMessage) => boolean = () => false): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !ignore(m)) errors.push(`${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => errors.push(e.message));
  return { page, errors };
}

/** The web view's URL from a stack's ready line. */
export function webUrl(readyLine: string): string {
  const m = / web (http:\/\/\S+?)(?:,|$| )/.exec(readyLine);
  if (!m) throw new Error(`no web URL in the ready line: ${readyLine}`);
  return m[1]!;
}
