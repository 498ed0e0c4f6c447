"""Tests for core.length: word counting, target parsing, scoring, buckets."""

from __future__ import annotations

import pytest

from core.length import LENGTH_BUCKETS, length_bucket, length_score, parse_target_length
from core.text import count_words, detect_language

# --------------------------------------------------------------------------
# count_words
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("Hello world", 2),
        ("don't", 2),  # don + t
        ("e-mail", 2),
        ("abc123", 0),  # letters glued to digits: no \b between them
        ("123 456, 7.8!", 0),
        ("我爱中文", 4),
        ("中文abc", 2),  # abc is glued to a CJK char (\w) -> 0 English words
        # 我 爱 编 程 = 4 CJK; "Python" is glued to 爱/编 -> 0; and, AI -> 2
        ("我爱Python编程 and AI!", 6),
        ("我爱 Python 编程", 5),  # spaced out, Python now counts
        ("第3章：The End。", 4),  # 第 章 + The End
        ("snake_case word", 1),  # underscore is \w, so snake_case is one \w run
    ],
)
def test_count_words(text: str, expected: int) -> None:
    assert count_words(text) == expected


def test_count_words_long_mixed() -> None:
    text = "这是一个测试。This is a test, isn't it? 结束"
    # CJK: 这 是 一 个 测 试 结 束 = 8; English: This is a test isn t it = 7
    assert count_words(text) == 15


# --------------------------------------------------------------------------
# detect_language
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "en"),
        ("Write an essay about the sea.", "en"),
        ("写一篇关于大海的文章。", "zh"),
        ("请用Python写一个程序，并解释 the main idea", "zh"),
        # 4 CJK vs 11 English words: 27% >= 20% -> zh
        ("The dish 北京烤鸭 is famous all over the world and in every city", "zh"),
        ("The dish 北京烤鸭 is famous all over the world and in every big city of the "
         "country, from the north to the south", "en"),  # 4 vs 21: 16%
        ("A quick 中文 mention in a long English sentence with many words here", "en"),
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


# --------------------------------------------------------------------------
# parse_target_length
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        # English digits
        ("Write a 2000 words essay on climate.", 2000),
        ("Write 1,500 words about Rome.", 1500),
        ("Write 1.5k words about Rome.", 1500),
        ("Write 3k words.", 3000),
        ("Write a 3K-word report.", 3000),
        ("Write ~2000 words on AI.", 2000),
        ("Write around 800 words.", 800),
        ("Write an about 1200-word essay.", 1200),
        ("The story should be at least 5000 words long.", 5000),
        ("Write no less than 3000 words.", 3000),
        ("Write between 800 and 1200 words.", 1000),
        ("Write 800-1200 words.", 1000),
        ("Write 2,000–3,000 words.", 2500),
        ("Write 3-5k words.", 4000),
        ("Write a 10,000-word novel.", 10000),
        ("Write a 10000-word novel.", 10000),
        ("Write 10 thousand words.", 10000),
        ("Word count: 2500", 2500),
        # English number words
        ("Write twelve thousand words.", 12000),
        ("Write two thousand five hundred words.", 2500),
        ("Write two thousand and five hundred words.", 2500),
        ("Write five hundred words.", 500),
        ("Write a ten-thousand-word epic.", 10000),
        ("Write a thousand words.", 1000),
        ("Write twenty-five hundred words.", 2500),
        ("Write between five hundred and one thousand words.", 750),
        # distractor numbers
        ("Write about the 1990s in 300 words.", 300),
        ("Top 10 tips, 500 words.", 500),
        ("Write 3 to 5 paragraphs, 600 words in total.", 600),
        ("Chapter 3 - 500 words", 500),
        ("Write a 500-word summary of this 10,000-word novel.", 500),
        # Chinese
        ("写一篇5000字的文章", 5000),
        ("写一篇5000 字的文章", 5000),
        ("写一篇不少于3000字的小说", 3000),
        ("约2000字", 2000),
        ("写一篇一万字的小说", 10000),
        ("两万字", 20000),
        ("三千字", 3000),
        ("一千五百字", 1500),
        ("一千五字", 1500),
        ("一千零五字", 1005),
        ("一万五千字", 15000),
        ("1万字", 10000),
        ("1.5万字", 15000),
        ("1-2万字", 15000),
        ("两千五百字", 2500),
        ("字数约为800字", 800),
        ("800到1000字", 900),
        ("800~1200字", 1000),
        ("三千到五千字", 4000),
        ("500个词", 500),
        ("字数要求：3000", 3000),
        ("字数在3000到5000之间", 4000),
        ("十字路口的故事，500字", 500),  # 十字 is "cross", not 10 字
        ("百字短文", 100),
        # nothing to find
        ("写一个三字经风格的故事", None),
        ("Write a story.", None),
        ("Write 5 pages about cats.", None),
        ("Top 10 tips for 2024", None),
        ("写一篇文章", None),
        ("Write 0 words.", None),
        ("", None),
    ],
)
def test_parse_target_length(instruction: str, expected: int | None) -> None:
    assert parse_target_length(instruction) == expected


# --------------------------------------------------------------------------
# length_score
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "produced", "expected"),
    [
        (1000, 1000, 100.0),
        (1000, 1600, 80.0),  # 1 - 0.6/3
        (1000, 500, 50.0),  # 1 - (2-1)/2
        (1000, 750, 100 * (1 - (1000 / 750 - 1) / 2)),
        (1000, 2500, 50.0),  # 1 - 1.5/3
        (1000, 0, 0.0),
        (1000, 4000, 0.0),  # overshoot ratio 4 -> exactly 0
        (1000, 100_000, 0.0),  # huge overshoot clamps at 0
        (1000, 300, 0.0),  # big undershoot clamps at 0
        (500.0, 500.0, 100.0),
    ],
)
def test_length_score(required: float, produced: float, expected: float) -> None:
    assert length_score(required, produced) == pytest.approx(expected)


@pytest.mark.parametrize("required", [0, -5, -0.1])
def test_length_score_rejects_bad_requirement(required: float) -> None:
    with pytest.raises(ValueError):
        length_score(required, 100)


def test_length_score_asymmetric() -> None:
    # Overshooting by the same ratio is penalised less than undershooting.
    assert length_score(1000, 1500) > length_score(1000, 1000 / 1.5)


# --------------------------------------------------------------------------
# length_bucket
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "expected"),
    [
        (0, "[0,500)"),
        (499, "[0,500)"),
        (499.9, "[0,500)"),
        (500, "[500,2k)"),
        (1999, "[500,2k)"),
        (2000, "[2k,4k)"),
        (3999, "[2k,4k)"),
        (4000, "[4k,20k]"),
        (19999, "[4k,20k]"),
        (20000, "[4k,20k]"),
        (100_000, "[4k,20k]"),
    ],
)
def test_length_bucket(required: float, expected: str) -> None:
    assert length_bucket(required) == expected


def test_length_buckets_contiguous() -> None:
    assert LENGTH_BUCKETS[0][0] == 0
    for (_, hi), (lo, _) in zip(LENGTH_BUCKETS, LENGTH_BUCKETS[1:]):
        assert hi == lo


def test_length_bucket_rejects_negative() -> None:
    with pytest.raises(ValueError):
        length_bucket(-1)
