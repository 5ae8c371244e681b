"""Task vectors and merging (task arithmetic, MagMax, TIES) on real tiny ViTs and hand cases."""

from __future__ import annotations

import pytest
import torch

from momo_geo.errors import MomoGeoError
from momo_geo.merge import (
    TaskVector,
    magmax,
    merge,
    mergeable_keys,
    search_lambda,
    task_arithmetic,
    ties,
)
from momo_geo.models.mae import MaskedAutoencoder
from momo_geo.models.vit import create_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _finetuned(base: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A copy of ``base`` moved the way training would move it (pos_embed moved too: a trap)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in base.items():
        if value.is_floating_point():
            out[key] = value + 0.01 * torch.randn(value.shape, generator=gen)
        else:
            out[key] = value + 7  # an integer buffer that "changed"
    return out


@pytest.fixture(scope="module")
def vits() -> tuple[dict, list[dict]]:
    torch.manual_seed(0)
    base = create_encoder("vit_tiny", img_size=32, depth=2).state_dict()  # a real, short ViT
    base["counter.num_batches_tracked"] = torch.tensor(3, dtype=torch.long)
    return base, [_finetuned(base, s) for s in (1, 2, 3)]


def test_mergeable_keys_are_explicit() -> None:
    mae = MaskedAutoencoder(create_encoder("vit_tiny", img_size=32, depth=2))
    state = mae.state_dict()
    state["blocks.0.counter"] = torch.tensor([1, 2])
    keys = mergeable_keys(state)
    assert "encoder.blocks.0.attn.qkv.weight" in keys
    assert "encoder.cls_token" in keys
    assert not any(k.endswith("pos_embed") for k in keys)
    assert not any(k.startswith(("decoder_", "mask_token")) for k in keys)
    assert "blocks.0.counter" not in keys


def test_single_vector_lambda_one_gives_finetuned_back_exactly(vits) -> None:
    base, tuned = vits
    tv = TaskVector.from_state_dicts(base, tuned[0])
    merged = task_arithmetic(base, [tv], lam=1.0)
    for key in mergeable_keys(base):
        assert torch.equal(merged[key], tuned[0][key]), key
        assert merged[key].dtype == base[key].dtype
    # frozen position embedding and integer buffers: the base's, untouched
    assert torch.equal(merged["pos_embed"], base["pos_embed"])
    assert not torch.equal(tuned[0]["pos_embed"], base["pos_embed"])
    assert merged["counter.num_batches_tracked"].item() == 3
    assert merged["counter.num_batches_tracked"].dtype == torch.long
    # the merged weights load into a real encoder and run
    enc = create_encoder("vit_tiny", img_size=32, depth=2)
    merged.pop("counter.num_batches_tracked")
    enc.load_state_dict(merged)
    assert enc(torch.randn(1, 3, 32, 32)).shape == (1, 192)


@pytest.mark.parametrize("method", ["task-arithmetic", "magmax", "ties"])
def test_methods_leave_frozen_and_integer_tensors_alone(vits, method: str) -> None:
    base, tuned = vits
    vectors = [TaskVector.from_state_dicts(base, t) for t in tuned]
    merged = merge(base, vectors, method)
    assert torch.equal(merged["pos_embed"], base["pos_embed"])
    assert torch.equal(merged["counter.num_batches_tracked"], base["counter.num_batches_tracked"])
    moved = merged["blocks.0.mlp.fc1.weight"] - base["blocks.0.mlp.fc1.weight"]
    assert moved.abs().max() > 0


def test_task_arithmetic_by_hand() -> None:
    base = {"w": torch.tensor([1.0, 2.0])}
    vectors = [TaskVector({"w": torch.tensor(v)}) for v in ([1.0, 0.0], [0.0, 2.0], [1.0, 1.0])]
    assert torch.allclose(task_arithmetic(base, vectors, 0.5)["w"], torch.tensor([2.0, 3.5]))
    assert torch.allclose(task_arithmetic(base, vectors, 1.0)["w"], torch.tensor([3.0, 5.0]))


def test_magmax_by_hand() -> None:
    base = {"w": torch.tensor([0.0, 1.0, 0.0, 0.0])}
    t1 = TaskVector({"w": torch.tensor([1.0, -3.0, 2.0, 0.5])})
    t2 = TaskVector({"w": torch.tensor([-2.0, 1.0, -1.0, -0.25])})
    # per element the larger magnitude: [-2, -3, 2, 0.5]; scaled by 0.5 and added to base
    assert torch.equal(magmax(base, [t1, t2], 0.5)["w"], torch.tensor([-1.0, -0.5, 1.0, 0.25]))


def test_ties_by_hand() -> None:
    base = {"w": torch.ones(4)}
    t1 = TaskVector({"w": torch.tensor([4.0, -1.0, 0.5, -3.0])})
    t2 = TaskVector({"w": torch.tensor([3.0, -1.5, 0.1, -1.0])})
    t3 = TaskVector({"w": torch.tensor([1.0, -0.2, 2.0, 5.0])})
    # keep 50 %: t1 -> [4,0,0,-3], t2 -> [3,-1.5,0,0], t3 -> [0,0,2,5]
    # elected signs (sum): [+7, -1.5, +2, +2] -> +,-,+,+
    # disjoint means: [(4+3)/2, -1.5, 2, 5]  (t1's -3 disagrees with + and is dropped)
    merged = ties(base, [t1, t2, t3], lam=1.0, trim=0.5)["w"]
    assert torch.allclose(merged, torch.tensor([4.5, -0.5, 3.0, 6.0]))
    merged_half = ties(base, [t1, t2, t3], lam=0.5, trim=0.5)["w"]
    assert torch.allclose(merged_half, torch.tensor([2.75, 0.25, 2.0, 3.5]))


def test_task_vector_algebra() -> None:
    a = TaskVector({"w": torch.tensor([1.0, 2.0])})
    b = TaskVector({"w": torch.tensor([0.5, -1.0])})
    assert torch.equal((a + b).vector["w"], torch.tensor([1.5, 1.0]))
    assert torch.equal(sum([a, b]).vector["w"], torch.tensor([1.5, 1.0]))
    assert torch.equal((-a).vector["w"], torch.tensor([-1.0, -2.0]))
    assert torch.equal((2 * a).vector["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal((a - b).vector["w"], torch.tensor([0.5, 3.0]))
    assert a.norm() == pytest.approx(5 ** 0.5)
    assert torch.equal(a.apply_to({"w": torch.zeros(2), "n": torch.tensor(4)}, 0.5)["w"],
                       torch.tensor([0.5, 1.0]))
    with pytest.raises(MomoGeoError, match="different tensors"):
        a + TaskVector({"v": torch.zeros(2)})
    with pytest.raises(MomoGeoError, match="shape"):
        TaskVector.from_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(3)})
    with pytest.raises(MomoGeoError, match="unknown merge method"):
        merge({"w": torch.zeros(2)}, [a], "average")


def test_search_lambda_picks_the_best_validation_score(vits) -> None:
    base, tuned = vits
    vectors = [TaskVector.from_state_dicts(base, t) for t in tuned]
    target = task_arithmetic(base, vectors, 0.3)

    def val_loss(lam: float) -> float:
        merged = task_arithmetic(base, vectors, lam)
        return float(sum((merged[k] - target[k]).pow(2).sum() for k in mergeable_keys(base)))

    best, scores = search_lambda([0.1, 0.3, 0.5, 1.0], val_loss)
    assert best == 0.3
    assert scores[0.3] == pytest.approx(0.0, abs=1e-9)
    assert scores[1.0] > scores[0.5] > scores[0.3]
