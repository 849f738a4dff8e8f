"""Sphinx configuration of the skvaeinv documentation."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MPLBACKEND", "Agg")

import skvaeinv  # noqa: E402

project = "skvaeinv"
author = "skvaeinv developers"
copyright = "2026, skvaeinv developers"
version = release = skvaeinv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    # our own base classes' members (e.g. ForwardOperator.traveltimes on StraightRay's
    # page) are documented on every subclass; scikit-learn's and Python's are not
    "inherited-members": "BaseEstimator, TransformerMixin, RegressorMixin, "
                         "_MetadataRequester, object",
    # scikit-learn's generated metadata-routing setters document sklearn's own glossary
    "exclude-members": "set_fit_request, set_score_request, set_predict_request, "
                       "set_transform_request, set_inverse_transform_request, set_output",
}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
templates_path = []
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.json"]
html_theme = "pydata_sphinx_theme" if __import__("importlib").util.find_spec(
    "pydata_sphinx_theme") else "alabaster"
html_title = f"skvaeinv {version}"
intersphinx_mapping = {}   # no network in CI: keep the build offline

sphinx_gallery_conf = {
    "examples_dirs": str(Path(__file__).resolve().parents[1] / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
}
suppress_warnings = ["config.cache"]
