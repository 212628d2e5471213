"""Sphinx configuration of the ase-flatten documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (``make docs``; ``make
test`` runs it too). It needs no network: no intersphinx, no remote images.
"""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # document this checkout, not an installed copy

import ase_flatten  # noqa: E402

project = "ase-flatten"
author = "the ase-flatten authors"
copyright = "the ase-flatten authors, MIT licence"
version = release = ase_flatten.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinxarg.ext",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# numpydoc-style docstrings through napoleon (built into Sphinx)
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False
napoleon_use_ivar = False  # attributes as entries of their own

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autoclass_content = "both"
autosummary_generate = False

# headings of the markdown pages get anchors, so "page.md#section" links work
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"ase-flatten {release}"
html_theme_options = {
    "description": "Flatten the error of machine-learning force fields",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_static_path = []
html_last_updated_fmt = None


def _skip_member(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated metadata-routing methods."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
