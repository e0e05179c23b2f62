"""avail-switchover-bandwidth through QMP, HMP and -global.

Tests taking `with_param` run on our patched 7.2 and on upstream's QEMU 10.0
(bookworm-backports) alike: the interface must be the same. The stock build
must refuse the parameter, which also shows these tests can fail.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from miglab import artifacts
from miglab.ownership import Record
from miglab.vm import VM, ExecuteError, VMConfig, VMError

PARAM = "avail-switchover-bandwidth"
U64_MAX = 2**64 - 1
MIB = 1024 * 1024


def params(vm: VM) -> dict:
    return vm.command("query-migrate-parameters")


def test_default_is_zero(with_param: VM) -> None:
    assert params(with_param)[PARAM] == 0


@pytest.mark.parametrize("value", [0, 1, 125_000_000, 2**63, U64_MAX])
def test_set_query_round_trip(with_param: VM, value: int) -> None:
    with_param.command("migrate-set-parameters", **{PARAM: value})
    assert params(with_param)[PARAM] == value


@pytest.mark.parametrize("bad", ["1G", 1.5, 2**64, True, None])
def test_refused_values_change_no_parameter(with_param: VM, bad: object) -> None:
    with_param.command("migrate-set-parameters", **{PARAM: 7_000_000})
    before = params(with_param)
    with pytest.raises(ExecuteError) as err:
        # Together with a valid change: a refused command must change nothing.
        with_param.command("migrate-set-parameters", **{"max-bandwidth": 12345, PARAM: bad})
    assert PARAM in str(err.value)
    assert params(with_param) == before


@pytest.mark.parametrize("negative", [-1, -1000])
def test_negative_integer_wraps_like_upstream(with_param: VM, negative: int) -> None:
    # QAPI's 'size' visitor wraps negative JSON integers; upstream accepts it.
    with_param.command("migrate-set-parameters", **{PARAM: negative})
    assert params(with_param)[PARAM] == 2**64 + negative


def test_max_bandwidth_wraps_the_same_way(with_param: VM) -> None:
    with_param.command("migrate-set-parameters", **{"max-bandwidth": -1})
    assert params(with_param)["max-bandwidth"] == U64_MAX


@pytest.mark.parametrize("text,expected", [
    ("1G", 1024 * MIB),
    ("100", 100 * MIB),  # like max-bandwidth: no suffix means MiB/s
    ("125000000B", 125_000_000),
    ("512k", 512 * 1024),
])
def test_hmp_set_accepts_size_suffixes(with_param: VM, text: str, expected: int) -> None:
    out = with_param.hmp(f"migrate_set_parameter {PARAM} {text}")
    assert out.strip() == ""
    assert params(with_param)[PARAM] == expected
    info = with_param.hmp("info migrate_parameters")
    assert f"{PARAM}: {expected} bytes/second" in info.splitlines()


def test_hmp_refuses_bad_size_and_changes_nothing(with_param: VM) -> None:
    out = with_param.hmp(f"migrate_set_parameter {PARAM} lots")
    assert "Invalid size lots" in out
    assert params(with_param)[PARAM] == 0


@pytest.mark.parametrize("build", ["patched", artifacts.UPSTREAM])
def test_global_sets_the_default(build: str, tmp_path: Path, run_record: Record) -> None:
    config = VMConfig.for_binary(artifacts.qemu_binary(build),
                                 extra_args=["-global", f"migration.{PARAM}=125000000"])
    with VM(config, "global", tmp_path, record=run_record) as vm:
        assert params(vm)[PARAM] == 125_000_000
        assert f"{PARAM}: 125000000 bytes/second" in vm.hmp("info migrate_parameters")


def test_patched_reports_every_stock_parameter_unchanged(stock: VM, patched: VM) -> None:
    stock_params = params(stock)
    patched_params = params(patched)
    # (and QEMU's own automatic mode: test_tcp_switchover_api.py)
    assert set(patched_params) - set(stock_params) == {PARAM, "x-tcp-switchover-bandwidth"}
    assert {k: patched_params[k] for k in stock_params} == stock_params


def test_stock_refuses_the_parameter_in_qmp(stock: VM) -> None:
    assert PARAM not in params(stock)
    with pytest.raises(ExecuteError) as err:
        stock.command("migrate-set-parameters", **{PARAM: 125_000_000})
    assert PARAM in str(err.value)


def test_stock_refuses_the_parameter_in_hmp(stock: VM) -> None:
    out = stock.hmp(f"migrate_set_parameter {PARAM} 1G")
    assert PARAM in out  # QEMU's own error names the unknown parameter
    assert PARAM not in params(stock)


def test_stock_refuses_the_global(stock_bin: Path, tmp_path: Path,
                                  run_record: Record) -> None:
    config = VMConfig(stock_bin, extra_args=["-global", f"migration.{PARAM}=1"])
    with pytest.raises(VMError) as err:
        VM(config, "stock-global", tmp_path, record=run_record).launch(timeout=10)
    assert PARAM in str(err.value)
