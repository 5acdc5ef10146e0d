"""The per-gene CNN (docs/design.md §4) and the two R² metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from dmg_ml.evaluation.metrics import pearson_r2, r2
from dmg_ml.models.cnn import AdaptiveRegressionCNN, ResidualBlock, channel_widths, parameter_count

# Hand-checked: conv1 4·c1, residual block 2·(3c²+c), conv2 3·c1·c2+c2, fc1 512·c2·L+512, fc2 513.
PINNED = {
    ("adaptive", 5): ((1, 1), 3_609),
    ("adaptive", 25): ((2, 1), 13_876),
    ("adaptive", 100): ((10, 5), 258_000),
    ("adaptive", 1000): ((64, 32), 16_422_369),
    ("adaptive", 3000): ((64, 32), 49_190_369),
    ("fixed", 5): ((64, 32), 120_289),
    ("fixed", 25): ((64, 32), 447_969),
    ("fixed", 100): ((64, 32), 1_676_769),
    ("fixed", 1000): ((64, 32), 16_422_369),
    ("fixed", 3000): ((64, 32), 49_190_369),
}


@pytest.mark.parametrize(("channels", "length"), list(PINNED))
def test_widths_and_parameter_counts_are_pinned(channels: str, length: int) -> None:
    widths, count = PINNED[(channels, length)]
    assert channel_widths(length, channels) == widths
    assert parameter_count(length, channels) == count
    model = AdaptiveRegressionCNN(length, channels)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("length", [1, 9, 10, 19, 20, 199, 640, 641])
def test_adaptive_rule_with_floor_of_one(length: int) -> None:
    c1, c2 = channel_widths(length)
    assert c1 == max(1, min(64, length // 10))
    assert c2 == max(1, min(32, length // 20))


def test_layer_shapes_follow_the_paper() -> None:
    length = 250
    model = AdaptiveRegressionCNN(length)
    c1, c2 = 25, 12
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "conv1.weight": (c1, 1, 3),
        "conv1.bias": (c1,),
        "res1.conv1.weight": (c1, c1, 3),
        "res1.conv1.bias": (c1,),
        "res1.conv2.weight": (c1, c1, 3),
        "res1.conv2.bias": (c1,),
        "conv2.weight": (c2, c1, 3),
        "conv2.bias": (c2,),
        "res2.conv1.weight": (c2, c2, 3),
        "res2.conv1.bias": (c2,),
        "res2.conv2.weight": (c2, c2, 3),
        "res2.conv2.bias": (c2,),
        "fc1.weight": (512, c2 * length),
        "fc1.bias": (512,),
        "fc2.weight": (1, 512),
        "fc2.bias": (1,),
    }
    for conv in (model.conv1, model.res1.conv1, model.conv2, model.res2.conv2):
        assert conv.kernel_size == (3,) and conv.padding == (1,)
    assert model.act.negative_slope == 0.01


def test_published_init_makes_the_authors_extra_draw_before_the_dense_layers() -> None:
    """Their module sizes fc1 by passing ``torch.randn(1, 1, L)`` through the convolutions: under
    one seed the convolutions start alike and the dense layers do not."""
    torch.manual_seed(3)
    theirs = AdaptiveRegressionCNN(30, published_init=True).state_dict()
    torch.manual_seed(3)
    ours = AdaptiveRegressionCNN(30).state_dict()
    assert list(theirs) == list(ours)
    for name, value in ours.items():
        assert torch.equal(theirs[name], value) == (not name.startswith("fc")), name
    torch.manual_seed(3)
    AdaptiveRegressionCNN(30, published_init=True)
    after_theirs = torch.rand(1)
    torch.manual_seed(3)
    AdaptiveRegressionCNN(30)
    torch.randn(1, 1, 30)
    assert torch.rand(1) == after_theirs  # exactly one draw of L normals more


def test_forward_accepts_2d_and_3d_input() -> None:
    model = AdaptiveRegressionCNN(40).eval()
    x = torch.randn(7, 40)
    out = model(x)
    assert out.shape == (7,)
    torch.testing.assert_close(model(x.unsqueeze(1)), out)


def test_forward_matches_the_written_out_architecture() -> None:
    torch.manual_seed(0)
    model = AdaptiveRegressionCNN(60).eval()
    x = torch.randn(4, 1, 60)
    act = torch.nn.functional.leaky_relu

    def block(b: ResidualBlock, h: torch.Tensor) -> torch.Tensor:
        return act(b.conv2(act(b.conv1(h), 0.01)) + h, 0.01)

    h = block(model.res1, act(model.conv1(x), 0.01))
    h = block(model.res2, act(model.conv2(h), 0.01))
    expected = model.fc2(act(model.fc1(h.flatten(1)), 0.01)).squeeze(-1)
    torch.testing.assert_close(model(x), expected)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        channel_widths(0)
    with pytest.raises(ValueError):
        channel_widths(10, "wide")


def test_r2_is_sklearn_r2_score() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    yhat = y + rng.normal(scale=0.5, size=50)
    assert r2(y, yhat) == pytest.approx(r2_score(y, yhat))
    assert r2(y, np.full(50, y.mean() + 3)) < 0


def test_pearson_r2_is_squared_correlation_and_ignores_scale() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=80)
    yhat = 0.3 * y + rng.normal(scale=0.2, size=80)
    assert pearson_r2(y, yhat) == pytest.approx(np.corrcoef(y, yhat)[0, 1] ** 2)
    assert pearson_r2(y, 5 * yhat - 2) == pytest.approx(pearson_r2(y, yhat))
    assert pearson_r2(y, -y) == pytest.approx(1.0)


def test_pearson_r2_is_zero_for_constant_input() -> None:
    y = np.arange(10.0)
    assert pearson_r2(y, np.full(10, 3.0)) == 0.0
    assert pearson_r2(np.ones(10), y) == 0.0
    with pytest.raises(ValueError):
        pearson_r2(y, y[:5])
