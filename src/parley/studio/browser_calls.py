"""Calls from the studio's page: an editor picks any version of an agent (a draft too), presses Call
and talks to it from the browser (WebRTC, :mod:`parley.telephony.webrtc`).

The studio process runs the same pieces as ``parley serve``: a :class:`CallManager` (its media clock
and admission control; no SIP is started), a :class:`WebRtcChannel`, and a :class:`VoiceAgent` per
version called (the ASR engines, their decoder processes and the TTS shared by all), all started on
the first call. Each call's record goes into the studio's store, as a node's records do. Webhooks are
simulated with a sample answer, as in the studio's text console: the studio never calls the URLs an
agent file names (they may point anywhere inside the network it runs in).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import httpx

from parley.agent.loader import load_agent_text
from parley.agent.model import WebhookStep
from parley.agent.webhook import sample_body
from parley.telephony.call import Call
from parley.telephony.manager import CallManager
from parley.telephony.webrtc import WebRtcChannel

if TYPE_CHECKING:
    from parley.agent.model import Agent
    from parley.agent.records import CallRecord
    from parley.agent.voice import VoiceAgent
    from parley.speech.engines.pool import DecodePool
    from parley.speech.tts import CachedTts
    from parley.speech.types import AsrEngine
    from parley.studio.store import Store

log = logging.getLogger(__name__)

MAX_CALLS = 4  # browser calls the studio takes at once (each runs a real speech pipeline)
AGENTS_KEPT = 8  # versions kept warm (prompts rendered, grammars prepared)


def simulated_webhooks(agent: Agent) -> httpx.AsyncClient:
    """An HTTP client that answers every webhook step of ``agent`` with its sample body, sending nothing."""
    steps = [step for step in agent.steps if isinstance(step, WebhookStep)]

    def answer(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        step = next((s for s in steps if url.startswith(s.url.split("?")[0])), None)
        return httpx.Response(200, json=sample_body(step) if step is not None else {})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


class BrowserCalls:
    """The studio's browser calls (one per studio process; started on the first offer)."""

    def __init__(self, store: Store, *, max_calls: int = MAX_CALLS) -> None:
        self.store = store
        self.max_calls = max_calls
        self.channel: WebRtcChannel | None = None
        self.agents: OrderedDict[tuple[str, int], VoiceAgent] = OrderedDict()
        self.engines: list[AsrEngine] = []
        self.pool: DecodePool | None = None
        self.voices: dict[str, CachedTts] = {}  # TTS engine name -> its cached renderer
        self._lock = asyncio.Lock()

    async def _started(self) -> WebRtcChannel:
        if self.channel is None:
            from parley.agent.voice import decode_pool
            from parley.speech.engines import load_engines

            self.engines = load_engines()
            self.pool = decode_pool(self.engines, None)
            self.channel = WebRtcChannel(CallManager(None, max_calls=self.max_calls))
        return self.channel

    async def _agent(self, name: str, number: int, text: str) -> VoiceAgent:
        """The version's voice agent, started (warmed up) on first use."""
        from parley.agent.voice import VoiceAgent

        key = (name, number)
        if key in self.agents:
            self.agents.move_to_end(key)
            return self.agents[key]
        from parley.speech.tts import CachedTts, load_tts

        agent = load_agent_text(text, f"{name}.yaml")
        tts = self.voices.get(agent.voice.engine)
        if tts is None:
            tts = self.voices[agent.voice.engine] = CachedTts(load_tts(agent.voice.engine))
        voice = VoiceAgent(
            agent,
            engines=self.engines,
            pool=self.pool,
            tts=tts,
            version=number,
            record_audio=True,
            on_record=self._keep,
        )
        await voice.start()
        if voice.http is not None:
            await voice.http.aclose()
        voice.http = simulated_webhooks(agent)
        self.agents[key] = voice
        while len(self.agents) > AGENTS_KEPT:
            _, old = self.agents.popitem(last=False)
            if old.http is not None:
                await old.http.aclose()  # not close(): the decoder pool is shared
        return voice

    def _keep(self, record: CallRecord) -> None:
        try:
            self.store.ingest([record.to_dict()])
        except Exception:
            log.exception("could not store the record of browser call %s", record.call_id)

    async def answer(self, offer: Any, name: str, number: int, text: str) -> dict[str, str]:
        """Answer the page's offer with version ``number`` of agent ``name`` (YAML ``text``); raises
        :class:`~parley.telephony.webrtc.OfferError` (400 bad offer, 503 over the limit)."""
        async with self._lock:  # the first call starts the engines; versions warm up one at a time
            channel = await self._started()
            refused = channel.refusal()
            if refused is not None:
                raise refused
            voice = await self._agent(name, number, text)

        async def app(call: Call) -> None:
            await voice(call)

        return await channel.answer(offer, app)

    async def close(self) -> None:
        if self.channel is None:
            return
        await self.channel.manager.stop()
        await self.channel.close()
        for voice in self.agents.values():
            if voice.http is not None:
                await voice.http.aclose()
        if self.pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.close)
