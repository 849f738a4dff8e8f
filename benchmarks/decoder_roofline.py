"""How close the study's decoder runs to the CPU's float32 peak, by batch size.

Side by side in one process, on one torch thread (what each joblib worker of
``LatentInverter`` uses):

* a float32 matrix product ``(4096 x K) @ (K x 800)`` for K = 256 and 1024: the rate a
  well-tuned kernel reaches on this core (about the FMA peak);
* the reference 129 x 65 decoder's forward pass plus the gradient with respect to its
  input (what one SGD iteration needs per start), for batches of 1 to 200 starts,
  reported as start-iterations per second and GFLOP/s (the multiply-adds of its layers,
  counted: about 0.17 GFLOP per start-iteration).

Each setting is timed ``--repeats`` times, interleaved, and the median is reported. The
ratio decoder / matrix product says how much of the core the convolutions use; with
the per-start reference loop of ``sgd_speed.py`` it bounds the batched speed-up a CPU
can give.

Usage::

    python benchmarks/decoder_roofline.py            # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

from skvaeinv._networks import Decoder  # noqa: E402

def gflop_per_start_iteration(dec: Decoder) -> float:
    """GFLOP of one start's forward pass plus input gradient (2 x the forward's).

    Counts the multiply-adds of the linear and transposed-convolution layers (the
    normalisations and activations add well under 1 %), with forward hooks.
    """
    macs = []

    def count(module, inputs, output):
        x = inputs[0]
        if isinstance(module, torch.nn.Linear):
            macs.append(module.in_features * module.out_features)
        else:  # ConvTranspose2d: every input pixel meets the whole kernel
            kh, kw = module.kernel_size
            macs.append(x[0].numel() * module.out_channels * kh * kw)

    hooks = [m.register_forward_hook(count) for m in dec.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        dec(torch.zeros(1, dec.architecture["latent_dim"]))
    for h in hooks:
        h.remove()
    return 2 * 2 * sum(macs) / 1e9


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 10, 25, 50, 100, 200])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default="decoder_roofline")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    gemm = {}
    for k in (256, 1024):
        a, b = torch.randn(4096, k), torch.randn(k, 800)
        gemm[k] = 2 * 4096 * k * 800 / _median_time(lambda: a @ b, 2 * args.repeats) / 1e9
    peak = max(gemm.values())

    dec = Decoder((129, 65)).eval()
    for p in dec.parameters():
        p.requires_grad_(False)
    flop = gflop_per_start_iteration(dec)
    latents = {b: torch.randn(b, 20) for b in args.batches}

    def step(b: int) -> None:
        z = latents[b].clone().requires_grad_(True)
        torch.autograd.grad(dec(z).sum(), z)

    times: dict[int, list[float]] = {b: [] for b in args.batches}
    for b in args.batches:
        step(b)  # warm-up
    for _ in range(args.repeats):
        for b in args.batches:
            t = time.perf_counter()
            step(b)
            times[b].append(time.perf_counter() - t)
    rows, out = [], []
    for b in args.batches:
        rate = b / statistics.median(times[b])
        gflops = rate * flop
        out.append({"batch": b, "start_iterations_per_s": rate, "gflop_per_s": gflops,
                    "fraction_of_gemm": gflops / peak})
        rows.append([b, round(rate, 1), round(gflops, 1), f"{100 * gflops / peak:.0f} %"])

    command = "python benchmarks/decoder_roofline.py" + (
        f" {' '.join(argv)}" if argv else "")
    md = "\n\n".join([
        "# Decoder throughput against the float32 matrix-product rate (one thread)",
        f"float32 matrix product: {gemm[256]:.1f} GFLOP/s (K = 256), "
        f"{gemm[1024]:.1f} GFLOP/s (K = 1024). Decoder: {flop:.3f} GFLOP per "
        "start-iteration (forward + input gradient).",
        md_table(["starts per batch", "start-it/s", "GFLOP/s", "of the matrix product"],
                 rows),
        f"Command: `{command}`",
    ])
    write_results(args.name, {"gemm_gflop_per_s": gemm, "decoder": out,
                              "gflop_per_start_iteration": flop,
                              "command": command}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
