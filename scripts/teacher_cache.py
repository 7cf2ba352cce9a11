"""Compute the distillation targets for a shard of the training images (helper for parallel runs)."""
import sys
from pathlib import Path

import numpy as np

from kiosk.paths import datasets_dir
from kiosk.training.split import build_training_set
from kiosk.training.teacher import teacher_embeddings

shard, shards, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
d = datasets_dir()
ts = build_training_set([d / "lfw/lfw-deepfunneled", d / "celeba-subset"], d / "lfw/lfw-deepfunneled",
                        d / "lfw/pairs.txt", [1, 2, 3, 4, 5], [10])
paths = ts.paths[shard::shards]
np.save(out, teacher_embeddings(paths, desc=f"teacher {shard}"))
print(len(ts.paths), "training images", len(ts.identities), "identities")
