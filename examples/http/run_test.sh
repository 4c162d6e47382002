#!/usr/bin/env bash
# The HTTP example's test (CTest: example_http).
#
#   run_test.sh SERVER HANDLER_SO SOURCE_DIR INCLUDE_DIR CC HOTMODCTL
#
# Starts http_server on 127.0.0.1 (a port the kernel picks) with a copy of the handler, then
#  0. checks its HTTP handling: garbage, a head too large, other versions, chunked bodies,
#     a request split over several writes, pipelining, Connection: close, HTTP/1.0;
#  1. drives it with wrk for a few seconds: the baseline, nothing reloads;
#  2. drives it with wrk again while the handler is rebuilt from handler.c with CC and a new
#     HANDLER_VERSION, and renamed into place, HTTP_TEST_RELOADS times (100): the server's
#     watcher reloads it; each build must be applied (the server's module version, read
#     from GET /-/stats) and must answer requests before the next one goes in. The next
#     builds compile meanwhile, two at a time, as a build system would while the server
#     serves;
#  3. drives it once more while the same builds, already made, go in again: what the
#     reloads cost without the compiler's CPU;
#  4. drives it once more while hotmodctl, through the server's control socket, reloads the
#     handler from another file (a build 1000) and then rolls it back (each must be applied and answer
#     requests), then prints `hotmodctl status` and `hotmodctl metrics`, and what 200 status
#     calls cost the server's main thread and hotmod's control thread (CPU time).
# wrk runs at a lower priority (nice) in every run, so that the compiler is not starved on a
# small machine whose cores wrk and the server keep busy.
# wrk's script (check.lua) checks every response: a 2xx status and exactly one version
# marker in the body. Fails on any non-2xx response, bad body or socket error (connect,
# read, write, timeout), on fewer versions applied or seen than built, and on a server that
# does not stop cleanly on SIGTERM. Prints requests/s with and without reloading side by
# side. Exits 77 (skipped) where wrk is missing. Loopback only; every wait has a deadline.
set -euo pipefail

