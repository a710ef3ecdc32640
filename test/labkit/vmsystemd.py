"""A qemu VM that boots systemd as PID 1 and keeps its disk across reboots.

labkit.vm runs a script in a throwaway chroot; a real node instead boots
systemd, which starts its services, and survives a reboot. Here:

- ``make_disk(path, upper)``: a sparse ext4 image whose ``upper/`` starts
  as the given directory (``mkfs.ext4 -d``: no loop mount on the host).
  It is the VM's persistent layer: everything the VM writes lands there
  and is still there at the next boot.
- ``boot(job_dir, disk)``: boots Debian's kernel (labkit.vm's cached
  image) with the host's root, read-only over 9p, as the lower layer of an
  overlay whose upper layer is the disk's ``upper/``, then
  ``switch_root`` into ``/lib/systemd/systemd``. The job directory is
  shared writable at JOB_MOUNT. A reboot in the guest restarts the machine
  in the same qemu (same disk, stage 1 again), so the guest reboots as
  often as it likes; ``boot`` returns when it powers off (or after
  ``timeout``, qemu killed). No network device: traffic only flows
  between the namespaces the guest makes.

What the guest runs is the business of the units in the disk's upper layer
(labkit.sysnode writes them).
"""

import os
import shlex
import subprocess
import time

from labkit import vm

JOB_MOUNT = "/mnt/ipsec-vm-job"
DISK_MB = 2048

STAGE2 = r"""# stage 2 (generated): overlay on the persistent disk, then systemd
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
log() { echo "vm-init: $*" >/dev/console; }
die() { log "$*"; sleep 2; poweroff -f; }
mount -o bind @MODULES@ /lib/modules || die "cannot bind the module tree"
modprobe -a ext4 virtio_blk @EXTRA_MODULES@ || log "modprobe failed"
mkdir -p /rw /newroot
n=0
until [ -b /dev/vda ] || [ $n -ge 50 ]; do sleep 0.1; n=$((n + 1)); done
mount -t ext4 /dev/vda /rw || die "cannot mount the persistent disk /dev/vda"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work,xino=off,index=off,metacopy=off \
    overlay /newroot || die "cannot mount the overlay root"
# The guest kernel's modules where its modprobe (kmod) looks for them.
mkdir -p /newroot/lib/modules/@VERSION@
mount -o bind /lib/modules/@VERSION@ /newroot/lib/modules/@VERSION@
mkdir -p /newroot@JOB_MOUNT@
mount -o bind /job /newroot@JOB_MOUNT@ || die "cannot mount the job share"
echo "boot $(cut -d' ' -f1 /proc/uptime)" >> /job/boots
for fs in dev proc sys; do mount --move /$fs /newroot/$fs; done
exec switch_root /newroot /lib/systemd/systemd
"""

KERNEL_APPEND = "systemd.show_status=0 systemd.log_target=console systemd.log_level=warning"


def make_disk(path, upper, size_mb=DISK_MB):
    """A sparse ext4 image at ``path`` whose ``upper/`` holds a copy of
    the directory ``upper`` (owned by root), and an empty ``work/``."""
    staging = path + ".staging"
    subprocess.run(["rm", "-rf", staging], check=True)
    os.makedirs(os.path.join(staging, "work"))
    subprocess.run(["cp", "-a", upper, os.path.join(staging, "upper")], check=True)
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-L", "ipsec-vm", "-d", staging, path],
                   check=True, capture_output=True)
    subprocess.run(["rm", "-rf", staging], check=True)
    return path


def boot(job_dir, disk, timeout, memory_mb=vm.DEFAULT_MEMORY_MB, cpus=vm.DEFAULT_CPUS, image=None,
         modules=()):
    """Boot the VM on ``disk`` until it powers off; returns a vm.Result
    (returncode: qemu's; console: the serial console of every boot)."""
    image = image or vm.default_image()
    job_dir = os.path.abspath(job_dir)
    os.makedirs(os.path.join(job_dir, ".vm"), exist_ok=True)
    extra = " ".join(shlex.quote(m) for m in tuple(vm.DEFAULT_MODULES) + tuple(modules))
    stage2 = (STAGE2.replace("@MODULES@", shlex.quote("/host" + image.modules_base))
              .replace("@EXTRA_MODULES@", extra)
              .replace("@VERSION@", image.version)
              .replace("@JOB_MOUNT@", JOB_MOUNT))
    vm._write(os.path.join(job_dir, ".vm", "stage2.sh"), stage2)
    console_file = os.path.join(job_dir, ".vm", "console.log")
    cmd = vm.qemu_command(image, job_dir, memory_mb, cpus, console_file, append=KERNEL_APPEND,
                          disk=disk, reboot=True)
    vm._write(os.path.join(job_dir, ".vm", "qemu.argv"), shlex.join(cmd) + "\n")
    started = time.monotonic()
    timed_out = False
    with open(os.path.join(job_dir, ".vm", "qemu.log"), "wb") as qemu_log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT,
                                preexec_fn=vm._pdeathsig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    console = vm._read(console_file) + vm._read(os.path.join(job_dir, ".vm", "qemu.log"))
    return vm.Result(None if timed_out else proc.returncode, "", "", console=console,
                     elapsed=time.monotonic() - started, timed_out=timed_out, job_dir=job_dir, where="vm",
                     timings={"wall": round(time.monotonic() - started, 1)}, root_mode="systemd")
