#!/usr/bin/env bash
# Checks the project's own C++ files (not build/, not node_modules/, not generated code):
#   scripts/lint.sh          clang-format --dry-run -Werror (.clang-format: Google, 100 columns)
#   scripts/lint.sh --tidy   also clang-tidy (.clang-tidy) on the product's sources (core,
#                            producers, gateway, consumers, cli, schemas) and the tests' support
#                            library, with build/ci/compile_commands.json (another build dir:
#                            AGENTWIRE_LINT_BUILD_DIR=build/dev); the README's test command runs it
#   scripts/lint.sh --tidy-all  clang-tidy on every source, tests and benchmarks too (about
#                            20 minutes on 2 cores: gtest's headers make each test file slow)
#   scripts/lint.sh --fix    rewrite the files with clang-format instead of checking them
# Exits non-zero when a check finds something.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

tidy=0
fix=0
for arg in "$@"; do
  case "$arg" in
    --tidy) tidy=1 ;;
    --tidy-all) tidy=2 ;;
    --fix) fix=1 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "lint: unknown argument '$arg' (expected --tidy, --tidy-all or --fix)" >&2; exit 2 ;;
  esac
done

# Tracked and new (not ignored) files; .gitignore already excludes build/ and node_modules/.
files=()
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  while IFS= read -r -d '' file; do
    [[ -f "$file" ]] && files+=("$file")
  done < <(git ls-files -z --cached --others --exclude-standard -- '*.cpp' '*.hpp')
else
  while IFS= read -r -d '' file; do files+=("$file"); done < <(
    find . \( -path ./build -o -name node_modules -o -path './build-*' -o -name .git \) -prune \
      -o \( -name '*.cpp' -o -name '*.hpp' \) -type f -print0 | sort -z)
fi
if ((${#files[@]} == 0)); then
  echo "lint: no C++ files found" >&2
  exit 1
fi

jobs="$(nproc)"
status=0

if ((fix)); then
  printf '%s\0' "${files[@]}" | xargs -0 -n 25 -P "$jobs" clang-format -i
  echo "lint: clang-format rewrote ${#files[@]} files where needed"
else
  if printf '%s\0' "${files[@]}" | xargs -0 -n 25 -P "$jobs" clang-format --dry-run -Werror; then
    echo "lint: clang-format: ${#files[@]} files clean"
  else
    echo "lint: clang-format found differences (scripts/lint.sh --fix rewrites them)" >&2
    status=1
  fi
fi

if ((tidy)); then
  build_dir="${AGENTWIRE_LINT_BUILD_DIR:-build/ci}"
  database="$build_dir/compile_commands.json"
  # The database alone is not enough: sources include the generated events.pb.h.
  if [[ ! -f "$database" ]]; then
    echo "lint: $database missing: run scripts/test.sh (or cmake --preset ci and a build) first" >&2
    exit 2
  fi
  # Headers are checked through the sources that include them (.clang-tidy HeaderFilterRegex);
  # only sources that are in the compilation database can be analysed.
  sources=()
  for file in "${files[@]}"; do
    [[ "$file" == *.cpp ]] || continue
    if ((tidy == 1)) && ! [[ "$file" =~ ^(\./)?(core|producers|gateway|consumers|supervisor|cli|schemas|tests/support|tests/embedder)/ ]]; then
      continue
    fi
    grep -qF "\"$root/${file#./}\"" "$database" && sources+=("$file")
  done
  echo "lint: clang-tidy on ${#sources[@]} sources ($jobs at a time)"
  # A source whose last run was clean and whose inputs did not change is skipped (a result
  # cache keyed like ccache's; scripts/tidy_cached.py says how).
  if ! AGENTWIRE_JOBS="$jobs" /usr/bin/python3 "$root/scripts/tidy_cached.py" "$build_dir" "${sources[@]}"; then
    echo "lint: clang-tidy reported problems" >&2
    status=1
  fi
fi

exit "$status"
