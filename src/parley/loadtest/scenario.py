"""Load-test scenario files: pydantic models, YAML loading with line/column errors, variables, templates.

A scenario holds the traffic shape, transport and codecs, the webhook sink, the pass/fail thresholds,
per-call variables and one or more weighted caller scripts (see ``examples/loadtest/``). Errors are
reported like agent files' (:class:`parley.agent.loader.AgentError`: ``file:line:col: error: ...``);
the YAML-position machinery is the agent loader's.

Templates are answer texts and expected slot values with ``{variable}`` or ``{variable|filter}``
placeholders; filters: ``words`` (each digit as a word: "4 2" → "four two"), ``spell`` (letters one
by one), ``spoken`` (an ISO date as said aloud: "the third of May nineteen eighty five"), ``upper``,
``lower``. Each call draws its variables from ``random.Random(f"{seed}:{index}")``, so a call's values
depend only on the seed and its index (not on the number of workers).
"""

from __future__ import annotations

import random
import re
import types
import typing
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from parley.agent.loader import (
    AgentError,
    AgentFileError,
    _at_node,
    _resolve,
    _sorted,
    read_source,
    read_yaml_mapping,
)
from parley.agent.model import did_you_mean
from parley.agent.rules import resolve_date

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|([a-z_]+))?\}")
FILTERS = ("words", "spell", "spoken", "upper", "lower")
STEP_KINDS = (
    "wait_prompt",
    "say",
    "pause",
    "barge_in",
    "dtmf",
    "silence",
    "hangup",
    "expect_transfer",
    "expect_hangup",
)
Loc = tuple[str | int, ...]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- traffic, media, sink, thresholds -------------------------------------------------------------
class Traffic(_Model):
    """When calls are placed: a rate that ramps up, holds, ramps down; a number of calls or a duration."""

    calls: int | None = Field(None, ge=1, description="Place this many calls in all.")
    duration_s: float | None = Field(None, gt=0, description="Place calls for this long.")
    rate: float = Field(1.0, gt=0, description="Calls per second on the plateau.")
    concurrency: int = Field(100, ge=1, description="At most this many calls at once.")
    ramp_up_s: float = Field(0.0, ge=0, description="Seconds to ramp the rate up from zero.")
    ramp_down_s: float = Field(0.0, ge=0, description="Seconds to ramp the rate down at the end.")
    setup_timeout_s: float = Field(10.0, gt=0, le=30, description="INVITE → answer, else no_answer.")
    max_call_s: float = Field(300.0, gt=0, description="A call still up after this long is hung up.")

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if (self.calls is None) == (self.duration_s is None):
            raise ValueError("give either 'calls' or 'duration_s'")
        if self.duration_s is not None and self.ramp_up_s + self.ramp_down_s > self.duration_s:
            raise ValueError("ramp_up_s + ramp_down_s is longer than duration_s")
        return self


class PromptDetection(_Model):
    """How the caller tells the agent's prompt has ended: speech, then this much silence."""

    silence_ms: int = Field(700, ge=100, le=10000, description="Silence after speech that ends a prompt.")
    min_speech_ms: int = Field(300, ge=20, le=10000, description="Speech needed before that silence counts.")
    timeout_s: float = Field(20.0, gt=0, le=600, description="Default wait_prompt timeout.")


class CallerVoice(_Model):
    engine: Literal["flite", "espeak-ng", "festival"] = Field("flite", description="The callers' TTS engine.")
    voice: str = Field("slt", description="The engine's voice (pocketsphinx hears flite's slt well).")
    rate: float = Field(1.0, gt=0.2, le=4.0, description="Speaking rate; 1.0 is normal.")


class Caller(_Model):
    voice: CallerVoice = Field(CallerVoice(), description="How the callers' answers are synthesised.")
    prompt: PromptDetection = Field(PromptDetection(), description="How a caller tells a prompt has ended.")


class HookResponse(_Model):
    status: int = Field(200, ge=100, le=599, description="The HTTP status answered.")
    body: dict[str, Any] = Field(default_factory=dict, description="The JSON object answered.")


class Webhook(_Model):
    """The sink the agent under test posts to (``http://HOST:PORT/...``)."""

    host: str = Field("127.0.0.1", description="Address the sink listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the sink listens on (0: a free one).")
    responses: dict[str, HookResponse] = Field(
        default_factory=dict, description="Answer per request path; others get 200 {}."
    )


