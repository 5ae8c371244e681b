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
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
            start = recipe["finetune_from"]
            assert ("pretrain" in recipe) == (start not in ("scratch",)
                                              and not start.endswith(".bundle")), path.name
        # a bundle it starts from (continue_from, finetune_from NAME.bundle) is built before
        # it, into the same folder
        merge = recipe.get("merge_of", {})
        for parent in (recipe.get("continue_from"), recipe.get("finetune_from"),
                       merge.get("base"), *merge.get("tuned", [])):
            if parent is None or not parent.endswith(".bundle"):
                continue
            parent = parent.removesuffix(".bundle")
            arms = (ROOT / "Makefile").read_text().split("ARMS :=")[1].split("models:")[0]
            arms = arms.replace("\\", " ").split()
            assert parent in names and arms.index(parent) < arms.index(path.stem), path.name
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
            # fields added since the bundle was built read as their defaults
            shipped = asdict(Recipe.from_dict(card["training"]["recipe"]))
            same_start = recipe.get("finetune_from", "momo") == card["training"].get(
                "finetune_from")  # a transfer arm and its random-start control differ only here
            if same_start and all(wanted[k] == shipped[k] for k in wanted
                                  if k not in ("extra", "encoder", "loss")):
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
    recipe["chosen_lam"] = 0.75  # the sweep's choice: the λ of the merges without their own
    encoders, report, chosen = reproduce.build_encoders(recipe, shared_data, tmp_path,
                                                        threads=1, verbose=False, seed=3)
    sweep = {reproduce.sweep_name(lam) for lam in recipe["sweep"]["lams"]}
    assert set(encoders) == (set(reproduce.ENCODER_ROWS) - {"evl-merge"}) | sweep
    assert encoders["scratch"] is None
    assert [c.sensors for c in calls] == [["hirise", "ctx", "themis"], ["hirise"], ["ctx"],
                                          ["themis"], ["hirise", "ctx", "themis"]]
    assert all(c.lr == 0.0015 and c.img_size == 32 for c in calls)
    assert {c.seed for c in calls} == {3, 4, 5}  # the pretraining seed reaches every run
    assert calls[-1].init_from == calls[1].init_from == str(tmp_path / "momo" / "base")
    merges = {n: load_card(encoders[n]).merge for n in encoders if n not in (
        "scratch", "base", "hirise-only", "ctx-only", "themis-only", "joint")}
    assert merges["last-merge"]["selection"] == "last"
    assert merges["early-stop-merge"]["selection"] == "best"
    assert merges["evl-min-spread"]["selection"] == "evl_min_spread"
    assert all(merges[n]["lambda"] == 0.75 for n in ("last-merge", "early-stop-merge",
                                                      "evl-min-spread"))
    assert merges["magmax"]["method"] == "magmax" and merges["ties"]["method"] == "ties"
    assert merges["ties"]["lambda"] == 1.0
    assert [merges[n]["lambda"] for n in sorted(sweep)] == [0.25, 0.5, 0.75, 1.0]
    assert all(merges[n]["selection"] == "evl" for n in sweep)
    assert "Checkpoint selection: evl" in report and set(chosen["evl_choice"]) == {
        "hirise", "ctx", "themis"}
    state = reproduce.encoder_state(encoders["evl-merge@0.5"], 32)
    assert state["patch_embed.proj.weight"].shape[1] == 1  # RGB kernels summed for grey probes


def fake_comparison_state() -> dict:
    """A small comparison state as training/reproduce.py saves it (two pretraining seeds)."""
    from training import reproduce

    recipe = json.loads((RECIPES / "comparison.json").read_text())
    rng = __import__("random").Random(0)

    def reports() -> dict:
        return {t: [{k: rng.random() for k in keys} for _ in range(recipe["probes"]["seeds"])]
                for t, keys in reproduce.KEEP.items()}

    runs = {}
    for seed in ("0", "1"):
        runs[seed] = {"table": {r: reports() for r in reproduce.ENCODER_ROWS},
                      "sweep": {f"{lam:g}": {"sel": reports(), "val": reports()}
                                for lam in recipe["sweep"]["lams"]},
                      "evl_report": "Checkpoint selection: evl", "seconds": {},
                      "evl_choice": {s: "checkpoints/step_000001.safetensors"
                                     for s in reproduce.SENSORS}}
    chosen, scores = reproduce.choose_lambda(runs, recipe["sweep"]["lams"])
    for run in runs.values():
        run["table"]["evl-merge"] = run["sweep"][f"{chosen:g}"]["val"]
    return {"runs": runs, "chosen_lam": chosen, "selection_scores": scores, "recipe": recipe,
            "joint_samples": 3, "command": "python training/reproduce.py", "seconds": 60.0,
            "baselines": {t: {k: 0.1 for k in keys} for t, keys in reproduce.KEEP.items()}}


