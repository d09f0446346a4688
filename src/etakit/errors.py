"""The exceptions etakit raises when it refuses a call.

Each is a subclass of the built-in exception a user would expect
(``ValueError`` or ``TypeError``), so ``except ValueError`` keeps working, and
carries what was refused as attributes, so a caller can react without parsing
the message.  In every case nothing has been written.

Examples
--------
>>> import numpy as np, etakit
>>> opt = etakit.SGD([np.zeros(3)], lr=0.1)
>>> try:
...     opt.step([np.zeros(4)])
... except etakit.GradientError as e:
...     print(e.index, isinstance(e, ValueError))
0 True
"""

from __future__ import annotations

from typing import Any

__all__ = ["GradientError", "GradientTypeError", "HyperparameterError", "NonFiniteGradientError", "StateError"]


class GradientError(ValueError):
    """A gradient was refused (shape, layout, aliasing, count); nothing was written.

    Parameters
    ----------
    message : str
        What was refused and why.
    index : int, optional
        Position of the refused gradient in the list passed to ``step``
        (None when the list itself is wrong); kept as ``self.index``.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> opt = etakit.SGD([np.zeros(3), np.zeros(2)], lr=0.1)
    >>> try:
    ...     opt.step([np.zeros(3), np.zeros(5)])
    ... except etakit.GradientError as e:
    ...     print(e.index)
    1
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class GradientTypeError(GradientError, TypeError):
    """A gradient of the wrong type or dtype; also a ``TypeError``.

    Parameters
    ----------
    message : str
        What was refused and why.
    index : int, optional
        Position of the refused gradient (``self.index``).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> opt = etakit.SGD([np.zeros(3)], lr=0.1)
    >>> try:
    ...     opt.step([np.zeros(3, dtype=np.int64)])
    ... except TypeError as e:
    ...     print(type(e).__name__, e.index)
    GradientTypeError 0
    """


class NonFiniteGradientError(GradientError):
    """A gradient holds inf or NaN and the optimizer's ``nonfinite`` policy is ``"raise"``.

    Nothing was written.  Also a `GradientError` (and so a ``ValueError``).

    Parameters
    ----------
    message : str
        What was refused and why.
    index : int, optional
        The first non-finite gradient (``self.index``), or None when only their
        global norm overflowed.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> opt = etakit.SGD([np.zeros(3)], lr=0.1, nonfinite="raise")
    >>> try:
    ...     opt.step([np.array([1.0, np.inf, 0.0])])
    ... except etakit.NonFiniteGradientError as e:
    ...     print(e.index)
    0
    """


class HyperparameterError(ValueError):
    """A hyperparameter, or a scheduled value of one, is out of range; nothing was written.

    Parameters
    ----------
    message : str
        What was refused and why.
    group : int, optional
        Index of the parameter group (``self.group``).
    key : str, optional
        The group key, ``"lr"``, ``"betas"``, ... (``self.key``).
    value : object, optional
        The refused value (``self.value``).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> try:
    ...     etakit.Adam([np.zeros(3)], lr=-1.0)
    ... except etakit.HyperparameterError as e:
    ...     print(e.key, e.value)
    lr -1.0
    """

    def __init__(self, message: str, group: int | None = None, key: str | None = None,
                 value: Any = None) -> None:
        super().__init__(message)
        self.group, self.key, self.value = group, key, value


class StateError(ValueError):
    """Optimizer state that does not fit its parameter; nothing was changed.

    Raised for a loaded or edited state dict whose arrays do not match the
    parameters, or a parameter resized since the optimizer was built.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> opt = etakit.Adam([np.zeros(3)], lr=0.1)
    >>> opt.step([np.ones(3)])
    >>> sd = opt.state_dict()
    >>> sd["state"][0]["exp_avg"] = np.zeros(4)
    >>> try:
    ...     opt.load_state_dict(sd)
    ... except etakit.StateError:
    ...     print("refused")
    refused
    """
