# erofs-snapshotter: the single entry point.
#
#   make run    set up, build the library, run the C example end to end (as root)
#   make test   set up, then every test in two stages, and a summary (as root)
#
# Both install what is missing first (scripts/deps.sh, Debian-based machines).
# Without root, with Rust, Go and Python 3 (pytest) installed:
#
#   make build              the library (cdylib, staticlib) and the ctl tool
#   make install            the C library, header and pkg-config file (PREFIX,
#                           LIBDIR, INCLUDEDIR, PKGCONFIGDIR, DESTDIR)
#   make lint               rustfmt, clippy, gofmt
#   make header             regenerate include/erofs_snapshotter.h (commit it)
#   make test-unprivileged  every check that needs no root

CARGO   ?= cargo
CC      ?= gcc
CXX     ?= g++
BUILD   := target/c
BUILD_LIBDIR := $(CURDIR)/target/release
HEADER  := include/erofs_snapshotter.h
CSTRICT := -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude
CLINK   := -L$(BUILD_LIBDIR) -lerofs_snapshotter -Wl,-rpath,$(BUILD_LIBDIR)
SAN     := -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
VALGRIND ?= valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect

# The header generator (tools/gen-header: cbindgen as a library, pinned by its
# own Cargo.lock), built into target/ like everything else.
GEN_HEADER := $(CARGO) run --quiet --locked --manifest-path tools/gen-header/Cargo.toml \
	--target-dir $(CURDIR)/target/gen-header --

# The stages of `make test`: set-up (root), then what needs no root, then
# what does. Each target reports PASS/FAIL and its time in the summary.
SETUP_STEPS        := deps
UNPRIVILEGED_STEPS := lint build header-check test-rust-unit go-vet test-python-ffi
ROOT_STEPS         := test-rust-root test-c test-valgrind test-install test-python-root \
                      test-go-root test-no-erofs-utils test-e2e test-vm test-fuzz

.PHONY: all deps build install test-install run test test-unprivileged test-root lint header header-check \
	test-rust test-rust-unit test-rust-root test-c test-valgrind \
	test-python test-python-ffi test-python-root test-go go-vet test-go-root \
	test-no-erofs-utils test-e2e test-vm test-fuzz bench bench-launch bench-writer bench-scale \
	bench-integrity

all: build

deps:
	./scripts/deps.sh

# The library (cdylib, staticlib) and the ctl tool. Writes only under target/.
build:
	$(CARGO) build --release --locked

# The C library as a system library: scripts/install.sh says what goes where.
PREFIX       ?= /usr/local
INSTALL_VARS := PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' CARGO='$(CARGO)' \
	$(if $(LIBDIR),LIBDIR='$(LIBDIR)') \
	$(if $(INCLUDEDIR),INCLUDEDIR='$(INCLUDEDIR)') $(if $(PKGCONFIGDIR),PKGCONFIGDIR='$(PKGCONFIGDIR)')
install:
	$(INSTALL_VARS) scripts/install.sh

# make install into a DESTDIR, then the C example built and run with
# pkg-config alone, the archive's symbols, SQLite beside it; the Python
# wheel installed into a fresh venv and used from elsewhere (as root).
test-install:
	tests/install/check.sh
	tests/install/python.sh

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/example: examples/c/example.c $(HEADER) | $(BUILD)
	$(CC) $(CSTRICT) -g $< $(CLINK) -o $@

$(BUILD)/error_paths: tests/c/error_paths.c $(HEADER) | $(BUILD)
	$(CC) $(CSTRICT) $(SAN) $< $(CLINK) -o $@

$(BUILD)/error_paths-plain: tests/c/error_paths.c $(HEADER) | $(BUILD)
	$(CC) $(CSTRICT) -g $< $(CLINK) -o $@

$(BUILD)/example-asan: examples/c/example.c $(HEADER) | $(BUILD)
	$(CC) $(CSTRICT) $(SAN) $< $(CLINK) -o $@

