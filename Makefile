# Pulse: the two set-up commands are `make run` and `make test` (see README.md).
.PHONY: run test lint unit faults security deploy-check

# Pulse's ingest gate for Mosquitto (deploy/mosquitto/ingest_gate.c): the tests' brokers load it from here.
build/pulse_ingest_gate.so: deploy/mosquitto/ingest_gate.c
	@mkdir -p build
	cc -shared -fPIC -O2 -Wall -Wextra -Werror -o $@.tmp $< && mv $@.tmp $@

run:
	@scripts/bootstrap.sh
	@scripts/spa.sh
	.venv/bin/pulse dev

test:
	@scripts/bootstrap.sh test
	@scripts/spa.sh test
	@scripts/services.sh
	.venv/bin/ruff check --output-format concise pulse tests migrations bench
	.venv/bin/mypy pulse
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check --output-format concise pulse tests migrations bench
	.venv/bin/mypy pulse
	.venv/bin/lint-imports

# Fault injection (restarts PostgreSQL and brokers, kills processes): bounded, loopback only.
faults:
	@scripts/bootstrap.sh test
	@scripts/services.sh
	PULSE_FAULTS=1 .venv/bin/python -m pytest -q tests/faults

# Security suite: cross-tenant matrix, MQTT ACL matrix, JWT attacks, SSRF, fuzzing, schemathesis.
security:
	@scripts/bootstrap.sh test
	@scripts/services.sh
	.venv/bin/python -m pytest -q tests/security

# The deployment files with the real programs: caddy, pgbouncer, mosquitto, PostgreSQL (no Docker engine needed).
deploy-check:
	@scripts/bootstrap.sh test
	@scripts/services.sh
	.venv/bin/python -m pytest -q tests/deploy
