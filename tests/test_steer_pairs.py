"""Preference-pair schema, converters, shipped behaviour data sets and scorers."""

from __future__ import annotations

import json

import pytest

from saesteer.steer.behaviours import BEHAVIOURS, behaviour_pairs, success_rate, training_data
from saesteer.steer.pairs import (
    PairsFormatError,
    PreferencePair,
    from_bipo_csv,
    from_hf_dataset,
    from_repeng,
    from_steering_vectors,
    from_yapo_records,
    pairs_checksum,
    read_pairs,
    write_pairs,
)
from saesteer.steer.scorers import formality_score, ocean_score, sentiment_score


def test_jsonl_round_trip_keeps_every_field(tmp_path):
    pairs = [
        PreferencePair("Hi", " yes", " no"),
        PreferencePair(
            "Q",
            " a",
            " b",
            system="Be brief.",
            history=({"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}),
            metadata={"source": "test"},
        ),
    ]
    path = tmp_path / "pairs.jsonl"
    write_pairs(pairs, path)
    back = read_pairs(path)
    assert back == pairs and back[1].metadata == {"source": "test"}
    assert pairs_checksum(back) == pairs_checksum(pairs)
    assert pairs_checksum(back[:1]) != pairs_checksum(pairs)
    assert back[1].messages()[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"prompt": "p", "chosen": "a"}), "'rejected' must be a non-empty string"),
        (json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}), "identical"),
        (json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "colour": 1}), "unknown field"),
        (
            json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "history": [{"role": "x"}]}),
            "'history' must be",
        ),
        (json.dumps(["p", "a", "b"]), "expected a JSON object"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(PairsFormatError, match=message) as info:
        read_pairs(path)
    assert f"{path}:3" in str(info.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n// only a comment\n")
    with pytest.raises(PairsFormatError, match="empty"):
        read_pairs(empty)
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "nope.jsonl")


def test_converters(tmp_path):
    csv_path = tmp_path / "bipo.csv"
    csv_path.write_text('question,matching,not_matching\n"Do it?",(A) yes,(B) no\n')
    assert from_bipo_csv(csv_path) == [PreferencePair("Do it?", "(A) yes", "(B) no")]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("q,a\n1,2\n")
    with pytest.raises(PairsFormatError, match=r"bad.csv:1"):
        from_bipo_csv(bad_csv)

    chat = from_yapo_records(
        [
            {
                "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                "chosen": [{"role": "assistant", "content": "good"}],
                "rejected": "bad",
            }
        ]
    )
    assert chat[0].prompt == "U" and chat[0].system == "S" and chat[0].chosen == "good"

    sv = from_steering_vectors([("I feel great today", "I feel awful today")])
    assert sv[0].prompt == "I feel" and sv[0].chosen == " great today"

    class Entry:
        positive, negative = "The cat is happy", "The cat is sad"

    assert from_repeng([Entry()])[0].rejected == " sad"
    rows = [{"q": "Q?", "good": "A", "bad": "B"}]
    assert (
        from_hf_dataset(rows, {"prompt": "q", "chosen": "good", "rejected": "bad"})[0].chosen == "A"
    )
    with pytest.raises(PairsFormatError, match="column"):
        from_hf_dataset(rows)


def test_shipped_data_sets_split_cleanly_and_scorers_separate_them():
    for name in BEHAVIOURS:
        train, val = training_data(name)
        assert len(train) >= 36 and len(val) >= 12
        assert not {p.prompt for p in train} & {p.prompt for p in val}
        assert success_rate(name, [p.chosen for p in val]) == 1.0
        assert success_rate(name, [p.rejected for p in val]) == 0.0
    assert sentiment_score("What a wonderful day") > 0.5 > sentiment_score("A horrible day")
    assert formality_score("Dear Sir, kind regards.") > 0 > formality_score("hey lol gonna go!!")
    assert ocean_score("waves on the beach") > 0 == ocean_score("a mountain trail")


def test_file_split_is_seeded(tmp_path):
    path = tmp_path / "p.jsonl"
    write_pairs(behaviour_pairs("sentiment")[:10], path)
    a = training_data(str(path), val_fraction=0.3, seed=1)
    assert a == training_data(str(path), val_fraction=0.3, seed=1)
    assert len(a[1]) == 3 and len(a[0]) == 7
