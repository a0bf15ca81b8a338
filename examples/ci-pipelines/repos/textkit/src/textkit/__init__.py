"""Text helpers for URLs and headings."""

import re

__version__ = "0.4.1"


def slugify(text):
    """``"Hello, World!"`` -> ``"hello-world"``."""
    text = re.sub(r"[^a-z0-9\s-]", "", text.lower())
    return re.sub(r"\s", "-", text.strip())


def headline(text):
    small = {"a", "an", "and", "of", "the", "to"}
    words = text.split()
    return " ".join(w if i and w.lower() in small else w.capitalize() for i, w in enumerate(words))


def truncate(text, width):
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
