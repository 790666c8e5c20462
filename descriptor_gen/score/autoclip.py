"""AutoCLIP (Metzen, Saranrittichai & Mummadi, TMLR 2024): per-image weights over a class's
texts from one gradient step, with the step size set to reach a target entropy.

For an image with similarities s[c, k] to the texts of each class, the weights w = softmax(ρ)
start uniform (ρ = 0); the class logits are l[c] = Σ_k w[k] s[c, k]; one ascent step on
log Σ_c exp l[c] gives ρ = α ∇ρ, and α is found by bisection (on [0, 1e7], tolerance 1e-2
absolute and relative, as their `scipy.optimize.bisect` call) so that the weights' entropy in
bits is β times the uniform weights'. Scores are the weighted similarities l[c].

When the texts are aligned across classes (templates; WaffleCLIP's shared random descriptors),
text k means the same for every class and the weights are shared, as in the paper. LLM
descriptors differ per class: then each class has its own weights over its own texts (its
gradient p[c]·w[c,k]·(s[c,k] − l[c])), one step size per image, and the target is the mean
over classes of entropy / log2(|D(c)|) = β (classes with one text count as uniform).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from descriptor_gen.score.scoring import ClassTexts

_LOW, _HIGH, _XTOL, _RTOL, _MAX_ITER = 0.0, 1e7, 1e-2, 1e-2, 100
_CHUNK_CELLS = 20_000_000  # image x text similarities held at once


def entropy_bits(weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """−Σ w log2(w + 1e-10), as the reference computes it."""
    return -(weights * np.log2(weights + 1e-10)).sum(axis=axis)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def bisect_steps(excess: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """Per image, the root of `excess(alpha)` (vectorised over images) on [0, 1e7], by
    scipy.optimize.bisect's steps (including its answer when it runs out of iterations);
    where there is no sign change (all texts alike) the step is 0: uniform weights."""
    f_low = excess(np.full(n, _LOW))
    f_high = excess(np.full(n, _HIGH))
    root = np.where(f_high == 0, _HIGH, _LOW)
    active = (f_low * f_high) < 0
    low = np.full(n, _LOW)
    width = np.full(n, _HIGH - _LOW)
    for _ in range(_MAX_ITER):
        if not active.any():
            break
        width = width * 0.5
        mid = low + width
        f_mid = excess(mid)
        low = np.where(active & (f_mid * f_low >= 0), mid, low)
        done = active & ((f_mid == 0) | (np.abs(width) < _XTOL + _RTOL * np.abs(mid)))
        root = np.where(done, mid, root)
        active &= ~done
    return np.where(active, low, root)


def _aligned(sims: np.ndarray, beta: float) -> np.ndarray:
    """sims (n, C, K) -> (n, C) with weights over k shared by the classes."""
    k = sims.shape[2]
    if k == 1:
        return sims[:, :, 0]
    probs = _softmax(sims.mean(axis=2), axis=1)
    pulled = (probs[:, :, None] * sims).sum(axis=1)  # ∂lse/∂w
    grad = (pulled - pulled.mean(axis=1, keepdims=True)) / k  # ∂lse/∂ρ at ρ = 0
    target = beta * np.log2(k)
    alpha = bisect_steps(lambda a: entropy_bits(_softmax(a[:, None] * grad)) - target, len(sims))
    weights = _softmax(alpha[:, None] * grad)
    return (sims * weights[:, None, :]).sum(axis=2)


def _per_class(sims: np.ndarray, owner: np.ndarray, counts: np.ndarray, beta: float) -> np.ndarray:
    """sims (n, T), text t belonging to class owner[t] -> (n, C), each class its own weights."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean = np.add.reduceat(sims, starts, axis=1) / counts
    probs = _softmax(mean, axis=1)
    grad = probs[:, owner] * (sims - mean[:, owner]) / counts[owner]
    several = counts > 1
    norm = np.where(several, np.log2(np.maximum(counts, 2)), 1.0)

    def weights(alpha: np.ndarray) -> np.ndarray:
        z = alpha[:, None] * grad
        z = z - np.maximum.reduceat(z, starts, axis=1)[:, owner]
        e = np.exp(z)
        return e / np.add.reduceat(e, starts, axis=1)[:, owner]

    def excess(alpha: np.ndarray) -> np.ndarray:
        w = weights(alpha)
        per_class = -np.add.reduceat(w * np.log2(w + 1e-10), starts, axis=1) / norm
        return per_class[:, several].mean(axis=1) - beta

    if not several.any():
        return mean
    alpha = bisect_steps(excess, len(sims))
    return np.add.reduceat(weights(alpha) * sims, starts, axis=1)


def autoclip_scores(image_features: np.ndarray, text_features: np.ndarray, ct: ClassTexts,
                    beta: float = 0.85) -> np.ndarray:
    """(N, C) AutoCLIP scores for one group of texts per class, in image chunks."""
    counts = np.array([sum(len(g.texts) for g in groups) for groups in ct.groups])
    aligned = (all(g.aligned for groups in ct.groups for g in groups)
               and len(set(counts.tolist())) == 1)
    owner = np.repeat(np.arange(len(counts)), counts)
    texts = np.asarray(text_features, np.float32)  # no copy of fp32 features (a block's call)
    step = max(1, _CHUNK_CELLS // max(len(texts), 1))
    out = []
    for start in range(0, len(image_features), step):
        sims = image_features[start : start + step].astype(np.float32) @ texts.T
        sims = sims.astype(np.float64)
        if aligned:
            out.append(_aligned(sims.reshape(len(sims), len(counts), int(counts[0])), beta))
        else:
            out.append(_per_class(sims, owner, counts, beta))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(counts)), np.float32)
