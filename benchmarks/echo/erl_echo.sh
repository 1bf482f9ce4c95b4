#!/bin/sh
# Run echo.erl (the gen_tcp line echo server) with the echo benchmark protocol:
#   erl_echo.sh [--port P] [--poison LINE] [--schedulers N] [extra erl flags...]
# Prints "READY <port>" on stdout when listening; SIGTERM stops it.
# Compiles echo.erl with erlc into a per-user cache directory (again whenever
# the source is newer), raises the open-files limit soft to hard, then execs
# erl, so the PID the caller holds is the BEAM itself (for RSS measurements).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
port=0
poison=
sched=
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --poison) poison=$2; shift 2 ;;
        --schedulers) sched=$2; shift 2 ;;
        *) break ;;
    esac
done
ulimit -n "$(ulimit -Hn)"
out="${TMPDIR:-/tmp}/otpvm-echo-erl-$(id -u)"
mkdir -p "$out"
if [ ! -f "$out/echo.beam" ] || [ "$here/echo.erl" -nt "$out/echo.beam" ]; then
    erlc -o "$out" "$here/echo.erl"
fi
# +Q: room for far more ports (sockets) than 10k connections need (the default,
# 65536, is already enough; the open-files limit is the real bound).
# -noinput: no shell and no reading of stdin.  +K is a no-op since OTP 21
# (kernel poll is always on), so it is not passed.
set -- +Q 65536 ${sched:+"+S" "$sched:$sched"} -noinput -pa "$out" "$@" -s echo main "$port" ${poison:+"$poison"}
exec erl "$@"
