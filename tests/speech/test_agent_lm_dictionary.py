"""The per-agent LM engine decodes with a dictionary of its LM's words only.

pocketsphinx 5.1 walks its whole dictionary when it adds an LM search: with the 134k-word cmudict
that cost ~13 s of CPU on the first call after start-up (every turn timed out), with the LM's words
a few milliseconds.
"""

from __future__ import annotations

import numpy as np

from parley.speech.engines import grammar
from parley.speech.engines.sphinx import DICTIONARY, SphinxAgentLmEngine, _slot_sentences
from parley.speech.types import Question, SlotType


def test_generic_answers_are_dictionary_words():
    known = grammar.dictionary_words(DICTIONARY)
    for slot_type in SlotType:
        words = {w for s in _slot_sentences(slot_type) for w in grammar.normalise(s)}
        assert words <= known, (slot_type, words - known)


def test_agent_lm_decoder_holds_only_the_lm_words():
    engine = SphinxAgentLmEngine(phrases=["my account number is four two seven one"])
    question = Question(SlotType.DIGITS, prompt="What is your account number?", digit_count=4)
    engine.prepare(question)
    session = engine.start(question)
    session.feed(np.zeros(1600, dtype=np.int16))
    decoder = session._pooled.decoder
    assert decoder.lookup_word("four") is not None and decoder.lookup_word("account") is not None
    assert decoder.lookup_word("aardvark") is None  # in cmudict, not in this agent's LM
    assert session.finish().is_final
