"""The load test's summary, threshold checks, terminal table and HTML report."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from parley.loadtest.report import FIGURES, print_summary, render_html, write_html
from parley.loadtest.summary import (
    RecordError,
    calls_per_s_series,
    check_thresholds,
    concurrency_series,
    default_step_s,
    peak_concurrency,
    percentile_series,
    read_records,
    rtp_loss_series,
    summarize,
    threshold_verdicts,
    turn_latency_series,
)

SCRIPT_TEXT = "<script>alert('caller')</script> four two"


def call(
    index: int,
    started: float,
    outcome: str,
    *,
    sip_status: int | None = 200,
    setup_ms: float | None = None,
    duration_s: float | None = None,
    turns: list[dict[str, Any]] | None = None,
    slots: list[dict[str, Any]] | None = None,
    rtp: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A call record in the load tester's layout."""
    return {
        "index": index,
        "worker": index % 2,
        "script": "happy_path" if outcome == "completed" else "other",
        "call_id": f"call-{index}@127.0.0.1",
        "started": started,
        "sip_status": sip_status,
        "setup_ms": setup_ms,
        "outcome": outcome,
        "error": error,
        "duration_s": duration_s,
        "ended_by": "agent" if duration_s is not None else None,
        "turns": turns or [],
        "rtp": rtp,
        "slots": slots or [],
        "webhook_posts": 1 if outcome == "completed" else 0,
    }


def turn(index: int, speech_end: float, latency_ms: float | None, text: str = "four two seven one") -> dict:
    return {
        "index": index,
        "action": "say",
        "text": text,
        "speech_end": speech_end,
        "reply_latency_ms": latency_ms,
        "prompt_timeout": latency_ms is None,
    }


def slot(name: str, slot_type: str, correct: bool) -> dict[str, Any]:
    got = "4271" if correct else "4221"
    return {"name": name, "type": slot_type, "expected": "4271", "got": got, "correct": correct}


def rtp(packets: int, lost: int, jitter_ms: float = 0.5, gaps: int = 0) -> dict[str, Any]:
    return {
        "packets": packets,
        "lost": lost,
        "loss_pct": 100 * lost / (packets + lost) if packets + lost else 0.0,
        "jitter_ms": jitter_ms,
        "gaps": gaps,
    }


def run_records() -> list[dict[str, Any]]:
    """Nine calls over a 10 s run: answered ones, a 503, no answer, a failure and an aborted call."""
    return [
        call(0, 0.0, "completed", setup_ms=40, duration_s=5.0,
             turns=[turn(0, 1.0, 200), turn(1, 3.0, 300)],
             slots=[slot("account", "digits", True), slot("dob", "date", True)], rtp=rtp(250, 0)),
        call(1, 1.0, "completed", setup_ms=50, duration_s=4.0,
             turns=[turn(0, 2.0, 250), turn(1, 4.0, None)],
             slots=[slot("account", "digits", False), slot("dob", "date", True)], rtp=rtp(190, 10, 1.5, 2)),
        call(2, 2.0, "transferred", setup_ms=60, duration_s=3.0, turns=[turn(0, 3.5, 400)],
             slots=[slot("caller", "name", True)], rtp=rtp(148, 2, 1.0)),
        call(3, 3.0, "hung_up_early", setup_ms=70, duration_s=1.0, rtp=rtp(50, 0)),
        # as the runner writes a call it could not place: its slots unscored, its audio figures zero
        call(4, 4.0, "rejected", sip_status=503, slots=[slot("account", "digits", False)], rtp=rtp(0, 0, 0)),
        call(5, 4.5, "no_answer", sip_status=None),
        call(6, 5.0, "failed", sip_status=None, error="<b>no route</b> & timeout"),
        call(7, 6.0, "completed", setup_ms=80, duration_s=2.0,
             turns=[turn(0, 6.5, 350, SCRIPT_TEXT), turn(1, 7.5, 1000)],
             slots=[slot("account", "digits", True)], rtp=rtp(100, 0)),
        call(8, 7.0, "aborted", setup_ms=45, duration_s=0.5, rtp=rtp(20, 0), error="run stopped"),
    ]  # fmt: skip


