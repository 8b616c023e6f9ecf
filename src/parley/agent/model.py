"""The agent file format: pydantic models for an agent's settings, intents and steps.

An agent is a YAML file (see ``examples/``) loaded by :func:`parley.agent.loader.load_agent`. The models
check the structure (types, required fields, unknown keys); :meth:`Agent.problems` checks the meaning
(step references, reachability, placeholders, intents) and reports each problem with the location
(a pydantic-style ``loc`` tuple) of the offending key or value, so the loader can point at its line.

Constructing an :class:`Agent` directly (``Agent.model_validate(data)``) runs both checks and raises a
``pydantic.ValidationError`` on any problem; pass ``context={"semantic": False}`` to skip the meaning
checks (the loader does, and reports :meth:`Agent.problems` itself).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from parley.speech.types import SlotType

SLUG = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
StepId = Annotated[str, Field(pattern=IDENTIFIER, description="A step id (an identifier).")]
SlotName = Annotated[str, Field(pattern=IDENTIFIER, description="A slot name (an identifier).")]
IntentName = Annotated[str, Field(pattern=IDENTIFIER, description="An intent name (an identifier).")]

TTS_ENGINES = ("flite", "espeak-ng", "festival")
TRANSFER_SCHEMES = ("sip", "sips", "tel")
WEBHOOK_SCHEMES = ("http", "https")
DTMF_KINDS = frozenset({"digits", "phone", "yes_no", "choice"})
DEFAULT_FAILURE_MESSAGE = "Sorry, I wasn't able to help you this time. Goodbye."

Loc = tuple[str | int, ...]


class SlotKind(StrEnum):
    """The kind of answer an ``ask`` step expects."""

    DIGITS = "digits"
    PHONE = "phone"
    NAME = "name"
    SPELLED = "spelled"
    YES_NO = "yes_no"
    DATE = "date"
    TIME = "time"
    AMOUNT = "amount"
    EMAIL = "email"
    ADDRESS = "address"
    CHOICE = "choice"
    FREE = "free"


_SPEECH_SLOT_TYPES: dict[SlotKind, SlotType] = {
    SlotKind.DIGITS: SlotType.DIGITS,
    SlotKind.PHONE: SlotType.PHONE,
    SlotKind.NAME: SlotType.NAME,
    SlotKind.SPELLED: SlotType.SPELLED,
    SlotKind.YES_NO: SlotType.YES_NO,
    SlotKind.DATE: SlotType.DATE,
    SlotKind.TIME: SlotType.TIME,
    SlotKind.AMOUNT: SlotType.AMOUNT,
    SlotKind.CHOICE: SlotType.CHOICE,
    SlotKind.FREE: SlotType.FREE,
    # The speech layer has no grammar for these: they are recognised as open speech (biased by the
    # agent's phrases) and read by their own NLU extractors.
    SlotKind.EMAIL: SlotType.FREE,
    SlotKind.ADDRESS: SlotType.FREE,
}


def speech_slot_type(kind: SlotKind | str) -> SlotType:
    """The speech layer's slot type for an agent slot kind (email, address → ``FREE``)."""
    return _SPEECH_SLOT_TYPES[SlotKind(kind)]


class ConfirmPolicy(StrEnum):
    """When an ``ask`` step reads the answer back for a yes/no confirmation."""

    NEVER = "never"
    ALWAYS = "always"
    LOW_CONFIDENCE = "low_confidence"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Voice(_Model):
    """The text-to-speech voice of the agent."""

    engine: Literal["flite", "espeak-ng", "festival"] = Field("flite", description="The TTS engine.")
    voice: str | None = Field(
        None, description="Engine voice name (e.g. flite 'slt'); engine default if unset."
    )
    rate: float = Field(1.0, gt=0.25, le=4.0, description="Speaking rate; 1.0 is normal.")
    fallback: list[str] = Field(
        default_factory=lambda: ["flite:kal16", "espeak-ng:en-us"],
        description="Voices tried in order when the engine fails on a prompt: ENGINE or ENGINE:VOICE.",
    )

    @model_validator(mode="after")
    def _known_fallback_engines(self) -> Self:
        for choice in self.fallback:
            engine = choice.partition(":")[0]
            if engine not in TTS_ENGINES:
                raise ValueError(
                    f"fallback voice {choice!r}: unknown engine {engine!r} (one of {', '.join(TTS_ENGINES)})"
                )
        return self

    def fallback_voices(self) -> list[tuple[str, str | None]]:
        """The fallback (engine, voice) pairs, without the agent's own voice."""
        pairs = [(e, v or None) for e, _, v in (choice.partition(":") for choice in self.fallback)]
        return [pair for pair in pairs if pair != (self.engine, self.voice)]


