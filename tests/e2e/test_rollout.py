"""Staged rollouts, end to end: otter-sim fleets (the agent's own engine per device) against a real
otterd whose clock the test moves (OTTERD_TEST_CLOCK_FILE), checking each rule of the policy:
phases advance on success, thresholds pause and abort, the pace holds (devices released per
minute, devices in progress), approvals gate, the schedule holds, timeouts fire, and the engine's
decisions survive a restart."""
import time

import pytest

from e2e_util import FINAL, Env, image, sha, sim_slot, start_enrolled
from sim_util import wait_for

TICK = "rollout_tick = 200ms\n"


class Clock:
    """otterd's clock offset, in seconds (read by otterd every 50 ms)."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.path.write_text("0\n")

    def advance(self, seconds):
        self.offset += seconds
        self.path.write_text(f"{self.offset}\n")
        time.sleep(0.3)  # otterd reads it again, and a tick passes


@pytest.fixture
def clock(tmp_path, monkeypatch):
    c = Clock(tmp_path / "clock")
    monkeypatch.setenv("OTTERD_TEST_CLOCK_FILE", str(c.path))
    return c


@pytest.fixture
def env(make_server, tmp_path, clock):
    return Env(make_server, tmp_path, config=TICK)


def create(env, policy, version="1.0", n_expected=None):
    art = env.push(env.pack(version, image(version)))
    dep = env.api("POST", "/api/v1/deployments",
                  {"name": "rollout", "artifact_id": art["id"], "tag": "fleet", "policy": policy})
    if n_expected is not None:
        assert dep["device_count"] == n_expected
    return dep["id"]


def rollout(env, dep):
    return env.api("GET", f"/api/v1/deployments/{dep}")["rollout"]


def decisions(env, dep):
    return env.api("GET", f"/api/v1/deployments/{dep}/decisions?limit=1000")["decisions"]


def statuses(env, dep):
    return {dev: r["status"] for dev, r in env.rows(dep).items()}


def order(env, dep):
    """{release position: device id}"""
    return {r["release_order"]: dev for dev, r in env.rows(dep).items()}


def test_phases_advance_in_order_and_only_released_devices_start(env):
    n = 30
    fleet, ids = start_enrolled(env, n, "--duration", "60s", "--profile", "ok:1:install_time=300ms")
    dep = create(env, {"phases": [{"name": "canary", "size": 3}, {"size": "30%"},
                                  {"name": "rest", "size": "100%"}],
                       "seed": 7}, n_expected=n)
    wait_for(lambda: env.api("GET", f"/api/v1/deployments/{dep}")["status"] == "finished",
             timeout=40, what="the rollout to finish")
    fleet.stop()
    ro = rollout(env, dep)
    assert ro["state"] == "done" and ro["released"] == n, ro
    assert [(p["name"], p["first"], p["last"]) for p in ro["phases"]] == \
        [("canary", 1, 3), ("wave-1", 4, 12), ("rest", 13, 30)]
    assert all(p["counts"]["success"] == p["last"] - p["first"] + 1 for p in ro["phases"]), ro
    assert set(statuses(env, dep).values()) == {"success"}
    assert sorted(order(env, dep)) == list(range(1, n + 1))  # a permutation
    # the engine's log: every phase started, was judged, and advanced, in this order
    kinds = [d["kind"] for d in decisions(env, dep)]
    assert kinds.count("advance") == 2 and kinds.count("phase") == 3, kinds
    assert kinds.index("ready") < kinds.index("advance"), kinds
    # no device of a phase started before the previous phase had finished: the first report of
    # every wave device comes after the last final report of the phase before
    rows = env.rows(dep)
    pos = {dev: r["release_order"] for dev, r in rows.items()}

    def timeline(dev):
        return env.api("GET", f"/api/v1/deployments/{dep}/devices/{dev}")["events"]

    first_at = {dev: timeline(dev)[0]["at"] for dev in rows}
    final_at = {dev: timeline(dev)[-1]["at"] for dev in rows}
    canary_end = max(final_at[d] for d in rows if pos[d] <= 3)
    wave_start = min(first_at[d] for d in rows if 3 < pos[d] <= 12)
    wave_end = max(final_at[d] for d in rows if 3 < pos[d] <= 12)
    rest_start = min(first_at[d] for d in rows if pos[d] > 12)
    assert canary_end <= wave_start and wave_end <= rest_start


def test_the_same_seed_gives_the_same_order_and_tags_go_first(env):
    n = 12
    fleet, ids = start_enrolled(env, n, "--duration", "30s")
    fleet.stop()
    lab = sorted(ids.values())[:3]
    for i in lab:
        env.api("PUT", f"/api/v1/devices/{i}/tags", {"tags": ["fleet", "lab"]})
    p = {"phases": [{"size": 1}], "seed": 99}
    a, b = create(env, p, "1.0"), create(env, p, "1.1")
    assert order(env, a) == order(env, b)
    env.api("POST", f"/api/v1/deployments/{a}/cancel")
    env.api("POST", f"/api/v1/deployments/{b}/cancel")
    c = create(env, {"order": "tags", "order_tags": ["lab"], "phases": [{"size": 3}]}, "1.2")
    assert sorted(order(env, c)[k] for k in (1, 2, 3)) == lab


def test_failure_threshold_pauses_then_resume_goes_on(env):
    n = 20
    fleet, ids = start_enrolled(env, n, "--duration", "60s", "--seed", "3",
                                "--profile", "bad:1:install_fail=1")
    dep = create(env, {"phases": [{"size": 4}, {"size": 4}, {"size": "100%"}],
                       "failure_threshold": 50, "min_executed": 3, "on_failure": "pause",
                       "success_threshold": 0})
    wait_for(lambda: rollout(env, dep)["state"] == "paused", timeout=30, what="a pause")
    time.sleep(1.5)  # several ticks: nothing more is released while paused
    ro = rollout(env, dep)
    assert ro["released"] == 4 and "failure rate" in ro["reason"], ro
    st = statuses(env, dep)
    assert sum(1 for s in st.values() if s == "failure") <= 4
    assert sum(1 for s in st.values() if s == "pending") >= n - 4
    env.api("POST", f"/api/v1/deployments/{dep}/resume")
    # the failures before the resume no longer count: the next phase is released ...
    wait_for(lambda: rollout(env, dep)["released"] > 4, timeout=10, what="releases after resume")
    # ... and fails as well: paused again by the threshold
    wait_for(lambda: rollout(env, dep)["state"] == "paused", timeout=30, what="a second pause")
    assert rollout(env, dep)["released"] == 8  # the third phase never started
    kinds = [d["kind"] for d in decisions(env, dep)]
    assert kinds.count("pause") == 2 and "resume" in kinds, kinds
    fleet.stop()


def test_failure_threshold_aborts_and_cancels_the_rest(env):
    n = 20
    fleet, ids = start_enrolled(env, n, "--duration", "60s", "--profile", "sick:1:health_fail=1")
    dep = create(env, {"phases": [{"size": 5}, {"size": "100%"}], "failure_threshold": 40,
                       "min_executed": 2, "on_failure": "abort"})
    wait_for(lambda: env.api("GET", f"/api/v1/deployments/{dep}")["status"] == "cancelled",
             timeout=40, what="the abort")
    ro = rollout(env, dep)
    assert ro["state"] == "aborted" and "failure rate" in ro["reason"], ro
    wait_for(lambda: all(s in FINAL + ("cancelled",) for s in statuses(env, dep).values()),
             timeout=40, what="the released devices to end")
    fleet.stop()
    st = statuses(env, dep)
    assert sum(1 for s in st.values() if s == "cancelled") >= n - 5, st
    assert all(s in ("rolled_back", "cancelled") for s in st.values()), st


def test_a_phase_below_the_success_threshold_does_not_advance(env):
    n = 12
    fleet, ids = start_enrolled(env, n, "--duration", "60s", "--seed", "11",
                                "--profile", "ok:1", "--profile", "bad:1:install_fail=1")
    dep = create(env, {"phases": [{"size": 6}, {"size": "100%"}], "success_threshold": 100})
    wait_for(lambda: rollout(env, dep)["state"] == "paused", timeout=30, what="the hold")
    ro = rollout(env, dep)
    assert ro["released"] == 6 and "below the threshold" in ro["reason"], ro
    fleet.stop()


def test_the_pace_holds_devices_per_minute_with_a_ramp(env, clock):
    n = 40
    fleet, ids = start_enrolled(env, n, "--duration", "60s")
    dep = create(env, {"max_per_minute": 4, "ramp_factor": 2})
    wait_for(lambda: rollout(env, dep)["released"] == 4, timeout=10, what="the first minute")
    time.sleep(1)
    assert rollout(env, dep)["released"] == 4  # no more within the same minute
    clock.advance(30)   # half a minute at 4/min: 2 more
    wait_for(lambda: rollout(env, dep)["released"] == 6, timeout=5, what="2 more")
    clock.advance(30)   # minute 1: the rate doubles to 8/min, but the bucket holds one minute
    wait_for(lambda: rollout(env, dep)["released"] >= 10, timeout=5, what="the ramp")
    before = rollout(env, dep)["released"]
    clock.advance(60)   # minute 2: 16/min
    wait_for(lambda: rollout(env, dep)["released"] >= before + 16, timeout=5, what="16 more")
    assert rollout(env, dep)["released"] <= before + 16
    fleet.stop()


def test_devices_in_progress_are_capped(env):
    n = 12
    fleet, ids = start_enrolled(env, n, "--duration", "90s", "--profile", "ok:1:install_time=1s")
    dep = create(env, {"max_in_progress": 3})
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline:
        st = statuses(env, dep)
        ro = rollout(env, dep)
        final = sum(1 for s in st.values() if s in FINAL)
        assert ro["released"] - final <= 3, (ro["released"], st)
        seen = max(seen, ro["released"] - final)
        if final == n:
            break
        time.sleep(0.2)
    assert final == n and seen == 3
    fleet.stop()


def test_approvals_gate_a_phase_and_count_distinct_operators(env):
    n = 10
    fleet, ids = start_enrolled(env, n, "--duration", "60s")
    dep = create(env, {"phases": [{"size": 2}, {"size": "100%", "approvals": 2}]})
    wait_for(lambda: rollout(env, dep)["state"] == "waiting_approval", timeout=30,
             what="the gate")
    assert rollout(env, dep)["released"] == 2
    alice = env.server.create_token(["deployments:write", "deployments:read"], name="alice")["token"]
    bob = env.server.create_token(["deployments:write", "deployments:read"], name="bob")["token"]
    path = f"/api/v1/deployments/{dep}/approve"
    r = env.server.request("POST", path, {"phase": 2}, token=alice)
    assert r.status == 200 and r.json()["phases"][1]["approvals"] == 1, r
    assert env.server.request("POST", path, {"phase": 2}, token=alice).status == 409  # once
    time.sleep(1)
    assert rollout(env, dep)["released"] == 2
    assert env.server.request("POST", path, {"phase": 2}, token=bob).status == 200
    wait_for(lambda: rollout(env, dep)["released"] == n, timeout=10, what="the release")
    assert env.server.request("POST", path, {"phase": 2}, token=env.token).status == 409  # started
    fleet.stop()


def test_the_schedule_holds_and_the_end_cancels(env, clock):
    n = 8
    fleet, ids = start_enrolled(env, n, "--duration", "60s")
    now = int(time.time())
    dep = create(env, {"phases": [{"size": 2}, {"size": "100%", "approvals": 1}],
                       "start_at": now + 3600, "end_at": now + 7200, "on_end": "cancel"})
    time.sleep(1)
    ro = rollout(env, dep)
    assert ro["state"] == "scheduled" and ro["released"] == 0, ro
    clock.advance(3600)
    wait_for(lambda: rollout(env, dep)["released"] == 2, timeout=10, what="the start")
    wait_for(lambda: sorted(statuses(env, dep).values()).count("success") == 2, timeout=30,
             what="the first phase")
    wait_for(lambda: rollout(env, dep)["state"] == "waiting_approval", timeout=10,
             what="the approval gate of phase 2")
    clock.advance(3600)
    wait_for(lambda: rollout(env, dep)["state"] == "aborted", timeout=10, what="the end")
    assert "end time" in rollout(env, dep)["reason"]
    st = statuses(env, dep)
    assert sum(1 for s in st.values() if s == "cancelled") == n - 2, st
    fleet.stop()


def test_devices_that_take_too_long_time_out(env, clock):
    n = 6
    fleet, ids = start_enrolled(env, n, "--duration", "60s",
                                "--profile", "slow:1:install_time=600s")
    dep = create(env, {"device_timeout": "10m"})
    wait_for(lambda: all(s == "installing" for s in statuses(env, dep).values()), timeout=30,
             what="every device installing")
    clock.advance(11 * 60)
    wait_for(lambda: all(s == "failure" for s in statuses(env, dep).values()), timeout=10,
             what="the timeouts")
    row = env.rows(dep)[next(iter(ids.values()))]
    assert "timed out" in row["message"], row
    assert "timeout" in [d["kind"] for d in decisions(env, dep)]
    fleet.stop()


def test_the_engine_carries_on_after_a_restart(env):
    n = 10
    fleet, ids = start_enrolled(env, n, "--duration", "60s")
    fleet.stop()
    dep = create(env, {"phases": [{"size": 3}, {"size": "100%"}]})
    wait_for(lambda: rollout(env, dep)["released"] == 3, timeout=10, what="the canary")
    env.api("POST", f"/api/v1/deployments/{dep}/pause")
    before = decisions(env, dep)
    env.server.stop()
    env.restart()
    time.sleep(1)
    ro = rollout(env, dep)
    assert ro["state"] == "paused" and ro["released"] == 3, ro
    assert decisions(env, dep)[:len(before)] == before
    env.api("POST", f"/api/v1/deployments/{dep}/resume")
    fleet.start("--until-done", "1", "--duration", "60s")
    s = fleet.wait(60)
    assert s["exit"] == 0 and s["results"]["success"] == n, s
    assert rollout(env, dep)["state"] == "done"


def test_a_bad_policy_is_refused_with_the_reason(env):
    fleet, ids = start_enrolled(env, 2, "--duration", "30s")
    fleet.stop()
    art = env.push(env.pack("9.0", image("9.0")))
    for policy, words in [({"phases": []}, "phases"), ({"phases": [{"size": "0%"}]}, "size"),
                          ({"success_threshold": 101}, "success_threshold"),
                          ({"surprise": 1}, "surprise"), ({"on_failure": "explode"}, "on_failure"),
                          ({"ramp_factor": 2}, "max_per_minute"),
                          ({"start_at": "tomorrow"}, "start_at")]:
        r = env.server.request("POST", "/api/v1/deployments",
                               {"name": "x", "artifact_id": art["id"], "tag": "fleet",
                                "policy": policy}, token=env.token)
        assert r.status == 400 and words in r.json()["error"]["message"], (policy, r)
    assert env.api("GET", "/api/v1/deployments")["deployments"] == []


def next_start(hour, now):
    """Unix time of the next hour:00 UTC after now."""
    day = int(now) - int(now) % 86400
    t = day + hour * 3600
    return t if t > now else t + 86400


def test_installs_wait_for_the_maintenance_window(env, clock):
    n = 8
    new = image("5.0")
    fleet, ids = start_enrolled(env, n, "--duration", "90s")
    hour = (time.gmtime().tm_hour + 3) % 24
    art = env.push(env.pack("5.0", new))
    dep = env.api("POST", "/api/v1/deployments",
                  {"name": "night", "artifact_id": art["id"], "tag": "fleet",
                   "policy": {"maintenance_window": {"cron": f"0 {hour} * * *",
                                                     "duration": "1h"}}})["id"]
    wait_for(lambda: set(statuses(env, dep).values()) == {"waiting"}, timeout=40,
             what="every device to download and wait")
    time.sleep(2)  # several polls later, still nobody installs
    assert set(statuses(env, dep).values()) == {"waiting"}
    opens = next_start(hour, time.time())
    clock.advance(opens - int(time.time()) + 30)
    wait_for(lambda: set(statuses(env, dep).values()) == {"success"}, timeout=60,
             what="every device to install inside the window")
    fleet.stop()
    for name, dev in ids.items():
        events = env.api("GET", f"/api/v1/deployments/{dep}/devices/{dev}")["events"]
        kinds = [e["status"] for e in events]
        assert "waiting" in kinds and kinds[-1] == "success", (name, kinds)
        for e in events:
            if e["status"] in ("installing", "rebooting", "verifying", "success"):
                assert e["at"] >= opens, (name, e, opens)
        assert sim_slot(fleet, name, "b", len(new)) == sha(new), name


def test_soft_updates_wait_for_devices_that_postpone(env):
    n = 8
    fleet, ids = start_enrolled(env, n, "--duration", "90s", "--seed", "11",
                                "--profile", "shy:1:postpone=0.6")
    dep = create(env, {"type": "soft"})
    wait_for(lambda: set(statuses(env, dep).values()) == {"success"}, timeout=60,
             what="every device to agree at last")
    fleet.stop()
    postponed = 0
    for dev in ids.values():
        events = env.api("GET", f"/api/v1/deployments/{dep}/devices/{dev}")["events"]
        postponed += sum(1 for e in events if e["status"] == "waiting" and
                         "postponed" in e["message"])
    assert postponed >= 1  # with p=0.6 over 8 devices, some said "not now" first


def test_download_only_then_the_install_uses_the_kept_file(env):
    n = 6
    new = image("6.0")
    fleet, ids = start_enrolled(env, n, "--duration", "90s")
    art = env.push(env.pack("6.0", new))
    pre = env.api("POST", "/api/v1/deployments",
                  {"name": "fetch", "artifact_id": art["id"], "tag": "fleet",
                   "policy": {"type": "download_only"}})["id"]
    wait_for(lambda: set(statuses(env, pre).values()) == {"success"}, timeout=40,
             what="every device to download")
    for dev, row in env.rows(pre).items():
        assert row["message"] == "downloaded (download only)", row
    # nothing was installed
    for name in ids:
        assert sim_slot(fleet, name, "b", len(new)) != sha(new), name
    dep = env.deploy(art["id"], tag="fleet")["id"]
    wait_for(lambda: set(statuses(env, dep).values()) == {"success"}, timeout=40,
             what="every device to install")
    fleet.stop()
    for name in ids:
        assert sim_slot(fleet, name, "b", len(new)) == sha(new), name
