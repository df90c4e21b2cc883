"""The embedded default corpus: English documentation text that ships with Python itself.

No download and no extra dependency: the text comes from the running interpreter's
standard library (see DEFAULT_CORPUS.md for source and license):

1. `pydoc_data.topics`: the plain-text Python Language Reference pages that `help()`
   shows (~80 long documents);
2. docstrings of the pure-Python standard library modules, classes and functions
   (read with `ast`, nothing is imported), at least `min_chars` long.

Indented blocks (code examples, grammar rules) and doctest lines are dropped so that what
remains is prose. Documents are written in ELECTRA's input format: one paragraph a line,
a blank line between documents. The text depends on the Python version (3.11 here), so
the corpus is deterministic for a given interpreter, not across versions.
"""
import ast
import inspect
import os
import sysconfig
from typing import Iterator

# Parts of the stdlib that are tests, IDE code or vendored packages, not documentation.
_SKIPPED_DIRS = {"test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages", "lib2to3",
                 "ensurepip", "__pycache__", "turtledemo", "config-3.11-x86_64-linux-gnu"}


def _prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of unindented prose, each joined onto one line."""
    paragraphs, current = [], []
    for line in inspect.cleandoc(text).splitlines():
        is_code = line[:1].isspace() or line.lstrip().startswith((">>>", "..."))
        if line.strip() and not is_code:
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def _stdlib_sources() -> list[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    sources = []
    for directory, subdirs, files in os.walk(stdlib):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        sources.extend(os.path.join(directory, f) for f in sorted(files) if f.endswith(".py"))
    return sources


def _docstrings(source_path: str) -> Iterator[str]:
    try:
        with open(source_path, "rb") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, ValueError):  # a few stdlib files are templates or other versions' code
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                yield docstring


def iter_default_documents(min_chars: int = 200) -> Iterator[list[str]]:
    """Documents of the embedded corpus, each a list of prose paragraphs, in a fixed order."""
    from pydoc_data import topics  # ships with CPython (Lib/pydoc_data)

    texts = (topics.topics[name] for name in sorted(topics.topics))
    docstrings = (d for path in _stdlib_sources() for d in _docstrings(path))
    for text in (*texts, *docstrings):
        paragraphs = _prose_paragraphs(text)
        if sum(len(p) for p in paragraphs) >= min_chars:
            yield paragraphs


def write_default_corpus(path: str, max_documents: int | None = None) -> int:
    """Writes the embedded corpus (or its first `max_documents` documents) to `path`.

    Returns the number of documents written. The file is written under a temporary name
    and renamed, so an interrupted call leaves no partial corpus behind.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp_path = path + ".tmp"
    num_documents = 0
    with open(temp_path, "w", encoding="utf-8") as f:
        for paragraphs in iter_default_documents():
            if max_documents is not None and num_documents >= max_documents:
                break
            f.write("\n".join(paragraphs) + "\n\n")
            num_documents += 1
    os.replace(temp_path, path)
    return num_documents
