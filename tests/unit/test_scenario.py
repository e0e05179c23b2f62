"""Scenario and unit parsing: values users type, and the errors for bad ones."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from miglab import lab, scenario, units


@pytest.mark.parametrize("text,bits", [("1gbit", 10**9), ("500mbit", 5 * 10**8),
                                       ("200000kbit", 2 * 10**8), ("1000", 1000)])
def test_link_rates_are_bits_per_second(text: str, bits: int) -> None:
    assert units.parse_bits_per_s(text) == bits


@pytest.mark.parametrize("text,value", [("8M", 8_000_000), ("125M", 125_000_000),
                                        ("125000000", 125_000_000), ("1gbit", 125_000_000),
                                        ("1G", 10**9), ("8MB/s", 8_000_000),
                                        ("8MB", 8_000_000), ("1Gbit", 125_000_000),
                                        ("64Mbps", 8_000_000), ("64mbit", 8_000_000)])
def test_qemu_bandwidths_are_decimal_bytes_per_second(text: str, value: int) -> None:
    assert units.parse_bytes_per_s(text) == value


@pytest.mark.parametrize("text", ["6Mb", "6mb", "6Gb", "6kb", "6Mb/s"])
def test_a_bandwidth_that_could_be_bits_or_bytes_is_refused_with_both_spellings(
        text: str) -> None:
    # "6Mb" is 6 megabits to a network engineer, 6 megabytes to QEMU: 8x apart
    with pytest.raises(units.UnitError, match="ambiguous") as err:
        units.parse_bytes_per_s(text, "--max-bandwidth")
    prefix = text[1].lower()
    assert f"6{prefix}bit" in str(err.value) and f"6{prefix.upper()}B" in str(err.value)


def test_a_rate_is_shown_in_both_units() -> None:
    assert units.both_rates(8_000_000) == "8000000 B/s (64 Mbit/s)"


def test_sizes_are_binary() -> None:
    assert units.parse_size("512M") == 512 << 20
    assert units.parse_size("4096K") == 4 << 20


@pytest.mark.parametrize("parse,text", [(units.parse_bits_per_s, "1gb"),
                                        (units.parse_bytes_per_s, "fast"),
                                        (units.parse_size, "1T"),
                                        (units.parse_ms, "5min"),
                                        (units.parse_percent, "120%")])
def test_bad_units_name_what_is_accepted(parse, text: str) -> None:
    with pytest.raises(units.UnitError) as err:
        parse(text, "--thing")
    assert "--thing" in str(err.value) and "expected" in str(err.value)


def test_defaults_are_the_capped_precopy_scenario() -> None:
    s = scenario.parse({})
    assert (s.link_rate_bps, s.memory_mib, s.hot_set_mib, s.dirty_rate_mib) == (
        10**9, 512, 32, 40)
    assert (s.max_bandwidth_bytes_per_s, s.downtime_limit_ms,
            s.switchover.bytes_per_s) == (8_000_000, 300, None)


def test_options_map_to_fields() -> None:
    s = scenario.parse({"link-rate": "500mbit", "switchover-bandwidth": "62500000",
                        "max-bandwidth": "none", "downtime-limit": "1s", "hot-set": "12M"})
    assert s.link_rate_bps == 500_000_000
    assert s.switchover.bytes_per_s == 62_500_000
    assert s.max_bandwidth_bytes_per_s is None
    assert s.downtime_limit_ms == 1000
    assert s.migration().parameters() == {"downtime-limit": 1000,
                                          "avail-switchover-bandwidth": 62_500_000}


@pytest.mark.parametrize("values,needle", [
    ({"switchover-bandwidth": "-1"}, "--switchover-bandwidth"),
    ({"link-rate": "0"}, "link rate"),
    ({"hot-set": "500M"}, "--hot-set"),
    ({"hot-set": "1.5M"}, "whole MiB"),
    ({"accel": "hvf"}, "accepted auto, tcg, kvm"),
    ({"timeout": "0"}, "--timeout"),
    ({"timeout": "nan"}, "--timeout 'nan': expected a number of seconds above 0"),
    ({"timeout": "inf"}, "--timeout 'inf': expected a number of seconds above 0"),
    ({"memory": "100000000G"}, "--memory '100000000G': expected whole MiB from 128M to"
                               " 4294967295M (2^32 - 1 MiB)"),
    ({"dirty-rate": "5000000G"}, "--dirty-rate '5000000G': expected whole MiB/s from 0 to 65536"),
    ({"downtime-limit": "99999999"}, "--downtime-limit '99999999': expected whole milliseconds"
                                     " from 0 to 2000000"),
    ({"max-bandwidth": "18446744073709551616"}, "--max-bandwidth '18446744073709551616':"
                                                " expected 'none' or a bandwidth from 0 to"
                                                " 18446744073709551615 bytes/s"),
    ({"link-jitter": "1ms"}, "jitter needs a link delay"),
    ({"colour": "blue"}, "unknown scenario key 'colour'"),
])
def test_bad_scenarios_are_refused_with_the_key_named(values: dict, needle: str) -> None:
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.parse(values)
    assert needle in str(err.value)


def test_yaml_uses_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("link-rate: 200mbit\nmax-bandwidth: 6M\nhot-set: 12M\n")
    s = scenario.load_yaml(path)
    assert (s.link_rate_bps, s.max_bandwidth_bytes_per_s, s.hot_set_mib) == (
        200_000_000, 6_000_000, 12)


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(scenario.ScenarioError, match="expected a mapping"):
        scenario.load_yaml(path)


def test_netem_is_needed_only_for_delay_and_loss() -> None:
    assert not scenario.parse({}).link().needs_netem
    assert scenario.parse({"link-delay": "5ms"}).link().needs_netem
    assert scenario.parse({"link-loss": "0.1%"}).link().needs_netem


def test_numa_nodes_make_the_guest_memory_and_spread_the_workload() -> None:
    s = scenario.parse({"numa-nodes": "128M,384M"})
    assert s.numa_nodes_mib == (128, 384) and s.memory_mib == 512
    assert "miglab.numa_nodes=2" in s.workload().kernel_args()


@pytest.mark.parametrize("text", ["128M", "16M,384M", "128M,,384M", "128M,lots"])
def test_bad_numa_nodes_are_refused_naming_what_is_accepted(text: str) -> None:
    with pytest.raises(scenario.ScenarioError, match="--numa-nodes .*expected 2 to 16 sizes"):
        scenario.parse({"numa-nodes": text})


def test_numa_nodes_and_a_memory_that_disagrees_are_refused() -> None:
    with pytest.raises(scenario.ScenarioError, match="add up to 512M"):
        scenario.parse({"numa-nodes": "128M,384M", "memory": "1G"})


def test_multifd_channels_go_to_both_sides() -> None:
    s = scenario.parse({"multifd-channels": "4"})
    caps, params = s.migration().both_sides()
    assert caps == {"multifd": True} and params == {"multifd-channels": 4}
    assert scenario.parse({}).migration().both_sides() == ({}, {})


@pytest.mark.parametrize("text", ["-1", "256", "two", "1.5", "\u00b2"])
def test_bad_multifd_channels_are_refused(text: str) -> None:
    with pytest.raises(scenario.ScenarioError, match="--multifd-channels .*0 to 255"):
        scenario.parse({"multifd-channels": text})


@pytest.mark.parametrize("text", ["-1", "17", "three"])
def test_bad_cross_traffic_is_refused(text: str) -> None:
    with pytest.raises(scenario.ScenarioError, match="--cross-traffic .*0 to 16"):
        scenario.parse({"cross-traffic": text})


def test_cross_traffic_is_a_count_of_flows() -> None:
    assert scenario.parse({"cross-traffic": "3"}).cross_traffic_flows == 3
    assert scenario.parse({}).cross_traffic_flows == 0


def test_vcpus_default_to_one_and_give_the_workload_a_thread_each() -> None:
    assert scenario.parse({}).vcpus == 1
    assert "miglab.threads=1" in scenario.parse({}).workload().kernel_args()
    s = scenario.parse({"vcpus": "2"})
    assert s.vcpus == 2 and s.to_dict()["vcpus"] == 2
    assert "miglab.threads=2" in s.workload().kernel_args()


def test_vcpus_come_from_yaml_too(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("vcpus: 2\nhot-set: 12M\n")
    assert scenario.load_yaml(path).vcpus == 2


@pytest.mark.parametrize("text", ["0", "9", "-1", "two", "1.5", ""])
def test_bad_vcpus_are_refused_naming_the_range(text: str) -> None:
    with pytest.raises(scenario.ScenarioError,
                       match=f"--vcpus {text!r}: expected a whole number from 1 to 8"):
        scenario.parse({"vcpus": text})


def _command(**kwargs: Any) -> list[str]:
    from miglab.vm import VMConfig
    config = VMConfig(Path("/usr/bin/qemu-system-x86_64"), **kwargs)
    return config.command(Path("/tmp/qmp.sock"), Path("/tmp/console.sock"))


def test_vcpus_become_smp() -> None:
    cmd = _command(vcpus=2)
    assert cmd[cmd.index("-smp") + 1] == "2"
    cmd = _command()
    assert cmd[cmd.index("-smp") + 1] == "1"


def test_vcpus_go_round_robin_over_numa_nodes() -> None:
    def nodes(**kwargs: Any) -> list[str]:
        cmd = _command(**kwargs)
        return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-numa"]
    assert nodes(numa_nodes_mib=(128, 384), vcpus=3) == [
        "node,nodeid=0,cpus=0,cpus=2,memdev=ram-node0",
        "node,nodeid=1,cpus=1,memdev=ram-node1"]
    # one vCPU: QEMU's own default mapping, named; the second node has memory only
    assert nodes(numa_nodes_mib=(128, 384)) == ["node,nodeid=0,cpus=0,memdev=ram-node0",
                                                "node,nodeid=1,memdev=ram-node1"]


def test_different_builds_on_each_side_share_a_versioned_machine_type() -> None:
    assert lab.machine_type(scenario.parse({"qemu": "patched"})) == "q35"
    assert lab.machine_type(scenario.parse({"qemu": "patched", "dst-qemu": "upstream"})
                               ) == "pc-q35-7.2"


def test_a_scenario_file_takes_the_result_json_spelling_of_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("link_rate: 500mbit\ndowntime-limit: 600\n")
    s = scenario.load_yaml(path)
    assert (s.link_rate_bps, s.downtime_limit_ms) == (5 * 10**8, 600)


def test_an_unknown_key_names_the_file_its_line_and_the_nearest_key(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("memory: 512M\nlinkrate: 1gbit\n")
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load_yaml(path)
    assert f"--scenario '{path}', line 2: unknown scenario key 'linkrate': did you mean" \
           " 'link-rate'?" in str(err.value)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "scenarios")
                                        .glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_loads_and_says_what_it_is(path: Path) -> None:
    s = scenario.load_yaml(path)
    assert path.read_text().startswith("#")  # its comment says what it shows
    assert s.link_rate_bps > 0 and s.hot_set_mib > 0 and s.timeout_s > 0
