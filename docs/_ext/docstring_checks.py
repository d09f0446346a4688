"""numpydoc's docstring validation, with a set of checks per module.

numpydoc validates every docstring against one set of checks
(``numpydoc_validation_checks``).  etakit wants the full numpydoc standard on
its public API and a lighter one where a module has a documented convention
instead (``etakit.reference``: every ``<rule>_step`` takes ``param, grad,
state, step`` and its class's hyperparameters) or has not been brought up to
the standard yet.  This extension runs ``numpydoc.validate.validate`` on each
object autodoc documents, with the checks ``etakit_docstring_checks`` lists
for the object's module, and reports each finding as a Sphinx warning (an
error under ``-W``).

Configuration (``conf.py``)::

    etakit_docstring_checks = {"*": {...codes...}, "etakit.reference": {...}}
"""
import importlib
import inspect

from numpydoc.validate import ERROR_MSGS, validate
from sphinx.util import logging

logger = logging.getLogger(__name__)
_seen = set()


def _module_of(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        if isinstance(obj, property):
            obj = obj.fget
        module = inspect.getmodule(obj)
        return module.__name__ if module is not None else ".".join(parts[:i])
    return name


def check(app, what, name, obj, options, lines):
    if what == "module" or name in _seen:
        return
    _seen.add(name)
    table = app.config.etakit_docstring_checks
    checks = table.get(_module_of(name), table["*"])
    if not checks:
        return
    report = validate(name)
    for code, message in report["errors"]:
        if code in checks:
            logger.warning(f"{name}: {code} {message}", type="docstring", subtype=code,
                           location=(app.env.docname, None))


def setup(app):
    app.add_config_value("etakit_docstring_checks", {"*": set(ERROR_MSGS)}, "env")
    app.connect("autodoc-process-docstring", check)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
