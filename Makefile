# Thin wrapper: the build is Meson + Ninja. `make run` and `make test` are the two entry points.
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all build run test test-quick bench clean bootstrap fuzz

all: build

bootstrap:
	@scripts/bootstrap.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: bootstrap $(BUILD)/build.ninja
	ninja -C $(BUILD)

# The main job: the artifact tool-chain demo, then otterd in the foreground (Ctrl-C stops it).
run: build
	@scripts/run.sh $(BUILD)

# Every test, twice: a normal -Werror build and an ASan+UBSan build. Ends with "N passed, N failed".
test: bootstrap
	@scripts/test.sh

# Only the normal build (faster, for development).
test-quick: bootstrap
	@OTTER_TEST_BUILDS=normal scripts/test.sh

bench: build
	bench/pack.sh $(BUILD)

# libFuzzer harnesses, with the whole library instrumented, under ASan+UBSan (clang).
fuzz: bootstrap
	test -f build-fuzz/build.ninja || CC=clang meson setup build-fuzz -Dfuzz=true \
		-Db_sanitize=address,undefined -Db_lundef=false
	ninja -C build-fuzz

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
