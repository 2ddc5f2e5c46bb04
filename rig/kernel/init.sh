#!/bin/sh
# /init of the iommufd-selftest guest (busybox ash).  Runs the selftest named by vfiolab.run= on the kernel
# command line, with the arguments in vfiolab.args= (comma-separated, e.g. vfiolab.args=-f,iommufd_ioas),
# printing its TAP on /dev/ttyS1 (a port of its own, never interleaved with kernel messages) and @@ status
# records on /dev/ttyS2, and the whole kernel log on /dev/ttyS3 at the end; then powers off.  rig/kernel/run-selftest.sh reads both; keep the three in step.
PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm

for p in /dev/ttyS1 /dev/ttyS2 /dev/ttyS3; do stty -F "$p" raw -echo 2>/dev/null; done
exec 3>/dev/ttyS2

run="" args=""
for w in $(cat /proc/cmdline); do
  case $w in
    vfiolab.run=*) run=${w#vfiolab.run=} ;;
    vfiolab.args=*) args=$(echo "${w#vfiolab.args=}" | tr ',' ' ') ;;
  esac
done

echo "@@kernel $(uname -r)" >&3
echo "@@cmdline $(cat /proc/cmdline)" >&3
echo "@@hugepages $(cat /proc/sys/vm/nr_hugepages)" >&3
if [ -n "$run" ] && [ -x "/selftests/$run" ]; then
  echo "@@run $run $args" >&3
  cd /tmp
  # shellcheck disable=SC2086  # args are words by design
  "/selftests/$run" $args >/dev/ttyS1 2>&1
  echo "@@exit $?" >&3
else
  echo "@@error no selftest '$run' in /selftests ($(ls /selftests | tr '\n' ' '))" >&3
fi
# The whole kernel log (log_buf_len= on the command line keeps it; the console shows only errors).  Closing a
# serial port waits for its output to drain, so the record after it means the log is complete.
dmesg > /dev/ttyS3
echo "@@dmesg-done" >&3
sync
poweroff -f