def test_comparison_render_has_every_row_the_sweep_and_both_seeds(tmp_path) -> None:
    from training import report_models, reproduce

    state = fake_comparison_state()
    text = "\n".join(reproduce.render_comparison(state))
    for row in reproduce.ENCODER_ROWS:
        assert f"| {reproduce.ROW_LABELS[row]} |" in text and f"| {row} |" in text
    lam = state["chosen_lam"]
    sweep = [line for line in text.splitlines() if line.startswith("| ") and line[2:6].strip(
        " |*").replace(".", "").isdigit()]
    assert [line.split(" |")[0][2:].split(" ")[0] for line in sweep] == ["0.25", "0.5", "0.75",
                                                                         "1"]
    assert [line for line in sweep if "← chosen" in line] == [
        next(line for line in sweep if line.startswith(f"| {lam:g} "))]
    for seed in ("0", "1"):
        assert f"seed {seed} |" in text and f"pretraining seed {seed}:" in text
    pairs = 2 * state["recipe"]["probes"]["seeds"]
    assert f"95 % t-interval over all {pairs} (pretraining seed × probe seed) pairs" in text
    assert "row pairs differ by more than their intervals" in text
    # the selection score chose λ: it is the best of the selection column, whatever validation says
    assert state["selection_scores"][f"{lam:g}"] == max(state["selection_scores"].values())
    # results.md: the section replaced in place, the page above it kept
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nthe models' page\n")
    for _ in range(2):
        report_models.write_comparison_section(results, state)
    page = results.read_text()
    assert page.startswith("# Results\n\nthe models' page\n")
    assert page.count(report_models.COMPARISON_MARK) == 1
    assert page.count("## The encoder comparison") == 1 and "← chosen" in page


def test_the_random_base_row_is_rendered_and_read_when_it_was_run() -> None:
    from training import reproduce

    state = fake_comparison_state()
    assert "was not measured" in "\n".join(reproduce.render_comparison(state))
    rng = __import__("random").Random(1)
    for run in state["runs"].values():
        run["table"][reproduce.RANDOM_BASE] = {
            t: [{k: rng.random() for k in keys} for _ in range(3)]
            for t, keys in reproduce.KEEP.items()}
    state["random_base"] = {"base_samples": 64}
    text = "\n".join(reproduce.render_comparison(state))
    label = reproduce.ROW_LABELS[reproduce.RANDOM_BASE]
    assert f"| {label} |" in text and f"| {reproduce.RANDOM_BASE} |" in text
    assert "was measured (row *EVL merge from a random base*" in text
    assert "from the MAE base vs" in text and "was not measured" not in text


