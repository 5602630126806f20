"""In-run values on the model zoo of the per-sample products (transformers BERT / GPT-2 / ViT,
torchvision ResNet / ViT, timm ViT / DeiT / Mixer / ConvNeXt): InRun.step's values and training
gradient against per-example autograd, float64."""

import warnings

import pytest
import torch
from torch.utils._pytree import tree_map

from test_persample_architectures import DT, ZOO, _assert_close_scaled
from tlkernels import reference, valuation

LR = 0.1


def _rows(batch, rows: slice):
    return tree_map(lambda t: t[rows] if isinstance(t, torch.Tensor) and t.dim() > 0 else t, batch)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_inrun_on_the_model_zoo_matches_per_example_autograd(name):
    package, make, loss, batch, _ = ZOO[name]
    pytest.importorskip(package, reason=f"{package} is not installed (it is in the test extra)")
    torch.manual_seed(0)
    model = make().to(DT).eval()
    ref = reference.model_per_sample_grads_loop(model, loss, batch)
    flat = torch.cat([g.flatten(1) for g in ref.values()], 1)  # (B, P)
    b = flat.shape[0]
    g_val = flat[1:3].mean(0)  # the validation batch: rows 1 and 2 of the same inputs
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    inrun = valuation.InRun(model, loss, _rows(batch, slice(1, 3)), optimizer=opt)
    opt.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inrun.step(batch, torch.arange(b))
    _assert_close_scaled(inrun.last_values.to(DT), -LR / b * (flat @ g_val))
    grads = {n: p.grad for n, p in model.named_parameters() if n in ref}
    _assert_close_scaled(torch.cat([grads[n].flatten() for n in ref]), flat.mean(0))