# The main job: the C example on a fresh temporary root.
run: deps
	$(MAKE) --no-print-directory build $(BUILD)/example
	./$(BUILD)/example

test:
	@MAKE='$(MAKE)' scripts/stages.sh 'setup: $(SETUP_STEPS)' \
		'unprivileged: $(UNPRIVILEGED_STEPS)' 'root: $(ROOT_STEPS)'

test-unprivileged:
	@MAKE='$(MAKE)' scripts/stages.sh 'unprivileged: $(UNPRIVILEGED_STEPS)'

test-root:
	@MAKE='$(MAKE)' scripts/stages.sh 'setup: $(SETUP_STEPS)' 'root: $(ROOT_STEPS)'

lint:
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt --all -- --check
	cd tools/gen-header && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked --manifest-path tools/gen-header/Cargo.toml \
		--target-dir $(CURDIR)/target/gen-header -- -D warnings
	@bad=$$(gofmt -l bindings/go examples/go tests/e2e/fakeproxy); [ -z "$$bad" ] || { echo "gofmt would change: $$bad" >&2; exit 1; }
	python3 tools/check-layers.py src

# The header is committed. `make header` regenerates it from src/ffi.rs and
# cbindgen.toml; `make header-check` regenerates it into a temporary file and
# fails on any difference, then compiles it alone as C and as C++.
header:
	$(GEN_HEADER) $(CURDIR)/$(HEADER)

header-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(GEN_HEADER) "$$tmp/erofs_snapshotter.h" && \
	if ! diff -u --label '$(HEADER) (committed)' --label '$(HEADER) (generated)' \
		$(HEADER) "$$tmp/erofs_snapshotter.h"; then \
		echo "$(HEADER) is stale: the diff above is what src/ffi.rs now generates; run 'make header' and commit it" >&2; \
		exit 1; \
	fi; \
	echo "$(HEADER) is up to date"
	$(CC) -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c $(HEADER)
	$(CXX) -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ $(HEADER)

# The Rust tests. test-rust-unit: the library's unit tests but those that
# need root (listed here: chattr, mounts, a loop-control node), which it skips.
# test-rust-root: every unit test again (a second or so), the integration tests
# (real mkfs.erofs, real kernel mounts), the ctl tool's tests, the doc tests.
ROOT_UNIT_TESTS := integrity::tests::immutable_flag_round_trip \
                   layer_mounts::tests::file_backed_and_loop_mounts \
                   loopdev::tests::a_missing_node_in_a_fake_dev_dir_is_reported_at_once

test-rust:
	$(CARGO) test --locked --workspace

test-rust-unit:
	$(CARGO) test --locked --workspace --lib -- $(foreach t,$(ROOT_UNIT_TESTS),--skip $(t))

# RANDOM_LAYERS: the randomized layer stacks (and half as many upper dirs)
# compared between the built-in writer and mkfs.erofs, in a release build.
RANDOM_LAYERS ?= 120

test-rust-root: build
	$(CARGO) test --locked --workspace --lib --bins --test '*'
	$(CARGO) test --locked --workspace --doc
	RANDOM_LAYERS=$(RANDOM_LAYERS) $(CARGO) test --release --locked --test random_layers

# The C example and the C error-path test, both under ASan/UBSan with leak checks.
test-c: build $(BUILD)/example $(BUILD)/error_paths $(BUILD)/example-asan
	ASAN_OPTIONS=detect_leaks=1 ./$(BUILD)/example-asan
	d=$$(mktemp -d) && ASAN_OPTIONS=detect_leaks=1 ./$(BUILD)/error_paths $$d/root; rc=$$?; rm -rf $$d; exit $$rc

