# vfiolab: `make demo` and `make test` set up everything they need on a fresh Debian 12 machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export VFIOLAB_CACHE ?= $(HOME)/.cache/vfiolab

.PHONY: demo test bench apt rigs lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $@

apt:
	@bash rig/apt-deps.sh

# Real-peer rigs, cached under $(VFIOLAB_CACHE) and rebuilt only when missing.
rigs: apt $(STAMP)
	@for r in rig/build-*.sh; do [ -e "$$r" ] || continue; bash "$$r" || exit 1; done

demo: apt $(STAMP)
	$(VENV)/bin/vfiolab demo

# Every test, real peers included.  The random differential run against Linux gets a fresh seed each time
# (printed; `vfiolab diff --random 1 --seed S --index K --length L` replays one sequence).
test: rigs kernel-rig
	VFIOLAB_DIFF_SEED=$${VFIOLAB_DIFF_SEED:-$$(date +%s)} $(PY) -m pytest -n 2 --dist loadfile -q tests

# Linux 7.2 with IOMMUFD_TEST (its own iommufd selftests, docs/kernel-rig.md) and a Debian guest root with
# python3 for the differential runner (docs/oracle.md): 10-20 minutes cold, instant when cached.
.PHONY: kernel-rig kernel-test oracle
kernel-rig: apt $(STAMP)
	@bash rig/kernel/build.sh
	@bash rig/kernel-rootfs.sh > /dev/null

kernel-test: kernel-rig
	$(PY) -m pytest -q tests/interop/kernel

# A longer differential run than the one in `make test`: ORACLE_N sequences of ORACLE_LEN calls.
ORACLE_N    ?= 1000
ORACLE_LEN  ?= 40
ORACLE_SEED ?= $(shell date +%s)
oracle: kernel-rig
	$(VENV)/bin/vfiolab diff --corpus --random $(ORACLE_N) --seed $(ORACLE_SEED) --length $(ORACLE_LEN)

bench: $(STAMP)
	@mkdir -p bench/out
	@for b in bench/bench_*.py; do [ -e "$$b" ] || continue; $(PY) "$$b" || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) bench/out .pytest_cache
