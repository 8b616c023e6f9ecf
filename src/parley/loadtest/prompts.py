"""Which of the agent's prompts a caller heard: so that a scripted caller can follow the dialogue.

A scenario that names its agent file (``agent:``) lets ``wait_prompt`` name the ask whose question it
waits for (``{step: last_name}``, or its read-back: ``{step: last_name, read_back: true}``). The
caller then records what the agent says while it waits, and identifies it among the agent's own texts:

* :class:`PromptBook` holds every text the agent speaks (the sources of ``Agent.prompts()``, the
  runtime's default read-back, and the rules' messages), each as a :class:`PromptId`: the step, and
  whether it is one of the ask's questions (prompt, reprompts, no-input prompt, rule prompts), its
  read-back, or a statement (a say, a webhook's words, a message, why a value was refused).
  :meth:`PromptBook.identify` matches a transcript's *end* against each text (a question may follow
  a statement: "Your claim is registered. Were you happy…?").
* :class:`PromptRecogniser` transcribes the recorded prompt with pocketsphinx and a small LM built from
  those texts (and the scenario's values), in a process of its own so that the decode never holds
  the event loop that paces every call's RTP. Flite's prompts, heard through G.711, come back close
  to word for word, at about 0.1–0.3 CPU-s a prompt.
* :func:`detour` decides what the caller does with a prompt that is not the one awaited: answer an
  unplanned read-back "yes", repeat the last answer to a re-asked question, listen on past a
  statement, or stop (the record says what was heard instead).

Hand-written: rapidfuzz scores the texts; the rest is the dialogue's own vocabulary.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from rapidfuzz import fuzz

Kind = Literal["question", "read_back", "statement"]
MIN_SCORE = 60.0  # below this, a transcript is none of the agent's texts
GAP_WORDS = 10  # words a placeholder may stand for (an 8-digit number read out digit by digit)
SAME_WORD = 80.0  # two words this alike (rapidfuzz ratio) count as the same word
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True, slots=True)
class PromptId:
    """One text the agent speaks: at which step, and what kind of text it is there."""

    step: str
    kind: Kind

    def __str__(self) -> str:
        return {"question": "the question of", "read_back": "the read-back of", "statement": "the words of"}[
            self.kind
        ] + f" {self.step}"


def _words(text: str) -> list[str]:
    return _WORD.findall(_PLACEHOLDER.sub(" ", text.lower()))


class PromptBook:
    """The agent's texts, each with its :class:`PromptId`."""

    def __init__(self, texts: list[tuple[str, PromptId]]) -> None:
        self.texts = [(_words(text), text, pid) for text, pid in texts if _words(text)]

    @classmethod
    def from_agent(cls, path: Path) -> PromptBook:
        """Every text the agent file at ``path`` speaks (its ``${VAR}``s as the environment has them)."""
        from parley.agent.loader import load_agent
        from parley.agent.model import AskStep, ConfirmPolicy
        from parley.agent.rules import MESSAGES
        from parley.agent.runtime import DEFAULT_CONFIRM_PROMPT

        agent = load_agent(path)
        texts: list[tuple[str, PromptId]] = []
        for (_, index, field, *_rest), text in agent.texts():
            step = agent.steps[index]
            kind: Kind = "statement"
            if isinstance(step, AskStep):
                kind = "read_back" if field == "confirm_prompt" else "question"
            texts.append((text, PromptId(step.id, kind)))
        for step in agent.steps:
            if not isinstance(step, AskStep):
                continue
            if step.confirm is not ConfirmPolicy.NEVER and not step.confirm_prompt:
                texts.append((DEFAULT_CONFIRM_PROMPT, PromptId(step.id, "read_back")))
            if step.rules is not None:  # why a value was refused (then the reprompt)
                texts += [(message, PromptId(step.id, "statement")) for message in MESSAGES.values()]
        return cls(texts)

    def phrases(self) -> list[str]:
        """The texts, for the recogniser's language model."""
        return [text for _, text, _ in self.texts]

    def identify(self, transcript: str) -> tuple[PromptId | None, float]:
        """The text that best covers the end of ``transcript`` (the last thing said), and its score:
        the share of its words heard in order (0–100; a word may be misheard slightly). Each
        placeholder ("I heard {first_name}") may stand for up to :data:`GAP_WORDS` words. Ties go to
        the longer text; None when no text scores :data:`MIN_SCORE`."""
        heard = _words(transcript)
        if not heard:
            return None, 0.0
        best: tuple[float, int, PromptId | None] = (0.0, 0, None)
        for words, text, pid in self.texts:
            gaps = len(_PLACEHOLDER.findall(text))
            window = heard[-(len(words) + 2 + GAP_WORDS * gaps) :]
            score = 100.0 * _in_order(words, window) / len(words)
            if (score, len(words)) > best[:2]:
                best = (score, len(words), pid)
        score, _, pid = best
        return (pid, score) if score >= MIN_SCORE else (None, score)