NumberPattern = Annotated[str, Field(pattern=r"^[0-9A-Za-z+*?#._\-\[\]!]{1,64}$")]


class Access(_Model):
    """Who may call the agent: patterns of the caller's number (the From URI's user part) and of
    the number dialled (the request URI's user part). Empty: anyone."""

    callers: list[NumberPattern] = Field(
        default_factory=list, description="Callers allowed (shell patterns: '+4420*'); empty: any."
    )
    called: list[NumberPattern] = Field(
        default_factory=list, description="Numbers dialled that the agent answers ('0800*'); empty: any."
    )

    def refusal(self, caller: str, called: str) -> str | None:
        """Why a call from ``caller`` to ``called`` is refused (naming the rule, not the numbers), or None."""
        if self.callers and not any(fnmatch.fnmatchcase(caller, p) for p in self.callers):
            return "the caller is not in access.callers"
        if self.called and not any(fnmatch.fnmatchcase(called, p) for p in self.called):
            return "the number dialled is not in access.called"
        return None


class Settings(_Model):
    """Turn-taking and confirmation settings."""

    silence_ms: int = Field(700, ge=100, le=5000, description="Silence that ends the caller's turn.")
    no_input_ms: int = Field(5000, ge=500, le=60000, description="Wait this long for speech to start.")
    max_turn_ms: int = Field(15000, ge=1000, le=120000, description="Longest caller turn.")
    barge_in: bool = Field(True, description="Let the caller interrupt prompts (unless a step says not).")
    confirm_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="Confidence under which low_confidence asks confirm the answer."
    )
    acknowledgement: str | None = Field(
        None,
        min_length=1,
        description="Said as soon as the caller stops, when the answer is not decided within "
        "acknowledge_after_ms ('Okay.'): the caller hears the agent at once while the recognisers "
        "finish. Default: none.",
    )
    acknowledge_after_ms: int = Field(
        150, ge=0, le=2000, description="How long a decision may take before the acknowledgement is said."
    )

    @field_validator("acknowledgement")
    @classmethod
    def _no_placeholders(cls, text: str | None) -> str | None:
        if text is not None and ("{" in text or "}" in text):
            raise ValueError("the acknowledgement is said before the answer is known: it takes no {slot}")
        return text


class GlobalIntentAction(_Model):
    """What a global intent does when recognised at any ask: go to a step, or an action."""

    goto: StepId | None = Field(None, description="Run this step.")
    action: Literal["repeat", "hangup"] | None = Field(
        None, description="repeat: say the last prompt again and listen; hangup: end the call."
    )

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.goto is None) == (self.action is None):
            raise ValueError("give exactly one of 'goto' (a step id) or 'action' (repeat | hangup)")
        return self


class SayStep(_Model):
    """Speak a prompt, then continue."""

    id: StepId
    type: Literal["say"] = Field(description="say")
    text: str = Field(min_length=1, description="What to say; may use {slot} placeholders.")
    interruptible: bool = Field(True, description="The caller may barge in.")
    next: StepId | None = Field(None, description="Default: the following step in the list.")


class ValueRules(_Model):
    """Checks on an answer's value (:mod:`parley.agent.rules`); an answer that breaks one is re-asked
    with that rule's prompt and counts as a no-match."""

    min: date | float | str | None = Field(
        None,
        description="Lowest value. date: an ISO date, 'today' or an offset from today ('-16y', '+1d'; "
        "units d, w, m, y); time: 'HH:MM'; amount and digits: a number.",
    )
    max: date | float | str | None = Field(None, description="Highest value, written as for 'min'.")
    min_length: int | None = Field(
        None, ge=1, le=256, description="Fewest characters (digits and phone: digits)."
    )
    max_length: int | None = Field(
        None, ge=1, le=256, description="Most characters (digits and phone: digits)."
    )
    pattern: str | None = Field(
        None, description="A regular expression the whole value must match (digits and phone: the digits)."
    )
    checksum: Literal["luhn"] | None = Field(None, description="luhn: the Luhn check digit (card numbers).")
    prompts: dict[Literal["min", "max", "length", "pattern", "checksum"], str] = Field(
        default_factory=dict,
        description="Rule → what is said when an answer breaks it, instead of the default explanation "
        "(which is followed by the next reprompt).",
    )


