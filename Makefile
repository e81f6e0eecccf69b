# The two set-up commands of README.md: `make demo` and `make test`. Both install everything first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean
install: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-system.sh package-lock.json
	bash scripts/setup-system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/keyscribe demo

test: install
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info

# Peer benchmark (benchmarks/README.md): keyscribe, transkun and Basic Pitch on ENSTDkAm + a synthetic slice.
# Sets up the peers' environments in benchmarks/envs/ on first use. `make peers PEERS_ARGS="--subset 2"`.
PEERS_ARGS ?=
.PHONY: peers
peers: install
	$(PY) benchmarks/peers.py $(PEERS_ARGS)
