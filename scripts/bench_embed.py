"""Speed of the audio encoders on this machine, printed as Markdown tables.

Sections (``--sections``, comma-separated):

- ``musicfm``: full-size MusicFM (12 x 1024, random weights) on one clip, upstream's order of
  operations vs the fast path, with the layer-7 and layer-12 differences between them.
- ``musicnn``: the shipped musicnn encoder on one clip (3 s patches, all in one batch).
- ``embed``: the whole ``embed-audio`` command on a manifest (default: the demo world's,
  ``demo/audio/manifest.csv``; make it with ``make_demo_world.py --out demo --scale demo
  --audio``), into a temporary store: songs/s end to end, decoding and workers included.

Wall time is the best of ``--repeats`` runs; CPU time is the process's user + system time for
that run (threads summed), which other load on a shared machine disturbs less than wall time.

    .venv/bin/python scripts/bench_embed.py --sections musicfm,musicnn,embed --repeats 3
"""

from __future__ import annotations

import argparse
import functools
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedding.encoders import embed_song, get_encoder  # noqa: E402
from embedding.musicfm import MusicFM, MusicFMConfig  # noqa: E402
from embedding.store import load_store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

Row = dict[str, Any]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_call(fn: Callable[[], Any], *, repeats: int) -> tuple[float, float, Any]:
    """Best wall seconds over ``repeats`` calls, the CPU seconds of that call, and its result."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
    return best_wall, best_cpu, result


def random_musicfm(cfg: MusicFMConfig, *, seed: int = 0) -> MusicFM:
    """A MusicFM with random weights whose BatchNorm and LayerNorm really do something."""
    torch.manual_seed(seed)
    model = MusicFM(cfg, mean=6.768444971712967, std=18.417922652295623).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d | torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model


def bench_musicfm(*, seconds: float = 30.0, repeats: int = 3, layer: int = 7) -> list[Row]:
    """Time full-size MusicFM on one clip: reference vs fast path, all layers vs ``layer``.

    Parameters
    ----------
    seconds : float, optional (default=30.0)
        Clip length; the encoder's window is 30 s.
    repeats : int, optional (default=3)
        Timed runs per variant (best wall time kept).
    layer : int, optional (default=7)
        The layer used for frozen features.

    Returns
    -------
    list of dict
        One row per variant: variant, s_per_clip, cpu_s, rtf, speedup, max_abs_diff, peak_rss_mb.
    """
    # a 12 x 1024 model and a noise-plus-tone clip at 24 kHz
    model = random_musicfm(MusicFMConfig())
    n = int(seconds * 24000)
    t = torch.arange(n) / 24000
    y = (0.1 * torch.randn(1, n) + 0.3 * torch.sin(2 * torch.pi * 440 * t)).float()
    L = model.n_layers

    # warm-up on 5 s: packs the fast path's weights and lets the kernels pick their plans
    with torch.inference_mode():
        model.all_hidden_states(y[:, :120000], fast=True)
        model.all_hidden_states(y[:, :120000], fast=False)

    # the four variants; "reference, all layers" is what upstream's get_latent(layer_ix=7) runs
    variants: list[tuple[str, bool, int]] = [
        ("reference order of ops, all 12 layers", False, L),
        (f"reference order of ops, stop at layer {layer}", False, layer),
        (f"fast path, layer {layer} (default)", True, layer),
        ("fast path, all 12 layers", True, L),
    ]
    rows: list[Row] = []
    outputs: dict[tuple[bool, int], torch.Tensor] = {}
    with torch.inference_mode():
        for name, fast, upto in variants:
            wall, cpu, states = time_call(
                functools.partial(model.hidden_states, y, layer=upto, fast=fast), repeats=repeats
            )
            outputs[(fast, upto)] = states
            rows.append(
                {
                    "variant": name,
                    "s_per_clip": wall * 30.0 / seconds,
                    "cpu_s": cpu * 30.0 / seconds,
                    "rtf": wall / seconds,
                    "peak_rss_mb": peak_rss_mb(),
                }
            )

    # speed-ups against upstream's work and the fast-vs-reference differences
    base = rows[0]["s_per_clip"]
    for row in rows:
        row["speedup"] = base / row["s_per_clip"]
    diff_layer = (outputs[(True, layer)] - outputs[(False, layer)]).abs().max().item()
    diff_last = (outputs[(True, L)] - outputs[(False, L)]).abs().max().item()
    rows[2]["max_abs_diff"] = diff_layer
    rows[3]["max_abs_diff"] = diff_last
    return rows


def _musicfm_section(args: argparse.Namespace) -> list[Row]:
    return bench_musicfm(seconds=args.seconds, repeats=args.repeats, layer=args.layer)


def bench_musicnn(*, seconds: float = 30.0, repeats: int = 3) -> list[Row]:
    """Time the shipped musicnn encoder on one clip of ``seconds`` at 16 kHz.

    Parameters
    ----------
    seconds : float, optional (default=30.0)
        Clip length; musicnn cuts it into 3 s patches and embeds them in one batch.
    repeats : int, optional (default=3)
        Timed runs (best wall time kept).

    Returns
    -------
    list of dict
        One row: variant, s_per_clip, cpu_s, rtf, peak_rss_mb.
    """
    # the encoder with its bundled weights, and a noise-plus-tone clip
    encoder = get_encoder("musicnn")
    n = int(seconds * encoder.sample_rate)
    rng = np.random.default_rng(0)
    t = np.arange(n) / encoder.sample_rate
    y = (0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    # one warm-up, then the timed runs (log-mel front end included)
    embed_song(encoder, y)
    wall, cpu, _ = time_call(functools.partial(embed_song, encoder, y), repeats=repeats)
    return [
        {
            "variant": f"musicnn MSD, {seconds:g} s clip",
            "s_per_clip": wall * 30.0 / seconds,
            "cpu_s": cpu * 30.0 / seconds,
            "rtf": wall / seconds,
            "peak_rss_mb": peak_rss_mb(),
        }
    ]


def bench_embed_command(manifest: Path, *, encoder: str = "musicnn") -> list[Row]:
    """Run ``embed-audio`` on ``manifest`` into a temporary store; songs/s end to end.

    Parameters
    ----------
    manifest : Path
        A ``song_id,path`` manifest, e.g. the demo world's ``audio/manifest.csv``.
    encoder : str, optional (default="musicnn")
        Encoder name given to ``--encoder``.

    Returns
    -------
    list of dict
        One row: variant, songs, seconds, songs_per_s, peak_rss_mb (of the command's processes).
    """
    if not manifest.is_file():
        raise SystemExit(
            f"manifest={manifest} does not exist; make it with "
            "python scripts/make_demo_world.py --out demo --scale demo --audio, or pass --manifest"
        )
    command = Path(sys.executable).parent / "embed-audio"
    with tempfile.TemporaryDirectory(prefix="encore-bench-embed-") as tmp:
        store = Path(tmp) / "store"
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(
            [str(command), "--manifest", str(manifest), "--out", str(store), "--encoder", encoder],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        n_songs = len(load_store(store, allow_partial=True).ids)
    return [
        {
            "variant": f"embed-audio --encoder {encoder}, {manifest}",
            "songs": n_songs,
            "seconds": seconds,
            "songs_per_s": n_songs / seconds,
            "peak_rss_mb": max(before, children_rss) / 1024,
        }
    ]


def _musicnn_section(args: argparse.Namespace) -> list[Row]:
    return bench_musicnn(seconds=args.seconds, repeats=args.repeats)


def _embed_section(args: argparse.Namespace) -> list[Row]:
    return bench_embed_command(args.manifest)


# each section maps parsed arguments to table rows
SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "musicfm": _musicfm_section,
    "musicnn": _musicnn_section,
    "embed": _embed_section,
}


def markdown_table(rows: list[Row]) -> str:
    """Rows of dicts as a Markdown table; the columns are the union of the keys, in order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_fmt(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-2 else f"{value:.2f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """Run the asked sections and print one Markdown table each."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sections", default="musicfm", help="comma-separated sections")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--layer", type=int, default=7, help="MusicFM layer for features")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=REPO / "demo" / "audio" / "manifest.csv",
        help="manifest of the embed section",
    )
    args = parser.parse_args(argv)

    # the machine, then each section
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, oneDNN {torch.backends.mkldnn.is_available()}\n"
    )
    for name in args.sections.split(","):
        if name not in SECTIONS:
            parser.error(f"unknown section={name!r}; available: {', '.join(SECTIONS)}")
        print(f"## {name}\n\n{markdown_table(SECTIONS[name](args))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
