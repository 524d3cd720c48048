"""ManualMLPStep against the autograd step (train/step.py), and the private torch ops it uses."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.testing.configs import model_config
from mnist_pipeline.train.manual_mlp_step import (
    PRIVATE_TORCH_OPS,
    ManualMLPStep,
    supports_manual_step,
)

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.13, pixel_std=0.31)
TIGHT = {"rtol": 1e-5, "atol": 1e-6}


def make_model(hidden=(128, 256), dropout=0.0, input_norm="standardize", seed=0):
    torch.manual_seed(seed)
    config = model_config(name="mlp", hidden_sizes=hidden, dropout=dropout, input_norm=input_norm)
    return build_model(config, SPEC)


def make_batch(batch, seed=1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, 10, (batch,), generator=gen)


def autograd_step(model, images, labels, eps):
    """AutogradStep's maths (fp32, one process), minus the optimizer."""
    logits = model(images)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=eps)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), logits.detach()


def assert_grads_match(manual, reference):
    for name, ref_param in reference.named_parameters():
        grad = manual.get_parameter(name).grad
        torch.testing.assert_close(grad, ref_param.grad, **TIGHT, msg=name)


@pytest.mark.parametrize("batch", [64, 7])
@pytest.mark.parametrize("input_norm", ["standardize", "unit"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("hidden", [(128, 256), (32,), ()])
def test_one_step_matches_autograd(hidden, dropout, eps, input_norm, batch):
    reference = make_model(hidden, dropout, input_norm)
    manual = make_model(hidden, dropout, input_norm)
    images, labels = make_batch(batch)

    torch.manual_seed(123)
    ref_loss, ref_logits = autograd_step(reference, images, labels, eps)
    ref_next_draw = torch.rand(3)  # the autograd path's RNG consumption, seen from after
    torch.manual_seed(123)
    loss, logits = ManualMLPStep(manual, eps).mean_loss_and_grads(images, labels)

    assert loss.shape == () and not loss.requires_grad
    assert logits.shape == (batch, 10) and logits.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    torch.testing.assert_close(logits, ref_logits, **TIGHT)
    assert_grads_match(manual, reference)
    # Dropout drew the same numbers in the same order, no more and no fewer.
    torch.testing.assert_close(torch.rand(3), ref_next_draw, rtol=0, atol=0)


def test_dropout_masks_are_nn_dropouts():
    """Dropout 0.5 changes the logits by O(1) when a mask differs; require them exact."""
    reference, manual = make_model(dropout=0.5), make_model(dropout=0.5)
    images, labels = make_batch(64)
    torch.manual_seed(7)
    _, ref_logits = autograd_step(reference, images, labels, 0.0)
    torch.manual_seed(7)
    _, logits = ManualMLPStep(manual).mean_loss_and_grads(images, labels)
    assert torch.equal(logits, ref_logits)


def test_eval_mode_skips_dropout_and_draws_nothing():
    reference, manual = make_model(dropout=0.3), make_model(dropout=0.3)
    reference.eval(), manual.eval()
    images, labels = make_batch(16)
    ref_loss, ref_logits = autograd_step(reference, images, labels, 0.1)
    torch.manual_seed(5)
    loss, logits = ManualMLPStep(manual, 0.1).mean_loss_and_grads(images, labels)
    next_draw = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(next_draw, torch.rand(3))  # no mask was drawn
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    torch.testing.assert_close(logits, ref_logits, **TIGHT)
    assert_grads_match(manual, reference)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01),
        lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True),
    ],
    ids=["sgd-momentum", "adamw", "adamw-fused"],
)
@pytest.mark.parametrize("flat", [True, False], ids=["flat-param", "model-params"])
def test_twenty_optimizer_steps_match_autograd(make_optimizer, flat):
    """Batch sizes change (as with a last partial batch), so work buffers get reused.

    The bound is on the whole tensor, relative to how far training moved it: Adam
    divides by sqrt(v), so a weight whose gradient is ~0 by cancellation (say 3e-9,
    float rounding 2% of it) moves by a rounding-sized but elementwise-large amount.
    """
    reference, manual = make_model(dropout=0.3), make_model(dropout=0.3)
    initial = {name: param.clone() for name, param in manual.named_parameters()}
    sizes = itertools.islice(itertools.cycle([64, 64, 7]), 20)
    batches = [make_batch(size, seed) for seed, size in enumerate(sizes)]

    optimizer = make_optimizer(reference.parameters())
    torch.manual_seed(99)
    for images, labels in batches:
        autograd_step(reference, images, labels, 0.1)  # zero_grad inside, as in the loop
        optimizer.step()

    step = ManualMLPStep(manual, 0.1)
    optimizer = make_optimizer([step.flat_param] if flat else manual.parameters())
    torch.manual_seed(99)
    for images, labels in batches:
        step.mean_loss_and_grads(images, labels)  # no zero_grad: step overwrites .grad
        optimizer.step()

    for name, ref_param in reference.named_parameters():
        param = manual.get_parameter(name)
        moved = (ref_param - initial[name]).norm()
        assert moved > 0, name
        assert (param - ref_param).norm() <= 1e-4 * moved, name


