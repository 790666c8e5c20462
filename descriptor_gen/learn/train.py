"""The training loop of the learned methods: reference optimisers and schedules, a checkpoint
after every epoch (Ctrl-C loses at most the epoch in progress), and an exact resume.

Shuffling and view choice come from a generator seeded by (seed, epoch), and the schedules are
functions of the step, so a resumed run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from descriptor_gen.learn.learners import Learner
from descriptor_gen.learn.methods import Recipe

WARMUP_LR = 1e-5  # CoOp's constant warm-up learning rate (one epoch)
WARMUP_EPOCHS = 1


@dataclass
class Schedule:
    recipe: Recipe
    lr: float
    epochs: int
    steps_per_epoch: int
    warmup_steps: int = 0

    @property
    def total(self) -> int:
        return self.epochs * self.steps_per_epoch

    def at(self, epoch: int, step: int) -> float:
        """The learning rate of one step (`step` counted within the epoch)."""
        return SCHEDULES[self.recipe.schedule](self, epoch, epoch * self.steps_per_epoch + step)


def coop_lr(lr: float, epochs: int, epoch: int) -> float:
    """dassl's ConstantWarmupScheduler over CosineAnnealingLR(T_max=epochs) with CoOp's configs
    (WARMUP_EPOCH 1, WARMUP_RECOUNT True): the cosine's own epoch count starts after the
    warm-up, so epoch e >= 1 runs at lr/2 (1 + cos(pi (e - 1) / epochs))."""
    if epoch < WARMUP_EPOCHS:
        return WARMUP_LR
    return 0.5 * lr * (1 + math.cos(math.pi * (epoch - WARMUP_EPOCHS) / epochs))


def _cosine_steps(s: Schedule, epoch: int, step: int) -> float:
    """Tip-Adapter-F's CosineAnnealingLR(T_max = all steps), stepped per batch."""
    return 0.5 * s.lr * (1 + math.cos(math.pi * step / max(s.total, 1)))


def _warmup_cosine_steps(s: Schedule, epoch: int, step: int) -> float:
    """visual_prompting's cosine_lr: a linear warm-up over its steps, then a cosine by step."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    done = step - s.warmup_steps
    return 0.5 * (1 + math.cos(math.pi * done / max(s.total - s.warmup_steps, 1))) * s.lr


SCHEDULES: dict[str, Callable[[Schedule, int, int], float]] = {
    "coop": lambda s, epoch, step: coop_lr(s.lr, s.epochs, epoch),
    "cosine-steps": _cosine_steps,
    "warmup-cosine-steps": _warmup_cosine_steps,
    "none": lambda s, epoch, step: s.lr,
}
"""A recipe's learning rate at (epoch, global step)."""

OPTIMISERS: dict[str, Callable[[list[torch.nn.Parameter], float, Recipe], torch.optim.Optimizer | None]] = {
    "sgd": lambda params, lr, r: torch.optim.SGD(params, lr=lr, momentum=0.9,
                                                 weight_decay=r.weight_decay),
    "adamw": lambda params, lr, r: torch.optim.AdamW(params, lr=lr, eps=1e-4),
    "none": lambda params, lr, r: None,
}


def make_optimiser(recipe: Recipe, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer | None:
    return OPTIMISERS[recipe.optimiser](params, lr, recipe)


def optimiser_state(optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as tensors (for safetensors) and the rest (for JSON)."""
    state = optimiser.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        rest["state"][str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                rest["state"][str(index)][key] = value
    return tensors, rest


def restore_optimiser(optimiser: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for index, values in rest["state"].items():
        state[int(index)] = dict(values)
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimiser.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


class Batches:
    """Where training batches come from: (features or images, labels) for sample indices."""

    def __init__(self, get: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
                 labels: torch.Tensor, views: int) -> None:
        self.get, self.labels, self.views = get, labels, views

    def epoch(self, seed: int, epoch: int, batch_size: int, drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=generator)
        view = torch.randint(self.views, (n,), generator=generator)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            yield self.get(index, view[index], epoch), self.labels[index]


@dataclass
class EpochLog:
    epoch: int
    loss: float
    accuracy: float
    lr: float
    seconds: float


def train(learner: Learner, batches: Batches, recipe: Recipe, lr: float, epochs: int,
          batch_size: int, seed: int, start_epoch: int,
          optimiser: torch.optim.Optimizer | None, save: Callable[[int, list[EpochLog]], None],
          warmup_steps: int = 0, progress: bool = True,
          step_loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
          on_epoch: Callable[[EpochLog], None] | None = None) -> list[EpochLog]:
    """Train from `start_epoch` to `epochs`, calling `save` (then `on_epoch`) after each epoch."""
    n = len(batches.labels)
    drop_last = recipe.drop_last
    steps = (n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)) or 1
    schedule = Schedule(recipe, lr, epochs, steps, warmup_steps)
    compute = step_loss or learner.loss
    logs: list[EpochLog] = []
    learner.train()
    bar = tqdm(range(start_epoch, epochs), disable=not progress, desc="train", unit="epoch",
               dynamic_ncols=True)
    for epoch in bar:
        started = time.perf_counter()
        losses, correct, seen = [], 0, 0
        current = schedule.at(epoch, 0)
        for step, (inputs, labels) in enumerate(batches.epoch(seed, epoch, batch_size, drop_last)):
            current = schedule.at(epoch, step)
            assert optimiser is not None
            for group in optimiser.param_groups:
                group["lr"] = current
            loss, logits = compute(inputs, labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.item()))
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
        logs.append(EpochLog(epoch, sum(losses) / max(len(losses), 1), correct / max(seen, 1),
                             current, time.perf_counter() - started))
        bar.set_postfix(loss=f"{logs[-1].loss:.4f}", acc=f"{logs[-1].accuracy:.3f}", refresh=False)
        save(epoch + 1, logs)
        if on_epoch is not None:
            on_epoch(logs[-1])
    learner.eval()
    return logs
