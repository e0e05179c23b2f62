"""Where the things miglab runs come from: QEMU builds, guest kernel, initramfs.

All of them are built or fetched by the scripts in the repository's scripts/
directory into a cache outside git; this module only finds them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from .errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[3]


class MissingArtifact(InputError):
    """Something miglab needs has not been built or fetched yet."""


def cache_dir() -> Path:
    if "MIGLAB_CACHE" in os.environ:
        return Path(os.environ["MIGLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "miglab"


class Build(NamedTuple):
    description: str
    binary: str  # its qemu-system-x86_64, relative to the cache directory
    made_by: str  # the script that builds or fetches it


UPSTREAM = "upstream"  # QEMU 10.0 from bookworm-backports, upstream's implementation
# Every QEMU build `--qemu NAME` names: the one list (help texts, errors and
# the lookup below all read it). Other names without a slash are commands
# on PATH; anything with a slash is a path.
BUILDS: dict[str, Build] = {
    "stock": Build("Debian 12's QEMU 7.2", "qemu-7.2/stock/build/qemu-system-x86_64",
                   "scripts/build-qemu"),
    "patched": Build("Debian 12's QEMU 7.2 with our patches",
                     "qemu-7.2/patched/build/qemu-system-x86_64", "scripts/build-qemu"),
    UPSTREAM: Build("QEMU 10.0 from bookworm-backports",
                    "qemu-upstream/root/usr/bin/qemu-system-x86_64",
                    "scripts/fetch-upstream-qemu"),
    "upstream-stock": Build("upstream QEMU 10.2.2 (Debian unstable's source)",
                            "qemu-10.2/upstream-stock/build/qemu-system-x86_64",
                            "scripts/build-qemu"),
    "upstream-patched": Build("upstream QEMU 10.2.2 with qemu-patches/upstream-10.2",
                              "qemu-10.2/upstream-patched/build/qemu-system-x86_64",
                              "scripts/build-qemu"),
}


def _upstream_root() -> Path:
    return cache_dir() / "qemu-upstream" / "root"


def build_binary(name: str) -> Path:
    """Where build @name's qemu-system-x86_64 is, made or not."""
    return cache_dir() / BUILDS[name].binary


def qemu_binary(choice: str) -> Path:
    """A build's name (BUILDS), a command on PATH, or a path (anything with a slash).

    A bare name is never taken from the current directory: `--qemu NAME`
    with ./NAME here and NAME on PATH runs the one on PATH, as a shell would.
    """
    if choice in BUILDS:
        path = build_binary(choice)
        if not path.exists():
            raise MissingArtifact(f"{choice} QEMU not built or fetched ({path}):"
                                  f" run {BUILDS[choice].made_by}")
        return path
    if "/" not in choice:
        # PATH's absolute entries only: an empty or relative entry would find
        # ./NAME, and miglab runs as root
        search = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep)
                  if os.path.isabs(d)]
        found = shutil.which(choice, path=os.pathsep.join(search))
        if not found:
            raise MissingArtifact(
                f"not a build ({', '.join(BUILDS)}) nor a command on PATH"
                f" (a file here needs a path, such as ./{choice})")
        return Path(found)
    path = Path(choice)
    if not path.exists():
        raise MissingArtifact(f"no such file {choice!r}")
    return path


def qemu_runtime(binary: Path) -> tuple[list[Path], dict[str, str]]:
    """Firmware directories (-L) and environment a binary needs to run from the cache.

    Our builds find their firmware themselves; the extracted upstream package
    must be pointed at its own data and modules, not the system's 7.2 ones.
    """
    root = _upstream_root()
    if root in binary.parents:
        return ([root / "usr/share/qemu", root / "usr/share/seabios"],
                {"QEMU_MODULE_DIR": str(root / "usr/lib/x86_64-linux-gnu/qemu")})
    return [], {}


def kernel() -> Path:
    path = cache_dir() / "kernel" / "vmlinuz"
    if not path.exists():
        raise MissingArtifact(f"guest kernel missing ({path}): run scripts/fetch-kernel")
    return path.resolve()


def initramfs() -> Path:
    candidates = [Path(os.environ["MIGLAB_INITRAMFS"])] if "MIGLAB_INITRAMFS" in os.environ else []
    candidates.append(REPO_ROOT / "build" / "guest" / "initramfs.cpio")
    for path in candidates:
        if path.exists():
            return path
    raise MissingArtifact(
        f"guest initramfs missing ({candidates[-1]}): run 'meson setup build && ninja -C build'")


def sshd() -> Path:
    """Debian's sshd, extracted (not installed) by scripts/setup: the lab's
    hosts run one each when a test reaches them as remote hosts."""
    path = cache_dir() / "openssh" / "usr" / "sbin" / "sshd"
    if not path.exists():
        raise MissingArtifact(f"sshd missing ({path}): run scripts/setup")
    return path
