"""The studio's pages: login, session cookie, CSRF, login rate limit, the editor's errors at their
line, publish and rollback by form, the call timeline, local assets only."""

import json
import re

import pytest
from tests.studio.conftest import PASSWORD, agent_yaml, card_block_call, login

pytestmark = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def test_login_sets_a_strict_httponly_cookie_and_pages_need_it(client, accounts) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = client.post("/login", data={"name": "editor1", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "parley_session=" in cookie
    assert client.get("/").status_code == 200
    assert client.post("/login", data={"name": "editor1", "password": "wrong!!!!"}).status_code == 401
    for elsewhere in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
        r = client.post(
            "/login",
            data={"name": "editor1", "password": PASSWORD, "next": elsewhere},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/"  # no open redirect


def test_login_attempts_are_rate_limited(client, accounts) -> None:
    for _ in range(5):
        assert client.post("/login", data={"name": "viewer1", "password": "wrong!!!!"}).status_code == 401
    r = client.post("/login", data={"name": "viewer1", "password": PASSWORD})
    assert r.status_code == 429 and "too many failed logins" in r.text


def test_a_request_without_its_csrf_token_is_refused(client, accounts) -> None:
    csrf = login(client, "editor1")
    yaml_text = agent_yaml()
    assert (
        client.post(
            "/agents", data={"name": "card-block", "yaml": yaml_text}, follow_redirects=False
        ).status_code
        == 403
    )
    assert client.post("/api/agents", json={"name": "card-block", "yaml": yaml_text}).status_code == 403
    assert (
        client.post(
            "/api/agents", json={"name": "card-block", "yaml": yaml_text}, headers={"X-CSRF-Token": "forged"}
        ).status_code
        == 403
    )
    r = client.post(
        "/agents", data={"name": "card-block", "yaml": yaml_text, "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/agents/card-block"
    r = client.post("/api/agents/card-block/publish", json={"version": 1}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["live"] == 1


def test_editor_shows_errors_at_their_line_and_keeps_the_text(client, accounts) -> None:
    csrf = login(client, "editor1")
    client.post("/agents", data={"name": "card-block", "yaml": agent_yaml(), "csrf_token": csrf})
    broken = agent_yaml().replace("slot_type: date", "slot_type: birthday")
    line = broken.splitlines().index("    slot_type: birthday") + 1
    r = client.post("/agents/card-block/save", data={"yaml": broken, "base": 1, "csrf_token": csrf})
    assert r.status_code == 422
    assert f"card-block.yaml:{line}:16: error:" in r.text
    assert f'<li id="L{line}" class="bad">' in r.text
    assert "birthday" in r.text.split('id="yaml"')[1]  # the edit is not lost
    stale = client.post("/agents/card-block/save", data={"yaml": agent_yaml(), "base": 0, "csrf_token": csrf})
    assert stale.status_code == 409 and 'id="conflict"' in stale.text
    fixed = agent_yaml().replace("Welcome to", "Hello from")
    r = client.post(
        "/agents/card-block/save", data={"yaml": fixed, "base": 1, "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    page = client.get("/agents/card-block").text
    assert "Save as v3" in page
    diff = client.get("/agents/card-block/diff?old=1&new=2").text
    assert '<span class="add">+' in diff and "Hello from" in diff
    client.post("/agents/card-block/publish", data={"version": 1, "csrf_token": csrf})
    page = client.get("/agents/card-block").text
    assert 'id="live-diff"' in page and "Hello from" in page  # changes since live, before publishing
    client.post("/agents/card-block/publish", data={"version": 2, "csrf_token": csrf})
    assert "live: v2" in client.get("/agents/card-block").text
    client.post("/agents/card-block/rollback", data={"csrf_token": csrf})
    assert "live: v1" in client.get("/agents/card-block").text


def test_viewer_pages_have_no_edit_controls(client, accounts, store) -> None:
    store.create_agent("card-block", agent_yaml(), accounts["editor"].principal)
    login(client, "viewer1")
    page = client.get("/agents/card-block").text
    assert 'id="publish"' not in page and "readonly" in page
    assert client.post("/agents/card-block/publish", data={"version": 1}).status_code == 403


def test_call_timeline_page(client, accounts, store) -> None:
    store.create_agent("card-block", agent_yaml(), accounts["editor"].principal)
    store.ingest([card_block_call("call-t", account="55667788")])
    login(client, "viewer1")
    calls = client.get("/calls?agent=card-block&outcome=abandoned").text
    assert "/calls/call-t" in calls
    page = client.get("/calls/call-t").text
    assert page.count('class="turn"') == len(card_block_call("x")["turns"])
    assert "sphinx-grammar" in page and "✔ chosen" in page and "grammar parse of a complete answer" in page
    assert "‹account_number›" in page
    bars = re.findall(r'data-phase="([^"]+)".*?margin-left: ([\d.]+)%; width: ([\d.]+)%.*?(\d+) ms', page)
    assert bars == [  # one axis from the end of speech to the reply's first audio out (310 ms)
        ("close after speech", "0.0", "58.1", "180"),
        ("ASR final", "58.1", "12.9", "220"),
        ("decision", "71.0", "1.6", "225"),
        ("first audio out", "72.6", "27.4", "310"),
    ], bars
    assert "55667788" not in page and "5 5 6 6" not in page
    assert 'id="reveal"' not in page
    client.post(
        "/logout", data={"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)}
    )
    login(client, "editor1")
    revealed = client.get("/calls/call-t?reveal=true").text
    assert "5 5 6 6 7 7 8 8" in revealed


def test_every_asset_is_local(client, accounts) -> None:
    login(client, "admin1")
    for path in ("/", "/calls", "/audit", "/login"):
        html = client.get(path).text
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not re.match(r"^(https?:)?//", url), f"{path} loads {url} from elsewhere"
    assert client.get("/static/studio.css").status_code == 200
    assert client.get("/static/studio.js").status_code == 200
    schema = client.get("/api/openapi.json").json()
    assert {"/api/agents/{name}/publish", "/api/calls", "/api/calls/{call_id}"} <= set(schema["paths"])
    assert json.dumps(schema).count("cdn") == 0


def test_flow_graph_of_the_agent(client, accounts, store) -> None:
    from parley.agent.loader import load_agent_text
    from parley.studio.graph import edges

    agent = load_agent_text(agent_yaml())
    falls, jumps = edges(agent)
    steps = [s.id for s in agent.steps]
    named = {(steps[e.source] if e.source >= 0 else "*", steps[e.target], e.label) for e in falls + jumps}
    assert ("welcome", "account_number", "") in named  # fall-through
    assert ("account_number", "handover", "failure") in named
    assert ("decide", "block", "if confirm_block = True") in named
    assert ("*", "handover", "“operator” anywhere") in named
    assert not any(steps[e.source] in ("handover", "bye") for e in falls + jumps if e.source >= 0)  # ends
    store.create_agent("card-block", agent_yaml(), accounts["editor"].principal)
    login(client, "viewer1")
    page = client.get("/agents/card-block").text
    svg = page.split('id="flow">')[1].split("</svg>")[0]
    assert svg.count('class="step"') == len(steps) and svg.count('class="jump"') == len(jumps)
    assert "<script" not in svg


def test_console_chats_with_a_version(client, accounts, store) -> None:
    store.create_agent("card-block", agent_yaml(), accounts["editor"].principal)
    store.save_version(
        "card-block", agent_yaml().replace("Welcome to", "Hello from"), 1, accounts["editor"].principal
    )
    h = accounts["editor"].headers
    opened = client.post("/api/agents/card-block/console?version=1", headers=h)
    assert opened.status_code == 201, opened.text
    session = opened.json()
    assert session["lines"][0].startswith("agent> Welcome to Northbank") and not session["ended"]
    say = lambda **move: client.post(f"/api/console/{session['id']}", json=move, headers=h).json()  # noqa: E731
    assert "[keypad input not accepted here]" not in say(dtmf="42712345")["lines"]
    after = say(text="the third of may nineteen eighty five")
    assert any("on account 4 2 7 1 2 3 4 5" in line for line in after["lines"])
    say(text="yes")
    say(text="yes")
    done = say(hangup=True)
    assert done["ended"] and "account_number = '42712345'" in done["summary"]
    assert any(
        "[webhook POST http://127.0.0.1:8080/cards/block: simulated 200" in line for line in done["lines"]
    )
    assert (
        client.post(
            f"/api/console/{session['id']}", json={"text": "x"}, headers=accounts["viewer"].headers
        ).status_code
        == 403
    )
    assert (
        client.post(
            f"/api/console/{session['id']}", json={"text": "x"}, headers=accounts["admin"].headers
        ).status_code
        == 404
    )  # not theirs
    assert client.post("/api/console/nope", json={}, headers=h).status_code == 404
    # the page, without script: forms post the caller's moves
    csrf = login(client, "editor1")
    page = client.post("/agents/card-block/console", data={"version": 2, "csrf_token": csrf})
    assert page.status_code == 200 and "agent&gt; Hello from Northbank" in page.text
    page = client.post(page.url.path, data={"text": "operator please", "action": "say", "csrf_token": csrf})
    assert "transfer to" in page.text and 'id="ended"' in page.text


def test_replay_from_the_call_list_and_replay_sets(client, accounts, store) -> None:
    """The pages around replay (the recognisers' side is tested on a live node's calls in test_node):
    calls ticked on the list are replayed, or saved as a set the agent page replays."""
    store.create_agent("card-block", agent_yaml(), accounts["editor"].principal)
    store.ingest([card_block_call("rp-1"), card_block_call("rp-2", operator=True)])
    csrf = login(client, "editor1")
    listing = client.get("/calls?agent=card-block").text
    assert 'name="calls" value="rp-1"' in listing and 'id="replay"' in listing
    page = client.post(
        "/agents/card-block/replay", data={"calls": ["rp-1", "rp-2"], "action": "replay", "csrf_token": csrf}
    )
    assert page.status_code == 200, page.text
    assert page.text.count("<tr class=") == 2 and "Every call ends as it did." in page.text
    # records without audio replay their transcripts: a version that asks for 9 digits changes them
    nine = agent_yaml().replace("digits: 8", "digits: 9")
    store.save_version("card-block", nine, 1, accounts["editor"].principal)
    page = client.post(
        "/agents/card-block/replay", data={"calls": ["rp-1", "rp-2"], "action": "replay", "csrf_token": csrf}
    )
    assert "1 of 2 calls end differently." in page.text and "slot account_number" in page.text
    saved = client.post(
        "/agents/card-block/replay",
        data={"calls": ["rp-2"], "action": "save", "new_set": "smoke", "required": "on", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    agent_page = client.get("/agents/card-block").text
    assert "smoke (1 calls, required to publish)" in agent_page
    assert (
        client.post("/agents/card-block/publish", data={"version": 1, "csrf_token": csrf}).status_code == 200
    )
    saved = client.post(
        "/agents/card-block/replay",
        data={"calls": ["rp-1"], "action": "save", "new_set": "digits", "required": "on", "csrf_token": csrf},
    )
    refused = client.post("/agents/card-block/publish", data={"version": 2, "csrf_token": csrf})
    assert refused.status_code == 409 and "required replay set" in refused.text
    assert store.agent("card-block")["live"] == 1
    forced = client.post(
        "/api/agents/card-block/publish", json={"version": 2, "force": True}, headers={"X-CSRF-Token": csrf}
    )
    assert forced.status_code == 200 and forced.json()["live"] == 2
    viewer = accounts["viewer"].headers
    assert (
        client.post("/api/agents/card-block/replay", json={"calls": ["rp-1"]}, headers=viewer).status_code
        == 403
    )
