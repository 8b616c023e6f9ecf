"""Agents through the REST API: versions, validation, diff, publish, rollback, locking, roles, bad input."""

from tests.studio.conftest import EXAMPLES, agent_yaml

from parley.agent.loader import validate_file

BROKEN = agent_yaml().replace("slot_type: date", "slot_type: birthday")


def create(client, accounts, text=None, name="card-block"):
    return client.post(
        "/api/agents", json={"name": name, "yaml": text or agent_yaml()}, headers=accounts["editor"].headers
    )


def test_create_save_diff_publish_rollback(client, accounts) -> None:
    h = accounts["editor"].headers
    assert create(client, accounts).json() == {"name": "card-block", "version": 1}
    changed = agent_yaml().replace("Welcome to Northbank", "Hello from Northbank")
    r = client.post(
        "/api/agents/card-block/versions", json={"yaml": changed, "base": 1, "note": "greeting"}, headers=h
    )
    assert r.status_code == 201 and r.json()["version"] == 2
    diff = client.get("/api/agents/card-block/diff?old=1&new=2", headers=h).json()["diff"]
    assert any(line.startswith("-") and "Welcome to Northbank" in line for line in diff)
    assert any(line.startswith("+") and "Hello from Northbank" in line for line in diff)
    assert client.get("/api/agents/card-block/live", headers=h).status_code == 404  # nothing live yet
    assert client.post("/api/agents/card-block/publish", json={"version": 1}, headers=h).json()["live"] == 1
    assert client.post("/api/agents/card-block/publish", json={"version": 2}, headers=h).json()["live"] == 2
    live = client.get("/api/agents/card-block/live", headers=h).json()
    assert live["number"] == 2 and "Hello from Northbank" in live["yaml"]
    # one action back to what was live before
    assert client.post("/api/agents/card-block/rollback", json={}, headers=h).json()["live"] == 1
    assert (
        client.get("/api/agents/card-block/versions/1", headers=h).json()["yaml"] == agent_yaml()
    )  # unchanged
    agent = client.get("/api/agents/card-block", headers=h).json()
    assert [d["action"] for d in agent["deployments"]] == ["rollback", "publish", "publish"]
    audit = client.get("/api/audit", headers=accounts["admin"].headers).json()
    assert [(e["action"], e["user"], e["detail"]) for e in audit if e["target"] == "card-block"] == [
        ("rollback", "editor1", "live v2 -> v1"),
        ("publish", "editor1", "live v1 -> v2"),
        ("publish", "editor1", "live v1"),
    ]


def test_invalid_yaml_creates_no_version_and_reports_validate_messages(client, accounts, tmp_path) -> None:
    h = accounts["editor"].headers
    create(client, accounts)
    r = client.post("/api/agents/card-block/versions", json={"yaml": BROKEN, "base": 1}, headers=h)
    assert r.status_code == 422
    path = tmp_path / "card-block.yaml"
    path.write_text(BROKEN)
    expected = [str(e) for e in validate_file(path)]
    assert expected and [p["text"].replace(str(path), "card-block.yaml") for p in r.json()["errors"]] == [
        e.replace(str(path), "card-block.yaml") for e in expected
    ]
    assert r.json()["errors"][0]["line"] == BROKEN.splitlines().index("    slot_type: birthday") + 1
    r = client.post("/api/agents/card-block/versions", json={"yaml": "steps: [", "base": 1}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["text"].startswith("card-block.yaml:")
    assert client.get("/api/agents/card-block", headers=h).json()["head"] == 1
    assert create(client, accounts, BROKEN, name="other").status_code == 422
    assert client.get("/api/agents/other", headers=h).status_code == 404  # no agent either
    valid = client.post("/api/validate", json={"yaml": BROKEN}, headers=h).json()
    assert valid["valid"] is False and "birthday" in valid["errors"][0]["message"]


def test_concurrent_edits_conflict_instead_of_overwriting(client, accounts) -> None:
    h = accounts["editor"].headers
    create(client, accounts)
    first = agent_yaml().replace("Welcome", "Hi")
    second = agent_yaml().replace("Welcome", "Hello")
    assert (
        client.post("/api/agents/card-block/versions", json={"yaml": first, "base": 1}, headers=h).status_code
        == 201
    )
    r = client.post("/api/agents/card-block/versions", json={"yaml": second, "base": 1}, headers=h)
    assert r.status_code == 409 and "version 2" in r.json()["detail"]
    assert client.get("/api/agents/card-block/versions/2", headers=h).json()["yaml"] == first
    assert client.get("/api/agents/card-block/versions/3", headers=h).status_code == 404


def test_store_lock_holds_under_racing_threads(store, accounts) -> None:
    """Eight editors save from the same base at once: exactly one wins, the rest conflict."""
    from concurrent.futures import ThreadPoolExecutor

    from parley.studio.store import Conflict

    store.create_agent("racy", agent_yaml(), accounts["editor"].principal)

    def save(i: int) -> str:
        try:
            store.save_version(
                "racy", agent_yaml().replace("Welcome", f"Welcome {i}"), 1, accounts["editor"].principal
            )
            return "saved"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(save, range(8)))
    assert results.count("saved") == 1 and results.count("conflict") == 7
    assert [v["number"] for v in store.versions("racy")] == [2, 1]


def test_viewer_reads_but_cannot_change(client, accounts) -> None:
    create(client, accounts)
    v = accounts["viewer"].headers
    assert client.get("/api/agents/card-block", headers=v).status_code == 200
    assert client.post("/api/agents/card-block/publish", json={"version": 1}, headers=v).status_code == 403
    assert client.post("/api/agents/card-block/rollback", json={}, headers=v).status_code == 403
    r = client.post("/api/agents/card-block/versions", json={"yaml": agent_yaml(), "base": 1}, headers=v)
    assert r.status_code == 403
    assert client.post("/api/agents", json={"name": "x", "yaml": agent_yaml()}, headers=v).status_code == 403
    assert client.get("/api/audit", headers=v).status_code == 403
    assert client.get("/api/audit", headers=accounts["editor"].headers).status_code == 403
    assert client.get("/api/agents/card-block").status_code == 401
    assert client.get("/api/agents/card-block", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/agents/card-block", headers=accounts["admin"].headers).json()["live"] is None


def test_bad_input(client, accounts) -> None:
    h = accounts["editor"].headers
    create(client, accounts)
    huge = agent_yaml() + "#" * (300 * 1024)
    r = client.post("/api/agents/card-block/versions", json={"yaml": huge, "base": 1}, headers=h)
    assert r.status_code == 413
    r = client.post("/api/calls", content=b"x" * (17 * 1024 * 1024), headers=h)
    assert r.status_code == 413

    def chunks():  # no Content-Length: refused once the limit has arrived
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    r = client.post("/api/calls", content=chunks(), headers=h)
    assert r.status_code == 413
    assert client.get("/api/agents/nope", headers=h).status_code == 404
    assert client.get("/api/agents/card-block/versions/99", headers=h).status_code == 404
    assert client.get("/api/agents/card-block/diff?old=1&new=7", headers=h).status_code == 404
    assert client.post("/api/agents/card-block/publish", json={"version": 5}, headers=h).status_code == 404
    assert client.post("/api/agents/card-block/rollback", json={}, headers=h).status_code == 409  # never live
    assert client.get("/api/calls/nope", headers=h).status_code == 404
    assert create(client, accounts).status_code == 409  # exists
    assert client.post("/api/agents", json={"name": "Bad Name", "yaml": "x"}, headers=h).status_code == 422
    assert list(EXAMPLES.glob("*.yaml"))  # the examples the tests read are there
