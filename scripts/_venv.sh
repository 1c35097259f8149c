# Sourced by the other scripts: make .venv with the package, its dev extras and
# the example plugins. Re-installs only when a pyproject.toml changed since.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DURABLE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.celery-durable-installed"
stale=""
[ -f "$stamp" ] || stale=1
for project in "$ROOT/pyproject.toml" "$ROOT"/plugins/*/pyproject.toml; do
  if [ "$project" -nt "$stamp" ]; then stale=1; fi
done
if [ -n "$stale" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # The package with its dev extras, and the example plugins (their tests
  # run with the suite, and they show entry-point loading for real).
  plugin_args=()
  for plugin in "$ROOT"/plugins/*/; do plugin_args+=(-e "$plugin"); done
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" "${plugin_args[@]}"
  touch "$stamp"
fi
if ! command -v redis-server >/dev/null 2>&1 && [ -z "${DURABLE_REDIS_SERVER:-}" ]; then
  echo "redis-server is not on PATH: install it (apt-get install redis-server," \
       "brew install redis) or set DURABLE_REDIS_SERVER to its path" >&2
  exit 1
fi
cd "$ROOT"
