#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests against a real PostgreSQL (DATABASE_URL, or a
# throwaway cluster from the local PostgreSQL binaries) and a real headless Chromium, then the
# end-to-end suite in which the official MCP SDKs (Python and TypeScript) talk to Tessera, then the
# scale-out harness (three instances behind HAProxy, faults injected; e2e/cluster/run installs
# Debian's haproxy and faketime itself when they are missing and we are root).
# Installs Debian's chromium and chromium-driver first when they are missing and we are root;
# e2e/run installs its own Python (e2e/.venv) and npm (e2e/node_modules) packages, deploy/check
# its own (deploy/.venv).
set -euo pipefail
cd "$(dirname "$0")"

if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing chromium and chromium-driver for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  else
    echo "test.sh: the browser tests need Debian's chromium and chromium-driver:" >&2
    echo "  sudo apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi

cargo test --locked "$@"

echo "test.sh: the Kubernetes manifests against the API schemas (deploy/check)"
deploy/check

echo "test.sh: end-to-end journeys with the MCP SDKs (e2e/run)"
e2e/run

echo "test.sh: three instances behind HAProxy under injected faults (e2e/cluster/run)"
e2e/cluster/run
