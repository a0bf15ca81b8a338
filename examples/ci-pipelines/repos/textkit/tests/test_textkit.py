from textkit import headline, slugify, truncate


def test_slugify_simple():
    assert slugify("Hello, World") == "hello-world"


def test_slugify_collapses_runs_of_spaces():
    assert slugify("Dynamic   Workflows  in Python") == "dynamic-workflows-in-python"


def test_headline_keeps_small_words_lower():
    assert headline("the art of computer programming") == "The Art of Computer Programming"


def test_truncate():
    assert truncate("durable execution", 8) == "durable…"
