"""Training lives in the package, and the checkout's training/ only drives it.

- ``momo_geo/`` never imports the top-level ``training/`` and never touches ``sys.path`` (an
  installed wheel has neither);
- every ``momo_geo.training`` module imports without Lightning, and a command that needs it says
  so in one line;
- the recipe files map one-to-one onto the package's parameters;
- ``training/reproduce.py`` builds its encoders with the package's pipeline (no loop of its own).
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "momo_geo"
RECIPES = ROOT / "training" / "recipes"
TRAINING_MODULES = ("pretrain", "pretrain_data", "runs", "pipeline", "finetune", "task_data",
                    "probes", "chips", "schedule", "recipes")


def test_package_never_imports_training_or_touches_sys_path() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if "sys.path" in text:
            offenders.append(f"{path.relative_to(ROOT)}: sys.path")
        for node in ast.walk(ast.parse(text)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not
                     node.level else [])
            offenders += [f"{path.relative_to(ROOT)}: import {n}" for n in names
                          if n == "training" or n.startswith("training.")]
    assert not offenders, offenders


BLOCK_LIGHTNING = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("lightning", "pytorch_lightning"):
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
"""


def test_training_imports_without_lightning_and_commands_say_what_is_missing(tmp_path) -> None:
    code = BLOCK_LIGHTNING + f"""
import importlib
for name in {TRAINING_MODULES!r}:
    importlib.import_module("momo_geo.training." + name)
assert "lightning" not in sys.modules
from momo_geo.cli import main
main(["pretrain", "-o", "run", "--samples", "64", "--batch-size", "32"])
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: pretraining needs Lightning: pip install 'momo-geo[train]'"]
    assert not (tmp_path / "run").exists()


def test_recipe_files_map_onto_the_package_parameters() -> None:
    from momo_geo.training.finetune import Recipe
    from momo_geo.training.pipeline import run_momo
    from momo_geo.training.pretrain import PretrainConfig
    from momo_geo.training.recipes import TASK_FOLDERS, load_recipe

    accepted = set(inspect.signature(run_momo).parameters) | set(
        PretrainConfig.__dataclass_fields__)
    names = {p.stem for p in RECIPES.glob("*.json")}
    for path in sorted(RECIPES.glob("*.json")):
        recipe = load_recipe(path)
        assert set(recipe.get("pretrain", {})) <= accepted, path.name
        if "finetune" in recipe:  # a model (comparison arm) recipe
            spec = recipe["finetune"]
            Recipe.from_dict(spec["recipe"])  # one-to-one: unknown fields would raise
            assert set(spec["data"]) <= set(TASK_FOLDERS.values())
            assert recipe["bundle"] == f"{path.stem}.bundle"
            assert ("pretrain" in recipe) == (recipe["finetune_from"] != "scratch")
        if "choose_from" in recipe:  # a bundled model: the best of its arms
            assert set(recipe["choose_from"]) <= names, path.name
            assert recipe["bundle"] == f"{path.stem}.bundle"
            assert (PACKAGE / "weights" / recipe["bundle"]).is_dir()
    assert {"crater-seg", "landmarks", "comparison"} <= names


def test_bundled_models_are_one_of_their_recipe_arms() -> None:
    """A bundled card records exactly the fine-tuning recipe of one of its arms (so that arm's
    recipe file rebuilds it) and that arm's name."""
    from dataclasses import asdict

    from momo_geo.training.finetune import Recipe
    from momo_geo.training.recipes import load_recipe

    for name in ("crater-seg", "landmarks"):
        selection = load_recipe(RECIPES / f"{name}.json")
        card = json.loads((PACKAGE / "weights" / f"{name}.bundle" / "card.json").read_text())
        matching = []
        for arm in selection["choose_from"]:
            recipe = load_recipe(RECIPES / f"{arm}.json")
            wanted = asdict(Recipe.from_dict(recipe["finetune"]["recipe"]))
            shipped = card["training"]["recipe"]
            if all(wanted[k] == shipped.get(k) for k in wanted if k not in ("extra", "encoder",
                                                                            "loss")):
                matching.append(recipe)
        assert len(matching) == 1, name
        assert card["name"] == matching[0]["card"]["name"]
        assert card["sensors"] == matching[0]["card"]["sensors"]


def test_reproduce_builds_its_encoders_with_the_package_pipeline(shared_data, tmp_path,
                                                                 monkeypatch, one_torch_thread
                                                                 ) -> None:
    import momo_geo.training.pipeline as pipeline
    from momo_geo.bundle import load_card
    from momo_geo.training.recipes import load_recipe, merged
    from training import reproduce

    calls = []
    real = pipeline.run_pretrain

    def spy(config):  # noqa: ANN001, ANN202
        calls.append(config)
        return real(config)

    monkeypatch.setattr(pipeline, "run_pretrain", spy)
    recipe = merged(load_recipe(RECIPES / "comparison.json"), {"pretrain": dict(
        img_size=32, batch_size=8, pool_size=16, val_size=4, base_samples=16,
        sensor_samples=16, joint_samples=16, checkpoint_every=8)})
    encoders, report, chosen = reproduce.build_encoders(recipe, shared_data, tmp_path,
                                                        threads=1, verbose=False)
    assert set(encoders) == set(reproduce.ENCODER_ROWS) and encoders["scratch"] is None
    assert [c.sensors for c in calls] == [["hirise", "ctx", "themis"], ["hirise"], ["ctx"],
                                          ["themis"], ["hirise", "ctx", "themis"]]
    assert all(c.lr == 0.0015 and c.img_size == 32 for c in calls)
    assert calls[-1].init_from == calls[1].init_from == str(tmp_path / "momo" / "base")
    merges = {n: load_card(encoders[n]).merge for n in ("naive-merge", "evl-merge", "evl-ties")}
    assert merges["naive-merge"]["selection"] == "last"
    assert merges["evl-merge"]["selection"] == "evl" and merges["evl-merge"]["lambda"] == 0.5
    assert merges["evl-ties"]["method"] == "ties" and merges["evl-ties"]["lambda"] == 1.0
    assert "Checkpoint selection: evl" in report and set(chosen["evl_choice"]) == {
        "hirise", "ctx", "themis"}
    state = reproduce.encoder_state(encoders["evl-merge"], 32)
    assert state["patch_embed.proj.weight"].shape[1] == 1  # RGB kernels summed for grey probes