class Thresholds(_Model):
    """Limits; a run that misses any exits 1 (absent: not checked)."""

    max_failed_pct: float | None = Field(None, ge=0, le=100, description="Failed calls, % of all.")
    max_p95_turn_latency_ms: float | None = Field(
        None, gt=0, description="95th percentile from the end of an answer to the agent's reply."
    )
    max_p95_setup_ms: float | None = Field(None, gt=0, description="95th percentile INVITE → answer.")
    min_slot_accuracy_pct: float | None = Field(
        None, ge=0, le=100, description="Right slot values, % of those scored (not reached: not scored)."
    )
    max_rtp_loss_pct: float | None = Field(None, ge=0, le=100, description="Lost received RTP packets, %.")


# -- variables ------------------------------------------------------------------------------------
class DigitsGen(_Model):
    length: int = Field(ge=1, le=64, description="How many characters.")
    alphabet: str = Field(
        "0123456789", min_length=1, pattern=r"^[0-9A-Za-z]+$", description="The characters drawn from."
    )


class NumberGen(_Model):
    min: int = Field(0, description="The smallest number (included).")
    max: int = Field(description="The largest number (included).")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max < self.min:
            raise ValueError("max is below min")
        return self


class DateGen(_Model):
    """Dates from ``start`` to ``end``: ISO dates, ``today`` or offsets from the run's day (``+1d``,
    ``-16y``; units d, w, m, y) as in agents' value rules, for agents whose rules are relative."""

    start: date | str = Field(description="The first date: ISO, today, or an offset such as +1d.")
    end: date | str = Field(description="The last date, written as for start.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        try:
            first, last = self.span(date.today())
        except ValueError:
            raise ValueError("start and end are ISO dates, today, or offsets such as +7d, -16y") from None
        if last < first:
            raise ValueError("end is before start")
        return self

    def span(self, today: date) -> tuple[date, date]:
        """(first, last) for a run on ``today``."""
        return resolve_date(self.start, today), resolve_date(self.end, today)


class Variable(_Model):
    """One generator: ``digits``, ``number``, ``date`` or ``choice`` (exactly one)."""

    digits: DigitsGen | None = Field(None, description="A string of digits.")
    number: NumberGen | None = Field(None, description="An integer in a range.")
    date: DateGen | None = Field(None, description="An ISO date in a range.")
    choice: list[str | int | float | bool] | None = Field(None, min_length=1, description="One of these.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("digits", "number", "date", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a variable has exactly one generator: digits, number, date or choice")
        return self

    def draw(self, rng: random.Random) -> str:
        if self.digits is not None:
            return "".join(rng.choice(self.digits.alphabet) for _ in range(self.digits.length))
        if self.number is not None:
            return str(rng.randint(self.number.min, self.number.max))
        if self.date is not None:
            first, last = self.date.span(date.today())
            return (first + timedelta(days=rng.randint(0, (last - first).days))).isoformat()
        assert self.choice is not None
        return _text(rng.choice(self.choice))


# -- steps ----------------------------------------------------------------------------------------
class WaitPrompt(_Model):
    timeout_s: float | None = Field(None, gt=0, le=600, description="Default: caller.prompt.timeout_s.")
    step: str | None = Field(
        None,
        description="The ask whose question this waits for (needs the scenario's agent): read-backs, "
        "re-asks and statements heard first are followed (see docs/loadtest.md).",
    )
    read_back: bool = Field(False, description="With step: wait for that ask's read-back instead.")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"step": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _read_back_of_a_step(self) -> Self:
        if self.read_back and self.step is None:
            raise ValueError("read_back needs the step whose read-back is awaited")
        return self


class Say(_Model):
    text: str | None = Field(None, description="Synthesised answer text (a template).")
    wav: Path | None = Field(None, description="A WAV file to play, relative to the scenario.")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"text": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.text is None) == (self.wav is None):
            raise ValueError("say needs either 'text' or 'wav'")
        return self


class Pause(_Model):
    ms: int = Field(ge=0, le=600_000, description="Milliseconds of silence.")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"ms": data} if isinstance(data, int) and not isinstance(data, bool) else data


class BargeIn(Say):
    after_ms: int = Field(500, ge=0, le=60_000, description="Speak this long after the agent starts.")
    timeout_s: float | None = Field(None, gt=0, le=600, description="Wait this long for the prompt.")


