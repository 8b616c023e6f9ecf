"""Understanding callers while they speak: intents, slot extractors and early close on partials.

* :mod:`parley.nlu.intents` — :class:`~parley.nlu.intents.IntentClassifier`, trained per agent.
* :mod:`parley.nlu.question` — :class:`~parley.nlu.question.Question` and ``SlotType``: what is asked.
* :mod:`parley.nlu.extractors` — ``extract(slot_type, text, ...)`` and one extractor per slot type.
* :mod:`parley.nlu.reader` — ``read_slot(question, text)``: the one reader of answers, for the arbiter,
  the dialogue and the benchmarks alike.
* :mod:`parley.nlu.partial` — :class:`~parley.nlu.partial.PartialUnderstanding`, fed every partial.
* :mod:`parley.nlu.spoken` — spoken-number/correction primitives, shared with the speech layer's grammars.

Nothing heavy is imported here: the speech layer imports :mod:`parley.nlu.spoken` on its own.
"""