def _in_order(words: list[str], heard: list[str]) -> int:
    """How many of ``words`` appear in ``heard`` in order (longest common subsequence; two words are
    the same when they differ by a letter or so: "thanks" heard as "thank")."""
    row = [0] * (len(heard) + 1)
    for word in words:
        previous = row[:]
        for j, other in enumerate(heard, 1):
            same = word == other or fuzz.ratio(word, other) >= SAME_WORD
            row[j] = previous[j - 1] + 1 if same else max(previous[j], row[j - 1])
    return row[-1]


Detour = Literal["done", "yes", "repeat", "listen", "stop"]


def detour(heard: PromptId | None, step: str, read_back: bool, answered: Collection[str]) -> Detour:
    """What a caller waiting for ``step``'s question (its read-back if ``read_back``) does on hearing
    ``heard``, having answered the questions of ``answered``: ``done`` (it is the one awaited, or
    could not be told: the script goes on as before), ``yes`` (an unplanned read-back), ``repeat``
    (a question answered before, asked again: a no-match, a rule's refusal, a "no" heard at its
    read-back), ``listen`` (a statement: wait for the next prompt), else ``stop``."""
    if heard is None:
        return "done"
    if heard.step == step and (heard.kind == "read_back") == read_back:
        return "done"
    if heard.kind == "statement":
        return "listen"
    if heard.kind == "read_back":
        return "yes"
    if heard.step in answered:
        return "repeat"
    return "stop"


# -- the recogniser (a process of its own) ------------------------------------------------------------
_engine = None


def _start(phrases: list[str]) -> None:
    global _engine
    from parley.speech.engines.sphinx import SphinxAgentLmEngine

    _engine = SphinxAgentLmEngine(phrases=phrases, max_idle=1)


def _transcribe(pcm: np.ndarray) -> str:
    from parley.nlu.question import Question, SlotType

    assert _engine is not None
    session = _engine.start(Question(SlotType.FREE))
    for i in range(0, len(pcm), 1600):
        session.feed(pcm[i : i + 1600])
    return session.finish().text


class PromptRecogniser:
    """Transcribes recorded prompts (8 kHz int16) in one decode process, with an LM of ``phrases``."""

    def __init__(self, phrases: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_start, initargs=(phrases,))
        # start the process and build the LM now, not at the first call's first prompt (seconds)
        self._pool.submit(_transcribe, np.zeros(1600, dtype=np.int16))

    async def transcribe(self, pcm: np.ndarray) -> str:
        if len(pcm) == 0:
            return ""
        return await asyncio.get_running_loop().run_in_executor(self._pool, _transcribe, pcm)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def vocabulary(values: list[str]) -> list[str]:
    """Words a prompt may say in its placeholders: the scenario's values, digits and letters."""
    digits = "zero one two three four five six seven eight nine oh"
    letters = " ".join(chr(c) for c in range(ord("a"), ord("z") + 1))
    return [*values, digits, letters]