class Dtmf(_Model):
    digits: str = Field(
        pattern=r"^(?:[0-9*#A-Da-d]|\{[A-Za-z_][A-Za-z0-9_]*\})+$", description="Keys, or {variable}."
    )

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"digits": str(data)} if isinstance(data, str | int) and not isinstance(data, bool) else data


class Expectation(_Model):
    timeout_s: float = Field(30.0, gt=0, le=600, description="Wait this long for it.")


class Empty(_Model):
    pass


class Step(_Model):
    """One caller action; written as ``- say: "..."``, ``- pause: 500`` or a bare ``- hangup``."""

    wait_prompt: WaitPrompt | None = Field(None, description="Wait for the agent's next prompt to end.")
    say: Say | None = Field(None, description="Speak an answer.")
    pause: Pause | None = Field(None, description="Stay silent (milliseconds).")
    barge_in: BargeIn | None = Field(None, description="Speak while the agent's next prompt plays.")
    dtmf: Dtmf | None = Field(None, description="Key RFC 4733 digits.")
    silence: Pause | None = Field(None, description="Stay silent (milliseconds), e.g. before a no-input.")
    hangup: Empty | None = Field(None, description="Hang up.")
    expect_transfer: Expectation | None = Field(None, description="The agent must transfer the call.")
    expect_hangup: Expectation | None = Field(None, description="The agent must hang up.")

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {data: {}}
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if len(self.model_fields_set) != 1:
            raise ValueError("a step is one action: " + ", ".join(STEP_KINDS))
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.model_fields_set))

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)


class Expect(_Model):
    value: str | int | float | bool = Field(description="The expected value (a template).")
    type: str = Field("text", pattern=r"^[a-z_]+$", description="Slot type, for per-type accuracy.")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {"value": data}


