"""The small agents that the end-to-end tests call, built from shared steps (YAML text for ``parley serve``).

Every test agent speaks flite's slt voice and ends at one of two hang-ups, ``bye`` (thanks) and ``sorry``
(a failure); an ask is unconfirmed and fails to ``sorry`` unless it says otherwise. The account agent
(:func:`account_agent`: a four digit account number and a yes/no, posted to a webhook whose reference
is read out) is the one the call, fault and load-tester tests share.
"""

from __future__ import annotations

from typing import Any

import yaml

Step = dict[str, Any]

class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as agent files are written by hand."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


SETTINGS = {"silence_ms": 700, "no_input_ms": 6000, "max_turn_ms": 10000, "barge_in": True}
BYE = {"id": "bye", "type": "hangup", "message": "Thank you, goodbye."}
SORRY = {"id": "sorry", "type": "hangup", "message": "Sorry, I could not help you. Goodbye."}
HANGUPS = (BYE, SORRY)
OPERATOR = "sip:operator@127.0.0.1:5999"
REFERENCE = "C123"  # what the account agent's webhook answers (``{"reference": REFERENCE}``)


def ask(step_id: str, slot_type: str, prompt: str, *, slot: str | None = None, **fields: Any) -> Step:
    """An ask step filling ``slot`` (default: the step's id); ``fields`` add to or override its defaults."""
    return {
        "id": step_id,
        "type": "ask",
        "slot": slot or step_id,
        "slot_type": slot_type,
        "prompt": prompt,
        "confirm": "never",
        "on_failure": "sorry",
        **fields,
    }


def webhook(url: str, **fields: Any) -> Step:
    """The ``submit`` step: POSTs to ``url`` once (no retry), then ``bye``; ``sorry`` on failure."""
    submit = {"id": "submit", "type": "webhook", "url": url, "method": "POST", "retries": 0, "timeout_s": 5}
    return {**submit, "next": "bye", "on_failure": "sorry", **fields}


def agent_yaml(
    name: str, steps: list[Step], *, intents: dict[str, Any] | None = None, **settings: Any
) -> str:
    """An agent's YAML: ``steps`` then the two hang-ups; ``settings`` override :data:`SETTINGS`.

    ``intents`` maps an intent to its example phrases and the step a caller saying it anywhere goes to
    (``{"operator": (["operator please"], {"goto": "handover"})}``)."""
    agent: dict[str, Any] = {
        "name": name,
        "language": "en-US",
        "voice": {"engine": "flite", "voice": "slt", "rate": 1.0},
        "settings": {**SETTINGS, **settings},
    }
    if intents:
        agent["intents"] = {intent: phrases for intent, (phrases, _) in intents.items()}
        agent["global_intents"] = {intent: action for intent, (_, action) in intents.items()}
    agent["steps"] = [*steps, *HANGUPS]
    return yaml.dump(agent, Dumper=_Dumper, sort_keys=False, width=200)


ACCOUNT = ask(
    "account",
    "digits",
    "Please say your four digit account number.",
    digits=4,
    no_input_prompt="I didn't hear anything. Please say your four digit account number.",
    no_input_limit=1,
)
AGREE = ask("agree", "yes_no", "Shall I send your request now?")


def account_agent(url: str, *, name: str = "account-test", no_input_ms: int = 4000) -> str:
    """A greeting, the account number, a yes/no, the webhook at ``url`` (its ``reference`` read out),
    and an operator request anywhere transferring to :data:`OPERATOR`."""
    steps = [
        {"id": "greet", "type": "say", "text": "Hello, this is the Parley test line."},
        ACCOUNT,
        AGREE,
        webhook(
            url,
            send=["account", "agree"],
            timeout_s=3,
            save={"reference": "reference"},
            say="Done. Your reference is {reference}.",
        ),
        {
            "id": "handover",
            "type": "transfer",
            "to": OPERATOR,
            "message": "Please hold while I transfer you.",
        },
    ]
    intents = {
        "operator": (
            [
                "I want to speak to an agent",
                "speak to an agent",
                "can I talk to a real person",
                "operator please",
            ],
            {"goto": "handover"},
        ),
        "repeat": (["can you repeat that", "say that again", "pardon"], {"action": "repeat"}),
        "goodbye": (["goodbye", "that's all thanks", "bye"], {"goto": "bye"}),
    }
    return agent_yaml(name, steps, intents=intents, no_input_ms=no_input_ms)
