"""x-tcp-switchover-bandwidth (QEMU's own automatic mode) through QMP, HMP and -global.

Tests taking `with_tcp` run on both of our patched builds, 7.2 and 10.2.2:
the interface must be the same. Debian's 7.2 (stock) and upstream's QEMU
10.0 must refuse the parameter, which also shows these tests can fail.
What the mode decides in a real migration is the lab's business
(avocado-tests/qemu-auto.yaml) and QEMU's own qtests'.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from miglab import artifacts
from miglab.ownership import Record
from miglab.vm import VM, ExecuteError, VMConfig, VMError

PARAM = "x-tcp-switchover-bandwidth"  # downstream: no upstream QEMU has it
REPORTED = ("x-switchover-bandwidth", "x-switchover-bandwidth-source")


def params(vm: VM) -> dict:
    return vm.command("query-migrate-parameters")


@pytest.fixture(params=["patched", "upstream-patched"])
def with_tcp(request: pytest.FixtureRequest, tmp_path: Path,
             run_record: Record) -> Iterator[VM]:
    with VM(VMConfig.for_binary(artifacts.qemu_binary(request.param)), request.param,
            tmp_path, record=run_record) as vm:
        yield vm


@pytest.fixture(params=["stock", artifacts.UPSTREAM])
def without_tcp(request: pytest.FixtureRequest, tmp_path: Path,
                run_record: Record) -> Iterator[VM]:
    with VM(VMConfig.for_binary(artifacts.qemu_binary(request.param)), request.param,
            tmp_path, record=run_record) as vm:
        yield vm


def test_off_by_default_and_reported_nowhere(with_tcp: VM) -> None:
    assert params(with_tcp)[PARAM] is False
    # off: query-migrate is what it was before the parameter existed
    assert not set(REPORTED) & set(with_tcp.command("query-migrate"))


@pytest.mark.parametrize("value", [True, False])
def test_set_query_round_trip(with_tcp: VM, value: bool) -> None:
    with_tcp.command("migrate-set-parameters", **{PARAM: value})
    assert params(with_tcp)[PARAM] is value


@pytest.mark.parametrize("bad", ["on", 1, None])
def test_refused_values_change_no_parameter(with_tcp: VM, bad: object) -> None:
    before = params(with_tcp)
    with pytest.raises(ExecuteError) as err:
        with_tcp.command("migrate-set-parameters", **{"max-bandwidth": 12345, PARAM: bad})
    assert PARAM in str(err.value)
    assert params(with_tcp) == before


@pytest.mark.parametrize("text,expected", [("on", True), ("off", False)])
def test_hmp_sets_and_shows_it(with_tcp: VM, text: str, expected: bool) -> None:
    with_tcp.command("migrate-set-parameters", **{PARAM: not expected})
    assert with_tcp.hmp(f"migrate_set_parameter {PARAM} {text}").strip() == ""
    assert params(with_tcp)[PARAM] is expected
    assert f"{PARAM}: {text}" in with_tcp.hmp("info migrate_parameters").splitlines()


@pytest.mark.parametrize("build", ["patched", "upstream-patched"])
def test_global_turns_it_on(build: str, tmp_path: Path, run_record: Record) -> None:
    config = VMConfig.for_binary(artifacts.qemu_binary(build),
                                 extra_args=["-global", f"migration.{PARAM}=on"])
    with VM(config, "global", tmp_path, record=run_record) as vm:
        assert params(vm)[PARAM] is True


def test_other_builds_refuse_it(without_tcp: VM) -> None:
    assert PARAM not in params(without_tcp)
    with pytest.raises(ExecuteError) as err:
        without_tcp.command("migrate-set-parameters", **{PARAM: True})
    assert PARAM in str(err.value)
    assert PARAM in without_tcp.hmp(f"migrate_set_parameter {PARAM} on")


def test_stock_refuses_the_global(stock_bin: Path, tmp_path: Path,
                                  run_record: Record) -> None:
    config = VMConfig(stock_bin, extra_args=["-global", f"migration.{PARAM}=on"])
    with pytest.raises(VMError) as err:
        VM(config, "stock-global", tmp_path, record=run_record).launch(timeout=10)
    assert PARAM in str(err.value)
