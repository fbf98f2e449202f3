#!/usr/bin/env bash
# The README's main job as a script: install langgraft into .venv (once) and run `langgraft demo`
# on the real sample data in ../shared/data. The report lands in out/langgraft-demo/report/.
#   bash scripts/quickstart.sh            # the full demo
#   bash scripts/quickstart.sh --quick    # the CI-sized one
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/langgraft ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet -e .
fi
exec .venv/bin/langgraft demo --assets "${LANGGRAFT_DATA:-../shared/data}" "$@"
