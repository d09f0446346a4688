"""etakit.torch with low-precision state (state_dtype="bfloat16" / "int8"): bit for bit the numpy
optimizers' steps, PyTorch's and bitsandbytes' state layouts, checkpoints that convert and that move
to and from bitsandbytes, and refusals that change nothing."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import etakit  # noqa: E402
import etakit.torch as et  # noqa: E402
from etakit import reference as R  # noqa: E402
from etakit.errors import StateError  # noqa: E402

RULES = {   # name: keyword arguments (the same for the numpy and the torch class)
    "SGD": dict(lr=0.1, momentum=0.9, nesterov=True),
    "Adam": dict(lr=1e-2, weight_decay=0.1),
    "AdamW": dict(lr=1e-2, amsgrad=True),
    "Lion": dict(lr=1e-3, weight_decay=0.1),
    "RMSprop": dict(lr=1e-3, momentum=0.5),
    "Adagrad": dict(lr=1e-2, initial_accumulator_value=0.1),
}
SIZES = [5000, 257, 4099, 70001]


def _grads(rng, sizes, steps):
    return [[(rng.standard_normal(n) * (1e-3 if k % 2 else 1.0)).astype(np.float32) for n in sizes]
            for k in range(steps)]


def _numpy_form(opt, p):
    """A torch parameter's state in the numpy optimizers' form (codes under the slot's name)."""
    return opt._arrays(opt.state[p], "test")


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("state_dtype,sr", [("bfloat16", False), ("bfloat16", True), ("int8", False)])
def test_bit_for_bit_the_numpy_optimizer(name, state_dtype, sr):
    """Two groups, a tensor below min_8bit_size (float32 state under int8), 4 steps."""
    kw = RULES[name]
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    grads = _grads(rng, SIZES, 4)
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": kw["lr"] / 2}]  # noqa: E731
    mine = [w.copy() for w in ws]
    nopt = getattr(etakit, name)(groups(mine), state_dtype=state_dtype, stochastic_rounding=sr, **kw)
    ts = [torch.from_numpy(w.copy()).requires_grad_() for w in ws]
    topt = getattr(et, name)(groups(ts), state_dtype=state_dtype, stochastic_rounding=sr, **kw)
    for g in grads:
        nopt.step(g)
        for t, gi in zip(ts, g):
            t.grad = torch.from_numpy(gi.copy())
        topt.step()
    nsd = nopt.state_dict()["state"]
    for i, (t, w) in enumerate(zip(ts, mine)):
        np.testing.assert_array_equal(t.detach().numpy(), w)
        got = _numpy_form(topt, t)
        assert set(got) == {k for k in nsd[i] if k != "step"}
        for k, a in got.items():
            np.testing.assert_array_equal(a.view(np.uint8), np.asarray(nsd[i][k]).view(np.uint8), err_msg=k)


def test_state_layouts():
    """bfloat16: torch.bfloat16 tensors under torch.optim's names; 8-bit: bitsandbytes' names and
    maps; a tensor below min_8bit_size keeps float32 state."""
    big, small = torch.nn.Parameter(torch.ones(5000)), torch.nn.Parameter(torch.ones(100))
    opt = et.Adam([big, small], lr=1e-2, state_dtype="int8")
    big.grad, small.grad = torch.ones(5000), torch.ones(100)
    opt.step()
    st = opt.state[big]
    assert {k: (v.dtype, tuple(v.shape)) for k, v in st.items() if k != "step"} == {
        "state1": (torch.uint8, (5000,)), "absmax1": (torch.float32, (20,)), "qmap1": (torch.float32, (256,)),
        "state2": (torch.uint8, (5000,)), "absmax2": (torch.float32, (20,)), "qmap2": (torch.float32, (256,))}
    assert torch.equal(st["qmap1"], torch.from_numpy(R.dynamic_map(True)))
    assert torch.equal(st["qmap2"], torch.from_numpy(R.dynamic_map(False)))
    assert opt.state[small]["exp_avg"].dtype == torch.float32
    assert opt.param_groups[0]["state_dtype"] == "int8"
    bf = et.AdamW([big], lr=1e-2, state_dtype="bfloat16")
    bf.step()
    assert {k: v.dtype for k, v in bf.state[big].items()} == {"step": torch.float32, "exp_avg": torch.bfloat16,
                                                             "exp_avg_sq": torch.bfloat16}
    assert "state_dtype" not in et.Adam([big]).param_groups[0]       # float32 groups stay torch.optim's


def _trained(name="Adam", state_dtype="int8", n=5000, steps=3, **kw):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(n))
    opt = getattr(et, name)([w], lr=1e-2, state_dtype=state_dtype, **kw)
    for _ in range(steps):
        w.grad = torch.randn(n)
        opt.step()
    return w, opt


