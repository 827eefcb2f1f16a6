# SPDX-License-Identifier: GPL-2.0-or-later
#
# splitmem: the two commands a newcomer needs are `make demo` and
# `make check`; both install what is missing (as root) and build first.

SHELL := /bin/bash
BUILD ?= build
QEMU_BUILD := $(BUILD)/qemu/build
QEMU_BIN := $(QEMU_BUILD)/qemu-system-x86_64
# Every QEMU ninja run takes this lock: several developers
# may share one build tree.
# ccache through its compiler links on PATH: QEMU's configure names the
# compiler as plain `cc`, so this needs no reconfiguration.
# CCACHE_BASEDIR and CCACHE_NOHASHDIR make the cache shareable between
# clones at different paths (a fresh clone hits what another compiled);
# the price is debug info naming the first clone's build directory.
CCACHE_PATH := $(if $(wildcard /usr/lib/ccache/cc),PATH=/usr/lib/ccache:$$PATH CCACHE_BASEDIR=$(CURDIR) CCACHE_NOHASHDIR=1)
QEMU_NINJA := $(CCACHE_PATH) flock $(BUILD)/.qemu-build.lock ninja -C $(QEMU_BUILD)
export SPLITMEM_BUILD := $(abspath $(BUILD))

.PHONY: all deps configure qemu qtest project guest check demo bench \
        export-patches style clean distclean help

all: qemu project

help:
	@echo "make            build qemu-system-x86_64 and the project's tools"
	@echo "make demo       migrate a running Linux guest between namespaces"
	@echo "make check      unit tests, style gate, migration qtests, system tests"
	@echo "make deps       install build and test packages (root)"
	@echo "make guest      build the guest kit (kernel + initramfs)"
	@echo "make bench      run the benchmarks"
	@echo "make export-patches  rewrite patches/ from build/qemu's commits"

# Idempotent and quick when nothing is missing.
deps:
	@if [ "$$(id -u)" = 0 ]; then scripts/install-deps.sh; \
	else echo "make deps: not root; assuming the packages are installed"; fi

# configure is cheap when nothing changed, and it lays new overlay files.
configure:
	@./configure

qemu: configure
	@$(QEMU_NINJA) qemu-system-x86_64

qtest: qemu
	@$(QEMU_NINJA) tests/qtest/migration-test tests/qtest/qmp-cmd-test \
	    tests/qtest/test-hmp

project: configure
	@meson compile -C $(BUILD)/splitmem

guest:
	@scripts/guest-kit.sh >/dev/null

check: deps
	@$(MAKE) --no-print-directory qemu qtest project guest
	@scripts/check.sh

demo: deps
	@$(MAKE) --no-print-directory qemu project guest
	@python3 tests/split/demo.py

bench: deps
	@$(MAKE) --no-print-directory qemu project
	@scripts/bench.sh

style:
	@scripts/check.sh --only style

export-patches:
	@scripts/export-patches.sh

clean:
	rm -rf $(QEMU_BUILD) $(BUILD)/splitmem

distclean:
	rm -rf $(BUILD)
