"""Sphinx configuration of the convis_jax docs (build: scripts/build_docs.sh).

The site must build offline with warnings as errors: every asset is local
(no web fonts, no CDN scripts), and the notebook pages execute on the
bundled model during the build.
"""

import convis_jax

project = "convis_jax"
author = "convis_jax authors"
copyright = "the convis_jax authors, MIT licence"
release = version = convis_jax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]

# MyST: markdown pages and notebooks (markdown with {code-cell} blocks).
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# Notebook pages run on every build; a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# stderr is progress bars and library notices, not results.
nb_output_stderr = "remove"
# No widget state here; do not pull require.js / the widget manager from a CDN.
nb_ipywidgets_js = {}

# API reference: Google-style docstrings of convis_jax.__all__ (docs/api.md).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False
# `x` in a docstring is code, as in the package's markdown-flavoured docstrings.
default_role = "literal"

html_theme = "sphinx_book_theme"
html_title = f"convis_jax {release}"
html_static_path = []
html_context = {"default_mode": "auto"}  # light or dark as the reader's system is
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
}
