"""Upper bounds of the counts and seeds users give: each far above what the references use,
and low enough that the work it asks for ends and fits in memory. An option past one is
refused where it enters, naming the bound."""

from __future__ import annotations

MAX_SEED = 2**31 - 1  # numpy, torch and Python generators all take it; seed·100003 + epoch fits
MAX_REPEATS = 1_000  # seeded repeats of a zero-shot method (WaffleCLIP: 7)
MAX_WAFFLE_COUNT = 10_000  # random descriptors a class (WaffleCLIP: 15)
MAX_EPOCHS = 100_000  # training epochs (CoOp: 200; padding: 1000)
MAX_SHOTS = 100_000  # labelled images a class
MAX_VIEWS = 256  # augmented views of each shot, encoded and cached (Tip-Adapter: 10)
MAX_BATCH = 65_536  # images a training step
