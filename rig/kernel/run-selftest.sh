#!/usr/bin/env bash
# Boot the rig/kernel/build.sh kernel under QEMU q35 (TCG) and run one selftest in the guest:
#   rig/kernel/run-selftest.sh NAME [ARGS...]     NAME: iommufd | iommufd_fail_nth; ARGS go to the program
#                                                 (kselftest harness options, e.g. -f iommufd_ioas)
# The TAP lands in $VFIOLAB_CACHE/kernel/<key>/runs/<NAME>[@<args-hash>]/ with results.json, names.txt, the
# console and the guest's whole dmesg; the run directory is printed.  A run whose inputs (kernel, initramfs, QEMU, command line) are
# unchanged is not repeated (VFIOLAB_KERNEL_RERUN=1 forces it).  A boot that panics, times out or stops
# before the program's TAP is complete is retried once (TCG boots sometimes panic, real-peers.md §6 step 5).
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ $# -ge 1 ] || { echo "usage: $0 NAME [ARGS...]   (NAME: ${SELFTESTS[*]})" >&2; exit 2; }
name=$1; shift
case " ${SELFTESTS[*]} " in *" $name "*) ;; *) log "kernel: unknown selftest '$name' (known: ${SELFTESTS[*]})"; exit 2 ;; esac
for a in "$@"; do
  # The arguments travel comma-joined in one kernel parameter (vfiolab.args=), which init.sh splits again.
  [[ $a =~ ^[A-Za-z0-9_./:=+-]+$ ]] || { log "kernel: argument '$a' cannot travel on the kernel command line (allowed: A-Z a-z 0-9 _ . / : = + -)"; exit 2; }
done

kernel_paths
for f in .kernel.ok bzImage initrd.gz initrd.key; do
  [ -e "$KDIR/$f" ] || { log "kernel: $KDIR/$f missing: run \`make kernel-rig\` (rig/kernel/build.sh) first"; exit 1; }
done

args_csv=$(IFS=,; echo "$*")
run_id=$name
[ $# -eq 0 ] || run_id="$name@$(printf '%s' "$args_csv" | sha256sum | cut -c1-8)"
RUN="$KDIR/runs/$run_id"
mkdir -p "$KDIR/runs"
exec 8>"$KDIR/runs/.$run_id.lock"
flock 8

TIMEOUT=${VFIOLAB_KERNEL_TIMEOUT:-1800}
APPEND="console=ttyS0 panic=-1 loglevel=4 log_buf_len=8M no_timer_check hugepages=256 vfiolab.run=$name"
[ $# -eq 0 ] || APPEND="$APPEND vfiolab.args=$args_csv"
QEMU=(qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 3072 -smp 2 -nographic -no-reboot -nodefaults)

bkey=$(printf '%s\n' "$(cat "$KDIR/.kernel.ok")" "$(cat "$KDIR/initrd.key")" "$(qemu-system-x86_64 --version | head -n1)" \
       "${QEMU[*]}" "$APPEND" | sha256sum | cut -c1-16)
if [ -z "${VFIOLAB_KERNEL_RERUN:-}" ] && [ -e "$RUN/.boot-key" ] && [ "$(cat "$RUN/.boot-key")" = "$bkey" ]; then
  echo "$RUN"; exit 0
fi

# Kernel splats (bug.c/panic.c report formats; "Call Trace" follows most of them).
SPLAT='WARNING:|BUG:|Oops|Call Trace|Kernel panic|refcount_t:|UBSAN:'

# boot DIR: one QEMU run; console on ttyS0, the program's TAP on ttyS1, @@ status records on ttyS2, dmesg on ttyS3.
boot() {
  local out=$1 rc=0 t0 t1
  local cmd=("${QEMU[@]}" -serial "file:$out/console.log" -serial "file:$out/tap.txt" -serial "file:$out/status.txt"
             -serial "file:$out/dmesg.txt"
             -kernel "$KDIR/bzImage" -initrd "$KDIR/initrd.gz" -append "$APPEND")
  printf '%q ' "${cmd[@]}" > "$out/qemu-cmd.txt"; echo >> "$out/qemu-cmd.txt"
  t0=$(date +%s.%N)
  timeout "$TIMEOUT" "${cmd[@]}" </dev/null >"$out/qemu.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' > "$out/boot-seconds.txt"
  [ $rc -eq 0 ] || { log "kernel: $run_id: qemu exited with $rc$( [ $rc -eq 124 ] && echo " (timeout ${TIMEOUT}s)")"; return 1; }
  grep -q '^@@exit ' "$out/status.txt" && grep -q '^@@dmesg-done' "$out/status.txt" || {
    log "kernel: $run_id: the guest did not finish: $(grep -m1 '^@@error' "$out/status.txt" || echo 'no @@exit/@@dmesg-done record')"
    return 1; }
  "${PY[@]}" "$here/parse_tap.py" "$out/tap.txt" --out "$out/results.json" --names "$out/names.txt" > "$out/summary.txt"
}

tmp="$RUN.tmp" failed="$RUN.failed-console.log"
rm -f "$failed"
for try in 1 2; do
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "kernel: $run_id: booting Linux $KVERSION (try $try)"
  if boot "$tmp"; then
    [ -e "$failed" ] && mv "$failed" "$tmp/failed-try-console.log"   # kept: what the retry papered over
    printf '%s\n' "$name" "$@" > "$tmp/argv.txt"
    echo "$bkey" > "$tmp/.boot-key"
    rm -rf "$RUN"; mv "$tmp" "$RUN"
    log "kernel: $run_id: $(cat "$RUN/summary.txt"); $(sed -n 's/^@@exit /exit /p' "$RUN/status.txt"); boot $(cat "$RUN/boot-seconds.txt") s; $(grep -caE "$SPLAT" "$RUN/dmesg.txt" || true) splat lines in dmesg"
    echo "$RUN"
    exit 0
  fi
  log "kernel: $run_id: console: $(grep -m1 -aE "$SPLAT" "$tmp/console.log" || echo 'no panic or splat message')"
  cp "$tmp/console.log" "$failed" 2>/dev/null || true
done
log "kernel: $run_id: FAILED twice; console tail ($tmp/console.log):"
tail -n 40 "$tmp/console.log" >&2 || true
tail -n 5 "$tmp/qemu.log" >&2 || true
log "kernel: $run_id: TAP tail ($tmp/tap.txt):"
tail -n 10 "$tmp/tap.txt" >&2 || true
exit 1
