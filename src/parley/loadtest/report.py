"""The load test's reports: a rich summary table for the terminal and a self-contained HTML report.

The HTML report is one file that opens offline: inline CSS, plots as inline SVG drawn by matplotlib
(``Figure`` objects, no pyplot state, no display), no script and no external URL. Every string that
comes from a call record (scripts, errors, caller text) is escaped. matplotlib is imported only when
a report is written, so the load tester starts without paying for it.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parley.loadtest import summary as stats
from parley.loadtest.summary import FAILED_OUTCOMES, Record, Verdict, threshold_verdicts

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The report's figures, in page order: (id, caption).
FIGURES = (
    ("concurrency", "Concurrent calls over time"),
    ("calls-per-s", "Calls started per second"),
    ("setup-histogram", "Setup time (INVITE → 200 OK)"),
    ("turn-latency-histogram", "Turn latency (caller end of speech → first agent audio)"),
    ("latency-over-time", "Latency percentiles over time"),
    ("failures", "Failures by outcome and SIP final response"),
    ("slot-accuracy", "Slot accuracy per slot type"),
    ("rtp-loss", "Received RTP loss over time"),
)
MAX_LISTED_FAILURES = 100
MAX_LISTED_TURNS = 20


# --- figures as text ------------------------------------------------------------------------------


def _number(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def _percentiles(figures: Mapping[str, Any], unit: str, digits: int = 1) -> str:
    if not figures["count"]:
        return "–"
    parts = " · ".join(f"{key} {figures[key]:.{digits}f}" for key in ("p50", "p95", "p99", "max"))
    return f"{parts} {unit}"


def _status_label(status: str) -> str:
    return "no response" if status == "none" else status


def _accuracy(figures: Mapping[str, Any]) -> str:
    return f"{_number(figures['pct'], ' %')} ({figures['correct']} of {figures['total']} right)"


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary's key figures as (label, text) rows, shared by the terminal table and the HTML."""
    outcomes = ", ".join(f"{name} {count}" for name, count in summary["outcomes"].items() if count) or "–"
    statuses = ", ".join(f"{_status_label(code)} ×{count}" for code, count in summary["sip_status"].items())
    turns = summary["turns"]
    slots = summary["slots"]
    unscored = slots.get("not_reached", 0)
    rtp = summary["rtp"]
    rows = [
        ("duration", f"{summary['duration_s']:.1f} s"),
        ("calls attempted", f"{summary['attempted']} ({summary['calls_per_s']:.2f} calls/s)"),
        ("calls answered", str(summary["answered"])),
        ("calls failed", f"{summary['failed']} ({_number(summary['failed_pct'], ' %', 2)})"),
        ("outcomes", outcomes),
        ("SIP final responses", statuses or "–"),
        ("peak concurrent calls", str(summary["peak_concurrency"])),
        ("setup time", f"{_percentiles(summary['setup_ms'], 'ms')} ({summary['setup_ms']['count']} calls)"),
        (
            "turn latency",
            f"{_percentiles(summary['reply_latency_ms'], 'ms')} ({turns['replied']} of {turns['total']} turns"
            f" replied, {turns['prompt_timeouts']} prompt timeouts)",
        ),
        ("call duration", _percentiles(summary["call_duration_s"], "s")),
        ("slot accuracy", _accuracy(slots) + (f", {unscored} not reached" if unscored else "")),
    ]
    rows += [(f"{slot_type} slots", _accuracy(by_type)) for slot_type, by_type in slots["by_type"].items()]
    for name, figures in slots.get("by_slot", {}).items():
        scored = figures["right"] + figures["wrong"]
        text = f"{_number(figures['pct'], ' %')} ({figures['right']} of {scored} right)"
        rows.append(
            (
                f"slot {name}",
                text + (f", {figures['not_reached']} not reached" if figures["not_reached"] else ""),
            )
        )
    loss = f"loss {_number(rtp['loss_pct'], ' %', 2)} ({rtp['lost']} of {rtp['expected']} packets)"
    jitter = f"jitter mean {_number(rtp['mean_jitter_ms'], ' ms')} max {_number(rtp['max_jitter_ms'], ' ms')}"
    gaps = f"{rtp['gaps']} gaps in {rtp['calls_with_gaps']} calls"
    rows += [("RTP received", f"{loss}, {jitter}, {gaps}"), ("webhook posts", str(summary["webhook_posts"]))]
    return rows


