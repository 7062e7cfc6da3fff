# Pictor's tasks. Every recipe creates the environment it needs (uv reads pyproject.toml + uv.lock).
set shell := ["bash", "-euo", "pipefail", "-c"]

# uv must use this machine's Python, never download one.
export UV_PYTHON_DOWNLOADS := "never"

# List the recipes.
default:
    @just --list

# Create or update the virtual environment from uv.lock.
sync:
    uv sync --locked

# Start the API on http://127.0.0.1:8000 (embedded PostgreSQL, local storage, in-process worker unless configured).
# Logs are readable lines here unless PICTOR_LOG_FORMAT says otherwise (production default: json).
serve *ARGS:
    PICTOR_LOG_FORMAT="${PICTOR_LOG_FORMAT:-console}" uv run --locked pictor serve {{ARGS}}

# Run a background job worker.
worker *ARGS:
    uv run --locked pictor worker {{ARGS}}

# Apply pending database migrations.
migrate *ARGS:
    uv run --locked pictor migrate {{ARGS}}

# Print the resolved configuration (secrets masked).
check-config:
    uv run --locked pictor check-config

# Run the test suite (services: PostgreSQL and Valkey/Redis on localhost; skipped when absent unless PICTOR_REQUIRE_SERVICES=1).
test *ARGS:
    uv run --locked pytest {{ARGS}}

# ruff, mypy (strict on core and adapters) and the import-linter architecture contracts.
lint:
    uv run --locked ruff check .
    uv run --locked ruff format --check .
    uv run --locked mypy
    uv run --locked lint-imports

# Format and auto-fix.
fmt:
    uv run --locked ruff format .
    uv run --locked ruff check --fix .

# Hot-path micro-benchmarks, then the HTTP load comparison against bare Litestar.
bench *ARGS:
    uv run --locked pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,ops,rounds -p no:randomly {{ARGS}}
    uv run --locked python benchmarks/http_load.py

# Authenticated GET /v1/me (API key, warm cache) next to bare Litestar: constant and one Valkey GET.
bench-auth *ARGS:
    uv run --locked python benchmarks/auth_load.py {{ARGS}}

# Generations completed per second end to end (real PostgreSQL and Valkey; one, then two `pictor worker`).
bench-generations *ARGS:
    uv run --locked python benchmarks/generation_load.py {{ARGS}}

# Domain events published per second through the outbox (real PostgreSQL; one, then two publishers; baseline without handlers).
bench-outbox *ARGS:
    uv run --locked python benchmarks/outbox_load.py {{ARGS}}