# --- summary --------------------------------------------------------------------------------------


def test_summary_counts_outcomes_and_failures():
    summary = summarize(run_records(), 10.0)
    assert summary["attempted"] == 9
    assert summary["answered"] == 6
    assert summary["failed"] == 3
    assert summary["failed_pct"] == pytest.approx(100 * 3 / 9)
    assert summary["outcomes"] == {
        "completed": 3, "transferred": 1, "hung_up_early": 1, "rejected": 1,
        "no_answer": 1, "failed": 1, "aborted": 1,
    }  # fmt: skip
    assert summary["sip_status"] == {"200": 6, "503": 1, "none": 2}
    assert summary["ended_by"] == {"agent": 6}
    assert summary["calls_per_s"] == pytest.approx(0.9)
    assert summary["webhook_posts"] == 3
    json.dumps(summary)  # plain JSON-able data


def test_summary_percentiles_are_numpys_linear_ones():
    summary = summarize(run_records(), 10.0)
    # setup times 40 45 50 60 70 80: p50 between 50 and 60, p95 at rank 4.75, p99 at rank 4.95
    assert summary["setup_ms"] == pytest.approx(
        {"count": 6, "mean": 57.5, "p50": 55.0, "p95": 77.5, "p99": 79.5, "max": 80.0}
    )
    # replied turns 200 250 300 350 400 1000; the turn without a reply is counted apart
    latency = summary["reply_latency_ms"]
    assert (latency["count"], latency["p50"], latency["max"]) == (6, 325.0, 1000.0)
    assert latency["p95"] == pytest.approx(850.0)
    assert latency["p99"] == pytest.approx(970.0)
    assert summary["turns"] == {"total": 7, "replied": 6, "no_reply": 1, "prompt_timeouts": 1}
    assert summary["call_duration_s"]["count"] == 6
    assert summary["call_duration_s"]["max"] == 5.0


def test_summary_slot_accuracy_per_type():
    slots = summarize(run_records(), 10.0)["slots"]
    assert (slots["correct"], slots["total"]) == (5, 6)
    assert slots["pct"] == pytest.approx(100 * 5 / 6)
    assert slots["not_reached"] == 1  # the rejected call's slot was never asked for
    assert slots["by_type"] == {
        "date": {"correct": 2, "total": 2, "pct": 100.0},
        "digits": {"correct": 2, "total": 3, "pct": pytest.approx(100 * 2 / 3)},
        "name": {"correct": 1, "total": 1, "pct": 100.0},
    }


def test_summary_rtp_loss_weighs_calls_by_packets():
    received = summarize(run_records(), 10.0)["rtp"]
    assert received["calls"] == 6
    assert (received["packets"], received["lost"], received["expected"]) == (758, 12, 770)
    assert received["loss_pct"] == pytest.approx(100 * 12 / 770)
    assert received["mean_jitter_ms"] == pytest.approx((0.5 + 1.5 + 1.0 + 0.5 + 0.5 + 0.5) / 6)
    assert received["max_jitter_ms"] == 1.5
    assert (received["gaps"], received["calls_with_gaps"]) == (2, 1)


def test_peak_concurrency_counts_answered_calls_in_progress():
    # calls 0-3 overlap at t=3 s (call 3 ends at 4.07 s); unanswered calls take no room
    assert peak_concurrency(run_records()) == 4
    assert summarize(run_records(), 10.0)["peak_concurrency"] == 4
    # a call ending exactly when another starts does not overlap it
    back_to_back = [call(index, float(index), "completed", setup_ms=0, duration_s=1.0) for index in range(2)]
    assert peak_concurrency(back_to_back) == 1


