"""One process's share of a load test: the traffic schedule, each call's script, its record.

:func:`run_worker` owns a :class:`~parley.telephony.manager.CallManager` (the UAC), places the calls
whose index falls to this worker at the times the traffic shape gives (:func:`start_time`), at most
``concurrency`` at once, plays each call's script with a :class:`~parley.loadtest.caller.ScriptedCaller`
and hands every finished call's record (the contract's layout; ``slots`` holds the expected values,
the coordinator fills in what the agent posted) to ``emit``. Setting ``stop`` stops placing calls and
hangs up the calls in progress (their records say ``aborted``). Every wait is bounded: the dial by
``setup_timeout_s``, each prompt by its timeout, each call by ``max_call_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parley.loadtest.audio import AnswerBook
from parley.loadtest.caller import CallEnded, PendingReply, ScriptedCaller
from parley.loadtest.prompts import PromptBook, PromptRecogniser, detour, vocabulary
from parley.loadtest.scenario import (
    BargeIn,
    Say,
    Scenario,
    Traffic,
    WaitPrompt,
    choose_script,
    draw_values,
    load_scenario,
    render_template,
)
from parley.loadtest.shared_rtp import share_rtp_ports
from parley.telephony.call import Call
from parley.telephony.manager import CallManager, DialError

log = logging.getLogger(__name__)
Emit = Callable[[str, Any], None]  # ("started", index) | ("record", record)
HANGUP_WAIT_S = 3.0
MAX_DETOURS = 4  # prompts a wait_prompt {step: ...} follows before the one it waits for
FOLLOW_YES = "yes, that's right"  # the answer to a read-back the script did not plan for
DTMF_KEYS = re.compile(r"[0-9*#A-Da-d]+")


@dataclass(slots=True)
class WorkerConfig:
    """What a worker needs (picklable: sent to spawned processes)."""

    scenario_path: str
    targets: tuple[str, ...]  # call i dials targets[i % len(targets)]
    overrides: dict[str, Any]
    seed: int
    worker: int = 0
    workers: int = 1
    host: str = "127.0.0.1"
    sip_port: int = 5080
    rtp_ports: tuple[int, int] = (40000, 60000)
    t0_wall: float = field(default_factory=time.time)  # the run's start (records' time origin)


def apply_overrides(scenario: Scenario, overrides: dict[str, Any]) -> Scenario:
    """The scenario with command-line traffic options (``calls``, ``rate``, ...) applied and re-checked."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return scenario
    traffic = scenario.traffic.model_dump()
    if "calls" in given:
        traffic["duration_s"] = None
    if "duration_s" in given:
        traffic["calls"] = None
    traffic.update(given)
    return scenario.model_copy(update={"traffic": Traffic.model_validate(traffic)})


# -- the traffic shape ----------------------------------------------------------------------------
def plateau_s(traffic: Traffic) -> float:
    """How long the full rate holds: from the duration, or long enough to place ``calls``."""
    ramps = traffic.ramp_up_s + traffic.ramp_down_s
    if traffic.duration_s is not None:
        return traffic.duration_s - ramps
    assert traffic.calls is not None
    return max(0.0, traffic.calls / traffic.rate - ramps / 2)


def start_time(traffic: Traffic, index: int) -> float | None:
    """When call ``index`` starts (seconds from the run's start), or None when the shape has ended.

    The rate rises linearly over ``ramp_up_s``, holds for :func:`plateau_s`, falls linearly over
    ``ramp_down_s``; call ``k`` starts when the expected number of calls placed so far reaches ``k``.
    """
    if traffic.calls is not None and index >= traffic.calls:
        return None
    t = _start_time(traffic, index)
    if t is not None and traffic.duration_s is not None and t >= traffic.duration_s:
        return None
    return t


def _start_time(traffic: Traffic, index: int) -> float | None:
    rate, up, down, flat = traffic.rate, traffic.ramp_up_s, traffic.ramp_down_s, plateau_s(traffic)
    k = float(index)
    if up > 0:
        if k <= rate * up / 2:
            return math.sqrt(2 * k * up / rate)
        k -= rate * up / 2
    if k <= rate * flat:
        return up + k / rate
    k -= rate * flat
    if down > 0 and k <= rate * down / 2:
        return up + flat + down * (1 - math.sqrt(max(0.0, 1 - 2 * k / (rate * down))))
    if traffic.calls is not None:  # ramps too short for the count: the rest at the end of the shape
        return up + flat + down
    return None


