"""A training step for `build_model`'s MLP with hand-written gradients.

At small batches much of an autograd step is overhead, not arithmetic: recording the
graph, dispatching its backward ops, allocating every intermediate. `ManualMLPStep` does
the same maths with out= ops on buffers allocated once per batch size (what is left is
almost all matmul) and writes each parameter's `.grad`, so any torch optimizer steps
unchanged. It matches `F.cross_entropy(model(x), y, label_smoothing=eps).backward()` up
to float rounding, dropout masks included: drawn from torch's RNG as `nn.Dropout` draws
them on CPU, in the same order.

Two layout choices make the step cheaper without changing its numbers:
- Every weight and bias lives in one flat tensor (`ManualMLPStep.flat_param`; the model's
  parameters become views of it), and so does every gradient. An optimizer given that
  one tensor updates all of them in one kernel call over one tensor: the same
  element-wise maths as over the separate parameters (SGD, Adam and AdamW are all
  element-wise), in about three quarters of the time at this size (one tensor to
  group and launch instead of six).
- The first weight is stored column-major (a (in, out) block, seen as its (out, in)
  transpose), so its gradient is the product x.T @ grad, which MKL computes about a
  quarter faster here than grad.T @ x. Only the flat tensor's layout changes; shapes,
  values and state_dict keys stay the model's.
"""

import math
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
from torch import nn

from mnist_pipeline.model.networks import InputNorm

# The private torch ops this step relies on, all here: tests/train/test_manual_mlp_step.py checks
# each against its public equivalent, so a torch upgrade that changes one fails loudly.
# ReLU's backward with an out= slot (torch.threshold_backward has none): 0 where the ReLU
# output is 0, the incoming gradient elsewhere.
_relu_backward = torch.ops.aten.threshold_backward.grad_input
# relu(addmm(bias, x, w)) in one call with an out= slot.
_addmm_relu = torch._addmm_activation
PRIVATE_TORCH_OPS = {
    "torch.ops.aten.threshold_backward.grad_input": _relu_backward,
    "torch._addmm_activation": _addmm_relu,
}


def supports_manual_step(model: nn.Module) -> bool:
    """Whether `model` is exactly the MLP layout `ManualMLPStep` implements (see
    `mlp_blocks` below), with float32 CPU parameters that all train. Anything else (a
    CNN, a torch.compile wrapper, another device or dtype) must take the autograd step."""
    return mlp_blocks(model) is not None and all(
        p.dtype == torch.float32 and p.device.type == "cpu" and p.requires_grad
        for p in model.parameters()
    )


@dataclass(slots=True)
class _Work:
    """Per-batch-size buffers; index i is the i-th Linear's output."""

    x: torch.Tensor  # normalized, flattened input
    outs: list[torch.Tensor]  # hidden: after ReLU (and dropout, in place); last: logits
    grads: list[torch.Tensor]  # d loss / d (Linear output), before ReLU
    grads_t: list[torch.Tensor]  # their transposes (views)
    noise: list[torch.Tensor]  # dropout scale (0 or 1/(1-p)) per hidden layer
    logp: torch.Tensor  # log-softmax of the logits
    target: torch.Tensor  # -(smoothed one-hot) / batch, per row
    target_table: torch.Tensor  # (C, C): row c is `target` for label c
    label_smoothing: float  # the one target_table was built for (NaN: none yet)


