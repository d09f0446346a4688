"""Optimizers over numpy arrays: PyTorch's semantics, one fused C call per step.

The Python layer owns everything but the arithmetic: parameter groups,
validation (all of it before anything is written), optimizer state and its
serialisation.  The element loops live in ``csrc/`` and are reached through
``etakit._core.Plan``, which keeps the C descriptors of all tensors so that a
step costs one pass over the gradient list and one C call.

Per step, the hyperparameters of every group are read and compared with the
last validated values; only a change triggers validation again (and, where
the options need a state buffer that does not exist yet, its allocation).
"""
import math
import numbers
import operator

import numpy as np

from . import _core
from .schedules import Schedule, from_dict, is_schedule_dict

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------- checks

def _real(group, key, where, lo=0.0, hi=math.inf, hi_open=False):
    v = group[key]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{where}: {key} must be a real number, got {type(v).__name__} {v!r}")
    f = float(v)
    if not (math.isfinite(f) and lo <= f and (f < hi if hi_open else f <= hi)):
        upper = "" if hi == math.inf else (f", < {hi}" if hi_open else f", <= {hi}")
        raise ValueError(f"Invalid {key} for {where}: {v!r} (expected a finite number >= {lo}{upper})")
    return f


def _scheduled(v):
    """A hyperparameter given as a schedule: built-in, or any callable f(k)."""
    return isinstance(v, Schedule) or (callable(v) and not isinstance(v, numbers.Number))


def _hp(group, key, where, sched, field, lo=0.0, hi=math.inf, hi_open=False):
    """A schedulable hyperparameter: a number (checked now) or a schedule
    (recorded in ``sched[field]``; its values are checked at each step)."""
    v = group[key]
    if _scheduled(v):
        sched[field] = v
        return 0.0   # placeholder: the step writes schedule(k)
    return _real(group, key, where, lo, hi, hi_open)


def _value_at(v, k):
    return float(v(k)) if _scheduled(v) else float(v)


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


def _flag(group, key, where):
    v = group[key]
    # 0 and 1 compare equal to False and True, so they are taken as such
    if not (isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1))):
        raise TypeError(f"{where}: {key} must be a bool, got {type(v).__name__} {v!r}")
    return int(bool(v))


def _betas(group, where, sched):
    b = group["betas"]
    if isinstance(b, (str, bytes)) or not hasattr(b, "__len__") or len(b) != 2:
        raise TypeError(f"{where}: betas must be a pair (beta1, beta2), got {b!r}")
    beta1 = _hp({"betas": b[0]}, "betas", f"{where} (betas[0])", sched, "beta1", 0.0, 1.0, True)
    return beta1, _real({"betas": b[1]}, "betas", f"{where} (betas[1])", 0.0, 1.0, True)


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


def _check_no_overlap(arrays, labels):
    """Raise if two arrays are the same object or share memory."""
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


# ------------------------------------------------------------- optimizer