def print_summary(
    summary: Mapping[str, Any], console: Console, thresholds: Mapping[str, float | None] | None = None
) -> None:
    """Print the summary table and, when ``thresholds`` are given, each one's verdict."""
    table = Table(title="Load test summary", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    for label, text in summary_rows(summary):
        table.add_row(escape(label), escape(text))  # slot types come from the records
    console.print(table)
    if thresholds:
        verdicts = Table(title="Thresholds", show_header=False, title_justify="left")
        verdicts.add_column("verdict")
        verdicts.add_column("figure")
        for verdict in threshold_verdicts(summary, thresholds):
            mark = "[green]met[/]" if verdict.met else "[bold red]MISSED[/]"
            verdicts.add_row(mark, escape(verdict.sentence))
        console.print(verdicts)


# --- plots ----------------------------------------------------------------------------------------


def _svg(figure: Figure, figure_id: str) -> str:
    """The figure as an inline ``<svg>`` element whose ids are prefixed with ``figure_id``."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": figure_id}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)  # the HTML parser knows the SVG namespaces
    svg = re.sub(r'\bid="', f'id="{figure_id}-', svg)
    svg = svg.replace('href="#', f'href="#{figure_id}-').replace("url(#", f"url(#{figure_id}-")
    return re.sub(r'<svg width="[^"]*" height="[^"]*"', '<svg role="img"', svg, count=1)


@dataclass(frozen=True)
class _PlotData:
    """What every plot draws from."""

    records: Sequence[Record]
    summary: Mapping[str, Any]
    thresholds: Mapping[str, float | None]
    step_s: float
    end_s: float


_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#777777"


def _no_data(axes: Axes, what: str) -> None:
    axes.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=axes.transAxes, color=_GREY)
    axes.set_xticks([])
    axes.set_yticks([])


def _over_time(
    axes: Axes, series: Mapping[str, list], key: str, step_s: float, label: str, **style: Any
) -> tuple[list[float], list[float]]:
    """Each bucket's value drawn across the bucket's width; returns the points drawn."""
    times = [*series["t"], series["t"][-1] + step_s]
    values = [float("nan") if value is None else value for value in series[key]]
    values.append(values[-1])
    axes.step(times, values, where="post", label=label, **style)
    return times, values


def _limit_line(axes: Axes, limit: float | None, label: str, *, vertical: bool = False) -> None:
    """A threshold's line, labelled ``label`` with ``{}`` standing for the limit; none when not set."""
    if limit is None:
        return
    style = {"color": _GREY, "linestyle": ":", "linewidth": 1.5, "label": label.format(f"{limit:g}")}
    if vertical:
        axes.axvline(limit, **style)
    else:
        axes.axhline(limit, **style)


def _time_axis(axes: Axes, ylabel: str, data: _PlotData) -> None:
    axes.set_xlim(0, len(stats.bucket_starts(data.end_s, data.step_s)) * data.step_s)
    axes.set_xlabel("time since start (s)")
    axes.set_ylabel(ylabel)
    axes.set_ylim(bottom=0)


def _plot_concurrency(figure: Figure, data: _PlotData) -> None:
    axes = figure.subplots()
    if not data.summary["answered"]:
        _no_data(axes, "answered calls")
        return
    series = stats.concurrency_series(data.records, data.step_s, data.end_s)
    times, calls = _over_time(axes, series, "calls", data.step_s, "peak in bucket", color=_BLUE)
    axes.fill_between(times, calls, step="post", alpha=0.25, color=_BLUE)
    _time_axis(axes, f"calls in progress (peak per {data.step_s:g} s)", data)


def _plot_calls_per_s(figure: Figure, data: _PlotData) -> None:
    axes = figure.subplots()
    if not data.records:
        _no_data(axes, "calls")
        return
    series = stats.calls_per_s_series(data.records, data.step_s, data.end_s)
    # attempted: a wide pale line under the failed one, so that neither hides the other where they
    # are equal (every call failing) or where failed is zero (on the axis)
    _over_time(axes, series, "attempted", data.step_s, "attempted", color=_BLUE, linewidth=4, alpha=0.45)
    _over_time(axes, series, "failed", data.step_s, "failed", color=_RED, linewidth=1.5, linestyle="--",
               zorder=3)  # fmt: skip
    _time_axis(axes, f"calls/s (per {data.step_s:g} s)", data)
    axes.legend(loc="upper right", fontsize="small")


def _histogram(axes: Axes, values: Sequence[float], figures: Mapping[str, Any], limit: float | None) -> None:
    axes.hist(values, bins=min(50, max(10, len(values) // 20)), color=_BLUE, alpha=0.8)
    for key, color in (("p50", _GREEN), ("p95", _ORANGE), ("p99", _RED)):
        axes.axvline(figures[key], color=color, linestyle="--", label=f"{key} {figures[key]:.1f} ms")
    _limit_line(axes, limit, "p95 max {} ms", vertical=True)
    axes.set_xlabel("ms")
    axes.set_ylabel("count")
    axes.legend(loc="upper right", fontsize="small")


def _plot_setup_histogram(figure: Figure, data: _PlotData) -> None:
    axes = figure.subplots()
    values = [record["setup_ms"] for record in data.records if record.get("setup_ms") is not None]
    if not values:
        _no_data(axes, "answered calls")
        return
    _histogram(axes, values, data.summary["setup_ms"], data.thresholds.get("max_p95_setup_ms"))


def _plot_turn_histogram(figure: Figure, data: _PlotData) -> None:
    axes = figure.subplots()
    values = [
        turn["reply_latency_ms"]
        for record in data.records
        for turn in record.get("turns") or ()
        if turn.get("reply_latency_ms") is not None
    ]
    if not values:
        _no_data(axes, "agent replies")
        return
    _histogram(axes, values, data.summary["reply_latency_ms"], data.thresholds.get("max_p95_turn_latency_ms"))


def _plot_latency_over_time(figure: Figure, data: _PlotData) -> None:
    axes = figure.subplots()
    turns = stats.turn_latency_series(data.records, data.step_s, data.end_s)
    setups = stats.setup_time_series(data.records, data.step_s, data.end_s)
    if not any(turns["count"]) and not any(setups["count"]):
        _no_data(axes, "latencies")
        return
    _over_time(axes, turns, "p50", data.step_s, "turn p50", color=_BLUE)
    _over_time(axes, turns, "p95", data.step_s, "turn p95", color=_BLUE, linestyle="--")
    _over_time(axes, setups, "p50", data.step_s, "setup p50", color=_ORANGE)
    _over_time(axes, setups, "p95", data.step_s, "setup p95", color=_ORANGE, linestyle="--")
    turn_limit = data.thresholds.get("max_p95_turn_latency_ms")
    _limit_line(axes, turn_limit, "turn p95 max {} ms")
    _time_axis(axes, f"ms (per {data.step_s:g} s)", data)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize="small", ncols=3, frameon=False)


def _bars(axes: Axes, counts: Mapping[str, int], colors: Sequence[str], title: str) -> None:
    bars = axes.barh(range(len(counts)), list(counts.values()), color=colors)
    axes.set_yticks(range(len(counts)), list(counts))
    axes.invert_yaxis()
    axes.bar_label(bars, padding=2, fontsize="small")
    axes.set_title(title, fontsize="medium")
    axes.margins(x=0.2)


def _plot_failures(figure: Figure, data: _PlotData) -> None:
    by_outcome, by_status = figure.subplots(1, 2)
    outcomes = {name: count for name, count in data.summary["outcomes"].items() if count}
    if outcomes:
        colors = [_RED if name in FAILED_OUTCOMES else _BLUE for name in outcomes]
        _bars(by_outcome, outcomes, colors, "calls by outcome")
    else:
        _no_data(by_outcome, "calls")
    statuses = {_status_label(status): count for status, count in data.summary["sip_status"].items()}
    if statuses:
        colors = [_BLUE if status.startswith("2") else _RED for status in statuses]
        _bars(by_status, statuses, colors, "calls by SIP final response")
    else:
        _no_data(by_status, "calls")


def _plot_slot_accuracy(figure: Figure, data: _PlotData) -> None:
    axes = figure.subplots()
    by_type = data.summary["slots"]["by_type"]
    if not by_type:
        _no_data(axes, "slots")
        return
    limit = data.thresholds.get("min_slot_accuracy_pct")
    pcts = [figures["pct"] for figures in by_type.values()]
    colors = [_BLUE if limit is None else _GREEN if pct >= limit else _RED for pct in pcts]
    labels = [slot_type.replace("$", r"\$") for slot_type in by_type]  # no mathtext from record strings
    bars = axes.bar(labels, pcts, color=colors)
    for bar, pct in zip(bars, pcts, strict=True):
        if not pct:  # a 0 % bar has no height: outline it so it is seen, and say 0 %
            bar.set_height(0.8)
            bar.set_edgecolor(_RED)
    axes.bar_label(
        bars,
        labels=[f"{f['pct']:.0f} % ({f['correct']}/{f['total']})" for f in by_type.values()],
        padding=2,
        fontsize="small",
    )
    _limit_line(axes, limit, "min {} %")
    if limit is not None:
        axes.legend(loc="lower right", fontsize="small")
    axes.set_ylabel("% right")
    axes.set_ylim(0, 110)
    axes.tick_params(axis="x", labelrotation=30)


def _plot_rtp_loss(figure: Figure, data: _PlotData) -> None:
    axes = figure.subplots()
    series = stats.rtp_loss_series(data.records, data.step_s, data.end_s)
    if all(value is None for value in series["loss_pct"]):
        _no_data(axes, "received audio")
        return
    _over_time(axes, series, "loss_pct", data.step_s, "loss", color=_RED, clip_on=False, zorder=3)  # 0 shows
    limit = data.thresholds.get("max_rtp_loss_pct")
    _limit_line(axes, limit, "max {} %")
    if limit is not None:
        axes.legend(loc="upper right", fontsize="small")
    received = data.summary["rtp"]
    overall = f"overall {received['loss_pct']:.2f} % of {received['expected']} packets lost"
    axes.set_title(overall, fontsize="small")
    axes.set_ylim(0, max(1.0, *(value or 0.0 for value in series["loss_pct"])) * 1.1)
    _time_axis(axes, f"% packets lost (calls started per {data.step_s:g} s)", data)


_DRAWERS: dict[str, Callable[[Figure, _PlotData], None]] = {
    "concurrency": _plot_concurrency,
    "calls-per-s": _plot_calls_per_s,
    "setup-histogram": _plot_setup_histogram,
    "turn-latency-histogram": _plot_turn_histogram,
    "latency-over-time": _plot_latency_over_time,
    "failures": _plot_failures,
    "slot-accuracy": _plot_slot_accuracy,
    "rtp-loss": _plot_rtp_loss,
}


def render_figures(
    records: Sequence[Record],
    summary: Mapping[str, Any],
    thresholds: Mapping[str, float | None] | None = None,
) -> dict[str, str]:
    """Every report figure as inline SVG, by figure id (see ``FIGURES``); limits drawn where set."""
    from matplotlib.figure import Figure

    # one time axis for every plot: the run, and any call or reply that outlasted it
    _, call_ends = stats.call_intervals(records)
    replies = [turn.get("speech_end") or 0.0 for record in records for turn in record.get("turns") or ()]
    end_s = max([summary["duration_s"], *(record["started"] for record in records), *call_ends, *replies])
    data = _PlotData(records, summary, thresholds or {}, stats.default_step_s(end_s), end_s)
    svgs = {}
    for figure_id, _ in FIGURES:
        figure = Figure(figsize=(6.4, 3.4), layout="constrained")
        _DRAWERS[figure_id](figure, data)
        svgs[figure_id] = _svg(figure, figure_id)
    return svgs


# --- the HTML page --------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.missed { color: #b00020; font-weight: bold; } .met { color: #1b7a1b; }
.failures { border: 2px solid #b00020; background: #fff0f0; padding: 8px 16px; }
.passed { border: 2px solid #1b7a1b; background: #f0fff0; padding: 8px 16px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid #ddd; padding: 8px; }
figcaption { font-weight: bold; margin-bottom: 4px; }
figure svg { width: 100%; height: auto; display: block; }
details pre { background: #f8f8f8; padding: 8px; overflow-x: auto; }
"""


def _cell(value: Any) -> str:
    return "<td>" + ("–" if value is None else html.escape(str(value))) + "</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(header)}</th>" for header in headers)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdicts_html(verdicts: Sequence[Verdict], failures: Sequence[str]) -> str:
    parts = []
    if failures:
        items = "".join(f"<li>{html.escape(sentence)}</li>" for sentence in failures)
        parts.append(
            f'<div class="failures" id="thresholds-missed"><p>Thresholds missed:</p><ul>{items}</ul></div>'
        )
    elif verdicts:
        parts.append('<div class="passed" id="thresholds-met"><p>Every threshold was met.</p></div>')
    if verdicts:
        rows = "".join(
            f'<tr><td class="{"met" if verdict.met else "missed"}">{"met" if verdict.met else "MISSED"}</td>'
            f"<td>{html.escape(verdict.key)}</td><td>{html.escape(verdict.sentence)}</td></tr>"
            for verdict in verdicts
        )
        parts.append(
            f"<table><thead><tr><th>verdict</th><th>threshold</th><th>figure</th></tr></thead>{rows}</table>"
        )
    return "".join(parts)


def _failed_calls_html(records: Sequence[Record]) -> str:
    failed = [record for record in records if record["outcome"] in FAILED_OUTCOMES | {"aborted"}]
    if not failed:
        return "<p>No call failed.</p>"
    rows = [
        (
            record.get("index"),
            f"{record['started']:.3f}",
            record.get("script"),
            record.get("sip_status"),
            record["outcome"],
            record.get("error"),
        )
        for record in failed[:MAX_LISTED_FAILURES]
    ]
    listed = f"<p>First {MAX_LISTED_FAILURES} of {len(failed)}.</p>"
    note = listed if len(failed) > MAX_LISTED_FAILURES else ""
    return note + _table(("call", "started (s)", "script", "SIP status", "outcome", "error"), rows)


def _slots_html(summary: Mapping[str, Any]) -> str:
    """Per slot: right, wrong, not reached; then the wrong ones as expected-vs-heard pairs."""
    by_slot = summary["slots"].get("by_slot", {})
    if not by_slot:
        return "<p>No slots were expected.</p>"
    rows = [
        (name, f["type"], f["right"], f["wrong"], f["not_reached"], _number(f["pct"], " %"))
        for name, f in by_slot.items()
    ]
    table = _table(("slot", "type", "right", "wrong", "not reached", "accuracy"), rows)
    pairs = [
        (name, m["expected"], m["heard"], m["call"]) for name, f in by_slot.items() for m in f["mismatches"]
    ]
    if not pairs:
        return table + "<p>Every scored value was right.</p>"
    return table + "<h3>Expected vs heard</h3>" + _table(("slot", "expected", "heard", "call"), pairs)


def _slowest_turns_html(records: Sequence[Record]) -> str:
    turns = [
        (record, turn)
        for record in records
        for turn in record.get("turns") or ()
        if turn.get("reply_latency_ms") is not None
    ]
    if not turns:
        return "<p>No agent reply was measured.</p>"
    turns.sort(key=lambda pair: pair[1]["reply_latency_ms"], reverse=True)
    rows = [
        (
            record.get("index"),
            record.get("script"),
            turn.get("index"),
            turn.get("action"),
            turn.get("text"),
            f"{turn['reply_latency_ms']:.1f}",
        )
        for record, turn in turns[:MAX_LISTED_TURNS]
    ]
    return _table(("call", "script", "turn", "action", "caller text", "latency (ms)"), rows)


def render_html(
    records: Sequence[Record],
    summary: Mapping[str, Any],
    *,
    title: str = "Parley load test",
    thresholds: Mapping[str, float | None] | None = None,
    failures: Sequence[str] | None = None,
) -> str:
    """The report page; ``failures`` (missed-threshold sentences) default to those of ``thresholds``."""
    verdicts = threshold_verdicts(summary, thresholds) if thresholds else []
    if failures is None:
        failures = [verdict.sentence for verdict in verdicts if not verdict.met]
    svgs = render_figures(records, summary, thresholds)
    figures = "".join(
        f'<figure id="fig-{figure_id}"><figcaption>{html.escape(caption)}</figcaption>'
        f"{svgs[figure_id]}</figure>"
        for figure_id, caption in FIGURES
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    summary_json = html.escape(json.dumps(summary, indent=2))
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body><h1>{html.escape(title)}</h1><p>Generated {generated}.</p>"
        f"{_verdicts_html(verdicts, failures)}"
        f'<h2>Summary</h2><div id="summary">{_table(("figure", "value"), summary_rows(summary))}</div>'
        f'<h2>Plots</h2><div class="figures">{figures}</div>'
        f'<h2>Slots</h2><div id="slots">{_slots_html(summary)}</div>'
        f'<h2>Failed calls</h2><div id="failed-calls">{_failed_calls_html(records)}</div>'
        f'<h2>Slowest turns</h2><div id="slowest-turns">{_slowest_turns_html(records)}</div>'
        f"<details><summary>Summary as JSON</summary><pre>{summary_json}</pre></details>"
        "</body></html>\n"
    )


def write_html(
    records: Sequence[Record],
    summary: Mapping[str, Any],
    path: str | Path,
    *,
    title: str = "Parley load test",
    thresholds: Mapping[str, float | None] | None = None,
    failures: Sequence[str] | None = None,
) -> Path:
    """Write the self-contained HTML report to ``path`` and return the path."""
    page = render_html(records, summary, title=title, thresholds=thresholds, failures=failures)
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