def test_summary_of_a_run_without_calls():
    summary = summarize([], 0.0)
    assert summary["attempted"] == summary["answered"] == summary["failed"] == 0
    assert summary["failed_pct"] is None
    assert summary["calls_per_s"] == 0.0
    assert summary["peak_concurrency"] == 0
    assert summary["setup_ms"] == dict.fromkeys(("mean", "p50", "p95", "p99", "max"), None) | {"count": 0}
    assert summary["reply_latency_ms"]["p95"] is None
    assert summary["slots"] == {
        "correct": 0,
        "total": 0,
        "pct": None,
        "by_type": {},
        "not_reached": 0,
        "by_slot": {},
    }
    assert summary["rtp"]["loss_pct"] is None
    assert summary["sip_status"] == {}


def test_summary_of_failed_calls_only():
    records = [
        call(0, 0.0, "rejected", sip_status=503),
        call(1, 0.5, "failed", sip_status=None, error="timeout"),
    ]
    summary = summarize(records, 1.0)
    assert (summary["failed"], summary["failed_pct"], summary["answered"]) == (2, 100.0, 0)
    assert summary["setup_ms"]["count"] == 0
    assert summary["turns"]["total"] == 0
    assert summary["peak_concurrency"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"outcome": "exploded"}, "'outcome' must be one of"),
        ({"started": None}, "'started' must be a number"),
        ({"started": -1.0}, "'started' must be >= 0"),
        ({"setup_ms": "fast"}, "'setup_ms' must be null or a number"),
        ({"duration_s": -2.0}, "'duration_s' must be null or a number"),
        ({"turns": {"0": {}}}, "'turns' must be a list of objects"),
        ({"turns": [turn(0, 3.5, "slow")]}, "turn 0: 'reply_latency_ms' must be null or a number"),
    ],
)
def test_summary_rejects_bad_records(change, message):
    """A record that breaks the layout is named by its position and index."""
    records = run_records()
    records[3].update(change)
    with pytest.raises(RecordError, match=message) as raised:
        summarize(records, 10.0)
    assert "record 3 (index 3)" in str(raised.value)


@pytest.mark.parametrize("duration", [-1.0, math.nan, math.inf, "10"])
def test_summary_rejects_bad_durations(duration):
    with pytest.raises(ValueError, match="duration_s must be"):
        summarize(run_records(), duration)


def test_read_records_round_trip_and_errors(tmp_path):
    path = tmp_path / "calls.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in run_records()) + "\n")
    assert read_records(path) == run_records()
    path.write_text(json.dumps(run_records()[0]) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"calls.jsonl:2: not JSON"):
        read_records(path)
    path.write_text(json.dumps({**run_records()[0], "outcome": "bad"}) + "\n")
    with pytest.raises(RecordError, match=r"calls.jsonl:1: record 0 \(index 0\): 'outcome'"):
        read_records(path)


# --- time series ----------------------------------------------------------------------------------


