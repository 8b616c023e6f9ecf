"""Intent classification from an example agent's phrases, incl. out-of-scope rejection and partials."""

import numpy as np
import pytest

from parley.nlu.intents import NONE, IntentClassifier

AGENT_INTENTS = {
    "operator": [
        "I want to speak to an agent",
        "can I talk to a real person",
        "operator",
        "put me through to someone",
        "human please",
        "speak to a representative",
    ],
    "repeat": [
        "can you repeat that",
        "say that again",
        "pardon",
        "sorry what did you say",
        "I didn't catch that",
        "repeat please",
    ],
    "goodbye": [
        "goodbye",
        "bye",
        "that's all thanks",
        "I have to go",
        "hang up",
        "nothing else thank you bye",
    ],
    "new_claim": [
        "I want to make a claim",
        "I need to report an accident",
        "file a new claim",
        "my car was damaged",
        "I'd like to start a claim",
    ],
    "claim_status": [
        "what's the status of my claim",
        "I'm calling about an existing claim",
        "has my claim been processed",
        "check on my claim",
    ],
}


@pytest.fixture(scope="module")
def classifier():
    return IntentClassifier(AGENT_INTENTS)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I want to speak to someone", "operator"),
        ("could I talk to a person please", "operator"),
        ("agent", "operator"),
        ("operator please", "operator"),
        ("what did you say", "repeat"),
        ("sorry could you say that again", "repeat"),
        ("bye bye", "goodbye"),
        ("I want to make a claim", "new_claim"),
        ("I want to report a crash", "new_claim"),
        ("can you check the status of my claim", "claim_status"),
    ],
)
def test_examples_and_paraphrases(classifier, text, intent):
    result = classifier.classify(text)
    assert result.name == intent
    assert result.confidence >= classifier.threshold
    assert result.scores[intent] == result.confidence


@pytest.mark.parametrize(
    "text",
    [
        "the weather is nice",
        "my name is Smith",
        "four two seven",
        "pizza delivery",
        "yes",
        "the third of may",
        "",
    ],
)
def test_out_of_scope_speech_is_not_forced_into_an_intent(classifier, text):
    result = classifier.classify(text)
    assert result.name is None
    assert result.confidence < classifier.threshold


@pytest.mark.parametrize("prefix", ["I", "I want", "can I", "I want to", "my"])
def test_partial_prefixes_get_low_confidence(classifier, prefix):
    result = classifier.classify(prefix)
    assert result.name is None and result.confidence < 0.4


def test_partials_settle_on_the_intent(classifier):
    names = [classifier.classify(p).name for p in ["I", "I want", "I want to", "I want to speak to an agent"]]
    assert names == [None, None, None, "operator"]


def test_scores_cover_every_intent_and_sum_with_background_to_one(classifier):
    result = classifier.classify("repeat that")
    assert set(result.scores) == set(AGENT_INTENTS)
    assert NONE not in result.scores
    assert 0.99 < sum(classifier.probabilities("repeat that")) < 1.01


def test_fast_path_matches_scikit_learn_pipeline(classifier):
    for text in ["i want to speak to someone", "pardon", "the weather is nice", "bye", "zzz qqq", "claim"]:
        np.testing.assert_allclose(
            classifier.probabilities(text), classifier.pipeline.predict_proba([text])[0], rtol=1e-6, atol=1e-9
        )


def test_results_are_cached_per_text(classifier):
    first = classifier.classify("say that again please")
    assert classifier.classify("Say that again, please!") is first  # same words: same cache entry


def test_invalid_agents_are_rejected():
    with pytest.raises(ValueError, match="at least one example"):
        IntentClassifier({"operator": []})
    with pytest.raises(ValueError, match="reserved"):
        IntentClassifier({NONE: ["x"]})


def test_an_agent_with_a_single_intent_classifies():
    classifier = IntentClassifier({"operator": ["speak to an agent", "a real person please", "operator"]})
    assert classifier.classify("can I speak to an agent").name == "operator"
    assert classifier.classify("what a lovely day it is").name is None
    text = "speak to an agent"
    assert np.allclose(classifier.probabilities(text), classifier.pipeline.predict_proba([text])[0])
