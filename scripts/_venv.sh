# Sourced by the other scripts: make .venv with the package and its dev extras.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DURABLE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.celery-durable-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
  touch "$stamp"
fi
if ! command -v redis-server >/dev/null 2>&1 && [ -z "${DURABLE_REDIS_SERVER:-}" ]; then
  echo "redis-server is not on PATH: install it (apt-get install redis-server," \
       "brew install redis) or set DURABLE_REDIS_SERVER to its path" >&2
  exit 1
fi
cd "$ROOT"