class AskStep(_Model):
    """Ask a question and fill a slot from the answer."""

    id: StepId
    type: Literal["ask"] = Field(description="ask")
    slot: SlotName
    slot_type: SlotKind = Field(description="The kind of answer, which picks the reader of its value.")
    prompt: str = Field(min_length=1, description="The question; may use {slot} placeholders.")
    reprompts: list[str] = Field(
        default_factory=list, description="Said in order after a no-match or no-input (the last repeats)."
    )
    no_input_prompt: str | None = Field(None, description="Said first after a no-input.")
    no_input_limit: int = Field(2, ge=0, le=10, description="No-inputs tolerated; one more: on_failure.")
    no_match_limit: int = Field(
        2,
        ge=0,
        le=10,
        description="No-matches (rule breaks, a 'no' at a read-back) tolerated; one more: on_failure.",
    )
    confirm: ConfirmPolicy = Field(
        ConfirmPolicy.LOW_CONFIDENCE,
        description="Read the answer back: never, always, or low_confidence (below confirm_threshold).",
    )
    confirm_prompt: str | None = Field(
        None, description="The read-back; may use {value}. Default: 'I heard {value}, is that right?'."
    )
    digits: int | None = Field(None, ge=1, le=32, description="digits only: the expected length.")
    options: list[str] = Field(default_factory=list, description="choice: the options; name: known names.")
    intents: list[IntentName] = Field(default_factory=list, description="Intents also accepted as answers.")
    dtmf: bool | None = Field(
        None, description="Accept keypad input (digits/phone/yes_no/choice). Default: only for digits."
    )
    dtmf_interdigit_s: float = Field(
        3.0, gt=0, le=30, description="Keypad: the answer ends this long after the last key."
    )
    dtmf_terminator: Literal["#", "*"] | None = Field(
        "#", description="Keypad: this key ends the answer at once (not part of it); null: none."
    )
    dtmf_max_digits: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Keypad: the answer ends at this many keys. Default: 'digits' when set, else no limit.",
    )
    dtmf_answer_wait_s: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Keypad, at the read-back of digits or a phone number: a lone 1 (yes) or 2 (no) answers "
        "this long after it when no other key follows; other keys make it the start of a keyed correction. "
        "0: 1 or 2 answers at once.",
    )
    rules: ValueRules | None = Field(None, description="Checks on the answer's value (range, length, ...).")
    interruptible: bool = Field(True, description="The caller may barge in on the prompt.")
    next: StepId | None = Field(None, description="Default: the following step in the list.")
    on_failure: StepId | None = Field(None, description="When limits are exhausted. Default: polite hangup.")

    @property
    def speech_slot_type(self) -> SlotType:
        """The speech layer's slot type for this question."""
        return speech_slot_type(self.slot_type)

    @property
    def dtmf_enabled(self) -> bool:
        """Whether keypad input answers this question (default: only for digits)."""
        if self.dtmf is None:
            return self.slot_type is SlotKind.DIGITS
        return self.dtmf and self.slot_type in DTMF_KINDS


class Condition(_Model):
    """A branch condition: on a slot (equals / greater_than / less_than / present) or on an intent."""

    slot: SlotName | None = Field(None, description="Test this slot.")
    intent: IntentName | None = Field(None, description="Holds when the last answer had this intent.")
    equals: str | int | float | bool | None = Field(None, description="The slot equals this value.")
    greater_than: float | None = Field(None, description="The slot's number is greater.")
    less_than: float | None = Field(None, description="The slot's number is smaller.")
    present: bool | None = Field(None, description="true: the slot has a value; false: it has none.")

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.slot is None) == (self.intent is None):
            raise ValueError("give exactly one of 'slot' or 'intent'")
        tests = [
            k for k in ("equals", "greater_than", "less_than", "present") if getattr(self, k) is not None
        ]
        if self.intent is not None and tests:
            raise ValueError(f"an intent condition takes no {tests[0]!r}")
        if self.slot is not None and len(tests) != 1:
            raise ValueError("a slot condition needs exactly one of equals, greater_than, less_than, present")
        return self


class BranchCase(_Model):
    """One case of a branch: the first case whose condition holds wins."""

    when: Condition = Field(description="The condition.")
    next: StepId


class BranchStep(_Model):
    """Go to the first case whose condition holds, else to ``default``."""

    id: StepId
    type: Literal["branch"] = Field(description="branch")
    cases: list[BranchCase] = Field(min_length=1, description="Tried in order; the first that holds wins.")
    default: StepId | None = Field(None, description="Default: the following step in the list.")


