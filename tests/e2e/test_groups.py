"""Dynamic groups end to end: otter-sim fleets (the agent's own engine per device) against a real
otterd. A deployment on a query takes the matching devices, devices enrolling later join it
(continuous membership) and update, devices that do not match are never touched, and the cap
holds."""
import pytest

from e2e_util import DEVICE_TYPE, Env, image, sha, sim_slot, start_enrolled
from sim_util import wait_for


@pytest.fixture
def env(make_server, tmp_path):
    return Env(make_server, tmp_path, config="rollout_tick = 200ms\n")


def test_devices_that_enroll_later_join_a_continuous_deployment_and_update(env):
    first, first_ids = start_enrolled(env, 6, "--duration", "90s", name="early", tag="eu")
    others, other_ids = start_enrolled(env, 4, "--duration", "90s", name="other", tag="us")
    new = image("2.0")
    art = env.push(env.pack("2.0", new))
    q = f'device_type = "{DEVICE_TYPE}" and tag("eu")'
    dep = env.api("POST", "/api/v1/deployments",
                  {"name": "eu", "artifact_id": art["id"], "query": q,
                   "policy": {"phases": [{"size": 2}, {"size": "100%"}], "seed": 5}})
    assert dep["device_count"] == 6, dep
    # a second EU batch comes up after the deployment exists
    late, late_ids = start_enrolled(env, 5, "--duration", "90s", name="late", tag="eu")
    want = set(first_ids.values()) | set(late_ids.values())
    wait_for(lambda: set(env.rows(dep["id"])) == want, timeout=30,
             what="the late devices to join")
    wait_for(lambda: all(r["status"] == "success" for r in env.rows(dep["id"]).values()),
             timeout=60, what="every member to succeed")
    show = env.api("GET", f"/api/v1/deployments/{dep['id']}")
    assert show["device_count"] == 11 and show["status"] == "finished", show
    for f in (first, late, others):
        f.stop()
    for fleet, ids in ((first, first_ids), (late, late_ids)):
        results = fleet.results()
        for name in ids:
            assert results[name] == [(dep["id"], "success")], (name, results[name])
            assert sim_slot(fleet, name, "b", len(new)) == sha(new), name
    # the US devices were never part of it and never installed anything
    for name, res in others.results().items():
        assert res == [], (name, res)
    assert not set(other_ids.values()) & set(env.rows(dep["id"]))


def test_the_cap_bounds_how_many_devices_join(env):
    first, first_ids = start_enrolled(env, 3, "--duration", "60s", name="a", tag="lab")
    art = env.push(env.pack("3.0", image("3.0")))
    dep = env.api("POST", "/api/v1/deployments",
                  {"name": "lab", "artifact_id": art["id"], "query": 'tag("lab")', "cap": 5})
    assert dep["device_count"] == 3
    late, late_ids = start_enrolled(env, 4, "--duration", "60s", name="b", tag="lab")
    wait_for(lambda: len(env.rows(dep["id"])) == 5, timeout=30, what="two devices to join")
    wait_for(lambda: all(r["status"] == "success" for r in env.rows(dep["id"]).values()),
             timeout=60, what="the members to succeed")
    first.stop()
    late.stop()
    assert len(env.rows(dep["id"])) == 5
    joined = [n for n, i in late_ids.items() if i in env.rows(dep["id"])]
    assert len(joined) == 2
    for name, res in late.results().items():
        assert res == ([(dep["id"], "success")] if name in joined else []), (name, res)
