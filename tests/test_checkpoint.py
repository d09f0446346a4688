"""etakit.save / etakit.load: plain .npz checkpoints (no pickle) that restore state dicts exactly,
written atomically, and refuse what they cannot store."""
import math
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import etakit
from etakit import checkpoint
from etakit import schedules as S


def assert_same(a, b, path="state"):
    """Equal values of identical types, all the way down (arrays: dtype, shape, order and bits)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.flags.f_contiguous == b.flags.f_contiguous, path
        assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert a == b or (math.isnan(a) and math.isnan(b)), path
        assert math.copysign(1, a) == math.copysign(1, b), path
    else:
        assert a == b, path


EVERYTHING = {
    "ints": [0, -1, 2**53 + 1, -(2**80), True, False],
    "floats": [0.0, -0.0, 1.5, 1e-310, math.inf, -math.inf, math.nan, 0.1],
    "strings": ["", "état", "a\0b", "[1, 2]", '{"dict": []}'],
    "none": None,
    0: "an int key",
    -7: {1: {2: (3, [4, (5,)])}},
    "tuple": (1, "a", None, (), []),
    "empty": {},
    "arrays": [np.zeros(()), np.float32(2.5), np.array(1.5), 1.5, np.int64(3), 3,
               np.arange(6, dtype=np.float16).reshape(2, 3), np.asfortranarray(np.ones((2, 3))),
               np.array([True, False]), np.array([1 + 2j]), np.zeros((0, 4), dtype=np.uint64),
               np.array(["ab", "c"]), np.array(["2024-01-01"], dtype="datetime64[D]"),
               np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])],
    "schedule": S.warmup(S.join([S.constant(1e-3), 0.5 * S.cosine(1e-3, 100)], [10]), 5),
    "schedule_dict": S.cosine(0.1, 10).to_dict(),
}


def test_round_trip_keeps_values_and_types(tmp_path):
    path = tmp_path / "ckpt.npz"
    etakit.save(path, EVERYTHING)
    back = etakit.load(path)
    assert_same({k: v for k, v in EVERYTHING.items() if k != "schedule"},
                {k: v for k, v in back.items() if k != "schedule"})
    assert back["schedule"] == EVERYTHING["schedule"]
    np.testing.assert_array_equal(back["schedule"].values(200), EVERYTHING["schedule"].values(200))
    # a plain npz: numpy reads it without pickle
    with np.load(path, allow_pickle=False) as z:
        assert checkpoint.STRUCTURE in z.files and all(z[f].dtype != object for f in z.files)


def test_np_savez_of_a_state_dict_needs_pickle_but_etakit_save_does_not(tmp_path):
    opt = etakit.Adam([np.zeros(3)])
    opt.step([np.ones(3)])
    ckpt = opt.state_dict()
    np.savez(tmp_path / "np.npz", **ckpt)
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(tmp_path / "np.npz", allow_pickle=False)["state"]
    etakit.save(tmp_path / "etakit.npz", ckpt)
    assert_same(etakit.load(tmp_path / "etakit.npz"), ckpt)


def make(kind, params):
    groups = [{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}]
    if kind == "SGD":
        return etakit.SGD(groups, lr=S.warmup(S.cosine(0.1, 40), 5), momentum=S.one_cycle_momentum(40), nesterov=True)
    if kind == "Adam":
        return etakit.Adam(groups, lr=1e-2, betas=(S.linear(0.95, 0.9, 20), 0.999), amsgrad=True,
                           weight_decay=S.cosine(1e-2, 40))
    if kind == "AdamW":
        return etakit.AdamW(groups, lr=S.one_cycle(1e-2, 40))
    if kind == "RMSprop":
        return etakit.RMSprop(groups, lr=S.exponential(1e-2, 0.99), momentum=0.9, centered=True)
    return etakit.Adagrad(groups, lr=S.step(0.1, 7), lr_decay=1e-3)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_from_a_checkpoint_is_bit_identical(kind, dtype, tmp_path):
    rng = np.random.default_rng(0)
    W, b = rng.standard_normal((5, 3)).astype(dtype), np.zeros(3, dtype=dtype)
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in (W, b)] for _ in range(30)]
    opt = make(kind, [W, b])
    plateau = etakit.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    for k, g in enumerate(grads[:12]):
        opt.step(g)
        plateau.step(1.0 if k < 3 else 2.0)       # reductions: the lr becomes plateau_scaled(...)
    path = tmp_path / "ckpt.npz"
    etakit.save(path, {"optimizer": opt, "plateau": plateau, "model": [W, b], "epoch": 12})
    for k, g in enumerate(grads[12:]):
        opt.step(g)
        plateau.step(2.0 + k)
    expected = [W.copy(), b.copy()], opt.state_dict(), plateau.state_dict()

    ckpt = etakit.load(path)
    W2, b2 = ckpt["model"]
    assert ckpt["epoch"] == 12 and W2.dtype == dtype and W2.flags.writeable and W2.flags.c_contiguous
    opt2 = make(kind, [W2, b2])
    opt2.load_state_dict(ckpt["optimizer"])
    plateau2 = etakit.ReduceLROnPlateau(opt2, patience=1, factor=0.5)
    plateau2.load_state_dict(ckpt["plateau"])
    for k, g in enumerate(grads[12:]):
        opt2.step(g)
        plateau2.step(2.0 + k)
    assert W2.tobytes() == expected[0][0].tobytes() and b2.tobytes() == expected[0][1].tobytes()
    assert_same(opt2.state_dict(), expected[1])
    assert_same(plateau2.state_dict(), expected[2])


def test_a_lone_optimizer_or_plateau_saves_as_its_state_dict(tmp_path):
    opt = etakit.SGD([np.zeros(2)], lr=0.1)
    plateau = etakit.ReduceLROnPlateau(opt)
    etakit.save(tmp_path / "o.npz", opt)
    etakit.save(tmp_path / "p.npz", plateau)
    assert_same(etakit.load(tmp_path / "o.npz"), opt.state_dict())
    assert_same(etakit.load(tmp_path / "p.npz"), plateau.state_dict())       # best = inf


@pytest.mark.parametrize("obj,exc,match", [
    ({"optimizer": etakit.SGD([np.zeros(2)], lr=lambda k: 0.1)}, TypeError,
     r"cannot save state\['optimizer'\]\['param_groups'\]\[0\]\['lr'\]: it is a function.*etakit\.schedules"),
    ({"a": [1, {"b": {1, 2}}]}, TypeError, r"cannot save state\['a'\]\[1\]\['b'\]: it is a set"),
    ({"a": np.array([None, 1])}, TypeError, r"cannot save state\['a'\]: an array of dtype object needs pickle"),
    ({1.5: 0}, TypeError, r"cannot save state: it has a key 1.5 of type float"),
    ({True: 0}, TypeError, r"it has a key True of type bool"),
    ({"a": __import__("collections").OrderedDict()}, TypeError, "OrderedDict would come back as a dict"),
    ({"m": np.ma.masked_array([1.0, 2.0], mask=[0, 1])}, TypeError, r"state\['m'\]: it is a MaskedArray"),
    ({"f": open}, TypeError, r"cannot save state\['f'\]: it is a function"),
])
def test_what_needs_pickle_is_refused_and_nothing_is_written(obj, exc, match, tmp_path):
    path = tmp_path / "ckpt.npz"
    etakit.save(path, {"old": 1})
    before = path.read_bytes()
    with pytest.raises(exc, match=match):
        etakit.save(path, obj)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]


def test_a_structure_that_contains_itself_is_refused(tmp_path):
    a = [1]
    a.append(a)
    with pytest.raises(ValueError, match=r"state\[1\] contains itself"):
        etakit.save(tmp_path / "x.npz", a)
    assert not os.listdir(tmp_path)


def test_a_failure_during_the_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    etakit.save(path, {"w": np.arange(3.0), "epoch": 1})
    before = path.read_bytes()

    def broken_savez(f, **entries):
        f.write(b"PK\x03\x04 half a zip")       # something written, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        etakit.save(path, {"w": np.arange(1000.0), "epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]
    assert etakit.load(path)["epoch"] == 1

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(checkpoint.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        etakit.save(path, {"epoch": 3})
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]


def test_a_process_killed_mid_write_leaves_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    etakit.save(path, {"epoch": 1})
    before = path.read_bytes()
    script = f"""
