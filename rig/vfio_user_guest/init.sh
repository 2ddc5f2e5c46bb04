#!/bin/sh
# /init of the guest booted by tests/interop/test_qemu_vfio_user.py (busybox; QEMU 11.1, i440fx, TCG).
# Runs the same edu checks on every slot listed in vfiolab.edu= (QEMU's built-in edu and ours over vfio-user),
# the testdev checks on vfiolab.testdev=, and writes one "R <slot> <key> <value>" line per result to ttyS1
# (the console, ttyS0, carries kernel messages only).  Guest RAM in [0x8000000, +64K) is reserved (memmap=) as
# DMA and MSI target; devmem reads it.  Interrupts are observed, not assumed: INTx through uio_pci_generic
# (a read of /dev/uioN returns only after the kernel's handler saw Interrupt Status set and masked INTx),
# MSI and MSI-X by pointing the message address at reserved RAM and reading the message data QEMU stored there.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 3>/dev/ttyS1
out() { echo "R $*" >&3; }
insmod /lib/modules/uio.ko && insmod /lib/modules/uio_pci_generic.ko || out - error insmod
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id   # both edus (INTx observers)

arg() { sed -n "s/.*vfiolab\.$1=\([^ ]*\).*/\1/p" /proc/cmdline | tr ',' ' '; }
hex() { printf '0x%08x' "$1"; }

# config space through sysfs (aligned accesses of 1, 2 or 4 bytes)
cfg() { od -An -tu"$3" -j "$(($2))" -N "$3" "$1/config" | tr -d ' '; }
cfgw() {
  bytes="" i=0
  while [ $i -lt "$3" ]; do bytes="$bytes\\$(printf %o $((($4 >> (8 * i)) & 0xff)))"; i=$((i + 1)); done
  printf "$bytes" | dd of="$1/config" bs="$3" seek=$(($2 / $3)) count=1 conv=notrunc 2>/dev/null
}
cap_of() {  # offset of standard capability $2 (0 if absent)
  p=$(cfg "$1" 0x34 1)
  while [ "$p" -ne 0 ]; do
    [ "$(cfg "$1" "$p" 1)" -eq $(($2)) ] && { echo "$p"; return; }
    p=$(cfg "$1" $((p + 1)) 1)
  done
  echo 0
}
caps_list() {
  p=$(cfg "$1" 0x34 1) l=""
  while [ "$p" -ne 0 ]; do l="$l$(printf %02x "$(cfg "$1" "$p" 1)")"; p=$(cfg "$1" $((p + 1)) 1); done
  echo "${l:-none}"
}
bar() { sed -n "$(($2 + 1))p" "$1/resource" | cut -d' ' -f1; }
barsize() { set -- $(sed -n "$(($2 + 1))p" "$1/resource"); printf '0x%x' $(($2 - $1 + 1)); }
rd() { devmem $((BAR + $1)) 32; }
wr() { devmem $((BAR + $1)) 32 $(($2)); }
mem() { devmem $(($1)) 32; }
memw() { devmem $(($1)) 32 $(($2)); }
poll() {  # poll OFFSET MASK WANT: wait until (reg & MASK) == WANT
  n=0
  while [ $(($(rd "$1") & $2)) -ne $(($3)) ]; do n=$((n + 1)); [ $n -gt 2000 ] && { echo timeout; return; }; done
  echo ok
}
memwait() {  # wait until RAM at $1 is not 0
  n=0
  while [ "$(mem "$1")" = 0x00000000 ]; do n=$((n + 1)); [ $n -gt 2000 ] && return; done
}
# uio: a read returns once the event count differs from the count at open(), so open before the interrupt.
# The read is made on fd 4, opened once per device before its first interrupt.
uio_wait() { timeout 10 dd bs=4 count=1 <&4 2>/dev/null | od -An -tu4 | tr -d ' '; }
# uio_pci_generic has no irqcontrol: INTx is unmasked by clearing Interrupt Disable in the command register.
# Closing /dev/uioN clears Bus Master (its release()), so the fd stays open for a device's whole check.
uio_unmask() { cfgw "$1" 4 2 $(($(cfg "$1" 4 2) & ~0x400)); }
ident() {  # identification common to both devices
  d=$1 s=$2
  out "$s" id "$(cat $d/vendor):$(cat $d/device)"
  out "$s" class "$(cat $d/class)"
  out "$s" revision "$(cat $d/revision)"
  out "$s" subsystem "$(cat $d/subsystem_vendor):$(cat $d/subsystem_device)"
  out "$s" pin "$(cfg "$d" 0x3d 1)"
  out "$s" caps "$(caps_list "$d")"
}

