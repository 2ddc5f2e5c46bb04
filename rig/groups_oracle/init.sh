#!/bin/sh
# /init of the groups-oracle guest (busybox ash).  It reports what Linux made of the PCI topology QEMU
# built: every function's config bytes, resources and IOMMU group, as @@-marked records on /dev/ttyS1
# (a channel of its own, so kernel messages on the console never interleave), then powers off.
# rig/groups_oracle/parse_capture.py reads the records; keep the two in step.
PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

exec 1>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo 2>/dev/null

echo "@@vfiolab-capture 1"
echo "@@kernel $(uname -r) $(cat /proc/version)"
echo "@@cmdline $(cat /proc/cmdline)"

# SR-IOV: enable every PF's VFs in sysfs listing order.  Drivers are not autoprobed on the VFs (they do
# not change grouping: IOMMU groups are assigned when a device is added, before any driver binds).
for d in /sys/bus/pci/devices/*; do
  [ -e "$d/sriov_totalvfs" ] || continue
  total=$(cat "$d/sriov_totalvfs")
  echo 0 > "$d/sriov_drivers_autoprobe" 2>/dev/null
  if echo "$total" > "$d/sriov_numvfs" 2>/dev/null; then rc=0; else rc=1; fi
  echo "@@sriov ${d##*/} totalvfs=$total numvfs=$(cat "$d/sriov_numvfs") rc=$rc"
done

for d in /sys/bus/pci/devices/*; do
  echo "@@dev ${d##*/}"
  echo "@@config $(wc -c < "$d/config")"
  od -Ax -tx1 -v -w16 "$d/config"
  echo "@@resource"
  cat "$d/resource"
  g=$(readlink "$d/iommu_group")
  echo "@@group ${g##*/}"
done

echo "@@groups"
for g in /sys/kernel/iommu_groups/*; do
  for m in "$g"/devices/*; do
    [ -e "$m" ] && echo "${g##*/} ${m##*/}"
  done
done

echo "@@dmesg"
dmesg
echo "@@vfiolab-end"
sync
poweroff -f