@pytest.mark.parametrize("src,dst", [("int8", "float32"), ("float32", "int8"), ("bfloat16", "float32"),
                                     ("float32", "bfloat16"), ("int8", "bfloat16")])
def test_checkpoints_convert_between_formats(src, dst, tmp_path):
    """A checkpoint (through torch.save) loads into a group of another state_dtype: the state is the
    checkpoint's, decoded to float32 and encoded as the group keeps it, and it steps."""
    w, opt = _trained(state_dtype=src)
    torch.save(opt.state_dict(), tmp_path / "c.pt")
    sd = torch.load(tmp_path / "c.pt")
    sd["param_groups"][0]["state_dtype"] = dst
    other_w = torch.nn.Parameter(w.detach().clone())
    other = et.Adam([other_w], lr=1e-2, state_dtype=dst)
    other.load_state_dict(sd)
    was, got = _numpy_form(opt, w), _numpy_form(other, other_w)
    for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        a = was[name]
        full = (R.q8_dequantize(a, was[name + "_absmax"], signed) if a.dtype == np.uint8 else
                R.bf16_decode(a) if a.dtype == np.uint16 else a)
        expect = (R.q8_quantize(full, signed)[0] if dst == "int8" else
                  R.bf16_round(full) if dst == "bfloat16" else full)
        np.testing.assert_array_equal(got[name], expect, err_msg=name)
    other_w.grad = torch.ones_like(other_w)
    other.step()


def test_bfloat16_state_through_a_float32_optimizer_and_back_is_exact():
    w, opt = _trained(state_dtype="bfloat16")
    sd = opt.state_dict()
    f32_w = torch.nn.Parameter(w.detach().clone())
    f32 = et.Adam([f32_w], lr=1e-2)
    f32.load_state_dict({**sd, "param_groups": [{**g, "state_dtype": "float32"} for g in sd["param_groups"]]})
    assert f32.state[f32_w]["exp_avg"].dtype == torch.float32
    back_w = torch.nn.Parameter(w.detach().clone())
    back = et.Adam([back_w], lr=1e-2, state_dtype="bfloat16")
    plain = f32.state_dict()       # a float32 checkpoint without the key: the group's state_dtype stays
    plain["param_groups"] = [{k: v for k, v in g.items() if k != "state_dtype"} for g in plain["param_groups"]]
    back.load_state_dict(plain)
    for k in ("exp_avg", "exp_avg_sq"):
        assert back.state[back_w][k].dtype == torch.bfloat16
        assert torch.equal(back.state[back_w][k].view(torch.int16), opt.state[w][k].view(torch.int16)), k


def test_a_torch_optim_checkpoint_loads_into_an_int8_optimizer():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5000))
    ref = torch.optim.Adam([w], lr=1e-2)
    w.grad = torch.randn(5000)
    ref.step()
    mine = torch.nn.Parameter(w.detach().clone())
    opt = et.Adam([mine], lr=1e-2, state_dtype="int8")
    opt.load_state_dict(ref.state_dict())            # its groups have no state_dtype: the optimizer's stays
    assert opt.param_groups[0]["state_dtype"] == "int8"
    codes, absmax = R.q8_quantize(ref.state[w]["exp_avg"].numpy(), True)
    np.testing.assert_array_equal(opt.state[mine]["state1"].numpy(), codes)
    np.testing.assert_array_equal(opt.state[mine]["absmax1"].numpy(), absmax)


bnb = None


def _bnb():
    pytest.importorskip("bitsandbytes")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes
    return bitsandbytes


def test_bitsandbytes_checkpoints_load_both_ways():
    """An Adam8bit checkpoint (its 8-bit tensors nested as its state_dict nests them, its groups
    without amsgrad/maximize) loads as it is, codes and scales unchanged, and etakit's loads into
    Adam8bit: the next step agrees with the optimizer it came from."""
    bitsandbytes = _bnb()
    torch.manual_seed(0)
    p0, gs = torch.randn(5000), [torch.randn(5000) for _ in range(4)]
    wb = torch.nn.Parameter(p0.clone())
    ob = bitsandbytes.optim.Adam8bit([wb], lr=1e-2)
    we = torch.nn.Parameter(p0.clone())
    oe = et.Adam([we], lr=1e-2, state_dtype="int8")
    for g in gs[:3]:
        wb.grad, we.grad = g.clone(), g.clone()
        ob.step()
        oe.step()
    sdb, sde = ob.state_dict(), oe.state_dict()
    w2 = torch.nn.Parameter(wb.detach().clone())
    o2 = et.Adam([w2], lr=1e-2, state_dtype="int8")
    o2.load_state_dict(sdb)
    for k in ("state1", "state2", "absmax1", "absmax2"):
        assert torch.equal(o2.state[w2][k], ob.state[wb][k]), k
    w3 = torch.nn.Parameter(we.detach().clone())
    o3 = bitsandbytes.optim.Adam8bit([w3], lr=1e-2)
    o3.load_state_dict(sde)
    for k in ("state1", "state2", "absmax1", "absmax2"):
        assert torch.equal(o3.state[w3][k], oe.state[we][k]), k
    w3.grad, we.grad = gs[3].clone(), gs[3].clone()
    o3.step()
    oe.step()
    # the same state, each optimizer's own rounding of the new moments
    assert (w3 - we).abs().max().item() < 1e-5


