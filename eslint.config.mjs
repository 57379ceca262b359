// The lint rules of faultstack: ESLint's and typescript-eslint's recommended sets, on the
// product, the lab, the benchmarks and the tests. `make lint` (part of `make test`) runs it.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'drivers/tun/build/**', '.tools/**', 'bench/results/**', '**/*.cjs', '**/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: 'module' },
    rules: {
      // tsc's noUnusedLocals/noUnusedParameters already refuse unused names; `_x` marks a deliberate one.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Lazy loading (the runtime, the services) is deliberate: `run` loads the stack only when it starts one.
      '@typescript-eslint/no-require-imports': 'off',
      // Bit operations and control characters are protocol work here.
      'no-control-regex': 'off',
      // An empty catch says "best effort" with a comment; an empty function is a no-op callback.
      'no-empty': ['error', { allowEmptyCatch: true }],
      '@typescript-eslint/no-empty-function': 'off',
      // A field table names overlapping fields (ICMP's sequence number and next-hop MTU
      // share bytes 6-7), and the virtio constants hold flags and GSO types side by side.
      '@typescript-eslint/no-duplicate-enum-values': 'off',
      // It flags the default given before a try whose catch may keep it (\`let x = 0; try { x = f() } catch {}\`).
      'no-useless-assignment': 'off',
    },
  },
  {
    // A test reads a tool's JSON output (iperf3 -J, faultstack --json) and asserts its shape
    // itself; the web page reads the control plane's JSON replies and draws what it finds.
    files: ['test/**/*.ts', 'web/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
