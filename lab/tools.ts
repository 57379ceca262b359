/**
 * The programs the lab drives (ping, tcpdump, hping3, tshark, iperf3 ...) and the
 * privilege it needs. A test that lacks one fails, with one line saying what is missing
 * and what installs it: it never skips or passes without running (a skipped check is a
 * check that cannot fail). scripts/deps.sh (run by every make target) installs them;
 * nothing here installs anything.
 */
import { spawnSync } from 'node:child_process';

/** Is `cmd` on PATH (or an executable path)? */
export function haveTool(cmd: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status === 0;
}

/** Throws unless `cmd` is installed; `pkg` is the Debian package that has it. */
export function requireTool(cmd: string, pkg: string = cmd): void {
  if (!haveTool(cmd)) {
    throw new Error(`${cmd} is not installed: the test needs it (make deps, i.e. scripts/deps.sh, installs the Debian package ${pkg})`);
  }
}

/** Throws unless this process is root (namespaces, veth, TUN devices and raw sockets need it). */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new Error(`${what} needs root (CAP_NET_ADMIN and CAP_NET_RAW): run the tests as root`);
}
