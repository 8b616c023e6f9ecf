"""Telling which of the agent's prompts a scripted caller heard, and what it does about it.

The agent is ``examples/insurance_claim.yaml``. Its prompts are rendered by flite (the agent's voice),
passed through G.711 as on a call, and transcribed by the load tester's recogniser (pocketsphinx with
an LM of the agent's texts, in its own process); each must be identified as the step and kind of text
it is. The transcripts in the table are real ones of that recogniser (kept here so that the matcher is
checked on its own, whatever the recogniser does on another machine).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parley.loadtest.prompts import PromptBook, PromptId, PromptRecogniser, detour, vocabulary
from parley.loadtest.scenario import load_scenario_text
from parley.media.g711 import alaw_decode, alaw_encode
from parley.speech.tts import load_tts, render

from .conftest import needs_flite

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "examples" / "insurance_claim.yaml"


@pytest.fixture(scope="module")
def book() -> PromptBook:
    return PromptBook.from_agent(AGENT)


POLICY_READ_BACK = "i have policy number one didn't the heard find it at m in eight is that right"
POLICY_QUESTION = (
    "please name again your eight digit policy number you'll find it at the top of your policy documents"
)
GREETING_QUESTION = (
    "hello you're through to acme insurance calls may be recorded for quality and training "
    "in a few words how can i help you today"
)
REGISTERED_QUESTION = (
    "thank you john your claim has been registered your claim number is c two oh nine three one "
    "before you go were you happy with the help you received today"
)


@pytest.mark.parametrize(
    ("transcript", "step", "kind"),
    [
        ("i heard john is that right", "first_name", "read_back"),
        ("i heard an is that right", "first_name", "read_back"),
        ("thank john could you spell your last name for me letter by letter", "last_name", "question"),
        ("sorry could you spell your last name again for in can tell at can i t h", "last_name", "question"),
        (POLICY_READ_BACK, "policy_number", "read_back"),  # its placeholder: the eight digits read out
        (POLICY_QUESTION, "policy_number", "question"),
        ("sorry what is your first name", "first_name", "question"),
        (GREETING_QUESTION, "reason", "question"),  # a statement, then the question: the question
        (REGISTERED_QUESTION, "satisfaction", "question"),
        ("please hold while i transfer you to a claims adviser", "handover", "statement"),
        ("that is too small the minimum is one", "claim_amount", "statement"),  # a rule's message alone
    ],
)
def test_transcripts_of_the_agents_prompts_are_identified(
    book: PromptBook, transcript: str, step: str, kind: str
) -> None:
    heard, score = book.identify(transcript)
    assert heard == PromptId(step, kind), (heard, score)  # type: ignore[arg-type]


def test_what_is_none_of_the_agents_texts_is_not_identified(book: PromptBook) -> None:
    assert book.identify("") == (None, 0.0)
    heard, score = book.identify("the quick brown fox jumps over the lazy dog")
    assert heard is None and score < 60, score


@pytest.mark.parametrize(
    ("heard", "awaited", "read_back", "answered", "action"),
    [
        (PromptId("last_name", "question"), "last_name", False, {"first_name"}, "done"),
        (PromptId("last_name", "read_back"), "last_name", True, {"last_name"}, "done"),
        (None, "last_name", False, {"first_name"}, "done"),  # not told apart: the script goes on as written
        (
            PromptId("first_name", "read_back"),
            "last_name",
            False,
            {"first_name"},
            "yes",
        ),  # unplanned read-back
        (PromptId("first_name", "question"), "last_name", False, {"first_name"}, "repeat"),  # asked again
        (
            PromptId("last_name", "question"),
            "last_name",
            True,
            {"last_name"},
            "repeat",
        ),  # the spelling refused
        # "yes" to the spelling's read-back heard as "no": the spelling again, not the "yes"
        (PromptId("last_name", "question"), "policy_number", False, {"first_name", "last_name"}, "repeat"),
        (PromptId("submit", "statement"), "satisfaction", False, {"claim_amount"}, "listen"),
        (PromptId("claim_amount", "question"), "last_name", False, {"first_name"}, "stop"),  # lost step
    ],
)
def test_a_prompt_that_is_not_the_one_awaited_is_followed(
    heard: PromptId | None, awaited: str, read_back: bool, answered: set[str], action: str
) -> None:
    assert detour(heard, awaited, read_back, answered) == action


@needs_flite
def test_the_agents_prompts_are_recognised_through_g711(book: PromptBook) -> None:
    """Prompts as the agent says them (flite slt, placeholders filled), through A-law and back."""
    said = {
        "I heard Emma. Is that right?": PromptId("first_name", "read_back"),
        "Thanks Emma. Could you spell your last name for me, letter by letter?": PromptId(
            "last_name", "question"
        ),
        "I have policy number 4 0 9 1 7 7 2 3. Is that right?": PromptId("policy_number", "read_back"),
        "Roughly how much do you expect the claim to be, in pounds?": PromptId("claim_amount", "question"),
        "Sorry, what is your first name?": PromptId("first_name", "question"),
    }

    async def transcripts() -> list[str]:
        tts = load_tts("flite")
        recogniser = PromptRecogniser(book.phrases() + vocabulary(["Emma", "John"]))
        try:
            out = []
            for text in said:
                pcm = await render(tts, text, "slt")
                out.append(await recogniser.transcribe(alaw_decode(alaw_encode(pcm))))
            return out
        finally:
            recogniser.close()

    heard = [book.identify(t)[0] for t in asyncio.run(transcripts())]
    assert heard == list(said.values()), heard


SCENARIO = """
name: follows
{agent}
traffic: {{calls: 1}}
scripts:
  - name: s
    steps:
      - wait_prompt: {step}
      - say: "yes"
"""


def test_a_scenario_that_names_steps_needs_the_agent_and_its_steps(tmp_path: Path) -> None:
    from parley.agent.loader import AgentFileError

    def problems(agent: str, step: str) -> str:
        with pytest.raises(AgentFileError) as caught:
            load_scenario_text(SCENARIO.format(agent=agent, step=step), "s.yaml", base=tmp_path)
        return str(caught.value)

    agent = f"agent: {AGENT}"
    assert "names no agent" in problems("", "last_name")
    assert "the agent has no ask 'lastname'" in problems(agent, "lastname")
    assert "last_name" in problems(agent, "lastname")  # did you mean
    assert "cannot read the agent" in problems("agent: nowhere.yaml", "last_name")
    assert "read_back needs the step" in problems(agent, "{read_back: true}")
    text = SCENARIO.format(agent=agent, step="{step: last_name, read_back: true}")
    scenario = load_scenario_text(text, "ok.yaml", base=tmp_path)
    assert scenario.scripts[0].steps[0].args.read_back is True
