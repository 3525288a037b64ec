"""Sphinx configuration of the NanoStream documentation site.

Sphinx, the tool of the original NanoStream documentation, because it reads
the API reference from the docstrings (autodoc) and the CLI reference from
the argument parser (sphinx-argparse) with no code of ours, builds a search
index, and fails the build on any warning (``-W``), such as a broken link.

Built by ``just docs`` (warnings are errors) into ``docs/_build/html``.
The pages are Markdown, read by MyST; the node reference is generated from
the node declarations (``just reference``), the CLI reference from the
argument parser (sphinx-argparse) and the API reference from the
docstrings (autodoc).
"""

import nanostream

project = "NanoStream"
author = "NanoStream contributors"
copyright = "NanoStream contributors"
release = nanostream.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown: ``{directive}`` fences, ``:::`` blocks, and anchors for headings
# so that links such as ``files.md#how-fast`` resolve.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True


html_theme = "furo"
html_title = f"NanoStream {release}"
html_static_path: list[str] = []
