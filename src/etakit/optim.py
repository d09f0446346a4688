"""Optimizers over numpy arrays: each rule's reference semantics, one fused C call per step.

The Python layer owns everything but the arithmetic: parameter groups,
validation (all of it before anything is written), optimizer state and its
serialisation.  A rule is declared once, by its class below: the C rule name,
the group keys that pack several C fields (``betas``), the signature with its
defaults, and the docstring.  Everything else (fields, ranges, which fields
can follow a schedule, state slots and when each is needed) comes from the C
rule table through ``etakit._step.RuleSpec``, and the link to the engine
(``Stepper``) is shared with the PyTorch drop-ins of ``etakit.torch``.

Per step, the hyperparameters of every group are read and compared with the
last validated values; only a change triggers validation again (and, where
the options need a state buffer that does not exist yet, its allocation).
"""
import numbers
import operator
import warnings

import numpy as np

from ._step import RuleSpec, Stepper, is_scheduled, value_at
from .errors import StateError
from .reference import zeropower_via_newtonschulz
from .schedules import Schedule, from_dict, is_schedule_dict

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Lion", "Muon", "OPTIMIZERS"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# a step count a C int64 step counter can still advance from
_MAX_STEP = 2**62


def _encode(v):
    """Group values in plain data: schedules as dicts (callables stay as they are)."""
    if isinstance(v, Schedule):
        return v.to_dict()
    if isinstance(v, tuple):
        return tuple(_encode(x) for x in v)
    return v


def _decode(v):
    if is_schedule_dict(v):
        return from_dict(v)
    if isinstance(v, (tuple, list)) and any(is_schedule_dict(x) for x in v):
        return tuple(_decode(x) for x in v)
    return v


def _span(a):
    lo = a.__array_interface__["data"][0]
    return lo, lo + a.nbytes


def _check_param(p, where):
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where} must be a numpy.ndarray, got {type(p).__name__}")
    if p.dtype not in _FLOATS or not p.dtype.isnative:
        raise TypeError(f"{where} has dtype {p.dtype}; etakit updates float32 or float64 arrays "
                        "in native byte order")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous (shape {p.shape}, strides {p.strides}); "
                         "parameters are updated in place and never copied: make the parameter "
                         "itself contiguous with np.ascontiguousarray and keep that array")
    if not p.flags.aligned:
        raise ValueError(f"{where} is not aligned to its dtype")
    if not p.flags.writeable:
        raise ValueError(f"{where} is read-only; parameters are updated in place")


def _check_matrix(p, where, name):
    """Refuse a parameter that is not 2-D, for rules that update matrices only (Muon)."""
    if p.ndim != 2:
        raise ValueError(f"{where} has shape {tuple(p.shape)}; {name} updates 2-D parameters (matrices) only, as "
                         "its reference does: optimise the others (biases, norms, embeddings) with another "
                         "optimizer such as AdamW")


def _check_no_overlap(arrays, labels):
    """Raise if two arrays are the same object or share memory (O(n log n))."""
    seen = {}
    for a, label in zip(arrays, labels):
        if id(a) in seen:
            raise ValueError(f"{seen[id(a)]} and {label} are the same array; each parameter may "
                             "appear once")
        seen[id(a)] = label
    spans = sorted((*_span(a), label) for a, label in zip(arrays, labels) if a.nbytes)
    for (lo0, hi0, l0), (lo1, hi1, l1) in zip(spans, spans[1:]):
        if lo1 < hi0:
            raise ValueError(f"{l0} and {l1} overlap in memory; parameters must be distinct buffers")


def _step_value(v, where):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or not 0 <= v < _MAX_STEP:
        raise ValueError(f"{where} must be an integer >= 0 and < 2**62, got {v!r}")
    return int(v)


# ------------------------------------------------------------- optimizer