def test_trajectory_close_to_bitsandbytes_adam8bit():
    """Same 8-bit format and update: etakit's int8 Adam and bitsandbytes' Adam8bit stay within a few
    lr of each other over 20 steps, and etakit's (nearest codes) is at least as close to float32."""
    bitsandbytes = _bnb()
    torch.manual_seed(1)
    n = 8192
    p0 = torch.randn(n)
    ws = {k: torch.nn.Parameter(p0.clone()) for k in ("bnb", "etakit", "f32")}
    opts = {"bnb": bitsandbytes.optim.Adam8bit([ws["bnb"]], lr=1e-3),
            "etakit": et.Adam([ws["etakit"]], lr=1e-3, state_dtype="int8"),
            "f32": torch.optim.Adam([ws["f32"]], lr=1e-3)}
    for _ in range(20):
        g = torch.randn(n)
        for k, o in opts.items():
            ws[k].grad = g.clone()
            o.step()
    d_be = (ws["bnb"] - ws["etakit"]).abs().max().item()
    d_ef = (ws["etakit"] - ws["f32"]).abs().max().item()
    d_bf = (ws["bnb"] - ws["f32"]).abs().max().item()
    assert d_be < 20 * 1e-3 and d_ef <= d_bf * 1.05, (d_be, d_ef, d_bf)


def test_a_map_other_than_etakits_is_decoded_with_it():
    """bitsandbytes' RMSprop8bit keeps the (non-negative) square average in the signed map: loaded,
    it is decoded with that map and re-encoded in etakit's unsigned one."""
    w, opt = _trained("RMSprop")
    sd = opt.state_dict()
    st = sd["state"][0]
    signed_map = torch.from_numpy(R.dynamic_map(True))
    values = R.q8_dequantize(st["state1"].numpy(), st["absmax1"].numpy(), False)
    codes, absmax = R.q8_quantize(values, True)          # as if saved with the signed map
    st["state1"], st["absmax1"], st["qmap1"] = torch.from_numpy(codes), torch.from_numpy(absmax), signed_map
    other_w = torch.nn.Parameter(w.detach().clone())
    other = et.RMSprop([other_w], lr=1e-2, state_dtype="int8")
    other.load_state_dict(sd)
    full = R.q8_dequantize(codes, absmax, True)
    expect = R.q8_quantize(full, False)
    np.testing.assert_array_equal(other.state[other_w]["state1"].numpy(), expect[0])
    assert torch.equal(other.state[other_w]["qmap1"], torch.from_numpy(R.dynamic_map(False)))


def test_changing_state_dtype_converts_at_the_next_step():
    w, opt = _trained(state_dtype="float32")
    m = opt.state[w]["exp_avg"].clone()
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    w.grad = torch.zeros_like(w)
    opt.step()
    assert opt.state[w]["exp_avg"].dtype == torch.bfloat16 and "state1" not in opt.state[w]
    mb = R.bf16_decode(R.bf16_round(m.numpy()))       # converted first, then the step (a zero gradient)
    omb1 = np.float32(1.0 - 0.9)
    np.testing.assert_array_equal(opt.state[w]["exp_avg"].view(torch.int16).numpy().view(np.uint16),
                                  R.bf16_round(mb + omb1 * (np.float32(0) - mb)))


def _tamper(st, **changes):
    return {**st, **changes}


