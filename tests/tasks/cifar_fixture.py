"""Writes a tiny CIFAR-10 in its published python format (too binary to commit as a fixture)."""

import os
import pickle

import numpy as np

from research.tasks import image

PER_BATCH = 4


def write_cifar(root, seed: int = 0, per_batch: int = PER_BATCH) -> tuple[str, dict]:
    """cifar-10-batches-py/ under `root`: five training batches and a test batch of `per_batch`
    random images each, pickled as the release does; returns the folder and name -> (data, labels).
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, image.FOLDER)
    os.makedirs(folder)
    batches = {}
    for name in (*image.TRAIN_BATCHES, image.TEST_BATCH):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        batches[name] = (data, labels)
        with open(os.path.join(folder, name), "wb") as file:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, file)
    with open(os.path.join(folder, "batches.meta"), "wb") as file:
        pickle.dump({b"label_names": [b"airplane"] * 10}, file)
    return folder, batches
