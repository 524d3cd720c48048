"""The model's answers on prepared images: top-k classes, and MC-dropout uncertainty.

Top-k comes from one deterministic pass in eval mode: the same probabilities (and argmax)
that the evaluate stage computes, softmax(logits / temperature) (evaluate's calibration;
1 leaves them as the model gives them). With `mc_samples` > 0, `mc_samples` further passes with
only dropout active (evaluate/metrics.py's MC dropout, seeded) give:

    entropy             H(mean_t p_t): the predictive entropy, in nats
    mutual_information  H(mean_t p_t) - mean_t H(p_t): the part of that uncertainty the
                        dropout masks disagree on (the model's, not the data's)
"""

from dataclasses import dataclass

import torch
from torch import nn

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.evaluate.metrics import entropy, mc_dropout_probs, predict_logits

BATCH_SIZE = 1000


@dataclass(frozen=True)
class Prediction:
    """Per image: (class index, probability) pairs, most probable first; MC figures or None."""

    top: list[tuple[int, float]]
    entropy: float | None = None
    mutual_information: float | None = None


def predict(
    model: nn.Module,
    images_u8: torch.Tensor,
    top_k: int,
    mc_samples: int,
    seed: int,
    temperature: float = 1.0,
    hflip: bool = False,
) -> tuple[list[Prediction], bool]:
    """Predictions for uint8 (N, 28, 28) images on the model's device; the flag says
    whether the MC figures were computed (False when the model has no dropout). With
    `hflip`, top-k is of the mean of each image's and its mirror image's probabilities
    (evaluate's test-time flip); MC figures see the images as they are and stay unscaled,
    as evaluate's."""
    model.eval()
    logits = predict_logits(model, images_u8, BATCH_SIZE, hflip)
    probs = (logits / temperature).softmax(dim=1).cpu()  # x / 1.0 is x, bit for bit
    if not bool(torch.isfinite(probs).all()):  # weights so large that the logits overflow
        raise PipelineError("the model gives NaN or infinite probabilities; retrain it")
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    mc_probs = (
        mc_dropout_probs(model, images_u8, mc_samples, BATCH_SIZE, seed) if mc_samples else None
    )
    if mc_probs is None:
        info = [None] * len(probs)
        mutual: list[float | None] = [None] * len(probs)
    else:
        mc_probs = mc_probs.cpu()
        predictive = entropy(mc_probs.mean(dim=0))
        expected = torch.stack([entropy(p) for p in mc_probs]).mean(dim=0)
        info, mutual = predictive.tolist(), (predictive - expected).tolist()
    predictions = [
        Prediction(list(zip(i, v, strict=True)), h, m)
        for i, v, h, m in zip(indices.tolist(), values.tolist(), info, mutual, strict=True)
    ]
    return predictions, mc_probs is not None
