"""The course's text, offline: real Wikipedia articles and news that ship inside the ``gensim`` wheel.

gensim's test data holds a shortened dump of English Wikipedia (~100 real articles once redirects and stubs
are dropped) and the Lee news corpus. We read them from the installed package — no network — strip the wiki
markup with ``mwparserfromhell``, and split the articles (never the middle of one) into train / valid / test,
WikiText-style. The processed text is cached in the user cache directory; it is never committed.

    text("train" | "valid" | "test" | "news") -> str
"""
from __future__ import annotations

import bz2
import importlib.util
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILE = "lee_background.cor"
SPLITS = ("train", "valid", "test", "news")
MIN_ARTICLE_CHARS = 2000  # shorter pages are stubs and lists
CACHE_VERSION = "corpus-v2"
TRAILING_SECTIONS = ("See also", "References", "External links", "Further reading", "Notes", "Bibliography",
                     "Sources", "Footnotes")


def test_data_dir() -> Path:
    """gensim's ``test/test_data`` folder, found without importing gensim (whose import is slow and heavy)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the corpus ships inside the gensim wheel, which is not installed: pip install gensim")
    folder = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"
    for name in (WIKI_FILE, NEWS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: reinstall gensim (pip install --force-reinstall gensim)")
    return folder


def cache_dir() -> Path:
    """Where processed splits are kept: $QTUTOR_CACHE_DIR or the user cache directory."""
    root = os.environ.get("QTUTOR_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("qtutor")
    folder = Path(root) / CACHE_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- Wikipedia ------------------------------------------------------------------------------------------------
def wiki_articles() -> list[tuple[str, str]]:
    """(title, plain text) of every article of the dump longer than 2,000 characters, in dump order."""
    import mwparserfromhell

    articles = []
    with bz2.open(test_data_dir() / WIKI_FILE) as stream:
        for _, element in ElementTree.iterparse(stream):
            if not element.tag.endswith("}page"):
                continue
            title = element.findtext("{*}title") or ""
            namespace = element.findtext("{*}ns")
            markup = element.findtext("{*}revision/{*}text") or ""
            is_redirect = element.find("{*}redirect") is not None or markup.lstrip().lower().startswith("#redirect")
            if namespace == "0" and not is_redirect:
                text = tidy(mwparserfromhell.parse(markup).strip_code())
                if len(text) > MIN_ARTICLE_CHARS:
                    articles.append((title, text))
            element.clear()  # the dump is streamed: keep memory flat
    return articles


# markup the parser choked on: references (closed, or left open to the end of the line) and templates
LEFTOVER_MARKUP = re.compile(r"Category:|<ref[^>]*/>|<ref[^>]*>.*?(?:</ref>|$)|\{\{[^{}]*\}\}")
LEFTOVER_LINK = re.compile(r"\[\[(?:[^|\]]*\|)*([^\]]*)\]\]")
IMAGE_OPTIONS = re.compile(r"(?:(?:left|right|center|none|upright(?:=[\d.]+)?|thumb(?:nail)?|frame(?:less)?|"
                           r"border|\d+(?:x\d+)?px|alt=[^|]*)\|)+")


def tidy(text: str) -> str:
    """Remove what strip_code leaves behind: image captions' prefixes, categories, the trailing link lists."""
    lines, table_depth = [], 0
    for line in text.splitlines():
        line = line.strip()
        if line in TRAILING_SECTIONS:
            break  # everything after "See also" / "References" is lists of links
        if line.startswith("{|"):
            table_depth += 1  # wiki tables survive strip_code as raw rows: drop them whole
        if table_depth:
            table_depth -= line.startswith("|}")
            continue
        if line.startswith(("Category:", "File:", "Image:", "|", "!")):
            continue
        line = LEFTOVER_MARKUP.sub("", line)
        line = LEFTOVER_LINK.sub(r"\1", line)  # links strip_code could not parse: "[[File:x.svg|caption]]"
        line = IMAGE_OPTIONS.sub("", line)  # keep an image's caption, drop "left|thumb|200px|"
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # "Albedo () or ..." from removed pronunciation templates
        line = re.sub(r"[ \t]{2,}", " ", line)
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def split_of(index: int) -> str:
    """Articles 0, 20, 40, ... go to test, 10, 30, 50, ... to valid, the rest to train (98 articles: 88/5/5)."""
    if index % 20 == 0:
        return "test"
    if index % 20 == 10:
        return "valid"
    return "train"


def build_splits() -> dict[str, str]:
    """All four splits, from the package files (slow: a few seconds of parsing)."""
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for index, (title, text) in enumerate(wiki_articles()):
        splits[split_of(index)].append(f"= {title} =\n\n{text}")
    result = {name: "\n\n".join(parts) + "\n" for name, parts in splits.items()}
    result["news"] = news_text()
    return result


def news_text() -> str:
    """The Lee background news corpus: one short article per line."""
    lines = (test_data_dir() / NEWS_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n\n".join(line.strip() for line in lines if line.strip()) + "\n"


def text(split: str) -> str:
    """The text of a split, from the cache (built and cached on first use)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are: {', '.join(SPLITS)}")
    path = cache_dir() / f"{split}.txt"
    if not path.is_file():
        for name, content in build_splits().items():
            _write_atomically(cache_dir() / f"{name}.txt", content)
    return path.read_text(encoding="utf-8")


def _write_atomically(path: Path, content: str) -> None:
    """Write to a temporary file and rename, so a killed process never leaves half a split in the cache."""
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(content, encoding="utf-8")
    temporary.replace(path)


def article_titles(split: str) -> list[str]:
    """Titles of the articles in a wiki split (each starts with a "= Title =" line)."""
    return re.findall(r"^= (.+) =$", text(split), flags=re.MULTILINE)