class ManualMLPStep:
    """Forward, loss and gradients of one batch for a model `supports_manual_step` accepts.

    Build it once per fit, before the optimizer, and give the optimizer `[flat_param]`
    (or the model's parameters, slower). It moves the parameters into `flat_param`
    (see the module docstring); `load_state_dict` and optimizer updates, both in place,
    are seen by later steps.
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        if not supports_manual_step(model):
            raise ValueError("ManualMLPStep needs build_model's MLP with float32 CPU parameters")
        self.model = model
        self.label_smoothing = label_smoothing
        blocks = mlp_blocks(model)
        assert blocks is not None  # supports_manual_step checked the layout
        self.norm = cast(InputNorm, model.get_submodule("0"))
        self.linears = [linear for linear, _ in blocks]
        self.hidden = self.linears[:-1]
        self.dropouts = [dropout for _, dropout in blocks[:-1]]
        self.params = [t for linear in self.linears for t in (linear.weight, linear.bias)]
        flat, _ = _flat_views(self.params, move=True)
        self.flat_param = nn.Parameter(flat)  # shares the parameters' storage
        # Each step fills these; views with the parameters' layouts.
        self.flat_grad, self.param_grads = _flat_views(self.params)
        # Views, made once: they see every in-place update of the weights.
        self.weights_t = [linear.weight.t() for linear in self.linears]
        self.first_weight_grad_t = self.param_grads[0].t()  # (in, out), contiguous
        self.all_params = [self.flat_param, *self.params]
        self.all_grads = [self.flat_grad, *self.param_grads]
        self._work: dict[int, _Work] = {}

    @torch.no_grad()
    def mean_loss_and_grads(
        self, images_u8: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Set each parameter's `.grad` (and flat_param's, all views of one buffer) to
        d loss / d param for (images (B, H, W) uint8, labels (B,) int64); no zero_grad.
        Returns (mean loss, 0-dim and fresh; logits (B, C), a work buffer that the next
        step with this batch size overwrites)."""
        for param, grad in zip(self.all_params, self.all_grads, strict=True):
            if param.grad is not grad:  # first step, or the caller set grads to None
                param.grad = grad
        batch = labels.shape[0]
        work = self._work.get(batch) or self._allocate(batch)
        masks = self._forward(images_u8.reshape(batch, -1), work)
        loss = self._loss_and_logit_grad(labels, self.label_smoothing, work)
        self._backward(work, masks)
        return loss, work.outs[-1]

    def _allocate(self, batch: int) -> _Work:
        if len(self._work) >= 4:  # a fit uses two sizes (full, last); never grow unbounded
            self._work.clear()
        widths = [linear.out_features for linear in self.linears]
        new = partial(torch.empty, dtype=torch.float32)
        grads = [new(batch, w) for w in widths]
        work = _Work(
            x=new(batch, self.linears[0].in_features),
            outs=[new(batch, w) for w in widths],
            grads=grads,
            grads_t=[g.t() for g in grads],
            noise=[new(batch, w) for w in widths[:-1]],
            logp=new(batch, widths[-1]),
            target=new(batch, widths[-1]),
            target_table=new(widths[-1], widths[-1]),
            label_smoothing=math.nan,
        )
        self._work[batch] = work
        return work

    def _forward(self, flat_u8: torch.Tensor, work: _Work) -> list[torch.Tensor | None]:
        """Fill work.outs; returns the dropout noise applied to each hidden layer (or None)."""
        # Cast into the reused buffer, then InputNorm's own formula, in place.
        h = self.norm.normalize_(work.x.copy_(flat_u8))
        masks: list[torch.Tensor | None] = []
        # work.outs also holds the logits, hence strict=False.
        for linear, weight_t, dropout, out, noise in zip(
            self.hidden, self.weights_t, self.dropouts, work.outs, work.noise, strict=False
        ):
            # addmm as F.linear does it, then relu, in one call
            h = _addmm_relu(linear.bias, h, weight_t, out=out)
            p = dropout.p if dropout is not None and self.model.training else 0.0
            if p > 0:
                # torch's CPU dropout (aten/src/ATen/native/Dropout.cpp), draw for draw.
                h.mul_(noise.bernoulli_(1 - p).div_(1 - p))
            masks.append(noise if p > 0 else None)
        head = self.linears[-1]
        torch.addmm(head.bias, h, self.weights_t[-1], out=work.outs[-1])
        return masks

    def _loss_and_logit_grad(self, labels: torch.Tensor, eps: float, work: _Work) -> torch.Tensor:
        """Mean smoothed cross-entropy, and its gradient w.r.t. the logits in work.grads[-1]."""
        batch, classes = work.logp.shape
        torch.log_softmax(work.outs[-1], 1, out=work.logp)
        # target = -((1 - eps) * onehot + eps / C) / B; then loss = sum(target * logp) and
        # d loss / d logits = softmax / B + target: one dot and one add.
        if work.label_smoothing != eps:
            off_label = -eps / classes / batch
            on_label = off_label - (1.0 - eps) / batch
            work.target_table.fill_(off_label).fill_diagonal_(on_label)
            work.label_smoothing = eps
        torch.index_select(work.target_table, 0, labels, out=work.target)
        loss = torch.dot(work.target.view(-1), work.logp.view(-1))
        logit_grad = torch.exp(work.logp, out=work.grads[-1])
        torch.add(work.target, logit_grad, alpha=1.0 / batch, out=logit_grad)
        return loss

    def _backward(self, work: _Work, masks: list[torch.Tensor | None]) -> None:
        """From work.grads[-1] down to the first Linear, writing the parameter grads."""
        for i in range(len(self.linears) - 1, -1, -1):
            grad_out = work.grads[i]
            layer_in = work.outs[i - 1] if i else work.x
            torch.sum(grad_out, 0, out=self.param_grads[2 * i + 1])
            if i == 0:  # its weight is stored transposed; the input needs no gradient
                torch.mm(layer_in.t(), grad_out, out=self.first_weight_grad_t)
                break
            torch.mm(work.grads_t[i], layer_in, out=self.param_grads[2 * i])
            grad_in = torch.mm(grad_out, self.linears[i].weight, out=work.grads[i - 1])
            mask = masks[i - 1]
            if mask is not None:
                grad_in.mul_(mask)
            # outs[i - 1] holds relu(z) * noise, which is 0 exactly where relu(z) is 0 or
            # the unit was dropped; in the latter case grad_in is 0 already.
            _relu_backward(grad_in, work.outs[i - 1], 0.0, grad_input=grad_in)


