"""The domain XML of a libvirt run and the values it gives libvirt's API."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from miglab.libvirtdomain import (
    QEMU_NS,
    DomainSpec,
    applied_cap_mib_per_s,
    domain_xml,
    migration_globals,
)

Q = f"{{{QEMU_NS}}}"


def spec(**kwargs: object) -> DomainSpec:
    values: dict = dict(name="miglab-guest", emulator=Path("/q/qemu-system-x86_64"),
                        kernel=Path("/k/vmlinuz"), initramfs=Path("/k/initramfs.cpio"),
                        cmdline="console=ttyS0 miglab.hot_mib=12")
    values.update(kwargs)
    return DomainSpec(**values)


def parsed(s: DomainSpec, **kwargs: object) -> ET.Element:
    return ET.fromstring(domain_xml(s, **kwargs))


def test_the_guest_is_the_qmp_runs_guest() -> None:
    root = parsed(spec(memory_mib=512, vcpus=2))
    assert root.get("type") == "qemu"  # TCG
    assert root.findtext("memory") == "512" and root.find("memory").get("unit") == "MiB"
    assert root.findtext("vcpu") == "2"
    assert root.findtext("os/kernel") == "/k/vmlinuz"
    assert root.findtext("os/initrd") == "/k/initramfs.cpio"
    assert root.findtext("os/cmdline") == "console=ttyS0 miglab.hot_mib=12"
    assert root.find("os/type").get("machine") == "q35"
    assert root.findtext("devices/emulator") == "/q/qemu-system-x86_64"
    # the console the workload reports on, and no device a QMP run's guest lacks
    assert root.find("devices/serial").get("type") == "pty"
    assert root.find("devices/console/target").get("type") == "serial"
    assert root.find("devices/controller").get("model") == "none"
    assert root.find("devices/memballoon").get("model") == "none"
    assert root.find("devices/disk") is None and root.find("devices/interface") is None
    # without <acpi/> libvirt 9.0 passes -no-acpi, which QEMU 9.0+ refuse
    assert root.find("features/acpi") is not None


def test_kvm_passes_the_host_cpu() -> None:
    root = parsed(spec(accel="kvm"))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_numa_cells_take_vcpus_round_robin() -> None:
    root = parsed(spec(memory_mib=512, vcpus=3, numa_nodes_mib=(128, 128, 256)))
    cells = root.findall("cpu/numa/cell")
    assert [(c.get("id"), c.get("cpus"), c.get("memory")) for c in cells] == [
        ("0", "0", "128"), ("1", "1", "128"), ("2", "2", "256")]
    root = parsed(spec(memory_mib=512, vcpus=1, numa_nodes_mib=(256, 256)))
    assert [c.get("cpus") for c in root.findall("cpu/numa/cell")] == ["0", None]


def test_numa_nodes_must_add_up() -> None:
    with pytest.raises(ValueError, match="do not add up"):
        spec(memory_mib=512, numa_nodes_mib=(128, 128))


def test_switchover_settings_go_through_qemu_commandline() -> None:
    args = migration_globals({"avail-switchover-bandwidth": "125000000",
                              "x-tcp-switchover-bandwidth": "on"})
    root = parsed(spec(qemu_args=args, firmware_dirs=(Path("/fw"),),
                       qemu_env=(("QEMU_MODULE_DIR", "/mods"),)))
    values = [a.get("value") for a in root.findall(f"{Q}commandline/{Q}arg")]
    assert values == ["-L", "/fw", "-global", "migration.avail-switchover-bandwidth=125000000",
                      "-global", "migration.x-tcp-switchover-bandwidth=on"]
    env = root.find(f"{Q}commandline/{Q}env")
    assert (env.get("name"), env.get("value")) == ("QEMU_MODULE_DIR", "/mods")
    # the namespace is declared as libvirt's parser wants it
    assert f'xmlns:qemu="{QEMU_NS}"' in domain_xml(spec(qemu_args=args))


def test_no_commandline_without_arguments() -> None:
    assert parsed(spec()).find(f"{Q}commandline") is None


def test_the_destination_may_run_another_emulator() -> None:
    root = parsed(spec(), emulator=Path("/other/qemu"))
    assert root.findtext("devices/emulator") == "/other/qemu"


@pytest.mark.parametrize("bytes_per_s,mib", [
    (8_000_000, 8),  # 7.63 MiB/s: the nearest whole MiB/s is 8
    (8 << 20, 8),
    (125_000_000, 119),  # 1 Gbit/s
    (100, 1),  # never 0: to libvirt that is no cap at all
])
def test_the_cap_libvirt_can_apply(bytes_per_s: int, mib: int) -> None:
    assert applied_cap_mib_per_s(bytes_per_s) == mib


def test_bad_accel_is_refused() -> None:
    with pytest.raises(ValueError, match="accepted tcg, kvm"):
        spec(accel="hvf")


def test_the_readme_gives_libvirt_users_the_xml_the_lab_runs() -> None:
    """The README's <qemu:commandline> for qemu-auto is what a libvirt run
    of the lab puts in its domain (libvirt.yaml's patched-qemu-auto)."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme[readme.index("<qemu:commandline>"):readme.index("</qemu:commandline>")]
    assert tuple(re.findall(r"<qemu:arg value='([^']*)'/>", block)) == \
        migration_globals({"x-tcp-switchover-bandwidth": "on"})
