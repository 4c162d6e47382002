# Thin wrapper around CMake. `make demo` and `make test` install what is missing (as root),
# build and run (`make demo`: the gameloop, edited and rebuilt while it runs, ending by
# itself; `make demo-basics`: the reload behaviours one by one); `make bench` prints the
# benchmark figures; `make fuzz SECONDS=n` fuzzes the ELF check for n seconds (60 by
# default), then the control socket's request parser for CTL_SECONDS (20), in a clang build
# of its own (tests/fuzz/README.md).
BUILD ?= build
FUZZ_BUILD ?= build-fuzz
SECONDS ?= 60
CTL_SECONDS ?= 20
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build test demo demo-basics bench fuzz clean

all: build

deps:
	@bash .ci/deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	$(BUILD)/examples/gameloop/gameloop $(ARGS)

demo-basics: build
	$(BUILD)/examples/demo

bench: build
	bash bench/run $(BUILD)

# libFuzzer comes with clang; its runtime is in libclang-rt-14-dev on Debian 12.
fuzz:
	@HOTMOD_DEPS_EXTRA="clang libclang-rt-14-dev" bash .ci/deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DHOTMOD_FUZZ=ON -DHOTMOD_WERROR=ON -DHOTMOD_BUILD_EXAMPLES=OFF -DHOTMOD_BUILD_BENCH=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_elf fuzz_ctl
	bash tests/fuzz/run $(FUZZ_BUILD) $(SECONDS)
	bash tests/fuzz/run $(FUZZ_BUILD) $(CTL_SECONDS) fuzz_ctl

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD)
