# erofs-snapshotter: the single entry point.
#
#   make run    set up, build the library, run the C example end to end (as root)
#   make test   set up, build, and run every test (as root)
#
# Both install what is missing first (scripts/deps.sh, Debian-based machines).
# Without root, with Rust, Go and Python 3 (pytest) installed:
#
#   make build              the library (cdylib, staticlib) and the ctl tool
#   make lint               rustfmt, clippy, gofmt
#   make header             regenerate include/erofs_snapshotter.h (commit it)

CARGO   ?= cargo
CC      ?= gcc
CXX     ?= g++
BUILD   := target/c
LIBDIR  := $(CURDIR)/target/release
HEADER  := include/erofs_snapshotter.h
CSTRICT := -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude
CLINK   := -L$(LIBDIR) -lerofs_snapshotter -Wl,-rpath,$(LIBDIR)
SAN     := -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# The header generator (tools/gen-header: cbindgen as a library, pinned by its
# own Cargo.lock), built into target/ like everything else.
GEN_HEADER := $(CARGO) run --quiet --locked --manifest-path tools/gen-header/Cargo.toml \
	--target-dir $(CURDIR)/target/gen-header --

.PHONY: all deps build run test lint header header-check test-rust test-c test-python test-go test-e2e test-fuzz bench bench-launch

all: build

deps:
	./scripts/deps.sh

# The library (cdylib, staticlib) and the ctl tool. Writes only under target/.
build:
	$(CARGO) build --release --locked

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/example: examples/c/example.c $(HEADER) | $(BUILD)
	$(CC) $(CSTRICT) $< $(CLINK) -o $@

$(BUILD)/error_paths: tests/c/error_paths.c $(HEADER) | $(BUILD)
	$(CC) $(CSTRICT) $(SAN) $< $(CLINK) -o $@

$(BUILD)/example-asan: examples/c/example.c $(HEADER) | $(BUILD)
	$(CC) $(CSTRICT) $(SAN) $< $(CLINK) -o $@

# The main job: the C example on a fresh temporary root.
run: deps
	$(MAKE) --no-print-directory build $(BUILD)/example
	./$(BUILD)/example

test: deps lint build header-check test-rust test-c test-python test-go test-e2e test-fuzz

lint:
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt --all -- --check
	cd tools/gen-header && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --manifest-path tools/gen-header/Cargo.toml \
		--target-dir $(CURDIR)/target/gen-header -- -D warnings
	@bad=$$(gofmt -l bindings/go examples/go tests/e2e/fakeproxy); [ -z "$$bad" ] || { echo "gofmt would change: $$bad" >&2; exit 1; }

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

test-rust: build
	$(CARGO) test --locked

# The C example and the C error-path test, both under ASan/UBSan with leak checks.
test-c: build $(BUILD)/example $(BUILD)/error_paths $(BUILD)/example-asan
	ASAN_OPTIONS=detect_leaks=1 ./$(BUILD)/example-asan
	d=$$(mktemp -d) && ASAN_OPTIONS=detect_leaks=1 ./$(BUILD)/error_paths $$d/root; rc=$$?; rm -rf $$d; exit $$rc

test-python: build
	python3 -m pytest -q bindings/python/tests

# The Go binding (static link against target/release), containerd's snapshotter
# suite three times, the differ and the daemon; with cgocheck and a small GOGC
# so pointer and finalizer mistakes surface.
test-go: build
	cd bindings/go && go vet ./... && GODEBUG=cgocheck=1 GOGC=1 go test -count=1 ./...
	cd examples/go && go vet ./... && GODEBUG=cgocheck=1 GOGC=1 go test -count=1 ./...
	cd tests/e2e/fakeproxy && go vet ./...

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
test-fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The container-launch benchmark (a table in bench/README.md; not part of test).
bench-launch: deps build
	bench/launch.sh

# Benchmarks (tables, not tests): the Rust operations, and the Go binding side
# by side with containerd's EROFS and overlayfs snapshotters.
bench: deps build
	$(CARGO) bench --locked --bench ops
	cd bindings/go && go test -run '^$$' -bench . -benchtime 1x -timeout 30m .
