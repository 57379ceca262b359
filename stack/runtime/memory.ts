/**
 * Full garbage collections on request (`stats --gc`, the benchmarks' memory figures),
 * on its own so that a tool measuring its own heap (bench/tools/kernel-server.ts) loads
 * nothing else.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

let gcFn: (() => void) | null = null;

/** Two full garbage collections of this thread's heap: what is left is what live objects hold. */
export function fullGc(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}

/**
 * Both halves of what live objects hold after a full collection: the V8 heap, and the
 * ArrayBuffer backing stores (every Buffer's bytes) that V8 keeps outside it. A leaked
 * KB 903927 negotiation state is mostly the latter (two 16.5 KiB record buffers).
 */
export function memoryAfterGc(): { heapUsedAfterGc: number; arrayBuffersAfterGc: number } {
  fullGc();
  const m = process.memoryUsage();
  return { heapUsedAfterGc: m.heapUsed, arrayBuffersAfterGc: m.arrayBuffers };
}
