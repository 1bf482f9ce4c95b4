#!/usr/bin/env bash
# Build a free-threaded (PEP 703, --disable-gil) CPython from Debian's own source package on bookworm.
# (A copy of the team's shared tool, kept here so that .ci/run can build the
# interpreter on a fresh machine.)
# Usage: build-ft-python.sh PREFIX            (as root; installs PREFIX/bin/python3.13t)
# Env:   PY_SERIES=3.13 (which pythonX.Y source package), PY_VERSION=3.13.15-1 (pin one Debian version),
#        WORK=dir (scratch; default a fresh mktemp -d), JOBS=n (default nproc), STOP_AFTER=configure (dry run).
# How: a private apt setup (own sources list, lists and cache under WORK; the system's /etc/apt is only read)
# with deb-src lines for trixie, forky and sid; `apt-get source --download-only` fetches the source package,
# whose hashes apt checks against the signed Sources index; the upstream tarball (the .orig.tar.xz) is then
# built plainly: no Debian patches, no PGO/LTO. Some listed versions answer 404 from the pool (here: 3.13.18-1
# in sid, and every python3.14 version), so each listed version is tried, newest first, until one downloads.
set -euo pipefail
prefix=${1:?usage: $0 PREFIX}
case $prefix in /*) ;; *) prefix=$PWD/$prefix ;; esac
series=${PY_SERIES:-3.13}
pkg=python$series
work=${WORK:-$(mktemp -d)}
jobs=${JOBS:-$(nproc)}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$work"/apt/lists/partial "$work"/apt/cache/archives/partial "$work"/src "$work"/build
log() { echo "[build-ft-python $(date +%T)] $*" >&2; }

# The system's Debian mirror (deb822 or one-line format), not the security one.
mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
  /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 || true)
fi
[ -n "$mirror" ] || { log "no Debian mirror found in /etc/apt"; exit 1; }
for suite in trixie forky sid; do
  echo "deb-src [signed-by=$keyring] $mirror $suite main"
done > "$work/apt/sources.list"
apt_opts=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache" -o APT::Sandbox::User=root)

log "private apt update ($mirror: trixie forky sid, deb-src only)"
apt-get "${apt_opts[@]}" -q update >"$work/apt-update.log" 2>&1 || { cat "$work/apt-update.log" >&2; exit 1; }

if [ -n "${PY_VERSION:-}" ]; then
  versions=$PY_VERSION
else
  versions=$(apt-cache "${apt_opts[@]}" showsrc "$pkg" 2>/dev/null | awk '/^Version:/ { print $2 }' \
    | sort -u | sort -r -V)
fi
[ -n "$versions" ] || { log "no source package $pkg in trixie/forky/sid"; exit 1; }
got=
for v in $versions; do
  log "apt-get source --download-only $pkg=$v"
  if (cd "$work/src" && apt-get "${apt_opts[@]}" -q source --download-only "$pkg=$v" >"$work/src/get-$v.log" 2>&1); then
    got=$v; break
  fi
  log "  not fetchable: $(grep -m1 -E '^E:' "$work/src/get-$v.log" || echo '?')"
  rm -f "$work/src/${pkg}_"*
done
[ -n "$got" ] || { log "no version of $pkg could be downloaded"; exit 1; }
upstream=${got#*:}; upstream=${upstream%-*}
orig=$(ls "$work/src/${pkg}_${upstream}".orig.tar.* | grep -v '\.asc$' | head -n1)
log "source: $orig"

# Build dependencies from the system's own suite (bookworm); apt-get update only if one is missing.
deps=(build-essential pkg-config xz-utils libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev
  libsqlite3-dev libreadline-dev libncurses-dev uuid-dev libgdbm-dev libgdbm-compat-dev tk-dev)
missing=()
for d in "${deps[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get -q update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends "${missing[@]}" >/dev/null
fi

rm -rf "$work/build/Python-$upstream"
tar -C "$work/build" -xf "$orig"
cd "$work/build/Python-$upstream"
t0=$(date +%s)
log "configure --disable-gil --prefix=$prefix --with-ensurepip=install (log: $PWD/configure.log)"
./configure --disable-gil --prefix="$prefix" --with-ensurepip=install >configure.log 2>&1 \
  || { tail -n 30 configure.log >&2; exit 1; }
t1=$(date +%s); log "configure took $((t1 - t0)) s"
grep -q '^#define Py_GIL_DISABLED 1' pyconfig.h || { log "pyconfig.h lacks Py_GIL_DISABLED"; exit 1; }
if [ "${STOP_AFTER:-}" = configure ]; then log "STOP_AFTER=configure: stopping here"; exit 0; fi
log "make -j$jobs (log: $PWD/make.log)"
make -j"$jobs" >make.log 2>&1 || { tail -n 40 make.log >&2; exit 1; }
t2=$(date +%s); log "make took $((t2 - t1)) s"
make install >install.log 2>&1 || { tail -n 40 install.log >&2; exit 1; }
t3=$(date +%s); log "make install took $((t3 - t2)) s"

py=$prefix/bin/python${series}t
"$py" -c "import sys, sysconfig; assert sysconfig.get_config_var('Py_GIL_DISABLED') == 1; \
assert not sys._is_gil_enabled(); print(sys.version, 'Py_GIL_DISABLED=1 GIL enabled:', sys._is_gil_enabled())"
log "done: $py (Debian source $pkg $got, built in $((t3 - t0)) s; scratch left in $work)"
