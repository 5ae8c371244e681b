"""MAE pretraining on the real Mars data: the MOMO pipeline end to end, exact resume, and DDP.

Sizes are tiny (ViT-T, 32 px chips, a few dozen samples) so that the file runs in about a
minute on a 2-core CPU; ``make pretrain-smoke`` runs the same pipeline at a size that learns.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from momo_geo.bundle import load_bundle
from momo_geo.cli import cli
from momo_geo.errors import MomoGeoError
from momo_geo.merge import mergeable_keys
from momo_geo.training.pipeline import run_momo
from momo_geo.training.pretrain import PretrainConfig, run_pretrain
from momo_geo.training.pretrain_data import EpochSampler, build_pool

ROOT = Path(__file__).resolve().parents[1]
SENSOR_LOSS = {"pixel": 1.0, "ssim": 0.1, "gradient": 0.05, "feature": 0.1}
TINY = dict(encoder="vit_tiny", img_size=32, batch_size=8, pool_size=16, val_size=4, threads=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def momo_run(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("momo")
    run_momo(out, base_samples=32, sensor_samples=32, checkpoint_every=8, verbose=False,
             data_root=str(shared_data), sensor_loss_weights=SENSOR_LOSS, **TINY)
    return out


def _log(run: Path) -> list[dict[str, str]]:
    with open(run / "val_log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_momo_end_to_end(momo_run: Path) -> None:
    base = load_bundle(momo_run / "base" / "encoder.bundle")
    assert base.card.sensors == ["hirise", "ctx", "themis"]
    for sensor in ("hirise", "ctx", "themis"):
        run = momo_run / sensor
        rows = _log(run)
        assert [int(r["samples_seen"]) for r in rows] == [8, 16, 24, 32]
        assert all((run / r["checkpoint"]).is_file() for r in rows)
        config = json.loads((run / "config.json").read_text())
        assert config["sensors"] == [sensor] and config["init_from"].endswith("base")
        sensor_card = load_bundle(run / "encoder.bundle").card
        training = sensor_card.training
        assert training["init"] == "mae"
        # one set of statistics for the whole experiment: the base's (joint), recorded once
        assert sensor_card.normalization == base.card.normalization
        assert training["loss"]["weights"] == SENSOR_LOSS
        assert "not LPIPS" in training["loss"]["feature_network"]
        # every enabled term is logged on its own, on the validation chips and in training
        for row in rows:
            for term in SENSOR_LOSS:
                assert float(row[f"val_{term}"]) > 0 and float(row[f"train_{term}"]) > 0
            total = sum(w * float(row[f"val_{t}"]) for t, w in SENSOR_LOSS.items())
            assert total == pytest.approx(float(row["val_loss"]), rel=1e-5)
    base_log = _log(momo_run / "base")
    assert {"val_pixel", "train_pixel"} <= set(base_log[0]) and "val_ssim" not in base_log[0]
    report = json.loads((momo_run / "evl_report.json").read_text())
    losses = [c["val_loss"] for c in report["chosen"].values()]
    assert report["spread"] == pytest.approx(max(losses) - min(losses))
    assert "spread (max - min val_loss)" in (momo_run / "evl_report.txt").read_text()

    merged = load_bundle(momo_run / "momo.bundle")
    assert merged.card.normalization == base.card.normalization
    recipe = merged.card.merge
    assert recipe["method"] == "task-arithmetic" and recipe["lambda"] == 0.5
    assert recipe["evl_spread"] == pytest.approx(report["spread"])
    assert recipe["validation"] == "common all-sensor set"
    assert set(recipe["checkpoints"]) == {"hirise", "ctx", "themis"}
    assert "pos_embed" in recipe["excluded_keys"]
    # independent check of θ = θ_base + 0.5 Σ (θ_s − θ_base), from the chosen files
    chosen = [load_file(recipe["checkpoints"][s]["path"]) for s in ("hirise", "ctx", "themis")]
    for key in mergeable_keys(base.state_dict):
        b = base.state_dict[key].double()
        expected = b + 0.5 * sum(c[key].double() - b for c in chosen)
        assert torch.allclose(merged.state_dict[key].double(), expected, atol=1e-6), key
    assert torch.equal(merged.state_dict["pos_embed"], base.state_dict["pos_embed"])
    model = merged.build_model()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 192)


def test_cli_evl_and_merge(momo_run: Path, tmp_path: Path) -> None:
    runs = [str(momo_run / s) for s in ("hirise", "ctx", "themis")]
    runner = CliRunner()
    result = runner.invoke(cli, ["evl", *runs, "--method", "best", "-o",
                                 str(tmp_path / "best.json")])
    assert result.exit_code == 0, result.output
    assert "Checkpoint selection: best" in result.output
    best = json.loads((tmp_path / "best.json").read_text())
    for sensor in ("hirise", "ctx", "themis"):
        # runs validated on all sensors log each sensor's loss; early stopping reads its own
        lowest = min(float(r[f"val_loss_{sensor}"]) for r in _log(momo_run / sensor))
        assert best["chosen"][sensor]["val_loss"] == pytest.approx(lowest)

    result = runner.invoke(cli, ["merge", "--runs", *runs, "--method", "ties", "-o",
                                 str(tmp_path / "ties.bundle")])
    assert result.exit_code == 0, result.output
    card = load_bundle(tmp_path / "ties.bundle").card
    assert card.merge["method"] == "ties" and card.merge["lambda"] == 1.0
    assert card.merge["trim"] == 0.2 and card.merge["selection"] == "evl"

    ckpts = [str(momo_run / s / "checkpoints" / "step_000004.safetensors")
             for s in ("hirise", "ctx", "themis")]
    result = runner.invoke(cli, ["merge", "--base", str(momo_run / "base"), "--checkpoints",
                                 *ckpts, "--method", "magmax", "--lam", "1.0", "-o",
                                 str(tmp_path / "mm.bundle")])
    assert result.exit_code == 0, result.output
    assert set(load_bundle(tmp_path / "mm.bundle").card.merge["checkpoints"]) == {
        "hirise", "ctx", "themis"}

    result = runner.invoke(cli, ["merge", "--runs", *runs, "--lam", "search", "-o",
                                 str(tmp_path / "search.bundle")])
    assert result.exit_code == 0, result.output
    recipe = load_bundle(tmp_path / "search.bundle").card.merge
    scores = {float(k): v for k, v in recipe["lambda_search"]["scores"].items()}
    assert recipe["lambda"] == min(scores, key=scores.get)
    result = runner.invoke(cli, ["merge", "--runs", *runs, "--lam", "lots", "-o",
                                 str(tmp_path / "y")])
    assert isinstance(result.exception, MomoGeoError)

    result = runner.invoke(cli, ["merge", "--checkpoints", *ckpts, "-o", str(tmp_path / "x")])
    assert isinstance(result.exception, MomoGeoError)
    assert "--base is required" in str(result.exception)
    result = runner.invoke(cli, ["evl", str(tmp_path / "nothing")])
    assert isinstance(result.exception, MomoGeoError)


def test_resume_continues_exactly(shared_data, tmp_path: Path) -> None:
    config = dict(output=str(tmp_path / "a"), sensors="hirise", samples=32, checkpoint_every=16,
                  keep_resume_checkpoints=True, data_root=str(shared_data), **TINY)
    first = run_pretrain(config)
    shutil.copytree(first, tmp_path / "b")
    config.update(output=str(tmp_path / "b"),
                  resume=str(tmp_path / "b" / "checkpoints" / "step_000002.ckpt"))
    second = run_pretrain(config)
    a = load_file(str(first / "encoder.bundle" / "weights.safetensors"))
    b = load_file(str(second / "encoder.bundle" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _log(first) == _log(second)
    # the Lightning module is an importable class: the run's last.ckpt reloads into it
    from momo_geo.training.pretrain import MAEPretrainModule

    module = MAEPretrainModule.load_from_checkpoint(str(first / "last.ckpt"))
    assert module.config.samples == 32
    reloaded = module.mae.encoder.state_dict()
    assert all(torch.equal(a[k], reloaded[k]) for k in a)
    with pytest.raises(MomoGeoError, match="already holds a run"):
        run_pretrain({**config, "resume": None})


def test_pool_mixes_dataset_and_scene_chips(shared_data) -> None:
    config = PretrainConfig(sensors="hirise", data_root=str(shared_data), img_size=32,
                            scenes=[str(shared_data / "hirise_scene")], scene_fraction=0.5,
                            batch_size=4, samples=8)
    pool = build_pool(config, "train", 8, seed=0)
    assert pool.images.shape == (8, 3, 32, 32) and pool.sensors == ["hirise"] * 8
    again = build_pool(config, "train", 8, seed=0)
    assert torch.equal(pool.images, again.images)  # deterministic
    no_scenes = build_pool(PretrainConfig(sensors="hirise", data_root=str(shared_data),
                                          img_size=32, batch_size=4, samples=8), "train", 8, 0)
    assert torch.equal(pool.images[:4], no_scenes.images[:4])  # dataset part unchanged
    assert not torch.equal(pool.images[4:], no_scenes.images[4:])  # the rest from the scene
    with pytest.raises(MomoGeoError, match="unknown sensor"):
        PretrainConfig(sensors="mola")


def test_sampler_deals_each_global_batch_across_ranks() -> None:
    single = list(EpochSampler(20, 8, seed=3))
    ranks = [list(EpochSampler(20, 8, seed=3, rank=r, world=2)) for r in range(2)]
    assert len(single) == 16 and all(len(r) == 8 for r in ranks)
    for k in range(2):  # global batch k = the union of each rank's batch k (4 each)
        assert sorted(ranks[0][4 * k:4 * k + 4] + ranks[1][4 * k:4 * k + 4]) == \
            sorted(single[8 * k:8 * k + 8])


def test_two_process_ddp_matches_single_process(shared_data, tmp_path: Path) -> None:
    common = dict(sensors="hirise", samples=32, checkpoint_every=16, accelerator="cpu",
                  data_root=str(shared_data), **TINY)
    # the single-process run goes through the command line (momo-geo pretrain)
    args = ["pretrain", "-o", str(tmp_path / "single")]
    for key, value in common.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    args += ["--loss", "pixel=1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    single = tmp_path / "single"
    assert "Encoder bundle:" in result.output
    config = tmp_path / "ddp.json"
    config.write_text(json.dumps(dict(output=str(tmp_path / "ddp"), devices=2, strategy="ddp",
                                      **common)))
    # the DDP-safe entry point is a module path (works from an installed wheel too)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "momo_geo.training.pretrain", str(config)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = tmp_path / "ddp"
    assert json.loads((ddp / "config.json").read_text())["world_size"] == 2
    a = load_file(str(single / "encoder.bundle" / "weights.safetensors"))
    b = load_file(str(ddp / "encoder.bundle" / "weights.safetensors"))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"DDP (2 processes) vs single process: max |weight difference| = {worst:.3g}")
    assert worst < 1e-4, worst  # float rounding of the gradient all-reduce, nothing more
    assert any(not torch.equal(a[k], b[k]) for k in a) or worst == 0.0
    la, lb = _log(single), _log(ddp)
    assert [r["samples_seen"] for r in la] == [r["samples_seen"] for r in lb]
    for ra, rb in zip(la, lb, strict=True):
        assert float(ra["val_loss"]) == pytest.approx(float(rb["val_loss"]), abs=1e-4)


def test_overwriting_a_momo_run_never_deletes_a_users_folder(tmp_path: Path) -> None:
    """Overwrite replaces earlier pretraining runs, never a folder that merely shares a run's
    name (a user's own ``ctx`` folder of scenes beside the run)."""
    from momo_geo.training.pipeline import _prepare_output

    out = tmp_path / "momo"
    (out / "ctx").mkdir(parents=True)
    (out / "ctx" / "scene.tif").write_bytes(b"mine")
    with pytest.raises(MomoGeoError, match="not a pretraining run"):
        run_momo(out, data_root=str(tmp_path), overwrite=True)
    assert (out / "ctx" / "scene.tif").read_bytes() == b"mine"
    run = out / "base"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (out / "ctx" / "scene.tif").unlink()
    (out / "ctx").rmdir()
    _prepare_output(out, ("ctx",), overwrite=True)
    assert not run.exists()


def test_a_wall_clock_cap_stops_pretraining_and_the_bundle_records_what_it_saw(
        shared_data, tmp_path: Path) -> None:
    """A capped run keeps its checkpoints and bundle; its card says how many samples it saw
    against the budget it was sized by."""
    run = run_pretrain(dict(output=str(tmp_path / "r"), sensors="hirise", samples=8192,
                            checkpoint_every=16, max_minutes=0.002, data_root=str(shared_data),
                            **TINY))
    training = load_bundle(str(run / "encoder.bundle")).card.training
    assert training["samples"] == 8192
    assert 0 < training["samples_seen"] < 8192
    with pytest.raises(MomoGeoError, match="max_minutes"):
        run_pretrain(dict(output=str(tmp_path / "n"), sensors="hirise", samples=16,
                          max_minutes=-1, data_root=str(shared_data), **TINY))
