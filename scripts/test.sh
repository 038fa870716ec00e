#!/usr/bin/env bash
# The project's test command (README; CI runs it through .ci/run):
# install what is missing, build, run the unit tests, then the integration tests.
#   scripts/test.sh                   everything
#   scripts/test.sh -k auth -x        extra arguments go to pytest
#   POOLER=pgbouncer scripts/test.sh  the integration tests against PgBouncer instead
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

START=$SECONDS
ensure_packages "${REQUIRED_PACKAGES[@]}"
ensure_optional_package python3-pytest-timeout

build_pgrouter

log "unit tests (ctest)"
ctest --test-dir build --output-on-failure --timeout 300

log "integration tests (pytest, pooler: ${POOLER:-pgrouter})"
pytest_args=(-q -p no:cacheprovider tests/integration)
if /usr/bin/python3 -c 'import pytest_timeout' 2>/dev/null; then
  pytest_args+=(--timeout=120)
else
  warn "pytest-timeout missing: tests/integration/conftest.py applies its own 120 s per-test limit"
fi
rc=0
# The whole integration run is bounded too; SIGTERM lets pytest stop its servers.
timeout -k 30 "${PGROUTER_IT_TOTAL_TIMEOUT:-1500}" \
  /usr/bin/python3 -m pytest "${pytest_args[@]}" "$@" || rc=$?
if [ "$rc" -eq 124 ]; then
  echo "ERROR: integration tests exceeded ${PGROUTER_IT_TOTAL_TIMEOUT:-1500} s" >&2
fi
log "done in $((SECONDS - START)) s (exit $rc)"
exit "$rc"