def _flat_views(
    params: list[torch.Tensor], move: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A flat float32 tensor of zeros and views of it in the order and shapes of
    `params`, the first (a weight) column-major. With `move`, each parameter's values
    are copied in and the parameter becomes its view."""
    sizes = [param.numel() for param in params]
    flat, views = torch.zeros(sum(sizes), dtype=torch.float32), []
    for index, (param, chunk) in enumerate(zip(params, flat.split(sizes), strict=True)):
        view = chunk.view(param.shape[::-1]).t() if index == 0 else chunk.view(param.shape)
        if move:
            view.copy_(param.detach())
            param.data = view
        views.append(view)
    return flat, views


def mlp_blocks(model: nn.Module) -> list[tuple[nn.Linear, nn.Dropout | None]] | None:
    """`build_model`'s MLP as [(Linear, its Dropout or None)] per block, the head last:
    InputNorm, Flatten, (Linear, ReLU, [Dropout]) * k, Linear. None for any other model."""
    if type(model) is not nn.Sequential or len(model) < 3:
        return None
    norm, flatten, *layers = model
    if type(norm) is not InputNorm or type(flatten) is not nn.Flatten:
        return None
    if (flatten.start_dim, flatten.end_dim) != (1, -1):
        return None
    blocks: list[tuple[nn.Linear, nn.Dropout | None]] = []
    i = 0
    while i < len(layers):
        linear = layers[i]
        if type(linear) is not nn.Linear or linear.bias is None:
            return None
        if i + 1 == len(layers):
            return [*blocks, (linear, None)]
        if type(layers[i + 1]) is not nn.ReLU:
            return None
        i += 2
        dropout = None
        if i < len(layers) and type(layers[i]) is nn.Dropout:
            dropout, i = cast(nn.Dropout, layers[i]), i + 1
        blocks.append((linear, dropout))
    return None  # ends in ReLU or Dropout: no head
