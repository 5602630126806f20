"""Known-answer tests of tlkernels.transfer (small digits subsets, a few epochs each)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tlkernels.data import class_split, load_digits, stratified_split
from tlkernels.selfsup import rotate4
from tlkernels.transfer import (
    Autoencoder,
    FeatureProbe,
    FineTune,
    Flextune,
    L2SPLoss,
    LayerTransfer,
    OutputConstraintLoss,
    ProgressiveNet,
    RotationPretrainer,
    SelfTaught,
    finetune_tradeoff,
    rotation_accuracy,
    sweep_layer_transfer,
    transfer_layers,
)


def mlp(n_out=5, hidden=(32, 16)):
    torch.manual_seed(0)
    layers, d = [nn.Flatten()], 64
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, n_out))


@pytest.fixture(scope="module")
def digits():
    d = load_digits(images=True)
    src = stratified_split(class_split(d, range(5)), [200, None], random_state=0)[0]
    tgt = class_split(d, range(5, 10))
    tr, va, te = stratified_split(tgt, [50, 50, 200], random_state=0)
    source = FineTune(mlp(), 1e-2, 15, random_state=0).fit(src.X, src.y).model_
    return {"src": src, "tr": tr, "va": va, "te": te, "source": source}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed_layers(before: dict, model) -> set[str]:
    out = set()
    for k, v in model.state_dict().items():
        if not torch.equal(before[k], v):
            out.add(k.rsplit(".", 1)[0])
    return out


# -- features ----------------------------------------------------------------------------------------
def test_feature_probe_frozen_cached_and_better_than_chance(digits):
    src = digits["source"]
    before = snapshot(src)
    for head in ("logistic", "knn", "mlp"):
        probe = FeatureProbe(src, head, layer="4", epochs=20, random_state=0).fit(digits["tr"].X, digits["tr"].y)
        assert probe.score(digits["te"].X, digits["te"].y) > 0.4
        assert probe.predict_proba(digits["te"].X[:3]).shape == (3, 5)
    assert all(torch.equal(before[k], v) for k, v in src.state_dict().items())  # bit-identical
    probe = FeatureProbe(src, layer="4").fit(digits["tr"].X, digits["tr"].y)
    n = probe.n_extracted_
    probe.transform(digits["tr"].X)
    assert probe.n_extracted_ == n == 50  # extracted once, then served from the cache


def test_feature_probe_bad_input_names_argument(digits):
    src = digits["source"]
    with pytest.raises(ValueError, match="layer"):
        FeatureProbe(src, layer="nope")
    with pytest.raises(ValueError, match="feature_extractor"):
        FeatureProbe(nn.Identity()).fit(digits["tr"].X, digits["tr"].y)  # (N, 1, 8, 8) is not 2-D
    with pytest.raises(ValueError, match="head"):
        FeatureProbe(src, head="svm")
    with pytest.raises(ValueError, match="sample_weight"):
        FeatureProbe(src).fit(digits["tr"].X, digits["tr"].y, sample_weight=np.ones(3))


# -- fine-tuning ---------------------------------------------------------------------------------------
def test_finetune_frozen_layers_stay_bit_identical(digits):
    src = digits["source"]
    src_before = snapshot(src)
    ft = FineTune(src, 1e-2, 5, n_classes=5, freeze=2, random_state=0).fit(digits["tr"].X, digits["tr"].y)
    assert ft.frozen_ == ["1", "3"]
    assert changed_layers(src_before, ft.model_) == {"5"}
    assert all(torch.equal(src_before[k], v) for k, v in src.state_dict().items())  # source untouched
    ft = FineTune(src, 1e-2, 5, freeze=["3"], layerwise_lr=0.5, random_state=0).fit(digits["tr"].X, digits["tr"].y)
    assert changed_layers(src_before, ft.model_) == {"1", "5"}


def test_finetune_weights_and_history(digits):
    tr, va = digits["tr"], digits["va"]
    w = np.ones(len(tr))
    w[:10] = 0
    ft = FineTune(digits["source"], 1e-3, 3, n_classes=5, random_state=0).fit(tr.X, tr.y, w, X_val=va.X, y_val=va.y)
    assert [h["epoch"] for h in ft.history_] == [0, 1, 2, 3]
    assert all(0 <= h["val_accuracy"] <= 1 for h in ft.history_)
    res = finetune_tradeoff(
        digits["source"], tr.X, tr.y, va.X, va.y, lrs=(1e-3,), epochs=2, n_classes=5, head_epochs=2, random_state=0
    )
    assert len(res["curves"][1e-3]) == 3


def test_finetune_bad_input_names_argument(digits):
    src = digits["source"]
    with pytest.raises(ValueError, match="freeze"):
        FineTune(src, freeze=["nope"])
    with pytest.raises(ValueError, match="layerwise_lr"):
        FineTune(src, layerwise_lr={"nope": 1e-3})
    with pytest.raises(ValueError, match="model"):
        FineTune(nn.Linear(64, 5), n_classes=3)


def test_flextune_changes_exactly_one_layer(digits):
    src = digits["source"]
    before = snapshot(src)
    fx = Flextune(src, lr=1e-2, epochs=5, random_state=0).fit(
        digits["tr"].X, digits["tr"].y, X_val=digits["va"].X, y_val=digits["va"].y
    )
    assert set(fx.scores_) == {"1", "3", "5"}
    assert changed_layers(before, fx.model_) == {fx.layer_}
    fx = Flextune(src, layers=["1", "3"], n_classes=5, lr=1e-2, epochs=3, head_epochs=3, random_state=0).fit(
        digits["tr"].X, digits["tr"].y
    )  # validation carved from the data
    assert changed_layers(before, fx.model_) - {"5"} == {fx.layer_}
    with pytest.raises(ValueError, match="layers"):
        Flextune(src, layers=["7"])


# -- layer transfer ----------------------------------------------------------------------------------
def test_layer_transfer_copies_and_freezes(digits):
    src = digits["source"]
    tgt = mlp()
    assert transfer_layers(src, tgt, 2, "first") == ["1", "3"]
    assert torch.equal(tgt[1].weight, src[1].weight) and not torch.equal(tgt[5].weight, src[5].weight)
    lt = LayerTransfer(src, 1, "last", lr=1e-2, epochs=3, random_state=0).fit(digits["tr"].X, digits["tr"].y)
    assert lt.copied_ == ["5"] and torch.equal(lt.model_[5].weight, src[5].weight)
    assert not torch.equal(lt.model_[1].weight, src[1].weight)
    sw = sweep_layer_transfer(
        src,
        digits["tr"].X,
        digits["tr"].y,
        digits["va"].X,
        digits["va"].y,
        ks=(0, 1),
        freezes=(True,),
        epochs=2,
        random_state=0,
    )
    assert [(r["k"], r["where"]) for r in sw["rows"]] == [(0, "first"), (1, "first"), (1, "last")]
    with pytest.raises(ValueError, match="k=4"):
        LayerTransfer(src, 4)
    with pytest.raises(ValueError, match="where"):
        LayerTransfer(src, 1, "middle")


# -- conservative training ------------------------------------------------------------------------
def test_l2sp_huge_coefficient_keeps_source_weights(digits):
    src = digits["source"]
    tr = digits["tr"]
    free = FineTune(src, 1e-2, 10, random_state=0).fit(tr.X, tr.y).model_
    held = FineTune(src, 1e-2, 10, l2sp=1e8, random_state=0).fit(tr.X, tr.y).model_
    drift = lambda m: max((a - b).abs().max().item() for a, b in zip(m.parameters(), src.parameters()))  # noqa
    assert drift(free) > 0.05
    assert drift(held) < 2e-2 * drift(free)


def test_l2sp_loss_in_a_user_loop():
    ref = mlp()
    loss = L2SPLoss(ref, alpha=2.0, beta=0.5)
    model = copy.deepcopy(ref)
    assert loss(model).item() == 0.0
    with torch.no_grad():
        model[1].weight.add_(1.0)
    val = loss(model)
    assert torch.isclose(val, torch.tensor(0.5 * 2.0 * model[1].weight.numel()))
    val.backward()
    assert torch.allclose(model[1].weight.grad, torch.full_like(model[1].weight, 2.0))
    # a new head (shape differs from the reference) gets beta * w
    new = nn.Sequential(*list(copy.deepcopy(ref))[:-1], nn.Linear(16, 3))
    L2SPLoss(ref, alpha=2.0, beta=0.5)(new).backward()
    assert torch.allclose(new[5].weight.grad, 0.5 * new[5].weight)


def test_output_constraint_loss():
    src = mlp()
    x = torch.rand(7, 1, 8, 8)
    loss = OutputConstraintLoss(src, temperature=2.0)
    assert loss(x, src(x)).abs().item() < 1e-6
    other = mlp(hidden=(8, 8))
    torch.manual_seed(3)
    other[-1].weight.data.normal_()
    v = loss(x, other(x))
    assert v.item() > 0
    w = torch.zeros(7)
    w[0] = 1
    assert torch.isclose(loss(x, other(x), w), loss(x[:1], other(x[:1])))
    with pytest.raises(ValueError, match="new_logits"):
        loss(x, torch.zeros(7, 3))
    ft = FineTune(src, 1e-2, 2, n_classes=5, output_constraint=1.0, random_state=0).fit(
        torch.rand(20, 1, 8, 8), torch.arange(20) % 5
    )
    assert ft.predict(x).shape == (7,)


# -- progressive nets --------------------------------------------------------------------------------
def test_progressive_old_columns_frozen_new_column_uses_laterals(digits):
    src = digits["source"]
    net = ProgressiveNet(src)
    assert net.add_column(mlp()) == 1
    before = snapshot(net.columns[0])
    ft = FineTune(net, 1e-2, 5, random_state=0).fit(digits["tr"].X, digits["tr"].y)
    trained = ft.model_
    assert all(torch.equal(before[k], v) for k, v in trained.columns[0].state_dict().items())
    assert all(a.weight.abs().sum() > 0 for a in trained.adapters[1][1])  # laterals learned
    x = digits["te"].X[:16]
    out = trained(x)
    with torch.no_grad():
        trained.columns[0].layers[0].weight.mul_(-1.0)  # change only the old column's activations
    assert not torch.allclose(trained(x), out)  # ... and the new column's output moves
    with pytest.raises(ValueError, match="column"):
        net.add_column(mlp(hidden=(8,)))


def test_progressive_cnn_columns_conv_laterals_keep_the_source_column():
    from tlkernels.backbones import digits_cnn

    torch.manual_seed(0)
    src = nn.Sequential(digits_cnn(widths=(8, 8, 8), features=16), nn.Linear(16, 3))
    net = ProgressiveNet(src)
    net.add_column(nn.Sequential(digits_cnn(widths=(8, 16, 8), features=12), nn.Linear(12, 4)))
    # 3 convolutions, the 128-wide Linear and the head: laterals into the last four
    kinds = [[type(a).__name__ for a in ads] for ads in net.adapters[1]]
    assert kinds == [[], ["Conv2d"], ["Conv2d"], ["Linear"], ["Linear"]]
    conv = net.adapters[1][1][0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (8, 16, (5, 5), (2, 2))
    x = torch.randn(6, 3, 32, 32)
    alone = nn.Sequential(*net.columns[1].prefix, *[m for i in range(5) for m in (net.columns[1].layers[i],
                          *net.columns[1].posts[i])])  # fmt: skip
    assert torch.allclose(net(x), alone(x), atol=1e-6)  # zero laterals: the new column as if alone
    assert torch.allclose(net(x, column=0), src(x), atol=1e-6)
    before = snapshot(net.columns[0])
    y = torch.arange(6) % 4
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in net.columns[0].state_dict().items())
    assert all(a.weight.abs().sum() > 0 for ads in list(net.adapters[1])[1:] for a in ads)
    with pytest.raises(ValueError, match="main"):
        net.add_column(mlp())  # 3 Linear layers
    with pytest.raises(ValueError, match="layer kinds"):
        net.add_column(nn.Sequential(nn.Flatten(), *[nn.Linear(3072 if i == 0 else 8, 8) for i in range(5)]))
    with pytest.raises(ValueError, match="before the first"):
        ProgressiveNet(nn.Sequential(nn.GroupNorm(1, 3), nn.Conv2d(3, 4, 3)))


# -- self-supervised / self-taught ---------------------------------------------------------------------
def test_rotate4_known_answer():
    img = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    Xr, yr = rotate4(img)
    assert yr.tolist() == [0, 1, 2, 3]
    assert Xr[1, 0].tolist() == [[1.0, 3.0], [0.0, 2.0]]  # 90 degrees counter-clockwise
    assert torch.equal(Xr[2, 0], img[0, 0].flip(0).flip(1))
    X = torch.rand(5, 1, 8, 8)
    Xs, ys = rotate4(X, torch.tensor([0, 1, 2, 3, 1]))
    assert torch.equal(Xs[1], torch.rot90(X[1], 1, dims=(-2, -1))) and torch.equal(ys, torch.tensor([0, 1, 2, 3, 1]))
    with pytest.raises(ValueError, match="X"):
        rotate4(torch.rand(2, 1, 8, 6))

    class Oracle(nn.Module):  # knows the rotation of the all-different image
        def forward(self, x):
            ref = torch.stack([torch.rot90(img[0], r, dims=(-2, -1)) for r in range(4)])
            return -((x.unsqueeze(1) - ref.unsqueeze(0)) ** 2).flatten(2).sum(2)

    assert rotation_accuracy(Oracle(), img) == 1.0


def test_rotation_and_autoencoder_pretraining(digits):
    X = digits["src"].X
    body = mlp()[:-1]
    rot = RotationPretrainer(body, 16, epochs=5, random_state=0).fit(X)
    assert rot.score(X) > 0.5  # chance is 0.25
    ae0 = Autoencoder(body, epochs=0, random_state=0).fit(X)
    ae = Autoencoder(body, noise="mask", noise_level=0.2, epochs=20, lr=3e-3, random_state=0).fit(X)
    assert ae.score(X) > ae0.score(X)
    assert ae.transform(X[:4]).shape == (4, 16)
    probe = FeatureProbe(rot.backbone_).fit(digits["tr"].X, digits["tr"].y)
    assert probe.score(digits["te"].X, digits["te"].y) > 0.4


def test_cnn_autoencoder_needs_its_decoder(digits):
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 16), nn.ReLU())
    X = digits["src"].X[:64]
    with pytest.raises(ValueError, match="decoder="):
        Autoencoder(cnn, epochs=1, random_state=0).fit(X)
    dec = nn.Sequential(nn.Linear(16, 64))
    ae0 = Autoencoder(cnn, dec, epochs=0, random_state=0).fit(X)
    ae = Autoencoder(cnn, dec, epochs=20, lr=3e-3, random_state=0).fit(X)
    assert ae.score(X) > ae0.score(X) and ae.transform(X[:3]).shape == (3, 16)


def test_self_taught(digits):
    st = SelfTaught(32, random_state=0).fit(digits["tr"].X, digits["tr"].y, X_unlabeled=digits["src"].X)
    assert st.components_.shape == (32, 64)
    assert st.score(digits["te"].X, digits["te"].y) > 0.5
    st2 = SelfTaught(16, "autoencoder", epochs=5, random_state=0).fit(
        digits["tr"].X, digits["tr"].y, X_unlabeled=digits["src"].X
    )
    assert st2.transform(digits["te"].X).shape == (200, 16)
    with pytest.raises(ValueError, match="X_unlabeled"):
        SelfTaught(8).fit(digits["tr"].X, digits["tr"].y)