def test_make_models_parses_and_builds_every_arm() -> None:
    """``make models`` is the one command that rebuilds the bundled models: the Makefile parses
    and its build line names every arm the selection recipes choose from."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "models"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    build = next(line for line in dry.stdout.splitlines() if "build_models.py" in line)
    for name in ("crater-seg", "landmarks"):
        for arm in json.loads((RECIPES / f"{name}.json").read_text())["choose_from"]:
            assert f"training/recipes/{arm}.json" in build, arm


def test_continued_arms_are_read_by_what_changed_from_their_parent() -> None:
    from training import report_models

    def arm(parent: str | None, size: int = 160, coarse: float = 0.0, f1: float = 0.6,
            iou: float = 0.3, lr: float = 1e-3) -> dict:
        recipe = {"input_size": size, "coarse_chips": coarse, "epochs": 12, "chips": 1440,
                  "lr": lr}
        return {"training": {"init_bundle": f"{parent}.bundle" if parent else None,
                             "recipe": recipe,
                             "learning_curve": [{"samples": 100, "minutes": 1.0,
                                                 "crater_f1": f1, "iou": iou}]}}

    arms = {"base": arm(None), "longer": arm("base", f1=0.65), "coarse": arm("base", coarse=0.25),
            "big": arm("base", size=416, iou=0.4), "orphan": arm("missing"),
            "annealed": arm("base", lr=3e-4, iou=0.295)}
    plain, coarse, resized, annealed = report_models.continuations(arms)
    assert (plain, coarse, resized, annealed) == (
        {"longer": "base"}, {"coarse": "base"}, {"big": "base"}, {"annealed": "base"})
    text = "\n".join(report_models.reading(arms))
    assert "more training at 160 px still pays." in text
    assert "for 12 epochs at learning rate 0.0003 (`annealed`; its other continuations ran " \
           "at 0.001)" in text and "the lower rate changes nothing" in text
    # a lower rate than its parent's, with no sibling at another rate, is more of the same
    first = {"base": arm(None, lr=2e-3), "next": arm("base")}
    assert report_models.continuations(first)[0] == {"next": "base"}
    assert "on 416 px chips (`big`" in text and "0.300 → 0.400" in text
    assert "chips that hold the large craters whole pay." in text
    crater = {"metrics": {"themis-craters": {"crater_recall_by_diameter": [
        {"min_px": 8.0, "n": 10, "tp": 6, "recall": 0.6},
        {"min_px": 256.0, "n": 17, "tp": 5, "recall": 5 / 17}]}}}
    text = "\n".join(report_models.reading(arms, crater))
    assert "finds 5 of the 17 validation craters of 256 px and more, recall 0.29" in text


def test_selection_point_keeps_the_fine_smallest_size_beside_the_coarse_scores() -> None:
    from training import report_models

    sweep = [{"floor": 0.75, "min_diameter": 6.0, "iou": 0.3, "crater_precision": 0.7,
              "crater_recall": 0.6, "crater_f1": 0.65, "score": 0.65}]
    last_pass = {"scale": 0.125, "min_diameter": 64, "min_confidence": 0.5,
                 "max_residual": 0.15, "iou": 0.45, "crater_precision": 0.8,
                 "crater_recall": 0.61, "crater_f1": 0.69}
    card = {"training": {"learning_curve": [{"samples": 10, "iou": 0.2, "crater_f1": 0.4}],
                         "calibration": {"floor": 0.75, "min_diameter": 6.0, "sweep": sweep,
                                         "coarse": {"chosen": [{}, {}],
                                                    "sweeps": [[last_pass], [last_pass]]}}}}
    point = report_models.selection_point(card)
    assert point["min_diameter"] == 6.0 and point["iou"] == 0.45 and point["crater_f1"] == 0.69


def test_the_continued_arms_are_listed_from_their_cards() -> None:
    from training import report_models

    def arm(parent: str | None, size: int = 160, coarse: float = 0.0, epochs: int = 12,
            lr: float = 1e-3) -> dict:
        return {"training": {"init_bundle": f"{parent}.bundle" if parent else None,
                             "recipe": {"input_size": size, "coarse_chips": coarse,
                                        "epochs": epochs, "lr": lr}}}

    arms = {"base": arm(None), "long": arm("base", epochs=8), "big": arm("long", size=416),
            "coarse": arm("base", coarse=0.25), "slow": arm("long", lr=3e-4)}
    assert report_models.continued_list(arms) == (
        "`long` (`base` + 8 epochs), `big` (`long` + 12 epochs on 416 px chips), "
        "`coarse` (`base` + 12 epochs with coarse chips), "
        "`slow` (`long` + 12 epochs at learning rate 0.0003)")
    assert report_models.continued_list({"base": arm(None)}) == "none"


def test_a_merged_arm_counts_every_chip_of_its_runs_and_is_read_against_the_better():
    """A ``merge_of`` arm sits on the curves at its base's chips plus what each merged run
    trained past the base, is listed with its runs, and its reading compares it with the
    better run on the selection images."""
    from training import report_models

    def arm(parent: str | None, chips: int, f1: float, iou: float, minutes: float = 1.0,
            merge: dict | None = None) -> dict:
        training = {"init_bundle": f"{parent}.bundle" if parent else None,
                    "recipe": {"input_size": 160, "epochs": 8, "lr": 1e-3},
                    "learning_curve": [{"samples": chips, "minutes": minutes,
                                        "crater_f1": f1, "iou": iou}]}
        if merge:
            training["merge_of"] = merge
        return {"training": training}

    merge = {"base": "base.bundle", "tuned": ["a.bundle", "b.bundle"], "lam": 0.5}
    arms = {"base": arm(None, 1000, 0.6, 0.30, 10.0), "a": arm("base", 500, 0.62, 0.33, 5.0),
            "b": arm("base", 500, 0.61, 0.31, 6.0), "soup": arm(None, 0, 0.63, 0.36, 0.5, merge)}
    report_models.continue_curves(arms)
    point = arms["soup"]["training"]["learning_curve"][0]
    assert point["samples"] == 1000 + 500 + 500 and point["minutes"] == 10.0 + 5 + 6 + 0.5
    report_models.continue_curves(arms)  # counted once
    assert arms["soup"]["training"]["learning_curve"][0]["samples"] == 2000
    assert report_models.merged_runs(arms) == {"soup": ["a", "b"]}
    assert "`soup` (the mean of `a` and `b`)" in report_models.continued_list(arms)
    text = "\n".join(report_models.reading(arms))
    assert ("Merging `a` and `b` by task arithmetic (`soup`: λ 0.5, BatchNorm statistics "
            "measured again, no gradient step) moved the calibrated selection crater F1 "
            "0.620 → 0.630 and pixel IoU 0.330 → 0.360 against the better of them: merging "
            "pays.") in text
    del arms["b"]
    assert report_models.merged_runs(arms) == {}


def test_the_selection_noise_is_rendered_with_validation_beside_it(tmp_path) -> None:
    from training import report_models

    def arm(chips: int, iou: float) -> dict:
        return {"training": {"learning_curve": [{"samples": chips, "iou": 0.4}],
                             "recipe": {"select_fraction": 0.1}},
                "metrics": {"themis-craters": {"iou": iou}}}

    noise = {"reference": "ref", "images": 63,
             "images_by_folder": {"ctx-craters": 1, "themis-craters": 62}, "boot": 2000,
             "arms": [{"arm": "ref", "value": 1.1766, "difference": 0.0,
                       "difference_ci": [0.0, 0.0], "higher_share": 0.0},
                      {"arm": "other", "value": 1.168, "difference": -0.0086,
                       "difference_ci": [-0.05, 0.03], "higher_share": 0.31}],
             "median_half_width": 0.04, "images_for": {"0.02": 252, "0.01": 1008},
             "by_folder": {"themis-craters": {"iou": [
                 {"arm": "ref", "difference": 0.0, "difference_ci": [0.0, 0.0]},
                 {"arm": "other", "difference": 0.014, "difference_ci": [-0.028, 0.054]}]}}}
    path, val = tmp_path / "noise.json", tmp_path / "val.json"
    assert report_models.selection_noise_section({}, path, val) == []
    path.write_text(json.dumps(noise))
    arms = {"ref": arm(80640, 0.37), "other": arm(115200, 0.44)}
    text = "\n".join(report_models.selection_noise_section(arms, path, val))
    assert "63 selection images (1 ctx-craters, 62 themis-craters)" in text
    assert "| other | 115,200 | 1.1680 | -0.0086 | [-0.0500, +0.0300] | 31% | – | – | – |" in text
    assert "0.02 would need about 252 selection images and 0.01 about 1,008" in text
    assert "the whole train split is about 630 images" in text
    assert "crops alone the other arms' pixel IoU differs by +0.014 [-0.028, +0.054] (`other`)" \
        in text
    assert "On validation" not in text
    assert report_models.selection_noise_pointer(path) == (
        "Choosing an arm of that scale needs selection images that can tell it from the "
        "others: the 63 held out resolve about ±0.040 of crater F1 + IoU (section *Can the "
        "selection images tell crater arms apart?* below); ±0.02 would take about 252. ")
    assert report_models.selection_noise_pointer(tmp_path / "none.json") == ""
    rows = [{"arm": "ref", "value": 0.37, "difference": 0.0, "difference_ci": [0.0, 0.0],
             "higher_share": 0.0},
            {"arm": "other", "value": 0.44, "difference": 0.07, "difference_ci": [0.01, 0.12],
             "higher_share": 0.99}]
    val.write_text(json.dumps({"reference": "ref", "by_folder": {
        "themis-craters": {"iou": rows}}}))
    text = "\n".join(report_models.selection_noise_section(arms, path, val))
    assert "| 31% | 0.440 | +0.070 | [+0.010, +0.120] |" in text
    assert "On validation 1 of the 1 other arms' THEMIS IoU is above the reference's with a " \
           "paired interval clear of zero (`other`)." in text
    assert report_models.selection_noise_section({"other": arms["other"]}, path, val) == []


def test_landmark_noise_is_a_section_with_validation_beside_it(tmp_path) -> None:
    from training import report_models

    def row(arm: str, value: float, diff: float, ci: list[float], share: float) -> dict:
        return {"arm": arm, "value": value, "difference": diff, "difference_ci": ci,
                "higher_share": share}

    path, val = tmp_path / "noise.json", tmp_path / "val.json"
    assert report_models.landmark_noise_section({}, path, val, tmp_path / "none") == []
    path.write_text(json.dumps({
        "reference": "ref", "images": 248, "products": 15, "boot": 2000,
        "median_half_width": 0.081,
        "arms": [row("ref", 1.7775, 0.0, [0.0, 0.0], 0.0),
                 row("new", 1.70, -0.0776, [-0.2, 0.05], 0.12)]}))
    arms = {"ref": {}, "new": {}}
    text = "\n".join(report_models.landmark_noise_section(arms, path, val, tmp_path / "none"))
    assert "248 selection crops of 15 HiRISE products" in text
    assert "| new | 1.700 | -0.078 | [-0.200, +0.050] | 12% | – | – | – | – | – | – |" in text
    assert "The median half-width is 0.081" in text
    assert "drew different folds" not in text  # no out-of-fold file: no caveat about folds
    val.write_text(json.dumps({"reference": "ref", "arms": [
        row("ref", 1.2, 0.0, [0.0, 0.0], 0.0), row("new", 1.25, 0.05, [-0.01, 0.1], 0.9)]}))
    oof = tmp_path / "oof.json"
    oof.write_text(json.dumps({"reference": "other", "arms": []}))  # another reference: unread
    text = "\n".join(report_models.landmark_noise_section(arms, path, val, oof))
    assert "| 12% | – | – | – | 1.250 | +0.050 | [-0.010, +0.100] |" in text
    oof.write_text(json.dumps({"reference": "ref", "arms": [
        row("ref", 1.32, 0.0, [0.0, 0.0], 0.0), row("new", 1.31, -0.01, [-0.08, 0.01], 0.1)]}))
    text = "\n".join(report_models.landmark_noise_section(arms, path, val, oof))
    assert "| 12% | 1.310 | -0.010 | [-0.080, +0.010] | 1.250 | +0.050 |" in text
    assert "arms that drew different folds differ also by where" in text
    assert report_models.landmark_noise_section({"new": {}}, path, val, oof) == []
    saturated = json.loads(path.read_text())
    saturated["median_half_width"] = 0.0
    path.write_text(json.dumps(saturated))
    assert "they classify each selection crop the same" in \
        report_models.landmark_noise_section(arms, path, val, oof)[-1]


def test_members_are_read_at_the_floor_their_held_out_crops_chose() -> None:
    from training import report_models

    def row(floor: float, weighted: float, macro: float) -> dict:
        return {"floor": floor, "f1_weighted": weighted, "f1_macro": macro,
                "score": (weighted + macro) / 2}

    sweep = [row(0.0, 0.80, 0.60), row(0.7, 0.84, 0.70), row(0.8, 0.86, 0.76)]
    card = {"name": "momo-geo-folded", "architecture": {"kind": "cnn_cls", "members": 4},
            "training": {"seconds": 60.0,
                         "learning_curve": [{"epoch": 30, "members": 1, "samples": 9,
                                             "minutes": 1.0, "f1_weighted": 0.8,
                                             "f1_macro": 0.6}],
                         "calibration": {"floor": 0.7, "sweep": sweep, "training_crops": 2331,
                                         "selection_images": 248,
                                         "folds_sweep": [row(0.0, 0.6, 0.4), row(0.7, 0.7, 0.5),
                                                         row(0.8, 0.6, 0.3)]}}}
    single = {"name": "momo-geo-single",
              "training": {"learning_curve": [{"f1_weighted": 0.83, "f1_macro": 0.7}],
                           "calibration": {"floor": 0.8, "selection_images": 248,
                                           "sweep": [row(0.0, 0.79, 0.60),
                                                     row(0.8, 0.85, 0.72)]}}}
    text = report_models.members_reading(card, single)
    assert "4 cross-fitted members (`folded`: `single`'s recipe" in text
    assert "scored level (within 0.02 of weighted + macro F1) without floors: selection " \
        "weighted / macro F1 0.800 / 0.600 against 0.790 / 0.600" in text
    assert "At their floors they read 0.840 / 0.700 (floor 0.7, chosen on 2,331 out-of-fold" in text
    assert "against 0.850 / 0.720 (floor 0.8, chosen on the selection crops" in text
    assert "the floor 0.8 scores 0.450 (mean of weighted and macro F1) against 0.600 at 0.7" in text
    assert report_models.members_reading(None, single) == ""
    rows = report_models.arm_rows({"folded": {**card, "metrics": {}}}, {})
    assert "| folded | cnn_cls × 4 | none (CNN) |" in rows[2] and "members" not in rows[2]
    curve = report_models.curve_rows({"folded": card})
    assert curve[2].startswith("| folded | 30 (1 member) | 9 | 1.0 | f1_weighted 0.800,")
    floors = report_models.landmark_floor_rows({"folded": card, "single": single})
    assert floors[2] == ("| folded | 0.7 | 2,331 out-of-fold crops | 0.800 / 0.600 → "
                         "0.840 / 0.700 | 0.600 / 0.400 → 0.700 / 0.500 |")
    assert floors[3] == "| single | 0.8 | 248 selection crops | 0.790 / 0.600 → 0.850 / 0.720 | – |"
    # compared without floors, the members win here; at the chosen floors the single one would
    selection = {"choose_from": ["folded", "single"], "criterion": ["f1_weighted", "f1_macro"]}
    assert report_models.choose(selection, {"folded": card, "single": single}) == "single"
    selection["compare_at_floor"] = "none"
    assert report_models.choose(selection, {"folded": card, "single": single}) == "folded"

def test_transfer_is_read_against_its_random_start_and_the_cnn_members() -> None:
    from training import report_models

    def arm(start: str, kind: str, raw: tuple, out_of_fold: tuple) -> dict:
        def sweep(scores: tuple) -> list:
            return [{"floor": 0.0, "f1_weighted": scores[0], "f1_macro": scores[1]},
                    {"floor": 0.6, "f1_weighted": 0.99, "f1_macro": 0.99}]

        return {"architecture": {"kind": kind, "members": 4},
                "training": {"finetune_from": start,
                             "calibration": {"sweep": sweep(raw),
                                             "folds_sweep": sweep(out_of_fold)}}}

    transfer = arm("craters-unet-longest.bundle", "unet_cls", (0.9, 0.6), (0.85, 0.5))
    control = arm("scratch", "unet_cls", (0.8, 0.4), (0.8, 0.45))
    cnn = arm("scratch", "cnn_cls", (0.84, 0.74), (0.84, 0.47))
    text = report_models.transfer_reading(transfer, control, cnn)
    assert "(`landmarks-unet-transfer`, from `craters-unet-longest`) helped against" in text
    assert ("without floors 0.900 / 0.600 against 0.800 / 0.400 on the selection crops, and "
            "0.850 / 0.500 against 0.800 / 0.450 on the out-of-fold training crops") in text
    assert "(`landmarks-cnn-folds`) read 0.840 / 0.740 and 0.840 / 0.470." in text
    assert "did not help" in report_models.transfer_reading(control, transfer, None)
    assert report_models.transfer_reading(transfer, None, cnn) == ""
    assert report_models.tta_reading("t", transfer) == ""
    rows = {"none": [{"floor": 0.0, "f1_weighted": 0.85, "f1_macro": 0.5}],
            "d4": [{"floor": 0.0, "f1_weighted": 0.86, "f1_macro": 0.52}]}
    transfer["training"]["calibration"]["tta"] = {
        "criterion": "mean of f1_weighted and f1_macro on the out-of-fold predictions of the "
                     "training crops", "chosen": "d4", "scores": {"none": 0.675, "d4": 0.69},
        "sweeps": rows}
    text = report_models.tta_reading("t", transfer)
    assert "training crops 0.690 against 0.675" in text and "kept `d4`" in text
    assert "on the out-of-fold training crops: 0.860 / 0.520 against 0.850 / 0.500" in text
    assert report_models.arm_encoder(transfer) == "`craters-unet-longest` (transfer)"
    assert report_models.arm_encoder(control) == "none (CNN)"
    assert report_models.arm_encoder({"architecture": {"kind": "vit_cls"},
                                      "training": {"finetune_from": "momo"}}) == "momo"


def test_the_data_curve_is_rendered_per_share(tmp_path) -> None:
    from training import report_models

    assert report_models.data_curve_section(tmp_path / "none.jsonl") == []
    def run(share: float, seed: int, products: int, crops: int, weighted: float,
            macro: float) -> dict:
        return {"recipe": "lm", "share": share, "seed": seed, "products": products,
                "crops": crops, "f1_weighted": weighted, "f1_macro": macro}

    runs = [run(0.5, 1, 40, 1100, 0.70, 0.40), run(0.5, 2, 40, 1200, 0.74, 0.50),
            run(1.0, 1, 80, 2331, 0.80, 0.60)]
    path = tmp_path / "curve.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in runs))
    text = "\n".join(report_models.data_curve_section(path))
    assert "| 50% | 40 | 1,100-1,200 | 2 | 0.720 [0.700, 0.740] | 0.450 [0.400, 0.500] |" in text
    assert "| 100% | 80 | 2,331 | 1 | 0.800 [0.800, 0.800] |" in text
    assert "weighted F1 by +0.080 and macro F1 by +0.150" in text and "3 runs" in text
    assert "Two draws of one share differ by up to 0.040 in weighted F1" in text


def test_a_built_arm_is_recorded_and_read_where_its_bundle_is_gone(tmp_path) -> None:
    """build_models records each arm's card; report_models prefers a built bundle's card and
    falls back to the recorded one, and refuses to promote an arm it cannot copy."""
    from training import build_models, report_models

    built = tmp_path / "bundles" / "arm-a.bundle"
    built.mkdir(parents=True)
    (built / "card.json").write_text(json.dumps({"name": "built", "weights_sha256": "aa"}))
    recorded = tmp_path / "cards"
    assert build_models.record_card(built, recorded) == recorded / "arm-a.json"
    (recorded / "arm-b.json").write_text(json.dumps({"name": "old", "weights_sha256": "bb"}))
    (recorded / "arm-a.json").write_text(json.dumps({"name": "stale", "weights_sha256": "cc"}))
    cards = report_models.load_cards(tmp_path / "bundles", ["arm-a", "arm-b", "arm-c"],
                                     recorded)
    assert {k: v["name"] for k, v in cards.items()} == {"arm-a": "built", "arm-b": "old"}
    shipped = tmp_path / "weights" / "x.bundle"
    shipped.mkdir(parents=True)
    (shipped / "card.json").write_text(json.dumps({"weights_sha256": "bb"}))
    report_models.promote(tmp_path / "bundles", "arm-b", shipped, cards["arm-b"])  # shipped
    assert json.loads((shipped / "card.json").read_text()) == {"weights_sha256": "bb"}
    with pytest.raises(SystemExit, match="arm-b is chosen"):
        report_models.promote(tmp_path / "bundles", "arm-b", shipped, {"weights_sha256": "dd"})
    (built / "copied-in.bundle").mkdir()
    with pytest.raises(SystemExit, match="holds copied-in.bundle"):
        report_models.promote(tmp_path / "bundles", "arm-a", shipped, cards["arm-a"])
    (built / "copied-in.bundle").rmdir()
    (built / "weights.safetensors").write_bytes(b"")
    report_models.promote(tmp_path / "bundles", "arm-a", shipped, cards["arm-a"])
    assert json.loads((shipped / "card.json").read_text())["name"] == "built"
    assert sorted(p.name for p in shipped.iterdir()) == ["card.json", "weights.safetensors"]


def test_a_tie_on_selection_keeps_the_arm_listed_first() -> None:
    from training import report_models

    def arm(weighted: float) -> dict:
        row = {"floor": 0.0, "f1_weighted": weighted, "f1_macro": 0.8}
        return {"training": {"calibration": {"sweep": [row]}}}

    selection = {"criterion": ["f1_weighted", "f1_macro"], "compare_at_floor": "none",
                 "choose_from": ["first", "second", "third"]}
    cards = {"second": arm(0.93), "first": arm(0.93), "third": arm(0.92)}
    assert report_models.choose(selection, cards) == "first"
    assert report_models.tied(selection, cards, "first") == ["second"]
    cards["third"] = arm(0.94)
    assert report_models.choose(selection, cards) == "third"
    assert report_models.tied(selection, cards, "third") == []


def test_a_tie_on_selection_is_broken_by_the_out_of_fold_crops() -> None:
    from training import report_models

    def arm(oof_macro: float | None, crops: int = 2330) -> dict:
        row = {"floor": 0.0, "f1_weighted": 0.93, "f1_macro": 0.85}
        calibration = {"sweep": [row]}
        if oof_macro is not None:
            calibration["folds_sweep"] = [{"floor": 0.0, "f1_weighted": 0.86,
                                           "f1_macro": oof_macro}]
            calibration["training_crops"] = crops
        return {"training": {"calibration": calibration}}

    selection = {"criterion": ["f1_weighted", "f1_macro"], "compare_at_floor": "none",
                 "choose_from": ["single", "first", "second"]}
    cards = {"single": arm(None), "first": arm(0.45), "second": arm(0.46)}
    assert report_models.choose(selection, cards) == "second"
    assert "break it: mean of f1_weighted and f1_macro 0.6600 against 0.6550" in \
        report_models.tie_break(selection, cards, "second", "first")
    assert "keeps the arm listed first" in \
        report_models.tie_break(selection, cards, "second", "single")
    cards["second"] = arm(0.60, crops=2310)  # fewer crops (a class dropped): not comparable
    assert report_models.choose(selection, cards) == "first"
    assert "cannot break" in report_models.tie_break(selection, cards, "first", "second")
    cards["second"] = arm(0.45)  # equal out of fold too: the first listed of them
    assert report_models.choose(selection, cards) == "first"
    del cards["first"], cards["second"]
    assert report_models.choose(selection, cards) == "single"


def test_an_arm_that_fails_the_product_guard_does_not_ship(tmp_path, monkeypatch) -> None:
    from training import report_models

    def arm(weighted: float, sha: str) -> dict:
        row = {"floor": 0.0, "f1_weighted": weighted, "f1_macro": 0.8}
        return {"weights_sha256": sha, "training": {"calibration": {"sweep": [row]}}}

    selection = {"criterion": ["f1_weighted", "f1_macro"], "compare_at_floor": "none",
                 "choose_from": ["first", "second", "third"],
                 "product_guard": {"scene": "scene.tif", "max_crater_share": 0.02}}
    cards = {"first": arm(0.90, "a"), "second": arm(0.95, "b"), "third": arm(0.93, "c")}
    record = tmp_path / "guard.json"
    record.write_text(json.dumps({"second": {"weights_sha256": "b", "crater_share": 0.09},
                                  "third": {"weights_sha256": "c", "crater_share": 0.005},
                                  "first": {"weights_sha256": "old", "crater_share": 0.5}}))
    monkeypatch.setattr(report_models, "GUARD_FILE", record)
    before = record.read_text()
    shares = report_models.product_guard(selection, cards, tmp_path / "none", tmp_path)
    assert shares == {"second": 0.09, "third": 0.005}  # stops at the first arm that passes
    assert record.read_text() == before  # a preview leaves the record as it is
    report_models.product_guard(selection, cards, tmp_path / "none", tmp_path, record=True)
    assert record.read_text() != before  # written (indented) by --promote
    assert json.loads(record.read_text()) == json.loads(before)  # nothing new measured
    assert report_models.choose(selection, cards, shares) == "third"
    assert report_models.choose(selection, cards) == "second"  # unmeasured arms pass
    cards["third"]["weights_sha256"] = "rebuilt"  # a record of other weights is not read
    assert report_models.product_guard(selection, cards, tmp_path / "none", tmp_path) == {
        "second": 0.09}
    assert report_models.choose({**selection, "product_guard": {}}, cards, shares) == "second"


def test_the_curves_put_each_target_beside_the_validation_score_as_shipped() -> None:
    """The learning-curve figure draws, on the THEMIS IoU panel, the issue's target and the
    recorded arms' validation scores (the values the comparison tables hold)."""
    import matplotlib.pyplot as plt

    from training import report_models

    names = ["craters-unet", "craters-unet-longest", "landmarks-unet-transfer"]
    cards = report_models.load_cards(ROOT / "no-bundles", names)
    report_models.continue_curves(cards)
    fig = report_models.curve_figure(cards)
    panels = dict(zip([p[1] for p in report_models.CURVE_PANELS], fig.axes, strict=True))
    iou = panels["iou"]
    diamonds = sorted(float(line.get_ydata()[0]) for line in iou.lines
                      if line.get_marker() == "D")
    expected = sorted(cards[n]["metrics"]["themis-craters"]["iou"] for n in names[:2])
    assert diamonds == pytest.approx(expected)
    assert any(list(line.get_ydata()) == [0.40, 0.40] for line in iou.lines)
    macro = [float(line.get_ydata()[0]) for line in panels["f1_macro"].lines
             if line.get_marker() == "D"]
    assert macro == pytest.approx([cards[names[2]]["metrics"]["landmarks"]["f1_macro"]])
    plt.close(fig)