class Optimizer:
    """Base class of etakit's optimizers.

    A subclass declares its rule: ``rule`` (the C rule name), ``_tuples``
    (group keys that pack several C fields, ``{"betas": ("beta1", "beta2")}``),
    ``_extra`` (group keys outside the C struct), ``_choices`` (group keys
    whose values are names of a C integer), its ``__init__`` signature with
    PyTorch-style defaults, and its docstring.  A rule whose step has host
    work between its C phases (Muon's matrix products) declares it as
    ``_host_step(stepper, groups)``, run after the first ``_host_split``
    phases (``etakit._step.Stepper.run_split``).

    Parameters
    ----------
    params : list of ndarray or list of dict
        The parameters: C-contiguous, writable float32 or float64 arrays of
        any shape, or parameter-group dicts ``{"params": [...], **hyperparameters}``
        whose values override ``defaults`` (as in PyTorch).
    defaults : dict
        Default hyperparameters.

    Notes
    -----
    One optimizer may be stepped from several threads: steps are serialised
    (a second thread waits for the first), so none is lost.  Separate
    optimizers step in parallel, with the GIL released.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros(4, dtype=np.float32)
    >>> opt = etakit.SGD([w], lr=0.5)
    >>> opt.step([np.ones(4, dtype=np.float32)])
    >>> w
    array([-0.5, -0.5, -0.5, -0.5], dtype=float32)
    """

    rule = None
    reference_impl = None   # the implementation the rule matches (default: torch.optim.<class name>)
    _tuples = {}
    _extra = {}
    _torch_step = "state"   # where etakit.torch keeps the step count: "state", "group" or None
    _implied = {}           # group entries the class sets beyond its signature
    _group_optional = ()    # group keys a reference checkpoint may lack (it keeps them elsewhere)
    _choices = {}           # group keys whose values are names: {key: {value: C int}}
    _host_step = None       # f(stepper, groups): host work between the rule's C phases
    _host_split = 1         # C phases run before _host_step

    def __init__(self, params, defaults):
        self._stepper = Stepper(RuleSpec.of(type(self)))
        spec = self._stepper.spec
        self.defaults = {**defaults, **self._implied}
        spec.pack(self.defaults, "defaults")
        self._get_hp = operator.itemgetter(*spec.keys)
        self._warned = set()
        self.param_groups = []
        self._params = []
        self._labels = []
        groups = self._parse_params(params)
        for gi, group in enumerate(groups):
            self._append_group(group, gi)
        _check_no_overlap(self._params, self._labels)
        n = len(self._params)
        self._state = [{} for _ in range(n)]
        self._steps = [0] * n
        self._fresh = {}
        self._k = 0            # completed steps: what schedules are evaluated at

    # ---- construction -------------------------------------------------
    @staticmethod
    def _parse_params(params):
        if isinstance(params, np.ndarray) or isinstance(params, dict):
            raise TypeError("params must be a list of arrays or of parameter-group dicts, got "
                            f"a single {type(params).__name__}; wrap it in a list")
        try:
            params = list(params)
        except TypeError:
            raise TypeError("params must be a list of arrays or of parameter-group dicts, got "
                            f"{type(params).__name__}") from None
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(p, dict) for p in params):
            return [dict(g) for g in params]
        if any(isinstance(p, dict) for p in params):
            raise TypeError("params mixes arrays and parameter-group dicts; use one or the other")
        return [{"params": params, "_flat": True}]

    def _append_group(self, group, gi):
        flat = group.pop("_flat", False)
        if "params" not in group:
            raise ValueError(f"param_groups[{gi}] has no 'params' entry")
        ps = group["params"]
        if isinstance(ps, np.ndarray):
            ps = [ps]
        elif isinstance(ps, (set, dict, str, bytes)) or not hasattr(ps, "__iter__"):
            raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, "
                            f"got {type(ps).__name__}")
        ps = list(ps)
        if not ps:
            raise ValueError(f"param_groups[{gi}] has an empty parameter list")
        for j, p in enumerate(ps):
            label = f"params[{j}]" if flat else f"param_groups[{gi}]['params'][{j}]"
            _check_param(p, label)
            if self._stepper.spec.matrix_only:
                _check_matrix(p, label, type(self).__name__)
            self._labels.append(label)
            self._params.append(p)
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._warn_unknown(group, f"param_groups[{gi}]")
        self._stepper.spec.pack(group, f"param_groups[{gi}]", self._k if hasattr(self, "_k") else 0)
        self.param_groups.append(group)

    def _warn_unknown(self, group, where):
        spec = self._stepper.spec
        for key in spec.unknown_keys(group):
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"{where} has the key {key!r}, which {type(self).__name__} does not use (a typo?); "
                              f"its keys are {list(spec.keys)}", UserWarning, stacklevel=4)

    def add_param_group(self, param_group):
        """Add a parameter group, as ``torch.optim.Optimizer.add_param_group``.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> opt = etakit.Adam([np.zeros(3)])
        >>> opt.add_param_group({"params": [np.zeros(2)], "lr": 1e-2})
        >>> [g["lr"] for g in opt.param_groups]
        [0.001, 0.01]
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        with self._stepper:
            n_groups, n_params = len(self.param_groups), len(self._params)
            try:
                self._append_group(dict(param_group), n_groups)
                _check_no_overlap(self._params, self._labels)
            except (TypeError, ValueError):
                del self.param_groups[n_groups:], self._params[n_params:], self._labels[n_params:]
                raise
            added = len(self._params) - n_params
            self._sync_steps()
            self._state += [{} for _ in range(added)]
            self._steps += [0] * added
            self._stepper.plan = None
            self._stepper.key = None

    # ---- stepping ----------------------------------------------------
    def step(self, grads):
        """Update every parameter in place from its gradient, in one C call.

        Parameters
        ----------
        grads : list or tuple of ndarray
            One gradient per parameter, in group order then order within the
            group; each with its parameter's dtype and shape, C-contiguous, and
            not sharing memory with any parameter or optimizer state.

        Raises
        ------
        etakit.GradientError, etakit.HyperparameterError (ValueError, TypeError)
            On a bad gradient or hyperparameter; nothing has been written.

        Notes
        -----
        The GIL is released during the update, so other Python threads run
        meanwhile.  Steps of one optimizer from several threads are serialised.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.Adam([w], lr=0.1)
        >>> opt.step([np.array([1.0, -1.0])])
        >>> w
        array([-0.1,  0.1])
        """
        st = self._stepper
        with st._lock:
            groups = self.param_groups
            key = (tuple(map(self._get_hp, groups)), tuple(map(len, groups)))
            if key != st.key or st.plan is None or not st.plan.params_match(groups):
                self._reconfigure(grads, key)
            k = self._k
            if st.callables:
                st.apply_callables(k)
            if st.spec.group_state:
                st.load_group_state(groups)
            try:
                if st.spec.host is None:
                    st.plan.run(grads, k)
                else:
                    self._run_split(grads, k)
            except _Moved:
                self._build_plan()
                if st.spec.group_state:
                    st.load_group_state(groups)
                if st.spec.host is None:
                    st.plan.run(grads, k)
                else:
                    self._run_split(grads, k)
            if st.spec.group_state:
                st.store_group_state(groups)
            self._k = k + 1
            if self._fresh:
                self._fresh.clear()

    def _run_split(self, grads, k):
        """The C phases around the rule's host step (see Stepper.run_split)."""
        plan = self._stepper.plan
        self._stepper.run_split(lambda phases, advance: plan.run(grads, k, phases=phases, advance=advance),
                                self.param_groups)

    def current_lr(self):
        """The learning rate of each group for the next step (its schedule's value now).

        Examples
        --------
        >>> import numpy as np, etakit
        >>> from etakit import schedules as S
        >>> opt = etakit.SGD([np.zeros(1)], lr=S.step(1.0, step_size=1, gamma=0.5))
        >>> opt.current_lr()
        [1.0]
        >>> opt.step([np.ones(1)]); opt.current_lr()
        [0.5]
        """
        return [value_at(g["lr"], self._k) for g in self.param_groups]

    @property
    def step_count(self):
        """Completed steps: the ``k`` at which schedules are evaluated next."""
        return self._k

    def _reconfigure(self, grads, key):
        st = self._stepper
        self._adopt_replaced_params()
        for gi, g in enumerate(self.param_groups):
            self._warn_unknown(g, f"param_groups[{gi}]")
        st.configure(self.param_groups, self._k)
        group_of = self._group_of_params()
        missing = st.missing([p.shape for p in self._params], group_of, self._state)
        if missing or st.plan is None or not st.plan.params_match(self.param_groups):
            if missing:
                # allocate only for a step that will happen: check the gradients
                # against a plan of the state as it is
                self._build_plan()
                st.plan.run(grads, self._k, check_only=True)
                spec = st.spec
                for i, j in missing:
                    self._state[i][spec.slot_names[j]] = spec.new_state(j, self._params[i],
                                                                        self.param_groups[group_of[i]])
                    self._fresh[i] = self._fresh.get(i, 0) | (1 << j)
            self._build_plan()
        else:
            st.bind()
        st.key = key

    def _adopt_replaced_params(self):
        """Take arrays a user put into ``param_groups[g]["params"]`` in place of the old ones.

        State is per position (as in ``state_dict``): a replacement keeps it if
        it has the old array's shape and dtype; otherwise it is refused."""
        new, labels = [], []
        for gi, g in enumerate(self.param_groups):
            ps = g["params"]
            if not isinstance(ps, list):
                raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, got {type(ps).__name__}")
            for j, p in enumerate(ps):
                labels.append(f"param_groups[{gi}]['params'][{j}]")
                new.append(p)
        if len(new) != len(self._params):
            raise ValueError(f"the parameter groups now hold {len(new)} parameters, the optimizer was built with "
                             f"{len(self._params)}; add parameters with add_param_group, or build a new optimizer")
        for i, (old, p) in enumerate(zip(self._params, new)):
            if p is old:
                continue
            _check_param(p, labels[i])
            if self._stepper.spec.matrix_only:
                _check_matrix(p, labels[i], type(self).__name__)
            if self._state[i] and (p.shape != old.shape or p.dtype != old.dtype):
                raise StateError(f"{labels[i]} was replaced by an array of shape {p.shape} and dtype {p.dtype}; "
                                 f"its optimizer state is for shape {old.shape} and dtype {old.dtype}. Build a "
                                 "new optimizer for it")
        _check_no_overlap(new, labels)
        self._params = new

    def _group_of_params(self):
        return [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]

    def _sync_steps(self):
        if self._stepper.plan is not None:
            self._steps = self._stepper.plan.completed_steps()

    def _build_plan(self):
        self._sync_steps()
        self._stepper.build(self._params, self._state, self._group_of_params(), self._steps, self._fresh,
                            self._labels)

    # ---- state ------------------------------------------------------
    def state_dict(self):
        """The optimizer's state as plain Python values and numpy arrays.

        ``{"state": {index: {"step": int, <buffer name>: ndarray}},
        "param_groups": [{<hyperparameters>, "params": [indices]}],
        "step_count": int}``, with parameters numbered in group order, as in
        PyTorch.  Schedules appear in their ``to_dict()`` form; Python
        callables as themselves.  Arrays are copies, so the dict is a snapshot
        that later steps do not change; ``etakit.save`` writes it to a file.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(3, dtype=np.float32)
        >>> opt = etakit.Adam([w])
        >>> opt.step([np.ones(3, dtype=np.float32)])
        >>> sd = opt.state_dict()
        >>> sd["state"][0]["step"], sorted(sd["state"][0])
        (1, ['exp_avg', 'exp_avg_sq', 'step'])
        """
        with self._stepper:
            self._sync_steps()
            state = {}
            for i, st in enumerate(self._state):
                if st or self._steps[i]:
                    entry = {"step": int(self._steps[i])}
                    entry.update((k, v.copy()) for k, v in st.items())
                    state[i] = entry
            groups, start = [], 0
            for g in self.param_groups:
                d = {k: _encode(v) for k, v in g.items() if k != "params"}
                d["params"] = list(range(start, start + len(g["params"])))
                start += len(g["params"])
                groups.append(d)
            return {"state": state, "param_groups": groups, "step_count": self._k}

    def load_state_dict(self, state_dict):
        """Restore a state from :meth:`state_dict`; the run continues bit-identically.

        Everything is checked before anything changes: group and parameter
        counts, hyperparameters, state names, shapes and step counts.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(3)
        >>> opt = etakit.Adam([w])
        >>> opt.step([np.ones(3)])
        >>> opt2 = etakit.Adam([w.copy()])
        >>> opt2.load_state_dict(opt.state_dict())
        >>> opt2.state_dict()["state"][0]["step"]
        1
        """
        with self._stepper:
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict):
        spec = self._stepper.spec
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict) or \
                not set(state_dict) <= {"state", "param_groups", "step_count"}:
            got = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError("state_dict must be a dict with the keys 'state', 'param_groups' "
                             f"and optionally 'step_count'; got {got}")
        step_count = _step_value(state_dict.get("step_count", 0), "loaded step_count")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)):
            raise ValueError(f"loaded 'param_groups' must be a list of group dicts, got {type(groups).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        new_groups = []
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            where = f"loaded param_groups[{gi}]"
            if not isinstance(theirs, dict) or "params" not in theirs:
                raise ValueError(f"{where} is not a parameter-group dict with a 'params' entry")
            ps = theirs["params"]
            if not isinstance(ps, (list, tuple)):
                raise ValueError(f"{where}['params'] must be a list of parameter indices, got {type(ps).__name__}")
            if len(ps) != len(mine["params"]):
                raise ValueError(f"{where} has {len(ps)} parameters, this optimizer's has {len(mine['params'])}")
            missing = [k for k in spec.kernel_keys if k not in theirs]
            if missing:
                raise ValueError(f"{where} lacks {missing}; a {type(self).__name__} group has "
                                 f"{list(spec.keys)} (was it saved by another optimizer?)")
            g = {k: _decode(v) for k, v in theirs.items() if k != "params"}
            g["params"] = mine["params"]
            spec.pack(g, where, step_count)
            new_groups.append(g)
        if not isinstance(state, dict):
            raise ValueError("loaded 'state' must be a dict {parameter index: {name: value}}")
        allowed = set(spec.state_names)
        new_state = [{} for _ in self._params]
        new_steps = [0] * len(self._params)
        for key, entry in state.items():
            if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not 0 <= key < len(self._params):
                raise ValueError(f"loaded state has an entry for parameter {key!r}; "
                                 f"expected indices 0..{len(self._params) - 1}")
            if not isinstance(entry, dict):
                raise ValueError(f"loaded state[{key}] must be a dict")
            p = self._params[key]
            for name, v in entry.items():
                if name == "step":
                    new_steps[key] = _step_value(v, f"loaded state[{key}]['step']")
                elif name in allowed:
                    j = spec.slot_names.index(name)
                    a = np.asarray(v)
                    scalar = spec.slots[j]["shape"] == "scalar"
                    shape = spec.slot_shape(j, p.shape)
                    if a.shape != shape:
                        raise StateError(f"loaded state[{key}][{name!r}] has shape {a.shape}, expected "
                                         f"{shape} (for {self._labels[key]} of shape {p.shape})")
                    if a.dtype.kind != "f":
                        raise TypeError(f"loaded state[{key}][{name!r}] has dtype {a.dtype}; "
                                        "expected a floating-point array")
                    new_state[key][name] = np.array(a, dtype=np.float64 if scalar else p.dtype, order="C",
                                                    copy=True)
                else:
                    raise ValueError(f"loaded state[{key}] has an unknown entry {name!r}; "
                                     f"{type(self).__name__} keeps {sorted(allowed)} and 'step'")
        for mine, g in zip(self.param_groups, new_groups):
            mine.clear()
            mine.update(g)
        self._state, self._steps = new_state, new_steps
        self._k = step_count
        self._fresh = {}
        self._stepper.plan = None
        self._stepper.key = None

    # ---- copying ------------------------------------------------------
    def __getstate__(self):
        with self._stepper:
            self._sync_steps()
            d = dict(self.__dict__)
        del d["_stepper"], d["_get_hp"]
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._stepper = Stepper(RuleSpec.of(type(self)))
        self._get_hp = operator.itemgetter(*self._stepper.spec.keys)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


from ._core import _Moved  # noqa: E402  (after the class, which does not need it at import)


# ----------------------------------------------------------------- rules

class SGD(Optimizer):
    """Stochastic gradient descent with momentum and Nesterov momentum.

    Same update, arguments and defaults as ``torch.optim.SGD``::

        g = -grad if maximize else grad;  g += weight_decay * p
        buf = g (first step) or momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf   (when momentum != 0)
        p -= lr * g

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
    momentum : float or schedule, default 0
    dampening : float, default 0
    weight_decay : float or schedule, default 0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.step([2 * w])     # gradient of |w|^2
    >>> np.round(w, 4)
    array([ 0.46, -0.46])
    """

    rule = "sgd"
    _torch_step = None

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))


