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

test: rigs
	$(PY) -m pytest -n 2 --dist loadfile -q tests --ignore=tests/interop/kernel

# Linux 7.2 with IOMMUFD_TEST running its own iommufd selftests (docs/kernel-rig.md); 10+ min cold, so not in rigs.
.PHONY: kernel-rig kernel-test
kernel-rig: apt $(STAMP)
	@bash rig/kernel/build.sh

kernel-test: kernel-rig
	$(PY) -m pytest -q tests/interop/kernel

bench: $(STAMP)
	@mkdir -p bench/out
	@for b in bench/bench_*.py; do [ -e "$$b" ] || continue; $(PY) "$$b" || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) bench/out .pytest_cache