class SavedField(_Model):
    """A response field a webhook step saves into a slot: its type, and whether it must be there."""

    slot: SlotName
    type: Literal["any", "string", "number", "integer", "boolean", "date", "digits"] = Field(
        "any",
        description="any: a non-empty string, a number or a boolean; date: ISO 8601 text; digits: a string "
        "of digits.",
    )
    required: bool = Field(
        True, description="A missing (or null) field takes the failure path; false: the slot stays unset."
    )


class WebhookStep(_Model):
    """Send collected slots as JSON to the customer's backend and save fields of the response."""

    id: StepId
    type: Literal["webhook"] = Field(description="webhook")
    url: str = Field(description="http(s) URL; may use ${VAR} from the environment.")
    method: Literal["POST", "PUT"] = Field("POST", description="The HTTP method.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="Extra request headers, e.g. Authorization: 'Bearer ${CARDS_TOKEN}' (secrets from the "
        "environment); never logged nor recorded.",
    )
    send: list[SlotName] | None = Field(None, description="Slots to send. Default: all collected.")
    timeout_s: float = Field(3.0, gt=0, le=60, description="Per attempt: connect, send and answer.")
    retries: int = Field(
        1,
        ge=0,
        le=5,
        description="Extra attempts. A request that may have reached the backend is retried only when the "
        "step is idempotent; otherwise only when it cannot have arrived (connection refused).",
    )
    idempotent: bool = Field(
        False,
        description="The backend treats requests with the same Idempotency-Key as one: timeouts, lost "
        "connections and 5xx answers may be retried.",
    )
    hold_after_s: float = Field(
        1.0, ge=0, le=60, description="Say hold_prompt when the backend has not answered after this long."
    )
    hold_prompt: str | None = Field(
        "One moment, please.", description="Said while a slow backend works; null: silence."
    )
    save: dict[str, SlotName | SavedField] = Field(
        default_factory=dict,
        description="Response JSON field (a.b for nested) → slot name, or {slot, type, required}. A missing "
        "or badly typed required field takes the failure path.",
    )
    say: str | None = Field(None, description="Spoken after success; may use saved slots.")
    next: StepId | None = Field(None, description="Default: the following step in the list.")
    on_failure: StepId | None = Field(
        None,
        description="On an error answer, a refused connection or a bad response. Default: hangup.",
    )
    on_unknown: StepId | None = Field(
        None,
        description="When the outcome cannot be known (sent, but no answer in time). Default: on_failure.",
    )

    def saved(self) -> dict[str, SavedField]:
        """Response field → its declaration (the short form ``field: slot`` is a required ``any``)."""
        return {k: v if isinstance(v, SavedField) else SavedField(slot=v) for k, v in self.save.items()}


class TransferStep(_Model):
    """Hand the call over (SIP REFER) to a sip:/sips:/tel: URI."""

    id: StepId
    type: Literal["transfer"] = Field(description="transfer")
    to: str = Field(description="A sip:, sips: or tel: URI.")
    message: str | None = Field(None, description="Said before the transfer.")


class HangupStep(_Model):
    """Say goodbye and end the call."""

    id: StepId
    type: Literal["hangup"] = Field(description="hangup")
    message: str | None = Field(None, description="Said before hanging up.")


Step = Annotated[
    Union[SayStep, AskStep, BranchStep, WebhookStep, TransferStep, HangupStep],  # noqa: UP007
    Field(discriminator="type"),
]
STEP_TYPES = ("say", "ask", "branch", "webhook", "transfer", "hangup")


@dataclass(frozen=True, slots=True)
class Problem:
    """A semantic problem in an agent: where (``loc``, as in pydantic errors), what, and a hint."""

    loc: Loc
    message: str
    hint: str | None = None
    key: bool = False  # True: point at the key of ``loc`` rather than its value
    fragment: str | None = None  # the part of a text value at fault (e.g. "{name}"), to point inside it


def did_you_mean(word: str, choices: list[str] | tuple[str, ...], what: str = "") -> str | None:
    """A hint naming the closest choices to ``word`` (or listing them all when none is close)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if not choices:
        return None
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"{what or 'choices'} are: {shown}"


def placeholders(text: str) -> list[str]:
    """The ``{name}`` placeholders of a prompt (raises ValueError on malformed braces)."""
    names = []
    for _, field, _, _ in string.Formatter().parse(text):
        if field is not None:
            if not re.fullmatch(IDENTIFIER, field):
                raise ValueError(f"placeholder {{{field}}} is not a slot name")
            names.append(field)
    return names


class Agent(_Model):
    """A voice agent: its voice, settings, intents and the steps of its dialogue."""

    name: str = Field(pattern=SLUG, description="A slug, e.g. insurance-claim.")
    description: str | None = Field(None, description="One line about the agent.")
    language: str = Field(
        "en-US", description="BCP 47 tag; en-US speaks amounts in dollars, others in pounds."
    )
    voice: Voice = Field(default_factory=Voice, description="The text-to-speech voice.")
    settings: Settings = Field(
        default_factory=Settings, description="Silences, barge-in, read-back threshold."
    )
    intents: dict[IntentName, list[str]] = Field(
        default_factory=dict, description="Intent name → example phrases the classifier trains on."
    )
    global_intents: dict[IntentName, GlobalIntentAction] = Field(
        default_factory=dict, description="Intents recognised at any ask → goto a step or an action."
    )
    access: Access = Field(default_factory=Access, description="Who may call: caller and dialled numbers.")
    start: StepId | None = Field(None, description="Default: the first step.")
    steps: list[Step] = Field(
        min_length=1, description="say, ask, branch, webhook, transfer and hangup steps."
    )

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, dict) and info.context.get("semantic") is False:
            return self
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" for p in problems))
        return self

    # --- navigation ---------------------------------------------------------------------------------

    @property
    def start_id(self) -> str:
        """The id of the first step run."""
        return self.start or self.steps[0].id

    def step(self, step_id: str) -> Step:
        """The step with this id (KeyError if none)."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def next_of(self, step: Step) -> str | None:
        """The step after ``step`` on success: its ``next`` (branch: ``default``), else the following one.

        None for transfer and hangup steps, and at the end of the list (the runtime then hangs up).
        """
        if isinstance(step, TransferStep | HangupStep):
            return None
        explicit = step.default if isinstance(step, BranchStep) else step.next
        if explicit is not None:
            return explicit
        index = next(i for i, s in enumerate(self.steps) if s.id == step.id)
        return self.steps[index + 1].id if index + 1 < len(self.steps) else None

    def slots(self) -> dict[str, AskStep]:
        """Slot name → the (first) ask step that collects it."""
        out: dict[str, AskStep] = {}
        for s in self.steps:
            if isinstance(s, AskStep):
                out.setdefault(s.slot, s)
        return out

    def collected_slots(self) -> set[str]:
        """Every slot an ask collects or a webhook saves."""
        names = {s.slot for s in self.steps if isinstance(s, AskStep)}
        for s in self.steps:
            if isinstance(s, WebhookStep):
                names.update(f.slot for f in s.saved().values())
        return names

    def prompts(self) -> list[str]:
        """Every static text the agent speaks (templates included), in order, without duplicates."""
        acknowledgement = [self.settings.acknowledgement] if self.settings.acknowledgement else []
        return list(dict.fromkeys([*acknowledgement, *(text for _, text in self.texts())]))

    def phrases(self) -> list[str]:
        """Prompts, intent examples and options: the text a per-agent language model is built from."""
        out = self.prompts()
        for examples in self.intents.values():
            out.extend(examples)
        for s in self.steps:
            if isinstance(s, AskStep):
                out.extend(s.options)
        return list(dict.fromkeys(out))

    def texts(self) -> Iterator[tuple[Loc, str]]:
        """Every static text the agent speaks, with where it stands: ("steps", i, field[, ...])."""
        for i, s in enumerate(self.steps):
            fields: tuple[str, ...] = {
                "say": ("text",),
                "ask": ("prompt", "no_input_prompt", "confirm_prompt"),
                "webhook": ("say", "hold_prompt"),
                "transfer": ("message",),
                "hangup": ("message",),
                "branch": (),
            }[s.type]
            for f in fields:
                text = getattr(s, f)
                if text:
                    yield ("steps", i, f), text
            if isinstance(s, AskStep):
                for j, text in enumerate(s.reprompts):
                    yield ("steps", i, "reprompts", j), text
                for rule, text in s.rules.prompts.items() if s.rules else ():
                    yield ("steps", i, "rules", "prompts", rule), text

    # --- semantic checks ----------------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        """Every semantic problem, each located by a loc tuple (see :class:`Problem`)."""
        out: list[Problem] = []
        ids = [s.id for s in self.steps]
        seen: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            if s.id in seen:
                out.append(
                    Problem(
                        ("steps", i, "id"),
                        f"duplicate step id {s.id!r}",
                        f"the first step with this id is number {seen[s.id] + 1}; rename one of them",
                    )
                )
            else:
                seen[s.id] = i

        def ref(loc: Loc, target: str | None) -> None:
            if target is not None and target not in seen:
                out.append(
                    Problem(loc, f"no step has the id {target!r}", did_you_mean(target, ids, "step ids"))
                )

        ref(("start",), self.start)
        for name, act in self.global_intents.items():
            ref(("global_intents", name, "goto"), act.goto)
            if name not in self.intents:
                out.append(
                    Problem(
                        ("global_intents", name),
                        f"global intent {name!r} is not defined under 'intents'",
                        self._intent_hint(name),
                        key=True,
                    )
                )
        collected = self.collected_slots()
        for i, s in enumerate(self.steps):
            here: Loc = ("steps", i)
            if isinstance(s, SayStep):
                ref((*here, "next"), s.next)
            elif isinstance(s, AskStep):
                ref((*here, "next"), s.next)
                ref((*here, "on_failure"), s.on_failure)
                out.extend(self._ask_problems(here, s))
            elif isinstance(s, BranchStep):
                for j, case in enumerate(s.cases):
                    ref((*here, "cases", j, "next"), case.next)
                    cond = case.when
                    if cond.slot is not None and cond.slot not in collected:
                        out.append(
                            Problem(
                                (*here, "cases", j, "when", "slot"),
                                f"branch on slot {cond.slot!r}, which no ask or webhook collects",
                                did_you_mean(cond.slot, sorted(collected), "collected slots"),
                            )
                        )
                    if cond.slot is not None and cond.equals is not None:
                        out.extend(self._equals_problems((*here, "cases", j, "when", "equals"), cond))
                    if cond.intent is not None and cond.intent not in self.intents:
                        out.append(
                            Problem(
                                (*here, "cases", j, "when", "intent"),
                                f"intent {cond.intent!r} is not defined under 'intents'",
                                self._intent_hint(cond.intent),
                            )
                        )
                ref((*here, "default"), s.default)
            elif isinstance(s, WebhookStep):
                ref((*here, "next"), s.next)
                ref((*here, "on_failure"), s.on_failure)
                ref((*here, "on_unknown"), s.on_unknown)
                scheme = s.url.partition(":")[0].lower()
                if scheme not in WEBHOOK_SCHEMES or not re.match(r"^[A-Za-z]+://[^/\s]+", s.url):
                    out.append(
                        Problem(
                            (*here, "url"),
                            f"webhook URL {s.url!r} is not an http(s) URL",
                            "use http://host[:port]/path or https://host[:port]/path",
                        )
                    )
                for j, name in enumerate(s.send or ()):
                    if name not in collected:
                        out.append(
                            Problem(
                                (*here, "send", j),
                                f"slot {name!r} is sent but never collected",
                                did_you_mean(name, sorted(collected), "collected slots"),
                            )
                        )
            elif isinstance(s, TransferStep):
                scheme, colon, rest = s.to.partition(":")
                if scheme.lower() not in TRANSFER_SCHEMES or not colon or not rest.strip():
                    out.append(
                        Problem(
                            (*here, "to"),
                            f"transfer target {s.to!r} is not a sip:, sips: or tel: URI",
                            "e.g. 'sip:operator@pbx.example.com', 'tel:+442071234567'",
                        )
                    )
        for loc, text in self.texts():
            try:
                names = placeholders(text)
            except ValueError as exc:
                out.append(
                    Problem(loc, f"bad placeholder in prompt: {exc}", "write {slot_name}; '{{' for '{'")
                )
                continue
            read_back = loc[-1] == "confirm_prompt"  # its {value} is the value being read back
            for name in names:
                if name not in collected and not (read_back and name == "value"):
                    out.append(
                        Problem(
                            loc,
                            f"placeholder {{{name}}} names a slot that is never collected",
                            did_you_mean(name, sorted(collected), "collected slots"),
                            fragment=f"{{{name}",
                        )
                    )
        if len(seen) < len(self.steps) or any(p.message.startswith("no step has the id") for p in out):
            return out  # reachability means little until every id is unique and every reference resolves
        out.extend(self._unset_placeholder_problems(collected))
        reachable = self._reachable()
        for i, s in enumerate(self.steps):
            if s.id not in reachable and seen.get(s.id) == i:
                out.append(
                    Problem(
                        ("steps", i, "id"),
                        f"step {s.id!r} is unreachable",
                        f"nothing leads to it from {self.start_id!r} (next, branch, on_failure, global"
                        " intent); link it or remove it",
                    )
                )
        return out

    def _ask_problems(self, here: Loc, s: AskStep) -> list[Problem]:
        out: list[Problem] = []
        if s.slot_type is SlotKind.CHOICE and not s.options:
            out.append(
                Problem(
                    (*here, "slot_type"),
                    "a 'choice' question needs 'options'",
                    "add options: [first option, second option]",
                )
            )
        if s.digits is not None and s.slot_type is not SlotKind.DIGITS:
            out.append(
                Problem(
                    (*here, "digits"),
                    f"'digits' applies only to slot_type digits, not {s.slot_type.value}",
                    "remove 'digits' or use slot_type: digits",
                    key=True,
                )
            )
        if s.options and s.slot_type not in (SlotKind.CHOICE, SlotKind.NAME):
            out.append(
                Problem(
                    (*here, "options"),
                    f"'options' applies only to choice and name slots, not {s.slot_type.value}",
                    "remove 'options' or use slot_type: choice",
                    key=True,
                )
            )
        if s.dtmf and s.slot_type not in DTMF_KINDS:
            out.append(
                Problem(
                    (*here, "dtmf"),
                    f"a {s.slot_type.value} slot cannot be answered by keypad",
                    "dtmf applies to digits, phone, yes_no and choice",
                    key=True,
                )
            )
        if s.rules is not None:
            out.extend(_rules_problems((*here, "rules"), s.slot_type, s.rules))
        for j, name in enumerate(s.intents):
            if name not in self.intents:
                out.append(
                    Problem(
                        (*here, "intents", j),
                        f"intent {name!r} is not defined under 'intents'",
                        self._intent_hint(name),
                    )
                )
        return out

    def set_on_entry(self) -> dict[str, frozenset[str]]:
        """Step id → the slots certainly set whenever that step runs, on every path from the start.

        A forward "must" data flow: an ask sets its slot on its success edge only, a webhook its
        required saved fields on success only, a branch case on a slot (present, equals, ...) proves
        that slot on its edge; global intents jump from any ask. Unreachable steps are left out.
        """
        entry: dict[str, frozenset[str]] = {self.start_id: frozenset()}
        todo = [self.start_id]
        while todo:
            step = self.step(todo.pop())
            here = entry[step.id]
            edges: list[tuple[str | None, frozenset[str]]] = []
            if isinstance(step, SayStep):
                edges.append((self.next_of(step), here))
            elif isinstance(step, AskStep):
                edges += [(self.next_of(step), here | {step.slot}), (step.on_failure, here)]
                edges += [(a.goto, here) for a in self.global_intents.values()]
            elif isinstance(step, BranchStep):
                for case in step.cases:
                    slot = case.when.slot
                    proven = slot is not None and case.when.present is not False
                    edges.append((case.next, here | {slot} if proven and slot else here))
                edges.append((self.next_of(step), here))
            elif isinstance(step, WebhookStep):
                saved = {f.slot for f in step.saved().values() if f.required}
                edges += [
                    (self.next_of(step), here | saved),
                    (step.on_failure, here),
                    (step.on_unknown, here),
                ]
            for target, state in edges:
                if target is None or target == self.start_id:
                    continue
                narrowed = entry[target] & state if target in entry else state
                if entry.get(target) != narrowed:
                    entry[target] = narrowed
                    todo.append(target)
        return entry

    def _unset_placeholder_problems(self, collected: set[str]) -> list[Problem]:
        """Prompts using a slot that may be unset on some path to them (it would be spoken as nothing)."""
        entry = self.set_on_entry()
        out: list[Problem] = []
        for loc, text in self.texts():
            step = self.steps[int(loc[1])]
            if step.id not in entry:
                continue  # unreachable (reported as such)
            known = set(entry[step.id])
            if isinstance(step, AskStep) and loc[2] == "confirm_prompt":
                known |= {step.slot, "value"}
            if isinstance(step, WebhookStep) and loc[2] == "say":
                known |= {f.slot for f in step.saved().values() if f.required}
            try:
                names = placeholders(text)
            except ValueError:
                continue
            for name in dict.fromkeys(names):
                if name in collected and name not in known:
                    out.append(
                        Problem(
                            loc,
                            f"placeholder {{{name}}} may be unset here: some path to step {step.id!r} does "
                            "not collect it",
                            "collect it on every path first, branch on {slot: " + name + ", present: true},"
                            " or make the saved field required",
                            fragment=f"{{{name}",
                        )
                    )
        return out

    def _equals_problems(self, loc: Loc, cond: Condition) -> list[Problem]:
        """A branch comparing a choice or yes/no slot with a value that slot can never hold."""
        ask = self.slots().get(cond.slot or "")
        if ask is None or cond.slot in self._saved_slots():
            return []
        expected = cond.equals
        if ask.slot_type is SlotKind.CHOICE:
            values = [*ask.options, *ask.intents]
            if not any(str(expected).strip().lower() == v.strip().lower() for v in values):
                return [
                    Problem(
                        loc,
                        f"slot {cond.slot!r} never equals {expected!r}: it is not among the options",
                        did_you_mean(str(expected), values, "the options"),
                    )
                ]
        elif (
            ask.slot_type is SlotKind.YES_NO
            and not isinstance(expected, bool)
            and (not isinstance(expected, str) or expected not in ask.intents)
        ):
            return [
                Problem(
                    loc,
                    f"yes/no slot {cond.slot!r} is true or false, never {expected!r}",
                    "write equals: true or equals: false"
                    + (f" (or one of its intents: {', '.join(ask.intents)})" if ask.intents else ""),
                )
            ]
        return []

    def _saved_slots(self) -> set[str]:
        return {f.slot for s in self.steps if isinstance(s, WebhookStep) for f in s.saved().values()}

    def _intent_hint(self, name: str) -> str:
        close = did_you_mean(name, list(self.intents), "defined intents")
        if close and close.startswith("did"):
            return close
        return f"add '{name}: [example phrases]' under 'intents'" + (f"; {close}" if close else "")

    def _reachable(self) -> set[str]:
        edges: list[str] = [a.goto for a in self.global_intents.values() if a.goto]
        todo = [self.start_id, *edges]
        seen: set[str] = set()
        while todo:
            sid = todo.pop()
            if sid in seen:
                continue
            seen.add(sid)
            try:
                s = self.step(sid)
            except KeyError:
                continue
            nxt = self.next_of(s)
            if nxt:
                todo.append(nxt)
            if isinstance(s, AskStep | WebhookStep) and s.on_failure:
                todo.append(s.on_failure)
            if isinstance(s, WebhookStep) and s.on_unknown:
                todo.append(s.on_unknown)
            if isinstance(s, BranchStep):
                todo.extend(c.next for c in s.cases)
        return seen


def _rules_problems(loc: Loc, kind: SlotKind, rules: ValueRules) -> list[Problem]:
    """Rules that do not apply to the slot kind, bounds that do not parse, a bad regex, min > max."""
    from parley.agent import rules as checks

    out: list[Problem] = []
    bounded = kind.value in checks.BOUNDED_KINDS
    for name in ("min", "max"):
        bound = getattr(rules, name)
        if bound is None:
            continue
        if not bounded:
            out.append(
                Problem(
                    (*loc, name),
                    f"'{name}' applies to date, time, amount and digits slots, not {kind.value}",
                    "use min_length / max_length for a length",
                    key=True,
                )
            )
            continue
        problem = checks.bound_problem(bound, kind.value)
        if problem:
            out.append(Problem((*loc, name), problem))
    if bounded and rules.min is not None and rules.max is not None and not out:
        reference = date(2000, 1, 1)
        if kind is SlotKind.DATE:
            low, high = checks.resolve_date(rules.min, reference), checks.resolve_date(rules.max, reference)
        elif kind is SlotKind.TIME:
            low, high = checks.resolve_time(rules.min), checks.resolve_time(rules.max)
        else:
            low, high = float(rules.min), float(rules.max)  # type: ignore[arg-type]
        if low > high:
            out.append(Problem((*loc, "min"), "min is above max: no answer can pass", "swap them"))
    for name in ("min_length", "max_length", "pattern"):
        if getattr(rules, name) is not None and kind.value not in checks.TEXT_KINDS:
            out.append(
                Problem((*loc, name), f"'{name}' does not apply to {kind.value} slots", None, key=True)
            )
    if rules.min_length and rules.max_length and rules.min_length > rules.max_length:
        out.append(Problem((*loc, "min_length"), "min_length is above max_length", "swap them"))
    if rules.pattern is not None:
        try:
            re.compile(rules.pattern)
        except re.error as exc:
            out.append(Problem((*loc, "pattern"), f"pattern is not a valid regular expression: {exc}"))
    if rules.checksum is not None and kind.value not in checks.CHECKSUM_KINDS:
        out.append(
            Problem((*loc, "checksum"), f"a checksum applies to digits slots, not {kind.value}", key=True)
        )
    return out


def agent_json_schema() -> dict[str, Any]:
    """The JSON schema of agent files, for editors."""
    schema = Agent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", "Parley agent")
    return schema
