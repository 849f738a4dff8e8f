"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: One folder per study, ``results/<study>/`` (:func:`study_dir`; index: results/README.md).
RESULTS = Path(__file__).resolve().parent / "results"
PRIORS = Path(__file__).resolve().parent / "priors"

#: Upper-left corners of the truth models cut from ti.png (shared/data/README.md).
TRUTH_WINDOWS = {"mc1": (1135, 1658), "mc2": (1502, 1958), "mc3": (582, 503)}
TRUTH_SHAPE = (129, 65)
TRAIN_ROWS = (0, 1900)
VALID_ROWS = (1900, 2500)


def require_shared() -> Path:
    """``SHARED``, or exit with a message that says where the data are expected."""
    if not SHARED.is_dir():
        raise SystemExit(f"this benchmark reads the project's shared data, expected at "
                         f"{SHARED} (the folder shared/data beside the repository); it is "
                         "missing.")
    return SHARED


def add_allocator_option(parser) -> None:
    """``--default-allocator``: run without :func:`skvaeinv.runtime.tune_allocator`."""
    parser.add_argument("--default-allocator", action="store_true",
                        help="keep glibc's default malloc settings (by default the script, "
                             "like the skvaeinv command line, calls tune_allocator)")


def apply_allocator(args) -> str:
    """Tune the allocator unless ``--default-allocator``; returns the label to record."""
    from skvaeinv.runtime import tune_allocator

    if args.default_allocator:
        return "default"
    return "tuned (tune_allocator)" if tune_allocator() else "default (no glibc)"


def survey(source_x: float = 0.01, receiver_x: float = 6.49):
    """The study's grid and 625-ray survey (straight-ray sensor positions by default)."""
    from skvaeinv.survey import Grid2D, crosshole

    grid = Grid2D(shape=TRUTH_SHAPE, spacing=0.1)
    rays = crosshole(grid, np.arange(0.5, 12.51, 0.5), source_x=source_x,
                     receiver_x=receiver_x)
    return grid, rays


def exclusion_windows() -> list[tuple[int, int, int, int]]:
    """Windows (row, col, height, width) of the truth models, never to be trained on."""
    return [(r, c, *TRUTH_SHAPE) for r, c in TRUTH_WINDOWS.values()]


def training_crops(ti: np.ndarray):
    """``crops(n, seed)``: ``n`` random truth-sized crops of the training band of ``ti``
    (rows ``TRAIN_ROWS``), none overlapping a truth window."""
    from skvaeinv.datasets import extract_patches

    windows = exclusion_windows()

    def crops(n: int, seed: int) -> np.ndarray:
        return extract_patches(ti, TRUTH_SHAPE, n, rows=TRAIN_ROWS, exclude=windows,
                               random_state=seed)
    return crops


def slowness(m: np.ndarray) -> np.ndarray:
    """Reference petrophysics of the study: s = 1 / (0.06 + 0.02 (1 - m)) ns/m."""
    return 1.0 / (0.06 + 0.02 * (1.0 - m))