def test_concurrency_series_peaks_per_bucket():
    series = concurrency_series(run_records(), 1.0, 10.0)
    assert series["t"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert series["calls"] == [1, 2, 3, 4, 4, 3, 1, 2, 1, 0]
    assert max(series["calls"]) == peak_concurrency(run_records())
    assert concurrency_series([], 1.0) == {"t": [0.0], "calls": [0]}


def test_calls_per_s_series():
    series = calls_per_s_series(run_records(), 2.0, 10.0)
    assert series["t"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert series["attempted"] == [1.0, 1.0, 1.5, 1.0, 0.0]  # calls started per second in each 2 s bucket
    assert series["failed"] == [0.0, 0.0, 1.5, 0.0, 0.0]
    # a run that ends 1.5 s into its last bucket: that bucket's rate is over those 1.5 s
    partial = calls_per_s_series(run_records(), 2.0, 7.5)
    assert partial["t"] == [0.0, 2.0, 4.0, 6.0]
    assert partial["attempted"] == [1.0, 1.0, 1.5, 2 / 1.5]


def test_percentile_series_per_bucket():
    series = percentile_series([0.1, 0.2, 0.3, 0.4, 2.5, 3.0], [10, 20, 30, 40, 500, 7], 1.0, 3.0)
    assert series["t"] == [0.0, 1.0, 2.0]
    assert series["count"] == [4, 0, 2]  # the time at the end falls in the last bucket
    assert series["p50"] == [25.0, None, 253.5]
    assert series["p95"][0] == pytest.approx(38.5)
    assert series["p95"][1] is None
    with pytest.raises(ValueError, match="3 times for 2 values"):
        percentile_series([0, 1, 2], [1, 2], 1.0)
    with pytest.raises(ValueError, match="step_s must be > 0"):
        percentile_series([0], [1], 0.0)


def test_turn_latency_and_rtp_loss_series():
    latency = turn_latency_series(run_records(), 5.0, 10.0)
    assert latency["count"] == [4, 2]  # by the caller's end of speech; the unreplied turn is left out
    assert latency["p50"] == [275.0, 675.0]
    loss = rtp_loss_series(run_records(), 5.0, 10.0)
    assert loss["loss_pct"] == [pytest.approx(100 * 12 / 650), 0.0]


def test_default_step_gives_about_sixty_buckets():
    assert default_step_s(0) == 1.0
    assert default_step_s(60) == 1.0
    assert default_step_s(61) == 2.0
    assert default_step_s(600) == 10.0
    assert default_step_s(3600) == 60.0
    assert default_step_s(10 * 24 * 3600) == 14400.0


# --- thresholds -----------------------------------------------------------------------------------

ALL_MISSED = {
    "max_failed_pct": 0.1,
    "max_p95_turn_latency_ms": 400,
    "max_p95_setup_ms": 50,
    "min_slot_accuracy_pct": 90,
    "max_rtp_loss_pct": 1,
}


def test_thresholds_missed_give_one_sentence_each():
    assert check_thresholds(summarize(run_records(), 10.0), ALL_MISSED) == [
        "failed calls 33.33 % > max 0.1 % (3 of 9 calls rejected, not answered or failed)",
        "p95 turn latency 850.0 ms > max 400 ms (6 measured)",
        "p95 setup time 77.5 ms > max 50 ms (6 measured)",
        "slot accuracy 83.3 % < min 90 % (5 of 6 slots right)",
        "RTP loss 1.56 % > max 1 % (12 of 770 packets lost)",
    ]


def test_thresholds_met_at_their_limits():
    summary = summarize(run_records(), 10.0)
    at_limits = {
        "max_failed_pct": 100 * 3 / 9,
        "max_p95_turn_latency_ms": 850.0,
        "max_p95_setup_ms": 77.5,
        "min_slot_accuracy_pct": 100 * 5 / 6,
        "max_rtp_loss_pct": 100 * 12 / 770,
    }
    assert check_thresholds(summary, at_limits) == []
    verdicts = threshold_verdicts(summary, at_limits)
    assert [verdict.met for verdict in verdicts] == [True] * 5
    assert verdicts[1].sentence == "p95 turn latency 850.0 ms <= max 850 ms (6 measured)"


def test_thresholds_not_set_are_not_checked():
    summary = summarize(run_records(), 10.0)
    assert check_thresholds(summary, {}) == []
    assert check_thresholds(summary, {"max_failed_pct": None, "min_slot_accuracy_pct": 90}) == [
        "slot accuracy 83.3 % < min 90 % (5 of 6 slots right)"
    ]


def test_thresholds_on_a_run_that_measured_nothing_are_missed():
    assert check_thresholds(summarize([], 0.0), ALL_MISSED) == [
        "failed calls: no calls were attempted",
        "p95 turn latency: no agent reply was measured (max 400 ms)",
        "p95 setup time: no call was answered (max 50 ms)",
        "slot accuracy: no slots were checked",
        "RTP loss: no audio was received",
    ]


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ({"max_p99_latency": 10}, "unknown threshold"),
        ({"max_failed_pct": "1%"}, "must be a finite number"),
        ({"max_failed_pct": True}, "must be a finite number"),
        ({"max_failed_pct": math.nan}, "must be a finite number"),
        ({"min_slot_accuracy_pct": -5}, "must be >= 0"),
    ],
)
def test_bad_thresholds_are_rejected(thresholds, message):
    with pytest.raises(ValueError, match=message):
        check_thresholds(summarize(run_records(), 10.0), thresholds)


