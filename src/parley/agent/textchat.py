"""A conversation driven by typed text: ``parley chat`` in a terminal, the studio's test console in a
browser. Typed lines are the caller's transcripts (fed word by word as partials first, so early close
shows), prompts and events come out as lines through ``echo``."""

from __future__ import annotations

import json
from collections.abc import Callable

from parley.agent.runtime import Action, CallWebhook, Conversation, EarlyClose, Hangup, Listen, Say, Transfer
from parley.agent.webhook import run_webhook_sync, sample_body

Echo = Callable[[str], None]


def say_typed(conversation: Conversation, line: str, confidence: float, echo: Echo) -> list[Action]:
    """Feed a typed line as word-by-word partials, then as the final transcript."""
    words = line.split()
    partials = [" ".join(words[: i + 1]) for i in range(len(words))] + [line]
    heard = line
    for partial in partials:
        if any(isinstance(a, EarlyClose) for a in conversation.on_partial(partial)):
            heard = partial
            unheard = " ".join(words[len(partial.split()) :])
            echo("[early close]" + (f" (not heard: {unheard!r})" if unheard else ""))
            break
    return conversation.on_final(heard, confidence)


def perform(conversation: Conversation, actions: list[Action], no_webhooks: bool, echo: Echo) -> bool:
    """Carry out the conversation's actions as text (``echo`` each line); True once the call has ended."""
    queue = list(actions)
    while queue:
        action = queue.pop(0)
        if isinstance(action, Say):
            echo(f"agent> {action.text}")
        elif isinstance(action, Listen):
            if action.dtmf_allowed:
                echo("[keypad accepted: /dtmf DIGITS]")
        elif isinstance(action, CallWebhook):
            if no_webhooks:
                body = sample_body(conversation.agent.step(action.step_id))  # type: ignore[arg-type]
                echo(f"[webhook {action.method} {action.url}: simulated 200 {json.dumps(body)}]")
                queue += conversation.on_webhook_result(200, body, None)
            else:

                def hold(says: list[Say]) -> None:
                    for said in says:
                        echo(f"agent> {said.text}")

                result, after = run_webhook_sync(conversation, action, hold)
                outcome = f"{result.status}" + (f", {result.error}" if result.error else "")
                echo(
                    f"[webhook {action.method} {action.url} → {outcome} in {result.latency_s * 1000:.0f} ms]"
                )
                queue += after
        elif isinstance(action, Transfer):
            echo(f"[transfer to {action.to}: end of chat]")
            conversation.on_transfer_result(200)
            return True
        elif isinstance(action, Hangup):
            echo("[agent hung up: end of chat]")
            return True
    return conversation.finished
