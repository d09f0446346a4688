"""Checkpoints as plain ``.npz`` files: ``etakit.save(path, obj)`` and ``etakit.load(path)``.

A state dict holds numpy arrays inside nested dicts and lists
(``{"state": {0: {"exp_avg": array, ...}}, "param_groups": [...]}``), and
``np.savez(f, **state)`` turns those into object arrays that only pickle can
read back.  ``save`` flattens the structure instead: every array becomes an
entry of its own in the ``.npz``, and the structure around them (dicts with
str or int keys, lists, tuples, numbers, strings, None, numpy scalars,
schedules) is one JSON document stored as a uint8 entry.  The file loads with
``np.load(path, allow_pickle=False)``, and ``load`` restores the structure
exactly: int keys stay int, tuples stay tuples, a 0-d array stays an array
and a Python float a float, dtypes and shapes are kept, schedules come back as
schedules.

The file is written atomically: to a temporary file in the same folder,
flushed and fsync'ed, then renamed over ``path``; a crash or an error midway
leaves any previous checkpoint at ``path`` as it was.

Examples
--------
>>> import os, tempfile, numpy as np, etakit
>>> W = np.zeros(3, dtype=np.float32)
>>> opt = etakit.AdamW([W], lr=etakit.schedules.cosine(1e-3, 100))
>>> opt.step([np.ones(3, dtype=np.float32)])
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
>>> etakit.save(path, {"optimizer": opt, "model": [W], "epoch": 1})
>>> ckpt = etakit.load(path)
>>> ckpt["epoch"], ckpt["model"][0].dtype, sorted(ckpt["optimizer"]["state"][0])
(1, dtype('float32'), ['exp_avg', 'exp_avg_sq', 'step'])
>>> opt.load_state_dict(ckpt["optimizer"])
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

from typing import IO, Any

import numpy as np
import numpy.typing as npt

__all__ = ["save", "load"]

FORMAT = "etakit-checkpoint"
VERSION = 1
STRUCTURE = "__etakit_structure__"   # the npz entry that holds the JSON structure
MAX_DEPTH = 200                      # containers nested deeper than this are refused (save and load)


def _key_text(k: Any) -> str:
    return f"[{k!r}]"


class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, npt.NDArray[Any]] = {}

    def encode(self, v: Any, path: str, depth: int, active: set[int]) -> Any:
        from .schedules import Schedule

        if depth > MAX_DEPTH:
            raise ValueError(f"{path}: nested more than {MAX_DEPTH} levels deep")
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is int:
            return {"int": str(v)} if abs(v) > 2**53 else v    # JSON readers other than Python's lose big ints
        if t is float:
            return v if np.isfinite(v) else {"float": repr(v)}
        if isinstance(v, Schedule):
            return {"schedule": self.encode(v.to_dict(), path, depth + 1, active)}
        if isinstance(v, np.generic):
            return {"scalar": self.array(np.asarray(v), path)}
        if t is np.ndarray or t is np.memmap:
            return {"array": self.array(v, path)}
        if isinstance(v, (dict, list, tuple)):
            if id(v) in active:
                raise ValueError(f"{path} contains itself; a checkpoint is a tree")
            active.add(id(v))
            try:
                if isinstance(v, dict):
                    if t is not dict:
                        raise TypeError(f"cannot save {path}: a {t.__name__} would come back as a dict; "
                                        "convert it to a dict before saving")
                    items: list[list[Any]] = []
                    for k, x in v.items():
                        if type(k) not in (str, int):
                            raise TypeError(f"cannot save {path}: it has a key {k!r} of type {type(k).__name__}; "
                                            "checkpoint dicts take str or int keys")
                        items.append([k, self.encode(x, path + _key_text(k), depth + 1, active)])
                    return {"dict": items}
                enc = [self.encode(x, f"{path}[{i}]", depth + 1, active) for i, x in enumerate(v)]
                if t is list:
                    return enc
                if t is tuple:
                    return {"tuple": enc}
                raise TypeError(f"cannot save {path}: a {t.__name__} would come back as a list or tuple; "
                                "convert it before saving")
            finally:
                active.discard(id(v))
        if type(v).__module__.split(".")[0] == "torch":
            raise TypeError(f"cannot save {path}: it is a torch {t.__name__}; etakit.save stores numpy state "
                            "(etakit's numpy optimizers); for etakit.torch optimizers use torch.save, or convert "
                            "tensors with .numpy()")
        sd = getattr(v, "state_dict", None)
        if callable(sd) and not isinstance(v, type):
            return self.encode(sd(), path, depth, active)
        what = "a function" if callable(v) else f"a {t.__name__}"
        hint = ("use a schedule from etakit.schedules (saved as data) instead of a Python callable, or set a "
                "number before saving" if callable(v) else
                "convert it to a numpy array, a number, a string, a list or a dict")
        raise TypeError(f"cannot save {path}: it is {what}, which a checkpoint can only hold with pickle; {hint} "
                        "(or use pickle yourself if you trust the files you load)")

    def array(self, a: Any, path: str) -> str:
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"cannot save {path}: an array of dtype object needs pickle; store numbers, or "
                            "convert it to lists")
        if isinstance(a, np.ma.MaskedArray):
            raise TypeError(f"cannot save {path}: a masked array (the mask would be lost); save .data and .mask")
        name = f"a{len(self.arrays)}"
        self.arrays[name] = a
        return name


def _plain(obj: Any) -> dict[str, npt.NDArray[Any]]:
    """Entries of the npz: the arrays and the JSON structure, built before any file is touched."""
    enc = _Encoder()
    root = enc.encode(obj, "state", 0, set())
    doc = {"format": FORMAT, "version": VERSION, "root": root}
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    entries = dict(enc.arrays)
    entries[STRUCTURE] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return entries


def _file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def save(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` (a state dict, an object with ``state_dict()``, or a dict/list of them) to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write, exactly (no ``.npz`` is appended).  It is replaced
        atomically: readers see the old file or the new one, never a part.
    obj : dict, list, tuple, object with ``state_dict()``
        Nested dicts (str or int keys), lists and tuples of numpy arrays,
        numpy scalars, Python ints, floats, bools, strings, None and
        ``etakit.schedules`` schedules.  An object with a ``state_dict()``
        method (an etakit optimizer, a ReduceLROnPlateau) is stored as its
        state dict, wherever it appears.

    Raises
    ------
    TypeError
        For a value that cannot be stored without pickle (a Python callable,
        an object array, another object), naming where it is, e.g.
        ``state['optimizer']['param_groups'][0]['lr']``.  Nothing is written.

    Examples
    --------
    >>> import os, tempfile, numpy as np, etakit
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> etakit.save(path, {"step": 3, "w": np.arange(3.0), "pair": (1, "a")})
    >>> sorted(np.load(path, allow_pickle=False).files)
    ['__etakit_structure__', 'a0']
    """
    path = os.fspath(path)
    entries = _plain(obj)                      # every error before the file system is touched
    folder = os.path.dirname(os.path.abspath(path))
    mode = _file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as e:                       # name the file asked for, not the temporary one
        raise type(e)(e.errno, f"cannot write {path!r}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)  # type: ignore[arg-type]  # (numpy: a key could be "allow_pickle")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:                                       # make the rename itself durable (POSIX)
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class _Decoder:
    def __init__(self, arrays: dict[str, npt.NDArray[Any]], source: str) -> None:
        self.arrays, self.source = arrays, source
        self.used: set[str] = set()

    def bad(self, path: str, what: str) -> ValueError:
        return ValueError(f"{self.source} is not a valid etakit checkpoint: {path}: {what}")

    def array(self, name: Any, path: str) -> npt.NDArray[Any]:
        if not isinstance(name, str) or name not in self.arrays or name == STRUCTURE:
            raise self.bad(path, f"refers to a missing array {name!r}")
        self.used.add(name)
        return self.arrays[name]

    def decode(self, v: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.bad(path, f"nested more than {MAX_DEPTH} levels deep")
        if v is None or isinstance(v, (bool, str, int, float)):
            return v
        if isinstance(v, list):
            return [self.decode(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v)]
        if not isinstance(v, dict) or len(v) != 1:
            raise self.bad(path, f"unexpected {type(v).__name__}")
        (tag, x), = v.items()
        if tag == "dict" and isinstance(x, list):
            out: dict[Any, Any] = {}
            for item in x:
                if not (isinstance(item, list) and len(item) == 2 and type(item[0]) in (str, int)):
                    raise self.bad(path, "a malformed dict entry")
                out[item[0]] = self.decode(item[1], path + _key_text(item[0]), depth + 1)
            return out
        if tag == "tuple" and isinstance(x, list):
            return tuple(self.decode(e, f"{path}[{i}]", depth + 1) for i, e in enumerate(x))
        if tag == "array":
            return self.array(x, path)
        if tag == "scalar":
            a = self.array(x, path)
            if a.ndim != 0:
                raise self.bad(path, "a scalar stored with a shape")
            return a[()]
        if tag == "int" and isinstance(x, str):
            try:
                return int(x)
            except ValueError:
                raise self.bad(path, f"a malformed int {x!r:.40}") from None
        if tag == "float" and x in ("inf", "-inf", "nan"):
            return float(x)
        if tag == "schedule":
            from .schedules import from_dict

            d = self.decode(x, path, depth + 1)
            try:
                return from_dict(d)
            except (TypeError, ValueError) as e:
                raise self.bad(path, f"a malformed schedule: {e}") from None
        raise self.bad(path, f"unknown entry {tag!r:.40}")


def _check_member_sizes(f: IO[bytes]) -> None:
    """Refuse, before allocating anything, an archive whose arrays claim more bytes than it holds."""
    with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as m:
                version = np.lib.format.read_magic(m)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(m)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(m)
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if need > info.file_size:
                    raise ValueError(f"entry {info.filename!r} claims {need} bytes of data in a "
                                     f"{info.file_size}-byte member")


def load(path: str | os.PathLike[str]) -> Any:
    """Read a checkpoint written by :func:`save`; the structure comes back exactly as it was saved.

    Objects saved through their ``state_dict()`` come back as state dicts:
    pass them to ``load_state_dict``.  Nothing is unpickled.

    Parameters
    ----------
    path : str or os.PathLike
        The file :func:`save` wrote.

    Returns
    -------
    object
        What was saved: dicts (with their int and str keys), lists, tuples,
        numpy arrays and scalars, numbers, strings, None and schedules.

    Raises
    ------
    ValueError
        For a file that is not an etakit checkpoint, or is truncated or corrupted.
    FileNotFoundError
        For a missing file.

    Examples
    --------
    >>> import os, tempfile, numpy as np, etakit
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> etakit.save(path, {0: (1.5, np.float32(2)), "w": np.zeros(())})
    >>> etakit.load(path)
    {0: (1.5, np.float32(2.0)), 'w': array(0.)}
    """
    path = os.fspath(path)
    source = repr(path)
    try:
        with open(path, "rb") as f:
            _check_member_sizes(f)
            f.seek(0)
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with z:
                if STRUCTURE not in z.files:
                    raise ValueError("an .npz file without etakit's structure entry (not written by etakit.save)")
                arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as e:
        raise ValueError(f"{source} is not a valid etakit checkpoint (truncated, corrupted or another kind "
                         f"of file): {e}") from None
    raw = arrays.pop(STRUCTURE)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{source} is not a valid etakit checkpoint: its structure entry is not text")
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{source} is not a valid etakit checkpoint: unreadable structure ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "root" not in doc:
        raise ValueError(f"{source} is not a valid etakit checkpoint: no etakit header in its structure")
    if doc.get("version") != VERSION:
        raise ValueError(f"{source} is an etakit checkpoint of version {doc.get('version')!r}; this etakit "
                         f"reads version {VERSION}")
    dec = _Decoder(arrays, source)
    try:
        out = dec.decode(doc["root"], "state", 0)
    except RecursionError:
        raise ValueError(f"{source} is not a valid etakit checkpoint: nested too deeply") from None
    if set(arrays) - dec.used:
        raise ValueError(f"{source} is not a valid etakit checkpoint: arrays not referenced by its structure: "
                         f"{sorted(set(arrays) - dec.used)[:5]}")
    return out
