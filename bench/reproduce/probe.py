"""The class-accuracy probe of the class-conditional mini benchmark: multinomial logistic regression on the
Inception pool features (2048-d, the FID network's) of the real training images, applied to generated samples.

Fit: features standardised with the training mean and standard deviation, weights and bias from zero, full-batch
L-BFGS (strong Wolfe line search) on the mean cross-entropy + (l2 / 2) ||W||^2 in float64 up to a fixed iteration
cap. Nothing is random, so the same features give the same probe on a given device. Class accuracy of samples: for
each class c, the fraction of the samples drawn with label c that the probe assigns to c; the figure is the mean over
classes (class-balanced samples: the overall fraction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.errors import BenchError

PROBE_L2 = 1e-3  # ridge on the standardised features: the 2048 features outnumber a small class's images
PROBE_MAX_ITER = 500  # L-BFGS iterations (full batch); the optimum is reached well before on Imagenette
PROBE_TOL = 1e-10  # gradient tolerance (max abs) that ends the fit early
STD_FLOOR = 1e-6  # features constant over the training images are left unscaled


@dataclass(frozen=True)
class Probe:
    mean: Tensor  # [D] float64
    scale: Tensor  # [D] float64
    weight: Tensor  # [D, K] float64
    bias: Tensor  # [K] float64
    l2: float
    iterations: int  # objective evaluations L-BFGS used
    grad_norm: float  # max |gradient| of the objective at the returned weights
    train_accuracy: float

    @property
    def num_classes(self) -> int:
        return int(self.bias.shape[0])

    def logits(self, features: Tensor) -> Tensor:
        x = (features.to(self.weight).sub(self.mean)).div(self.scale)
        return x @ self.weight + self.bias

    def predict(self, features: Tensor) -> Tensor:
        return self.logits(features).argmax(dim=1)

    def describe(self) -> dict:
        return {
            "model": "multinomial logistic regression on standardised Inception pool features",
            "l2": self.l2,
            "optimiser": "full-batch L-BFGS, strong Wolfe, float64, zero initialisation",
            "iterations": self.iterations,
            "grad_norm": self.grad_norm,
            "train_accuracy": self.train_accuracy,
        }


def objective(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, l2: float) -> Tensor:
    """Mean cross-entropy of softmax(x W + b) + (l2 / 2) ||W||^2 (the bias is not penalised)."""
    return torch.nn.functional.cross_entropy(x @ weight + bias, y) + 0.5 * l2 * weight.square().sum()


def fit_probe(
    features: Tensor, labels: Tensor, num_classes: int, l2: float = PROBE_L2, max_iter: int = PROBE_MAX_ITER
) -> Probe:
    """The probe on [M, D] features and [M] labels in 0..num_classes-1 (every class present)."""
    if features.dim() != 2 or labels.shape != (len(features),):
        raise BenchError(
            f"A probe needs [M, D] features and [M] labels; got {list(features.shape)}, {list(labels.shape)}."
        )
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes)
    if len(counts) != num_classes or bool((counts == 0).any()):
        raise BenchError(f"Probe labels must cover the classes 0..{num_classes - 1}, each at least once.")
    x64 = features.double()
    mean, scale = x64.mean(dim=0), x64.std(dim=0).clamp(min=STD_FLOOR)
    x, y = (x64 - mean) / scale, labels.long()
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=PROBE_TOL,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective(x, y, weight, bias, l2)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        loss = objective(x, y, weight, bias, l2)
        grads = torch.autograd.grad(loss, [weight, bias])
    evaluations = int(opt.state[weight].get("func_evals", 0))
    grad_norm = max(float(g.abs().max()) for g in grads)
    w, b = weight.detach(), bias.detach()
    train_accuracy = float(((x @ w + b).argmax(dim=1) == y).double().mean())
    return Probe(mean, scale, w, b, l2, evaluations, grad_norm, train_accuracy)


@dataclass(frozen=True)
class ClassAccuracy:
    mean: float  # mean over classes of the per-class accuracy
    per_class: tuple[float, ...]
    counts: tuple[int, ...]  # samples per class


def class_accuracy(predicted: Tensor, labels: Tensor, num_classes: int) -> ClassAccuracy:
    """Per class c: the fraction of the rows labelled c that are predicted c; refuses a class with no row."""
    labels, predicted = labels.long().cpu(), predicted.long().cpu()
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or bool((counts == 0).any()):
        raise BenchError(f"Class accuracy needs samples of every class 0..{num_classes - 1}; some have none.")
    hits = torch.bincount(labels[predicted == labels], minlength=num_classes)
    per_class = (hits.double() / counts.double()).tolist()
    return ClassAccuracy(sum(per_class) / num_classes, tuple(per_class), tuple(int(c) for c in counts))