def test_the_validation_chain_is_read_against_a_line_in_log_chips() -> None:
    """Four plain continuations on a straight line in log(chips) predict the fifth; a fifth
    below the line is reported as below it, with the chips the line would need."""
    from training import report_models

    def arm(parent: str, chips: int, iou: float) -> dict:
        return {"training": {"learning_curve": [{"samples": chips, "iou": 0.1}],
                             "init_bundle": f"{parent}.bundle" if parent else None},
                "metrics": {"themis-craters": {"iou": iou}}}

    chain = {"a": arm("", 1000, 0.10), "b": arm("a", 2000, 0.15), "c": arm("b", 4000, 0.20),
             "d": arm("c", 8000, 0.25), "e": arm("d", 16000, 0.26)}
    text = report_models.validation_chain(chain, {"b": "a", "c": "b", "d": "c", "e": "d"})
    assert "`a` → `b` → `c` → `d` → `e`" in text
    assert "+0.050 per doubling" in text and "predicts 0.300 for the last, which read 0.260" in text
    assert "On that line the target 0.40 would need 64,000 chips" in text
    assert "other continuations" not in text
    assert report_models.validation_chain(chain, {"b": "a", "c": "b"}) == ""
    chain |= {"f": arm("d", 12000, 0.31), "g": arm("f", 24000, 0.40), "h": arm("b", 3000, 0.5)}
    text = report_models.validation_chain(chain, {"b": "a", "c": "b", "d": "c", "e": "d",
                                                  "f": "d"}, off_chain={"g": "f", "h": "b"})
    assert "`a` → `b` → `c` → `d` → `e`" in text
    assert ("past its points: `f` (12,000 chips) predicted 0.279, read 0.310; "
            "`g` (24,000 chips) predicted 0.329, read 0.400.") in text
    assert "`h`" not in text


