"""Call records in the studio: ingest, caller data sealed at rest, filters, masking, reveal, audio,
retention and key rotation."""

import base64
import io
import json
import wave

import numpy as np
import sqlalchemy as sa
from tests.studio.conftest import agent_yaml, card_block_call

from parley.agent.sealing import Keyring


def publish_card_block(client, accounts) -> None:
    h = accounts["editor"].headers
    client.post("/api/agents", json={"name": "card-block", "yaml": agent_yaml()}, headers=h)
    client.post("/api/agents/card-block/publish", json={"version": 1}, headers=h)


def ingest(client, accounts, *records) -> dict:
    lines = "\n".join(json.dumps(r) for r in records) + "\n"  # as `parley serve --records` writes them
    r = client.post("/api/calls", content=lines.encode(), headers=accounts["editor"].headers)
    assert r.status_code == 200, r.text
    return r.json()


def wav_of(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((np.sin(np.arange(int(8000 * seconds)) / 5) * 8000).astype("<i2").tobytes())
    return out.getvalue()


def test_ingest_seals_caller_data_at_rest_and_is_idempotent(client, accounts, store) -> None:
    publish_card_block(client, accounts)
    record = card_block_call("call-a", account="24681357")
    record["audio"] = {"0": {"sensitive": True, "value": base64.b64encode(wav_of(0.5)).decode()}}
    assert ingest(client, accounts, record) == {"received": 1, "new": 1}
    assert ingest(client, accounts, record, card_block_call("call-b")) == {"received": 2, "new": 1}
    with store.engine.connect() as db:
        dumped = json.dumps([list(map(str, row)) for row in db.execute(sa.text("SELECT * FROM calls"))])
        audio = db.execute(sa.text("SELECT kid, data FROM turn_audio")).all()
    assert "24681357" not in dumped and "2 4 6 8" not in dumped and "eighty five" not in dumped
    assert "Welcome to Northbank" in dumped  # what is not caller data stays readable
    assert len(audio) == 1 and audio[0][0] == "k1" and b"RIFF" not in bytes(audio[0][1])
    wav = client.get("/api/calls/call-a/audio/0", headers=accounts["editor"].headers)
    assert wav.status_code == 200 and wav.content == wav_of(0.5)
    assert client.get("/api/calls/call-a/audio/0", headers=accounts["viewer"].headers).status_code == 403
    assert client.get("/api/calls/call-a/audio/3", headers=accounts["editor"].headers).status_code == 404


def test_bad_records_store_nothing(client, accounts) -> None:
    h = accounts["editor"].headers
    good = card_block_call("call-ok")
    for body in (
        b"not json",
        b'[{"record": "other/1"}]',
        json.dumps([good, {"record": "parley.call/1"}]).encode(),
    ):
        assert client.post("/api/calls", content=body, headers=h).status_code == 422
    foreign = Keyring([("k7", bytes(32))]).seal(card_block_call("call-foreign"))
    r = client.post("/api/calls", content=json.dumps([foreign]).encode(), headers=h)
    assert r.status_code == 422 and "k7" in r.json()["detail"]
    assert client.get("/api/calls", headers=h).json()["total"] == 0
    assert (
        client.post(
            "/api/calls", content=json.dumps([good]).encode(), headers=accounts["viewer"].headers
        ).status_code
        == 403
    )


def test_filters(client, accounts, store, monkeypatch) -> None:
    publish_card_block(client, accounts)
    ingest(
        client,
        accounts,
        card_block_call("c1", started_at="2026-03-01T10:00:00+00:00"),
        card_block_call("c2", version=2, started_at="2026-03-02T10:00:00+00:00"),
        card_block_call("c3", operator=True, started_at="2026-03-03T10:00:00+00:00"),
    )
    h = accounts["viewer"].headers

    def ids(**query) -> list[str]:
        r = client.get("/api/calls", params=query, headers=h)
        assert r.status_code == 200, r.text
        return [c["call_id"] for c in r.json()["calls"]]

    assert ids() == ["c3", "c2", "c1"]
    assert ids(agent="card-block", version=2) == ["c2"]
    assert ids(outcome="transferred") == ["c3"] and ids(transferred=True) == ["c3"]
    assert ids(transferred=False) == ["c2", "c1"]
    assert ids(since="2026-03-02T00:00:00Z", until="2026-03-03T00:00:00Z") == ["c2"]
    assert ids(slot="date_of_birth") == ["c2", "c1"]
    assert ids(slot="account_number", slot_status="missing") == ["c3"]
    assert ids(min_duration=0, max_duration=3600) == ["c3", "c2", "c1"]
    assert ids(agent="nobody") == []
    assert ids(limit=1, offset=1) == ["c2"]
    assert client.get("/api/calls", params={"limit": 0}, headers=h).status_code == 422
    import parley.studio.store

    monkeypatch.setattr(parley.studio.store, "COUNT_CAP", 1)  # counting stops past the cap
    assert store.calls(agent="card-block")[0] == 2


def test_viewer_sees_caller_data_masked_and_cannot_reveal(client, accounts, store) -> None:
    publish_card_block(client, accounts)
    ingest(client, accounts, card_block_call("call-m", account="11223344"))
    viewer = client.get("/api/calls/call-m", headers=accounts["viewer"].headers)
    assert viewer.status_code == 200
    text = json.dumps(viewer.json(), ensure_ascii=False)
    assert "11223344" not in text and "1 1 2 2" not in text and "3344" not in text and "1985" not in text
    record = viewer.json()["record"]
    assert record["slots"]["account_number"] == "‹account_number›"
    assert record["turns"][0]["transcript"] == "‹account_number›"
    confirm = next(p["text"] for p in record["prompts"] if p["step"] == "confirm_block")
    assert "on account ‹account_number›" in confirm  # the prompt's template, slots named
    assert client.get("/api/calls/call-m?reveal=true", headers=accounts["viewer"].headers).status_code == 403
    editor = client.get("/api/calls/call-m?reveal=true", headers=accounts["editor"].headers).json()
    assert editor["record"]["slots"]["account_number"] == "11223344"
    assert editor["record"]["turns"][0]["hypotheses"][0] == {
        "engine": "sphinx-grammar",
        "text": "1 1 2 2 3 3 4 4",
        "confidence": 0.95,
        "chosen": True,
    }
    reveals = [e for e in store.audit_log() if e["action"] == "reveal"]
    assert [(e["user"], e["target"]) for e in reveals] == [("editor1", "call call-m")]


def test_retention_purges_old_calls_and_their_audio(client, accounts, store) -> None:
    from datetime import UTC, datetime

    publish_card_block(client, accounts)
    old = card_block_call("old", started_at="2026-01-01T00:00:00+00:00")
    old["audio"] = {"0": {"sensitive": True, "value": base64.b64encode(wav_of(0.1)).decode()}}
    ingest(client, accounts, old, card_block_call("new", started_at="2026-03-01T00:00:00+00:00"))
    r = client.put("/api/agents/card-block/retention", json={"days": 30}, headers=accounts["admin"].headers)
    assert r.status_code == 200 and r.json()["retention_days"] == 30
    assert (
        client.put(
            "/api/agents/card-block/retention", json={"days": 30}, headers=accounts["editor"].headers
        ).status_code
        == 403
    )
    assert store.purge(now=datetime(2026, 3, 10, tzinfo=UTC)) == 1
    assert [c["call_id"] for c in store.calls()[1]] == ["new"]
    with store.engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM turn_audio")).scalar() == 0
        slots = db.execute(sa.text("SELECT call_id, count(*) FROM call_slots GROUP BY call_id")).all()
        assert len(slots) == 1  # the new call's only


def test_rotation_reseals_every_value_and_old_data_stays_readable(store, keyring) -> None:
    record = card_block_call("rot", account="99887766")
    record["audio"] = {"0": {"sensitive": True, "value": base64.b64encode(b"RIFF-audio").decode()}}
    store.ingest([record])
    before = store.call("rot")["record"]
    store.keyring = Keyring([("k1", bytes(range(32))), ("k2", bytes(32))])
    changed = store.rotate(batch=1)
    assert changed > 5
    after = store.call("rot")["record"]
    assert after["slots"]["account_number"]["kid"] == "k2"
    assert store.keyring.unseal(after) == keyring.unseal(before)
    assert store.turn_audio("rot", 0) == b"RIFF-audio"
    with store.engine.connect() as db:
        assert db.execute(sa.text("SELECT kid FROM turn_audio")).scalar() == "k2"
    assert store.rotate() == 0


def test_analytics_of_a_version(client, accounts) -> None:
    publish_card_block(client, accounts)
    ingest(
        client,
        accounts,
        card_block_call("an-1"),
        card_block_call("an-2"),
        card_block_call("an-3", operator=True),
        card_block_call("an-4", hang_up_early=True),
        card_block_call("an-other-version", version=2),
    )
    r = client.get("/api/agents/card-block/analytics", headers=accounts["viewer"].headers)
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["version"] == 1 and f["calls"] == 4
    assert f["transfer_rate"] == 0.25
    assert f["outcomes"]["abandoned"]["calls"] == 3  # the card-block example ends on the caller's hang-up
    account = next(n for n in f["no_match"] if n["step"] == "account_number")
    assert (account["slot"], account["answers"], account["no_match"]) == ("account_number", 4, 1)
    assert {d["step"] for d in f["drop_off"]} >= {"account_number"}
    assert (f["turn_latency_ms"]["turns"], f["turn_latency_ms"]["p50"]) == (2, 310.0)  # to first audio out
    assert (f["decision_latency_ms"]["turns"], f["decision_latency_ms"]["p95"]) == (2, 225.0)
    assert f["engine_wins"] == {"digits": {"sphinx-grammar": {"wins": 2, "share": 1.0}}}
    page = client.get("/agents/card-block/analytics?version=1", headers=accounts["viewer"].headers)
    assert page.status_code == 200 and "25.0 %" in page.text and 'id="engine-wins"' in page.text
    assert (
        client.get(
            "/api/agents/card-block/analytics?version=9", headers=accounts["viewer"].headers
        ).status_code
        == 404
    )


def test_the_running_studio_purges_by_retention(store, accounts) -> None:
    import time

    from fastapi.testclient import TestClient

    from parley.studio.app import create_app

    store.create_agent("card-block", agent_yaml(), accounts["admin"].principal)
    store.set_retention("card-block", 30, accounts["admin"].principal)
    store.ingest(
        [card_block_call("ancient", started_at="2001-01-01T00:00:00+00:00"), card_block_call("recent")]
    )
    with TestClient(create_app(store, purge_every_s=0.05)) as client:  # the lifespan runs the purge
        deadline = time.monotonic() + 10
        while store.calls()[0] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        ids = [
            c["call_id"] for c in client.get("/api/calls", headers=accounts["admin"].headers).json()["calls"]
        ]
    assert ids == ["recent"]
