"""The dialogue runtime: one call's conversation as a pure state machine (sans-I/O).

A :class:`Conversation` runs an :class:`~parley.agent.model.Agent`'s steps. It never touches audio,
sockets or the clock beyond the ``clock`` it is given: the I/O side (``parley serve``, ``parley chat``,
tests) feeds it events and carries out the actions it returns::

    conversation = Conversation(agent, call_id="abc")
    actions = conversation.start()  # [Say("Hello..."), Say("What is your name?"), Listen(...)]
    actions = conversation.on_partial("my name")  # [] or [EarlyClose()]
    actions = conversation.on_final("my name is john", confidence=0.9)

Actions: :class:`Say`, :class:`Listen` (the speech layer listens for one answer), :class:`EarlyClose`
(the answer is complete: end the caller's turn now), :class:`CallWebhook` (perform it, e.g. with
:func:`parley.agent.webhook.perform_webhook`, then call :meth:`Conversation.on_webhook_result`),
:class:`Transfer` (REFER, then :meth:`Conversation.on_transfer_result`) and :class:`Hangup`.

Events: ``on_partial``, ``on_final``, ``on_no_input``, ``on_dtmf``, ``on_webhook_result``,
``on_transfer_result``, ``on_hangup`` (the caller hung up). Events that do not fit the current state
(a partial while no question is open, a result after the call ended) are ignored and return ``[]``.

Everything the call did is kept in :attr:`Conversation.record` (a :class:`~parley.agent.records.
CallRecord`). The runtime's log lines carry step ids, kinds and counts — never slot values or
transcripts.
"""

from __future__ import annotations

import logging
import re
import string
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dt_time
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from parley.agent.model import (
    DEFAULT_FAILURE_MESSAGE,
    Agent,
    AskStep,
    BranchStep,
    Condition,
    ConfirmPolicy,
    HangupStep,
    SayStep,
    SlotKind,
    Step,
    TransferStep,
    WebhookStep,
)
from parley.agent.records import CallRecord, Turn, WebhookCall, jsonable, sensitive
from parley.agent.rules import check_value, value_range
from parley.speech.types import Hypothesis, Question, SlotType

log = logging.getLogger(__name__)

MAX_HOPS = 100  # steps run without waiting for the caller: more means a say/branch loop
DEFAULT_CONFIRM_PROMPT = "I heard {value}, is that right?"
# A global intent wins over a valid slot value in the same answer only at this confidence or above.
GLOBAL_INTENT_OVER_ANSWER = 0.8
# What a correction at a read-back starts with ("no, it's 4 3 7 1"): stripped before reading the value.
CORRECTION_LEAD = re.compile(
    r"^\s*(?:no|nope|not quite|wrong|incorrect|sorry)\b[\s,.!]*"
    r"(?:(?:it'?s|it is|that'?s|that is|i said)\b\s*)?",
    re.IGNORECASE,
)
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d0f7a9e-3c51-4b7e-9a52-7061726c6579")


# --- actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    """Speak ``text`` (TTS); the caller may barge in when ``interruptible``."""

    text: str
    interruptible: bool = True
    personal: bool = False  # rendered from the caller's data: never written to the prompt cache


@dataclass(frozen=True, slots=True)
class Listen:
    """Open the caller's turn: recognise one answer to ``question`` (keypad too if ``dtmf_allowed``).

    Keypad answers end ``dtmf_interdigit_s`` after the last key (audio flowing meanwhile does not
    extend it), at ``dtmf_terminator``, or at ``dtmf_max_digits`` keys; then ``on_dtmf``. A key of
    ``dtmf_answer_keys`` pressed first, with no words before it, is a whole answer by itself (the 1 =
    yes, 2 = no of a digits read-back, where other keys begin a corrected value) when no other key
    follows within ``dtmf_answer_wait_s`` (0: at once); with other keys, it begins a keyed value.
    """

    question: Question
    step_id: str
    dtmf_allowed: bool = False
    dtmf_interdigit_s: float = 3.0
    dtmf_terminator: str | None = "#"
    dtmf_max_digits: int | None = None
    dtmf_answer_keys: str = ""
    dtmf_answer_wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class EarlyClose:
    """The partial answer is complete and stable: end the caller's turn now and send the final."""


@dataclass(frozen=True, slots=True)
class CallWebhook:
    """Send ``payload`` as JSON; report with ``on_webhook_result`` (after all retries).

    ``idempotency_key`` goes in the ``Idempotency-Key`` header, the same on every attempt. A request
    that may have reached the backend is retried only when ``idempotent``. When no answer has come
    after ``hold_after_s`` (None: never), call ``on_webhook_slow`` for the hold prompt. ``headers``
    may hold secrets: they are left out of ``repr`` and must never be logged.
    """

    url: str
    method: str
    payload: dict[str, Any]
    timeout_s: float
    retries: int
    step_id: str
    idempotency_key: str = ""
    idempotent: bool = False
    hold_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the call over (SIP REFER) to ``to``; report with ``on_transfer_result``."""

    to: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call (after the ``Say`` before it has been played)."""

    message: str | None = None


Action = Say | Listen | EarlyClose | CallWebhook | Transfer | Hangup


# --- the understanding seam ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """A slot value understood from an answer."""

    value: Any
    confidence: float = 1.0
    complete: bool = True


@dataclass(frozen=True, slots=True)
class IntentGuess:
    """The intent of an answer (None: none likely enough)."""

    name: str | None
    confidence: float = 0.0


class TurnUnderstanding(Protocol):
    """Understanding of one caller turn, partial by partial; built per turn by the NLU factory."""

    def update(self, partial: str) -> bool:
        """Feed a partial transcript; True when the answer is complete and stable (early close)."""
        ...

    def final(self, text: str, confidence: float) -> Reading | None:
        """The slot value of the final transcript, or None when it holds no valid value."""
        ...

    def settled(self, text: str, confidence: float, heard: str) -> bool:
        """At a pause: whether the final of the answer so far closes the turn (``heard``: the winning
        engine's last partial; see :meth:`Conversation.on_pause`)."""
        ...


