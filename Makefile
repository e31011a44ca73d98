# Pulse: the two set-up commands are `make run` and `make test` (see README.md).
.PHONY: run test lint unit

run:
	@scripts/bootstrap.sh
	.venv/bin/pulse dev

test:
	@scripts/bootstrap.sh test
	@scripts/services.sh
	.venv/bin/ruff check --output-format concise pulse tests migrations bench
	.venv/bin/mypy pulse
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check --output-format concise pulse tests migrations bench
	.venv/bin/mypy pulse
	.venv/bin/lint-imports
