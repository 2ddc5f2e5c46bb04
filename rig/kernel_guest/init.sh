#!/bin/sh
# /sbin/vfiolab-init of the differential-test guest (rig/kernel-rootfs.sh puts it in the root image; dash).
# The root file system (/dev/vda, Debian with python3) is read-only; /dev/vdb is the per-run disk holding
# src/ (the vfiolab sources), in/scenarios.jsonl and in/args, and receiving out/results.jsonl, out/stderr.txt
# and out/dmesg.txt.  Progress records ("@@...") go to /dev/ttyS1, a port of their own; then power off.
# Keep the records in step with rig/kernel-rootfs.sh, which waits for "@@exit".
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1

echo "@@booted $(cut -d' ' -f1 /proc/uptime) $(uname -r)" >&3
if ! mount -t ext4 -o rw,noatime /dev/vdb /mnt; then
  echo "@@error cannot mount the run disk /dev/vdb" >&3
else
  args=$(cat /mnt/in/args 2>/dev/null)
  # -S: no site-packages (the guest needs only the standard library and the copied sources).
  # shellcheck disable=SC2086  # args are words by design
  PYTHONPATH=/mnt/src PYTHONDONTWRITEBYTECODE=1 python3 -S -m vfiolab.difftest.guest \
    /mnt/in/scenarios.jsonl /mnt/out/results.jsonl $args 2>/mnt/out/stderr.txt
  rc=$?
  echo "@@python-done $(cut -d' ' -f1 /proc/uptime)" >&3
  dmesg > /mnt/out/dmesg.txt 2>&1
  umount /mnt
  echo "@@exit $rc" >&3
fi
sync
# RB_POWER_OFF (include/uapi/linux/reboot.h LINUX_REBOOT_CMD_POWER_OFF): Debian's minbase has no poweroff
# without an init system, so ask the kernel directly.
python3 -S -c 'import ctypes; ctypes.CDLL(None, use_errno=True).reboot(0x4321fedc)'
echo "@@error poweroff failed" >&3
