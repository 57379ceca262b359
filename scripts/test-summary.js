// Prints the suite's totals as one plain line ("tests: N passed, N failed, N skipped")
// from vitest's JSON report, for CI logs and for anyone reading the end of `make test`.
'use strict';
const fs = require('node:fs');
const file = process.argv[2];
let r;
try {
  r = JSON.parse(fs.readFileSync(file, 'utf8'));
} catch (e) {
  console.log(`tests: no report at ${file} (${e.code || e.message})`);
  process.exit(0);
}
const skipped = (r.numPendingTests || 0) + (r.numTodoTests || 0);
console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