def schedule(traffic: Traffic, worker: int = 0, workers: int = 1) -> Iterator[tuple[int, float]]:
    """(index, start time) of this worker's calls: every ``workers``-th index from ``worker``."""
    index = worker
    while True:
        t = start_time(traffic, index)
        if t is None:
            return
        yield index, t
        index += workers


# -- one call -------------------------------------------------------------------------------------
class _Stopped(Exception):
    """The script stopped early (timeout, expectation missed); the record says why."""


@dataclass(slots=True)
class _Dialogue:
    """Where a call's dialogue is, for ``wait_prompt {step: ...}``: the prompt awaited last, the
    answer given to each ask's question (to repeat it when asked again), and the detours taken."""

    awaited: tuple[str, bool] | None = None  # (step, read_back) of the last wait_prompt {step: ...}
    # step → its question's answer: ("say", (text, pcm)) or ("dtmf", keys)
    answers: dict[str, tuple[str, Any]] = field(default_factory=dict)
    detours: list[dict[str, str]] = field(default_factory=list)

    def answered(self, answer: tuple[str, Any]) -> None:
        """The caller answered the prompt awaited last: remember the answer to a question."""
        if self.awaited is not None and not self.awaited[1]:
            self.answers[self.awaited[0]] = answer
        self.awaited = None


@dataclass(slots=True)
class _Turn:
    index: int
    action: str
    text: str | None
    speech_end: float  # monotonic
    pending: PendingReply
    prompt_timeout: bool = False