# --- terminal table -------------------------------------------------------------------------------


def test_print_summary_shows_the_figures_and_verdicts():
    console = Console(record=True, width=200, color_system=None)
    summary = summarize(run_records(), 10.0)
    print_summary(summary, console, thresholds={**ALL_MISSED, "max_failed_pct": 50})
    text = console.export_text()
    for figure in (
        "9 (0.90 calls/s)",
        "3 (33.33 %)",
        "completed 3, transferred 1, hung_up_early 1, rejected 1, no_answer 1, failed 1, aborted 1",
        "200 ×6, 503 ×1, no response ×2",
        "p50 55.0 · p95 77.5 · p99 79.5 · max 80.0 ms (6 calls)",
        "p50 325.0 · p95 850.0 · p99 970.0 · max 1000.0 ms (6 of 7 turns replied, 1 prompt timeouts)",
        "83.3 % (5 of 6 right), 1 not reached",
        "66.7 % (2 of 3 right)",
        "loss 1.56 % (12 of 770 packets)",
        "met",
        "failed calls 33.33 % <= max 50 %",
        "MISSED",
        "p95 turn latency 850.0 ms > max 400 ms",
    ):
        assert figure in text, figure
    assert re.search(r"peak concurrent calls\s*│ 4\s", text)


def test_odd_slot_types_are_shown_as_written(tmp_path):
    """Slot types come from the records: no rich markup, matplotlib mathtext or HTML is read in them."""
    records = run_records()
    records[0]["slots"][0]["type"] = "[bold]<i>$x^$</i>"
    summary = summarize(records, 10.0)
    console = Console(record=True, width=200, color_system=None)
    print_summary(summary, console)
    assert "[bold]<i>$x^$</i> slots │ 100.0 % (1 of 1 right)" in console.export_text()
    page = render_html(records, summary)
    assert "<i>" not in page
    # summary table, plot tick label, slots table, summary JSON (by type, and the slot's type by name)
    assert page.count("[bold]&lt;i&gt;$x^$&lt;/i&gt;") == 5


def test_print_summary_of_an_empty_run():
    console = Console(record=True, width=200, color_system=None)
    print_summary(summarize([], 0.0), console)
    text = console.export_text()
    assert "0 (0.00 calls/s)" in text
    assert "0 (– %)" not in text and "0 (–)" in text
    assert "Thresholds" not in text


# --- HTML report ----------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """Collects what the report's tests check: tags, ids and URL-bearing attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.root_attributes: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "html":
            self.root_attributes = dict(attrs)
        for name, value in attrs:
            if name == "id":
                self.ids.append(value or "")
            if name in ("src", "href", "xlink:href", "action", "data") and value:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


REPORT_THRESHOLDS = {"max_failed_pct": 50, "max_p95_turn_latency_ms": 400}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    """The report of ``run_records`` written once for this module's tests: its path and its text."""
    records = run_records()
    folder = tmp_path_factory.mktemp("report")
    path = write_html(
        records, summarize(records, 10.0), folder / "report.html", title="Card block <nightly>",
        thresholds=REPORT_THRESHOLDS,
    )  # fmt: skip
    return path, path.read_text(encoding="utf-8")


