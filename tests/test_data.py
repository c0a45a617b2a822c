"""The offline corpus, its splits, the tokenizer, and calibration batches."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import data
from qtutor.data import corpus


def test_splits_are_disjoint_by_article_and_sized_as_documented():
    titles = {split: set(corpus.article_titles(split)) for split in ("train", "valid", "test")}
    assert not titles["train"] & titles["valid"] and not titles["train"] & titles["test"]
    assert not titles["valid"] & titles["test"]
    # 98 non-redirect articles: 0, 20, .., 80 -> test; 10, 30, .., 90 -> valid; the other 88 -> train
    assert (len(titles["train"]), len(titles["valid"]), len(titles["test"])) == (88, 5, 5)
    sizes = data.split_sizes()
    assert 700_000 < sizes["train"]["tokens"] < 1_000_000
    assert 30_000 < sizes["valid"]["tokens"] < 80_000 and 30_000 < sizes["test"]["tokens"] < 120_000
    assert sizes["news"]["tokens"] > 50_000


def test_markup_and_redirects_are_gone():
    text = data.text("train")
    for debris in ("[[", "]]", "{{", "}}", "<ref", "#REDIRECT", "Category:", "thumb|"):
        assert debris not in text, debris
    assert "= Albedo =" in data.text("train") + data.text("valid") + data.text("test")


def test_tokenizer_round_trips_and_has_4096_tokens():
    tokenizer = data.load_tokenizer()
    assert tokenizer.vocab_size == 4096
    sample = "Quantization maps 3.14159 to the nearest of 16 levels — even ümlauts survive."
    assert tokenizer.decode(data.encode(sample)) == sample
    assert data.tokens("valid").dtype == np.int64 and data.tokens("valid").max() < 4096


def test_calibration_is_deterministic_per_seed_and_different_across_seeds():
    a = data.calibration(8, 64, seed=0)
    assert a.shape == (8, 64) and a.dtype == np.int64
    assert np.array_equal(a, data.calibration(8, 64, seed=0))
    assert not np.array_equal(a, data.calibration(8, 64, seed=1))
    news = data.calibration(8, 64, source="news", seed=0)
    assert not np.array_equal(a, news)


def test_calibration_requests_the_corpus_cannot_serve_are_clear_errors():
    with pytest.raises(ValueError, match="unknown calibration source 'c4'"):
        data.calibration(8, 64, source="c4")
    with pytest.raises(ValueError, match="lower n_samples"):
        data.calibration(100_000, 256, source="news")
    with pytest.raises(ValueError, match="longer than the news text"):
        data.calibration(1, 10_000_000, source="news")
    with pytest.raises(ValueError, match="unknown split"):
        data.text("wikitext2")


def test_the_cache_is_rebuilt_from_the_package_files(tmp_path, monkeypatch):
    monkeypatch.setenv("QTUTOR_CACHE_DIR", str(tmp_path))
    assert data.text("valid") == corpus.build_splits()["valid"]
    assert (tmp_path / corpus.CACHE_VERSION / "valid.txt").is_file()
    assert not list((tmp_path / corpus.CACHE_VERSION).glob("*.tmp*"))
