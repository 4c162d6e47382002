# Thin wrapper around CMake. `make demo` and `make test` install what is missing (as root),
# build and run; `make bench` prints the benchmark figures.
BUILD ?= build
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build test demo bench clean

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
	$(BUILD)/examples/demo

bench: build
	bash bench/run $(BUILD)

clean:
	rm -rf $(BUILD)
