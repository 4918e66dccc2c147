"""run_listing.py and runs.py: honest status of status-less folders, durations."""

from __future__ import annotations

import os
import time

from textclf_cli.run_listing import duration_seconds, format_duration
from textclf_cli.runs import STARTING_GRACE_S, honest_status, lock_run


def test_a_folder_without_status_is_running_while_young_then_stale(tmp_path) -> None:
    run = tmp_path / "20260101-000000"
    run.mkdir()
    assert honest_status(run, None) == "running"
    old = time.time() - STARTING_GRACE_S - 5
    os.utime(run, (old, old))
    assert honest_status(run, None) == "stale"
    lock = lock_run(run)
    try:
        assert honest_status(run, None) == "running"  # someone holds it: live, whatever its age
        assert honest_status(run, {"status": "running"}) == "running"
    finally:
        lock.release()
    assert honest_status(run, {"status": "running"}) == "stale"
    assert honest_status(run, {"status": "completed"}) == "completed"


def test_durations() -> None:
    status = {"started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T01:02:03+00:00",
              "updated_at": "2026-01-01T00:30:00+00:00"}
    assert duration_seconds(status, "completed") == 3723.0
    assert duration_seconds(status, "stale") == 1800.0
    assert duration_seconds({}, "completed") is None
    assert [format_duration(s) for s in (None, 7, 95, 3723)] == ["", "7s", "1m35s", "1h02m"]