class Optimizer:
    """Base class of etakit's optimizers.

    Subclasses declare the C rule, the group keys the kernel reads, the
    names of their state buffers, and how a group is validated and packed.

    Parameters
    ----------
    params : list of ndarray or list of dict
        The parameters: C-contiguous, writable float32 or float64 arrays of
        any shape, or parameter-group dicts ``{"params": [...], **hyperparameters}``
        whose values override ``defaults`` (as in PyTorch).
    defaults : dict
        Default hyperparameters.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.zeros(4, dtype=np.float32)
    >>> opt = etakit.SGD([w], lr=0.5)
    >>> opt.step([np.ones(4, dtype=np.float32)])
    >>> w
    array([-0.5, -0.5, -0.5, -0.5], dtype=float32)
    """

    _rule = None
    _hp_keys = ()       # group keys that feed the kernel, read every step
    _state_names = ()   # names of the C state slots 0..2 (None: unused)

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self._validate_group(self.defaults, "defaults")
        self._get_hp = operator.itemgetter(*self._hp_keys)
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
        self._fresh = set()
        self._plan = None
        self._hp_cache = None
        self._k = 0            # completed steps: what schedules are evaluated at
        self._py_sched = []    # (group, byte offset, callable, key) for Python-callable schedules

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
        elif isinstance(ps, (set, dict)) or not hasattr(ps, "__iter__"):
            raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, "
                            f"got {type(ps).__name__}")
        ps = list(ps)
        if not ps:
            raise ValueError(f"param_groups[{gi}] has an empty parameter list")
        for j, p in enumerate(ps):
            label = f"params[{j}]" if flat else f"param_groups[{gi}]['params'][{j}]"
            _check_param(p, label)
            self._labels.append(label)
            self._params.append(p)
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._validate_group(group, f"param_groups[{gi}]")
        self.param_groups.append(group)

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
        self._plan = None
        self._hp_cache = None

    # ---- per-rule hooks -----------------------------------------------
    def _validate_group(self, group, where, sched=None):
        """Validate a group's hyperparameters; return the kernel's tuple.

        Scheduled hyperparameters are recorded in ``sched`` (C field name ->
        schedule) and packed as placeholders."""
        raise NotImplementedError

    def _needed_state(self, group):
        """Names of the state buffers the group's options need."""
        raise NotImplementedError

    def _init_state(self, name, p, group):
        return np.zeros_like(p)

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
        TypeError, ValueError
            On a bad gradient or hyperparameter; nothing has been written.

        Notes
        -----
        The GIL is released during the update, so other Python threads run
        meanwhile; one optimizer must not be stepped from two threads at once.

        Examples
        --------
        >>> import numpy as np, etakit
        >>> w = np.zeros(2)
        >>> opt = etakit.Adam([w], lr=0.1)
        >>> opt.step([np.array([1.0, -1.0])])
        >>> w
        array([-0.1,  0.1])
        """
        hp = tuple(map(self._get_hp, self.param_groups))
        if hp != self._hp_cache:
            self._reconfigure(grads, hp)
        k = self._k
        if self._py_sched:
            self._apply_callables(k)
        r = self._plan.run(grads, k)
        if r != -1:
            if r == -3:
                self._raise_for_scheduled(k)
            self._check_grads(grads)
            # a sequence type the fast path does not take, but otherwise valid
            if self._plan.run(list(grads), k) != -1:
                raise RuntimeError("etakit internal error: gradients passed validation but were refused")
        self._k = k + 1
        if self._fresh:
            self._fresh.clear()

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
        return [_value_at(g["lr"], self._k) for g in self.param_groups]

    @property
    def step_count(self):
        """Completed steps: the ``k`` at which schedules are evaluated next."""
        return self._k

    def _apply_callables(self, k):
        for gi, offset, f, key in self._py_sched:
            v = f(k)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise TypeError(f"param_groups[{gi}]: the {key} schedule returned {v!r} at step {k}; "
                                "expected a real number")
            self._plan.set_hparam_at(gi, offset, float(v))

    def _raise_for_scheduled(self, k):
        """A scheduled value is out of range at step k: say which (nothing was written)."""
        for gi, group in enumerate(self.param_groups):
            now = {key: (tuple(_value_at(x, k) if _scheduled(x) else x for x in v) if key == "betas"
                         else _value_at(v, k) if _scheduled(v) else v)
                   for key, v in group.items() if key != "params"}
            g = dict(now, params=group["params"])
            self._validate_group(g, f"param_groups[{gi}] (scheduled values at step {k})")
        raise RuntimeError(f"etakit internal error: a scheduled value was refused at step {k}")

    def _reconfigure(self, grads, hp):
        scheds = [{} for _ in self.param_groups]
        packed = [self._validate_group(g, f"param_groups[{gi}]", scheds[gi])
                  for gi, g in enumerate(self.param_groups)]
        needs = []
        for gi, group in enumerate(self.param_groups):
            names = self._needed_state(group)
            needs += [names] * len(group["params"])
        missing = [(i, name) for i, names in enumerate(needs) for name in names
                   if name not in self._state[i]]
        if missing or self._plan is None:
            # allocate only for a step that will happen
            self._check_grads(grads)
            groups = self._group_of_params()
            for i, name in missing:
                self._state[i][name] = self._init_state(name, self._params[i], self.param_groups[groups[i]])
                if name == "momentum_buffer" and self._rule == _core.RULE_SGD:
                    self._fresh.add(i)
            self._build_plan()
        for gi, v in enumerate(packed):
            self._plan.set_hparams(gi, v)
        builtin, py = [], []
        for gi, sched in enumerate(scheds):
            for field, f in sched.items():
                offset = _core.field_offset(self._rule, field)
                if isinstance(f, Schedule):
                    builtin.append((gi, offset, f._c))
                else:
                    py.append((gi, offset, f, field))
        self._plan.set_schedules(builtin)
        self._py_sched = py
        self._hp_cache = hp

    def _group_of_params(self):
        return [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]

    def _sync_steps(self):
        if self._plan is not None:
            self._steps = self._plan.completed_steps()

    def _build_plan(self):
        self._sync_steps()
        plan = _core.Plan(self._rule, len(self._params), len(self.param_groups))
        for i, (p, gi) in enumerate(zip(self._params, self._group_of_params())):
            st = self._state[i]
            states = tuple(st.get(name) if name else None for name in self._state_names)
            plan.set_tensor(i, p, states, gi, self._steps[i], i in self._fresh)
        plan.index_written()
        self._plan = plan

    def _check_grads(self, grads):
        """Full gradient validation with messages (the fast path's twin)."""
        n = len(self._params)
        if not isinstance(grads, (list, tuple)):
            raise TypeError("grads must be a list or tuple of arrays, one per parameter in group "
                            f"order; got {type(grads).__name__}")
        if len(grads) != n:
            raise ValueError(f"expected {n} gradients (one per parameter, in group order), "
                             f"got {len(grads)}")
        written = []
        for i, p in enumerate(self._params):
            written.append((p, self._labels[i]))
            written += [(s, f"the optimizer state {name!r} of {self._labels[i]}")
                        for name, s in self._state[i].items()]
        spans = [(*_span(a), label) for a, label in written if a.nbytes]
        for k, (g, p) in enumerate(zip(grads, self._params)):
            label = self._labels[k]
            if g is None:
                raise TypeError(f"grads[{k}] is None; every parameter needs a gradient array "
                                f"(pass np.zeros_like for {label} if it has none)")
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{k}] must be a numpy.ndarray, got {type(g).__name__}")
            if g.dtype != p.dtype or not g.dtype.isnative:
                raise TypeError(f"grads[{k}] has dtype {g.dtype}, expected {p.dtype} "
                                f"(the dtype of {label})")
            if g.shape != p.shape:
                raise ValueError(f"grads[{k}] has shape {g.shape}, expected {p.shape} "
                                 f"(the shape of {label})")
            if not g.flags.c_contiguous:
                raise ValueError(f"grads[{k}] is not C-contiguous (strides {g.strides}); pass "
                                 "np.ascontiguousarray(grad)")
            if not g.flags.aligned:
                raise ValueError(f"grads[{k}] is not aligned to its dtype")
            if not p.flags.writeable:
                raise ValueError(f"{label} has become read-only; parameters are updated in place")
            if g.nbytes:
                lo, hi = _span(g)
                for a, b, what in spans:
                    if a < hi and lo < b:
                        raise ValueError(f"grads[{k}] shares memory with {what}, which the step "
                                         "writes; pass a separate gradient array")

    # ---- state ------------------------------------------------------
    def state_dict(self):
        """The optimizer's state as plain Python values and numpy arrays.

        ``{"state": {index: {"step": int, <buffer name>: ndarray}},
        "param_groups": [{<hyperparameters>, "params": [indices]}],
        "step_count": int}``, with parameters numbered in group order, as in
        PyTorch.  Schedules appear in their ``to_dict()`` form; Python
        callables as themselves.  Arrays are copies,
        so the dict is a snapshot that later steps do not change; it can be
        pickled or stored with numpy.

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
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict) or \
                not set(state_dict) <= {"state", "param_groups", "step_count"}:
            raise ValueError("state_dict must be a dict with the keys 'state', 'param_groups' "
                             "and optionally 'step_count'")
        step_count = state_dict.get("step_count", 0)
        if isinstance(step_count, (bool, np.bool_)) or not isinstance(step_count, numbers.Integral) \
                or step_count < 0:
            raise ValueError(f"loaded step_count must be an integer >= 0, got {step_count!r}")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups) if hasattr(groups, '__len__') else '?'} "
                             f"parameter groups, this optimizer has {len(self.param_groups)}")
        new_groups = []
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            if not isinstance(theirs, dict) or "params" not in theirs:
                raise ValueError(f"loaded param_groups[{gi}] is not a parameter-group dict")
            if len(theirs["params"]) != len(mine["params"]):
                raise ValueError(f"loaded param_groups[{gi}] has {len(theirs['params'])} parameters, "
                                 f"this optimizer's has {len(mine['params'])}")
            g = {k: _decode(v) for k, v in theirs.items() if k != "params"}
            g["params"] = mine["params"]
            self._validate_group(g, f"loaded param_groups[{gi}]")
            new_groups.append(g)
        if not isinstance(state, dict):
            raise ValueError("loaded 'state' must be a dict {parameter index: {name: value}}")
        allowed = {n for n in self._state_names if n}
        new_state = [{} for _ in self._params]
        new_steps = [0] * len(self._params)
        for key, entry in state.items():
            if not isinstance(key, numbers.Integral) or not 0 <= key < len(self._params):
                raise ValueError(f"loaded state has an entry for parameter {key!r}; "
                                 f"expected indices 0..{len(self._params) - 1}")
            if not isinstance(entry, dict):
                raise ValueError(f"loaded state[{key}] must be a dict")
            p = self._params[key]
            for name, v in entry.items():
                if name == "step":
                    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 0:
                        raise ValueError(f"loaded state[{key}]['step'] must be an integer >= 0, got {v!r}")
                    new_steps[key] = int(v)
                elif name in allowed:
                    a = np.asarray(v)
                    if a.shape != p.shape:
                        raise ValueError(f"loaded state[{key}][{name!r}] has shape {a.shape}, expected "
                                         f"{p.shape} (the shape of {self._labels[key]})")
                    if a.dtype.kind != "f":
                        raise TypeError(f"loaded state[{key}][{name!r}] has dtype {a.dtype}; "
                                        "expected a floating-point array")
                    new_state[key][name] = np.array(a, dtype=p.dtype, order="C", copy=True)
                else:
                    raise ValueError(f"loaded state[{key}] has an unknown entry {name!r}; "
                                     f"{type(self).__name__} keeps {sorted(allowed)} and 'step'")
        for mine, g in zip(self.param_groups, new_groups):
            mine.clear()
            mine.update(g)
        self._state, self._steps = new_state, new_steps
        self._k = int(step_count)
        self._fresh = set()
        self._plan = None
        self._hp_cache = None

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


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
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
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

    _rule = _core.RULE_SGD
    _hp_keys = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _state_names = ("momentum_buffer", None, None)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _validate_group(self, g, where, sched=None):
        sched = {} if sched is None else sched
        lr = _hp(g, "lr", where, sched, "lr")
        momentum = _hp(g, "momentum", where, sched, "momentum")
        dampening = _real(g, "dampening", where, 0.0, 1.0)
        wd = _hp(g, "weight_decay", where, sched, "weight_decay")
        nesterov, maximize = _flag(g, "nesterov", where), _flag(g, "maximize", where)
        # a scheduled momentum is checked against nesterov at each step
        if nesterov and ((momentum <= 0 and "momentum" not in sched) or dampening != 0):
            raise ValueError(f"Invalid nesterov for {where}: Nesterov momentum requires momentum > 0 "
                             f"and dampening == 0 (got momentum={momentum}, dampening={dampening})")
        return (lr, momentum, dampening, wd, nesterov, maximize)

    def _needed_state(self, g):
        return ("momentum_buffer",) if g["momentum"] != 0 else ()


class Adam(Optimizer):
    """Adam, with PyTorch's update, arguments and defaults (``torch.optim.Adam``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p   (L2; AdamW decays p instead)
        m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;  vmax = max(vmax, v) if amsgrad
        p -= lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    amsgrad : bool, default False
    maximize : bool, default False

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

    _rule = _core.RULE_ADAM
    _hp_keys = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = 0

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _validate_group(self, g, where, sched=None):
        sched = {} if sched is None else sched
        lr = _hp(g, "lr", where, sched, "lr")
        beta1, beta2 = _betas(g, where, sched)
        eps = _real(g, "eps", where)
        wd = _hp(g, "weight_decay", where, sched, "weight_decay")
        return (lr, beta1, beta2, eps, wd, _flag(g, "amsgrad", where), _flag(g, "maximize", where),
                self._decoupled)

    def _needed_state(self, g):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if g["amsgrad"] else ("exp_avg", "exp_avg_sq")


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (``torch.optim.AdamW``).

    Before the Adam update, ``p *= 1 - lr * weight_decay``; the gradient is
    not changed.  Same arguments as :class:`Adam`, but ``weight_decay``
    defaults to 1e-2.

    Examples
    --------
    >>> import numpy as np, etakit
    >>> w = np.ones(2)
    >>> opt = etakit.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> opt.step([np.zeros(2)])    # no gradient: only the decay acts
    >>> w
    array([0.95, 0.95])
    """

    _decoupled = 1

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
    lr : float, default 1e-2
    alpha : float, default 0.99
        In [0, 1].
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
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

    _rule = _core.RULE_RMSPROP
    _hp_keys = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    _state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _validate_group(self, g, where, sched=None):
        sched = {} if sched is None else sched
        return (_hp(g, "lr", where, sched, "lr"), _real(g, "alpha", where, 0.0, 1.0), _real(g, "eps", where),
                _hp(g, "weight_decay", where, sched, "weight_decay"), _hp(g, "momentum", where, sched, "momentum"),
                _flag(g, "centered", where), _flag(g, "maximize", where))

    def _needed_state(self, g):
        names = ["square_avg"]
        if _scheduled(g["momentum"]) or g["momentum"] > 0:
            names.append("momentum_buffer")
        if g["centered"]:
            names.append("grad_avg")
        return tuple(names)


class Adagrad(Optimizer):
    """Adagrad, with PyTorch's update, arguments and defaults (``torch.optim.Adagrad``).

    ::

        g = -grad if maximize else grad;  g += weight_decay * p
        clr = lr / (1 + (t - 1) lr_decay);  sum += g^2;  p -= clr g / (sqrt(sum) + eps)

    Parameters
    ----------
    params : list of ndarray or list of dict
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-2
    lr_decay : float, default 0
    weight_decay : float, default 0
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

    _rule = _core.RULE_ADAGRAD
    _hp_keys = ("lr", "lr_decay", "weight_decay", "eps", "maximize", "initial_accumulator_value")
    _state_names = ("sum", None, None)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _validate_group(self, g, where, sched=None):
        sched = {} if sched is None else sched
        _real(g, "initial_accumulator_value", where)
        return (_hp(g, "lr", where, sched, "lr"), _real(g, "lr_decay", where),
                _hp(g, "weight_decay", where, sched, "weight_decay"), _real(g, "eps", where),
                _flag(g, "maximize", where))

    def _needed_state(self, g):
        return ("sum",)

    def _init_state(self, name, p, group):
        return np.full_like(p, float(group["initial_accumulator_value"]))
