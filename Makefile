# Thin wrapper around meson/ninja.  ./configure first.
BUILD ?= build

all:
	ninja -C $(BUILD)

check: all
	scripts/run-tests.sh $(BUILD)

demo: all
	scripts/demo.sh $(BUILD)

# libvirt 9.0 migrates a ferry domain with postcopy (docs/libvirt.md);
# needs ./configure --install-deps --with-libvirt, root.
libvirt-demo: all
	python3 scripts/libvirt-demo.py $(BUILD)

bench: all
	bench/run.sh $(BUILD)

# No KVM needed: machine none, ferry against QEMU 7.2 (bench/README.md).
# BASE=dir adds a second ferry build (ferry-base); ARGS go to none.py.
bench-none: all
	python3 bench/none.py --ferry-build $(BUILD) \
	    $(if $(BASE),--ferry-baseline-build $(BASE)) $(ARGS)

# No KVM needed: postcopy recovery and preempt against QEMU 7.2.
bench-recovery: all
	python3 bench/recovery.py --build $(BUILD) $(ARGS)

# No KVM needed: x-auto-postcopy against a switch after the first pass,
# with an x-dirtier writer (bench/README.md).
bench-switch: all
	python3 bench/switch.py --build $(BUILD) $(ARGS)

# libFuzzer + ASan/UBSan on every target for FUZZ_SECONDS each (clang;
# build-fuzz is configured on first use).  tests/fuzz/README.md.
FUZZ_SECONDS ?= 60
fuzz:
	scripts/fuzz.sh -t $(FUZZ_SECONDS) -b build-fuzz

clean:
	ninja -C $(BUILD) clean

.PHONY: all check demo libvirt-demo bench bench-none bench-recovery bench-switch fuzz clean
