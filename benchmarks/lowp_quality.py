"""Training quality with low-precision optimizer state: etakit's demo with AdamW state in float32,
bfloat16 (nearest and stochastic rounding) and 8-bit blockwise.

Each seed runs lr_find once (float32 state) and then trains the demo's MLP (64-128-10 on
scikit-learn's digits, AdamW + warmup-cosine, 40 epochs) from the same initial weights and the
same minibatches with each state format; it reports the final training loss and the held-out
accuracy.  "int8, all tensors" sets min_8bit_size=1 so that every tensor, biases included, keeps
8-bit state (by default tensors under 4096 elements stay float32, as in bitsandbytes).

``--bf16-params``: the parameters themselves in bfloat16 (ml_dtypes; the forward and backward
passes in float32 from them, the gradients cast to bfloat16), written back with Kahan compensation
(the default), to nearest or stochastically, against float32 parameters.

    python benchmarks/lowp_quality.py [--seeds 5] [--epochs 40] [--markdown] [--bf16-params]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

import etakit
from etakit import demo
from etakit import schedules as S

FORMATS = [
    ("float32", {}),
    ("bfloat16, nearest", {"state_dtype": "bfloat16"}),
    ("bfloat16, stochastic", {"state_dtype": "bfloat16", "stochastic_rounding": True}),
    ("int8 (tensors >= 4096)", {"state_dtype": "int8"}),
    ("int8, all tensors", {"state_dtype": "int8", "min_8bit_size": 1}),
]
PARAM_FORMATS = [
    ("float32 parameters", None),
    ("bfloat16 parameters, Kahan", {}),
    ("bfloat16 parameters, nearest", {"kahan": False}),
    ("bfloat16 parameters, stochastic", {"stochastic_rounding": True}),
    ("bfloat16 parameters and state, Kahan", {"state_dtype": "bfloat16"}),
]


def _train_bf16(net, opt_of, Xtr, ytr, Xte, yte, rng, batch, epochs):
    """demo._train for bfloat16 parameters: float32 passes from their values, bfloat16 gradients."""
    import ml_dtypes
    bf = ml_dtypes.bfloat16
    params = [p.astype(bf) for p in net.params]
    opt = opt_of(params)
    loss = 0.0
    for _ in range(epochs):
        losses = []
        for idx in demo._batches(rng, len(ytr), batch):
            loss, grads = net.loss_and_grad([p.astype(np.float32) for p in params], Xtr[idx], ytr[idx])
            opt.step([g.astype(bf) for g in grads])
            losses.append(loss)
        loss = float(np.mean(losses))
    for p, q in zip(net.params, params):
        np.copyto(p, q.astype(np.float32))
    return loss, net.accuracy(Xte, yte)


def one_seed(seed, epochs, batch=64, hidden=128, bf16_params=False):
    Xtr, ytr, Xte, yte = demo.load_digits_split(seed)
    steps_per_epoch = len(ytr) // batch
    total = epochs * steps_per_epoch
    net = demo.MLP([Xtr.shape[1], hidden, 10], seed=seed)
    with tempfile.TemporaryDirectory() as out:
        found, lr, _ = demo._lr_find_path(net, Xtr, ytr, np.random.default_rng(seed), batch, total, False, False,
                                          out, lambda *a: None)
    start = [p.copy() for p in net.params]
    rows = []
    for name, kw in PARAM_FORMATS if bf16_params else FORMATS:
        for p, p0 in zip(net.params, start):
            np.copyto(p, p0)
        schedule = S.warmup_cosine(lr, warmup_steps=max(1, total // 20), total_steps=total, min_lr=lr / 100)
        if bf16_params and kw is not None:
            loss, acc = _train_bf16(net, lambda ps, s=schedule, k=kw: etakit.AdamW(ps, lr=s, weight_decay=1e-4, **k),
                                    Xtr, ytr, Xte, yte, np.random.default_rng(seed + 1000), batch, epochs)
            rows.append((name, loss, acc))
            continue
        opt = etakit.AdamW(net.params, lr=schedule, weight_decay=1e-4, **(kw or {}))
        history, _, _ = demo._train(net, opt, Xtr, ytr, Xte, yte, np.random.default_rng(seed + 1000), batch,
                                    epochs, False, lambda: 0.0)
        rows.append((name, history["train_loss"][-1], history["test_acc"][-1]))
    return lr, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--bf16-params", action="store_true")
    args = ap.parse_args(argv)
    formats = PARAM_FORMATS if args.bf16_params else FORMATS
    results = {name: [] for name, _ in formats}
    for seed in range(args.seeds):
        lr, rows = one_seed(seed, args.epochs, bf16_params=args.bf16_params)
        for name, loss, acc in rows:
            results[name].append((loss, acc))
        if not args.markdown:
            print(f"seed {seed}: lr {lr:.3g}; " + "; ".join(f"{n}: loss {l:.4f} acc {a:.2%}" for n, l, a in rows),
                  file=sys.stderr)
    base_acc = np.array([a for _, a in results[formats[0][0]]])
    what = "parameters" if args.bf16_params else "state"
    print(f"| AdamW {what} | final training loss (mean) | held-out accuracy (mean) | accuracy − float32, "
          "mean (worst seed) |")
    print("|---|---:|---:|---:|")
    for name, _ in formats:
        loss = np.array([l for l, _ in results[name]])
        acc = np.array([a for _, a in results[name]])
        diff = (acc - base_acc) * 100
        print(f"| {name} | {loss.mean():.4f} | {acc.mean():.2%} | {diff.mean():+.2f} ({diff.min():+.2f}) points |")
    print(f"\n({args.seeds} seeds, {args.epochs} epochs, demo MLP 64-128-10 on digits; etakit from "
          f"{os.path.dirname(etakit.__file__)})")


if __name__ == "__main__":
    main()
