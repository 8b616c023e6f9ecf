"""The conversational load tester (``parley loadtest SCENARIO.yaml --target sip:HOST:PORT``).

Parley's own SIP/RTP core as a UAC places calls at a traffic shape and holds a conversation on
each one (wait for the agent's prompt to end, answer, press keys, stay silent, barge in, hang
up), while a webhook sink on loopback collects what the agent under test posts, so each call is
scored on the slot values the agent understood, not only on call success.

* :mod:`.scenario` — the scenario file (pydantic model, line/column errors), variables, templates.
* :mod:`.audio` — caller answers rendered once (TTS, content-addressed cache) or read from WAVs.
* :mod:`.caller` — one call's ears and mouth: prompt-end detection on arriving RTP, reply latency.
* :mod:`.sink` — the webhook sink, matching posts to calls by Call-ID.
* :mod:`.runner` — one process's calls (traffic schedule, scripts, per-call records).
* :mod:`.run` — the run: sink, workers, live progress, ``calls.jsonl``, summary, report, exit code.
* :mod:`.summary` / :mod:`.report` — summary figures, thresholds, the table and the HTML report.
"""
