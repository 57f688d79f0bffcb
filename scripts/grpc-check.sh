#!/usr/bin/env bash
# The gRPC chain's check (examples/grpc_chain), with the foreign client:
# Python's grpcio from PyPI, in a virtual environment under target/ (made
# once, reused). No protoc is needed: the example's services and messages
# are written by hand over tonic and prost.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/grpc-venv
if ! "$venv/bin/python" -c "import grpc" >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "grpcio==1.66.1"
fi
TASKGROUP_GRPC_PYTHON="$venv/bin/python" cargo run --quiet --example grpc_chain -- --check
