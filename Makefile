# Thin wrapper around meson/ninja.  ./configure first.
BUILD ?= build

all:
	ninja -C $(BUILD)

check: all
	scripts/run-tests.sh $(BUILD)

demo: all
	scripts/demo.sh $(BUILD)

bench: all
	bench/run.sh $(BUILD)

clean:
	ninja -C $(BUILD) clean

.PHONY: all check demo bench clean