class CallRunner:
    """Runs call scripts over one CallManager; shared by a worker's calls."""

    def __init__(
        self,
        scenario: Scenario,
        config: WorkerConfig,
        manager: CallManager,
        answers: AnswerBook,
        prompts: tuple[PromptBook, PromptRecogniser] | None = None,
    ):
        self.scenario = scenario
        self.prompts = prompts
        self.config = config
        self.manager = manager
        self.answers = answers
        self.base = Path(config.scenario_path).resolve().parent
        self.callers: dict[str, ScriptedCaller] = {}
        self._mono0 = time.monotonic() - (time.time() - config.t0_wall)  # monotonic at the run's start

    def rel(self, monotonic: float) -> float:
        return round(monotonic - self._mono0, 4)

    async def on_refer(self, call: Call, target: str) -> int:
        caller = self.callers.get(call.call_id)
        if caller is not None:
            caller.transferred(target)
        return 200

    def _audio(self, args: Say, values: dict[str, str]) -> tuple[str | None, asyncio.Future[np.ndarray]]:
        if args.text is not None:
            text = render_template(args.text, values)
            return text, asyncio.ensure_future(self.answers.get(text))
        assert args.wav is not None
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        path = args.wav if args.wav.is_absolute() else self.base / args.wav
        try:
            future.set_result(self.answers.wav(path))
        except (OSError, ValueError, EOFError) as exc:
            future.set_exception(exc)
        return str(args.wav), future

    async def run_call(self, index: int) -> dict[str, Any]:
        """Place call ``index``, play its script, return its record (never raises but CancelledError)."""
        scenario, config = self.scenario, self.config
        rng = random.Random(f"{config.seed}:{index}")
        script = choose_script(scenario, rng)
        values = draw_values(scenario, rng)
        record: dict[str, Any] = {
            "index": index,
            "worker": config.worker,
            "script": script.name,
            "call_id": None,
            "started": 0.0,
            "sip_status": None,
            "setup_ms": None,
            "media_peer": None,  # HOST:PORT of the answer's RTP: which worker took the call
            "outcome": "failed",
            "error": None,
            "duration_s": None,
            "ended_by": None,
            "turns": [],
            "rtp": {"packets": 0, "lost": 0, "loss_pct": 0.0, "jitter_ms": 0.0, "gaps": 0},
            "slots": [
                {
                    "name": name,
                    "type": expect.type,
                    "expected": render_template(expect.value, values)
                    if isinstance(expect.value, str)
                    else expect.value,
                    "got": None,
                    "correct": False,
                }
                for name, expect in script.expect.items()
            ],
            "webhook_posts": 0,
            "detours": [],
        }
        audio = {
            j: self._audio(step.args, values)
            for j, step in enumerate(script.steps)
            if isinstance(step.args, Say)
        }
        invited = time.monotonic()
        record["started"] = self.rel(invited)
        transport = scenario.transport.upper()
        try:
            target = config.targets[index % len(config.targets)]  # round-robin over the targets
            timeout = scenario.traffic.setup_timeout_s
            call = await self.manager.dial(target, timeout=timeout, transport=transport)
        except DialError as exc:
            record["call_id"] = exc.call_id
            if exc.final_response:
                record.update(outcome="rejected", sip_status=exc.status)
            else:
                record.update(outcome="no_answer")
            return _done(record, audio)
        except OSError as exc:
            record.update(outcome="failed", error=f"cannot place the call: {exc}"[:200])
            return _done(record, audio)
        except asyncio.CancelledError:
            record.update(outcome="aborted", error="run stopped before the call was answered")
            return _done(record, audio)
        answered = time.monotonic()
        record.update(call_id=call.call_id, sip_status=200, setup_ms=round((answered - invited) * 1000, 2))
        record["media_peer"] = "{}:{}".format(*call.stream.remote[:2])
        caller = ScriptedCaller(self.manager, call)
        self.callers[call.call_id] = caller
        turns: list[_Turn] = []
        outcome, error, ended_by = "completed", None, None
        expected_transfer = any(step.kind == "expect_transfer" for step in script.steps)
        step_no, kind = 0, ""
        dialogue = _Dialogue()
        try:
            async with asyncio.timeout(scenario.traffic.max_call_s):
                for step_no, step in enumerate(script.steps):
                    kind = step.kind
                    result = await self._step(
                        caller, step.kind, step.args, audio.get(step_no), turns, values, dialogue
                    )
                    if result is not None:
                        outcome, ended_by = result
                        break
        except CallEnded as exc:
            if caller.transfer_to is not None and expected_transfer:
                outcome = "transferred"  # the REFER may come (and the agent hang up) before the step
            elif caller.transfer_to is not None:
                error = f"unexpected transfer to {caller.transfer_to} at step {step_no} ({kind})"
                outcome = "failed"
            else:
                outcome, error = "failed", f"call ended ({exc}) during step {step_no} ({kind})"
        except _Stopped as exc:
            outcome, error, ended_by = "failed", str(exc), "timeout"
            if kind == "wait_prompt" and turns:
                turns[-1].prompt_timeout = True
        except TimeoutError:
            error = f"call still up after max_call_s at step {step_no} ({kind})"
            outcome, ended_by = "failed", "timeout"
        except asyncio.CancelledError:
            outcome, error, ended_by = "aborted", "run stopped", "caller"
        except (OSError, ValueError, EOFError, RuntimeError) as exc:  # a WAV or TTS render that failed
            outcome, error = "failed", f"step {step_no} ({kind}): {type(exc).__name__}: {exc}"[:200]
        if caller.transfer_to is not None and not expected_transfer and outcome == "completed":
            outcome, error = "failed", f"unexpected transfer to {caller.transfer_to}"
        if not call.ended.is_set():
            call.hangup()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(call.ended.wait(), HANGUP_WAIT_S)
        ended = time.monotonic()
        if ended_by is None:
            ended_by = "agent" if call.end_reason == "remote-bye" else "caller"
        self.callers.pop(call.call_id, None)
        await caller.close()
        record.update(
            outcome=outcome,
            error=error,
            ended_by=ended_by,
            duration_s=round(ended - answered, 3),
            rtp=caller.rtp_stats(),
            detours=dialogue.detours,
            turns=[
                {
                    "index": t.index,
                    "action": t.action,
                    "text": t.text,
                    "speech_end": self.rel(t.speech_end),
                    "reply_latency_ms": None
                    if t.pending.reply_at is None
                    else round((t.pending.reply_at - t.speech_end) * 1000, 2),
                    "prompt_timeout": t.prompt_timeout,
                }
                for t in turns
            ],
        )
        return _done(record, audio)

    async def _step(
        self,
        caller: ScriptedCaller,
        kind: str,
        args: Any,
        audio: tuple[str | None, asyncio.Future[np.ndarray]] | None,
        turns: list[_Turn],
        values: dict[str, str],
        dialogue: _Dialogue,
    ) -> tuple[str, str] | None:
        """Play one step; returns (outcome, ended_by) when it ends the script."""
        prompt = self.scenario.caller.prompt
        if kind == "wait_prompt":
            if args.step is not None and self.prompts is not None:
                await self._follow(caller, args, turns, dialogue)
            else:
                await self._prompt_end(caller, args)
        elif kind in ("say", "barge_in"):
            assert audio is not None
            text, pcm_future = audio
            pcm = await pcm_future
            if isinstance(args, BargeIn):
                timeout = args.timeout_s or prompt.timeout_s
                try:
                    await asyncio.wait_for(caller.wait_speech(), timeout)
                except TimeoutError:
                    raise _Stopped(f"the agent did not speak within {timeout:g} s (barge-in)") from None
                await caller.pause(args.after_ms / 1000)
            await self._say(caller, kind, text, pcm, turns)
            dialogue.answered(("say", (text, pcm)))
        elif kind in ("pause", "silence"):
            await caller.pause(args.ms / 1000)
        elif kind == "dtmf":
            digits = render_template(args.digits, values)
            if not DTMF_KEYS.fullmatch(digits):
                raise ValueError(f"not keypad digits: {digits!r}")
            await self._press(caller, digits, turns)
            dialogue.answered(("dtmf", digits))
        elif kind == "hangup":
            caller.call.hangup()
            return "hung_up_early", "caller"
        elif kind == "expect_transfer":
            try:
                await asyncio.wait_for(caller.wait_transfer(), args.timeout_s)
            except TimeoutError:
                raise _Stopped(f"no transfer within {args.timeout_s:g} s") from None
            return "transferred", "agent"
        elif kind == "expect_hangup":
            try:
                await asyncio.wait_for(caller.wait_ended(), args.timeout_s)
            except TimeoutError:
                raise _Stopped(f"the agent did not hang up within {args.timeout_s:g} s") from None
            return "completed", "agent"
        return None

    async def _say(
        self, caller: ScriptedCaller, kind: str, text: str | None, pcm: np.ndarray, turns: list[_Turn]
    ) -> None:
        end = await caller.say(pcm)
        turns.append(_Turn(len(turns), kind, text, end, caller.expect_reply(end)))

    async def _press(self, caller: ScriptedCaller, digits: str, turns: list[_Turn]) -> None:
        end = await caller.press(digits)
        turns.append(_Turn(len(turns), "dtmf", digits, end, caller.expect_reply(end)))

    async def _prompt_end(self, caller: ScriptedCaller, args: WaitPrompt) -> None:
        prompt = self.scenario.caller.prompt
        timeout = args.timeout_s or prompt.timeout_s
        try:
            ended = caller.wait_prompt_end(prompt.silence_ms, prompt.min_speech_ms)
            await asyncio.wait_for(ended, timeout)
        except TimeoutError:
            raise _Stopped(f"no prompt end within {timeout:g} s") from None

    async def _follow(
        self, caller: ScriptedCaller, args: WaitPrompt, turns: list[_Turn], dialogue: _Dialogue
    ) -> None:
        """Wait for ``args.step``'s question (or read-back), following the dialogue on the way: each
        prompt heard is recognised among the agent's texts, and :func:`detour` says what to do."""
        assert self.prompts is not None and args.step is not None
        book, recogniser = self.prompts
        awaited = f"the {'read-back' if args.read_back else 'question'} of {args.step}"
        for _ in range(MAX_DETOURS + 1):
            caller.record()
            try:
                await self._prompt_end(caller, args)
            finally:
                pcm = caller.recorded()
            transcript = await recogniser.transcribe(pcm)
            heard, _ = book.identify(transcript)
            action = detour(heard, args.step, args.read_back, dialogue.answers)
            if action == "done":
                dialogue.awaited = (args.step, args.read_back)
                return
            dialogue.detours.append({"heard": str(heard), "transcript": transcript, "action": action})
            if action == "yes":
                await self._say(caller, "say", FOLLOW_YES, await self.answers.get(FOLLOW_YES), turns)
            elif action == "repeat":
                assert heard is not None
                what, answer = dialogue.answers[heard.step]
                if what == "dtmf":
                    await self._press(caller, answer, turns)
                else:
                    await self._say(caller, "say", answer[0], answer[1], turns)
            elif action != "listen":
                raise _Stopped(f"heard {heard} while waiting for {awaited}")
        raise _Stopped(f"no {awaited} after {MAX_DETOURS} other prompts")