edu_checks() {
  s=$1 d=/sys/bus/pci/devices/0000:$1
  [ -d "$d" ] || { out "$s" error absent; return; }
  ident "$d" "$s"
  out "$s" bar0_size "$(barsize "$d" 0)"
  BAR=$(bar "$d" 0)
  u=$(ls "$d/uio" 2>/dev/null)
  out "$s" uio "${u:+bound}"
  exec 4</dev/"$u"
  cfgw "$d" 4 2 $(($(cfg "$d" 4 2) | 0x6))           # memory space + bus master
  out "$s" command_mem_master "$(($(cfg "$d" 4 2) & 0x6))"
  out "$s" ident "$(rd 0)"
  wr 4 0x12345678; out "$s" liveness "$(rd 4)"
  wr 8 10; out "$s" fact_poll "$(poll 0x20 1 0)"; out "$s" factorial "$(rd 8)"
  wr 8 12; out "$s" fact_poll2 "$(poll 0x20 1 0)"; out "$s" factorial12 "$(rd 8)"
  # INTx, seen by the kernel's handler (uio_pci_generic)
  wr 0x60 0x1
  out "$s" intx_count1 "$(uio_wait "$u")"
  out "$s" intx_status1 "$(rd 0x24)"
  out "$s" status_intx_bit "$(($(cfg "$d" 6 2) >> 3 & 1))"
  wr 0x64 0x1; out "$s" intx_acked "$(rd 0x24)"; uio_unmask "$d"
  wr 0x20 0x80; wr 8 5                   # factorial with its interrupt
  out "$s" intx_count2 "$(uio_wait "$u")"
  out "$s" factorial5 "$(rd 8)"; out "$s" intx_status2 "$(rd 0x24)"
  wr 0x64 0x1; wr 0x20 0; uio_unmask "$d"
  # DMA both ways through reserved guest RAM: 0x8000000 (source) -> edu buffer -> 0x8001000
  memw 0x8000000 0x11223344; memw 0x8000004 0x55667788; memw 0x8000008 0x99aabbcc; memw 0x800000c 0xddeeff00
  for o in 0 4 8 12; do memw $((0x8001000 + o)) 0; done
  wr 0x80 0x8000000; wr 0x88 0x40000; wr 0x90 16; wr 0x98 1
  out "$s" dma_to_dev "$(poll 0x98 1 0)"
  wr 0x80 0x40004; wr 0x88 0x8001000; wr 0x90 12; wr 0x98 3
  out "$s" dma_to_ram "$(poll 0x98 1 0)"
  out "$s" ram "$(mem 0x8001000) $(mem 0x8001004) $(mem 0x8001008) $(mem 0x800100c)"
  wr 0x80 0x40000; wr 0x88 0x8001010; wr 0x90 4; wr 0x98 7    # to RAM, interrupt when done
  out "$s" intx_count3 "$(uio_wait "$u")"
  out "$s" dma_irq_status "$(rd 0x24)"; out "$s" ram2 "$(mem 0x8001010)"
  wr 0x64 0x100; uio_unmask "$d"
  # MSI: the message (data 0x4567) is a DMA write to reserved RAM at 0x8002000
  m=$(cap_of "$d" 5)
  out "$s" msi_cap "$(hex "$m")"
  memw 0x8002000 0
  cfgw "$d" $((m + 4)) 4 0x8002000; cfgw "$d" $((m + 8)) 4 0; cfgw "$d" $((m + 12)) 2 0x4567
  cfgw "$d" $((m + 2)) 2 $(($(cfg "$d" $((m + 2)) 2) | 1))
  wr 0x60 0x8
  memwait 0x8002000
  out "$s" msi_message "$(mem 0x8002000)"; out "$s" msi_status "$(rd 0x24)"
  wr 0x64 0x8
  cfgw "$d" $((m + 2)) 2 $(($(cfg "$d" $((m + 2)) 2) & ~1))
  exec 4<&-
  out "$s" done yes
}

