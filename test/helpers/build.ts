/**
 * Compiles the project into a private directory for tests that run compiled code
 * (the real bin/faultstack, the demo, Lab in a child process). Not the shared dist/:
 * test files run in parallel and other work may be building it at the same time.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..');

export interface PrivateBuild {
  /** Holds dist/ (and bin/faultstack, a copy of the shim). */
  root: string;
  dist: string;
  /** <root>/bin/faultstack */
  shim: string;
  remove(): void;
}

/**
 * tsc exits non-zero on type errors anywhere in the tree but still emits; callers
 * check the files they need exist (`need`).
 */
export function buildPrivate(need: string[] = ['bin/cli/main.js']): PrivateBuild {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-build-'));
  const dist = path.join(root, 'dist');
  const r = spawnSync(path.join(REPO, 'node_modules/.bin/tsc'), ['-p', path.join(REPO, 'tsconfig.json'), '--outDir', dist], { encoding: 'utf8' });
  const missing = need.filter((f) => !fs.existsSync(path.join(dist, f)));
  if (missing.length) {
    fs.rmSync(root, { recursive: true, force: true });
    throw new Error(`tsc did not produce ${missing.join(', ')}:\n${r.stdout}${r.stderr}`);
  }
  fs.mkdirSync(path.join(root, 'bin'));
  const shim = path.join(root, 'bin', 'faultstack');
  fs.copyFileSync(path.join(REPO, 'bin/faultstack'), shim);
  fs.chmodSync(shim, 0o755);
  return { root, dist, shim, remove: () => fs.rmSync(root, { recursive: true, force: true }) };
}