if [ $# -ne 6 ]; then
  echo "usage: $0 SERVER HANDLER_SO SOURCE_DIR INCLUDE_DIR CC HOTMODCTL" >&2
  exit 2
fi
server=$1 handler=$2 src=$3 inc=$4 cc=$5 hotmodctl=$6
reloads=${HTTP_TEST_RELOADS:-100}
base_seconds=${HTTP_TEST_BASELINE_SECONDS:-5}
wrk_args=(-t1 -c8)

wrk=$(command -v wrk || true)
if [ -z "$wrk" ]; then
  echo "example_http: wrk not found (Debian package wrk; 'make test' installs it): skipped"
  exit 77
fi

start=$EPOCHREALTIME
work=$(mktemp -d "${TMPDIR:-/tmp}/hotmod-http.XXXXXX")
spid= wpid= bpid=
cleanup() {
  local rc=$?
  [ -n "$bpid" ] && kill -TERM $bpid 2>/dev/null
  [ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null
  [ -n "$spid" ] && kill -KILL "$spid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
# Also when ctest's output pipe goes away (PIPE) or the terminal does (HUP): the server and
# wrk must not outlive the test.
trap 'exit 130' INT TERM HUP PIPE

log() { echo "example_http: $*"; }
fail() {
  log "FAIL: $*"
  for f in server.log wrk-base.txt wrk-reload.txt wrk-kept.txt wrk-ctl.txt ctl.txt; do
    [ -f "$work/$f" ] && { echo "--- $f (last 30 lines)"; tail -n 30 "$work/$f"; }
  done
  exit 1
}

# One value of the server's GET /-/stats page into $sv (bash's /dev/tcp: no client needed;
# no command substitution either: polling forks nothing).
stat() {
  local line
  sv=
  {
    printf 'GET /-/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    while IFS= read -r -t 5 line <&3; do
      line=${line%$'\r'}
      case $line in "$1 "*) sv=${line#* } ;; esac
    done
  } 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  [ -n "$sv" ]
}

# A short pause without starting a process: a read that times out on a FIFO nobody writes.
mkfifo "$work/tick"
exec {tick}<>"$work/tick"
nap() { read -r -t 0.005 -u "$tick" _ || true; }

# Poll until `"$@"` succeeds; fail with $1's description after `limit` seconds.
wait_for() { # what limit command...
  local what=$1 limit=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@"; do
    kill -0 "$spid" 2>/dev/null || fail "the server died while waiting for $what"
    [ "$SECONDS" -lt "$deadline" ] || fail "no $what within $limit s"
    nap
  done
}

# Send each argument (printf %b) on one connection, with a pause between, and print what
# comes back until the server closes (then "<EOF>"), or until nothing more comes for $xt
# seconds (then "<timeout>"; the first line may take 5 s).
exchange() {
  local part out= line rc t=5
  {
    for part; do
      printf '%b' "$part" >&3
      nap
      nap
    done
    while :; do
      IFS= read -r -t "$t" line <&3
      rc=$?
      [ "$rc" -eq 0 ] || break
      t=${xt:-5}
      out+="${line%$'\r'}"$'\n'
    done
    if [ "$rc" -gt 128 ]; then out+="$line<timeout>"; else out+="$line<EOF>"; fi
  } 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf '%s' "$out"
}
expect() { # what regex parts...
  local what=$1 want=$2 got
  shift 2
  got=$(exchange "$@") || fail "$what: cannot connect"
  [[ $got =~ $want ]] || fail "$what: expected /$want/, got: ${got:0:400}"
}

# The RESULT line of a wrk run (check.lua's done()) into the associative array named $2.
parse_result() {
  local line kv
  line=$(grep -m1 '^RESULT ' "$1") || fail "no RESULT line from wrk in $1"
  for kv in ${line#RESULT }; do
    eval "$2[${kv%%=*}]=${kv#*=}"
  done
}

# ---- the server ---------------------------------------------------------------------------
mkdir "$work/build"
cp "$handler" "$work/http_handler.so"
# Under ThreadSanitizer: Debian's libuv is not instrumented and closes descriptors with
# syscall(SYS_close), which TSan does not see, so a descriptor number that the watcher's
# thread reuses after the loop closed a socket looks like a race on the descriptor
# (google/sanitizers#1376). TSan is told to ignore what uninstrumented libraries do through
# its interceptors; hotmod and the server stay fully checked. Other builds ignore the option.
TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}ignore_noninstrumented_modules=1" \
  "$server" -m "$work/http_handler.so" -c "$work/ctl.sock" 0 >"$work/server.log" 2>&1 &
spid=$!
url=
have_url() { url=$(grep -o -m1 'http://127\.0\.0\.1:[0-9]*/' "$work/server.log"); }
wait_for "server URL" 20 have_url
port=${url#http://127.0.0.1:}
port=${port%/}
log "server at $url (pid $spid), handler rebuilt with $cc"

# ---- 0. HTTP handling ---------------------------------------------------------------------
ok='HTTP/1\.1 200 OK'$'\n''.*Hello from handler v1:'
printf -v big '%9000s' ''
expect "garbage" '^HTTP/1\.1 400 .*Connection: close.*<EOF>$' 'GARBAGE\r\n\r\n'
expect "no Host" '^HTTP/1\.1 400 .*<EOF>$' 'GET / HTTP/1.1\r\n\r\n'
expect "a head too large" '^HTTP/1\.1 431 .*<EOF>$' "GET / HTTP/1.1\r\nHost: x\r\nX: ${big// /a}\r\n\r\n"
expect "HTTP/2.0" '^HTTP/1\.1 505 .*<EOF>$' 'GET / HTTP/2.0\r\nHost: x\r\n\r\n'
expect "chunked" '^HTTP/1\.1 501 .*<EOF>$' 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
expect "a split request" "^$ok.*<EOF>\$" 'GE' 'T / HTTP/1.1\r\nHo' 'st: x\r\nConnection: cl' 'ose\r\n' '\r\n'
expect "pipelining" "^$ok.*HTTP/1\.1 404 .*handler v1.*HTTP/1\.1 200 .*Connection: close.*<EOF>\$" \
  'GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc'
expect "HTTP/1.0" "^HTTP/1\.1 200 OK.*Hello from handler v1.*<EOF>\$" 'GET / HTTP/1.0\r\n\r\n'
xt=0.5 expect "keep-alive" "^$ok.*<timeout>\$" 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'
log "HTTP handling: 400, 431, 505, 501, split requests, pipelining, Connection: close, HTTP/1.0, keep-alive: ok"

# ---- 1. baseline: wrk, no reloads ---------------------------------------------------------
nice -n 10 "$wrk" "${wrk_args[@]}" -d"${base_seconds}s" -s "$src/check.lua" "$url" >"$work/wrk-base.txt" 2>&1 ||
  fail "wrk (baseline) exited with $?"
declare -A base=() rel=() kept=()
parse_result "$work/wrk-base.txt" base

# ---- 2. and 3. wrk while builds go in --------------------------------------------------
served_since() { # $1: a count of handled requests; true once the handler has answered 20 more
  # (`handled`, not `requests`: these /-/stats polls are requests too, and under load they
  # alone could reach 20 before wrk's first request, so a build could go unseen by wrk)
  stat handled && [ "$sv" -ge $(($1 + 20)) ]
}
wrk_running() { kill -0 "$wpid" 2>/dev/null || fail "wrk ended early"; }
version_is() { stat module_version && [ "$sv" = "$1" ] && wrk_running; }

# One wrk run (until SIGINT, within 300 s: wrk then stops and prints its summary as usual) while builds 2 to
# reloads+1 go in one after another: `$2 V` sets $path to build V's file, ready. Each build
# is renamed over the module's file, as a build's last step, must become the next module
# version, and must answer some of wrk's requests before the next goes in. Sets $secs.
reload_run() { # wrk-output next-build-function
  local out=$1 next=$2 v t0 wrc=0
  nice -n 10 "$wrk" "${wrk_args[@]}" -d300s -s "$src/check.lua" "$url" >"$out" 2>&1 &
  wpid=$!
  stat handled || fail "no /-/stats from the server"
  r0=$sv
  wait_for "traffic from wrk" 20 served_since "$r0"
  stat module_version || fail "no /-/stats from the server"
  mv0=$sv
  t0=$EPOCHREALTIME
  for ((v = 2; v <= reloads + 1; v++)); do
    "$next" "$v"
    wait_for "requests served by the build before v$v" 30 served_since "$r0"
    mv -f "$path" "$work/http_handler.so"
    wait_for "module version $((mv0 + v - 1))" 30 version_is $((mv0 + v - 1))
    stat handled || fail "no /-/stats from the server"
    r0=$sv
  done
  wait_for "requests served by the last build" 30 served_since "$r0"
  secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  kill -INT "$wpid"
  wait "$wpid" || wrc=$?
  wpid=
  [ "$wrc" -eq 0 ] || fail "wrk ($out) exited with $wrc"
}

# 2. Each build is compiled while wrk runs, as a build system would while the server serves:
# with the flags hotmod_add_module uses, into build/h<v>.so (outside the watched directory),
# two builds ahead (a build system's -j2). A hard link keeps each for run 3.
mkdir "$work/keep"
build() {
  "$cc" -O2 -pipe -fPIC -shared -fvisibility=hidden -Wl,-Bsymbolic -Wl,-z,now -I"$inc" -I"$src" \
    -DHANDLER_VERSION="$1" -o "$work/build/h$1.so" "$src/handler.c" &&
    ln "$work/build/h$1.so" "$work/keep/h$1.so"
}
declare -A bpids=()
ahead() {
  if [ "$1" -le $((reloads + 1)) ]; then
    build "$1" &
    bpids[$1]=$!
    bpid="${bpids[*]}"
  fi
}
compiled() { # the next build: wait for its compiler, start the one after
  local brc=0
  wait "${bpids[$1]}" || brc=$?
  unset "bpids[$1]"
  bpid="${bpids[*]}"
  [ "$brc" -eq 0 ] || fail "building handler v$1 (exit $brc)"
  ahead $(($1 + 2))
  path=$work/build/h$1.so
}
ahead 2
ahead 3
reload_run "$work/wrk-reload.txt" compiled
parse_result "$work/wrk-reload.txt" rel
rel_secs=$secs
stat module_version || fail "no /-/stats from the server"
version=$sv

# 3. The same builds again, already made: what reloading costs without the compiler's CPU.
kept() { path=$work/keep/h$1.so; }
reload_run "$work/wrk-kept.txt" kept
parse_result "$work/wrk-kept.txt" kept
kept_secs=$secs
stat module_version || fail "no /-/stats from the server"
version2=$sv

# ---- 4. hotmodctl: a reload and a rollback through the control socket while wrk runs ------
ctl() { "$hotmodctl" --socket "$work/ctl.sock" "$@"; }
build 1000 || fail "building handler v1000" # the build hotmodctl reloads from
nice -n 10 "$wrk" "${wrk_args[@]}" -d300s -s "$src/check.lua" "$url" >"$work/wrk-ctl.txt" 2>&1 &
wpid=$!
stat handled || fail "no /-/stats from the server"
r0=$sv
wait_for "traffic from wrk" 20 served_since "$r0"
stat module_version || fail "no /-/stats from the server"
mv0=$sv
ctl reload handler "$work/keep/h1000.so" >>"$work/ctl.txt" 2>&1 || fail "hotmodctl reload exited $?"
wait_for "module version $((mv0 + 1))" 30 version_is $((mv0 + 1))
stat handled || fail "no /-/stats from the server"
r0=$sv
wait_for "requests served by build 1000, reloaded by hotmodctl" 30 served_since "$r0"
ctl rollback handler >>"$work/ctl.txt" 2>&1 || fail "hotmodctl rollback exited $?"
wait_for "module version $((mv0 + 2))" 30 version_is $((mv0 + 2))
stat handled || fail "no /-/stats from the server"
r0=$sv
wait_for "requests served after the rollback" 30 served_since "$r0"
kill -INT "$wpid"
wrc=0
wait "$wpid" || wrc=$?
wpid=
[ "$wrc" -eq 0 ] || fail "wrk (hotmodctl run) exited with $wrc"
declare -A byctl=()
parse_result "$work/wrk-ctl.txt" byctl
log "hotmodctl: $(tr '\n' ' ' <"$work/ctl.txt")"
ctl status >"$work/ctl-status.txt" || fail "hotmodctl status exited $?"
ctl metrics >"$work/ctl-metrics.txt" || fail "hotmodctl metrics exited $?"
grep -q "^hotmod_rollbacks_total{module=\"handler\"} 1\$" "$work/ctl-metrics.txt" ||
  fail "metrics: no rollback counted"
# What status costs the server: CPU time (schedstat, ns) of its main thread and of hotmod's
# control thread around 200 status calls, with nothing else going on.
ctl_tid=
for t in /proc/"$spid"/task/*; do
  [ "$(cat "$t/comm")" = hm-control ] && ctl_tid=${t##*/}
done
[ -n "$ctl_tid" ] || fail "no hm-control thread in the server"
cpu_ns() { local a; read -r a _ <"/proc/$spid/task/$1/schedstat"; echo "$a"; }
main0=$(cpu_ns "$spid") ctl0=$(cpu_ns "$ctl_tid")
for ((i = 0; i < 200; i++)); do ctl status >/dev/null || fail "hotmodctl status exited $?"; done
main1=$(cpu_ns "$spid") ctl1=$(cpu_ns "$ctl_tid")
status_cost="200 status calls: the server's main thread ran $(((main1 - main0) / 1000)) us, hotmod's control thread $(((ctl1 - ctl0) / 1000)) us ($(((ctl1 - ctl0) / 200000)) us a call)"

# ---- stop the server ----------------------------------------------------------------------
kill -TERM "$spid"
stopped() { ! kill -0 "$spid" 2>/dev/null; }
deadline=$((SECONDS + 20))
until stopped; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the server did not stop within 20 s of SIGTERM"
  sleep 0.01
done
src_rc=0
wait "$spid" || src_rc=$?
spid=
[ "$src_rc" -eq 0 ] || fail "the server exited with $src_rc after SIGTERM"
grep -q '^http_server: stopped after' "$work/server.log" || fail "no clean stop in the server log"
refused=$(grep -c 'refused' "$work/server.log" || true)

# ---- report and check ---------------------------------------------------------------------
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
row() { # label, array name
  local -n r=$2
  printf '  %-22s %10s %8s %8s %8s %9s %7s %10s %13s\n' "$1" "${r[rps]}" "$(ms "${r[p50_us]}")" \
    "$(ms "${r[p99_us]}")" "$(ms "${r[max_us]}")" "${r[requests]}" "${r[non2xx]}" \
    "${r[bad_bodies]}" "$((r[connect] + r[read] + r[write] + r[timeout]))"
}
log "wrk ${wrk_args[*]} on $url"
printf '  %-22s %10s %8s %8s %8s %9s %7s %10s %13s\n' "" "requests/s" "p50 ms" "p99 ms" \
  "max ms" "requests" "non-2xx" "bad bodies" "socket errors"
row "without reloading" base
row "rebuilt and reloaded" rel
row "reloaded, built before" kept
row "hotmodctl reload+rollback" byctl
log "rebuilt and reloaded $reloads times in $rel_secs s (module version $version), then the same" \
  "builds reloaded again in $kept_secs s (module version $version2); handler versions seen by" \
  "wrk: ${rel[versions]}, then ${kept[versions]}"

log "$status_cost"
echo "--- hotmodctl status"
cat "$work/ctl-status.txt"
echo "--- hotmodctl metrics"
cat "$work/ctl-metrics.txt"

errors=()
for r in base rel kept byctl; do
  declare -n a=$r
  for k in non2xx bad_bodies connect read write timeout status; do
    [ "${a[$k]}" -eq 0 ] || errors+=("$r: $k=${a[$k]}")
  done
  [ "${a[responses]}" -gt 0 ] || errors+=("$r: no responses")
  unset -n a
done
[ "$version" -ge $((reloads + 1)) ] || errors+=("module version $version < $((reloads + 1))")
[ "$version2" -ge $((2 * reloads + 1)) ] ||
  errors+=("module version $version2 < $((2 * reloads + 1))")
[ "${rel[versions]}" -ge $((reloads + 1)) ] ||
  errors+=("wrk saw ${rel[versions]} handler versions, not $((reloads + 1))")
[ "${kept[versions]}" -ge "$reloads" ] ||
  errors+=("wrk saw ${kept[versions]} handler versions in run 3, not $reloads")
[ "$refused" -eq 0 ] || errors+=("$refused builds refused (server log)")
[ "${byctl[versions]}" -ge 2 ] ||
  errors+=("wrk saw ${byctl[versions]} handler versions while hotmodctl steered, not 2")
grep -h '^first bad body' "$work"/wrk-*.txt || true
[ ${#errors[@]} -eq 0 ] || fail "${errors[*]}"
log "PASS in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
