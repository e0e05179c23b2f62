"""The libvirt domain of a scenario's guest: the XML a libvirt run defines.

The same guest as a QMP run's (guest.py, vm.py): direct kernel boot of the
lab's kernel and initramfs, the workload's command line, the memory, vCPUs
and NUMA nodes, the chosen emulator, its serial console, and nothing else
(no disk, NIC, USB or balloon). What a libvirt 9.0 user cannot say in the
domain's own elements goes through <qemu:commandline>, as the README tells
users to: the switchover bandwidth as -global properties of QEMU's
migration object, and firmware directories for builds run from the cache.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .vm import ACCELS

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
MIB = 1 << 20
ET.register_namespace("qemu", QEMU_NS)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    emulator: Path
    kernel: Path
    initramfs: Path
    cmdline: str
    memory_mib: int = 512
    vcpus: int = 1
    numa_nodes_mib: tuple[int, ...] = ()
    machine: str = "q35"
    accel: str = "tcg"  # libvirt's domain type: "qemu" (TCG) or "kvm"
    qemu_args: tuple[str, ...] = ()  # <qemu:commandline> arguments, in order
    qemu_env: tuple[tuple[str, str], ...] = ()
    uuid: str | None = None
    firmware_dirs: tuple[Path, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.accel not in ACCELS:
            raise ValueError(f"accel {self.accel!r}: accepted {', '.join(ACCELS)}")
        if self.numa_nodes_mib and sum(self.numa_nodes_mib) != self.memory_mib:
            raise ValueError(f"NUMA nodes {self.numa_nodes_mib} do not add up to"
                             f" {self.memory_mib} MiB")


def applied_cap_mib_per_s(bytes_per_s: int) -> int:
    """The cap libvirt can apply nearest to @bytes_per_s: VIR_MIGRATE_PARAM_BANDWIDTH
    is whole MiB/s (libvirt multiplies by 2^20), and 0 would mean no cap."""
    return max(1, round(bytes_per_s / MIB))


def migration_globals(properties: dict[str, str]) -> tuple[str, ...]:
    """-global arguments that set QEMU's migration parameters at start,
    e.g. {"x-tcp-switchover-bandwidth": "on"}."""
    out: list[str] = []
    for name, value in properties.items():
        out += ["-global", f"migration.{name}={value}"]
    return tuple(out)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def domain_xml(spec: DomainSpec, emulator: Path | None = None) -> str:
    """The domain's XML; @emulator replaces the spec's (the destination's XML
    when the two hosts run different QEMUs)."""
    root = ET.Element("domain", {"type": "kvm" if spec.accel == "kvm" else "qemu"})
    _sub(root, "name", spec.name)
    if spec.uuid:
        _sub(root, "uuid", spec.uuid)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    os_ = _sub(root, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=spec.machine)
    _sub(os_, "kernel", str(spec.kernel))
    _sub(os_, "initrd", str(spec.initramfs))
    _sub(os_, "cmdline", spec.cmdline)
    # ACPI on, as QEMU's default (and a QMP run's guest); without it libvirt
    # 9.0 passes -no-acpi, which QEMU 9.0 and later no longer accept
    _sub(_sub(root, "features"), "acpi")
    if spec.accel == "kvm":
        _sub(root, "cpu", mode="host-passthrough")
    if spec.numa_nodes_mib:
        # vCPU i on node i % nodes, as a QMP run's (vm.py); nodes beyond the
        # vCPUs have memory only
        cpu = root.find("cpu")
        if cpu is None:
            cpu = _sub(root, "cpu")
        numa = _sub(cpu, "numa")
        nodes = len(spec.numa_nodes_mib)
        for node, size in enumerate(spec.numa_nodes_mib):
            cpus = ",".join(str(c) for c in range(node, spec.vcpus, nodes))
            attrs = {"id": str(node), "memory": str(size), "unit": "MiB"}
            if cpus:
                attrs["cpus"] = cpus
            _sub(numa, "cell", **attrs)
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "destroy")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    _sub(devices, "emulator", str(emulator or spec.emulator))
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    args = [arg for d in spec.firmware_dirs for arg in ("-L", str(d))] + list(spec.qemu_args)
    if args or spec.qemu_env:
        command = _sub(root, f"{{{QEMU_NS}}}commandline")
        for arg in args:
            _sub(command, f"{{{QEMU_NS}}}arg", value=arg)
        for name, value in spec.qemu_env:
            _sub(command, f"{{{QEMU_NS}}}env", name=name, value=value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
