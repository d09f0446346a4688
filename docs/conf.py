"""Sphinx configuration of etakit's documentation.

Build (offline, warnings as errors, the gallery executed)::

    pip install ".[docs]"
    python -m sphinx -W -b html docs docs/_build

The API pages are generated from the docstrings (autosummary + numpydoc), the
C API page from ``csrc/etakit.h`` (``_ext/c_header.py``), and the gallery by
running ``examples/gallery/plot_*.py`` (sphinx-gallery): every figure is
drawn by this build, and each example asserts what its text says.
"""
import os
import sys
import warnings

import etakit
# The compiled modules, imported here so that autodoc documents them rather than their
# type stubs: for a native module not yet imported, Sphinx loads its .pyi (which has
# signatures but not the docstrings) and keeps that in sys.modules.
import etakit._core
import etakit.cykernels

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

project = "etakit"
author = "the etakit developers"
copyright = "the etakit developers"
release = etakit.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "c_header",
    "docstring_checks",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md", "**/README.md", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]
templates_path = ["_templates"]
root_doc = "index"
# nothing is fetched while building: no intersphinx, and the theme's assets ship with it
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

# ---- API reference ------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False, "member-order": "bysource"}
# the types are in the numpydoc "Parameters" sections; signatures stay readable
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
# Docstring validation (numpydoc's checks, run by _ext/docstring_checks.py
# with a set per module; findings are warnings, errors under -W).  Not
# checked anywhere, as a matter of style: ES01 (an extended summary: many
# one-liners need none), SA01 (See Also), SS05 (the summary's verb form: the
# project writes summaries as statements or noun phrases), SS02/SS06/GL02
# (a summary may start with a code name, wrap, or end next to the quotes),
# PR08/PR09/RT02/RT05 (capitals and full stops in descriptions).
from numpydoc.validate import ERROR_MSGS  # noqa: E402

STYLE_ONLY = {"ES01", "SA01", "SS05", "SS02", "SS06", "GL02", "PR08", "PR09", "RT02", "RT05"}
FULL = set(ERROR_MSGS) - STYLE_ONLY
# Parameters and Returns sections not required (PR01, PR07, PR04, RT01, RT03).
LIGHT = FULL - {"PR01", "PR07", "PR04", "RT01", "RT03"}
etakit_docstring_checks = {
    "*": FULL,
    # the readable specification: its module docstring states the convention
    # every <rule>_step follows (param, grad, state, step, and the
    # hyperparameters of the optimizer class of the same rule)
    "etakit.reference": LIGHT,
}
numpydoc_validation_checks = set()     # numpydoc's own single-set validation: replaced by the above

# ---- gallery ------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples/gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",          # execute every example
    "abort_on_example_error": True,        # a failing assertion fails the build
    "download_all_examples": False,
    "remove_config_comments": True,
    "doc_module": ("etakit",),
    "reference_url": {"etakit": None},
    "backreferences_dir": "api/generated/backreferences",
    "within_subsection_order": "gallery_order.Order",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
}
warnings.filterwarnings("ignore", category=UserWarning, message="Matplotlib is currently using agg")

# ---- HTML ---------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"etakit {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
