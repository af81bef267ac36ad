"""Sphinx configuration for nimare-mnm.

The build is offline: no intersphinx inventory is fetched unless
``NIMARE_MNM_DOCS_INTERSPHINX=1`` is set. ``make html`` runs the example gallery (the
examples that read NeuroQuery need ``NIMARE_MNM_DATA``, or ``../shared/data`` beside the
clone); ``make html-noplot`` (or ``-D plot_gallery=0``) only renders the examples' code, for
a quick build. The examples themselves are run by ``tests/test_examples.py``.
"""

import json
import os
import re
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))

import nimare_mnm  # noqa: E402

# --------------------------------------------------------------------------- data for the gallery
# The examples look for ``NIMARE_MNM_DATA`` (else ``../shared/data``). ``make -C docs`` runs
# from docs/ and sphinx-gallery runs each example from its own folder, so resolve the folder
# to an absolute path once: the variable as given (relative to where the build started or to
# the repository), else the project's ``../shared/data``.
_given = os.environ.get("NIMARE_MNM_DATA")
for _cand in ([Path(_given), REPO / _given] if _given else []) + [REPO.parent / "shared" / "data"]:
    if (_cand / "neuroquery").is_dir():
        os.environ["NIMARE_MNM_DATA"] = str(_cand.resolve())
        break
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No progress bars in the examples' captured output.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# --------------------------------------------------------------------------- project
project = "nimare-mnm"
author = "nimare-mnm developers"
copyright = "nimare-mnm developers"  # noqa: A001
release = nimare_mnm.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
if os.environ.get("NIMARE_MNM_DOCS_INTERSPHINX") == "1":  # needs network access
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
        "nibabel": ("https://nipy.org/nibabel", None),
        "nilearn": ("https://nilearn.github.io/stable", None),
        "nimare": ("https://nimare.readthedocs.io/en/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
    }

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "obj"

# --------------------------------------------------------------------------- API reference
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's public names are its __all__
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc sections give the types
# Names documented on the package's front page; module pages link to them instead.
TOPLEVEL = {
    "nimare_mnm.datasets.load_neuroquery": "nimare_mnm.load_neuroquery",
    "nimare_mnm.datasets.load_neurosynth": "nimare_mnm.load_neurosynth",
    "nimare_mnm.encoder.MNMEncoder": "nimare_mnm.MNMEncoder",
    "nimare_mnm.decoder.MNMDecoder": "nimare_mnm.MNMDecoder",
}
autosummary_context = {"toplevel": TOPLEVEL}

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# --------------------------------------------------------------------------- gallery
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/\d+_plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "reference_url": {"nimare_mnm": None},
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "capture_repr": (),  # show what the examples print, not the repr of plotting displays
}

# --------------------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"nimare-mnm {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 8,
}
html_sidebars = {"**": ["sidebar-nav-bs"], "index": []}
html_show_sourcelink = False


# --------------------------------------------------------------------------- directives
def _subparser(parser, name):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