# The same two programs built without sanitizers, under valgrind's memcheck.
# Definite and indirect leaks fail; "possibly lost" blocks do not: the
# library's process-wide caches (hash tables, thread handles) are held through
# interior pointers, which valgrind counts as possible leaks. (valgrind 3.19
# does not know pidfd_open and warns; the library then works without pidfds.)
test-valgrind: build $(BUILD)/example $(BUILD)/error_paths-plain
	$(VALGRIND) ./$(BUILD)/example
	d=$$(mktemp -d) && $(VALGRIND) ./$(BUILD)/error_paths-plain $$d/root; rc=$$?; rm -rf $$d; exit $$rc

# The Python binding: the ctypes declarations against the header need no root;
# the rest mounts.
test-python: test-python-ffi test-python-root

test-python-ffi: build
	python3 -m pytest -q bindings/python/tests/test_ffi.py

test-python-root: build
	python3 -m pytest -q bindings/python/tests --ignore=bindings/python/tests/test_ffi.py

# The Go binding (static link against target/release), containerd's snapshotter
# suite three times, the differ and the daemon; with cgocheck and a small GOGC
# so pointer and finalizer mistakes surface. go vet needs no root.
test-go: go-vet test-go-root

go-vet:
	cd bindings/go && go vet ./...
	cd examples/go && go vet ./...
	cd tests/e2e/fakeproxy && go vet ./...

test-go-root: build
	cd bindings/go && GODEBUG=cgocheck=1 GOGC=1 ../../scripts/go-with-lib test -count=1 ./...
	cd examples/go && GODEBUG=cgocheck=1 GOGC=1 ../../scripts/go-with-lib test -count=1 ./...

# The C, Python and Go examples with no mkfs.erofs on PATH: the default path
# needs no erofs-utils at run time.
test-no-erofs-utils: build $(BUILD)/example
	tests/no-erofs-utils.sh

# A real containerd 2.4.2 (built once with go install) and runc: an image
# imported onto this project's gRPC daemon, with containerd's walking differ
# and with the daemon's own EROFS differ, containers run, everything removed.
test-e2e: build
	tests/e2e/ci.sh

# The fuzz targets (fuzz/), each for a bounded time from the committed seeds,
# on a fresh corpus: the layer path (tar reader, OCI checks, canonical writer)
# and every JSON input. A crash fails the run and leaves its input in
# fuzz/artifacts/.
FUZZ_SECONDS ?= 60
# The integrity tests (tests/vm_guest.rs) in a VM whose kernel has fs-verity
# and dm-verity (this machine's has neither): tests/vm/run.sh.
test-vm:
	tests/vm/run.sh

# Apply, commit and cold reads with fs-verity and dm-verity against neither,
# in the VM (ratios: it is emulated).
bench-integrity: deps
	tests/vm/run.sh --bench

test-fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The container-launch benchmark (a table in bench/README.md; not part of test).
bench-launch: deps build
	bench/launch.sh

# The writer benchmark (a table in bench/README.md; not part of test): the
# built-in EROFS writer against mkfs.erofs and the floors (cat, gunzip +
# SHA-256), on the launch benchmark's layers and a synthetic 200,000-entry
# layer. Needs the image bench-launch builds and caches.
bench-writer: deps build
	bench/writer.sh

# Benchmarks (tables, not tests): the Rust operations, and the Go binding side
# by side with containerd's EROFS and overlayfs snapshotters (the scale
# benchmark, 7 minutes or more, has its own target).
bench: deps build
	$(CARGO) bench --locked --bench ops
	cd bindings/go && ../../scripts/go-with-lib test -run '^$$' -bench . -skip '^BenchmarkScale$$' -benchtime 1x -timeout 30m .

# The scale benchmark (a table in bench/README.md; not part of test): the Go
# binding against containerd's EROFS snapshotter holding 1,000, 10,000 and
# 100,000 snapshots (BENCH_SCALE_SIZES=1000,10000 for others), each in a
# process of its own: walks, stats, prepare/remove, RSS per snapshot.
bench-scale: deps build
	cd bindings/go && ../../scripts/go-with-lib test -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -timeout 60m .
