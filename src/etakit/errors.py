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
...     print(e.index, type(e).__mro__[2].__name__)
0 ValueError
"""

__all__ = ["GradientError", "GradientTypeError", "HyperparameterError", "NonFiniteGradientError", "StateError"]


class GradientError(ValueError):
    """A gradient was refused (shape, layout, aliasing, count); nothing was written.

    Attributes
    ----------
    index : int or None
        Position of the refused gradient in the list passed to ``step``
        (None when the list itself is wrong).
    """

    def __init__(self, message, index=None):
        super().__init__(message)
        self.index = index


class GradientTypeError(GradientError, TypeError):
    """A gradient of the wrong type or dtype; also a ``TypeError``."""


class NonFiniteGradientError(GradientError):
    """A gradient holds inf or NaN and the optimizer's ``nonfinite`` policy is ``"raise"``;
    nothing was written (``index``: the first such gradient, or None when only
    their global norm overflowed)."""


class HyperparameterError(ValueError):
    """A hyperparameter, or a scheduled value of one, is out of range; nothing was written.

    Attributes
    ----------
    group : int or None
        Index of the parameter group.
    key : str or None
        The group key (``"lr"``, ``"betas"``, ...).
    value : object
        The refused value.
    """

    def __init__(self, message, group=None, key=None, value=None):
        super().__init__(message)
        self.group, self.key, self.value = group, key, value


class StateError(ValueError):
    """Optimizer state that does not fit its parameter (a loaded or edited
    state dict, a resized parameter); nothing was changed."""
