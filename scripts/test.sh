#!/usr/bin/env bash
# The test command: set up .venv, then lint (ruff), type-check (mypy) and run the tests.
# The tests start a real single-node Kafka broker (fetched from Maven Central on first use
# and cached in ~/.cache/streamsync) unless KAFKA_BOOTSTRAP_SERVERS names a cluster, and
# the schema-registry tests an Apicurio Registry fetched and cached the same way unless
# STREAMSYNC_SCHEMA_REGISTRY_URL names a running Confluent-compatible registry.
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
echo "== ruff" >&2
.venv/bin/ruff check streamsync tests bench
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "streamsync: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$rc"