class Script(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The script's name (in records).")
    weight: float = Field(1.0, gt=0, description="Chosen in proportion to this.")
    steps: list[Step] = Field(min_length=1, description="The caller's actions, in order.")
    expect: dict[str, Expect] = Field(default_factory=dict, description="Slot → expected value template.")


class Scenario(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The scenario's name.")
    description: str = Field("", description="One line.")
    target: str | None = Field(None, pattern=r"^sips?:", description="sip:HOST:PORT of the agent.")
    agent: Path | None = Field(
        None,
        description="The agent file under test, relative to the scenario: its prompts are recognised, so "
        "that wait_prompt can name the step it waits for.",
    )
    transport: Literal["udp", "tcp"] = Field("udp", description="SIP transport.")
    codecs: list[Literal["PCMU", "PCMA"]] = Field(
        ["PCMU", "PCMA"], min_length=1, description="Offered codecs, in order."
    )
    traffic: Traffic = Field(description="When calls are placed.")
    caller: Caller = Field(Caller(), description="The callers' voice and prompt detection.")
    webhook: Webhook = Field(Webhook(), description="The sink the agent posts to.")
    thresholds: Thresholds = Field(Thresholds(), description="Pass/fail limits.")
    variables: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Variable] = Field(
        default_factory=dict, description="Per-call values, one generator each."
    )
    scripts: list[Script] = Field(min_length=1, description="Caller scripts, chosen by weight.")

    def problems(self, base: Path | None = None) -> list[tuple[Loc, str, str | None]]:
        """Meaning checks: (loc, message, hint) for unknown variables, filters, missing WAVs, names."""
        out: list[tuple[Loc, str, str | None]] = []
        names = list(self.variables)
        seen: set[str] = set()
        steps = self._agent_steps(base, out)
        for i, script in enumerate(self.scripts):
            if script.name in seen:
                out.append((("scripts", i, "name"), f"duplicate script name {script.name!r}", None))
            seen.add(script.name)
            templates: list[tuple[Loc, str]] = []
            for j, step in enumerate(script.steps):
                args = step.args
                if isinstance(args, WaitPrompt) and args.step is not None:
                    here = ("scripts", i, "steps", j, "wait_prompt", "step")
                    if steps is None:
                        out.append(
                            (
                                here,
                                "wait_prompt names a step, but the scenario names no agent",
                                "add agent: PATH",
                            )
                        )
                    elif steps and args.step not in steps:
                        out.append(
                            (
                                here,
                                f"the agent has no ask {args.step!r}",
                                did_you_mean(args.step, sorted(steps), "asks"),
                            )
                        )
                if isinstance(args, Dtmf):
                    templates.append((("scripts", i, "steps", j, step.kind, "digits"), args.digits))
                if isinstance(args, Say):
                    here: Loc = ("scripts", i, "steps", j, step.kind)
                    if args.text is not None:
                        templates.append(((*here, "text"), args.text))
                    if args.wav is not None and not _resolve_path(args.wav, base).is_file():
                        message = f"no such WAV file: {args.wav}"
                        out.append(((*here, "wav"), message, "paths are relative to the scenario"))
            for slot, expect in script.expect.items():
                if isinstance(expect.value, str):
                    templates.append((("scripts", i, "expect", slot, "value"), expect.value))
            for loc, text in templates:
                for match in PLACEHOLDER.finditer(text):
                    name, filt = match.group(1), match.group(2)
                    if name not in self.variables:
                        hint = did_you_mean(name, names, "variables") if names else "declare it in variables:"
                        out.append((loc, f"unknown variable {name!r} in {text!r}", hint))
                    if filt is not None and filt not in FILTERS:
                        hint = did_you_mean(filt, FILTERS, "filters")
                        out.append((loc, f"unknown filter {filt!r} in {text!r}", hint))
        return out

    def agent_path(self, base: Path | None) -> Path | None:
        """The agent file under test, if the scenario names one."""
        return None if self.agent is None else _resolve_path(self.agent, base)

    def _agent_steps(self, base: Path | None, out: list[tuple[Loc, str, str | None]]) -> set[str] | None:
        """The agent's ask ids (None: no agent named; empty: it could not be read, said in ``out``)."""
        path = self.agent_path(base)
        if path is None:
            return None
        from parley.agent.loader import load_agent
        from parley.agent.model import AskStep

        try:
            agent = load_agent(path)
        except (AgentFileError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            out.append(
                (
                    ("agent",),
                    f"cannot read the agent {self.agent}: {first}",
                    "paths are relative to the scenario",
                )
            )
            return set()
        return {step.id for step in agent.steps if isinstance(step, AskStep)}

    def thresholds_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.thresholds.model_dump().items() if v is not None}


def _resolve_path(path: Path, base: Path | None) -> Path:
    return path if path.is_absolute() or base is None else base / path


# -- templates ------------------------------------------------------------------------------------
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]
TEENS.append("nineteen")
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
ORDINALS += ["eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth"]
ORDINALS += ["eighteenth", "nineteenth", "twentieth"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
MONTHS += ["November", "December"]


def _below_100(n: int) -> str:
    if n < 10:
        return ONES[n]
    if n < 20:
        return TEENS[n - 10]
    return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])


def _ordinal(n: int) -> str:
    if n <= 20:
        return ORDINALS[n - 1]
    return (TENS[n // 10][:-1] + "ieth") if n % 10 == 0 else TENS[n // 10] + " " + ORDINALS[n % 10 - 1]


def _year(y: int) -> str:
    if 2000 <= y < 2010:
        return "two thousand" + ("" if y == 2000 else " and " + ONES[y - 2000])
    high, low = divmod(y, 100)
    return _below_100(high) + " " + ("hundred" if low == 0 else ("oh " if low < 10 else "") + _below_100(low))


def spoken_date(iso: str) -> str:
    """``1985-05-03`` → ``the third of May nineteen eighty five``."""
    d = date.fromisoformat(iso)
    return f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]} {_year(d.year)}"


def _apply(value: str, filt: str | None) -> str:
    if filt is None:
        return value
    if filt == "words":
        return " ".join(ONES[int(c)] if c.isdigit() else c for c in value if not c.isspace())
    if filt == "spell":
        return " ".join(c.upper() for c in value if c.isalnum())
    if filt == "spoken":
        return spoken_date(value)
    if filt == "upper":
        return value.upper()
    if filt == "lower":
        return value.lower()
    raise ValueError(f"unknown filter {filt!r}")