def test_crater_snapshots_ship_arms_as_their_mean_probability(tmp_path) -> None:
    """Two saved U-Nets of one selection split become one bundle whose model returns the log
    of their mean probability; arms of different splits are refused."""
    import torch

    from momo_geo.bundle import ModelCard, load_bundle, save_bundle
    from momo_geo.errors import MomoGeoError
    from momo_geo.models import create_model
    from training import crater_snapshots

    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "crater", "color": "#ff8000"}]
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        card = ModelCard(name=f"arm{seed}", task="segmentation", in_chans=1, input_size=32,
                         architecture={"kind": "unet", "encoder": "unet", "width": 4,
                                       "levels": 3},
                         classes=classes,
                         training={"selection_images": 2, "recipe": {"split_seed": 0}})
        model = create_model(card).eval()
        save_bundle(tmp_path / f"arm{seed}.bundle", model.state_dict(), card)
        members.append(model)
    out = tmp_path / "mean.bundle"
    crater_snapshots.assemble(tmp_path, ["arm0", "arm1"], out)
    ensemble = load_bundle(str(out)).build_model().eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)
        assert torch.allclose(ensemble(x).exp(), expected, atol=1e-5)
    other = json.loads((tmp_path / "arm1.bundle" / "card.json").read_text())
    other["training"]["selection_images"] = 3
    (tmp_path / "arm1.bundle" / "card.json").write_text(json.dumps(other))
    with pytest.raises(MomoGeoError, match="selection split"):
        crater_snapshots.assemble(tmp_path, ["arm0", "arm1"], out)