class CLIHelp(Directive):
    """``.. nimare-mnm-help:: [subcommand]``: the help text, from ``build_parser()``."""

    optional_arguments = 1
    has_content = False

    def run(self):
        """Return the help text as a literal block."""
        from nimare_mnm.cli import build_parser

        os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal width
        parser = build_parser()
        if self.arguments:
            parser = _subparser(parser, self.arguments[0])
        text = parser.format_help().rstrip()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def _markdown_to_rst(text: str) -> list[str]:
    """Convert the markdown the benchmark scripts write (headings, text, pipe tables)."""
    lines, out, i = text.splitlines(), [], 0

    def inline(value: str) -> str:
        return value.replace("@", "\\ @")  # "R@10" is not an e-mail address

    def cell(value: str) -> str:
        value = inline(value.strip())
        return "\\" + value if value[:1] in "-*+#=|0123456789" and value[:2] != "n/" else value

    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            out += [f".. rubric:: {inline(line.lstrip('#').strip())}", ""]
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not re.fullmatch(r"\|[\s:|-]+\|?", lines[i].strip()):
                    rows.append([c for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out += [".. list-table::", "   :header-rows: 1", ""]
            for row in rows:
                out.append(f"   * - {cell(row[0])}")
                out += [f"     - {cell(c)}" for c in row[1:]]
            out.append("")
            continue
        else:
            out.append(inline(line))
        i += 1
    return out + [""]


def _trim(value, depth=0):
    """Shorten long lists (training histories) for display."""
    if isinstance(value, list) and len(value) > 6:
        return [*map(_trim, value[:2]), f"... {len(value) - 2} more entries ..."]
    if isinstance(value, dict):
        return {k: _trim(v, depth + 1) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 4)
    return value


def _recorded_provenance(path: Path) -> tuple[dict, str | None]:
    """Return the provenance a results file records, and the JSON it was read from.

    A JSON record is read itself; a markdown report or a figure is described by the JSON
    record of the same name written with it (``quality.md`` and ``quality.png`` by
    ``quality.json``), when there is one.
    """
    source = path if path.suffix == ".json" else path.with_suffix(".json")
    if not source.is_file():
        return {}, None
    try:
        record = json.loads(source.read_text(encoding="utf-8"))
    except ValueError:
        return {}, None
    if not isinstance(record, dict):
        return {}, source.name
    return {k: record.get(k) for k in ("commit", "dirty", "date", "machine")}, source.name


def _provenance_rst(path: Path) -> list[str]:
    """Return reST lines giving the commit (short hash) and date a results file records.

    A missing commit or date is shown as a warning admonition, so a figure that cannot be
    traced to the code that produced it stands out.
    """
    record, source = _recorded_provenance(path)
    commit, date, dirty = record.get("commit"), record.get("date"), record.get("dirty")
    parts, missing = [], []
    if commit:
        short = str(commit)[:7]
        parts.append(f"commit ``{short}``" + (" (with uncommitted changes)" if dirty else ""))
    else:
        missing.append("no commit recorded")
    if date:
        parts.append(f"date {date}")
    else:
        missing.append("no date recorded")
    if record.get("machine"):
        parts.append(f"machine ``{record['machine']}``")
    origin = "" if source in (None, path.name) else f" (from ``{source}``)"
    rst = []
    if parts:
        rst += ["**Recorded**" + origin + ": " + "; ".join(parts) + ".", ""]
    if missing:
        where = f"``{source}``" if source else "this file (no JSON record beside it)"
        text = " and ".join(missing).capitalize()
        rst += [".. warning::", "", f"   {text} in {where}.", ""]
    return rst


class BenchmarkResults(Directive):
    """``.. nimare-mnm-results::``: every file of benchmarks/results, whichever exist.

    Markdown reports are rendered as tables, PNG figures as images, and JSON records as
    (shortened) literal blocks, except a JSON whose markdown twin is shown. Under each file's
    heading: the commit (short hash) and date the file records (see
    :func:`nimare_mnm.experiments.provenance.provenance`), or a warning when it records none.
    """

    has_content = False
    option_spec = {"folder": directives.unchanged}

    def run(self):
        """Return the results as parsed reST."""
        folder = REPO / self.options.get("folder", "benchmarks/results")
        env = self.state.document.settings.env
        files = sorted(folder.glob("*")) if folder.is_dir() else []
        stems_md = {p.stem for p in files if p.suffix == ".md"}
        rst = []
        if not files:
            rst += ["No benchmark results in ``benchmarks/results`` yet.", ""]
        for path in files:
            env.note_dependency(str(path))
            rel = os.path.relpath(path, REPO)
            if path.suffix == ".md":
                rst += [f".. rubric:: ``{rel}``", "", *_provenance_rst(path)]
                rst += _markdown_to_rst(path.read_text(encoding="utf-8"))
            elif path.suffix == ".png":
                image = "/" + os.path.relpath(path, DOCS)  # "/" = relative to docs/
                rst += [f".. rubric:: ``{rel}``", "", *_provenance_rst(path)]
                rst += [f".. image:: {image}", "   :width: 100%", ""]
            elif path.suffix == ".json" and path.stem not in stems_md:
                try:
                    shown = json.dumps(_trim(json.loads(path.read_text())), indent=2)
                except ValueError:
                    continue
                rst += [f".. rubric:: ``{rel}``", "", *_provenance_rst(path)]
                rst += [".. code-block:: json", ""]
                rst += ["   " + line for line in shown.splitlines()] + [""]
        container = nodes.container()
        lines = StringList(rst, source=str(folder))
        self.state.nested_parse(lines, self.content_offset, container)
        return container.children


_TRAILING_UNDERSCORE = re.compile(r"(?<![\w\\])([A-Za-z][A-Za-z0-9_]*)_(?![\w])")


def _escape_trailing_underscores(app, what, name, obj, options, lines):
    """Escape ``name_`` written outside literals (reST reads it as a link to a target).

    Only lines without any backquote or asterisk are touched, so literals, roles and
    numpydoc's bold parameter names are left alone.
    """
    for i, line in enumerate(lines):
        if "`" not in line and "*" not in line and "_" in line:
            lines[i] = _TRAILING_UNDERSCORE.sub(r"\1\\_", line)


def _skip_member(app, what, name, obj, skip, options):
    """Skip scikit-learn's generated ``set_*_request`` methods (metadata routing)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    """Register the directives and the docstring hooks."""
    app.connect("autodoc-process-docstring", _escape_trailing_underscores)
    app.connect("autodoc-skip-member", _skip_member)
    app.add_directive("nimare-mnm-help", CLIHelp)
    app.add_directive("nimare-mnm-results", BenchmarkResults)