testdev_checks() {
  s=$1 d=/sys/bus/pci/devices/0000:$1
  [ -d "$d" ] || { out "$s" error absent; return; }
  ident "$d" "$s"
  out "$s" bar0_size "$(barsize "$d" 0)"; out "$s" bar2_size "$(barsize "$d" 2)"
  BAR=$(bar "$d" 0) BUF=$(bar "$d" 2)
  cfgw "$d" 4 2 $(($(cfg "$d" 4 2) | 0x6))
  out "$s" ident "$(rd 0)"
  devmem $((BUF + 0x100)) 32 0xa5a5f00d                # BAR2 is RAM the client maps (sparse mmap)
  out "$s" buf_word "$(devmem $((BUF + 0x100)) 32)"
  memw 0x8003000 0x01020304; memw 0x8003004 0x05060708; memw 0x8003008 0x090a0b0c; memw 0x800300c 0x0d0e0f10
  wr 0x10 0x8003000; wr 0x14 0; wr 0x18 0x200; wr 0x1c 16; wr 0x20 1   # READ: RAM -> buffer
  out "$s" dma_read "$(poll 0x04 0x6 0x2)"; wr 0x04 0x6
  out "$s" buf "$(devmem $((BUF + 0x200)) 32) $(devmem $((BUF + 0x204)) 32) $(devmem $((BUF + 0x208)) 32) $(devmem $((BUF + 0x20c)) 32)"
  memw 0x8004000 0
  wr 0x10 0x8004000; wr 0x18 0x100; wr 0x1c 4; wr 0x20 2             # WRITE: buffer -> RAM
  out "$s" dma_write "$(poll 0x04 0x6 0x2)"; wr 0x04 0x6
  out "$s" ram "$(mem 0x8004000)"
  # MSI-X: entries 0 and 1 aim at reserved RAM; QEMU emulates the table, our device raises the vectors
  x=$(cap_of "$d" 0x11)
  out "$s" msix_cap "$(hex "$x")"
  memw 0x8005000 0; memw 0x8005004 0
  wr 0x2000 0x8005000; wr 0x2004 0; wr 0x2008 0xbeef; wr 0x200c 0
  wr 0x2010 0x8005004; wr 0x2014 0; wr 0x2018 0xbef1; wr 0x201c 0
  cfgw "$d" $((x + 2)) 2 $(($(cfg "$d" $((x + 2)) 2) | 0x8000))
  wr 0x08 1
  for v in 0 1; do
    wr 0x24 $v; wr 0x10 0x8003000; wr 0x18 0; wr 0x1c 4; wr 0x20 1
    out "$s" msix_run$v "$(poll 0x04 0x6 0x2)"; wr 0x04 0x6
    memwait $((0x8005000 + 4 * v))
    out "$s" msix_message$v "$(mem $((0x8005000 + 4 * v)))"
  done
  out "$s" completions "$(rd 0x28)"; out "$s" errors "$(rd 0x2c)"
  out "$s" done yes
}

for s in $(arg edu); do edu_checks "$s"; done
for s in $(arg testdev); do testdev_checks "$s"; done
out - interrupts "$(grep -c uio /proc/interrupts)"
out - end yes
poweroff -f
