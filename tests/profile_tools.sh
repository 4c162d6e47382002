#!/usr/bin/env bash
# The debugger, the profiler and the leak checkers across reloads (README "Debugging and
# profiling"), each run as a user would run it on profile_host (profile_host.c) and the
# profiling test module (modules/profmod.c):
#   profile_tools.sh perf HOST MODDIR           perf record over three versions, in profiling
#                                               mode; perf report after the host exited (and
#                                               its copies were removed) names all three
#   profile_tools.sh gdb HOST MODDIR SRC OBJCOPY  a split build (objcopy --only-keep-debug,
#                                               --add-gnu-debuglink): gdb's batch run stops at
#                                               a pending breakpoint and names the loaded
#                                               version's line, after the next build wrote
#                                               its own debug file over the first one's
#   profile_tools.sh lsan ASAN_HOST MODDIR      an ASan host in profiling mode: the leak
#                                               report names the function of the version
#                                               that was unloaded
#   profile_tools.sh valgrind HOST MODDIR SANITIZED  the same under valgrind
#                                               --keep-debuginfo=yes (no profiling mode)
#   profile_tools.sh cost HM_BENCH OBJCOPY      callgrind: a reload of a build without a
#                                               debuglink runs none of the debug file's code
# Exit 0: passed; 77: skipped, with the reason (the tool is missing or blocked here); else
# failed, with what was seen.
set -u
what=$1
host=$2
moddir=${3:-}
skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/hm_profile_tools.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Profiling mode's copies go to a place of the test's own, not ~/.cache.
export XDG_CACHE_HOME=$work/cache

case $what in
perf)
  command -v perf >/dev/null || skip "perf not found (Debian: linux-perf)"
  perf record -q -e cpu-clock -o "$work/probe.data" -- true >"$work/probe.log" 2>&1 ||
    skip "perf cannot record here (kernel.perf_event_paranoid is" \
      "$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown)," \
      "or a seccomp filter): $(tail -1 "$work/probe.log")"
  # perf's own cache of what it sampled, by build-id (else ~/.debug).
  export PERF_BUILDID_DIR=$work/buildid
  HOTMOD_PROFILE=1 perf record -q -e cpu-clock -o "$work/perf.data" -- "$host" spin 40 \
    "$moddir/profmod_v1.so" "$moddir/profmod_v2.so" "$moddir/profmod_v3.so" \
    >"$work/record.log" 2>&1 || { cat "$work/record.log"; fail "perf record of the host failed"; }
  # After the host: its copies may go (a later registry sweeps them); perf keeps what it read.
  rm -rf "$work/cache"
  perf report -i "$work/perf.data" --stdio --sort dso,sym >"$work/report.txt" 2>&1
  grep -E 'p\.[0-9]+\.so' "$work/report.txt"
  for v in 1 2 3; do
    grep -q "spin_v$v" "$work/report.txt" || fail "perf report does not name spin_v$v"
  done
  echo "perf report names spin_v1, spin_v2 and spin_v3"
  ;;
gdb)
  src=$4 objcopy=$5
  command -v gdb >/dev/null || skip "gdb not found"
  gdb -batch -nx -ex run --args /bin/true >"$work/probe.log" 2>&1 ||
    skip "gdb cannot run a program here (ptrace blocked?): $(tail -1 "$work/probe.log")"
  mkdir -p "$work/build" "$work/next"
  # Each build as a user splits it: the debug file beside the stripped module, named by it.
  for d in build next; do
    v=1
    [ $d = next ] && v=2
    cp "$moddir/profmod_v$v.so" "$work/$d/mod.so"
    (cd "$work/$d" && "$objcopy" --only-keep-debug mod.so mod.so.debug &&
      "$objcopy" --strip-debug --add-gnu-debuglink=mod.so.debug mod.so) || fail "objcopy failed"
  done
  line=$(grep -n DBG_LINE_V1 "$src" | cut -d: -f1)
  # LeakSanitizer cannot run under a debugger (an ASan build's host would abort at exit).
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 gdb -batch -nx -iex 'set debuginfod enabled off' -ex 'set breakpoint pending on' \
    -ex 'break dbg_fn' -ex run -ex 'info line *$pc' -ex 'info sharedlibrary' -ex continue \
    --args "$host" gdb "$work/build/mod.so" "$work/next/mod.so" "$work/next/mod.so.debug" \
    >"$work/gdb.log" 2>&1
  grep -E 'Breakpoint 1,|^Line|p\.1\.so|dbg_fn\(1\)' "$work/gdb.log"
  grep -q "Line $line of \".*profmod.c\"" "$work/gdb.log" ||
    { cat "$work/gdb.log"; fail "gdb did not find line $line of profmod.c (version 1's dbg_fn)"; }
  grep -q "dbg_fn(1) = 2" "$work/gdb.log" || fail "the host did not run version 1's dbg_fn"
  echo "gdb found version 1's line through the debuglink"
  ;;
