#!/usr/bin/env bash
# The demo command: set up .venv, then run streamsync end to end on the local default
# (a Kafka broker fetched from Maven Central and started on loopback, synthetic
# Customer.io traffic, the example audiences). Stops by itself. Extra arguments go to
# `streamsync demo` (see `--help`); KAFKA_BOOTSTRAP_SERVERS selects your own cluster.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
exec .venv/bin/streamsync demo "$@"
