"""Recipe files: one JSON per model (or experiment) that the one pipeline turns into a bundle.

A model recipe (the checkout's ``training/recipes/crater-seg.json`` and ``landmarks.json`` build
the bundled models) has four parts::

    {"bundle": "crater-seg.bundle",
     "pretrain": {...},          keyword arguments of momo_geo.training.pipeline.run_momo
     "finetune_from": "momo",    which encoder of that run: "momo" (the merged bundle) or "base"
     "finetune": {"task": "ctx-craters", "data": ["ctx_craters", ...], "synthetic_fields": 4,
                  "half": true, "recipe": {...}},      recipe: the fields of finetune.Recipe
     "card": {"name": ..., "description": ..., "gsd": ..., "gsd_range": ..., "sensors": ...,
              "data": [...]}}    what the model card says about the model's purpose

An optional ``"continue_from": "<another recipe's bundle>"`` starts the fine-tuning from that
bundle's whole weights (built first into the same output folder) instead of an encoder: a
longer schedule measured as a continuation of a shorter one. ``"finetune_from"`` may also name
another recipe's bundle (``"craters-unet-longest.bundle"``, built first into the same folder):
its U-Net down path starts a ``unet_cls`` landmark classifier (transfer from craters).

:func:`build_model` runs it: ``run_momo`` (base → per-sensor runs → EVL → merge), then
:func:`~momo_geo.training.finetune.finetune`, then the card fields. Recipes whose ``pretrain``
parts are equal share one pretraining run (cached under the work folder by a hash of it).
Every seed is in the recipe, so a rerun rebuilds the same model on the same machine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from momo_geo.errors import MomoGeoError

TASK_FOLDERS = {"landmarks": "hirise_landmarks", "ctx-craters": "ctx_craters",
                "themis-craters": "themis_craters"}
"""The folder of each task in the shared data (``../shared/data``)."""
ENCODERS = {"momo": "momo.bundle", "base": "base/encoder.bundle", "scratch": None}
"""``finetune_from`` -> the encoder bundle inside a ``run_momo`` folder; ``scratch``: none (a
randomly initialised encoder, or a CNN without one; no pretraining runs)."""


CARD_FIELDS = ("gsd", "gsd_range", "sensors", "tile_size", "tile_overlap", "source_tile")
"""Card fields a recipe's ``card`` part may set beside name and description."""


def load_recipe(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()
                ) -> dict[str, Any]:
    """A recipe file, with ``KEY.PATH=JSON`` overrides applied (e.g. ``pretrain.seed=1``)."""
    try:
        recipe = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MomoGeoError(f"{path}: unreadable recipe ({exc})") from None
    if not isinstance(recipe, dict):
        raise MomoGeoError(f"{path}: a recipe is a JSON object")
    for item in overrides:
        apply_override(recipe, item)
    return recipe


