"""scripts/hostile.py end to end against the real server (fake backend): tiny runs of three checks, figures sane."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.guard import LINGER_S
from scripts.hostile import main


@pytest.mark.slow
def test_isolation_idle_and_lifecycle_figures(fake_package: Path, tmp_path: Path) -> None:
    out = tmp_path / "hostile.json"
    args = ["--package", str(fake_package), "--backend", "fake", "--only", "isolation,idle,lifecycle"]
    args += ["--duration", "2", "--baseline", "1", "--clients", "2", "--idle-connections", "30", "--idle-timeout", "1"]
    code = main([*args, "--out", str(out)])
    report = json.loads(out.read_text())
    figures, targets = report["figures"], report["targets"]

    # Isolation: the bad client's every request is a 422, the ordinary clients lose nothing.
    isolation = figures["isolation"]
    assert isolation["ordinary"]["failed"] == 0
    assert isolation["ordinary"]["ok"] > 20
    assert set(isolation["bad_statuses"]) == {"422"}
    assert 10 <= isolation["bad_statuses"]["422"] <= 100  # one per 20 ms + a round trip, for 2 s

    # Idle: each kind of stalled connection is closed by the server after the 1 s timeout, not before.
    held = figures["idle"]["held"]
    assert held["by_kind"] == {
        "nothing": {"no answer, in time": 10},
        "half_head": {"408, in time": 10},
        "half_body": {"408, in time": 10},
    }
    assert 0.5 <= held["seconds_to_close_min"] <= held["seconds_to_close_max"] <= 2.0
    assert held["closed_in_time"] == 30

    # Lifecycle: the replacement comes after the supervisor's 0.5 s back-off; a killed parent leaves nothing.
    lifecycle = figures["lifecycle"]
    assert 0.5 <= lifecycle["worker_back_s"] <= 10
    assert lifecycle["answered_after_kill"] > 0
    assert lifecycle["parent_kill_gone_s"] is not None
    assert lifecycle["parent_kill_gone_s"] <= 2

    assert [t["check"] for t in targets] == ["isolation"] * 2 + ["idle"] * 3 + ["lifecycle"] * 3
    assert code == (0 if all(t["pass"] is not False for t in targets) else 1)
    # Idle connections must not stop the ordinary clients' answers; their p99 is shown, not judged.
    assert [t["limit"] for t in targets if t["check"] == "idle"] == ["all", "0", "info"]
    table = (tmp_path / "hostile.md").read_text()
    assert "| isolation | ordinary requests failed | 0 | 0 | PASS |" in table
    assert "| idle | closed within 1+1 s | 30/30 | all | PASS |" in table


@pytest.mark.slow
def test_floods_are_refused_and_the_control_aims_the_same_attack_at_a_stand_in(
    fake_package: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hostile.json"
    args = ["--package", str(fake_package), "--backend", "fake", "--only", "flood-headers,flood-pipeline"]
    args += ["--duration", "2", "--baseline", "1", "--clients", "2"]
    main([*args, "--out", str(out)])
    report = json.loads(out.read_text())
    figures, targets = report["figures"], report["targets"]

    # The service refuses an endless head with 431 and cuts an endless pipeline off after the request in
    # progress, each time with a staged close: the attacker reads the whole answer (no reset destroys it), then
    # is held LINGER_S, its writes blocked, before it can reconnect and flood again.
    headers, pipeline = figures["flood-headers"], figures["flood-pipeline"]
    assert set(headers["attack"]["first_status"]) == {"431"}
    assert set(pipeline["attack"]["first_status"]) == {"200"}
    for attack in (headers["attack"], pipeline["attack"]):
        assert attack["flooder"] == "persistent"
        assert 1 <= attack["connections"] <= 2 / LINGER_S + 1  # a 2 s flood
        assert sum(attack["ends"].values()) == attack["connections"]
    for flood in (headers, pipeline):
        assert max(flood["rss_mib"]) - flood["rss_mib"][0] < 100
        assert flood["ordinary"]["failed"] == 0
        assert flood["ordinary"]["ok"] > 20

    # The control: the same attack against the stand-in, which closes where the guard would, while the
    # ordinary clients keep using the service.
    assert headers["control"]["stand_in"]["closed (head too large)"] >= 1
    assert set(headers["control"]["attack"]["first_status"]) == {"431"}
    assert pipeline["control"]["stand_in"]["closed (pipelined)"] >= 1
    assert set(pipeline["control"]["attack"]["first_status"]) == {"200"}
    assert headers["control"]["ordinary"]["ok"] > 20
    assert headers["control"]["ordinary"]["failed"] == 0

    # Without --server-cpus every process runs where the scheduler puts it, at the normal class.
    assert headers["placed"]["attacker"]["class"] == "normal"
    assert headers["placed"]["server"]["cpus"] == sorted(os.sched_getaffinity(0))

    info = [t for t in targets if t["pass"] is None]
    assert [t["check"] for t in info] == ["flood-headers", "flood-pipeline"]
    assert "aimed at a stand-in server" in info[0]["target"]
    assert "| info | – |" in (tmp_path / "hostile.md").read_text()


@pytest.mark.slow
def test_a_polite_flooder_is_not_held_but_reconnects(fake_package: Path, tmp_path: Path) -> None:
    out = tmp_path / "hostile.json"
    args = ["--package", str(fake_package), "--backend", "fake", "--only", "flood-pipeline", "--no-control"]
    args += ["--duration", "2", "--baseline", "1", "--clients", "2", "--flooder", "polite", "--out", str(out)]
    main(args)
    attack = json.loads(out.read_text())["figures"]["flood-pipeline"]["attack"]
    # It stops at each answer and FIN, closes, and floods again on a new connection: far more connections than
    # the 2 s / LINGER_S a persistent flooder gets, each one still answered in full before the close.
    assert attack["flooder"] == "polite"
    assert attack["connections"] > 4 * (2 / LINGER_S + 1), attack
    assert set(attack["first_status"]) == {"200"}
    assert attack["ends"].get("closed by the server", 0) >= attack["connections"] - 1


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a CPU for the service and one for the rest")
def test_server_cpus_put_the_service_apart_and_the_attacker_in_the_background(
    fake_package: Path, tmp_path: Path
) -> None:
    usable = sorted(os.sched_getaffinity(0))
    out = tmp_path / "hostile.json"
    args = ["--package", str(fake_package), "--backend", "fake", "--only", "flood-headers", "--duration", "2"]
    args += ["--baseline", "1", "--clients", "2", "--server-cpus", str(usable[0]), "--out", str(out)]
    main(args)
    flood = json.loads(out.read_text())["figures"]["flood-headers"]

    # As the kernel reports each process: the service and the stand-in on the first CPU; the ordinary clients
    # and the attacker on the others, the attacker in the idle class; the test process is given its CPUs back.
    assert flood["placed"]["server"] == {"cpus": usable[:1], "class": "normal"}
    assert flood["control"]["stand_in_placed"]["cpus"] == usable[:1]
    assert flood["placed"]["clients"] == {"cpus": usable[1:], "class": "normal"}
    assert flood["placed"]["attacker"] == {"cpus": usable[1:], "class": "idle"}
    assert flood["control"]["attack"]["placed"] == {"cpus": usable[1:], "class": "idle"}
    assert sorted(os.sched_getaffinity(0)) == usable
    # Pinned that way the attack still runs and is still refused, and held by the staged close.
    attack = flood["attack"]
    assert set(attack["first_status"]) == {"431"}
    assert 1 <= attack["connections"] <= 2 / LINGER_S + 1
    assert attack["ends"].get("ran out", 0) <= 1
    assert flood["ordinary"]["failed"] == 0
    assert f"The service on CPU [{usable[0]}]" in (tmp_path / "hostile.md").read_text()
