# calico-ts — see README.md. Every target installs what it needs first.
SHELL := /bin/bash
NODE_TEST := node --test --test-reporter=spec
# Expanded when the recipe runs (after the build made dist/).
UNIT_TESTS = $$(find dist/test/unit -name '*.test.js' | sort)
SYSTEM_TESTS = $$(find dist/test/integration dist/test/kernel dist/test/harness dist/test/e2e -name '*.test.js' 2>/dev/null | sort)
# The kernel lane: IPIP on Debian's kernel under qemu (this machine's kernel has no ipip). Part of `test`.
KERNEL_TESTS = $$(find dist/test/kernel-vm -name '*.test.js' 2>/dev/null | sort)

.PHONY: deps demo build plugin install install-systemd run stop test test-unit test-kernel bench clean testbed-up testbed-down testbed-status
HOSTS ?= 3

deps:
	@scripts/deps.sh

build: deps
	@rm -rf dist
	npx tsc -p tsconfig.json
	@chmod +x dist/plugin/cli/main.js
	@printf '{"commit":"%s"}\n' "$$(git rev-parse --short=12 HEAD 2>/dev/null)" > dist/build-info.json

install: build
	ln -sf "$(CURDIR)/dist/plugin/cli/main.js" /usr/local/bin/calico-ts
	@echo "installed /usr/local/bin/calico-ts"

# The Docker managed plugin in build/ (config.json + rootfs): docker plugin create calico-ts ./build
plugin: build
	@scripts/build-plugin.sh

# The node as a systemd service (legacy socket mode); the env file is kept if it exists.
install-systemd: install
	install -m 0644 packaging/calico-ts.service /etc/systemd/system/calico-ts.service
	install -d /etc/calico-ts
	[ -f /etc/calico-ts/calico-ts.env ] || install -m 0644 packaging/calico-ts.env /etc/calico-ts/calico-ts.env
	systemctl daemon-reload
	@echo "edit /etc/calico-ts/calico-ts.env, then: systemctl enable --now calico-ts"

run: install
	@scripts/run.sh

stop:
	@scripts/stop.sh

# One run, one summary. Files run one at a time: system tests start etcd, dockerd and namespaces.
# Runs from several clones on one machine share its kernel and cores: they take turns (flock).
test: build
	flock /run/calico-ts-make-test.lock $(NODE_TEST) --test-concurrency=1 $(UNIT_TESTS) $(SYSTEM_TESTS) $(KERNEL_TESTS)

# Only the kernel lane (about 1-2 minutes; installs qemu-system-x86/cpio/kmod and caches the kernel in build/kernel-lane).
test-kernel: build
	flock /run/calico-ts-make-test.lock $(NODE_TEST) $(KERNEL_TESTS)

test-unit: build
	$(NODE_TEST) $(UNIT_TESTS)

# Each writes its own section of BENCHMARKS.md (about 8 minutes in all; run on a quiet machine).
bench: build
	node dist/bench/docker-run.js
	node dist/bench/cross-host.js
	node dist/bench/cross-host.js --mode vxlan
	node dist/bench/policy.js
	node dist/bench/ipip-qemu.js

# Two hosts on this machine, a network, a cross-host ping, a policy that blocks it; cleans up after itself.
demo: build
	node dist/demo/demo.js

# A multi-host testbed on this machine (network namespaces, a dockerd + calico-ts node per host).
# Builds only when there is no build yet: a rebuild would delete the code a running testbed uses.
testbed-up:
	@[ -f dist/test/helpers/testbed-cli.js ] || $(MAKE) build
	node dist/test/helpers/testbed-cli.js up --hosts $(HOSTS)

testbed-status:
	node dist/test/helpers/testbed-cli.js status

testbed-down:
	node dist/test/helpers/testbed-cli.js down

clean:
	rm -rf dist node_modules