def test_html_report_is_one_self_contained_file(report):
    path, page = report
    assert list(path.parent.iterdir()) == [path]
    parser = PageParser()
    parser.feed(page)
    assert "http://" not in page and "https://" not in page
    assert all(url.startswith("#") for url in parser.urls), parser.urls  # only references inside the page
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    # one inline SVG plot per figure, in its own <figure>, with ids unique across the page
    assert parser.tags.count("svg") == len(FIGURES) == 8
    for figure_id, _ in FIGURES:
        assert f"fig-{figure_id}" in parser.ids
    assert len(parser.ids) == len(set(parser.ids))
    for reference in [url[1:] for url in parser.urls] + re.findall(r"url\(#([^)]+)\)", page):
        assert reference in parser.ids, reference
    assert "<title>Card block &lt;nightly&gt;</title>" in page


def test_html_report_escapes_record_text(report):
    _, page = report
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;caller&#x27;)&lt;/script&gt; four two" in page  # slowest turns table
    assert "&lt;b&gt;no route&lt;/b&gt; &amp; timeout" in page  # failed calls table
    parser = PageParser()
    parser.feed(page)
    assert "b" not in parser.tags


def test_html_report_shows_summary_verdicts_and_limits(report):
    _, page = report
    parser = PageParser()
    parser.feed(page)
    text = " ".join(parser.text)
    assert "thresholds-missed" in parser.ids
    assert "p95 turn latency 850.0 ms &gt; max 400 ms (6 measured)" in page
    assert "failed calls 33.33 % &lt;= max 50 %" in page
    assert "p50 55.0 · p95 77.5 · p99 79.5 · max 80.0 ms (6 calls)" in text
    # the failed calls list: the 503, the unanswered, the failed and the aborted call
    assert text.count("rejected") >= 2 and "run stopped" in text
    # the latency limit is drawn on the turn latency plots (legends are SVG text)
    assert "p95 max 400 ms" in text and "turn p95 max 400 ms" in text
    assert "min 90 %" not in text  # no slot accuracy limit was set


def test_html_report_says_when_every_threshold_was_met():
    summary = summarize([], 0.0)
    passed = render_html([], summary, thresholds={"max_failed_pct": None}, failures=[])
    assert 'id="thresholds-met"' not in passed  # no threshold set: no verdict either way
    records = run_records()
    passed = render_html(records, summarize(records, 10.0), thresholds={"max_failed_pct": 50})
    assert 'id="thresholds-met"' in passed and 'id="thresholds-missed"' not in passed
    explicit = render_html([], summary, failures=["p99 too slow <3"])
    assert "p99 too slow &lt;3" in explicit and 'id="thresholds-missed"' in explicit


def test_html_report_of_an_empty_run(tmp_path):
    page = write_html([], summarize([], 0.0), tmp_path / "empty.html").read_text(encoding="utf-8")
    assert page.count("<svg") == len(FIGURES)
    assert "No call failed." in page and "No agent reply was measured." in page
    assert page.count(">no ") >= 5  # the plots say what they lack instead of drawing empty axes


# --- the report as a browser shows it -------------------------------------------------------------

_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_MEASURE_FIGURES = """<script>
const boxes = {};
for (const figure of document.querySelectorAll("figure")) {
  const box = figure.querySelector("svg").getBoundingClientRect();
  boxes[figure.id] = [box.left, box.top + scrollY, box.width, box.height];
}
document.documentElement.dataset.boxes = JSON.stringify(boxes);
document.documentElement.dataset.height = document.documentElement.scrollHeight;
</script>"""


