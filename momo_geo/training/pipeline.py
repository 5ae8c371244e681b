"""MOMO end to end: base MAE on all sensors → one continuation per sensor → EVL → merge → bundle.

``run_momo`` is the whole recipe of the paper at any size: the sizes are parameters, so the same
function makes the one-minute test run, the ten-minute ``make pretrain-smoke`` run, the encoders
of the bundled models (the checkout's ``training/build_models.py``) and of the comparison
(``training/reproduce.py``). Its folder::

    OUT/base/            pretraining on all sensors (run folder, see momo_geo.training.runs)
    OUT/hirise|ctx|themis/   continuation per sensor from the base, checkpoints + val_log.csv
    OUT/evl_report.json  the EVL selection (+ evl_report.txt, the printed table)
    OUT/joint/           with joint_samples: all sensors continued from the base (the paper's
                         joint-training baseline; not merged)
    OUT/momo.bundle/     the merged encoder ("pretrain" bundle with the merge recipe in its card)
    OUT/pipeline.json    sizes, timings and outcome
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from momo_geo.errors import MomoGeoError
from momo_geo.training.pretrain import PretrainConfig, run_pretrain


def run_momo(output: str | Path, sensors: tuple[str, ...] = ("hirise", "ctx", "themis"),
             encoder: str = "vit_tiny", img_size: int = 64, base_samples: int = 2048,
             sensor_samples: int = 1024, batch_size: int = 32, checkpoint_every: int = 256,
             pool_size: int = 256, val_size: int = 32, seed: int = 0,
             selection: str = "evl", tolerance: float | None = None,
             merge_method: str = "task-arithmetic", lam: float | str | None = None,
             lam_candidates: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
             loss_weights: dict[str, float] | None = None,
             sensor_loss_weights: dict[str, float] | None = None,
             validation: str = "all", data_root: str | None = None, joint_samples: int = 0,
             overwrite: bool = False, verbose: bool = True,
             **pretrain_kw: Any) -> Path:
    """Run the MOMO recipe; return the merged bundle's path (``OUT/momo.bundle``).

    ``loss_weights`` apply to the base run, ``sensor_loss_weights`` (default: the same) to the
    sensor runs; a ``feature`` weight there uses the frozen base encoder as its feature network.
    ``lam="search"`` tries ``lam_candidates`` and keeps the λ whose merged encoder, with the
    base run's decoder, has the lowest MAE loss on a fixed all-sensor validation set (train-split
    chips, like every validation set here). ``validation="own"`` scores each sensor run on its
    own sensor's validation chips; ``"all"`` scores every run on one common set of chips of all
    sensors (the EVL losses are then on the same data). ``selection`` and ``tolerance`` go to
    :func:`momo_geo.merge.evl.select_checkpoints` (default: the paper's EVL rule, ε 0.01). That
    rule compares each run's loss on its *own* sensor's chips: ``validation="own"`` logs exactly
    that; with ``"all"`` a run logs only the mixed loss, which the rule then uses and its report
    flags as not the paper's per-sensor validation. Extra keywords go to every
    :class:`PretrainConfig` (e.g. ``accelerator``, ``precision``, ``threads``).
    """
    if validation not in ("own", "all"):
        raise MomoGeoError(f"validation must be 'own' or 'all', not {validation!r}")
    from momo_geo.merge.evl import read_val_log, save_selection, select_checkpoints
    from momo_geo.merge.recipe import merge_checkpoints

    out = _prepare_output(Path(output), sensors, overwrite)
    bundle = out / "momo.bundle"
    weights = loss_weights or {"pixel": 1.0, "ssim": 0.0, "gradient": 0.0, "feature": 0.0}
    common = dict(encoder=encoder, img_size=img_size, batch_size=batch_size,
                  checkpoint_every=checkpoint_every, pool_size=pool_size, val_size=val_size,
                  data_root=data_root, **pretrain_kw)
    timings: dict[str, float] = {}

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    def continuation(name: str, run_sensors: list[str], samples: int, run_seed: int,
                     val_sensors: list[str] | None = None) -> Path:
        """A run continued from the base (encoder + decoder), timed."""
        t0 = time.perf_counter()
        say(f"[momo] {name}: continue from the base, {samples} samples")
        run = run_pretrain(PretrainConfig(
            output=str(out / name), sensors=run_sensors, samples=samples, init_from=str(base),
            loss_weights=sensor_loss_weights or weights, val_sensors=val_sensors,
            name=f"momo-{name}-{encoder}", seed=run_seed, **common))
        timings[name] = time.perf_counter() - t0
        return run

    start = time.perf_counter()
    say(f"[momo] base: {encoder} on {', '.join(sensors)}, {base_samples} samples")
    base = run_pretrain(PretrainConfig(output=str(out / "base"), sensors=list(sensors),
                                       samples=base_samples, loss_weights=weights,
                                       name=f"momo-base-{encoder}", seed=seed, **common))
    timings["base"] = time.perf_counter() - start
    runs = {s: continuation(s, [s], sensor_samples, seed + 1,
                            list(sensors) if validation == "all" else None) for s in sensors}
    if joint_samples:
        continuation("joint", list(sensors), joint_samples, seed + 2)
    chosen = select_checkpoints({s: read_val_log(r) for s, r in runs.items()}, selection,
                                tolerance)
    save_selection(chosen, out / "evl_report.json", overwrite=True)
    say(chosen.report())
    notes: dict[str, Any] = {"validation": "common all-sensor set" if validation == "all"
                             else "each run's own sensor"}
    if lam == "search":
        lam, scores = search_merge_lambda(base, chosen.paths, merge_method, lam_candidates,
                                          PretrainConfig(output=str(out / "base"),
                                                         sensors=list(sensors), seed=seed,
                                                         init_from=str(base), **common))
        notes["lambda_search"] = {"criterion": "MAE val loss, base decoder, all sensors",
                                  "scores": {str(k): v for k, v in scores.items()}}
        say(f"[momo] lambda search: {scores} -> {lam}")
    elif isinstance(lam, str):
        raise MomoGeoError(f"lam must be a number or 'search', not {lam!r}")
    merged = merge_checkpoints(base / "encoder.bundle", chosen.paths, bundle, merge_method, lam,
                               selection=chosen, overwrite=overwrite,
                               name=f"momo-{encoder}-{img_size}px", notes=notes)
    timings["total"] = time.perf_counter() - start
    summary = {"bundle": str(merged), "base": str(base), "runs": {s: str(r) for s, r in
                                                                  runs.items()},
               "selection": chosen.to_dict(), "merge_method": merge_method, "lambda": lam,
               "sizes": {"encoder": encoder, "img_size": img_size, "base_samples": base_samples,
                         "sensor_samples": sensor_samples, "joint_samples": joint_samples,
                         "batch_size": batch_size,
                         "checkpoint_every": checkpoint_every, "pool_size": pool_size,
                         "val_size": val_size, "seed": seed, "validation": validation},
               "seconds": {k: round(v, 1) for k, v in timings.items()}}
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"[momo] merged bundle: {merged} ({timings['total']:.0f} s)")
    return merged


def _prepare_output(out: Path, sensors: tuple[str, ...], overwrite: bool) -> Path:
    """The output folder, its earlier runs removed when overwriting (refused otherwise)."""
    if (out / "momo.bundle").exists() and not overwrite:
        raise MomoGeoError(f"{out / 'momo.bundle'} exists; pass overwrite=True")
    if out.exists() and overwrite:
        import shutil

        for sub in ("base", "joint", *sensors):
            run = out / sub
            if not run.exists():
                continue
            if not _is_pretrain_run(run):
                raise MomoGeoError(f"{run} is not a pretraining run of momo-geo (files it does "
                                   "not write, or no config.json); refusing to delete it")
            shutil.rmtree(run)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _is_pretrain_run(folder: Path) -> bool:
    """A folder ``pretrain`` wrote: its ``config.json`` (written first), and nothing but the
    files and folders a run leaves (so overwriting never deletes a user's own folder)."""
    known = {"config.json", "val_log.csv", "checkpoints", "encoder.bundle", "last.ckpt",
             "mae.safetensors", "lightning_logs", "history.json"}
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return "config.json" in names and not names - known


def search_merge_lambda(base_run: Path, checkpoints: dict[str, str], method: str,
                        candidates: tuple[float, ...], config: PretrainConfig
                        ) -> tuple[float, dict[float, float]]:
    """Pick λ by the MAE validation loss of the merged encoder (with the base's decoder)."""
    import torch

    from momo_geo.merge import TaskVector, merge, mergeable_keys, search_lambda
    from momo_geo.merge.recipe import load_encoder_weights
    from momo_geo.training.pretrain import build_mae
    from momo_geo.training.pretrain_data import build_pool, chip_noise

    mae, _ = build_mae(config)  # base encoder + decoder
    mae.eval()
    base_state = {k: v.clone() for k, v in mae.encoder.state_dict().items()}
    keys = mergeable_keys(base_state)
    vectors = [TaskVector.from_state_dicts(base_state, load_encoder_weights(p), keys)
               for p in checkpoints.values()]
    pool = build_pool(config, "train", config.val_size, config.seed + 2_000_000)
    tokens = (config.img_size // 16) ** 2

    @torch.no_grad()
    def val_loss(lam: float) -> float:
        mae.encoder.load_state_dict(merge(base_state, vectors, method, lam))
        total = 0.0
        for start in range(0, len(pool), 64):
            images = pool.images[start:start + 64]
            noise, _ = chip_noise(torch.arange(start, start + len(images)), config.seed, 0,
                                  tokens)
            total += float(mae(images, noise)[0]) * len(images)
        return total / len(pool)

    best, scores = search_lambda(candidates, val_loss)
    mae.encoder.load_state_dict(base_state)
    return best, {k: round(v, 6) for k, v in scores.items()}


def main(argv: list[str] | None = None) -> None:
    """``python -m momo_geo.training.pipeline OUT``: the ``make pretrain-smoke`` recipe."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--encoder", default="vit_tiny")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--base-samples", type=int, default=8192)
    parser.add_argument("--sensor-samples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--checkpoint-every", type=int, default=512)
    parser.add_argument("--pool-size", type=int, default=512)
    parser.add_argument("--val-size", type=int, default=32)
    parser.add_argument("--method", default="task-arithmetic")
    parser.add_argument("--lam", default=None, help="λ, or 'search'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--validation", choices=["own", "all"], default="all",
                        help="score sensor runs on their own sensor's chips or on all sensors'")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest for ViT-T on a busy machine)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        run_momo(args.output, encoder=args.encoder, img_size=args.img_size,
                 base_samples=args.base_samples, sensor_samples=args.sensor_samples,
                 batch_size=args.batch_size, checkpoint_every=args.checkpoint_every,
                 pool_size=args.pool_size, val_size=args.val_size, merge_method=args.method,
                 lam=_lam(args.lam), seed=args.seed, data_root=args.data_root,
                 validation=args.validation, overwrite=args.overwrite, threads=args.threads)
    except MomoGeoError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


def _lam(text: str | None) -> float | str | None:
    if text is None or text == "search":
        return text
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"--lam: {text!r} is neither a number nor 'search'") from None


if __name__ == "__main__":
    main()
