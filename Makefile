# gr-scos developer entry points. Every target bootstraps the checkout when needed.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
READY   := $(VENV)/.bootstrapped
SCOS_HOME ?= $(CURDIR)/var

.PHONY: run test lint format bench install-service clean

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

# As root: the scos user, the systemd units and /etc/gr-scos/gr-scos.conf.
# DESTDIR=DIR installs the files under DIR instead (no user, no systemctl).
install-service: $(READY)
	bash deploy/install-service.sh

clean:
	rm -rf $(VENV) build var .pytest_cache
