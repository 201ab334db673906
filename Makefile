# gr-scos developer entry points. Every target bootstraps the checkout when needed.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
READY   := $(VENV)/.bootstrapped
SCOS_HOME ?= $(CURDIR)/var

.PHONY: run test lint format bench soak install-service clean

$(READY): deploy/bootstrap.sh pyproject.toml
	bash deploy/bootstrap.sh

run: $(READY)
	SCOS_HOME=$(SCOS_HOME) $(VENV)/bin/gr-scos run

test: $(READY)
	$(PYTHON) -m pytest

lint: $(READY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(READY)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(READY)
	$(PYTHON) tests/bench/bench_detectors.py
	$(PYTHON) tests/bench/bench_api.py
	$(PYTHON) tests/bench/bench_scheduler.py
	$(PYTHON) tests/bench/bench_handover.py
	$(PYTHON) tests/bench/bench_db_check.py

# As root (it mounts a tmpfs): a sensor at one task per second with faults injected.
# N=200 (or SOAK_TASKS) for a short run; SOAK_ARGS="--seed 7" for more options.
soak: $(READY)
	$(PYTHON) tests/bench/soak.py $(if $(N),--tasks $(N)) $(SOAK_ARGS)

# As root: the scos user, the systemd units and /etc/gr-scos/gr-scos.conf.
# DESTDIR=DIR installs the files under DIR instead (no user, no systemctl).
install-service: $(READY)
	bash deploy/install-service.sh

clean:
	rm -rf $(VENV) build var .pytest_cache