def render_template(text: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` / ``{name|filter}`` placeholders (``{{`` and ``}}`` are literal braces)."""
    parts = text.split("{{")
    out = []
    for part in parts:
        pieces = part.split("}}")
        filled = (PLACEHOLDER.sub(lambda m: _apply(values[m.group(1)], m.group(2)), p) for p in pieces)
        out.append("}".join(filled))
    return "{".join(out)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def draw_values(scenario: Scenario, rng: random.Random) -> dict[str, str]:
    """One call's variables (in declaration order, so a seed gives the same values)."""
    return {name: var.draw(rng) for name, var in scenario.variables.items()}


def choose_script(scenario: Scenario, rng: random.Random) -> Script:
    return rng.choices(scenario.scripts, weights=[s.weight for s in scenario.scripts])[0]


# -- loading --------------------------------------------------------------------------------------
class ScenarioFileError(AgentFileError):
    """A scenario that cannot be loaded; ``errors`` lists every problem (``file:line:col: error: ...``)."""


def scenario_json_schema() -> dict[str, Any]:
    """The JSON schema of load-test scenario files, for editors (``parley schema --scenario``)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Parley load-test scenario"
    defs = schema["$defs"]
    # the short forms the models' "before" validators accept: "- wait_prompt", "wait_prompt: STEP",
    # "say: text", "pause: 500"
    short_forms: dict[str, dict[str, Any]] = {
        "Step": {"type": "string", "enum": ["wait_prompt", "hangup"]},
        "WaitPrompt": {"type": "string"},
        "Say": {"type": "string"},
        "BargeIn": {"type": "string"},
        "Pause": {"type": "integer"},
        "Dtmf": {"type": ["string", "integer"]},
        "Expect": {"type": ["string", "number", "boolean"]},
    }
    for name, short in short_forms.items():
        defs[name] = {"anyOf": [defs[name], short]}
    return schema


def is_scenario_text(text: str) -> bool:
    """Whether YAML text looks like a scenario (a top-level ``scripts:``) rather than an agent."""
    return re.search(r"^scripts\s*:", text, re.MULTILINE) is not None and not re.search(
        r"^steps\s*:", text, re.MULTILINE
    )


def validate_scenario_file(path: str | Path) -> list[AgentError]:
    """Every problem in a scenario file (empty when it is valid)."""
    try:
        load_scenario(path)
    except ScenarioFileError as exc:
        return exc.errors
    return []


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file (raises :class:`ScenarioFileError`)."""
    path = Path(path)
    return load_scenario_text(read_source(path, ScenarioFileError), str(path), base=path.parent)


def load_scenario_text(text: str, file: str = "<scenario>", base: Path | None = None) -> Scenario:
    """Load and validate a scenario from YAML text; WAV paths are relative to ``base``."""
    root, data, errors = read_yaml_mapping(
        text,
        file,
        ScenarioFileError,
        kind="a scenario",
        examples="examples/loadtest/",
        first_line="name: my-test",
    )
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        errors += [_error(file, root, err) for err in exc.errors()]
        raise ScenarioFileError(file, _sorted(errors)) from None
    for loc, message, hint in scenario.problems(base):
        _, node = _resolve(root, loc)
        errors.append(_at_node(file, node, message, hint))
    if errors:
        raise ScenarioFileError(file, _sorted(errors))
    return scenario


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _model_at(loc: Loc) -> type[BaseModel]:
    """The model whose fields the mapping at ``loc`` holds (for unknown-field hints)."""
    model: type[BaseModel] = Scenario
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            inner = _inner_model(field.annotation)
            if inner is None:
                break
            model = inner
    return model


def _where(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":
            out += f".{part}" if out else part
    return out


def _error(file: str, root: yaml.Node, err: ErrorDetails) -> AgentError:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    message = err["msg"].removeprefix("Value error, ")
    hint: str | None = None
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    key_wanted = False
    if kind == "missing":
        message = f"missing required field {field!r}"
        hint = f"add {field}: ..."
    elif kind == "extra_forbidden":
        key_wanted = True
        fields = list(_model_at(loc[:-1]).model_fields)
        message = f"unknown field {field!r}"
        if _model_at(loc[:-1]) is Step:
            message = f"unknown step {field!r}"
            fields = list(STEP_KINDS)
        hint = did_you_mean(str(field), fields, "allowed fields")
    else:
        where = _where(loc)
        message = f"{where}: {message[:1].lower()}{message[1:]}" if where else message
    key, node = _resolve(root, loc)
    target = key if key_wanted and key is not None else node
    return _at_node(file, target, message, hint)
