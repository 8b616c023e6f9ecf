"""Understanding callers while they speak: intents, slot extractors and early close on partials.

* :mod:`parley.nlu.intents` — :class:`~parley.nlu.intents.IntentClassifier`, trained per agent.
* :mod:`parley.nlu.extractors` — ``extract(slot_type, text, ...)`` and one extractor per slot type.
* :mod:`parley.nlu.partial` — :class:`~parley.nlu.partial.PartialUnderstanding`, fed every partial.
* :mod:`parley.nlu.spoken` — spoken-number/correction primitives, shared with ``parley.speech.slots``.

Nothing heavy is imported here: the speech layer imports :mod:`parley.nlu.spoken` on its own.
"""
