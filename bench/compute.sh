#!/bin/bash
# PeerDrive compute benchmark (issue 6): units per second through the scheduler with 1 and 3
# suppliers (`peerdrive serve --compute-slots 1`) and a storage-only consumer, all on this
# machine. Each unit does almost no work (one SHA-256), so the figure is the cost of the
# scheduler, the protocol and a worker process per unit. See docs/compute.md.
# Run from anywhere as root: bench/compute.sh [UNITS] (default 40 units per measurement).
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$ROOT"
go test -count=1 -run '^$' -bench BenchmarkComputeScheduler -benchtime "${1:-40}x" ./integration/ |
  grep -E 'Benchmark|units/s|ok|FAIL'
