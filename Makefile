# faultstack: build, test, demo and benchmark. Every target installs what it needs.
SHELL := /bin/bash
NODE  ?= node
TUN_ADDON := drivers/tun/build/Release/faultstack_tun.node
AEAD_ADDON := stack/ipsec/aead/build/Release/faultstack_aead.node

.PHONY: all deps build addon ts test unit integration lint lint-deps format format-check typecheck-tests demo bench clean ike-vectors

all: build

deps:
	@bash scripts/deps.sh

$(TUN_ADDON): drivers/tun/binding.gyp drivers/tun/src/*.cc | deps
	@echo "node-gyp: building $(TUN_ADDON)"
	@cd drivers/tun && ../../node_modules/.bin/node-gyp rebuild --nodedir=/usr --loglevel=warn >/dev/null

# ESP's AES-GCM with one OpenSSL context per SA (stack/ipsec/aead.ts says why).
$(AEAD_ADDON): stack/ipsec/aead/binding.gyp stack/ipsec/aead/src/*.cc | deps
	@echo "node-gyp: building $(AEAD_ADDON)"
	@cd stack/ipsec/aead && ../../../node_modules/.bin/node-gyp rebuild --nodedir=/usr --loglevel=warn >/dev/null

addon: $(TUN_ADDON) $(AEAD_ADDON)

ts: deps
	./node_modules/.bin/tsc -p tsconfig.json

# The web view (web/): type-checked for the browser, bundled by esbuild into dist/web with
# its page and style sheet; `faultstack run --web` serves them from there (no CDN, no internet).
.PHONY: web
web: deps
	./node_modules/.bin/tsc -p web/tsconfig.json
	@mkdir -p dist/web
	./node_modules/.bin/esbuild web/app.ts --bundle --format=iife --target=es2020 --log-level=warning --outfile=dist/web/app.js
	cp web/index.html web/app.css dist/web/

build: deps addon ts web

# The layer rules (.dependency-cruiser.cjs, with type-only imports; and what each process
# loads, .dependency-cruiser-loads.cjs): docs/design.md says what they are.
lint-deps: deps
	./node_modules/.bin/depcruise stack drivers lab bin bench test --config .dependency-cruiser.cjs
	./node_modules/.bin/depcruise stack drivers lab bin bench test --config .dependency-cruiser-loads.cjs

# typescript-eslint's and ESLint's recommended rules (eslint.config.mjs says what is off and why).
lint: deps
	./node_modules/.bin/eslint stack drivers lab bin bench test web

# One code style (Prettier, .prettierrc.json): `make format` rewrites, make test checks.
FORMATTED := "stack/**/*.ts" "drivers/**/*.ts" "bin/**/*.ts" "lab/**/*.ts" "bench/**/*.ts" "test/**/*.ts" "web/**/*.ts"
format: deps
	./node_modules/.bin/prettier --write --log-level=warn $(FORMATTED)
format-check: deps
	./node_modules/.bin/prettier --check --log-level=warn $(FORMATTED)

# The tests are type-checked as the product is (tsconfig.test.json: the whole tree, no output).
typecheck-tests: deps
	./node_modules/.bin/tsc -p tsconfig.test.json

# Unit tests (memory driver, virtual clock) and integration tests (real TUN, real
# Linux peers in network namespaces the tests create; needs root). The layer rules, the
# lint, the format check and the tests' type check run first: CI (.ci/run) runs `make test`.
test: build lint-deps lint format-check typecheck-tests
	@mkdir -p .test-results
	./node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json=.test-results/vitest.json; \
	  rc=$$?; node scripts/test-summary.js .test-results/vitest.json; exit $$rc

unit: build
	./node_modules/.bin/vitest run test/unit

integration: build
	./node_modules/.bin/vitest run test/integration

# The demo is a scenario file (scenarios/demo.yaml); `faultstack demo` (bin/demo.ts) is the
# same tour with its own summary table.
demo: build
	./bin/faultstack scenario run scenarios/demo.yaml

# Every shipped scenario file (scenarios/, docs/scenarios.md), one after another; stops at the first that fails.
.PHONY: scenarios
scenarios: build
	@for f in scenarios/*.yaml; do $(NODE) dist/bin/cli/main.js scenario run $$f || exit 1; done

bench: build
	$(NODE) dist/bench/run.js

# Re-captures the IKEv2 key-derivation vectors from two real strongSwan charons (root):
# rewrites test/unit/fixtures/strongswan-ike.json (see lab/capture-ike-vectors.ts).
ike-vectors: build
	@mkdir -p .tools
	./node_modules/.bin/esbuild lab/capture-ike-vectors.ts --bundle --platform=node --log-level=warning --outfile=.tools/capture-ike-vectors.js
	$(NODE) .tools/capture-ike-vectors.js

clean:
	rm -rf dist drivers/tun/build stack/ipsec/aead/build .tools
