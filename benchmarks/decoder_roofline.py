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

A second table times each transposed convolution of the decoder (forward + input
gradient, ``--layer-batch`` starts) in torch's form against the same function written
without a transposed convolution: the polyphase form (kernel 4: one stride-1
convolution with the four 2 x 2 phase kernels, then ``pixel_shuffle``; kernel 5: four
phase convolutions written into the strided output) and, for the one-channel last
layer, the matrix product + ``fold`` of :func:`skvaeinv._networks.conv_transpose_one_channel`.
Each form is checked against torch's output first.

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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, md_table, write_results  # noqa: E402

from skvaeinv._networks import Decoder, conv_transpose_one_channel  # noqa: E402


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


def polyphase(conv: torch.nn.ConvTranspose2d):
    """``conv`` (stride 2, no padding, kernel 4 or 5) without a transposed convolution.

    Output pixel ``2 q + r`` along an axis sums ``x[q - t] * w[2 t + r]``: phase ``r`` is
    a stride-1 "full" convolution of the input with the taps ``w[r::2]``, flipped.
    """
    w = conv.weight.detach()
    k = conv.kernel_size[0]
    if conv.stride != (2, 2) or conv.padding != (0, 0) or conv.kernel_size != (k, k) \
            or k not in (4, 5):
        raise ValueError(f"no polyphase form here for {conv}")
    phases = {(a, b): w[:, :, a::2, b::2].flip(2, 3).transpose(0, 1).contiguous()
              for a in range(2) for b in range(2)}
    bias = None if conv.bias is None else conv.bias.detach().view(1, -1, 1, 1)
    if k == 4:   # equal 2 x 2 phases: one convolution, channels ordered for pixel_shuffle
        w4 = torch.stack([phases[a, b] for a in range(2) for b in range(2)], 1)
        w4 = w4.reshape(-1, *w4.shape[2:])

        def run(x: torch.Tensor) -> torch.Tensor:
            y = F.pixel_shuffle(F.conv2d(x, w4, padding=1), 2)
            return y if bias is None else y + bias
        return run

    def run5(x: torch.Tensor) -> torch.Tensor:
        n, _, h, wd = x.shape
        out = x.new_empty(n, w.shape[1], 2 * h + 3, 2 * wd + 3)
        for (a, b), wp in phases.items():
            kh, kw = wp.shape[2:]
            out[:, :, a::2, b::2] = F.conv2d(x, wp, padding=(kh - 1, kw - 1))
        return out if bias is None else out + bias
    return run5


def layer_forms(dec: Decoder, batch: int, repeats: int) -> list[dict]:
    """Forward + input gradient of each transposed convolution, torch's form vs others."""
    x = dec.fc(torch.randn(batch, dec.architecture["latent_dim"])).view(
        batch, *dec.bottleneck).detach()
    out = []
    for layer in dec.deconv:
        if isinstance(layer, torch.nn.ConvTranspose2d):
            forms = {"torch ConvTranspose2d": layer, "polyphase": polyphase(layer)}
            if layer.out_channels == 1:
                forms["matmul + fold"] = lambda v, c=layer: conv_transpose_one_channel(v, c)
            xi = x.clone().requires_grad_(True)
            with torch.no_grad():
                ref = layer(xi)
            g = torch.randn_like(ref)
            errors = {}
            with torch.no_grad():
                for name, f in forms.items():
                    errors[name] = float((f(xi) - ref).abs().max() / ref.abs().max())
            times: dict[str, list[float]] = {name: [] for name in forms}
            for _ in range(repeats):
                for name, f in forms.items():
                    t = time.perf_counter()
                    torch.autograd.grad(f(xi), xi, g)
                    times[name].append(time.perf_counter() - t)
            k = layer.kernel_size
            out.append({"layer": f"{layer.in_channels} -> {layer.out_channels}, kernel "
                                 f"{k[0]} x {k[1]}, input {tuple(xi.shape[2:])}",
                        "ms": {n: 1e3 * statistics.median(v) for n, v in times.items()},
                        "max_rel_error": errors})
        with torch.no_grad():
            x = layer(x)
    return out


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
    ap.add_argument("--layer-batch", type=int, default=25,
                    help="starts per batch of the per-layer table (0: no such table)")
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

    layers = layer_forms(dec, args.layer_batch, 4 * args.repeats) if args.layer_batch else []
    names = list(dict.fromkeys(n for r in layers for n in r["ms"]))
    layer_rows = [[r["layer"], *(f"{r['ms'][n]:.2f}" if n in r["ms"] else "-"
                                 for n in names),
                   f"{max(r['max_rel_error'].values()):.1e}"] for r in layers]

    command = command_line(__file__, argv)
    md = "\n\n".join([
        "# Decoder throughput against the float32 matrix-product rate (one thread)",
        f"float32 matrix product: {gemm[256]:.1f} GFLOP/s (K = 256), "
        f"{gemm[1024]:.1f} GFLOP/s (K = 1024). Decoder: {flop:.3f} GFLOP per "
        "start-iteration (forward + input gradient).",
        md_table(["starts per batch", "start-it/s", "GFLOP/s", "of the matrix product"],
                 rows),
        *([f"Each transposed convolution, forward + input gradient, {args.layer_batch} "
            "starts (ms, median):",
            md_table(["layer", *names, "max. rel. difference to torch"], layer_rows)]
          if layers else []),
        f"Command: `{command}`",
    ])
    write_results(args.name, {"gemm_gflop_per_s": gemm, "decoder": out,
                              "gflop_per_start_iteration": flop,
                              "layers": layers, "command": command}, md,
                  study="decoder_roofline")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
