"""CycleGAN domain mapping: loss values by hand, a known invertible shift learned, errors."""

import argparse

import numpy as np
import pytest
import torch
from torch import nn

from tlkernels.adaptation.domain_mapping import (
    CycleConsistencyLoss,
    CycleGAN,
    LSGANLoss,
    MappedSourceClassifier,
    conv_generator,
)
from tlkernels.data import load_digits, shift_images, stratified_split

torch.set_num_threads(1)


def test_cycle_loss_zero_for_identity_and_hand_value():
    x, y = torch.rand(4, 1, 8, 8), torch.rand(3, 1, 8, 8)
    ident = nn.Identity()
    loss = CycleConsistencyLoss()
    assert float(loss(x, ident(ident(x)), y, ident(ident(y)))) == 0.0
    a = torch.tensor([[0.0, 1.0], [0.5, 0.5]])  # 2 examples, 2 pixels
    b = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    # per example |.|-means: (0.5 + 1) / 2 = 0.75 and (0 + 0.5) / 2 = 0.25; mean 0.5
    assert float(CycleConsistencyLoss()(a, b)) == pytest.approx(0.5)
    per = CycleConsistencyLoss("none")(a, b, b, a)
    assert torch.allclose(per[0], torch.tensor([0.75, 0.25])) and torch.allclose(per[1], per[0])
    assert float(CycleConsistencyLoss("sum")(a, b, b, a)) == pytest.approx(2.0)


def test_lsgan_loss_hand_values():
    s = torch.tensor([[1.0], [0.0], [3.0]])
    assert float(LSGANLoss()(s, True)) == pytest.approx((0 + 1 + 4) / 3)
    assert float(LSGANLoss()(s, False)) == pytest.approx((1 + 0 + 9) / 3)
    assert torch.allclose(LSGANLoss("none")(s, False), torch.tensor([1.0, 0.0, 9.0]))


def test_learns_inversion_from_unpaired_sets():
    """Target = inverted digits (x -> 1 - x), other images than the source's. F must approach
    the inversion (the identity map would be 0.8 away) and G(F(x)) must return x."""
    d = load_digits(images=True)
    a, b, held = stratified_split(d, [150, 150, 200], random_state=0)
    cg = CycleGAN(epochs=20, batch_size=32, lr=3e-3, random_state=0).fit(a.X, shift_images(b.X, "inversion", 1.0))
    x = held.X
    fx = torch.as_tensor(cg.transform(x))
    assert float((fx - x).abs().mean()) > 0.6
    assert float((fx - (1 - x)).abs().mean()) < 0.1
    assert float((torch.as_tensor(cg.inverse_transform(fx)) - x).abs().mean()) < 0.1
    assert float((torch.as_tensor(cg.inverse_transform(1 - x)) - x).abs().mean()) < 0.1
    h = cg.history_
    assert len(h) == 20 and h[-1]["cycle"] < h[0]["cycle"]
    # numpy in -> numpy out, shape kept, in [0, 1]
    out = cg.transform(x[:5].numpy())
    assert isinstance(out, np.ndarray) and out.shape == (5, 1, 8, 8) and out.min() >= 0 and out.max() <= 1


def test_mapped_source_classifier_with_a_known_mapper():
    """A prefit mapper whose F is exactly the inversion: the classifier trained on the mapped
    source classifies inverted images as well as a source classifier does clean ones."""
    d = load_digits(images=True)
    tr, te = stratified_split(d, [600, 300], random_state=0)

    class Invert(CycleGAN):
        def transform(self, X):
            return 1 - torch.as_tensor(X)

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    clf = MappedSourceClassifier(Invert(), net, lr=1e-2, epochs=20, prefit=True, random_state=0).fit(tr.X, tr.y)
    assert clf.score(1 - te.X, te.y) > 0.85
    assert clf.predict_proba(te.X[:3]).shape == (3, 10)


def test_errors_name_the_argument():
    X = torch.rand(8, 1, 8, 8)
    with pytest.raises(ValueError, match="cycle_weight"):
        CycleGAN(cycle_weight=-1.0).fit(X, X)
    with pytest.raises(ValueError, match="epochs"):
        CycleGAN(epochs=1.5).fit(X, X)
    with pytest.raises(ValueError, match="X_source must have shape"):
        CycleGAN(epochs=1).fit(torch.rand(8, 64), X)
    with pytest.raises(ValueError, match="X_target must have the image shape"):
        CycleGAN(epochs=1).fit(X, torch.rand(8, 1, 4, 4))
    with pytest.raises(ValueError, match="sample_weight"):
        CycleGAN(epochs=1).fit(X, X, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="x_cycled"):
        CycleConsistencyLoss()(X, X[:, :, :4])
    with pytest.raises(ValueError, match="reduction"):
        LSGANLoss("max")
    with pytest.raises(RuntimeError, match="not fitted"):
        CycleGAN().transform(X)
    with pytest.raises(ValueError, match="X_target must be given"):
        MappedSourceClassifier(CycleGAN(epochs=1), nn.Flatten()).fit(X, torch.zeros(8, dtype=torch.long))


def test_generator_shape_and_range():
    g = conv_generator()
    with torch.no_grad():
        out = g(torch.rand(5, 1, 8, 8) * 3 - 1)
    assert out.shape == (5, 1, 8, 8) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_experiment_cli_smoke(tmp_path):
    from tlkernels.experiments import selftaught_mapping as ex

    parser = argparse.ArgumentParser()
    ex.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["mapping", "--seeds", "1", "--epochs", "1", "--quiet", "--json", str(tmp_path / "m.json")]
    )
    assert args.func is not None and args.experiment == "mapping" and args.epochs == 1
    res = ex.run_mapping(seeds=(0,), shifts=("inversion",), epochs=1, classifier_epochs=1)
    assert set(res["rows"][0]["accuracy"]) == {"source_only", "mapped", "oracle"}
    assert "Source only" in ex.table(res) and "± 0.0" in ex.table(res)
    stc = ex.run_stc(seeds=(0,), n_per_class=(10,))
    assert {r["problem"] for r in stc["rows"]} == {"digits, 10 / class", "synthetic word groups"}
    assert "Self-taught clustering" in ex.table(stc)
