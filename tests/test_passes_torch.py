"""etakit.torch: the fused loop passes (clipping, non-finite policy, EMA) and torch.amp.GradScaler."""
import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import etakit.torch as et  # noqa: E402
from etakit._passes import ema_decay_at  # noqa: E402


def _model(seed, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(dtype)


def _data(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g, dtype=dtype), torch.randn(32, 3, generator=g, dtype=dtype)


@pytest.mark.parametrize("ours,theirs", [
    (lambda p: et.AdamW(p, lr=1e-2, weight_decay=0.1, global_clipnorm=0.5),
     lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, fused=True)),
    (lambda p: et.SGD(p, lr=0.05, momentum=0.9, global_clipnorm=0.5, norm_type=math.inf),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda p: et.Adagrad(p, lr=0.05, global_clipnorm=0.5),
     lambda p: torch.optim.Adagrad(p, lr=0.05)),
])
def test_clipping_matches_clip_grad_norm_then_the_torch_step(ours, theirs):
    a, b = _model(0), _model(0)
    oa, ob = ours(list(a.parameters())), theirs(list(b.parameters()))
    x, y = _data(1)
    for _ in range(15):
        for m in (a, b):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x) * 5, y).backward()
        oa.step()
        norm = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5, norm_type=oa.norm_type)
        ob.step()
        assert oa.last_grad_norm == pytest.approx(float(norm), rel=1e-12)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_grad_scaler_matches_pytorch_fused_adamw_including_a_skipped_step():
    a, b = _model(2), _model(2)
    oa = et.AdamW(a.parameters(), lr=1e-2)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, fused=True)
    sa = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=3)
    sb = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=3)
    x, y = _data(3)
    for step in range(12):
        for m, s, o in ((a, sa, oa), (b, sb, ob)):
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            if step == 5:
                loss = loss * float("inf")          # an overflow: both skip, both scalers back off
            s.scale(loss).backward()
            s.step(o)
            s.update()
        assert sa.get_scale() == sb.get_scale()
    assert oa.skipped_steps == 1 and oa.step_count == 11
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    for p, q in zip(a.parameters(), b.parameters()):
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(oa.state[p][k], ob.state[q][k], rtol=1e-12, atol=1e-14)
        assert float(oa.state[p]["step"]) == float(ob.state[q]["step"]) == 11


def test_grad_scaler_with_unscale_and_clipping_before_the_step():
    a, b = _model(4), _model(4)
    oa = et.AdamW(a.parameters(), lr=1e-2)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, fused=True)
    sa, sb = torch.amp.GradScaler("cpu", init_scale=1024.0), torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = _data(5)
    for _ in range(6):
        for m, s, o in ((a, sa, oa), (b, sb, ob)):
            o.zero_grad()
            s.scale(torch.nn.functional.mse_loss(m(x) * 4, y)).backward()
            s.unscale_(o)
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.3)
            s.step(o)
            s.update()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_nonfinite_gradient_writes_nothing(policy):
    m = _model(6, torch.float32)
    opt = et.Adam(m.parameters(), lr=1e-2, nonfinite=policy, ema_decay=0.9)
    x, y = _data(7, torch.float32)
    torch.nn.functional.mse_loss(m(x), y).backward()
    opt.step()
    before = [p.detach().clone() for p in m.parameters()]
    state = {k: v.clone() for p in m.parameters() for k, v in opt.state[p].items()}
    ema = [e.clone() for e in opt.ema]
    list(m.parameters())[2].grad[1, 3] = float("nan")
    if policy == "raise":
        with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[2\]"):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before))
    assert all(torch.equal(e, f) for e, f in zip(opt.ema, ema))
    assert {k: v for p in m.parameters() for k, v in opt.state[p].items()}.keys() == state.keys()
    assert opt.step_count == 1


def test_ema_follows_model_ema_v3_and_swaps():
    m = _model(8)
    opt = et.SGD(m.parameters(), lr=0.05, momentum=0.9, ema_decay=0.99, ema_warmup=True)
    ema = [p.detach().clone() for p in m.parameters()]
    x, y = _data(9)
    for step in range(1, 25):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()
        w = 1 - ema_decay_at(step, 0.99, warmup=True)
        ema = [e.lerp(p.detach(), w) for e, p in zip(ema, m.parameters())]
    for e, f in zip(opt.ema, ema):
        torch.testing.assert_close(e, f, rtol=1e-12, atol=1e-14)
    own = [p.detach().clone() for p in m.parameters()]
    with opt.ema_weights():
        assert all(torch.equal(p, e) for p, e in zip(m.parameters(), ema)) or \
            all(torch.allclose(p, e, rtol=1e-12) for p, e in zip(m.parameters(), ema))
        with pytest.raises(RuntimeError, match="swap"):
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), own))


def test_state_dict_with_ema_resumes_and_loads_into_torch_adamw():
    a, b = _model(10), _model(10)
    oa = et.AdamW(a.parameters(), lr=1e-2, global_clipnorm=1.0, ema_decay=0.9)
    x, y = _data(11)
    for _ in range(3):
        oa.zero_grad()
        torch.nn.functional.mse_loss(a(x), y).backward()
        oa.step()
    sd = copy.deepcopy(oa.state_dict())      # (torch's load_state_dict keeps the tensors it is given)
    b.load_state_dict(a.state_dict())
    ob = et.AdamW(b.parameters(), lr=1e-2, global_clipnorm=1.0, ema_decay=0.9)
    ob.load_state_dict(sd)
    for o, m in ((oa, a), (ob, b)):
        o.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    for e, f in zip(oa.ema, ob.ema):
        assert torch.equal(e, f)
    plain = torch.optim.AdamW(_model(10).parameters(), lr=1e-2)
    plain.load_state_dict({k: v for k, v in sd.items() if k != "loop"})
    bad = dict(sd, loop={"skipped_steps": 0, "ema": {0: torch.zeros(2)}})
    with pytest.raises(ValueError, match=r"loop\['ema'\]\[0\]"):
        ob.load_state_dict(bad)


def test_grad_scaler_skip_with_schedule_free_matches_the_reference():
    schedulefree = pytest.importorskip("schedulefree")
    a, b = _model(12), _model(12)
    oa = et.ScheduleFreeAdamW(a.parameters(), lr=1e-2)
    ob = schedulefree.AdamWScheduleFree(b.parameters(), lr=1e-2)
    oa.train()
    ob.train()
    sa, sb = torch.amp.GradScaler("cpu", init_scale=256.0), torch.amp.GradScaler("cpu", init_scale=256.0)
    x, y = _data(13)
    for step in range(6):
        for m, s, o in ((a, sa, oa), (b, sb, ob)):
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            s.scale(loss * (float("inf") if step == 2 else 1.0)).backward()
            s.step(o)
            s.update()
    assert oa.param_groups[0]["k"] == ob.param_groups[0]["k"] == 5
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_lookahead_does_not_count_a_step_the_inner_optimizer_skipped():
    def run(bad):
        w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        la = et.Lookahead(et.SGD([w], lr=1.0, nonfinite="skip"), k=2, alpha=0.5)
        for g in ([1.0, 1.0], [float("nan"), 1.0], [1.0, 1.0]) if bad else ([1.0, 1.0], [1.0, 1.0]):
            w.grad = torch.tensor(g, dtype=torch.float64)
            la.step()
        return w.detach().clone()
    assert torch.equal(run(False), run(True))
