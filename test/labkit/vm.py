"""Throwaway qemu VMs that run a script on Debian's own kernel.

The machines this project is developed on run a kernel without ESP, so a
Child SA cannot be installed there (IKE works). Debian's distribution kernel
has ESP; this module boots it in qemu (software emulation, TCG: /dev/kvm is
not usable here) with the host's root filesystem shared read-only over 9p,
and runs a shell script (or an argv) inside, in a chroot that looks like the
host: same binaries, same /work/main, same virtualenv.

    from labkit import vm
    result = vm.run_in_vm("ip xfrm state; ipsec --version", timeout=120)
    assert result.returncode == 0, result.describe()
    print(result.stdout)

    vm.host_has_esp()      # can this kernel install ESP states at all?
    vm.run(script)         # directly when it can, in a VM otherwise

How it works
- ``build()`` prepares, once per kernel version, a cache directory
  (``/var/cache/ipsec-formula-vm/<version>/``, outside the git tree;
  ``$IPSEC_VM_CACHE`` overrides): the kernel of ``linux-image-<version>``
  (``apt-get download`` + ``dpkg -x``; the version is the one
  ``linux-image-amd64`` depends on), decompressed once to ``vmlinux`` so
  qemu boots it through its PVH entry (the emulated CPU would need ~3 s to
  unpack the XZ bzImage at every boot); the networking/crypto/virtio part
  of its module tree (KEEP_MODULES plus dependencies) with ``depmod -b``
  run on it; and a small initramfs: static busybox, the modules needed to
  reach the 9p shares, and the stage-1 ``/init``. Missing Debian packages
  (DEBIAN_PACKAGES) are installed with apt-get first. A file lock makes
  concurrent builds safe; the build is renamed into place when complete.
- ``run_in_vm()`` writes the script and a generated stage-2 init into a job
  directory and boots ``qemu-system-x86_64 -accel tcg`` with two 9p shares
  (``hostroot``: the host's ``/``, read-only; ``job``: the job directory,
  writable) and no network device at all, so traffic only flows between
  the namespaces the script creates inside. Stage 1 (initramfs) loads the
  virtio/9p modules and mounts both shares, then runs stage 2 from the job
  share, which bind-mounts the cached module tree on the initramfs'
  ``/lib/modules`` (the kernel's module autoloader runs ``/sbin/modprobe``
  in the initramfs root, not in the chroot: templates such as
  ``rfc4106(gcm(aes))`` are then found via ``modules.alias``); builds a
  writable root (default: overlayfs, a tmpfs upper over the read-only host
  root, so every path is writable and writes stay in the VM's RAM; or
  ``root_mode="tmpfs"``: the read-only root with tmpfs over TMPFS_DIRS);
  mounts proc, sys, devtmpfs, devpts, /dev/shm and a fresh /run; mounts the
  job share at the job directory's own host path; sets the hostname and
  loopback up; chroots and runs the script with a clean environment,
  stdout/stderr/exit code going to the job share; then ``poweroff -f``.
- qemu is killed on timeout, when the calling process dies
  (PR_SET_PDEATHSIG) and in every error path: no qemu is left behind.

Command line (from test/): ``python -m labkit.vm [--build] 'shell command'``.
"""

import ctypes
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

CACHE_ROOT = os.environ.get("IPSEC_VM_CACHE", "/var/cache/ipsec-formula-vm")
# Debian packages the harness needs on the host (installed when missing).
DEBIAN_PACKAGES = ("qemu-system-x86", "busybox-static", "kmod", "cpio")
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
# Bump when the layout of a cached build changes (forces a rebuild).
BUILD_FORMAT = 4

