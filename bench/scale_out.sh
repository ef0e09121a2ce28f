#!/usr/bin/env bash
# Scenario 5 of issue 7: scale-out of one pool's workers (1 -> 2 -> 4) on a 3-node NATS
# cluster, with a receiver that takes 50 ms per message. Prints messages/s per step and the
# scaling efficiency rate(k) / (k x rate(1)). See docs/fault-injection.md.
#
#   bench/scale_out.sh                        # 1,000 messages per step
#   BATON_SCALE_MESSAGES=3000 bench/scale_out.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p baton
cargo test -q -p baton-system-tests --test system cluster_scale_out:: -- --ignored --nocapture 2>&1 \
  | grep -E 'worker|scale-out|rate=|test result|panicked|Error'
