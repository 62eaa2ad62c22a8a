# The two set-up commands are `make run` and `make test`; CI runs `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := dataset-fashion-mnist prometheus
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
PROMETHEUS := /usr/bin/promtool
# Checkov, the Kubernetes policy check of deploy/kuberay (tests/unit/deploy/test_policy.py),
# in a venv of its own: its pinned dependencies would fight the project's
POLICY_VENV := .venv-policy
CHECKOV := $(POLICY_VENV)/bin/checkov
CHECKOV_VERSION := 3.3.30

.PHONY: install system-deps run compress test test-unit cluster-test fuzz lint bench soak clean

install: system-deps $(STAMP)

# Debian's Fashion-MNIST for the embedded default, and Prometheus (with promtool) for the
# metrics tests; skipped where apt is absent (those tests then skip, saying why).
system-deps:
	@if { [ ! -f $(FASHION_MNIST) ] || [ ! -x $(PROMETHEUS) ]; } && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

$(CHECKOV):
	@test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'

# build (or load from the cache) and measure the variants, then serve on 127.0.0.1:8000
run: install
	$(BIN)/tiergate serve

# only build and print the menu
compress: install
	$(BIN)/tiergate compress

test: install $(CHECKOV)
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

# the two-node Ray cluster test alone (make test runs it too): a head and a worker raylet started
# with ray start on this machine, the worker killed under load and replaced; -s prints its figures
cluster-test: install
	$(BIN)/python -m pytest -q -s -m cluster tests/integration/test_cluster.py

# fuzz a live gateway on Ray Serve with fresh random examples (make test runs the same tests once,
# derandomized): schemathesis checks every answer against the OpenAPI schema, the hypothesis
# strategies send hostile tensors, field edge values, v2 framing and images; each fuzz test runs
# for FUZZ_SECONDS (the schemathesis one shares it among the operations)
FUZZ_SECONDS ?= 60
fuzz: install
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m pytest -q tests/integration/test_fuzz.py

# style, formatting, and the architecture's import contracts (pyproject.toml [tool.importlinter])
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# figures for BENCHMARKS.md (minutes; outside the test run): the variant menu (cold + warm
# compress), gateway overhead against a bare uvicorn+ORT server (wrk, 127.0.0.1), SLO
# attainment under open-loop overload, start-up time and memory, serving while compressing
# from an empty cache
bench: install
	@command -v wrk >/dev/null || $(SUDO) apt-get install -y -qq wrk
	$(BIN)/python -m tests.benchmarks.bench_menu --keep benchmarks
	$(BIN)/tiergate compress >/dev/null
	$(BIN)/python -m tests.benchmarks.bench_gateway
	$(BIN)/python -m tests.benchmarks.bench_overload --plot benchmarks/overload.png
	$(BIN)/python -m tests.benchmarks.bench_startup
	$(BIN)/python -m tests.benchmarks.bench_coldstart --runs 2 --compare .tiergate-cache/fashion-resnet18/manifest.json
	$(BIN)/python -m tests.benchmarks.sim_autoscale --plot benchmarks/sim_autoscale.png

# the long reliability runs (minutes): 5x the gateway's capacity for 60 s, then a variant
# replica killed under load in the per_variant topology
soak: install
	@command -v wrk >/dev/null || $(SUDO) apt-get install -y -qq wrk
	$(BIN)/tiergate compress >/dev/null
	$(BIN)/python -m tests.benchmarks.bench_soak --runs soak kill

clean:
	rm -rf .tiergate-cache .pytest_cache
