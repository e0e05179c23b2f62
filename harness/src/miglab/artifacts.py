"""Where the things miglab runs come from: QEMU builds, guest kernel, initramfs.

All of them are built or fetched by the scripts in the repository's scripts/
directory into a cache outside git; this module only finds them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


class MissingArtifact(RuntimeError):
    """Something miglab needs has not been built or fetched yet."""


def cache_dir() -> Path:
    if "MIGLAB_CACHE" in os.environ:
        return Path(os.environ["MIGLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "miglab"


QEMU_FLAVOURS = ("stock", "patched")
UPSTREAM = "upstream"  # QEMU 10.0 from bookworm-backports, upstream's implementation


def _upstream_root() -> Path:
    return cache_dir() / "qemu-upstream" / "root"


def qemu_binary(choice: str) -> Path:
    """'stock', 'patched', 'upstream' or a path to a qemu-system-x86_64."""
    if choice == UPSTREAM:
        path = _upstream_root() / "usr" / "bin" / "qemu-system-x86_64"
        if not path.exists():
            raise MissingArtifact(f"upstream QEMU not fetched ({path}):"
                                  " run scripts/fetch-upstream-qemu")
        return path
    if choice in QEMU_FLAVOURS:
        path = cache_dir() / "qemu-7.2" / f"{choice}-build" / "qemu-system-x86_64"
        if not path.exists():
            raise MissingArtifact(f"{choice} QEMU not built ({path}): run scripts/build-qemu")
        return path
    path = Path(choice)
    if not path.exists():
        found = shutil.which(choice)
        if not found:
            raise MissingArtifact(
                f"--qemu {choice!r}: not 'stock', 'patched' or an existing binary")
        path = Path(found)
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
