# Developer and CI commands. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
# The core embeds pdk-api.json at build time (src/pdk_table.rs): a change to it needs a rebuild.
RUST_SRC := $(shell find src -name '*.rs') Cargo.toml Cargo.lock python/kong_pdk/pdk/pdk-api.json

.DEFAULT_GOAL := help

.PHONY: help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(VENV)/.deps: pyproject.toml requirements-docs.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'maturin>=1.9.4,<2' msgpack pytest pytest-timeout mypy basedpyright ruff gevent 'watchfiles>=0.21' protobuf grpcio-tools
	$(PY) -m pip install -q -r requirements-docs.txt
	touch $@

# The distribution is kong-pdk-native; "kong_pdk" (our old name, or the official
# package) would mix its files with ours, so it goes first.
$(VENV)/.built: $(VENV)/.deps $(RUST_SRC) pyproject.toml
	$(PY) -m pip uninstall -q -y kong_pdk 2>/dev/null || true
	$(VENV)/bin/maturin develop -q --extras testing
	touch $@

.PHONY: dev
dev: $(VENV)/.built  ## build the extension (debug) into .venv

.PHONY: release
release: $(VENV)/.deps  ## build the extension (release, LTO) into .venv
	$(VENV)/bin/maturin develop -q --release --extras testing
	rm -f $(VENV)/.built

.PHONY: fmt
fmt:  ## format Rust
	cargo fmt --all

.PHONY: lint
lint: dev gen-check  ## cargo fmt --check, clippy, ruff, mypy --strict on the package and examples, stubtest of the core's stubs against the built core
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python examples scripts benches tests
	$(PY) -m mypy --strict python/kong_pdk examples
	$(PY) -m mypy.stubtest kong_pdk._core

.PHONY: gen-check
gen-check: $(VENV)/.deps  ## the generated PDK modules and docs/pdk/ match pdk-api.json (scripts/gen_pdk.py --check)
	$(PY) scripts/gen_pdk.py --check

.PHONY: test-rust
test-rust:  ## Rust unit tests
	cargo test -q

# The official kong-pdk in a venv of its own, for the side-by-side emulator
# tests (tests/emulator/test_against_official.py): our emulator must drive the
# reference server exactly as it drives ours.
OFFICIAL_VENV := .venv-official
$(OFFICIAL_VENV)/.deps:
	python3 -m venv $(OFFICIAL_VENV)
	$(OFFICIAL_VENV)/bin/python -m pip install -q 'kong-pdk==0.36.*' gevent msgpack
	touch $@

.PHONY: test-py
test-py: dev $(OFFICIAL_VENV)/.deps  ## pytest over the real socket (with the official kong-pdk beside ours)
	KONG_PDK_OFFICIAL_PYTHON=$(CURDIR)/$(OFFICIAL_VENV)/bin/python $(PY) -m pytest -q

.PHONY: test
test: dev lint test-rust test-py  ## the whole test suite: lints, Rust tests, pytest incl. the strict docs build (sets up .venv on a fresh machine)

.PHONY: demo
demo: dev  ## serve examples/py-hello.py on a real socket and drive one request through it, printed like curl -i
	$(VENV)/bin/kong-pdk run -v examples/py-hello.py --config '{"message": "hello"}' -H 'host: example.com' http://example.com/

# Wheels for PyPI. A plain `maturin build --release` links against this machine's
# glibc (manylinux_2_34: Debian 11, Ubuntu 20.04 and RHEL 8 cannot install it);
# zig links against glibc 2.17 instead, whatever the build machine has.
$(VENV)/.wheel-deps: $(VENV)/.deps
	$(PY) -m pip install -q 'ziglang>=0.13,<0.18'
	touch $@

.PHONY: wheels
wheels: $(VENV)/.wheel-deps  ## build dist/: a manylinux2014 (glibc 2.17) x86_64 wheel (release, LTO) and the sdist
	rm -rf dist
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --release --zig --compatibility manylinux2014 -i $(PY) --out dist
	$(VENV)/bin/maturin sdist --out dist
	@ls -l dist

.PHONY: test-wheels
test-wheels: wheels  ## install the wheel into a fresh venv of every Python >= 3.10 here (no cargo on PATH) and serve a plugin in each
	$(PY) scripts/test_wheels.py dist --min-pythons $(MIN_PYTHONS)

MIN_PYTHONS ?= 1

.PHONY: docs
docs: $(VENV)/.deps  ## build the documentation site into site/ (mkdocs --strict; `make test` checks it too)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

.PHONY: docs-serve
docs-serve: $(VENV)/.deps  ## serve the documentation site on http://127.0.0.1:8000 with live reload
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

.PHONY: bench
bench: release  ## benchmark table against the official kong-pdk (see benches/)
	$(PY) benches/run.py

.PHONY: bench-nginx
bench-nginx: release  ## the same servers behind a real nginx driving them as Kong's Lua does (installs nginx, its Lua module and wrk with apt-get)
	$(PY) benches/nginx_bench.py
