#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo fuzz on nightly:
#   fuzz/run.sh [SECONDS] [TARGET...]
# With FUZZ_RUNS=N (what .ci/run does), each target instead runs N inputs from seed 1, starting
# from the committed corpus only, so the same code gives the same result on every machine; SECONDS
# then only caps the time.
# Needs `rustup toolchain install nightly` and `cargo install cargo-fuzz`. The targets' logic is
# rebake::fuzzing (src/fuzzing.rs); `cargo test --test all fuzz_corpora` replays the saved
# corpora on stable. A crash is saved under fuzz/artifacts/<target>/: copy it into
# fuzz/corpus/<target>/ as a regression, then fix the parser.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
# No sanitizer: rebake has no unsafe code and ASan would only slow the runs; debug assertions
# on, so that an integer overflow is a finding too.
flags=(--sanitizer none --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"
status=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  # A scratch copy of the committed corpus grows with what libFuzzer finds; the committed one
  # stays small (minimise with `cargo fuzz cmin` before adding to it).
  work="target/corpus-work/$t"
  limits=(-max_total_time="$seconds")
  if [ -n "${FUZZ_RUNS:-}" ]; then
    rm -rf "$work"
    limits+=(-runs="$FUZZ_RUNS" -seed=1)
  fi
  mkdir -p "$work"
  log="target/fuzz-logs/$t.log"
  mkdir -p "$(dirname "$log")"
  if cargo +nightly fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- \
      "${limits[@]}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done|stat::)' "$log" || true
  else
    grep -E 'panicked at|^(==|SUMMARY|artifact_prefix)' -A1 "$log" | head -n 20 || true
    echo "== fuzz $t: FAILED (whole log: fuzz/$log; input in fuzz/artifacts/$t/)"
    status=1
  fi
done
exit "$status"
