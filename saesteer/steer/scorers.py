"""Scorers that measure whether generated text shows a behaviour (one number per text).

sentiment_score   VADER compound polarity in [−1, 1] (vaderSentiment lexicon model);
                  success: compound ≥ 0.05 (VADER's own "positive" cut-off)
formality_score   (formal markers − casual markers) / words, a small lexicon of ours:
                  formal: courtesy formulas and elevated words (regards, sincerely, kindly, …);
                  casual: slang, chat abbreviations, "!!", emoticons, lower-case "i";
                  success: score > 0
ocean_score       fraction of words that are ocean words (sea, waves, beach, tide, …);
                  success: at least one ocean word (score > 0)
food_score        fraction of words that are food or cooking words (bread, soup, cook, bake,
                  recipe, cheese, delicious, …); success: at least one food word (score > 0)
enthusiasm_score  (exclamation marks + enthusiastic words) / words, a small lexicon of ours
                  (amazing, wonderful, fantastic, love, awesome, excited, thrilled, …);
                  success: score ≥ 0.05, about one marker in a 32-token (≈ 20-word) reply
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

FOOD_WORDS = frozenset(
    [
        "food",
        "foods",
        "meal",
        "meals",
        "breakfast",
        "lunch",
        "dinner",
        "dessert",
        "snack",
        "snacks",
        "picnic",
        "eat",
        "eating",
        "ate",
        "eaten",
        "cook",
        "cooks",
        "cooking",
        "cooked",
        "bake",
        "baking",
        "baked",
        "kitchen",
        "oven",
        "recipe",
        "recipes",
        "delicious",
        "tasty",
        "flavour",
        "flavor",
        "bread",
        "loaf",
        "toast",
        "sandwich",
        "sandwiches",
        "soup",
        "stew",
        "curry",
        "pasta",
        "noodles",
        "rice",
        "pizza",
        "salad",
        "cheese",
        "butter",
        "eggs",
        "egg",
        "flour",
        "sugar",
        "honey",
        "jam",
        "cake",
        "cakes",
        "pie",
        "pies",
        "cookies",
        "biscuits",
        "chocolate",
        "pancakes",
        "porridge",
        "chicken",
        "roast",
        "roasted",
        "grill",
        "grilled",
        "fried",
        "sauce",
        "garlic",
        "onion",
        "onions",
        "tomato",
        "tomatoes",
        "potato",
        "potatoes",
        "vegetables",
        "vegetable",
        "fruit",
        "apple",
        "apples",
        "lemon",
        "beans",
        "herbs",
        "spicy",
        "bakery",
        "restaurant",
        "dumplings",
        "croissants",
        "pastries",
        "scones",
        "omelette",
        "sausages",
    ]
)
ENTHUSIASTIC_WORDS = frozenset(
    [
        "amazing",
        "amazingly",
        "wonderful",
        "wonderfully",
        "fantastic",
        "love",
        "loved",
        "loving",
        "lovely",
        "awesome",
        "excited",
        "exciting",
        "incredible",
        "incredibly",
        "brilliant",
        "thrilled",
        "thrilling",
        "delighted",
        "delightful",
        "delight",
        "fabulous",
        "marvellous",
        "marvelous",
        "superb",
        "terrific",
        "wow",
        "yay",
        "hooray",
        "spectacular",
        "magnificent",
        "stunning",
        "gorgeous",
        "glorious",
        "magical",
        "adore",
        "ecstatic",
        "overjoyed",
        "joy",
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


def food_score(text: str) -> float:
    """Fraction of the words of `text` that are food or cooking words; 0 for empty text."""
    words = WORD.findall(text.lower())
    return sum(w in FOOD_WORDS for w in words) / len(words) if words else 0.0


def enthusiasm_score(text: str) -> float:
    """(exclamation marks + enthusiastic words) / number of words; 0 for empty text.

    Not bounded by 1 ("Wow!!!" scores 4). The success threshold 0.05 is one marker per 20
    words: a single "!" or "amazing" in a typical 32-token (≈ 20-word) generation counts, while a
    flat reply has no "!" and at most an incidental "love" or "lovely", which stays below it once
    the reply runs past 20 words. The shipped chosen replies carry 3–7 markers in 10–21 words
    (score ≈ 0.18–0.6); the rejected ones carry none (score 0).
    """
    words = WORD.findall(text.lower())
    if not words:
        return 0.0
    return (text.count("!") + sum(w in ENTHUSIASTIC_WORDS for w in words)) / len(words)
