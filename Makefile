# faultstack: build, test, demo and benchmark. Every target installs what it needs.
SHELL := /bin/bash
NODE  ?= node
TUN_ADDON := drivers/tun/build/Release/faultstack_tun.node

.PHONY: all deps build addon ts test unit integration demo bench clean ike-vectors

all: build

deps:
	@bash scripts/deps.sh

$(TUN_ADDON): drivers/tun/binding.gyp drivers/tun/src/*.cc | deps
	cd drivers/tun && ../../node_modules/.bin/node-gyp rebuild --nodedir=/usr >/dev/null

addon: $(TUN_ADDON)

ts: deps
	./node_modules/.bin/tsc -p tsconfig.json

build: deps addon ts

# Unit tests (memory driver, virtual clock) and integration tests (real TUN, real
# Linux peers in network namespaces the tests create; needs root).
test: build
	@mkdir -p .test-results
	./node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json=.test-results/vitest.json; \
	  rc=$$?; node scripts/test-summary.js .test-results/vitest.json; exit $$rc

unit: build
	./node_modules/.bin/vitest run test/unit

integration: build
	./node_modules/.bin/vitest run test/integration

demo: build
	$(NODE) dist/bin/demo.js

bench: build
	$(NODE) dist/bench/run.js

# Re-captures the IKEv2 key-derivation vectors from two real strongSwan charons (root):
# rewrites test/unit/fixtures/strongswan-ike.json (see lab/capture-ike-vectors.ts).
ike-vectors: build
	@mkdir -p .tools
	./node_modules/.bin/esbuild lab/capture-ike-vectors.ts --bundle --platform=node --log-level=warning --outfile=.tools/capture-ike-vectors.js
	$(NODE) .tools/capture-ike-vectors.js

clean:
	rm -rf dist drivers/tun/build .tools