class Adam(Optimizer):
    """Adam, with PyTorch's update, arguments and defaults (``torch.optim.Adam``).

    ::

        g = -grad if maximize else grad
        g += weight_decay * p   (or, decoupled_weight_decay: p *= 1 - lr * weight_decay, as AdamW)
        m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;  vmax = max(vmax, v) if amsgrad
        p -= lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); ``betas[0]`` may be a schedule.
    eps : float, default 1e-8
    weight_decay : float or schedule, default 0
        L2 penalty added to the gradient.
    amsgrad : bool, default False
    maximize : bool, default False
    decoupled_weight_decay : bool, default False
        Decay the parameters instead (AdamW).

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([3.0, -2.0], dtype=np.float32)
    >>> opt = etakit.Adam([w], lr=0.5)
    >>> for _ in range(100):
    ...     opt.step([2 * w])
    >>> bool(np.abs(w).max() < 0.1)
    True
    """

    rule = "adam"
    _tuples = {"betas": ("beta1", "beta2")}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (``torch.optim.AdamW``).

    Before the Adam update, ``p *= 1 - lr * weight_decay``; the gradient is
    not changed.

    Parameters
    ----------
    params, lr, betas, eps, amsgrad, maximize
        As for :class:`Adam`.
    weight_decay : float or schedule, default 1e-2
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.ones(2)
    >>> opt = etakit.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> opt.step([np.zeros(2)])    # no gradient: only the decay acts
    >>> w
    array([0.95, 0.95])
    """

    _implied = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


class RMSprop(Optimizer):
    """RMSprop, with PyTorch's update, arguments and defaults (``torch.optim.RMSprop``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        s = alpha s + (1 - alpha) g^2;  avg = sqrt(s - ga^2) (centered: ga = ga + (1 - alpha)(g - ga)) or sqrt(s)
        avg += eps
        buf = momentum buf + g / avg; p -= lr buf   (momentum > 0)   or   p -= lr g / avg

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-2
    alpha : float, default 0.99
        In [0, 1].
    eps : float, default 1e-8
    weight_decay : float or schedule, default 0
    momentum : float or schedule, default 0
    centered : bool, default False
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.RMSprop([w], lr=0.01)
    >>> opt.step([w.copy()])
    >>> np.round(w, 3)
    array([ 0.9, -0.9])
    """

    rule = "rmsprop"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))


class Adagrad(Optimizer):
    """Adagrad, with PyTorch's update, arguments and defaults (``torch.optim.Adagrad``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        clr = lr / (1 + (t - 1) lr_decay);  sum += g^2;  p -= clr g / (sqrt(sum) + eps)

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-2
    lr_decay : float, default 0
    weight_decay : float or schedule, default 0
    initial_accumulator_value : float, default 0
        Starting value of ``sum``.
    eps : float, default 1e-10
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -1.0])
    >>> opt = etakit.Adagrad([w], lr=0.1)
    >>> opt.step([w.copy()])
    >>> np.round(w, 3)
    array([ 0.9, -0.9])
    """

    rule = "adagrad"

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as ``pytorch_optimizer.Lion``.

    ::

        g = -grad if maximize else grad
        p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)   or   g += weight_decay * p
        p -= lr * sign(m + (1 - beta1) (g - m));  m = m + (1 - beta2) (g - m)

    Lion's update has the same size for every element, so its learning rate
    is typically 3-10x smaller than AdamW's, and its weight decay larger.

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-4
    betas : (float, float), default (0.9, 0.99)
        Interpolation of the update and decay of the momentum, each in [0, 1);
        ``betas[0]`` may be a schedule.
    weight_decay : float or schedule, default 0
    weight_decouple : bool, default True
        Decay the parameters (AdamW-style) rather than add to the gradient.
    fixed_decay : bool, default False
        Decoupled decay by ``weight_decay`` alone, not scaled by ``lr``.
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.array([1.0, -2.0])
    >>> opt = etakit.Lion([w], lr=0.1)
    >>> opt.step([np.array([0.5, -3.0])])
    >>> w
    array([ 0.9, -1.9])
    """

    rule = "lion"
    reference_impl = "pytorch_optimizer.Lion"
    _tuples = {"betas": ("beta1", "beta2")}
    _group_optional = ("maximize",)
    _torch_step = "group"

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, weight_decouple=True,
                 fixed_decay=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, fixed_decay=fixed_decay,
                                      maximize=maximize))


