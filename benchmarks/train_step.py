"""A whole training step of the confidence-aware model against the straightforward reference.

Ours: exactly the step of cat_ray/train_loop.py (TemporalModel with batched predictors and the
folded variance estimator, fast exact joints, Eq. 20 loss, Adam). Reference: benchmarks/reference.py
(one nn.Sequential per offset in a Python loop, explicit W0/W1, smplx's mesh for every body's joints,
float32). Same sizes, same loss, same optimiser. Goal (issue 7, item 3): >= 3x the iterations per
second of the reference on this CPU. Before timing, both compute the loss of one batch with the
same weights (dropout off): the sanity line prints both values.

    python benchmarks/train_step.py [--sizes laptop,paper] [--device cuda] [--precision bf16] [--compile]

laptop = configs/laptop.yaml (16 windows x 16 frames, 256-d features, hidden 256);
paper = the paper's defaults (32 x 16, 2048-d features, predictor 2048, regressor 1024).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace

import torch

from common import ROOT, add_common_args, goal_line, report, setup, speedup, time_interleaved

from benchmarks.reference import ReferenceModel, reference_loss
from cat_ray.body.model import BodyModel, resolve_body_dir
from cat_ray.config import Config, load_config
from cat_ray.data.types import Batch
from cat_ray.losses import make_targets, total_loss
from cat_ray.models.model import TemporalModel, build_model
from cat_ray.models.regressor import MeanParams

SIZES = {"laptop": lambda: load_config(ROOT / "configs" / "laptop.yaml"), "paper": Config}


def random_batch(cfg: Config, device: torch.device, seed: int = 0) -> Batch:
    """A training batch in the real format, every ground-truth indicator on (all loss terms computed)."""
    g = torch.Generator().manual_seed(seed)
    B, T, C = cfg.train.batch_size, cfg.data.seq_len, cfg.data.feature_dim
    ones = torch.ones(B, dtype=torch.bool)
    batch = Batch(torch.randn(B, T, C, generator=g), 0.3 * torch.randn(B, T, 72, generator=g),
                  torch.randn(B, T, 10, generator=g), 0.3 * torch.randn(B, T, 14, 3, generator=g),
                  0.3 * torch.randn(B, T, 14, 2, generator=g), torch.zeros(B, T, dtype=torch.bool), ones, ones, ones)
    return Batch(**{k: v.to(device) for k, v in batch.__dict__.items()})


def training_step(model: TemporalModel, body: BodyModel, cfg: Config, device: torch.device,
                  precision: str = "fp32", compile_model: bool = False) -> Callable[[Batch], None]:
    """One optimisation step on a batch, as the inner loop of ``train_loop.train`` (Adam, Eq. 20)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    net = torch.compile(model) if compile_model else model  # as train.compile: the warm-up steps compile

    def step(batch: Batch) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(batch.features)
        terms = total_loss(out, make_targets(batch, body, False), body, cfg.loss, cfg.model.edge_policy)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    return step


def run(name: str, cfg: Config, body: BodyModel, device: torch.device, args: argparse.Namespace) -> float:
    m = cfg.model
    print(f"\n[{name}] batch {cfg.train.batch_size} x {cfg.data.seq_len}, offsets {m.offsets}, feature "
          f"{cfg.data.feature_dim}, predictor_hidden {m.predictor_hidden}, variance_hidden {m.variance_hidden}, "
          f"regressor_hidden {m.regressor_hidden}; ours in {args.precision}{', compiled' if args.compile else ''}, "
          "reference in fp32", flush=True)
    torch.manual_seed(0)
    mean = MeanParams.neutral()
    model = build_model(m, cfg.data.feature_dim, mean).to(device)
    reference = ReferenceModel(m.offsets, cfg.data.feature_dim, m.predictor_hidden, m.dropout, m.variance_hidden,
                               m.regressor_hidden, m.regressor_iterations, mean, m.regressor_dropout).to(device)
    reference.load_from(model)
    batch = random_batch(cfg, device)

    with torch.no_grad():  # sanity: the same function for the same weights
        model.eval(), reference.eval()
        ours = total_loss(model(batch.features), make_targets(batch, body, False), body, cfg.loss,
                          m.edge_policy).total.item()
        theirs = reference_loss(reference, batch, body, cfg.loss).item()
        if args.precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(batch.features)
            ours_bf16 = total_loss(out, make_targets(batch, body, False), body, cfg.loss, m.edge_policy).total.item()
        model.train(), reference.train()
    print(f"sanity: loss with the same weights, dropout off: ours {ours:.6f}, reference {theirs:.6f}, "
          f"relative difference {abs(ours - theirs) / abs(theirs):.1e}")
    if args.precision == "bf16":
        print(f"sanity: ours under bf16 autocast {ours_bf16:.6f}, relative difference to the fp32 reference "
              f"{abs(ours_bf16 - theirs) / abs(theirs):.1e}")

    our_step = training_step(model, body, cfg, device, args.precision, args.compile)
    opt_ref = torch.optim.Adam(reference.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    def reference_step():
        loss = reference_loss(reference, batch, body, cfg.loss)
        opt_ref.zero_grad(set_to_none=True)
        loss.backward()
        opt_ref.step()

    candidates = {"reference step": reference_step, "cat_ray step": lambda: our_step(batch)}
    if args.precision == "bf16":  # the same model in fp32 as well, so that bf16's own gain is measured in this run
        fp32_model = build_model(m, cfg.data.feature_dim, mean).to(device)
        fp32_model.load_state_dict(model.state_dict())
        fp32_step = training_step(fp32_model, body, cfg, device, "fp32", args.compile)
        candidates["cat_ray step, fp32"] = lambda: fp32_step(batch)
    repeats = args.repeats if name == "laptop" else max(2, args.repeats // 2)
    times = time_interleaved(candidates, repeats, device, warmup=1)
    report(times)
    ratio = speedup(times, "reference step", "cat_ray step")
    print(f"iterations/s: reference {1 / min(times['reference step']):.2f}, cat_ray {1 / min(times['cat_ray step']):.2f}")
    print(goal_line(f"{name}: training-step speed-up over the reference", ratio, ">= 3x", ratio >= 3))
    if "cat_ray step, fp32" in times:
        gain = speedup(times, "cat_ray step, fp32", "cat_ray step")
        print(goal_line(f"{name}: cat_ray bf16 step speed-up over cat_ray fp32", gain, None))
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="laptop,paper", help="comma-separated: laptop, paper (default both)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="our step's autocast precision (default fp32; the reference stays fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile our model (train.compile); the warm-up step compiles, untimed")
    parser.add_argument("--body-dir", default="", help="body model folder (default: the stand-in under the cache)")
    add_common_args(parser, repeats=6)
    args = parser.parse_args()
    device = setup(args)
    body = BodyModel.from_dir(resolve_body_dir(args.body_dir)).to(device)
    for name in args.sizes.split(","):
        if name not in SIZES:
            raise SystemExit(f"--sizes: unknown {name!r}; valid: {', '.join(SIZES)}")
        cfg = SIZES[name]()
        cfg = replace(cfg, train=replace(cfg.train, device=device.type))
        run(name, cfg, body, device, args)


if __name__ == "__main__":
    main()