class Understanding(Protocol):
    """What the runtime needs from the NLU: intents, and per-turn slot understanding."""

    def classify(self, text: str) -> IntentGuess:
        """The intent of a final transcript among the agent's intents."""
        ...

    def turn(self, question: Question, kind: SlotKind, *, today: date) -> TurnUnderstanding:
        """A fresh per-turn understanding for an answer of ``kind`` to ``question``."""
        ...


NluFactory = Callable[[Agent], Understanding]


class ParleyTurn:
    """One turn's understanding through :class:`parley.nlu.partial.PartialUnderstanding`."""

    def __init__(self, partial: Any) -> None:
        self.partial = partial

    def update(self, partial: str) -> bool:
        return bool(self.partial.update(partial).complete_and_stable)

    def settled(self, text: str, confidence: float, heard: str) -> bool:
        return bool(self.partial.settled(text, confidence, heard))

    def final(self, text: str, confidence: float) -> Reading | None:
        extraction = self.partial.final(text, confidence).extraction
        if extraction is None:
            return None
        return Reading(extraction.value, extraction.confidence, extraction.complete)


class ParleyUnderstanding:
    """The NLU of :mod:`parley.nlu` for one agent: its intent classifier is trained here, once.

    Build one per agent and share it between that agent's conversations (classifying is stateless;
    the per-turn state lives in the :class:`ParleyTurn` each ``turn`` call makes).
    """

    def __init__(self, agent: Agent, *, stable_partials: int = 2, min_confidence: float = 0.6) -> None:
        from parley.nlu.intents import IntentClassifier

        self.classifier = IntentClassifier(agent.intents) if agent.intents else None
        self.stable_partials = stable_partials
        self.min_confidence = min_confidence

    def classify(self, text: str) -> IntentGuess:
        if self.classifier is None:
            return IntentGuess(None, 0.0)
        result = self.classifier.classify(text)
        return IntentGuess(None if result.name is None else str(result.name), float(result.confidence))

    def turn(self, question: Question, kind: SlotKind, *, today: date) -> ParleyTurn:
        from parley.nlu.partial import PartialUnderstanding

        return ParleyTurn(
            PartialUnderstanding(
                kind.value,
                options=question.options,
                digits=question.digit_count,
                intents=self.classifier if kind is SlotKind.FREE else None,  # free speech closes on intents
                stable_partials=self.stable_partials,
                min_confidence=self.min_confidence,
                reference=today,
            )
        )


# --- spoken values ------------------------------------------------------------------------------------

CURRENCY_SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€"}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def spoken_date(value: date, *, year: bool = False) -> str:
    """date(2025, 6, 3) → 'Tuesday the 3rd of June' (with ``year``: '... of June 2025')."""
    text = f"{value:%A} the {_ordinal(value.day)} of {value:%B}"
    return f"{text} {value.year}" if year else text


def spoken_time(value: dt_time) -> str:
    """time(15, 0) → '3 pm'; time(10, 30) → '10:30 am'."""
    hour = value.hour % 12 or 12
    half = "am" if value.hour < 12 else "pm"
    return f"{hour} {half}" if value.minute == 0 else f"{hour}:{value.minute:02d} {half}"


