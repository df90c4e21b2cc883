"""The embedded default corpus: English documentation text already on the user's machine.

No download and no extra dependency: the text comes from the running interpreter's
standard library and from the packages electra-jax itself installs (see DEFAULT_CORPUS.md
for sources and licenses):

1. `pydoc_data.topics`: the plain-text Python Language Reference pages that `help()`
   shows (~80 long documents);
2. docstrings of the pure-Python standard library modules, classes and functions
   (read with `ast`, nothing is imported), at least `min_chars` long;
3. docstrings of our installed dependencies (`DEPENDENCY_PACKAGES`: TensorFlow, Keras,
   SciPy, NumPy, JAX, ...), read the same way. Without them the corpus is 2.7k examples,
   so a 10-minute run sees each dozens of times and memorises; with them ~7x more.

Indented blocks (code examples, grammar rules) and doctest lines are dropped so that what
remains is prose; a docstring seen before (re-exports, generated wrappers) is skipped.
Documents are written in ELECTRA's input format: one paragraph a line, a blank line
between documents. The text depends on the Python and package versions, so the corpus is
deterministic for a given environment (`corpus_sources` lists it), not across them.
"""

import ast
import importlib.metadata
import importlib.util
import inspect
import itertools
import os
import sysconfig
from typing import Iterator

from data_pipelines import files

# Parts of the stdlib that are tests, IDE code or vendored packages, not documentation.
_SKIPPED_DIRS = {
    "test",
    "tests",
    "testing",
    "idle_test",
    "idlelib",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "ensurepip",
    "__pycache__",
    "turtledemo",
    "config-3.11-x86_64-linux-gnu",
}

# (import name, distribution) of the install requirements whose docstrings join the corpus:
# the large documented ones, Apache-2.0 or BSD licensed (DEFAULT_CORPUS.md). A package that
# is not installed is left out and `corpus_sources` says so.
DEPENDENCY_PACKAGES = (
    ("tensorflow", "tensorflow-cpu"),
    ("keras", "keras"),
    ("scipy", "scipy"),
    ("numpy", "numpy"),
    ("jax", "jax"),
    ("flax", "flax"),
    ("orbax", "orbax-checkpoint"),
    ("optax", "optax"),
    ("tensorboard", "tensorboard"),
    ("tensorflow_datasets", "tensorflow-datasets"),
    ("absl", "absl-py"),
    ("ml_collections", "ml-collections"),
    ("etils", "etils"),
)


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


def _python_sources(root: str) -> list[str]:
    """The .py files below `root` in a fixed order, tests and vendored code skipped."""
    sources = []
    for directory, subdirs, filenames in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        sources.extend(
            os.path.join(directory, f) for f in sorted(filenames) if f.endswith(".py") and not f.endswith("_test.py")
        )
    return sources


def _package_root(import_name: str) -> str | None:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return sorted(spec.submodule_search_locations)[0]


def corpus_sources() -> list[dict]:
    """What the corpus is read from in this environment: name, version and root of each
    source (root None: not installed, so left out)."""
    sources = [
        {"name": "python-stdlib", "version": sysconfig.get_python_version(), "root": sysconfig.get_paths()["stdlib"]}
    ]
    for import_name, distribution in DEPENDENCY_PACKAGES:
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = None
        sources.append({"name": distribution, "version": version, "root": _package_root(import_name)})
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
    roots = [source["root"] for source in corpus_sources() if source["root"]]
    docstrings = (d for root in roots for path in _python_sources(root) for d in _docstrings(path))
    seen = set()
    for text in itertools.chain(texts, docstrings):  # lazily: a prefix reads only the files it needs
        paragraphs = _prose_paragraphs(text)
        key = "\n".join(paragraphs)
        if sum(len(p) for p in paragraphs) >= min_chars and key not in seen:
            seen.add(key)
            yield paragraphs


def write_default_corpus(path: str, max_documents: int | None = None) -> int:
    """Writes the embedded corpus (or its first `max_documents` documents) to `path`.

    Returns the number of documents written. The file is written under a temporary name
    and renamed, so an interrupted call leaves no partial corpus behind; `path`.sources.json
    records the sources and versions it was read from.
    """
    num_documents = 0
    with files.atomic_open(path) as f:
        for paragraphs in iter_default_documents():
            if max_documents is not None and num_documents >= max_documents:
                break
            f.write("\n".join(paragraphs) + "\n\n")
            num_documents += 1
    files.write_json(path + ".sources.json", corpus_sources())
    return num_documents
