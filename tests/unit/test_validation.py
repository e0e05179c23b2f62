"""Bad input is refused up front, naming the input and what is accepted.

Parse-level rules (scenario.py, units.py) and the machine's checks
(preflight.py) that need no root: binaries, outputs, host memory.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from miglab import artifacts, preflight, scenario, units


def refused(values: dict) -> str:
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.parse(values)
    return str(err.value)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "infinity", "1e999", "0",
                                  "-5", "86401", "soon"])
def test_timeout_is_finite_above_zero_and_at_most_a_day(text: str) -> None:
    message = refused({"timeout": text})
    assert message.startswith(f"--timeout {text!r}: expected a number of seconds above 0")


def test_timeouts_that_are_accepted() -> None:
    assert scenario.parse({"timeout": "1.5"}).timeout_s == 1.5
    assert scenario.parse({"timeout": "86400"}).timeout_s == 86400.0


@pytest.mark.parametrize("key", ["link-delay", "link-jitter", "link-loss"])
@pytest.mark.parametrize("text", ["nan", "inf", "-1ms", "1" * 40])
def test_link_numbers_are_finite(key: str, text: str) -> None:
    values = {key: text, "link-delay": "5ms"} if key == "link-jitter" else {key: text}
    assert refused(values).startswith(f"--{key} {text!r}: expected")


def test_link_delay_and_rate_have_upper_bounds() -> None:
    assert "from 0 to 60s" in refused({"link-delay": "61s"})
    assert "at most 1000gbit" in refused({"link-rate": "1001gbit"})


@pytest.mark.parametrize("key,text,accepted", [
    ("memory", "4194304G", "whole MiB from 128M to 4294967295M (2^32 - 1 MiB)"),
    ("memory", "64M", "whole MiB from 128M to 4294967295M (2^32 - 1 MiB)"),
    ("memory", "512.5M", "whole MiB from 128M to 4294967295M (2^32 - 1 MiB)"),
    ("hot-set", "5000000G", "whole MiB from 0M to 4294967295M (2^32 - 1 MiB)"),
    ("zero-set", "1.5M", "whole MiB from 0M to 4294967295M (2^32 - 1 MiB)"),
    ("dirty-rate", "5000000G", "whole MiB/s from 0 to 65536 (64G)"),
    ("dirty-rate", "65537M", "whole MiB/s from 0 to 65536 (64G)"),
    ("zero-rate", "100G/s", "whole MiB/s from 0 to 65536 (64G)"),
    ("zero-rate", "fast", "whole MiB/s from 0 to 65536 (64G)"),
])
def test_every_mib_key_has_a_range_and_says_it(key: str, text: str, accepted: str) -> None:
    assert refused({key: text}).startswith(f"--{key} {text!r}: expected {accepted}")


def test_sizes_stop_at_the_workloads_32_bit_counters() -> None:
    assert scenario.parse({"memory": "4294967295M", "hot-set": "32M"}).memory_mib == 2**32 - 1
    assert "2^32 - 1 MiB" in refused({"memory": "4294967296M"})


def test_mib_rates_at_the_bounds_are_accepted() -> None:
    s = scenario.parse({"dirty-rate": "64G", "zero-rate": "0"})
    assert (s.dirty_rate_mib, s.zero_rate_mib) == (65536, 0)
    assert scenario.parse({"dirty-rate": "40M/s"}).dirty_rate_mib == 40


@pytest.mark.parametrize("text", ["2000001", "99999999", "2001s", "1.5", "-1"])
def test_downtime_limit_is_whole_ms_within_qemus_range(text: str) -> None:
    message = refused({"downtime-limit": text})
    assert message.startswith(f"--downtime-limit {text!r}: expected whole milliseconds from 0"
                              " to 2000000")


def test_downtime_limit_at_qemus_bound_is_accepted() -> None:
    assert scenario.parse({"downtime-limit": "2000s"}).downtime_limit_ms == 2_000_000


@pytest.mark.parametrize("key", ["max-bandwidth", "switchover-bandwidth"])
def test_bandwidths_stop_at_qemus_2_to_the_64(key: str) -> None:
    top = str((1 << 64) - 1)
    parsed = scenario.parse({key: top})
    assert top == str(parsed.max_bandwidth_bytes_per_s if key == "max-bandwidth"
                      else parsed.switchover.bytes_per_s)
    for text in (str(1 << 64), "99999999999G", "200000000000gbit", "1" * 31):
        message = refused({key: text})
        assert message.startswith(f"--{key} {text!r}: expected"), message
        assert "none" in message


def test_switchover_errors_mention_auto() -> None:
    assert "'auto', 'qemu-auto'" in refused({"switchover-bandwidth": "fast"})
    assert "'auto'" in refused({"switchover-bandwidth": str(1 << 64)})


def test_units_parse_exactly() -> None:
    # floats would turn 2^64 - 1 into 2^64 and refuse QEMU's own limit
    assert units.parse_bytes_per_s("18446744073709551615") == (1 << 64) - 1
    assert units.parse_size("1.5M") == 3 << 19
    assert units.parse_bytes_per_s("1gbit") == 125_000_000


@pytest.mark.parametrize("text", ["", "\x00x"])
def test_qemu_must_name_something(text: str) -> None:
    expected = "expected stock, patched, upstream, upstream-stock, upstream-patched, a command"
    assert expected in refused({"qemu": text})


def test_yaml_values_must_be_single(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("hot-set: [1, 2]\n")
    with pytest.raises(scenario.ScenarioError, match="--hot-set .*expected one value"):
        scenario.load_yaml(path)


@pytest.mark.parametrize("text,needle", [
    ("timeout: .nan\n", "--timeout 'nan'"),
    ("timeout: .inf\n", "--timeout 'inf'"),
    ("link-delay: .nan\n", "--link-delay 'nan'"),
    ("memory: 100000000G\n", "--memory '100000000G'"),
])
def test_yaml_values_get_the_same_checks(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load_yaml(path)
    assert str(err.value).startswith(needle)


def test_scenario_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"link-rate: 1gbit\nname: caf\xe9\n")
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load_yaml(path)
    assert str(err.value) == (f"--scenario {str(path)!r}: not UTF-8 text (byte 0xe9 at offset"
                              " 26); expected a YAML file in UTF-8")


@pytest.mark.parametrize("kind,needle", [("missing", "no such file"),
                                         ("directory", "is a directory"),
                                         ("huge", "longer than 1 MiB"),
                                         ("bad-yaml", "not valid YAML")])
def test_scenario_file_problems_are_one_line(tmp_path: Path, kind: str, needle: str) -> None:
    path = tmp_path / "s.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "huge":
        path.write_text("# padding\n" * 200_000)
    elif kind == "bad-yaml":
        path.write_text("link-rate: [1gbit\n")
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load_yaml(path)
    message = str(err.value)
    assert message.startswith(f"--scenario {str(path)!r}: {needle}") and "\n" not in message


# -- preflight: what needs the machine but not root ------------------------------


def test_qemu_directory_is_refused() -> None:
    with pytest.raises(preflight.PreflightError, match=r"^--qemu '/etc': /etc is a directory;"
                                                       " expected qemu-system-x86_64"):
        preflight.check_qemu("/etc", "--qemu '/etc'")


def fake_qemu(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fake-qemu"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_binary_that_is_not_qemu_is_refused_without_running_it(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    # prints the banner, but its bytes do not hold it: never run
    fake = fake_qemu(tmp_path, f"touch {ran}\necho 'QEMU emulator' 'version 9.9.9'")
    with pytest.raises(preflight.PreflightError, match="is not a QEMU"):
        preflight.check_qemu(str(fake), f"--qemu {str(fake)!r}")
    assert not ran.exists()


def test_version_is_asked_and_reported(tmp_path: Path) -> None:
    fake = fake_qemu(tmp_path, "echo 'QEMU emulator version 9.9.9 (fake)'")
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_qemu(str(fake), "--qemu x")
    assert str(err.value) == (f"--qemu x: {fake} is QEMU 9.9.9 but not for x86_64 (no"
                              " x86_64-cpu in it); expected qemu-system-x86_64: the guest is"
                              " an x86_64 kernel")
    fake = fake_qemu(tmp_path, "# QEMU emulator version\necho nope; exit 1")
    with pytest.raises(preflight.PreflightError, match=r"printed 'nope'\); expected"):
        preflight.check_qemu(str(fake), "--qemu x")


def test_a_version_that_never_comes_is_given_up(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "VERSION_TIMEOUT_S", 0.3)
    fake = fake_qemu(tmp_path, "# QEMU emulator version\nexec sleep 30")
    with pytest.raises(preflight.PreflightError, match="did not answer within"):
        preflight.check_qemu(str(fake), "--qemu x")


def test_an_x86_64_qemu_without_q35_is_refused(tmp_path: Path) -> None:
    fake = fake_qemu(tmp_path, "# x86_64-cpu\necho 'QEMU emulator version 10.0.2'")
    with pytest.raises(preflight.PreflightError, match="without the q35 machine"):
        preflight.check_qemu(str(fake), "--qemu x")
    fake = fake_qemu(tmp_path, "# x86_64-cpu q35-pcihost\necho 'QEMU emulator version 10.0.2'")
    found = preflight.check_qemu(str(fake), "--qemu x")
    assert (found.version, found.has_switchover_bandwidth) == ("10.0.2", False)


def test_true_is_not_a_qemu() -> None:
    with pytest.raises(preflight.PreflightError, match="^--qemu '/bin/true': .*not a QEMU"):
        preflight.check_qemu("/bin/true", "--qemu '/bin/true'")


def test_not_executable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "qemu"
    path.write_bytes(b"QEMU emulator version 1.0")
    path.chmod(0o644)
    if os.access(path, os.X_OK):  # root may execute a file with no x bit? not on Linux
        pytest.skip("this user may execute anything")
    with pytest.raises(preflight.PreflightError, match="is not executable"):
        preflight.check_qemu(str(path), "--qemu x")


def test_a_bare_name_is_looked_up_on_path_only(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    local = here / "miglab-test-qemu"
    local.write_text("#!/bin/sh\n")
    local.chmod(0o755)
    monkeypatch.chdir(here)
    # an empty PATH entry means "the current directory" to a shell: ignored here
    monkeypatch.setenv("PATH", os.pathsep + "/usr/bin" + os.pathsep + ".")
    with pytest.raises(artifacts.MissingArtifact, match="nor a command on PATH"):
        artifacts.qemu_binary("miglab-test-qemu")
    onpath = tmp_path / "bin"
    onpath.mkdir()
    (onpath / "miglab-test-qemu").write_text("#!/bin/sh\n")
    (onpath / "miglab-test-qemu").chmod(0o755)
    monkeypatch.setenv("PATH", f"{onpath}{os.pathsep}/usr/bin")
    assert artifacts.qemu_binary("miglab-test-qemu") == onpath / "miglab-test-qemu"
    assert artifacts.qemu_binary("./miglab-test-qemu") == Path("./miglab-test-qemu")


def test_build_names_are_one_list() -> None:
    assert list(artifacts.BUILDS) == ["stock", "patched", "upstream", "upstream-stock",
                                      "upstream-patched"]
    for name in artifacts.BUILDS:
        assert artifacts.build_binary(name).name.startswith("qemu-system-x86_64")


def test_the_parameter_is_found_across_chunk_boundaries(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "_CHUNK", 64)
    for offset in range(40, 80):
        path = tmp_path / f"bin{offset}"
        path.write_bytes(b"\0" * offset + b"avail-switchover-bandwidth" + b"\0" * 100)
        assert preflight.has_parameter(path), offset
    path = tmp_path / "without"
    path.write_bytes(b"\0" * 1000 + b"avail-switchover-bandwidt" + b"\0" * 100)
    assert not preflight.has_parameter(path)


def test_the_scan_is_redone_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"nothing")
    assert not preflight.has_parameter(path)
    path.write_bytes(b"now avail-switchover-bandwidth, longer")
    assert preflight.has_parameter(path)


@pytest.mark.parametrize("available_kb,ok", [(2 * 512 * 1024, True),
                                             (2 * 512 * 1024 - 1024, False)])
def test_memory_for_both_guests_must_be_available(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  available_kb: int, ok: bool) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available_kb} kB\n")
    monkeypatch.setattr(preflight, "MEMINFO", meminfo)
    s = scenario.parse({"memory": "512M"})
    if ok:
        preflight._check_memory([s])
        return
    with pytest.raises(preflight.PreflightError) as err:
        preflight._check_memory([s])
    assert str(err.value).startswith("--memory '512M': the source and destination guests both"
                                     " run on this host and need 2 x 512M, but it has 1.0G"
                                     " available (MemAvailable in"
                                     f" {meminfo}); accepted at most 511M")


@pytest.mark.parametrize("vcpus,ok", [(2, True), (3, False)])
def test_vcpus_stop_at_the_hosts_cpus(monkeypatch: pytest.MonkeyPatch, vcpus: int,
                                      ok: bool) -> None:
    monkeypatch.setattr(preflight, "host_cpus", lambda: 2)
    s = scenario.parse({"vcpus": str(vcpus)})
    if ok:
        preflight._check_cpus([s])
        return
    with pytest.raises(preflight.PreflightError) as err:
        preflight._check_cpus([s])
    assert str(err.value) == ("--vcpus 3: every vCPU is a host thread, and this host gives"
                              " miglab 2 CPU(s) (sched_getaffinity); accepted at most 2")


@pytest.mark.parametrize("option,rel,directory,needle", [
    ("--json", "missing/result.json", False, "directory '{p}/missing' does not exist"),
    ("--json", "file/result.json", False, "'{p}/file' is not a directory"),
    ("--json", "dir", False, "is a directory; expected a file name"),
    ("--logs", "missing/logs", True, "directory '{p}/missing' does not exist"),
    ("--out", "file", True, "exists and is not a directory"),
])
def test_outputs_are_checked_before_the_run(tmp_path: Path, option: str, rel: str,
                                            directory: bool, needle: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    path = tmp_path / rel
    outputs = {option: path}
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_outputs(**{"directories" if directory else "files": outputs})
    assert str(err.value) == f"{option} {str(path)!r}: {needle.format(p=tmp_path)}"


def test_outputs_that_are_fine(tmp_path: Path) -> None:
    preflight.check_outputs(files={"--json": tmp_path / "r.json", "--x": None},
                            directories={"--logs": tmp_path / "new", "--out": tmp_path})


def test_read_only_directory_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(ro, os.W_OK):
        pytest.skip("this user may write anywhere (root)")
    with pytest.raises(preflight.PreflightError, match="is not writable"):
        preflight.check_outputs(files={"--json": ro / "r.json"})


X86_QEMU = "# x86_64-cpu q35-pcihost{extra}\necho 'QEMU emulator version 7.2.0'"


@pytest.mark.parametrize("bandwidth", ["auto", "125M", "0"])
def test_switchover_needs_the_parameter_on_the_source(tmp_path: Path, bandwidth: str) -> None:
    old = tmp_path / "old"
    old.mkdir()
    new = tmp_path / "new"
    new.mkdir()
    without = fake_qemu(old, X86_QEMU.format(extra=""))
    with_it = fake_qemu(new, X86_QEMU.format(extra=" avail-switchover-bandwidth"))
    s = scenario.parse({"qemu": str(without), "switchover-bandwidth": bandwidth})
    with pytest.raises(preflight.PreflightError) as err:
        preflight._check_qemus(s, f"--qemu {str(without)!r}")
    value = {"auto": "auto", "125M": "125000000 (bytes/s)", "0": "0 (bytes/s)"}[bandwidth]
    assert str(err.value).startswith(f"--switchover-bandwidth {value} with --qemu")
    assert f"{without} (QEMU 7.2.0) has no avail-switchover-bandwidth parameter" in str(err.value)
    # set on the source only: a destination without it is fine
    ok = scenario.parse({"qemu": str(with_it), "dst-qemu": str(without),
                         "switchover-bandwidth": bandwidth})
    preflight._check_qemus(ok, "--qemu x")
    # not set: any QEMU will do
    preflight._check_qemus(scenario.parse({"qemu": str(without)}), "--qemu x")


def test_qemu_auto_needs_tcp_switchover_bandwidth_on_the_source(tmp_path: Path) -> None:
    # Debian's 7.2 and upstream have avail-switchover-bandwidth but not QEMU's own
    # TCP mode: refused before anything starts, naming the build and the parameter.
    old = tmp_path / "old"
    old.mkdir()
    new = tmp_path / "new"
    new.mkdir()
    without = fake_qemu(old, X86_QEMU.format(extra=" avail-switchover-bandwidth"))
    with_it = fake_qemu(new, X86_QEMU.format(
        extra=" avail-switchover-bandwidth x-tcp-switchover-bandwidth"))
    s = scenario.parse({"qemu": str(without), "switchover-bandwidth": "qemu-auto"})
    with pytest.raises(preflight.PreflightError) as err:
        preflight._check_qemus(s, f"--qemu {str(without)!r}")
    assert str(err.value).startswith(
        f"--switchover-bandwidth qemu-auto with --qemu {str(without)!r}: {without}"
        " (QEMU 7.2.0) has no x-tcp-switchover-bandwidth parameter;")
    preflight._check_qemus(scenario.parse({"qemu": str(with_it), "dst-qemu": str(without),
                                           "switchover-bandwidth": "qemu-auto"}), "--qemu x")
    assert preflight.tcp_param(with_it) == "x-tcp-switchover-bandwidth"
    # an upstream QEMU that took it without the x- would do too
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    unprefixed = fake_qemu(upstream, X86_QEMU.format(
        extra=" avail-switchover-bandwidth tcp-switchover-bandwidth"))
    assert preflight.tcp_param(unprefixed) == "tcp-switchover-bandwidth"
    assert preflight.tcp_param(without) is None


def test_netem_options_are_refused_where_the_kernel_lacks_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "netem_available", lambda: False)
    preflight._check_netem([scenario.parse({})])  # a rate alone needs no netem
    s = scenario.parse({"link-delay": "5ms", "link-jitter": "1ms", "link-loss": "0.1%"})
    with pytest.raises(preflight.PreflightError) as err:
        preflight._check_netem([s])
    assert str(err.value) == ("--link-delay 5ms --link-jitter 1ms --link-loss 0.1%: link delay,"
                              " jitter and loss need the netem qdisc, which this kernel does not"
                              " have; links with only a rate work")
    monkeypatch.setattr(preflight, "netem_available", lambda: True)
    preflight._check_netem([s])


REMOTE = {"via": "libvirt", "src-uri": "qemu+ssh://root@host1/system",
          "dst-uri": "qemu+ssh://root@host2/system", "migrate-address": "host2"}


def test_two_hosts_given_by_uri() -> None:
    s = scenario.parse(REMOTE)
    assert s.remote and s.migrate_address == "host2"
    assert not scenario.parse({"via": "libvirt"}).remote


@pytest.mark.parametrize("values,needle", [
    ({"src-uri": REMOTE["src-uri"], "via": "libvirt"}, "--src-uri: give all of src-uri,"
                                                       " dst-uri, migrate-address"),
    ({**REMOTE, "via": "qmp"}, "between two hosts only with --via libvirt"),
    ({**REMOTE, "switchover-bandwidth": "auto"}, "use qemu-auto"),
    ({**REMOTE, "link-delay": "5ms"}, "there is none"),
    ({**REMOTE, "dst-uri": REMOTE["src-uri"]}, "the same host"),
    ({**REMOTE, "src-uri": "http://host1/system"}, "--src-uri 'http://host1/system': expected"
                                                   " a libvirt URI"),
    ({**REMOTE, "dst-uri": "qemu+ssh://host2/session"}, "expected a libvirt URI"),
    ({**REMOTE, "migrate-address": "-oProxyCommand=x"}, "--migrate-address"),
])
def test_bad_two_host_input_is_refused(values: dict, needle: str) -> None:
    assert needle in refused(values)