import os, numpy as np, etakit
from etakit import checkpoint
real = np.savez
def savez_then_die(f, **entries):
    real(f, **entries)
    f.flush()
    f.truncate(f.tell() // 2)       # half the archive on disk, then the process dies
    os._exit(9)
checkpoint.np.savez = savez_then_die
etakit.save({str(path)!r}, {{"epoch": 2, "w": np.zeros(100000)}})
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    assert path.read_bytes() == before and etakit.load(path) == {"epoch": 1}
    leftovers = [n for n in os.listdir(tmp_path) if n != "ckpt.npz"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.npz.") and leftovers[0].endswith(".tmp")


def test_file_mode_follows_an_existing_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(b"")
    os.chmod(path, 0o640)
    etakit.save(path, {"a": 1})
    assert (os.stat(path).st_mode & 0o777) == 0o640


def _rewrite(path, structure=None, drop=None, add=None):
    """Rewrite an etakit checkpoint's npz entries (to forge malformed files)."""
    with np.load(path, allow_pickle=False) as z:
        entries = {n: z[n] for n in z.files if n != drop}
    if structure is not None:
        entries[checkpoint.STRUCTURE] = np.frombuffer(structure.encode(), dtype=np.uint8)
    entries.update(add or {})
    with open(path, "wb") as f:
        np.savez(f, **entries)


def malformed(kind, path):
    etakit.save(path, {"w": np.arange(100.0), "n": 1})
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_tail":
        path.write_bytes(data[:-10])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, world\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"w": 1}))
    elif kind in ("npy", "plain_npz", "object_npz"):
        with open(path, "wb") as f:
            if kind == "npy":
                np.save(f, np.arange(3))
            else:
                np.savez(f, w=np.arange(3) if kind == "plain_npz" else np.array([None]))
    elif kind == "flipped_byte":
        i = data.index(np.arange(100.0).tobytes()) + 50
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif kind == "bad_json":
        _rewrite(path, structure="{not json")
    elif kind == "bad_utf8":
        _rewrite(path, add={checkpoint.STRUCTURE: np.array([0xFF, 0xFE], dtype=np.uint8)})
    elif kind == "structure_not_text":
        _rewrite(path, add={checkpoint.STRUCTURE: np.zeros(3)})
    elif kind == "other_format":
        _rewrite(path, structure='{"format": "something", "version": 1, "root": 1}')
    elif kind == "future_version":
        _rewrite(path, structure='{"format": "etakit-checkpoint", "version": 99, "root": 1}')
    elif kind == "missing_array":
        _rewrite(path, drop="a0")
    elif kind == "unknown_tag":
        _rewrite(path, structure='{"format": "etakit-checkpoint", "version": 1, "root": {"lambda": "x"}}')
    elif kind == "unreferenced_array":
        _rewrite(path, structure='{"format": "etakit-checkpoint", "version": 1, "root": 1}')
    elif kind == "deep":
        _rewrite(path, structure='{"format": "etakit-checkpoint", "version": 1, "root": ' + "[" * 5000 + "]" * 5000
                 + "}")
    elif kind == "bad_schedule":
        _rewrite(path, structure='{"format": "etakit-checkpoint", "version": 1, "root": {"schedule": '
                                 '{"dict": [["type", "cosine"], ["lr", -1.0]]}}}', drop="a0")
    elif kind == "bad_dict":
        _rewrite(path, structure='{"format": "etakit-checkpoint", "version": 1, "root": {"dict": [[1.5, 2]]}}',
                 drop="a0")


KINDS = ["truncated", "truncated_tail", "empty", "text", "pickle", "npy", "plain_npz", "object_npz", "flipped_byte",
         "bad_json", "bad_utf8", "structure_not_text", "other_format", "future_version", "missing_array",
         "unknown_tag", "unreferenced_array", "deep", "bad_schedule", "bad_dict"]


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_files_raise_a_clear_value_error(kind, tmp_path):
    path = tmp_path / "ckpt.npz"
    malformed(kind, path)
    with pytest.raises(ValueError, match=r"ckpt\.npz'? (is not a valid etakit checkpoint|is an etakit checkpoint "
                                         r"of version 99)"):
        etakit.load(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        etakit.load(tmp_path / "nope.npz")


def test_the_zip_is_a_plain_npz(tmp_path):
    path = tmp_path / "ckpt.npz"
    etakit.save(path, {"w": np.ones(3)})
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == [checkpoint.STRUCTURE + ".npy", "a0.npy"]