# The part of the kernel's module tree the cache keeps (paths under
# kernel/, a trailing / means the whole directory), plus whatever those
# depend on. Dropping hardware drivers and sound makes modules.dep/.alias
# ~20x smaller, and busybox modprobe, which the kernel runs for every
# autoload (a dozen per new ESP algorithm), ~5x faster under emulation.
KEEP_MODULES = (
    "arch/", "block/", "crypto/", "lib/", "mm/", "net/", "virt/",
    "fs/9p/", "fs/netfs/", "fs/fscache/", "fs/overlayfs/", "fs/fuse/", "fs/nls/", "fs/configfs/",
    "fs/binfmt_misc.ko",
    # The systemd VM's persistent disk (boot_systemd) and what systemd loads.
    "fs/ext4/", "fs/jbd2/", "fs/mbcache.ko", "fs/autofs/",
    "drivers/virtio/", "drivers/char/hw_random/",
    "drivers/block/loop.ko", "drivers/block/brd.ko", "drivers/block/virtio_blk.ko",
    "drivers/net/bonding/", "drivers/net/ipvlan/", "drivers/net/team/", "drivers/net/vxlan/",
    "drivers/net/wireguard/", "drivers/net/dummy.ko", "drivers/net/veth.ko", "drivers/net/macvlan.ko",
    "drivers/net/macvtap.ko", "drivers/net/tap.ko", "drivers/net/tun.ko", "drivers/net/geneve.ko",
    "drivers/net/vrf.ko", "drivers/net/ifb.ko", "drivers/net/macsec.ko", "drivers/net/nlmon.ko",
    "drivers/net/virtio_net.ko", "drivers/net/net_failover.ko", "drivers/net/eql.ko",
    "drivers/net/gtp.ko",
)

# Loaded by stage 1 (from the initramfs) to reach the shares.
BOOT_MODULES = ("virtio_pci", "virtio_mmio", "virtio_rng", "9pnet_virtio", "9p", "overlay")
# Loaded by stage 2 (from the full tree); everything else autoloads.
DEFAULT_MODULES = ("veth", "dummy", "xfrm_user", "af_key", "esp4", "esp6", "xfrm_interface",
                   "gcm", "ghash_clmulni_intel", "ctr", "seqiv", "echainiv", "authenc", "drbg")

DEFAULT_MEMORY_MB = 3072  # a Salt master and three minions fit; host RAM is used lazily
# Measured on a 2-core host: one vCPU boots and runs the ESP proof faster
# than two (the second vCPU thread competes with the first and with qemu's
# 9p I/O thread). Leave one host core to qemu itself.
DEFAULT_CPUS = max(1, min(4, (os.cpu_count() or 1) - 1))
DEFAULT_TIMEOUT = 300
HOSTNAME = "ipsec-vm"
MSIZE = 512000  # 9p message size: fewer round trips for reads
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KERNEL_CMDLINE = (
    "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init "
    # Boot-time crypto self-tests are slow under emulation.
    "cryptomgr.notests "
    "mitigations=off random.trust_cpu=on "
    # TCG: a TSC calibrated while the host is busy can run the guest clock
    # several times too fast (seen: 73 s of uptime in 16 s); HPET cannot.
    "clocksource=hpet "
    "i8042.noaux i8042.nokbd i8042.nopnp 8250.nr_uarts=1 "
    "systemd.show_status=0"
)


class VMError(RuntimeError):
    pass


# --------------------------------------------------------------- helpers

