#!/usr/bin/env bash
# Reproducibility benchmark of the example images: each image of policies/ (or those named on
# the command line) is built twice by `rebake build IMAGE --no-push --force --no-cache`, each
# time in a fresh copy of the repository with its own state directory (so the base is built
# again by mmdebstrap and no layer is reused), and the two image ids are compared. Prints one
# line per image (both ids, both times) and exits 1 when any image differs or fails. An image
# with `from:` is built together with its ancestors (nginx and postgres with debian), which the
# time then includes.
#
# Needs what `rebake build` needs (a Docker engine, mmdebstrap, the Debian mirrors of the
# host's apt sources). The binary: $REBAKE, else target/debug/rebake (built when missing).
# The archive must not change between the two builds (a new security upload changes the base).
#
#   scripts/reproducible-build.sh                # debian nginx postgres
#   scripts/reproducible-build.sh nginx
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
rebake="${REBAKE:-$target/debug/rebake}"
if [ ! -x "$rebake" ]; then cargo build --bin rebake; fi

images=("$@")
if [ "${#images[@]}" -eq 0 ]; then
  for p in policies/*.yaml; do images+=("$(basename "$p" .yaml)"); done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
# The image and the images it builds on (`from:`), parents first.
with_ancestors() {
  local img=$1 chain=() parent
  while [ -n "$img" ]; do
    chain=("$img" "${chain[@]}")
    parent=$(sed -n 's/^from:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "policies/$img.yaml")
    img=$parent
  done
  echo "${chain[@]}"
}

for img in "${images[@]}"; do
  read -r -a build <<<"$(with_ancestors "$img")"
  ids=() times=()
  for n in 1 2; do
    dir="$work/$img-$n"
    mkdir -p "$dir/repo"
    cp -r "$root/policies" "$root/templates" "$dir/repo/"
    start=$(date +%s.%N)
    if ! REBAKE_SECURITY_TRACKER=off "$rebake" build "${build[@]}" --no-push --force --no-cache \
        --repo "$dir/repo" --state-dir "$dir/state" >"$dir/out" 2>&1; then
      echo "$img: build $n failed:"; cat "$dir/out"; failed=1; continue 2
    fi
    times+=("$(echo "$(date +%s.%N) - $start" | bc)")
    ids+=("$(sed -n '/^image:/{n;s/^  id: //p}' "$dir/repo/images/$img/rebake.lock")")
  done
  if [ "${ids[0]}" = "${ids[1]}" ]; then verdict="same"; else verdict="DIFFERENT"; failed=1; fi
  printf '%s: %s image id (%s, %s); build with base from scratch: %.1fs, %.1fs\n' \
    "$img" "$verdict" "${ids[0]}" "${ids[1]}" "${times[0]}" "${times[1]}"
done
exit "$failed"