def closest_decoded(prior, images: np.ndarray, iterations: int = 500, lr: float = 0.05,
                    codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The decoded images nearest to ``images`` in model space, and their model RMSE.

    Adam (``torch.optim``) on ``sum((decode(z) - image)^2)`` from the encoded code,
    keeping each image's best iterate: how close *any* code of this prior comes to the
    image, whatever the data. No inversion can beat this model RMSE (up to local
    minima of the projection), so it bounds what a latent inversion can reach.
    ``codes``: the images' encoded codes where the caller has them already.
    """
    import torch

    decoder = prior.get_decoder("cpu")
    target = torch.as_tensor(np.asarray(images, np.float32))
    start = prior.transform(images) if codes is None else codes
    z = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    best = torch.full((len(target),), float("inf"))
    best_img = torch.empty_like(target)
    for _ in range(iterations + 1):
        opt.zero_grad()
        decoded = decoder(z)
        sse = ((decoded - target) ** 2).sum(dim=(1, 2))
        with torch.no_grad():
            better = sse < best
            best = torch.where(better, sse, best)
            best_img[better] = decoded[better]
        sse.sum().backward()
        opt.step()
    rmse = np.sqrt(best.numpy() / target[0].numel())
    return best_img.numpy(), rmse


def _cpu_details() -> dict:
    """CPU model and the vector extensions that decide float32/bfloat16 speed.

    The shared machines differ between sessions (e.g. Zen 4 with AVX-512 BF16 one day,
    Zen 3 with AVX2 only the next): timings are comparable only on the same kind.
    """
    import torch

    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    # x86 lists "flags"; ARM lists "Features" (and no model name or family)
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    family = fields.get("cpu family")
    out.update({
        "cpu_model": fields.get("model name") or fields.get("CPU part"),
        "cpu_family_model": None if family is None else f"{family}/{fields.get('model')}",
        "cpu_flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16",
                                     "avx512_vnni", "amx_bf16", "amx_tile",
                                     "asimd", "sve", "bf16"}),
    })
    return out


def machine_info() -> dict:
    import os

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        **_cpu_details(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def command_line(script: str, argv: list[str] | None = None) -> str:
    """The command that reproduces a run: ``python benchmarks/<script> <arguments>``.

    ``argv`` are the arguments given to the script's ``main`` (None: the process's own).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", f"benchmarks/{Path(script).name}", *args])


#: The hand-written file of each study folder: no script writes it.
READING = "READING.md"


def _running_script() -> str:
    """Stem of the benchmark script this process runs (``sgd_speed`` for
    ``python benchmarks/sgd_speed.py``); ValueError when it runs none."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    script = None if main_file is None else Path(main_file).resolve()
    if (script is None or script.suffix != ".py" or not script.is_file()
            or script.parent != Path(__file__).resolve().parent):
        raise ValueError("not running a script of benchmarks/: pass study=<study folder>")
    return script.stem


def study_dir(study: str | None = None) -> Path:
    """``results/<study>/``, created if missing: the folder of one study's files.

    Each benchmark script writes its generated files (``<name>.json``, ``<name>.md``,
    figures) into its own study folder and overwrites them at the next run; the
    folder's ``READING.md`` holds the readings written by hand and is never written by
    a script. ``study`` defaults to the name of the running benchmark script.
    """
    study = _running_script() if study is None else study
    if not study or Path(study).name != study or study.startswith((".", "_")):
        raise ValueError(f"study must be a plain folder name, got {study!r}")
    path = RESULTS / study
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_results(name: str, payload: dict, markdown: str,
                  study: str | None = None) -> tuple[Path, Path]:
    """Write ``results/<study>/<name>.json`` and ``results/<study>/<name>.md``.

    ``study`` is the study folder (:func:`study_dir`; default: the running script's
    name). The payload gets the machine's description (:func:`machine_info`) unless it
    has its own ``"machine"`` entry.
    """
    if f"{name}.md" == READING or Path(name).name != name:
        raise ValueError(f"{name!r} cannot name a result file")
    folder = study_dir(study)
    payload = {"machine": machine_info(), **payload}
    jpath = folder / f"{name}.json"
    mpath = folder / f"{name}.md"
    jpath.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    mpath.write_text(markdown.rstrip() + "\n")
    return jpath, mpath


def device_label(device: str) -> str:
    """``device`` for result tables, with the card's name for a GPU ("cuda (NVIDIA ...)")."""
    import torch

    dev = torch.device(device)
    return device if dev.type != "cuda" else f"{device} ({torch.cuda.get_device_name(dev)})"


def setting_label(precision: str, compile: bool) -> str:
    """Key of a timed setting in results: "float32", "bfloat16 compiled", ..."""
    return precision + (" compiled" if compile else "")


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