def apply_override(recipe: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=VALUE`` in place; VALUE is JSON (``32``, ``true``, ``"x"``) or a bare string."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise MomoGeoError(f"override {item!r}: use KEY.PATH=VALUE")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    *parents, last = key.split(".")
    node = recipe
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise MomoGeoError(f"override {item!r}: {name} is not an object")
    node[last] = value


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, object by object (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pretrain_run(pretrain: dict[str, Any], work: str | os.PathLike[str], data_root: str,
                 threads: int | None = None, verbose: bool = True) -> Path:
    """The ``run_momo`` folder for a recipe's ``pretrain`` part, trained unless already there.

    The folder is ``WORK/pretrain-<hash>`` (hash of the settings and the data folder), so
    recipes with equal pretraining share it and an interrupted build resumes after it.
    """
    from momo_geo.training.pipeline import run_momo

    key = json.dumps({"pretrain": pretrain, "data": str(data_root)}, sort_keys=True)
    out = Path(work) / f"pretrain-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    if (out / "momo.bundle").is_dir() and (out / "pipeline.json").is_file():
        return out
    kwargs = dict(pretrain)
    if threads:
        kwargs.setdefault("threads", threads)
    run_momo(out, data_root=str(data_root), overwrite=True, verbose=verbose, **kwargs)
    (out / "recipe.json").write_text(key + "\n")
    return out


def data_roots(spec: dict[str, Any], data_root: str) -> list[str]:
    """The data folders of a recipe's ``finetune`` part (what its bundle is scored on)."""
    return [str(Path(data_root) / folder) for folder in spec["data"]]


def finetune_data(spec: dict[str, Any], data_root: str) -> tuple[list[str], list[Any]]:
    """The data folders of a recipe's ``finetune`` part, and the synthetic crater fields that
    join their training images (an empty list when the recipe asks for none)."""
    from momo_geo.training.task_data import synthetic_crater_data

    fields = int(spec.get("synthetic_fields", 0))
    return data_roots(spec, data_root), [synthetic_crater_data(fields)] if fields else []


def selection_data(spec: dict[str, Any], data_root: str) -> Any:
    """The selection images that a recipe's ``finetune`` part holds out of training, drawn again
    exactly as its training drew them (a :class:`~momo_geo.evaluate.TaskData`): what scripts
    calibrate or measure a built bundle on without reading the validation split."""
    from momo_geo.training.finetune import Recipe, training_split

    roots, extra = finetune_data(spec, data_root)
    _, select = training_split(spec["task"], roots, Recipe.from_dict(spec.get("recipe", {})),
                               extra)
    if select is None:
        raise MomoGeoError("the recipe holds out no selection images (select_fraction 0)")
    return select


def continued_bundle(recipe: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path | None:
    """The bundle a recipe's ``continue_from`` names (another recipe's ``bundle``, built into
    the same ``out_dir`` first), or ``None``: the run then starts from its encoder."""
    name = recipe.get("continue_from")
    return None if name is None else built_bundle(str(name), out_dir, "continue_from")


def built_bundle(name: str, out_dir: str | os.PathLike[str], field: str) -> Path:
    """Another recipe's bundle ``name`` in ``out_dir``, which must already be built."""
    path = Path(out_dir) / name
    if not (path / "card.json").is_file():
        raise MomoGeoError(f"{field}: {path} is not built; build the recipe whose bundle "
                           f"is {name!r} first (list it before this one)")
    return path


def build_model(recipe: dict[str, Any], out_dir: str | os.PathLike[str],
                work: str | os.PathLike[str], data_root: str, threads: int | None = None,
                verbose: bool = True) -> Path:
    """Pretrain (or reuse), fine-tune and describe one model; returns its bundle path. A
    ``merge_of`` recipe merges other recipes' bundles instead (:mod:`.soup`)."""
    from momo_geo.training.finetune import Recipe, finetune, task_of_root

    if "merge_of" in recipe:
        return _described(build_merged_model(recipe, out_dir, data_root), recipe, "merge_of")

    source = str(recipe.get("finetune_from", "momo"))
    pretrains = source not in ("scratch",) and not source.endswith(".bundle")
    if source not in ENCODERS and not source.endswith(".bundle"):
        raise MomoGeoError(f"finetune_from must be one of {', '.join(ENCODERS)} or another "
                           f"recipe's bundle (NAME.bundle), not {source!r}")
    for part in ("bundle", "finetune", "card") + (("pretrain",) if pretrains else ()):
        if part not in recipe:
            raise MomoGeoError(f"recipe has no {part!r}")
    init = continued_bundle(recipe, out_dir)
    encoder = None
    if source.endswith(".bundle"):
        encoder = str(built_bundle(source, out_dir, "finetune_from"))
    elif ENCODERS[source] is not None and init is None:
        run = pretrain_run(recipe["pretrain"], work, data_root, threads, verbose)
        encoder = str(run / ENCODERS[source])
    spec = recipe["finetune"]
    ft = Recipe.from_dict(spec.get("recipe", {}))
    if spec.get("synthetic_fields"):
        ft.extra = {**ft.extra, "synthetic_fields": spec["synthetic_fields"]}
    roots, extra = finetune_data(spec, data_root)
    card = recipe["card"]
    path, _ = finetune(spec["task"], roots if len(roots) > 1 else roots[0],
                       Path(out_dir) / recipe["bundle"], encoder_bundle=encoder,
                       recipe=ft, name=card.get("name"),
                       eval_tasks=[(task_of_root(spec["task"], r), r) for r in roots],
                       extra_train=extra, overwrite=True,
                       card_fields={k: card[k] for k in CARD_FIELDS if k in card},
                       half=bool(spec.get("half", False)),
                       description=card.get("description", ""),
                       init_bundle=str(init) if init is not None else None)
    return _described(path, recipe, source, recipe.get("pretrain") if encoder else None)


def build_merged_model(recipe: dict[str, Any], out_dir: str | os.PathLike[str], data_root: str
                       ) -> Path:
    """A ``merge_of`` recipe's bundle (:func:`momo_geo.training.soup.build_merged`)."""
    from momo_geo.training.soup import build_merged

    for part in ("bundle", "finetune", "card"):
        if part not in recipe:
            raise MomoGeoError(f"recipe has no {part!r}")
    return build_merged(recipe, out_dir, data_root)


def _described(path: Path, recipe: dict[str, Any], source: str,
               pretrain: dict[str, Any] | None = None) -> Path:
    """The card's training record completed with what the recipe says about its data, where
    it started and how to build it again."""
    from momo_geo.training.finetune import set_card_fields

    training = json.loads((path / "card.json").read_text())["training"]
    training.update(data=recipe["card"].get("data", training["data"]), finetune_from=source,
                    pretrain=pretrain, regenerate="make models (seeds fixed)")
    set_card_fields(path, training=training)
    return path