def spoken_amount(value: Any, default_currency: str = "GBP") -> str:
    """250 → '£250.00'; (Decimal('12.5'), 'EUR') / {'amount': 12.5, 'currency': 'EUR'} → '€12.50'."""
    amount: Any = value
    currency = default_currency
    if isinstance(value, dict):
        amount = value.get("amount", value.get("value"))
        currency = value.get("currency") or currency
    elif isinstance(value, tuple | list) and len(value) == 2:
        amount, currency = value[0], value[1] or currency
    elif hasattr(value, "amount"):
        amount = value.amount
        currency = getattr(value, "currency", None) or currency
    try:
        number = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return str(value)
    symbol = CURRENCY_SYMBOLS.get(str(currency).upper())
    text = f"{number:,.2f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def spoken(value: Any, kind: SlotKind | None, *, default_currency: str = "GBP", spell: bool = False) -> str:
    """A slot value as the agent should say it ('4 2 7 1', 'Tuesday the 3rd of June', '£250.00')."""
    if value is None:
        return ""
    if isinstance(value, bool) or kind is SlotKind.YES_NO:
        return "yes" if value else "no"
    if kind in (SlotKind.DIGITS, SlotKind.PHONE):
        return " ".join(ch for ch in str(value) if not ch.isspace())
    if kind is SlotKind.DATE or (isinstance(value, date) and not isinstance(value, datetime)):
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                return value
        return spoken_date(value) if isinstance(value, date) else str(value)
    if kind is SlotKind.TIME or isinstance(value, dt_time):
        if isinstance(value, str):
            try:
                value = dt_time.fromisoformat(value)
            except ValueError:
                return value
        return spoken_time(value) if isinstance(value, dt_time) else str(value)
    if kind is SlotKind.AMOUNT:
        return spoken_amount(value, default_currency)
    if kind is SlotKind.SPELLED:
        text = str(value)
        return " ".join(ch.upper() for ch in text if ch.isalnum()) if spell else text.title()
    if kind is SlotKind.NAME:
        return str(value).title() if str(value).islower() else str(value)
    if kind is SlotKind.EMAIL:
        return str(value).replace("@", " at ").replace(".", " dot ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- the conversation ---------------------------------------------------------------------------------

Waiting = Literal["answer", "confirm", "webhook", "transfer"]


@dataclass(slots=True)
class _AskState:
    """Counters and pending value of the ask being answered."""

    step: AskStep
    no_match: int = 0
    no_input: int = 0
    retries: int = 0  # reprompts used (both kinds), to pick the next reprompt text
    candidate: Reading | None = None  # awaiting the caller's yes/no confirmation
    questions: list[Say] = field(default_factory=list)  # what the last Listen followed (for repeat)


def ask_question(
    agent: Agent, step: AskStep, prompt: str = "", *, confirm: bool = False, today: date | None = None
) -> Question:
    """What the speech layer is told about an ask (or its yes/no read-back) before the caller answers;
    the range its rules allow is resolved for ``today`` (default: the date now)."""
    phrases = [e for name in step.intents for e in agent.intents.get(name, [])]
    phrases += [e for name in agent.global_intents for e in agent.intents.get(name, [])]
    day = today or date.today()
    lowest, highest = ("", "") if confirm else value_range(step.rules, step.slot_type, day)
    return Question(
        slot_type=SlotType.YES_NO if confirm else step.speech_slot_type,
        prompt=prompt,
        digit_count=None if confirm else step.digits,
        options=() if confirm else tuple(step.options),
        phrases=tuple(dict.fromkeys(phrases)),
        language=agent.language,
        kind="" if confirm else step.slot_type.value,
        lowest=lowest,
        highest=highest,
        today=day.isoformat(),
    )


class Conversation:
    """One call's dialogue with an agent. Not thread-safe: feed events from one task.

    ``nlu`` is an :class:`Understanding` (share one per agent: :class:`ParleyUnderstanding` trains
    the intent classifier once) or a factory taking the agent; default ``ParleyUnderstanding``.
    ``clock`` gives the record's time stamps; ``today`` is the reference for relative dates.

    Semantics of an ``ask``: a final answer is checked for a global intent first (``repeat``
    re-says the last prompt and listens again without counting a retry; ``goto`` runs that step;
    ``hangup`` ends the call), except that a plain valid answer ("no thanks" at a yes/no question)
    wins over a global intent classified below ``GLOBAL_INTENT_OVER_ANSWER``; then the ask's own
    intents (the slot takes the intent's name); then the slot's extractor — a complete value that
    breaks the ask's value ``rules`` is re-asked with that rule's prompt (a no-match); else it is read
    back per the ask's policy ("no" asks again and counts as a no-match; a correction such as "no,
    it's 4 3 7 1" replaces the value and is read back again; a yes/no ask reads back only a "yes",
    and "no" to that read-back makes the answer "no") or accepted. A
    no-match (no-input) uses the next reprompt (``no_input_prompt`` first for no-input; the last
    reprompt repeats; none: the prompt) while its count stays within ``no_match_limit``
    (``no_input_limit``); past it the ask's ``on_failure`` runs, else an apology and a hangup.

    Outcome: ``transferred`` on a transfer step (``failed`` if its REFER fails), ``abandoned``
    when the caller hangs up first, else ``completed`` — or ``failed`` when the call ends after a
    failure path (limits, webhook error) without a transfer.
    """

    def __init__(
        self,
        agent: Agent,
        nlu: Understanding | NluFactory | None = None,
        *,
        call_id: str,
        clock: Callable[[], float] = time.monotonic,
        today: date | Callable[[], date] | None = None,
        started_at: datetime | None = None,
    ) -> None:
        self.agent = agent
        if nlu is None:
            nlu = ParleyUnderstanding
        if isinstance(nlu, type) or not hasattr(nlu, "turn"):
            nlu = nlu(agent)  # a factory (or class) taking the agent
        self.nlu: Understanding = nlu
        self.call_id = call_id
        self._clock = clock
        self._today = today
        self._t0 = clock()
        self.slots: dict[str, Any] = {}
        self.intent: str | None = None  # the intent of the caller's last answer (branch on intent)
        self.record = CallRecord(
            call_id=call_id,
            agent=agent.name,
            started_at=(started_at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        )
        self._slot_kinds: dict[str, SlotKind] = {
            f.slot: {"digits": SlotKind.DIGITS, "date": SlotKind.DATE}[f.type]
            for s in agent.steps
            if isinstance(s, WebhookStep)
            for f in s.saved().values()
            if f.type in ("digits", "date")
        }
        self._slot_kinds.update({name: s.slot_type for name, s in agent.slots().items()})
        self._step: Step | None = None
        self._waiting: Waiting | None = None
        self._ask: _AskState | None = None
        self._turn: Turn | None = None
        self._turn_nlu: TurnUnderstanding | None = None
        self._early_closed = False
        self._listen: Listen | None = None
        self._webhook: WebhookCall | None = None
        self._webhook_visits: dict[str, int] = {}  # visits per webhook step: one idempotency key each
        self._failure: str | None = None  # set once a failure path was taken
        self._started = False
        self.finished = False

    # --- public state -------------------------------------------------------------------------------

    @property
    def outcome(self) -> str | None:
        """completed / transferred / abandoned / failed once the call ended, else None."""
        return self.record.outcome

    @property
    def step_id(self) -> str | None:
        """The step the conversation is at."""
        return self._step.id if self._step is not None else None

    @property
    def listening(self) -> Listen | None:
        """The open question (the last Listen), while the caller's answer is awaited."""
        return self._listen if self._waiting in ("answer", "confirm") else None

    def today(self) -> date:
        """The reference date for relative dates ("next Tuesday")."""
        if self._today is None:
            return date.today()
        return self._today() if callable(self._today) else self._today

    # --- events -------------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """Begin the call: run steps from the agent's start until the first question (or the end)."""
        if self._started:
            return []
        self._started = True
        log.info("call %s: agent %s starts at %s", self.call_id, self.agent.name, self.agent.start_id)
        return self._run(self.agent.start_id)

    def on_partial(self, text: str) -> list[Action]:
        """A partial transcript of the open turn; ``[EarlyClose()]`` once the answer is complete."""
        if self._waiting not in ("answer", "confirm") or self._turn_nlu is None or self._turn is None:
            return []
        self._turn.partials += 1
        if self._early_closed:
            return []
        if self._turn_nlu.update(text) and not self._correction_may_follow(text):
            self._early_closed = True
            self._turn.t_early_close = self._now()
            self._turn.close = "partial"
            log.debug("call %s: early close at %s", self.call_id, self.step_id)
            return [EarlyClose()]
        return []

    def _correction_may_follow(self, partial: str) -> bool:
        """At a read-back, "no" may start a correction ("no, it's 4 3 7 1"): only "yes" closes early."""
        if self._waiting != "confirm" or self._ask is None or self._turn_nlu is None:
            return False
        if self._ask.step.slot_type is SlotKind.YES_NO:
            return False
        reading = self._turn_nlu.final(partial, 1.0)
        return reading is None or reading.value is not True

    def on_pause(self, text: str, confidence: float = 1.0, *, heard: str = "") -> list[Action]:
        """The caller paused mid-turn; ``text`` is the recognisers' final of the answer so far and
        ``heard`` the winning engine's last partial. ``[EarlyClose()]`` when that final completes the
        answer (semantic endpointing: the I/O side ends the turn and sends the same final to
        :meth:`on_final`); ``[]`` to keep listening. A likely global intent is left to the final."""
        if self._waiting != "answer" or self._turn_nlu is None or self._turn is None or self._early_closed:
            return []
        if not text.strip() or not self._turn_nlu.settled(text, confidence, heard):
            return []
        guess = self.nlu.classify(text)
        if guess.name is not None and guess.name in self.agent.global_intents:
            return []
        self._early_closed = True
        self._turn.t_early_close = self._now()
        self._turn.close = "pause"
        log.debug("call %s: closed at a pause at %s", self.call_id, self.step_id)
        return [EarlyClose()]

    def on_final(
        self,
        text: str,
        confidence: float = 1.0,
        *,
        hypotheses: Sequence[Hypothesis | dict[str, Any]] = (),
        arbiter_reason: str | None = None,
        winner: str | None = None,
        timing: dict[str, float] | None = None,
    ) -> list[Action]:
        """The caller's answer (the arbiter's choice); ``hypotheses`` are all engines' finals;
        ``timing``: milliseconds the speech layer spent closing the turn, for the call record."""
        if self._waiting not in ("answer", "confirm") or self._turn is None:
            return []
        turn = self._turn
        turn.t_end = self._now()
        turn.timing = {k: round(v, 1) for k, v in (timing or {}).items()}
        turn.input = "speech"
        turn.transcript = text
        turn.confidence = round(confidence, 3)
        turn.arbiter_reason = arbiter_reason
        turn.hypotheses = [_hypothesis(h, text, winner) for h in hypotheses]
        if not text.strip():
            return self._no_input()
        guess = self.nlu.classify(text)
        self.intent = guess.name
        turn.nlu = {"intent": guess.name, "intent_confidence": round(guess.confidence, 3)}
        log.info(
            "call %s: %s answer at %s (intent %s %.2f)",
            self.call_id,
            self._waiting,
            self.step_id,
            guess.name,
            guess.confidence,
        )
        assert self._ask is not None and self._turn_nlu is not None
        step = self._ask.step
        confirming = self._waiting == "confirm"
        reading = self._turn_nlu.final(text, confidence)
        self._note_reading(reading)
        valid = reading is not None and reading.complete and reading.value is not None
        if guess.name is not None and guess.name in self.agent.global_intents:
            # "no thanks" at a yes/no question is an answer unless the intent is clear-cut
            answer_too = valid and (confirming or step.slot_type is not SlotKind.FREE)
            if not answer_too or guess.confidence >= GLOBAL_INTENT_OVER_ANSWER:
                return self._global_intent(guess.name)
        if confirming:
            correction = self._correction(text, confidence)
            if correction is not None:
                return self._corrected(correction)
            return self._confirmation(bool(reading.value) if valid and reading is not None else None)
        if guess.name is not None and guess.name in step.intents:
            turn.result = f"intent:{guess.name}"
            return self._accept(guess.name)
        if not valid or reading is None:
            return self._no_match()
        return self._answer(Reading(reading.value, min(confidence, reading.confidence), True))

    def on_no_input(self) -> list[Action]:
        """The caller said nothing before the no-input timeout."""
        if self._waiting not in ("answer", "confirm") or self._turn is None:
            return []
        self._turn.t_end = self._now()
        return self._no_input()

    def on_dtmf(
        self,
        digits: str,
        *,
        spoken: str | Sequence[str] = "",
        hypotheses: Sequence[Hypothesis | dict[str, Any]] = (),
        winner: str | None = None,
    ) -> list[Action]:
        """Keypad input (a digit string, '#'-terminated or not) as the answer to the open question.

        ``spoken``: what the caller said in the same turn before the first key (or the recognisers'
        finals of it, the arbiter's choice first; ``hypotheses`` and ``winner`` as in
        :meth:`on_final`, for the record). For digits and phone questions its digits begin the
        answer ("four two" then keys 7 1 → 4271): the first final whose digits make a whole value
        with the keys (a grammar that forces the question's digit count hears more than was said);
        at a read-back, see :meth:`_keyed_confirmation`.
        """
        listen = self.listening
        if listen is None or not listen.dtmf_allowed or self._turn is None or self._ask is None:
            return []
        keys = digits.strip().rstrip("#*")
        said = [spoken] if isinstance(spoken, str) else list(spoken)
        said = [text for text in said if text.strip()]
        turn = self._turn
        turn.t_end = self._now()
        turn.input = "speech+dtmf" if said else "dtmf"
        if said:
            turn.hypotheses = [_hypothesis(h, said[0], winner) for h in hypotheses]
        if said and self._waiting == "answer" and _keys_a_value(self._ask.step):
            step = self._ask.step
            question = ask_question(self.agent, step, step.prompt, today=self.today())
            whole = [self._spoken_digits(question, step, text) + keys for text in said]
            keys = next((value for value in whole if self._keypad_value(step, value) is not None), whole[0])
        turn.transcript = keys
        turn.confidence = 1.0
        log.info(
            "call %s: keypad %s answer at %s (%d keys)", self.call_id, self._waiting, self.step_id, len(keys)
        )
        step = self._ask.step
        if self._waiting == "confirm":
            return self._keyed_confirmation(step, keys, said)
        value: Any = None
        if step.slot_type in (SlotKind.DIGITS, SlotKind.PHONE):
            value = self._keypad_value(step, keys)
        elif step.slot_type is SlotKind.YES_NO:
            value = {"1": True, "2": False}.get(keys)
        elif step.slot_type is SlotKind.CHOICE and keys.isdigit() and 1 <= int(keys) <= len(step.options):
            value = step.options[int(keys) - 1]
        turn.nlu = {"value": None if value is None else sensitive(jsonable(value)), "value_confidence": 1.0}
        if value is None:
            return self._no_match()
        return self._answer(Reading(value, 1.0, True))

    def keys_complete(self, keys: str, spoken: Sequence[str]) -> bool:
        """Whether words said before the keys (the recognisers' finals) and ``keys`` make a whole
        answer of the expected length (``Listen.dtmf_max_digits``) to a digits or phone question: the
        keypad need not wait for the terminator or the inter-digit timeout ("four two" then 7 1)."""
        listen = self.listening
        if listen is None or listen.dtmf_max_digits is None or self._ask is None or self._waiting != "answer":
            return False
        step = self._ask.step
        if not _keys_a_value(step):
            return False
        question = ask_question(self.agent, step, step.prompt)
        expected = listen.dtmf_max_digits
        return any(
            len(self._spoken_digits(question, step, text) + keys) == expected for text in spoken if text
        )

    def on_webhook_slow(self) -> list[Action]:
        """The backend has not answered after the step's ``hold_after_s``: the hold prompt, once."""
        step = self._step
        if self._waiting != "webhook" or not isinstance(step, WebhookStep) or self._webhook is None:
            return []
        if not step.hold_prompt or self._webhook.held:
            return []
        self._webhook.held = True
        return [self._say(step.hold_prompt, step, interruptible=False)]

    def on_webhook_result(
        self,
        status: int | None,
        body: dict[str, Any] | None,
        error: str | None,
        *,
        latency_s: float | None = None,
        attempts: int | None = None,
        unknown: bool = False,
    ) -> list[Action]:
        """The outcome of the last ``CallWebhook`` (after the I/O side's retries).

        ``unknown``: the request was sent but no answer came (a timeout or a lost connection after
        sending): the backend may or may not have acted. That takes the step's ``on_unknown`` path
        (default: ``on_failure``) and the record says ``"outcome": "unknown"``. A success whose body
        lacks a required saved field, or holds one of the wrong type, takes the failure path.
        """
        step = self._step
        if self._waiting != "webhook" or not isinstance(step, WebhookStep) or self._webhook is None:
            return []
        self._waiting = None
        call = self._webhook
        call.status = status
        call.error = error
        call.attempts = attempts
        call.latency_ms = (latency_s if latency_s is not None else self._now() - call.t) * 1000
        if unknown:
            call.outcome = "unknown"
            call.error = error or "no answer"
            log.warning("call %s: webhook %s outcome unknown (%s)", self.call_id, step.id, call.error)
            return self._fail(
                step, f"webhook {step.id} outcome unknown", to=step.on_unknown or step.on_failure
            )
        ok = error is None and (status is None or 200 <= status < 300)
        if not ok:
            call.outcome = "failed"
            call.error = error or f"HTTP {status}"
            log.warning("call %s: webhook %s failed (%s)", self.call_id, step.id, call.error)
            return self._fail(step, f"webhook {step.id} failed")
        values, problem = _saved_values(step, body or {})
        if problem is not None:
            call.outcome = "failed"
            call.error = problem
            log.warning("call %s: webhook %s: %s", self.call_id, step.id, problem)
            return self._fail(step, f"webhook {step.id} bad response")
        call.outcome = "ok"
        for slot, value in values.items():
            self._set_slot(slot, value)
        log.info("call %s: webhook %s ok (status %s)", self.call_id, step.id, status)
        actions: list[Action] = []
        if step.say:
            actions.append(self._say(step.say, step))
        return actions + self._run(self.agent.next_of(step))

    def on_transfer_result(self, status: int) -> list[Action]:
        """The transfer's final status (200: the call was handed over)."""
        if self._waiting != "transfer":
            return []
        self._waiting = None
        if 200 <= status < 300:
            log.info("call %s: transferred (status %d)", self.call_id, status)
            return []
        log.warning("call %s: transfer failed with status %d", self.call_id, status)
        self.record.outcome = None
        self.finished = False
        self._failure = f"transfer failed ({status})"
        return self._polite_hangup("failed", self._failure)

    def on_hangup(self, reason: str = "caller hung up") -> list[Action]:
        """The caller hung up (or vanished: ``reason`` says how, for the record)."""
        if self._turn is not None and self._turn.input is None:
            self._turn.input = "hangup"
            self._turn.t_end = self._now()
        if not self.finished:
            self._finish("abandoned", reason)
        self._waiting = None
        return []

    # --- stepping -----------------------------------------------------------------------------------

    def _run(self, step_id: str | None) -> list[Action]:
        actions: list[Action] = []
        for _ in range(MAX_HOPS):
            if step_id is None:  # the end of the step list: done
                actions.append(Hangup(None))
                self._finish(self._end_outcome(), self._failure or "end of agent")
                return actions
            step = self.agent.step(step_id)
            self._step = step
            self._ask = None
            log.debug("call %s: step %s (%s)", self.call_id, step.id, step.type)
            if isinstance(step, SayStep):
                actions.append(self._say(step.text, step, interruptible=step.interruptible))
                step_id = self.agent.next_of(step)
            elif isinstance(step, BranchStep):
                step_id = self._branch(step)
            elif isinstance(step, AskStep):
                self._ask = _AskState(step)
                return actions + self._question(
                    self._say(step.prompt, step, interruptible=step.interruptible)
                )
            elif isinstance(step, WebhookStep):
                names = step.send if step.send is not None else list(self.slots)
                payload = {
                    "call_id": self.call_id,
                    "agent": self.agent.name,
                    "slots": {name: jsonable(self.slots[name]) for name in names if name in self.slots},
                }
                self._waiting = "webhook"
                visit = self._webhook_visits[step.id] = self._webhook_visits.get(step.id, 0) + 1
                key = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{self.call_id}/{step.id}/{visit}"))
                self._webhook = WebhookCall(step.id, step.url, step.method, self._now(), idempotency_key=key)
                self.record.webhooks.append(self._webhook)
                log.info("call %s: webhook %s %s %s", self.call_id, step.id, step.method, step.url)
                actions.append(
                    CallWebhook(
                        step.url,
                        step.method,
                        payload,
                        step.timeout_s,
                        step.retries,
                        step.id,
                        idempotency_key=key,
                        idempotent=step.idempotent,
                        hold_after_s=step.hold_after_s if step.hold_prompt else None,
                        headers=dict(step.headers),
                    )
                )
                return actions
            elif isinstance(step, TransferStep):
                if step.message:
                    actions.append(self._say(step.message, step, interruptible=False))
                actions.append(Transfer(step.to, step.message))
                self._waiting = "transfer"
                self._finish("transferred", self._failure or f"transfer at {step.id}")
                return actions
            elif isinstance(step, HangupStep):
                if step.message:
                    actions.append(self._say(step.message, step, interruptible=False))
                actions.append(Hangup(step.message))
                self._finish(self._end_outcome(), self._failure or f"hangup at {step.id}")
                return actions
        log.error("call %s: more than %d steps without a question (a loop?)", self.call_id, MAX_HOPS)
        return actions + self._polite_hangup("failed", "step loop")

    def _end_outcome(self) -> str:
        return "failed" if self._failure else "completed"

    def _branch(self, step: BranchStep) -> str | None:
        for case in step.cases:
            if self._holds(case.when):
                return case.next
        return self.agent.next_of(step)

    def _holds(self, cond: Condition) -> bool:
        if cond.intent is not None:
            return self.intent == cond.intent
        assert cond.slot is not None
        present = cond.slot in self.slots and self.slots[cond.slot] not in (None, "")
        if cond.present is not None:
            return present == cond.present
        if not present:
            return False
        value = self.slots[cond.slot]
        if cond.equals is not None:
            return _equals(value, cond.equals)
        number = _number(value)
        if number is None:
            return False
        if cond.greater_than is not None:
            return number > cond.greater_than
        if cond.less_than is not None:
            return number < cond.less_than
        return False

    # --- asking -------------------------------------------------------------------------------------

    def _question(self, *says: Say, confirm: bool = False) -> list[Action]:
        """Say ``says`` and open a turn for the current ask (its answer, or the yes/no read-back)."""
        assert self._ask is not None
        step = self._ask.step
        self._ask.questions = list(says)
        # A prompt rendered from the caller's data (a read-back, "Thanks {name}") is not told to the
        # recognisers: they keep what each distinct question needs (a grammar, the agent LM's corpus
        # and a search in every decoder), so a question per caller grew the decode process ~1.3 MB a
        # call without bound, and wrote the caller's data into the agent LM's files.
        prompt = says[-1].text if says and not says[-1].personal else ""
        question = ask_question(self.agent, step, prompt, confirm=confirm, today=self.today())
        self._waiting = "confirm" if confirm else "answer"
        self._listen = Listen(
            question,
            step.id,
            step.dtmf_enabled,
            step.dtmf_interdigit_s,
            step.dtmf_terminator,
            _keypad_limit(step, confirm),
            "12" if confirm and _keys_a_value(step) else "",
            step.dtmf_answer_wait_s,
        )
        self._turn = Turn(step.id, "confirm" if confirm else "answer", self._now())
        self.record.turns.append(self._turn)
        kind = SlotKind.YES_NO if confirm else step.slot_type
        self._turn_nlu = self.nlu.turn(question, kind, today=self.today())
        self._early_closed = False
        return [*says, self._listen]

    def _relisten(self) -> list[Action]:
        assert self._ask is not None
        return self._question(*self._ask.questions, confirm=self._waiting == "confirm")

    def _answer(self, reading: Reading, *, corrected: bool = False) -> list[Action]:
        """A valid value for the ask: re-ask if it breaks a value rule; else read it back for a yes/no
        if the policy says so (a correction always), else accept it. A yes/no answer "no" is never
        read back: only an agreement is double-checked before the agent acts on it."""
        assert self._ask is not None and self._turn is not None
        step = self._ask.step
        if step.rules is not None:
            violation = check_value(step.rules, step.slot_type, reading.value, self.today())
            if violation is not None:
                custom = violation.rule in step.rules.prompts
                return self._invalid(violation.rule, violation.message, custom=custom)
        policy = step.confirm
        threshold = self.agent.settings.confirm_threshold
        declining = step.slot_type is SlotKind.YES_NO and reading.value is False
        if corrected or (
            not declining
            and (
                policy is ConfirmPolicy.ALWAYS
                or (policy is ConfirmPolicy.LOW_CONFIDENCE and reading.confidence < threshold)
            )
        ):
            if not corrected:
                self._turn.result = "to_confirm"
            self._ask.candidate = reading
            template = step.confirm_prompt or DEFAULT_CONFIRM_PROMPT
            extra = {step.slot: reading.value, "value": reading.value}
            text = self._render(template, extra, spell={step.slot, "value"})
            personal = _has_placeholders(template)
            say = Say(text, step.interruptible and self.agent.settings.barge_in, personal)
            self.record.add_prompt(
                self._now(), step.id, text, personal=personal, interruptible=say.interruptible
            )
            log.info("call %s: confirming %s (confidence %.2f)", self.call_id, step.id, reading.confidence)
            return self._question(say, confirm=True)
        self._turn.result = "accepted"
        return self._accept(reading.value)

    def _confirmation(self, yes: bool | None) -> list[Action]:
        assert self._ask is not None and self._turn is not None
        candidate = self._ask.candidate
        if yes is None:
            self._turn.result = "no_match"
            return self._no_match()
        if yes and candidate is not None:
            self._turn.result = "yes"
            return self._accept(candidate.value)
        self._turn.result = "no"
        self._ask.candidate = None
        step = self._ask.step
        if step.slot_type is SlotKind.YES_NO:  # "no" to "you want me to block it?": the answer is no
            return self._accept(False)
        self._ask.no_match += 1
        log.info("call %s: value rejected at %s (%d)", self.call_id, step.id, self._ask.no_match)
        if self._ask.no_match > step.no_match_limit:
            return self._fail(step, f"no-match limit at {step.id}")
        return self._question(self._say(step.prompt, step, interruptible=step.interruptible))

    def _invalid(self, rule: str, message: str, *, custom: bool) -> list[Action]:
        """The value breaks a rule: say why (then the next reprompt, unless the rule's own prompt was
        given) and listen again; counts as a no-match."""
        assert self._ask is not None and self._turn is not None
        step = self._ask.step
        self._turn.result = f"invalid:{rule}"
        self._ask.candidate = None
        self._ask.no_match += 1
        log.info("call %s: value breaks rule %s at %s (%d)", self.call_id, rule, step.id, self._ask.no_match)
        if self._ask.no_match > step.no_match_limit:
            return self._fail(step, f"no-match limit at {step.id} ({rule} rule)")
        says = [self._say(message, step, interruptible=step.interruptible)]
        if not custom:
            says.append(self._reprompt(None))
        return self._question(*says)

    def _correction(self, text: str, confidence: float) -> Reading | None:
        """A new value in a reply to a read-back ("no, it's 4 3 7 1"), if it holds one that differs."""
        assert self._ask is not None
        step = self._ask.step
        if step.slot_type is SlotKind.YES_NO:
            return None
        rest = CORRECTION_LEAD.sub("", text, count=1).strip()
        if not rest or rest.lower() in ("yes", "no", "yeah", "yep", "correct", "right", "that's right"):
            return None
        question = ask_question(self.agent, step, step.prompt, today=self.today())
        reading = self.nlu.turn(question, step.slot_type, today=self.today()).final(rest, confidence)
        if reading is None or not reading.complete or reading.value is None:
            return None
        if jsonable(reading.value) == jsonable(self._candidate_value()):
            return None
        return reading

    def _spoken_digits(self, question: Question, step: AskStep, text: str) -> str:
        said = self.nlu.turn(question, step.slot_type, today=self.today()).final(text, 1.0)
        return "".join(ch for ch in str(said.value) if ch.isdigit()) if said is not None else ""

    def _keyed_confirmation(self, step: AskStep, keys: str, said: list[str]) -> list[Action]:
        """Keys at a read-back (``said``: words before them, finals best first): 1 yes, 2 no; for
        digits and phone numbers, a keyed value instead corrects it ("no" said before the keys makes
        even a value that begins with 1 or 2 one), and the same value keyed again confirms it."""
        assert self._turn is not None
        answer = {"1": True, "2": False}.get(keys)
        keyed = self._keypad_value(step, keys) if _keys_a_value(step) else None
        if keyed is not None and (answer is None or said):
            if keyed != self._candidate_value():
                self._turn.transcript = f"{said[0]} {keyed}" if said else keyed
                return self._corrected(Reading(keyed, 1.0, True))
            answer = True
        if answer is None and self._turn_nlu is not None:  # "no" and keys that make no value: a no
            readings = (self._turn_nlu.final(text, 1.0) for text in said)
            yes_no = (r.value for r in readings if r is not None and r.complete and isinstance(r.value, bool))
            answer = next(yes_no, None)
        return self._confirmation(answer)

    def _corrected(self, reading: Reading) -> list[Action]:
        """A correction replaces the value: checked against the rules, then read back again."""
        assert self._ask is not None and self._turn is not None
        self._turn.result = "correction"
        log.info("call %s: correction at %s", self.call_id, self.step_id)
        return self._answer(Reading(reading.value, reading.confidence, True), corrected=True)

    def _candidate_value(self) -> Any:
        assert self._ask is not None
        return None if self._ask.candidate is None else self._ask.candidate.value

    @staticmethod
    def _keypad_value(step: AskStep, keys: str) -> str | None:
        if not keys.isdigit() or (step.digits is not None and len(keys) != step.digits):
            return None
        return keys

    def _accept(self, value: Any) -> list[Action]:
        assert self._ask is not None
        step = self._ask.step
        self._set_slot(step.slot, value)
        log.info("call %s: slot %s filled at %s", self.call_id, step.slot, step.id)
        self._waiting = None
        self._turn = None
        return self._run(self.agent.next_of(step))

    def _no_match(self) -> list[Action]:
        assert self._ask is not None and self._turn is not None
        step = self._ask.step
        if self._turn.result is None or self._turn.result == "no_match":
            self._turn.result = "no_match"
        self._ask.no_match += 1
        return self._retry("no match", self._ask.no_match, step.no_match_limit, None)

    def _no_input(self) -> list[Action]:
        assert self._ask is not None and self._turn is not None
        step = self._ask.step
        self._turn.input = "no_input"
        self._turn.result = "no_input"
        self._ask.no_input += 1
        return self._retry("no input", self._ask.no_input, step.no_input_limit, step.no_input_prompt)

    def _retry(self, miss: str, count: int, limit: int, prompt: str | None) -> list[Action]:
        """After a no-match or no-input: reprompt (or re-ask the read-back) until ``limit``, then fail."""
        assert self._ask is not None
        step = self._ask.step
        log.info("call %s: %s at %s (%d/%d)", self.call_id, miss, step.id, count, limit)
        if count > limit:
            return self._fail(step, f"{miss.replace(' ', '-')} limit at {step.id}")
        if self._waiting == "confirm":
            return self._relisten()
        return self._question(self._reprompt(prompt))

    def _reprompt(self, preferred: str | None) -> Say:
        assert self._ask is not None
        step = self._ask.step
        self._ask.retries += 1
        if preferred:
            text = preferred
        elif step.reprompts:
            text = step.reprompts[min(self._ask.retries, len(step.reprompts)) - 1]
        else:
            text = step.prompt
        return self._say(text, step, interruptible=step.interruptible)

    def _global_intent(self, name: str) -> list[Action]:
        assert self._turn is not None
        action = self.agent.global_intents[name]
        self._turn.result = f"global:{name}"
        log.info("call %s: global intent %s at %s", self.call_id, name, self.step_id)
        if action.action == "repeat":
            return self._relisten()
        self._waiting = None
        if action.action == "hangup":
            self._finish("completed", f"global intent {name}")
            return [Hangup(None)]
        return self._run(action.goto)

    def _fail(self, step: AskStep | WebhookStep, reason: str, *, to: str | None = None) -> list[Action]:
        """Take the failure path: ``to`` (default the step's ``on_failure``), else a polite hangup."""
        target = to if to is not None else step.on_failure
        self._failure = reason
        self._waiting = None
        log.info("call %s: %s → %s", self.call_id, reason, target or "hangup")
        if target:
            return self._run(target)
        return self._polite_hangup("failed", reason)

    def _polite_hangup(self, outcome: str, reason: str) -> list[Action]:
        say = Say(DEFAULT_FAILURE_MESSAGE, interruptible=False)
        self.record.add_prompt(self._now(), self.step_id or "", say.text, personal=False, interruptible=False)
        self._finish(outcome, reason)
        return [say, Hangup(DEFAULT_FAILURE_MESSAGE)]

    def _finish(self, outcome: str, reason: str) -> None:
        self.finished = True
        record = self.record
        record.outcome = outcome
        record.outcome_reason = reason
        record.end_step = self.step_id
        record.duration_s = self._now()
        log.info("call %s: %s (%s) at %s", self.call_id, outcome, reason, self.step_id)

    # --- helpers ------------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() - self._t0

    def _set_slot(self, name: str, value: Any) -> None:
        self.slots[name] = value
        self.record.slots[name] = value

    def _note_reading(self, reading: Reading | None) -> None:
        assert self._turn is not None
        self._turn.nlu.update(
            {
                "value": None if reading is None else sensitive(jsonable(reading.value)),
                "value_confidence": None if reading is None else round(reading.confidence, 3),
                "complete": None if reading is None else reading.complete,
            }
        )

    def _say(self, template: str, step: Step, *, interruptible: bool = True) -> Say:
        text = self._render(template)
        personal = _has_placeholders(template)
        say = Say(text, interruptible and self.agent.settings.barge_in, personal)
        self.record.add_prompt(self._now(), step.id, text, personal=personal, interruptible=say.interruptible)
        return say

    def _render(
        self, template: str, extra: dict[str, Any] | None = None, spell: set[str] | None = None
    ) -> str:
        """Fill ``{slot}`` placeholders with spoken slot values (missing slots say nothing)."""
        values = {**self.slots, **(extra or {})}
        out: list[str] = []
        for literal, name, _, _ in string.Formatter().parse(template):
            out.append(literal)
            if name is None:
                continue
            kind = self._slot_kinds.get(name)
            if name == "value" and self._ask is not None and "value" not in self.slots:
                kind = self._ask.step.slot_type
            out.append(
                spoken(
                    values.get(name),
                    kind,
                    default_currency=self._currency(),
                    spell=spell is not None and name in spell,
                )
            )
        return "".join(out)

    def _currency(self) -> str:
        prompt = self._ask.step.prompt.lower() if self._ask is not None else ""
        for word, code in (("pound", "GBP"), ("dollar", "USD"), ("euro", "EUR")):
            if word in prompt:
                return code
        return "USD" if self.agent.language.lower() == "en-us" else "GBP"


def _keys_a_value(step: AskStep) -> bool:
    """Whether the slot's value can be keyed (digits, phone numbers), at its question and read-back."""
    return step.slot_type in (SlotKind.DIGITS, SlotKind.PHONE)


def _keypad_limit(step: AskStep, confirm: bool) -> int | None:
    """Keys after which a keypad answer is complete: one for yes/no, choices and their read-backs
    (1 yes, 2 no), else ``dtmf_max_digits``, else the expected ``digits`` (also at a read-back of
    digits or a phone number, where a keyed correction may come; 1 or 2 alone answer it at once)."""
    if (confirm and not _keys_a_value(step)) or step.slot_type in (SlotKind.YES_NO, SlotKind.CHOICE):
        return 1
    return step.dtmf_max_digits or step.digits


def _has_placeholders(template: str) -> bool:
    return any(name for _, name, _, _ in string.Formatter().parse(template))


def _hypothesis(h: Hypothesis | dict[str, Any], chosen_text: str, winner: str | None) -> dict[str, Any]:
    if isinstance(h, Hypothesis):
        engine, text, confidence = h.engine, h.text, h.confidence
    else:
        engine, text, confidence = h.get("engine"), h.get("text", ""), h.get("confidence")
    chosen = engine == winner if winner is not None else text == chosen_text
    return {
        "engine": engine,
        "text": sensitive(text),
        "confidence": None if confidence is None else round(float(confidence), 3),
        "chosen": chosen,
    }


def _lookup(body: dict[str, Any], path: str) -> tuple[bool, Any]:
    """``body['a']['b']`` for path 'a.b' (a key with a dot wins over the nested path)."""
    if path in body:
        return True, body[path]
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _saved_values(step: WebhookStep, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Slot → value of the step's saved response fields, or the first problem: a required field
    missing (or null, or an empty string), or any field of the wrong declared type."""
    values: dict[str, Any] = {}
    for path, declared in step.saved().items():
        found, value = _lookup(body, path)
        if not found or value is None or value == "":
            if declared.required:
                return {}, f"response lacks field {path!r}"
            continue
        typed = _typed(value, declared.type)
        if typed is None:
            return {}, f"response field {path!r} is not {declared.type}"
        values[declared.slot] = typed
    return values, None


def _typed(value: Any, kind: str) -> Any:
    """``value`` as a response field of type ``kind``, or None when it is not one."""
    scalar = isinstance(value, str | int | float | bool)
    if kind == "any":
        return value if scalar else None
    if kind == "string":
        return value if isinstance(value, str) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "digits":
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        return text if isinstance(text, str) and text.isdigit() else None
    if kind == "date":
        try:
            return date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if hasattr(value, "amount"):
        value = value.amount
    elif isinstance(value, dict) and "amount" in value:
        value = value["amount"]
    elif isinstance(value, tuple) and len(value) == 2:
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equals(value: Any, expected: str | int | float | bool) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    if isinstance(expected, int | float):
        number = _number(value)
        return number is not None and number == float(expected)
    return str(jsonable(value)).strip().lower() == str(expected).strip().lower()
