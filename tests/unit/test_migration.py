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