def _orthogonalise(stepper, groups):
    """Muon's host step: each tensor's update (the work slot) replaced by its orthogonalisation."""
    for work, gi in zip(stepper.work, stepper.group_of):
        u = work["update"]
        if u is not None and u.size:
            g = groups[gi]
            zeropower_via_newtonschulz(u, g["ns_coefficients"], g["ns_steps"], g["eps"], out=u)


class Muon(Optimizer):
    """Muon (Jordan et al. 2024), as ``torch.optim.Muon``: momentum orthogonalised by Newton-Schulz iterations.

    For 2-D parameters only (the weight matrices of hidden layers); optimise
    biases, norms and embeddings with another optimizer such as AdamW.  ::

        m = lerp(m, grad, 1 - momentum)
        u = lerp(grad, m, momentum) if nesterov else m
        O = NS(u):  X = u / max(|u|_F, eps), transposed if rows > cols;
                    ns_steps times: A = X X^T;  X = a X + (b A + c A A) X     ((a, b, c) = ns_coefficients)
        p *= 1 - lr * weight_decay
        p -= lr * ratio * O,  ratio = sqrt(max(1, rows / cols))    (adjust_lr_fn None or "original")
                                  or 0.2 * sqrt(max(rows, cols))    ("match_rms_adamw")

    ``lerp`` is ``torch.lerp``.  The element-wise parts run in C, on the
    calling thread (one pass before the orthogonalisation, one after;
    parameters and momentum change only in the second); the matrix products
    run on numpy's BLAS and its threads
    (:func:`etakit.reference.zeropower_via_newtonschulz`; ``X @ X.T`` and
    ``A @ A.T``, equal to ``A @ A`` for the symmetric ``A``, are symmetric
    rank-k updates), so a step costs about ``ns_steps`` times three matrix
    products, not memory bandwidth.

    Deviation from ``torch.optim.Muon``: torch orthogonalises in bfloat16
    (``grad.bfloat16()``); etakit orthogonalises in the parameter's own dtype
    (float32 or float64), which is more accurate and, on CPUs without fast
    bfloat16 matrix units, faster.  Trajectories therefore match torch's
    within bfloat16 rounding, and match exactly (float64, rtol 1e-9) a torch
    whose bfloat16 cast is a no-op.  Stricter checks than torch's: ``eps``
    must be >= 0, ``ns_steps`` in [0, 99] (torch: < 100), and the
    coefficients finite.

    Parameters
    ----------
    params : list of ndarray or list of dict
        2-D parameters or parameter groups (see :class:`Optimizer`).
    lr : float or schedule, default 1e-3
    weight_decay : float or schedule, default 0.1
        Decoupled: the parameters shrink by ``lr * weight_decay`` each step.
    momentum : float or schedule, default 0.95
        >= 0.
    nesterov : bool, default True
    ns_coefficients : (float, float, float), default (3.4445, -4.7750, 2.0315)
        ``(a, b, c)`` of the quintic Newton-Schulz iteration.
    eps : float, default 1e-7
        Floor of the Frobenius norm that scales the update before the iterations.
    ns_steps : int, default 5
        Newton-Schulz iterations, 0 to 99.
    adjust_lr_fn : {None, "original", "match_rms_adamw"}, default None
        Scale of the learning rate by the matrix shape (None is "original").

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros((2, 3))
    >>> opt = etakit.Muon([w], lr=0.1)
    >>> opt.step([np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])])
    >>> np.round(w, 3)      # gradients of sizes 1 and 2; updates of about lr each (NS keeps them in ~[0.7, 1.2])
    array([[-0.111,  0.   ,  0.   ],
           [ 0.   ,  0.069,  0.   ]])
    """

    rule = "muon"
    _tuples = {"ns_coefficients": ("ns_a", "ns_b", "ns_c")}
    _choices = {"adjust_lr_fn": {None: 0, "original": 0, "match_rms_adamw": 1}}
    _torch_step = None
    _host_step = staticmethod(_orthogonalise)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn))


#: Every optimizer class by name, for tools that take a name (etakit.minimize, bench).
OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad, Lion, Muon)}