lsan)
  [ -x "$host" ] || skip "no AddressSanitizer host in this build (a ThreadSanitizer build)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 HOTMOD_PROFILE=1 "$host" leak \
    "$moddir/profmod_v1.so" "$moddir/profmod_v2.so" >"$work/out.log" 2>&1
  rc=$?
  if grep -q "LeakSanitizer has encountered a fatal error\|does not work under ptrace" "$work/out.log"; then
    skip "LeakSanitizer cannot run here: $(grep -m1 LeakSanitizer "$work/out.log")"
  fi
  grep -E -A4 'Direct leak of 4242' "$work/out.log"
  [ $rc = 23 ] || { cat "$work/out.log"; fail "expected LeakSanitizer's exit code 23, got $rc"; }
  grep -A4 'Direct leak of 4242' "$work/out.log" | grep -q 'leak_v1' ||
    fail "the leak report does not name leak_v1 (the unloaded version's function)"
  echo "LeakSanitizer names leak_v1 of the unloaded version"
  ;;
valgrind)
  [ "${4:-}" = OFF ] || skip "the host is built with sanitizers, which valgrind cannot run"
  command -v valgrind >/dev/null || skip "valgrind not found"
  valgrind --leak-check=full --keep-debuginfo=yes "$host" leak "$moddir/profmod_v1.so" \
    "$moddir/profmod_v2.so" >"$work/out.log" 2>&1 || { cat "$work/out.log"; fail "valgrind run failed"; }
  grep -A6 '4,242 bytes in 1 blocks are definitely lost' "$work/out.log"
  grep -A6 '4,242 bytes in 1 blocks are definitely lost' "$work/out.log" | grep -q 'leak_v1' ||
    { cat "$work/out.log"; fail "valgrind's leak report does not name leak_v1"; }
  echo "valgrind --keep-debuginfo=yes names leak_v1 of the unloaded version"
  ;;
cost)
  bench=$host objcopy=$3
  command -v valgrind >/dev/null || skip "valgrind not found"
  command -v callgrind_annotate >/dev/null || skip "callgrind_annotate not found"
  dir=$(dirname "$bench")/modules
  mkdir -p "$work/split"
  for m in benchmod_v1 benchmod_v2 benchmod_fast_v1 benchmod_fast_v2; do
    cp "$dir/$m.so" "$work/split/$m.so"
    (cd "$work/split" && "$objcopy" --only-keep-debug $m.so $m.so.debug &&
      "$objcopy" --strip-debug --add-gnu-debuglink=$m.so.debug $m.so) || fail "objcopy failed"
  done
  fns='hm__debugfile_copy|hm__crc32|hm__copy_dir_make|hm__elf_note_debuglink'
  for run in plain split; do
    args=()
    [ $run = split ] && args=(--moddir "$work/split")
    valgrind --tool=callgrind --toggle-collect=hm_module_reload \
      --callgrind-out-file="$work/cg.$run" "$bench" --reloads-only --iters 20 "${args[@]}" \
      >"$work/$run.log" 2>&1 || { cat "$work/$run.log"; fail "callgrind run ($run) failed"; }
    ir=$(awk '/^totals:/ { print $2; exit }' "$work/cg.$run")
    echo "$run build: $((ir / 20)) instructions per reload"
    callgrind_annotate --auto=no --threshold=100 "$work/cg.$run" 2>/dev/null |
      grep -E ":($fns) " >"$work/$run.fns"
  done
  [ -s "$work/plain.fns" ] && { cat "$work/plain.fns"; fail "a build without a debuglink ran the debug file's code"; }
  [ -s "$work/split.fns" ] || fail "a build with a debuglink did not run the debug file's code (the check sees nothing)"
  echo "a reload of a build without a debuglink runs none of: ${fns//|/, }"
  ;;
*)
  fail "unknown test $what"
  ;;
esac