def _sh(cmd, check=True, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(cmd, check=False, **kwargs)
    if check and result.returncode != 0:
        raise VMError("{} failed ({}): {}{}".format(
            shlex.join(cmd), result.returncode, result.stdout or "", result.stderr or ""))
    return result


def _installed(package):
    result = _sh(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def _apt_env():
    env = dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env


_apt_updated = False


def _apt_update():
    global _apt_updated
    if not _apt_updated:
        _sh(["apt-get", "update", "-q"], env=_apt_env())
        _apt_updated = True


def ensure_packages(packages=DEBIAN_PACKAGES):
    """Install the Debian packages that are missing (apt-get; needs root).
    Returns the list that was installed."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return []
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing
    if _sh(cmd, check=False, env=_apt_env()).returncode != 0:
        _apt_update()  # a fresh machine may have no (or stale) package lists
        _sh(cmd, env=_apt_env())
    return missing


def kernel_version():
    """The Debian kernel to boot, e.g. ``6.1.0-57-amd64``: $IPSEC_VM_KERNEL,
    else the one ``linux-image-amd64`` depends on, else the newest build in
    the cache."""
    wanted = os.environ.get("IPSEC_VM_KERNEL")
    if wanted:
        return wanted
    for attempt in range(2):
        out = _sh(["apt-cache", "depends", "linux-image-amd64"], check=False).stdout
        found = re.findall(r"Depends:\s*linux-image-(\d\S*-amd64)\b", out)
        if found:
            return found[0]
        if attempt == 0:
            try:
                _apt_update()
            except VMError:
                break
    cached = sorted(_cached_versions(), key=_version_key)
    if cached:
        return cached[-1]
    raise VMError("cannot tell which Debian kernel to use (apt-cache depends linux-image-amd64 "
                  "found nothing); set IPSEC_VM_KERNEL")


def _version_key(version):
    return [int(part) if part.isdigit() else part for part in re.split(r"[.-]", version)]


def _cached_versions():
    try:
        names = os.listdir(CACHE_ROOT)
    except FileNotFoundError:
        return []
    return [n for n in names if Image.load(os.path.join(CACHE_ROOT, n)) is not None]


# ------------------------------------------------------------------ build

class Image:
    """A cached, ready-to-boot build for one kernel version."""

    def __init__(self, directory, info):
        self.directory = directory
        self.version = info["version"]
        self.info = info
        self.kernel = os.path.join(directory, "vmlinuz")
        # The decompressed kernel, booted through its PVH entry: saves the
        # ~3 s the emulated CPU needs to unpack the XZ-compressed bzImage.
        self.vmlinux = os.path.join(directory, "vmlinux")
        self.initrd = os.path.join(directory, "initrd.img")
        self.modules_base = os.path.join(directory, "lib", "modules")

    @classmethod
    def load(cls, directory):
        try:
            with open(os.path.join(directory, "build.json"), encoding="utf-8") as handle:
                info = json.load(handle)
        except (OSError, ValueError):
            return None
        image = cls(directory, info)
        complete = (info.get("format") == BUILD_FORMAT and os.path.isfile(image.kernel)
                    and os.path.isfile(image.initrd)
                    and os.path.isfile(os.path.join(image.modules_base, image.version, "modules.dep")))
        return image if complete else None

    @property
    def boot_kernel(self):
        return self.vmlinux if os.path.isfile(self.vmlinux) else self.kernel

    def __repr__(self):
        return "<vm.Image {} at {}>".format(self.version, self.directory)


STAGE1 = r"""#!/bin/sh
# stage 1 (initramfs): reach the 9p shares, then run the job's stage 2.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
die() { echo "vm-init: $*" >/dev/console; poweroff -f; reboot -f; }
for m in $(cat /etc/boot-modules); do modprobe "$m" 2>/dev/null; done
mkdir -p /host /job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=@MSIZE@,cache=loose,ro hostroot /host \
    || die "cannot mount the host root (9p tag hostroot)"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=@MSIZE@ job /job \
    || die "cannot mount the job share (9p tag job)"
[ -f /job/.vm/stage2.sh ] || die "no /job/.vm/stage2.sh"
exec /bin/sh /job/.vm/stage2.sh
""".replace("@MSIZE@", str(MSIZE))


def _read_deps(tree):
    deps = {}
    with open(os.path.join(tree, "modules.dep"), encoding="utf-8") as handle:
        for line in handle:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
    return deps


def _closure(deps, paths):
    wanted, todo = [], list(paths)
    while todo:
        path = todo.pop()
        if path not in wanted:
            wanted.append(path)
            todo.extend(deps[path])
    return wanted


def _module_closure(tree, names):
    """Module files (relative to the tree) for names, with their dependencies."""
    deps = _read_deps(tree)
    by_name = {os.path.basename(path)[:-3].replace("-", "_"): path for path in deps}
    return _closure(deps, [by_name[n.replace("-", "_")] for n in names])


def _prune_tree(full, pruned, keep=KEEP_MODULES):
    """Move the kept modules (and their dependencies) of tree full to pruned."""
    deps = _read_deps(full)
    prefixes = tuple("kernel/" + k for k in keep)
    kept = _closure(deps, [p for p in deps if p.startswith(prefixes)])
    for rel in kept:
        os.makedirs(os.path.dirname(os.path.join(pruned, rel)), exist_ok=True)
        os.rename(os.path.join(full, rel), os.path.join(pruned, rel))
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy2(os.path.join(full, name), os.path.join(pruned, name))
    return len(kept), len(deps)


def _has_pvh_note(elf):
    """True for an x86-64 ELF kernel with XEN_ELFNOTE_PHYS32_ENTRY (qemu
    boots such a vmlinux directly)."""
    import struct
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + index * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def _extract_vmlinux(bzimage, out_file):
    """Decompress the kernel payload of a bzImage (XZ or gzip). Returns True
    when out_file holds a PVH-bootable ELF."""
    import lzma
    import zlib
    with open(bzimage, "rb") as handle:
        data = handle.read()
    candidates = []
    for magic, make in ((b"\xfd7zXZ\x00", lzma.LZMADecompressor),
                        (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))):
        pos = data.find(magic)
        while pos != -1 and len(candidates) < 8:
            candidates.append((pos, make))
            pos = data.find(magic, pos + 1)
    for pos, make in sorted(candidates, key=lambda c: c[0]):
        try:
            elf = make().decompress(data[pos:])
        except (lzma.LZMAError, zlib.error, EOFError):
            continue
        if _has_pvh_note(elf):
            with open(out_file, "wb") as handle:
                handle.write(elf)
            return True
    return False


def _make_initramfs(version, tree, out_file, workdir):
    root = os.path.join(workdir, "initramfs")
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "host", "job",
                "tmp", "run", "lib/modules/" + version):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    applets = _sh([BUSYBOX, "--list-full"]).stdout.split()
    for applet in applets:
        target = os.path.join(root, applet)
        if not os.path.lexists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink("/bin/busybox", target)
    with open(os.path.join(root, "init"), "w", encoding="utf-8") as handle:
        handle.write(STAGE1)
    os.chmod(os.path.join(root, "init"), 0o755)
    with open(os.path.join(root, "etc", "boot-modules"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(BOOT_MODULES) + "\n")
    mod_root = os.path.join(root, "lib", "modules", version)
    for rel in _module_closure(tree, BOOT_MODULES):
        os.makedirs(os.path.dirname(os.path.join(mod_root, rel)), exist_ok=True)
        shutil.copy2(os.path.join(tree, rel), os.path.join(mod_root, rel))
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy2(os.path.join(tree, name), os.path.join(mod_root, name))
    _sh(["depmod", "-b", root, version])
    files = _sh(["find", ".", "-mindepth", "1"], cwd=root).stdout
    cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--owner", "0:0"], cwd=root,
                          input=files.encode(), capture_output=True, check=False)
    if cpio.returncode != 0:
        raise VMError("cpio failed: " + cpio.stderr.decode(errors="replace"))
    with open(out_file, "wb") as handle:
        handle.write(cpio.stdout)


_default_image = None


def default_image():
    """build() once per process (later calls skip the apt/dpkg queries)."""
    global _default_image
    if _default_image is None or Image.load(_default_image.directory) is None:
        _default_image = build()
    return _default_image


def build(version=None, force=False, log=None):
    """Return the cached Image for version (default: kernel_version()),
    building it first when missing or incomplete. Safe to call from several
    processes at once (file lock). log: optional callable for progress."""
    say = log or (lambda message: None)
    ensure_packages()
    version = version or kernel_version()
    directory = os.path.join(CACHE_ROOT, version)
    image = None if force else Image.load(directory)
    if image:
        return image
    os.makedirs(CACHE_ROOT, exist_ok=True)
    with open(os.path.join(CACHE_ROOT, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        image = None if force else Image.load(directory)
        if image:
            return image
        started = time.monotonic()
        for name in os.listdir(CACHE_ROOT):  # left by a build that was killed
            if name.startswith((".build-", ".old-")):
                shutil.rmtree(os.path.join(CACHE_ROOT, name), ignore_errors=True)
        work = tempfile.mkdtemp(prefix=".build-{}-".format(version), dir=CACHE_ROOT)
        try:
            # (apt-get download notes that it runs unsandboxed as root: harmless.)
            package = "linux-image-" + version
            say("downloading " + package)
            _sh(["apt-get", "download", "-q", package], cwd=work, env=_apt_env())
            debs = [n for n in os.listdir(work) if n.endswith(".deb")]
            if len(debs) != 1:
                raise VMError("apt-get download {} gave {}".format(package, debs))
            deb = os.path.join(work, debs[0])
            package_version = _sh(["dpkg-deb", "-f", deb, "Version"]).stdout.strip()
            unpacked = os.path.join(work, "unpacked")
            say("unpacking " + debs[0])
            _sh(["dpkg", "-x", deb, unpacked])
            out = os.path.join(work, "out")
            os.makedirs(os.path.join(out, "lib", "modules"))
            for usr in ("", "usr"):  # the module tree's place differs before/after usrmerge
                if os.path.isdir(os.path.join(unpacked, usr, "lib", "modules", version)):
                    full_base = os.path.join(unpacked, usr)
                    break
            else:
                raise VMError("no lib/modules/{} in {}".format(version, debs[0]))
            say("depmod (full tree)")
            _sh(["depmod", "-b", full_base, version])
            kept, total = _prune_tree(os.path.join(full_base, "lib", "modules", version),
                                      os.path.join(out, "lib", "modules", version))
            say("kept {} of {} modules".format(kept, total))
            os.rename(os.path.join(unpacked, "boot", "vmlinuz-" + version), os.path.join(out, "vmlinuz"))
            os.rename(os.path.join(unpacked, "boot", "config-" + version), os.path.join(out, "config"))
            say("vmlinux")
            pvh = _extract_vmlinux(os.path.join(out, "vmlinuz"), os.path.join(out, "vmlinux"))
            say("depmod")
            _sh(["depmod", "-b", out, version])
            tree = os.path.join(out, "lib", "modules", version)
            say("initramfs")
            _make_initramfs(version, tree, os.path.join(out, "initrd.img"), work)
            info = {
                "format": BUILD_FORMAT,
                "version": version,
                "package": package,
                "package_version": package_version,
                "pvh": pvh,
                "modules_kept": kept,
                "modules_total": total,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - started, 1),
            }
            with open(os.path.join(out, "build.json"), "w", encoding="utf-8") as handle:
                json.dump(info, handle, indent=1)
            if os.path.exists(directory):  # incomplete, or an older format
                old = os.path.join(CACHE_ROOT, ".old-{}-{}".format(version, os.getpid()))
                os.rename(directory, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(out, directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        image = Image.load(directory)
        if image is None:
            raise VMError("build of {} in {} is incomplete".format(version, directory))
        return image


# ---------------------------------------------------------------- ESP probe

_esp_probe = None


def host_has_esp():
    """True when the running kernel can install an ESP state (AES-GCM, the
    formula's default): tried in a scratch network namespace, removed again."""
    global _esp_probe
    if _esp_probe is None:
        # ipft-<pid>-...: netns.sweep_stale() removes it if this process dies.
        name = "ipft-{}-espprobe".format(os.getpid())
        if _sh(["ip", "netns", "add", name], check=False).returncode != 0:
            _esp_probe = False
            return False
        try:
            result = _sh(["ip", "-n", name, "xfrm", "state", "add",
                          "src", "198.51.100.1", "dst", "198.51.100.2", "proto", "esp",
                          "spi", "0x1000", "reqid", "1", "mode", "tunnel",
                          "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20, "128"], check=False)
            _esp_probe = result.returncode == 0
        finally:
            _sh(["ip", "netns", "del", name], check=False)
    return _esp_probe


# -------------------------------------------------------------------- run

class Result:
    """What a script in the VM (or on the host) left behind."""

    def __init__(self, returncode, stdout, stderr, console="", elapsed=0.0, timed_out=False,
                 job_dir=None, where="vm", timings=None, root_mode=None):
        self.returncode = returncode  # None: the script did not finish
        self.stdout = stdout
        self.stderr = stderr
        self.console = console
        self.elapsed = elapsed
        self.timed_out = timed_out
        self.job_dir = job_dir
        self.where = where
        self.timings = timings or {}
        self.root_mode = root_mode

    @property
    def ok(self):
        return self.returncode == 0

    def describe(self, tail=4000):
        return ("where={} returncode={} timed_out={} elapsed={:.1f}s timings={}\n"
                "--- stdout\n{}\n--- stderr\n{}\n--- console\n{}").format(
            self.where, self.returncode, self.timed_out, self.elapsed, self.timings,
            self.stdout[-tail:], self.stderr[-tail:], self.console[-tail:])

    def check(self):
        if not self.ok:
            raise VMError("script failed\n" + self.describe())
        return self

    def __repr__(self):
        return "<vm.Result {} rc={} {:.1f}s>".format(self.where, self.returncode, self.elapsed)


STAGE2 = r"""# stage 2 (generated for this job, runs in the initramfs root)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
log() { echo "vm-init: $*" >/dev/console; }
up() { cut -d' ' -f1 /proc/uptime; }
T_STAGE2=$(up)
JOB=@JOB@
R=/newroot
mount -o bind @MODULES@ /lib/modules || log "cannot bind the module tree"
modprobe -a @EXTRA_MODULES@ || log "modprobe -a @EXTRA_MODULES@ failed"
mkdir -p /rw $R
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
MODE=overlay
OVL=lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work,xino=off,index=off,metacopy=off
if [ @ROOT_MODE@ = overlay ] && mount -t overlay -o $OVL overlay $R 2>/dev/null; then
    :
else
    MODE=tmpfs
    mount -o bind /host $R
    for d in @TMPFS_DIRS@; do
        [ -d "$R$d" ] || continue
        mount -t tmpfs -o mode=0755 tmpfs "$R$d" || log "tmpfs on $d failed"
    done
    chmod 1777 $R/tmp
    mkdir -p $R/var/tmp $R/var/lib $R/var/cache $R/var/log $R/run/lock
    chmod 1777 $R/var/tmp
    ln -s /run $R/var/run; ln -s /run/lock $R/var/lock
fi
echo $MODE > /job/.vm/root_mode
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
[ $MODE = overlay ] && mount -t tmpfs -o mode=0755 run $R/run && mkdir -p $R/run/lock
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mkdir -p "$R$JOB" && mount -o bind /job "$R$JOB" || log "cannot mount the job share at $JOB"
hostname @HOSTNAME@
ip link set lo up
echo "stage2=$T_STAGE2 ready=$(up)" > /job/.vm/timings
chroot $R /usr/bin/env -i /bin/sh "$JOB/.vm/run.sh" </dev/null >/job/stdout 2>/job/stderr
echo $? > /job/rc
echo "stage2=$T_STAGE2 ready=$(grep -o 'ready=[0-9.]*' /job/.vm/timings | cut -d= -f2) done=$(up)" > /job/.vm/timings
sync
poweroff -f
reboot -f
"""

RUN_SH = """# runs inside the chroot
. {env}
cd {cwd} || exit 125
exec /bin/sh {script}
"""

# root_mode="tmpfs" only. Not /root: the project's virtualenv python links
# to /root/.pyenv; HOME is /tmp instead.
TMPFS_DIRS = ("/tmp", "/run", "/var", "/home", "/srv", "/mnt", "/etc/ipsec.d", "/etc/salt")


def _pdeathsig():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def qemu_command(image, job_dir, memory_mb=DEFAULT_MEMORY_MB, cpus=DEFAULT_CPUS, console_file=None,
                 machine="pc", append="", cpu="max", disk=None, reboot=False):
    """The qemu-system-x86_64 argv for a job directory (no network device).
    disk: a raw image attached as virtio disk /dev/vda; reboot: a guest
    reboot restarts the machine (default: qemu exits)."""
    cmd = [
        QEMU, "-name", "ipsec-formula-vm", "-nodefaults", "-no-user-config",
        "-machine", machine, "-accel", "tcg,thread=multi,tb-size=512" if cpus > 1 else "tcg,tb-size=512",
        "-cpu", cpu, "-smp", str(cpus), "-m", str(memory_mb),
        "-kernel", image.boot_kernel, "-initrd", image.initrd,
        "-append", (KERNEL_CMDLINE + " " + append).strip(),
        "-display", "none", "-monitor", "none",
        "-serial", "file:" + console_file if console_file else "null",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", "local,path={},mount_tag=job,security_model=none".format(job_dir.replace(",", ",,")),
        "-device", "virtio-rng-pci",
        "-nic", "none",
    ]
    if not reboot:
        cmd.append("-no-reboot")
    if disk:
        cmd += ["-drive", "file={},if=virtio,format=raw,cache=writeback".format(disk.replace(",", ",,"))]
    return cmd


def _write(path, text, mode=0o644):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def run_in_vm(script, timeout=DEFAULT_TIMEOUT, memory_mb=DEFAULT_MEMORY_MB, cpus=DEFAULT_CPUS,
              env=None, cwd="/", job_dir=None, files=None, modules=(), root_mode="overlay",
              image=None, check=False, machine="pc", cpu="max"):
    """Boot a throwaway VM, run script, power off; return a Result.

    script: shell script text (run with /bin/sh) or an argv list.
    env: extra environment (the script starts from a clean one: PATH, HOME,
      LANG, IPSEC_VM=1, IPSEC_VM_JOB=<job dir>, PYTHONDONTWRITEBYTECODE=1).
    cwd: working directory inside the VM (host paths are the same there).
    job_dir: directory shared writable with the VM, at the same path inside
      it; results the script writes there stay after the call. Default: a
      temporary directory, removed afterwards.
    files: {relative name: text} written into the job dir before boot.
    modules: extra kernel modules to load (most autoload anyway).
    root_mode: "overlay" (whole root writable, writes go to RAM) or "tmpfs"
      (read-only root, tmpfs over TMPFS_DIRS).
    timeout: seconds for the whole VM (boot included); qemu is killed after.
    check: raise VMError unless the script exited 0.
    """
    image = image or default_image()
    own_dir = job_dir is None
    job_dir = os.path.abspath(job_dir or tempfile.mkdtemp(prefix="ipsec-vm-"))
    os.makedirs(os.path.join(job_dir, ".vm"), exist_ok=True)
    for name in ("stdout", "stderr", "rc", ".vm/root_mode", ".vm/timings", ".vm/console.log"):
        if os.path.exists(os.path.join(job_dir, name)):
            os.unlink(os.path.join(job_dir, name))
    for name, text in (files or {}).items():
        path = os.path.join(job_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, text)
    if not isinstance(script, str):
        script = "exec " + shlex.join([str(arg) for arg in script]) + "\n"
    full_env = {
        "PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", "USER": "root",
        "LOGNAME": "root", "IPSEC_VM": "1", "IPSEC_VM_JOB": job_dir, "PYTHONDONTWRITEBYTECODE": "1",
    }
    full_env.update(env or {})
    if root_mode == "tmpfs" and "HOME" not in (env or {}):
        full_env["HOME"] = "/tmp"
    _write(os.path.join(job_dir, ".vm", "script.sh"), script)
    _write(os.path.join(job_dir, ".vm", "env.sh"),
           "".join("export {}={}\n".format(k, shlex.quote(str(v))) for k, v in full_env.items()))
    _write(os.path.join(job_dir, ".vm", "run.sh"), RUN_SH.format(
        env=shlex.quote(job_dir + "/.vm/env.sh"), cwd=shlex.quote(cwd),
        script=shlex.quote(job_dir + "/.vm/script.sh")))
    extra = [m for m in tuple(DEFAULT_MODULES) + tuple(modules)]
    stage2 = (STAGE2.replace("@JOB@", shlex.quote(job_dir))
              .replace("@MODULES@", shlex.quote("/host" + image.modules_base))
              .replace("@EXTRA_MODULES@", " ".join(shlex.quote(m) for m in extra))
              .replace("@ROOT_MODE@", shlex.quote(root_mode))
              .replace("@TMPFS_DIRS@", " ".join(TMPFS_DIRS))
              .replace("@HOSTNAME@", HOSTNAME))
    _write(os.path.join(job_dir, ".vm", "stage2.sh"), stage2)
    console_file = os.path.join(job_dir, ".vm", "console.log")
    cmd = qemu_command(image, job_dir, memory_mb, cpus, console_file, machine=machine, cpu=cpu)
    _write(os.path.join(job_dir, ".vm", "qemu.argv"), shlex.join(cmd) + "\n")

    started = time.monotonic()
    timed_out = False
    usage = None
    with open(os.path.join(job_dir, ".vm", "qemu.log"), "wb") as qemu_log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT,
                                preexec_fn=_pdeathsig)
    try:
        # os.wait4 instead of Popen.wait: it also reports qemu's peak RSS.
        while usage is None:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode, usage = os.waitstatus_to_exitcode(status), rusage
            elif time.monotonic() - started > timeout:
                timed_out = True
                break
            else:
                time.sleep(0.05)
    finally:
        if usage is None:  # timeout, or the caller was interrupted
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started

    rc_text = _read(os.path.join(job_dir, "rc")).strip()
    timings = {}
    for part in _read(os.path.join(job_dir, ".vm", "timings")).split():
        key, _, value = part.partition("=")
        try:
            timings[key] = float(value)
        except ValueError:
            pass
    timings["wall"] = round(elapsed, 2)
    timings["qemu_maxrss_mb"] = round(usage.ru_maxrss / 1024)
    console = _read(console_file)
    qemu_text = _read(os.path.join(job_dir, ".vm", "qemu.log"))
    if qemu_text.strip():
        console += "\n--- qemu\n" + qemu_text
    result = Result(
        returncode=int(rc_text) if rc_text.lstrip("-").isdigit() and not timed_out else None,
        stdout=_read(os.path.join(job_dir, "stdout")),
        stderr=_read(os.path.join(job_dir, "stderr")),
        console=console, elapsed=elapsed, timed_out=timed_out,
        job_dir=None if own_dir else job_dir, where="vm", timings=timings,
        root_mode=_read(os.path.join(job_dir, ".vm", "root_mode")).strip() or None,
    )
    if own_dir:
        shutil.rmtree(job_dir, ignore_errors=True)
    if check:
        result.check()
    return result


def run_on_host(script, timeout=DEFAULT_TIMEOUT, env=None, cwd="/", job_dir=None, files=None,
                check=False, **_ignored):
    """The same contract as run_in_vm, run directly on this machine (for a
    kernel that has ESP). Namespaces the script makes are its own business."""
    own_dir = job_dir is None
    job_dir = os.path.abspath(job_dir or tempfile.mkdtemp(prefix="ipsec-vm-"))
    os.makedirs(job_dir, exist_ok=True)
    for name, text in (files or {}).items():
        path = os.path.join(job_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, text)
    if isinstance(script, str):
        argv = ["/bin/sh", "-c", script]
    else:
        argv = [str(arg) for arg in script]
    full_env = dict(os.environ)
    full_env.update({"IPSEC_VM": "0", "IPSEC_VM_JOB": job_dir, "PYTHONDONTWRITEBYTECODE": "1"})
    full_env.update(env or {})
    started = time.monotonic()
    timed_out = False
    proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    result = Result(None if timed_out else proc.returncode, out, err, elapsed=time.monotonic() - started,
                    timed_out=timed_out, job_dir=None if own_dir else job_dir, where="host")
    if own_dir:
        shutil.rmtree(job_dir, ignore_errors=True)
    if check:
        result.check()
    return result


def run(script, prefer_vm=None, **kwargs):
    """run_on_host when this kernel has ESP, run_in_vm otherwise.
    prefer_vm (or IPSEC_VM_FORCE=1) forces the VM."""
    if prefer_vm is None:
        prefer_vm = os.environ.get("IPSEC_VM_FORCE") == "1"
    if not prefer_vm and host_has_esp():
        for vm_only in ("cpus", "memory_mb"):
            kwargs.pop(vm_only, None)
        return run_on_host(script, **kwargs)
    return run_in_vm(script, **kwargs)


def main(argv=None):
    """python -m labkit.vm [--build] [--cpus N] [--memory MB] [--timeout S] [--] [script|argv...]"""
    import argparse
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--build", action="store_true", help="only build (or show) the cached image")
    parser.add_argument("--force", action="store_true", help="rebuild the image")
    parser.add_argument("--cpus", type=int, default=DEFAULT_CPUS)
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--root-mode", default="overlay", choices=("overlay", "tmpfs"))
    parser.add_argument("--machine", default="pc")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("command", nargs="*", help="a shell command line (one argument) or an argv")
    args = parser.parse_args(argv)
    started = time.monotonic()
    image = build(force=args.force, log=lambda m: print("build:", m, flush=True))
    print("image: {} ({:.1f}s) {}".format(image, time.monotonic() - started, image.info), flush=True)
    if args.build:
        return 0
    command = args.command
    script = command[0] if len(command) == 1 else (command or "uname -a")
    result = run_in_vm(script, timeout=args.timeout, memory_mb=args.memory, cpus=args.cpus,
                       root_mode=args.root_mode, image=image, machine=args.machine)
    print(result.stdout, end="")
    print(result.stderr, end="", flush=True)
    if args.verbose or not result.ok:
        print("--- console\n" + result.console)
    print("vm: rc={} timed_out={} root={} timings={}".format(
        result.returncode, result.timed_out, result.root_mode, result.timings))
    return result.returncode if result.returncode is not None else 124


if __name__ == "__main__":
    raise SystemExit(main())