def test_parameters_move_into_one_flat_tensor():
    model = make_model()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    step = ManualMLPStep(model)
    after = model.state_dict()
    assert list(after) == list(before)
    for name, tensor in after.items():
        assert torch.equal(tensor, before[name]), name
    flat = step.flat_param
    assert flat.shape == (sum(p.numel() for p in model.parameters()),)
    storage = flat.untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == storage for p in model.parameters())
    assert model[2].weight.stride() == (1, 128)  # the first weight, column-major
    with torch.no_grad():
        flat.add_(1.0)  # what an optimizer over flat_param does: updates the model
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name] + 1), name

    step.mean_loss_and_grads(*make_batch(8))
    grads = [p.grad for p in model.parameters()]
    in_storage_order = [grads[0].t().reshape(-1)] + [g.reshape(-1) for g in grads[1:]]
    assert flat.grad is step.flat_grad and torch.equal(flat.grad, torch.cat(in_storage_order))
    assert flat.grad.abs().sum() > 0


def test_checkpoint_of_a_flat_model_is_not_bigger(tmp_path):
    """state_dict tensors are views of one storage: torch.save writes it once."""
    fresh, flat = make_model(), make_model()
    ManualMLPStep(flat)
    torch.save(fresh.state_dict(), tmp_path / "fresh.pt")
    torch.save(flat.state_dict(), tmp_path / "flat.pt")
    fresh_bytes, flat_bytes = ((tmp_path / f).stat().st_size for f in ("fresh.pt", "flat.pt"))
    assert flat_bytes <= fresh_bytes * 1.01
    loaded = make_model(seed=5)
    loaded.load_state_dict(torch.load(tmp_path / "flat.pt", weights_only=True))
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, flat.state_dict()[name]), name


def test_grads_survive_zero_grad_set_to_none():
    model = make_model()
    step, images = ManualMLPStep(model), make_batch(8)
    step.mean_loss_and_grads(*images)
    first = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    step.mean_loss_and_grads(*images)
    for grad, param in zip(first, model.parameters(), strict=True):
        assert torch.equal(param.grad, grad)


def test_supports_only_the_float32_cpu_mlp():
    assert supports_manual_step(make_model())
    assert supports_manual_step(make_model(hidden=(), dropout=0.2))
    assert not supports_manual_step(build_model(model_config(name="cnn"), SPEC))
    assert not supports_manual_step(make_model().double())
    assert not supports_manual_step(make_model()[1:])  # no InputNorm
    assert not supports_manual_step(make_model()[:-1])  # ends in ReLU
    frozen = make_model()
    frozen[2].weight.requires_grad_(False)
    assert not supports_manual_step(frozen)
    with pytest.raises(ValueError):
        ManualMLPStep(build_model(model_config(name="cnn"), SPEC))


def test_the_private_torch_ops_still_compute_their_public_equivalents():
    """The hand-written step calls torch internals (PRIVATE_TORCH_OPS); if an upgrade
    renames or changes one, this fails here rather than training wrongly."""
    assert set(PRIVATE_TORCH_OPS) == {
        "torch.ops.aten.threshold_backward.grad_input",
        "torch._addmm_activation",
    }
    gen = torch.Generator().manual_seed(3)
    bias, x, w_t = (torch.randn(shape, generator=gen) for shape in ((5,), (4, 3), (3, 5)))
    addmm_relu = PRIVATE_TORCH_OPS["torch._addmm_activation"]
    out = torch.empty(4, 5)
    addmm_relu(bias, x, w_t, out=out)
    torch.testing.assert_close(out, torch.relu(torch.addmm(bias, x, w_t)), rtol=0, atol=0)

    relu_out = torch.relu(torch.randn(4, 5, generator=gen))
    grad = torch.randn(4, 5, generator=gen)
    expected = torch.where(relu_out > 0, grad, torch.zeros_like(grad))
    relu_backward = PRIVATE_TORCH_OPS["torch.ops.aten.threshold_backward.grad_input"]
    relu_backward(grad, relu_out, 0.0, grad_input=grad)  # in place, as the step calls it
    assert torch.equal(grad, expected)