def _chromium(*arguments: str) -> str:
    command = [_CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout


def _data_attribute(dom: str, name: str) -> str:
    parser = PageParser()
    parser.feed(dom)
    return parser.root_attributes[f"data-{name}"]


@pytest.mark.skipif(_CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
@pytest.mark.timeout(300)
def test_report_plots_render_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    _, page = report
    # the same page with a script that measures where each plot is drawn (it changes no layout)
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", _MEASURE_FIGURES + "</body>"), encoding="utf-8")
    width = 1200
    dom = _chromium(f"--window-size={width},3000", "--dump-dom", path.as_uri())
    boxes = json.loads(_data_attribute(dom, "boxes"))
    height = int(_data_attribute(dom, "height"))
    assert sorted(boxes) == sorted(f"fig-{figure_id}" for figure_id, _ in FIGURES)
    screenshot = tmp_path / "report.png"
    _chromium(f"--window-size={width},{height}", f"--screenshot={screenshot}", path.as_uri())
    pixels = imread(screenshot)[:, :, :3]
    assert pixels.shape[:2] == (height, width)
    for figure_id, (left, top, box_width, box_height) in boxes.items():
        assert box_width > 300 and box_height > 150, (figure_id, box_width, box_height)
        area = pixels[int(top) : int(top + box_height), int(left) : int(left + box_width)]
        ink = np.any(area < 0.9, axis=2).mean()  # share of pixels that are not (nearly) white: ink
        coloured = (np.ptp(area, axis=2) > 0.2).mean()  # share of clearly coloured pixels: the data
        assert 0.02 < ink < 0.9, (figure_id, ink)
        assert coloured > 0.005, (figure_id, coloured)  # 0 when the SVG shapes do not draw


# --- issue 13: the slot table, "not reached", zero bars, failed vs attempted ----------------------------


def keyed_accounts() -> list[dict[str, Any]]:
    """Four answered calls keying the right account; one never reached the webhook (it was declined)."""
    records = [
        call(i, float(i), "completed", setup_ms=40, duration_s=5.0, slots=[slot("account", "digits", True)])
        for i in range(3)
    ]
    declined = call(
        3, 3.0, "completed", setup_ms=40, duration_s=5.0, slots=[slot("account", "digits", False)]
    )
    declined["webhook_posts"] = 0
    return [*records, declined]


def test_slots_of_calls_that_never_reached_the_webhook_are_not_counted_wrong():
    slots = summarize(keyed_accounts(), 10.0)["slots"]
    assert (slots["correct"], slots["total"], slots["pct"]) == (3, 3, 100.0)  # was 75 %: blamed on the slot
    assert slots["not_reached"] == 1
    assert slots["by_slot"]["account"] == {
        "type": "digits", "right": 3, "wrong": 0, "not_reached": 1, "mismatches": [], "pct": 100.0,
    }  # fmt: skip


def test_the_report_has_a_per_slot_expected_vs_heard_table():
    records = keyed_accounts()
    records[1]["slots"] = [{**slot("account", "digits", False), "expected": "42712345", "got": "42712346"}]
    summary = summarize(records, 10.0)
    assert summary["slots"]["by_slot"]["account"]["mismatches"] == [
        {"expected": "42712345", "heard": "42712346", "call": 1}
    ]
    page = render_html(records, summary)
    section = page.split('<div id="slots">', 1)[1].split("</div>", 1)[0]
    assert "<td>account</td><td>digits</td><td>2</td><td>1</td><td>1</td><td>66.7 %</td>" in section
    assert "Expected vs heard" in section
    assert "<td>account</td><td>42712345</td><td>42712346</td><td>1</td>" in section


def test_a_zero_accuracy_bar_is_drawn_and_labelled():
    records = keyed_accounts()[:2]
    for record in records:
        record["slots"] = [slot("dob", "date", False)]
    page = render_html(records, summarize(records, 10.0))
    assert "0 % (0/2)" in page


def test_failed_and_attempted_lines_do_not_hide_each_other():
    from matplotlib.figure import Figure

    from parley.loadtest.report import _plot_calls_per_s, _PlotData

    records = [call(i, float(i), "failed", sip_status=None) for i in range(4)]  # failed == attempted
    figure = Figure()
    _plot_calls_per_s(figure, _PlotData(records, summarize(records, 5.0), {}, 1.0, 5.0))
    attempted, failed = figure.axes[0].lines
    assert list(attempted.get_ydata()) == list(failed.get_ydata())  # the same values...
    assert attempted.get_linewidth() > 2 * failed.get_linewidth()  # ...drawn wide under a thin dashed one
    assert failed.get_linestyle() == "--" and failed.get_zorder() > attempted.get_zorder()
