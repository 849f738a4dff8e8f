"""In-place or not: the ReLU after each instance normalisation of the study's network.

``skvaeinv._networks`` builds that ReLU not in place (``_NORM_RELU``): instance_norm
returns a view, and an in-place op on a view makes autograd rebuild the whole base in
the backward pass. This script measures what that choice is worth, side by side in one
process, by switching the ReLU modules' ``inplace`` flag of the committed reference
prior's networks. The runs of the two settings alternate, and the medians of
``--pairs`` pairs are reported:

* the decoder's forward pass + gradient with respect to its input, 25 starts, one
  thread (what an inversion step costs);
* ``LatentInverter.fit``: 25 starts x 50 iterations of the linear case, one thread;
* a float32 training step of the VAE (loss, backward), 100 crops, all threads.

It also checks that the two settings give the same gradients and the same models.

Usage::

    python benchmarks/relu_inplace.py            # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, md_table, slowness, survey, write_results  # noqa: E402
from sgd_speed import load_prior, truth_model  # noqa: E402

from skvaeinv import LatentInverter  # noqa: E402
from skvaeinv.forward import StraightRay  # noqa: E402
from skvaeinv.runtime import tune_allocator  # noqa: E402


def norm_relus(*modules: torch.nn.Module) -> list[torch.nn.ReLU]:
    """The ReLU modules that follow an InstanceNorm2d in ``modules``."""
    out = []
    for m in modules:
        layers = list(m.modules())
        out += [b for a, b in zip(layers, layers[1:])
                if isinstance(a, torch.nn.InstanceNorm2d) and isinstance(b, torch.nn.ReLU)]
    return out


def alternate(run, pairs: int) -> tuple[dict, dict]:
    """``run(inplace)`` -> (seconds, result), alternating; per setting all times, a result."""
    times: dict[bool, list[float]] = {True: [], False: []}
    results = {}
    for inplace in (True, False):   # warm-up
        run(inplace)
    for _ in range(pairs):
        for inplace in (True, False):
            t, results[inplace] = run(inplace)
            times[inplace].append(t)
    return times, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--name", default="relu_inplace")
    args = ap.parse_args(argv)
    tune_allocator()
    prior, prior_name = load_prior()
    threads = torch.get_num_threads()

    def switch(inplace: bool, *modules: torch.nn.Module) -> None:
        for relu in norm_relus(*modules):
            relu.inplace = inplace

    rows, out = [], {}

    # 1. the decoder step of an inversion
    torch.set_num_threads(1)
    dec = prior.get_decoder("cpu")
    z0 = torch.randn(25, prior.latent_dim, generator=torch.Generator().manual_seed(0))

    def decoder_step(inplace: bool):
        switch(inplace, dec)
        z = z0.clone().requires_grad_(True)
        t = time.perf_counter()
        (g,) = torch.autograd.grad(dec(z).sum(), z)
        return time.perf_counter() - t, g
    out["decoder"] = alternate(decoder_step, 4 * args.pairs)

    # 2. LatentInverter (its decoder is a copy of prior.decoder_ made in fit)
    truth, _ = truth_model(prior)
    grid, rays = survey()
    fwd = StraightRay(grid)
    y = fwd.traveltimes(slowness(truth).ravel(), rays)

    def inversion(inplace: bool):
        switch(inplace, prior.decoder_)
        inv = LatentInverter(prior, fwd, n_starts=25, epochs=2, batch_size=25, lr=1e-2,
                             lr_decay=0.95, device="cpu", n_jobs=1, random_state=0)
        t = time.perf_counter()
        inv.fit(rays, y)
        return time.perf_counter() - t, inv.models_
    out["inversion"] = alternate(inversion, args.pairs)
    switch(False, prior.decoder_)

    # 3. a float32 training step, all threads
    torch.set_num_threads(threads)
    enc, dec_t = prior.encoder_.train(), prior.decoder_.train()
    x = torch.rand(100, *prior.image_shape_, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(100, prior.latent_dim, generator=torch.Generator().manual_seed(2))

    def training_step(inplace: bool):
        switch(inplace, enc, dec_t)
        for p in (*enc.parameters(), *dec_t.parameters()):
            p.grad = None
        t = time.perf_counter()
        mean, logvar = enc(x)
        z = mean + noise * (0.5 * logvar).exp()
        kl = (-0.5 * (1 + logvar - mean**2 - logvar.exp())).mean()
        (((dec_t(z) - x) ** 2).sum() + prior.beta * kl).backward()
        return time.perf_counter() - t, torch.cat([p.grad.ravel() for p in enc.parameters()])
    out["training"] = alternate(training_step, args.pairs)
    switch(False, enc, dec_t)

    labels = {"decoder": "decoder forward + input gradient, 25 starts, 1 thread (ms)",
              "inversion": "LatentInverter.fit, 25 starts x 50 iterations, 1 thread (s)",
              "training": f"training step, 100 crops, float32, {threads} threads (ms)"}
    payload = {}
    for key, (times, results) in out.items():
        scale = 1 if key == "inversion" else 1e3
        med = {v: statistics.median(times[v]) for v in (True, False)}
        same = bool(torch.equal(torch.as_tensor(results[True]), torch.as_tensor(results[False])))
        payload[key] = {"in_place_s": times[True], "not_in_place_s": times[False],
                        "speed_up": med[True] / med[False], "identical_results": same}
        rows.append([labels[key], f"{scale * med[True]:.4g}", f"{scale * med[False]:.4g}",
                     f"{med[True] / med[False]:.3f}", "yes" if same else "NO"])
    command = command_line(__file__, argv)
    md = "\n\n".join([
        "# ReLU after instance normalisation: in place or not",
        f"Prior: {prior_name}. Medians of {args.pairs} alternating pairs "
        f"({4 * args.pairs} for the decoder step).",
        md_table(["step", "in place", "not in place (skvaeinv)", "speed-up",
                  "identical results"], rows),
        f"Command: `{command}`",
    ])
    write_results(args.name, {"command": command, **payload}, md, study="relu_inplace")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
