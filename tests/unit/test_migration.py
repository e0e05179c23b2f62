"""The migration driver's own logic, on answers QEMU gave."""
from __future__ import annotations

from miglab import migration


def test_completion_figures_are_asked_for_again_until_qemu_has_them() -> None:
    answers = iter([{"status": "completed", "total-time": 0, "downtime": 0},
                    {"status": "completed", "total-time": 19676, "downtime": 138}])
    info = migration.completion_figures(lambda: next(answers),
                                        {"status": "completed", "total-time": 0})
    assert (info["total-time"], info["downtime"]) == (19676, 138)
    done = {"status": "completed", "total-time": 5, "downtime": 1}
    assert migration.completion_figures(lambda: {}, done) is done


class ScriptedQemu:
    """Records the commands sent; knows the parameters in @params."""

    def __init__(self, params: dict) -> None:
        self.params, self.sent = params, []

    def command(self, name: str, **args: object) -> dict:
        self.sent.append((name, args))
        return self.params if name == "query-migrate-parameters" else {}


def test_qemus_own_mode_is_set_under_the_name_the_qemu_knows() -> None:
    settings = migration.MigrationSettings(300, tcp_switchover_bandwidth=True)
    for known in ("x-tcp-switchover-bandwidth", "tcp-switchover-bandwidth"):
        src = ScriptedQemu({"downtime-limit": 300, known: False})
        migration.configure(src, ScriptedQemu({}), settings)  # type: ignore[arg-type]
        assert src.sent[-1] == ("migrate-set-parameters", {"downtime-limit": 300, known: True})
    # a QEMU that knows neither gets the downstream name, and refuses it itself
    src = ScriptedQemu({"downtime-limit": 300})
    migration.configure(src, ScriptedQemu({}), settings)  # type: ignore[arg-type]
    assert src.sent[-1][1] == {"downtime-limit": 300, "x-tcp-switchover-bandwidth": True}
