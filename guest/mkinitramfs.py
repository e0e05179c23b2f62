#!/usr/bin/env python3
"""Write a newc cpio initramfs whose /init is the given static binary.

Written directly (no cpio tool, no root needed for the device node), so the
image is byte-for-byte reproducible from the binary.
"""
import argparse
import stat
import sys


def _entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    namez = name.encode() + b"\0"
    fields = [
        0,  # inode: 0 is fine for an initramfs without hard links
        mode,
        0, 0,  # uid, gid
        1,  # nlink
        0,  # mtime: fixed for reproducibility
        len(data),
        0, 0,  # dev major/minor
        rdev[0], rdev[1],
        len(namez),
        0,  # check
    ]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + namez
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def build(init_binary: bytes) -> bytes:
    image = b"".join([
        _entry("dev", stat.S_IFDIR | 0o755),
        _entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        _entry("proc", stat.S_IFDIR | 0o555),
        _entry("init", stat.S_IFREG | 0o755, init_binary),
        _entry("TRAILER!!!", 0),
    ])
    return image + b"\0" * (-len(image) % 512)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("init", help="static executable to install as /init")
    parser.add_argument("output", help="initramfs file to write")
    args = parser.parse_args()
    with open(args.init, "rb") as f:
        image = build(f.read())
    with open(args.output, "wb") as f:
        f.write(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