@pytest.mark.parametrize("change,exc,match", [
    (lambda st: _tamper(st, absmax1=-st["absmax1"] - 1), StateError, "negative scale"),
    (lambda st: _tamper(st, absmax1=st["absmax1"][:-1]), StateError, "one scale per 256"),
    (lambda st: _tamper(st, state1=st["state1"][:-1]), StateError, "uint8 codes of shape"),
    (lambda st: _tamper(st, state1=st["state1"].to(torch.int16)), StateError, "expected the state of shape|uint8"),
    (lambda st: _tamper(st, qmap1=st["qmap1"].flip(0)), StateError, "not an 8-bit map"),
    (lambda st: _tamper(st, qmap1=st["qmap1"][:10]), StateError, "map of 256"),
    (lambda st: {k: v for k, v in st.items() if k != "absmax2"}, StateError, "without their scales"),
    (lambda st: _tamper(st, exp_avg=torch.zeros(5000)), StateError, "twice"),
    (lambda st: _tamper(st, state3=st["state1"]), ValueError, "unknown entry 'state3'|absmax3"),
    (lambda st: _tamper(st, exp_avg_sq=torch.zeros(5000)) if False else
     {**{k: v for k, v in st.items() if k not in ("state2", "absmax2", "qmap2")}, "exp_avg_sq": torch.zeros(5000)},
     StateError, "mixes state formats"),
])
def test_tampered_8bit_checkpoints_are_refused_and_nothing_changes(change, exc, match):
    w, opt = _trained()
    sd = opt.state_dict()
    sd["state"][0] = change(sd["state"][0])
    other_w = torch.nn.Parameter(torch.zeros(5000))
    other = et.Adam([other_w], lr=1e-2, state_dtype="int8")
    other_w.grad = torch.ones(5000)
    other.step()
    before = {k: v.clone() for k, v in other.state[other_w].items()}
    with pytest.raises(exc, match=match):
        other.load_state_dict(sd)
    assert set(other.state[other_w]) == set(before)
    assert all(torch.equal(other.state[other_w][k], v) for k, v in before.items())


def test_refusals():
    with pytest.raises(TypeError, match="needs float32"):
        et.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], state_dtype="int8")
    with pytest.raises(ValueError, match="cannot keep bfloat16 state"):
        et.LAMB([torch.nn.Parameter(torch.zeros(3))], state_dtype="bfloat16")
    with pytest.raises(ValueError, match="centered RMSprop cannot keep int8"):
        et.RMSprop([torch.nn.Parameter(torch.zeros(3))], centered=True, state_dtype="int8")
    with pytest.raises(ValueError, match="stochastic_rounding applies"):
        et.Adam([torch.nn.Parameter(torch.zeros(3))], state_dtype="int8", stochastic_rounding=True)
    p = torch.nn.Parameter(torch.ones(3))
    opt = et.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    before = p.detach().clone()
    opt.param_groups[0]["state_dtype"] = "bf16"
    with pytest.raises(ValueError, match="Invalid state_dtype"):
        opt.step()
    assert torch.equal(p, before) and opt.state[p]["exp_avg"].dtype == torch.float32


def test_sr_seed_as_the_numpy_optimizer():
    """A parameter's stream is its state_dict index under its group's sr_seed: a parameter without a
    gradient at a step does not shift the others'."""
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal(n).astype(np.float32) for n in (5000, 300, 7000)]
    kw = dict(lr=1e-2, state_dtype="bfloat16", stochastic_rounding=True)
    nopt_ws = [w.copy() for w in ws]
    nopt = etakit.Adam([{"params": nopt_ws[:2], "sr_seed": 11}, {"params": nopt_ws[2:], "sr_seed": 12}], **kw)
    ts = [torch.from_numpy(w.copy()).requires_grad_() for w in ws]
    topt = et.Adam([{"params": ts[:2], "sr_seed": 11}, {"params": ts[2:], "sr_seed": 12}], **kw)
    for _ in range(3):
        g = [rng.standard_normal(w.size).astype(np.float32) for w in ws]
        nopt.step(g)
        for t, gi in zip(ts, g):
            t.grad = torch.from_numpy(gi.copy())
        topt.step()
    for i, t in enumerate(ts):
        np.testing.assert_array_equal(t.detach().numpy(), nopt_ws[i])
        np.testing.assert_array_equal(_numpy_form(topt, t)["exp_avg"], nopt.state_dict()["state"][i]["exp_avg"]
                                      .view(np.uint16))
    # one more step without a gradient for the second parameter: the third draws the same bits
    g = [torch.from_numpy(rng.standard_normal(w.size).astype(np.float32)) for w in ws]
    states = []
    for skip in (False, True):
        tw = [t.detach().clone().requires_grad_() for t in ts]
        o = et.Adam([{"params": tw[:2], "sr_seed": 11}, {"params": tw[2:], "sr_seed": 12}], **kw)
        o.load_state_dict(topt.state_dict())
        for i, t in enumerate(tw):
            t.grad = None if skip and i == 1 else g[i].clone()
        o.step()
        states.append(o.state[tw[2]]["exp_avg"].view(torch.int16).clone())
    assert torch.equal(states[0], states[1])
