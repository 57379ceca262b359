import { defineConfig } from 'vitest/config';

// Unit tests run on a virtual clock and finish in seconds. Integration tests start
// real processes in network namespaces; on a 2-core machine two files at a time is
// the most that keeps their timing honest.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    minWorkers: 1,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
