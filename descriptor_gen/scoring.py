"""Classifiers from texts, scores, metrics and explanations.

s(c, x) = 1/|D(c)| Σ_d cos(text(d), image(x)). With L2-normalised features this equals
image(x) · mean_d text(d), so the class vector is the mean of the normalised descriptor
embeddings, *not* renormalised (renormalising is the template ensemble's convention, and it
would change the scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["descriptors", "classname", "templates", "descriptors+templates"]
METHODS: tuple[str, ...] = ("descriptors", "classname", "templates", "descriptors+templates")
MENON_TEMPLATE = "menon"
_WHICH_IS = ("a", "an", "used")
_WHICH = ("has", "often", "typically", "may", "can")


def menon_sentence(class_name: str, descriptor: str) -> str:
    """Menon & Vondrick's text form: "{c}, which (is/has/…) {d}".

    Their rule, kept as published (it tests string prefixes, so "aerodynamic" counts as "a"):
    `is` before a/an/used, nothing before has/often/typically/may/can, `has` otherwise.
    """
    if descriptor.startswith(_WHICH_IS):
        return f"{class_name}, which is {descriptor}"
    if descriptor.startswith(_WHICH):
        return f"{class_name}, which {descriptor}"
    return f"{class_name}, which has {descriptor}"


def descriptor_text(class_name: str, descriptor: str, template: str = MENON_TEMPLATE) -> str:
    if template == MENON_TEMPLATE:
        return menon_sentence(class_name, descriptor)
    return template.format(c=class_name, d=descriptor)


@dataclass
class ClassTexts:
    """Per class, the texts whose embeddings make its vector, and how they combine."""

    texts: list[list[str]]
    renormalise: list[bool]
    descriptors: list[list[str]]  # the descriptor behind each text (for explanations)


def class_texts(method: str, classes: list[str], descriptors: dict[int, list[str]],
                templates: list[str], descriptor_template: str = MENON_TEMPLATE,
                ) -> tuple[ClassTexts, list[int]]:
    """The texts of each class for a method; returns them and the classes that fell back to
    their class name because they have no descriptors."""
    out = ClassTexts([], [], [])
    fallback = []
    for index, name in enumerate(classes):
        own = descriptors.get(index) or []
        if method in ("descriptors", "descriptors+templates") and not own:
            fallback.append(index)
        texts, behind, renorm = _one_class(method, name, own, templates, descriptor_template)
        out.texts.append(texts)
        out.descriptors.append(behind)
        out.renormalise.append(renorm)
    return out, fallback


def _one_class(method: str, name: str, own: list[str], templates: list[str],
               descriptor_template: str) -> tuple[list[str], list[str], bool]:
    """(texts, what each text stands for, renormalise the mean?) for one class."""
    described = [descriptor_text(name, d, descriptor_template) for d in own]
    templated = [t.format(name) for t in templates]
    if method == "templates":
        return templated, templated, True
    if method == "descriptors+templates":
        return described + templated, own + templated, False
    if method == "descriptors" and own:
        return described, list(own), False
    return [name], [name], False


def class_vectors(text_features: np.ndarray, ct: ClassTexts) -> np.ndarray:
    """(C, D) class vectors from the flat, row-normalised features of all classes' texts."""
    out = np.zeros((len(ct.texts), text_features.shape[1]), np.float32)
    start = 0
    for index, texts in enumerate(ct.texts):
        vector = text_features[start : start + len(texts)].mean(axis=0)
        if ct.renormalise[index]:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        out[index] = vector
        start += len(texts)
    return out


def scores(image_features: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(N, C) scores in one matmul: s(c, x) = image(x) · mean_d text(d)."""
    return image_features.astype(np.float32) @ vectors.T


@dataclass
class Metrics:
    top1: float
    top5: float
    mean_per_class_recall: float
    n_images: int
    mean_entropy: float


def topk(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best classes per row, best first; ties go to the lower index."""
    k = min(k, score.shape[1])
    order = np.argsort(-score, axis=1, kind="stable")
    return order[:, :k]


def rescaled_entropy(score: np.ndarray, low: float = -10.0, high: float = 10.0) -> np.ndarray:
    """Entropy of softmax over each row's scores, min-max rescaled to [low, high] (Fig. 2)."""
    lo = score.min(axis=1, keepdims=True)
    span = score.max(axis=1, keepdims=True) - lo
    scaled = low + (high - low) * np.divide(score - lo, span, out=np.zeros_like(score), where=span > 0)
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    p = np.exp(scaled)
    p /= p.sum(axis=1, keepdims=True)
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


def metrics(score: np.ndarray, labels: np.ndarray) -> Metrics:
    best5 = topk(score, 5)
    hit1 = best5[:, 0] == labels
    hit5 = (best5 == labels[:, None]).any(axis=1)
    present = np.unique(labels)
    recalls = [hit1[labels == c].mean() for c in present]
    return Metrics(
        top1=float(hit1.mean()) if len(labels) else 0.0,
        top5=float(hit5.mean()) if len(labels) else 0.0,
        mean_per_class_recall=float(np.mean(recalls)) if recalls else 0.0,
        n_images=int(len(labels)),
        mean_entropy=float(rescaled_entropy(score).mean()) if len(labels) else 0.0,
    )


def explain(image_feature: np.ndarray, class_index: int, ct: ClassTexts,
            text_features: np.ndarray, offsets: np.ndarray, k: int) -> list[dict[str, object]]:
    """The k texts of a class most similar to the image, with their cosine similarities."""
    start, stop = offsets[class_index], offsets[class_index + 1]
    sims = text_features[start:stop] @ image_feature.astype(np.float32)
    order = np.argsort(-sims, kind="stable")[:k]
    return [{"descriptor": ct.descriptors[class_index][i], "text": ct.texts[class_index][i],
             "similarity": round(float(sims[i]), 6)} for i in order]
