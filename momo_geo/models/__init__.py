"""Models: one factory, small layers (timm's way).

:func:`create_model` builds the ``torch.nn.Module`` a model card describes. Architectures register
themselves in :data:`ARCHITECTURES` under the name in ``card.architecture["kind"]``.

Contracts every architecture keeps, because the mapping engine relies on them:

- input: float tensor ``(B, card.in_chans, H, W)``, already scaled and normalised per the card;
- ``segmentation`` models return logits ``(B, num_classes, H, W)`` at the input's size;
- ``classification`` models return logits ``(B, num_classes)``;
- ``pretrain`` bundles hold an encoder only (timm ``VisionTransformer`` keys);
- ``architecture["members"] = K`` (K > 1) builds K such networks whose mean probability is the
  output (:mod:`momo_geo.models.ensemble`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from momo_geo.errors import MomoGeoError

if TYPE_CHECKING:
    import torch

    from momo_geo.bundle import ModelCard

ARCHITECTURES: dict[str, Callable[[ModelCard], torch.nn.Module]] = {}


def register(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register("vit_seg")`` on a ``builder(card) -> nn.Module``."""

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        ARCHITECTURES[kind] = builder
        return builder

    return wrap


def _load_builtin_architectures(until: str | None = None) -> None:
    # Imported lazily so that `import momo_geo.models` stays light; each module registers itself.
    # Stops once ``until`` is registered: a small conv model does not pay for importing timm
    # (and torchvision through it), seconds of every run.
    import importlib

    for module in ("momo_geo.models.conv", "momo_geo.models.vit", "momo_geo.models.heads",
                   "momo_geo.models.unet", "momo_geo.models.cnn", "momo_geo.models.unet_cls"):
        if until is not None and until in ARCHITECTURES:
            return
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def create_model(card: ModelCard) -> torch.nn.Module:
    """Build the (untrained) network described by ``card.architecture``."""
    kind = card.architecture.get("kind", "vit")
    _load_builtin_architectures(until=kind)
    try:
        builder = ARCHITECTURES[kind]
    except KeyError:
        raise MomoGeoError(
            f"model card asks for architecture kind {kind!r}, which this momo-geo does not know "
            f"(known: {', '.join(sorted(ARCHITECTURES))})") from None
    members = card.architecture.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise MomoGeoError(f"model card: architecture members must be a whole number >= 1, "
                           f"not {members!r}")
    if members == 1:
        return builder(card)
    from momo_geo.models.ensemble import MeanProbability

    return MeanProbability([builder(card) for _ in range(members)])