Audio = dict[int, tuple[str | None, "asyncio.Future[np.ndarray]"]]


def _done(record: dict[str, Any], audio: Audio) -> dict[str, Any]:
    for _, future in audio.values():  # retrieve exceptions of renders the call never used
        if future.done() and not future.cancelled():
            future.exception()
        else:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return record


def _prompt_recognition(scenario: Scenario, base: Path) -> tuple[PromptBook, PromptRecogniser] | None:
    """The agent's prompts and their recogniser, when a script names the steps it waits for."""
    path = scenario.agent_path(base)
    waits = [s.args for script in scenario.scripts for s in script.steps if isinstance(s.args, WaitPrompt)]
    if path is None or not any(w.step for w in waits):
        return None
    book = PromptBook.from_agent(path)
    values = [str(v) for var in scenario.variables.values() for v in (var.choice or [])]
    return book, PromptRecogniser(book.phrases() + vocabulary(values))


# -- one worker -----------------------------------------------------------------------------------
async def run_worker(config: WorkerConfig, emit: Emit, stop: asyncio.Event) -> dict[str, Any]:
    """Place this worker's calls, emitting ``("started", index)`` and ``("record", record)``."""
    from parley.speech.tts import load_tts

    scenario = apply_overrides(load_scenario(config.scenario_path), config.overrides)
    traffic = scenario.traffic
    voice = scenario.caller.voice
    answers = AnswerBook(load_tts(voice.engine), voice.voice, voice.rate)
    runner: CallRunner | None = None

    async def on_refer(call: Call, target: str) -> int:
        return await runner.on_refer(call, target) if runner is not None else 200

    manager = CallManager(
        None,
        host=config.host,
        port=config.sip_port,
        transports=(scenario.transport.upper(),),
        rtp_ports=config.rtp_ports,
        codecs=tuple(scenario.codecs),
        media_timeout=max(30.0, scenario.caller.prompt.timeout_s + 10),
        on_refer=on_refer,
        max_load=None,
    )
    shared = share_rtp_ports(manager, config.host, *config.rtp_ports)
    prompts = _prompt_recognition(scenario, Path(config.scenario_path).resolve().parent)
    runner = CallRunner(scenario, config, manager, answers, prompts)
    await manager.start()
    concurrency = max(1, -(-traffic.concurrency // config.workers))
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task] = set()
    placed = 0
    loop = asyncio.get_running_loop()
    start = runner._mono0

    def finished(task: asyncio.Task) -> None:
        tasks.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is None:
            emit("record", task.result())
        elif not task.cancelled():
            log.error("call task failed", exc_info=task.exception())

    async def until(deadline: float) -> bool:
        """Sleep until the monotonic ``deadline``; False when stopped first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, deadline - loop.time()))
        return not stop.is_set()

    stopper = asyncio.ensure_future(stop.wait())
    try:
        for index, t in schedule(traffic, config.worker, config.workers):
            if not await until(start + t):
                break
            acquire = asyncio.ensure_future(slots.acquire())
            await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                if acquire.done():
                    slots.release()
                acquire.cancel()
                break
            task = asyncio.ensure_future(runner.run_call(index))
            tasks.add(task)
            task.add_done_callback(finished)
            placed += 1
            emit("started", index)
        # Let calls in progress finish (each is bounded by setup + max_call_s), unless stopped.
        if tasks:
            pending = asyncio.ensure_future(asyncio.wait(set(tasks)))
            bound = traffic.setup_timeout_s + traffic.max_call_s + 2 * HANGUP_WAIT_S
            await asyncio.wait({pending, stopper}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
            pending.cancel()
    finally:
        stopper.cancel()
        for task in list(tasks):
            task.cancel()  # each records itself as aborted and hangs up
        if tasks:
            await asyncio.wait(set(tasks), timeout=HANGUP_WAIT_S + 2)
        report = manager.report()
        await asyncio.wait_for(manager.stop(), 10)
        if prompts is not None:
            prompts[1].close()
    if shared is not None:
        report["rtp_sockets"] = shared.report()
    return {"worker": config.worker, "placed": placed, "renders": answers.renders, "manager": report}