def test_landmark_scale_reads_crop_spans_from_how_much_a_crater_fills() -> None:
    """A crater filling half a crop's width means a crop of 120 browse pixels (30 a side)."""
    import numpy as np

    from training import landmark_scale

    fill = np.array([0.5, 0.5, 0.5, np.nan, 0.75])
    out = landmark_scale.scale_estimate(fill, input_size=96, browse_gsd=4.0,
                                        browse_range=(2.0, 8.0))
    assert out["crater_crops"] == 5 and out["crater_found"] == 4
    assert out["span_browse_px"]["median"] == 120
    assert out["gsd"] == round(4.0 * 120 / 96, 1)
    lo, hi = out["gsd_range"]
    assert lo == round(2.0 * 120 / 96, 1) and hi > 8.0 * 120 / 96  # the 240 px crop widens it


def test_the_crater_size_curve_is_rendered_by_chips_seen(tmp_path) -> None:
    """crater_sizes.py lines of two arms become one row each, in order of chips seen, under the
    bins' share of the labelled area; arms not in the report and other tasks are left out."""
    from training import report_models

    def line(arm: str, task: str, covered: list[float], iou: float) -> str:
        bins = [{"min_px": low, "craters": n, "labelled_px": px, "covered": c,
                 "iou_if_whole_from_here": 0.9 - k / 10}
                for k, (low, n, px, c) in enumerate(zip((8.0, 128.0), (30, 2), (1000, 3000),
                                                        covered, strict=True))]
        return json.dumps({"arm": arm, "task": task, "images": 5, "bins": bins,
                           "growth": {"1": {"iou": iou, "crater_f1": 0.6}}})

    def arm(chips: int) -> dict:
        return {"training": {"learning_curve": [{"samples": chips, "iou": 0.1}]}}

    path = tmp_path / "sizes.jsonl"
    assert report_models.size_curve_section({}, path) == []
    path.write_text("\n".join([line("late", "themis-craters", [0.6, 0.5], 0.4),
                               line("early", "themis-craters", [0.5, 0.2], 0.3),
                               line("early", "ctx-craters", [0.1, 0.1], 0.1),
                               line("gone", "themis-craters", [0.0, 0.0], 0.0)]) + "\n")
    text = "\n".join(report_models.size_curve_section(
        {"early": arm(1000), "late": arm(4000)}, path))
    assert "| 8–128 | ≥ 128 |" in text and "| 25% (30) | 75% (2) |" in text
    assert text.index("| early | 1,000 | 0.50 | 0.20 | 0.300 |") < text.index("| late | 4,000 |")
    assert "gone" not in text and "0.10" not in text
    assert "≥ 128 px 0.20 → 0.50" in text and "0.800 from 128 px" in text
