#!/usr/bin/env bash
# Points every citation of the specification documents at their pages inside the
# repository: ALGORITHMS.md → docs/algorithms.md, DATASETS.md → docs/datasets.md,
# BENCHMARKS.md → docs/benchmarks.md, with the section numbers unchanged
# ("ALGORITHMS.md B.2" → "docs/algorithms.md §B.2", "ALGORITHMS.md Z #4" →
# "docs/algorithms.md Appendix Z #4").
#
# Mechanical and idempotent: run it again after merging branches that add citations
# (a second run changes nothing). Touches tracked *.rs, *.md, *.toml, *.sh, *.py files.
# `--check` only lists the files that still cite the old names (exit 1 if any).
set -euo pipefail
cd "$(dirname "$0")/.."
# This script and the test that checks the result name the old files on purpose.
mapfile -t files < <(git ls-files '*.rs' '*.md' '*.toml' '*.sh' '*.py' |
  grep -vxF -e scripts/fix-spec-citations.sh -e crates/cli/tests/docs.rs |
  xargs -r grep -lE '(ALGORITHMS|DATASETS|BENCHMARKS)\.md' || true)
if [[ "${1:-}" == --check ]]; then
  ((${#files[@]} == 0)) && exit 0
  printf '%s\n' "${files[@]}"
  exit 1
fi
((${#files[@]} == 0)) && { echo "no citation to rewrite"; exit 0; }
sed -i -E \
  -e "s/the project's (ALGORITHMS|DATASETS|BENCHMARKS)\.md/\1.md/g" \
  -e 's/ALGORITHMS\.md:? (Z #)/docs\/algorithms.md Appendix \1/g' \
  -e 's/ALGORITHMS\.md:? ([A-Z0-9]\.[0-9])/docs\/algorithms.md §\1/g' \
  -e 's/DATASETS\.md:? ([0-9](\.[0-9])?)/docs\/datasets.md §\1/g' \
  -e 's/ALGORITHMS\.md/docs\/algorithms.md/g' \
  -e 's/DATASETS\.md/docs\/datasets.md/g' \
  -e 's/BENCHMARKS\.md/docs\/benchmarks.md/g' \
  -e 's/docs\/docs\//docs\//g' \
  "${files[@]}"
echo "rewrote citations in ${#files[@]} files"
