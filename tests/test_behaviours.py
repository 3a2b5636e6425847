"""The shipped behaviour data sets: both splits load, splits are prompt-disjoint, and each
behaviour's scorer tells its chosen completions from its rejected ones."""

from __future__ import annotations

import pytest

from saesteer.steer.behaviours import BEHAVIOURS, SPLITS, behaviour_file, behaviour_pairs
from saesteer.steer.pairs import read_pairs
from saesteer.steer.scorers import (
    ENTHUSIASTIC_WORDS,
    FOOD_WORDS,
    WORD,
    enthusiasm_score,
    food_score,
)

SHIPPED = ("sentiment", "formality", "topic-ocean", "topic-food", "style-enthusiastic")
NEW = ("topic-food", "style-enthusiastic")
# Measured on the shipped data (both splits): every old data set separates perfectly, so that is
# asserted for them; the two new ones are held to the bound they were written against.
MIN_CHOSEN = {"sentiment": 1.0, "formality": 1.0, "topic-ocean": 1.0}
MAX_REJECTED = {"sentiment": 0.0, "formality": 0.0, "topic-ocean": 0.0}


def _rate(name: str, texts: list[str]) -> float:
    return sum(BEHAVIOURS[name].succeeded(t) for t in texts) / len(texts)


def test_all_five_are_registered():
    assert set(SHIPPED) <= set(BEHAVIOURS)
    assert all(BEHAVIOURS[name].chat for name in NEW)


@pytest.mark.parametrize("name", SHIPPED)
def test_splits_load_and_prompts_are_disjoint(name):
    train, val = (behaviour_pairs(name, split) for split in SPLITS)
    assert train and val
    assert read_pairs(behaviour_file(name, "validation")) == val
    assert not {p.prompt for p in train} & {p.prompt for p in val}


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("split", SPLITS)
def test_scorer_separates_chosen_from_rejected(name, split, record_property):
    pairs = behaviour_pairs(name, split)
    chosen = _rate(name, [p.chosen for p in pairs])
    rejected = _rate(name, [p.rejected for p in pairs])
    record_property("chosen_success", chosen)
    record_property("rejected_success", rejected)
    print(f"{name} {split}: chosen {chosen:.3f}, rejected {rejected:.3f} ({len(pairs)} pairs)")
    assert chosen >= MIN_CHOSEN.get(name, 0.9)
    assert rejected <= MAX_REJECTED.get(name, 0.1)


@pytest.mark.parametrize("name", NEW)
def test_new_data_sets_have_the_promised_shape(name):
    for split, n_prompts in (("train", 12), ("validation", 4)):
        pairs = behaviour_pairs(name, split)
        assert len(pairs) == 4 * n_prompts
        prompts = [p.prompt for p in pairs]
        assert len(set(prompts)) == n_prompts
        assert all(prompts.count(q) == 4 for q in prompts)
        for p in pairs:
            assert p.metadata.get("behaviour")
            for text in (p.chosen, p.rejected):
                assert text.startswith(" ") and not text.startswith("  ")
                assert 10 <= len(text.split()) <= 30, text
            assert abs(len(p.chosen.split()) - len(p.rejected.split())) <= 5


def test_rejected_sides_carry_no_marker_of_the_behaviour():
    for split in SPLITS:
        for p in behaviour_pairs("topic-food", split):
            assert not FOOD_WORDS & set(WORD.findall(p.rejected.lower())), p.rejected
        for p in behaviour_pairs("style-enthusiastic", split):
            assert "!" not in p.rejected, p.rejected
            assert not ENTHUSIASTIC_WORDS & set(WORD.findall(p.rejected.lower())), p.rejected


def test_food_score():
    assert food_score("") == 0.0 == food_score("The train left the station on time.")
    assert food_score("I baked bread and made soup") == pytest.approx(3 / 6)
    assert food_score("Delicious CHEESE!") == 1.0
    assert len(FOOD_WORDS) >= 80
    assert BEHAVIOURS["topic-food"].succeeded("We had a picnic in the park.")
    assert not BEHAVIOURS["topic-food"].succeeded("We had a meeting in the office.")


def test_enthusiasm_score():
    assert enthusiasm_score("") == 0.0 == enthusiasm_score("!!!")
    assert enthusiasm_score("The report is ready.") == 0.0
    assert enthusiasm_score("Wow!!!") == 4.0
    assert enthusiasm_score("That is amazing news!") == pytest.approx(2 / 4)
    style = BEHAVIOURS["style-enthusiastic"]
    assert style.success_threshold == 0.05
    # One marker in 20 words is just enough; the same word in 21 flat words is not.
    flat = "the meeting is at ten and the notes are in the shared folder for the team to read now"
    assert len(flat.split()) == 19
    assert style.succeeded(flat + " love")
    assert not style.succeeded(flat + " today love")
