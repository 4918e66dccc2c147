"""run_listing.py and runs.py: honest status of a just-created run, durations."""

from __future__ import annotations

import os
import time

from textclf_cli.runs.folders import STARTING_GRACE_S, create_run_dir, honest_status, lock_run, mark_stale_runs
from textclf_cli.runs.listing import duration_seconds, format_duration
from textclf_cli.runs.status import read_status


def test_a_created_run_is_running_while_young_then_stale(tmp_path) -> None:
    run = create_run_dir(tmp_path, "exp")  # status `created`: its process takes the lock at once
    assert honest_status(run, read_status(run)) == "running"
    old = time.time() - STARTING_GRACE_S - 5
    os.utime(run, (old, old))
    assert honest_status(run, read_status(run)) == "stale"
    lock = lock_run(run)
    try:
        assert honest_status(run, read_status(run)) == "running"  # someone holds it: live, whatever its age
        assert honest_status(run, {"status": "running"}) == "running"
    finally:
        lock.release()
    assert honest_status(run, {"status": "running"}) == "stale"
    assert honest_status(run, {"status": "completed"}) == "completed"
    assert honest_status(run, None) == honest_status(run, {"status": []}) == "damaged"
    os.utime(run, (old, old))  # the lock file made it young again
    assert mark_stale_runs(tmp_path / "exp") == [run]
    assert "start a new run" in read_status(run)["message"]


def test_durations() -> None:
    status = {"started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T01:02:03+00:00",
              "updated_at": "2026-01-01T00:30:00+00:00"}
    assert duration_seconds(status, "completed") == 3723.0
    assert duration_seconds(status, "stale") == 1800.0
    assert duration_seconds({}, "completed") is None
    assert [format_duration(s) for s in (None, 7, 95, 3723)] == ["", "7s", "1m35s", "1h02m"]
