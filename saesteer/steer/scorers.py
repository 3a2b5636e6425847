"""Scorers that measure whether generated text shows a behaviour (one number per text).

sentiment_score   VADER compound polarity in [−1, 1] (vaderSentiment lexicon model);
                  success: compound ≥ 0.05 (VADER's own "positive" cut-off)
formality_score   (formal markers − casual markers) / words, a small lexicon of ours:
                  formal: courtesy formulas and elevated words (regards, sincerely, kindly, …);
                  casual: slang, chat abbreviations, "!!", emoticons, lower-case "i";
                  success: score > 0
ocean_score       fraction of words that are ocean words (sea, waves, beach, tide, …);
                  success: at least one ocean word (score > 0)
"""

from __future__ import annotations

import functools
import re

WORD = re.compile(r"[a-z']+")
FORMAL_WORDS = frozenset(
    [
        "dear",
        "regards",
        "sincerely",
        "respectfully",
        "kindly",
        "please",
        "thank",
        "grateful",
        "appreciate",
        "pleased",
        "inform",
        "confirm",
        "assure",
        "shall",
        "would",
        "accordingly",
        "furthermore",
        "therefore",
        "however",
        "request",
        "inquiry",
        "opportunity",
        "arrangements",
    ]
)
CASUAL_WORDS = frozenset(
    [
        "hey",
        "yeah",
        "yep",
        "nope",
        "lol",
        "omg",
        "haha",
        "gonna",
        "wanna",
        "kinda",
        "sorta",
        "dude",
        "np",
        "ttyl",
        "cya",
        "tmrw",
        "btw",
        "idk",
        "chill",
        "cool",
        "awesome",
        "biggie",
        "stuff",
        "ok",
        "okay",
        "sup",
        "bro",
    ]
)
CASUAL_MARKS = re.compile(r"!!|:\)|:D|;\)|\bi\b")
OCEAN_WORDS = frozenset(
    [
        "ocean",
        "oceans",
        "sea",
        "seas",
        "seaside",
        "wave",
        "waves",
        "beach",
        "beaches",
        "tide",
        "tides",
        "shore",
        "coast",
        "coastal",
        "salt",
        "salty",
        "surf",
        "surfing",
        "sailing",
        "sail",
        "harbour",
        "harbor",
        "reef",
        "reefs",
        "coral",
        "whale",
        "whales",
        "dolphin",
        "dolphins",
        "seagull",
        "seagulls",
        "fish",
        "marine",
        "island",
        "islands",
    ]
)


@functools.cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment_score(text: str) -> float:
    """VADER compound polarity of `text`, in [−1, 1]."""
    return float(_vader().polarity_scores(text)["compound"])


def formality_score(text: str) -> float:
    """(formal − casual marker count) / number of words; 0 for empty text."""
    words = WORD.findall(text.lower())
    if not words:
        return 0.0
    formal = sum(w in FORMAL_WORDS for w in words)
    casual = sum(w in CASUAL_WORDS for w in words) + len(CASUAL_MARKS.findall(text))
    return (formal - casual) / len(words)


def ocean_score(text: str) -> float:
    """Fraction of the words of `text` that are ocean words; 0 for empty text."""
    words = WORD.findall(text.lower())
    return sum(w in OCEAN_WORDS for w in words) / len(words) if words else 0.0
