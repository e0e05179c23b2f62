"""A scenario between two libvirt hosts given by URI (--src-uri, --dst-uri,
--migrate-address), as between two real hypervisors: here the lab's own two
hosts, each with its libvirtd and an sshd on its lab address, reached the
way remote hosts are, over qemu+ssh with a key made for the test. miglab
runs in the source host's network namespace (from there both lab addresses
are reachable, as both hosts are from an operator's machine); the source's
libvirtd reaches the destination's over ssh too (peer to peer)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import CAPPED_YAML

from miglab.libvirthost import LibvirtHost
from miglab.link import DST_ADDR, SRC_ADDR, Link, LinkConfig
from miglab.ownership import Record

MIGLAB = [sys.executable, "-m", "miglab.cli"]


def ssh_access(tmp_path: Path) -> tuple[Path, Path]:
    """A key made for the test, and an ssh command that uses it and leaves
    root's known_hosts alone (libvirt's URI parameter `command`)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    command = tmp_path / "ssh"
    command.write_text("#!/bin/sh\nexec ssh -F /dev/null -o UserKnownHostsFile=/dev/null"
                       " -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"
                       f" -o BatchMode=yes -o LogLevel=ERROR -i {key} \"$@\"\n")
    command.chmod(0o700)
    return authorized, command


def test_a_scenario_between_two_hosts_given_by_uri(tmp_path: Path, run_record: Record) -> None:
    authorized, command = ssh_access(tmp_path)

    def uri(address: str) -> str:
        return f"qemu+ssh://root@{address}/system?command={command}&no_tty=1"
    out = tmp_path / "result.json"
    with Link(LinkConfig(1_000_000_000), record=run_record) as link, \
            LibvirtHost("src", link.src_ns, SRC_ADDR, tmp_path / "hosts",
                        record=run_record) as src, \
            LibvirtHost("dst", link.dst_ns, DST_ADDR, tmp_path / "hosts",
                        record=run_record) as dst:
        src.start_sshd(authorized)
        dst.start_sshd(authorized)
        proc = subprocess.run(
            ["ip", "netns", "exec", link.src_ns, *MIGLAB, "run", "--via", "libvirt",
             "--src-uri", uri(SRC_ADDR), "--dst-uri", uri(DST_ADDR),
             "--migrate-address", DST_ADDR, "--qemu", "patched",
             "--scenario", str(CAPPED_YAML), "--switchover-bandwidth", "qemu-auto",
             "--hot-set", "12M", "--accel", "tcg", "--json", str(out)],
            capture_output=True, text=True, timeout=300)
        result = json.loads(out.read_text())
        # 3: passed, the guest seen paused longer than the limit (miglab --help)
        assert proc.returncode == (3 if result["paused_over_limit"] else 0), proc.stderr[-3000:]
        assert (result["status"], result["integrity"]) == ("completed", "ok")
        assert result["destination_alive"] is True
        assert result["via"] == "libvirt" and result["link_rate_bps"] is None
        assert result["libvirt"]["dst_uri"] == uri(DST_ADDR)
        assert result["switchover_bandwidth_source"] == "tcp", result["reasons"]
        # nothing of the run is left on either host: no domain, no storage pool
        for host in (src, dst):
            assert host.conn.listAllDomains() == [], host.name
            assert host.conn.listAllStoragePools() == [], host.name
