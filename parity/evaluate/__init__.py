"""Dataset-level parity: accuracy, top-1 agreement with torch, and flipped predictions.

``parity run`` compares every tap on a handful of fixtures; this module asks the question
users ask before shipping: on a labelled dataset, does a runtime change the *answers*?
For torch and each runtime variant it reports accuracy, top-1 agreement with torch, and
every image whose top-1 prediction flips against torch (with the logit margins).

Dataset: an ImageFolder tree, ``root/<class folder>/<image>``. Each class folder is mapped
to a class index by the first rule that applies:

1. ``root/classes.txt``: line ``i`` (non-empty lines, 0-based) is the folder name of class
   ``i``. ``root/synsets.txt``: the same, first whitespace-separated token of each line
   (ImageNet's ``LOC_synset_mapping.txt`` format: ``n01440764 tench, Tinca tinca``).
2. The card has class names (torchvision categories) and every folder is one of them.
3. Every folder name is an integer in ``[0, num_classes)``: that integer.
4. Exactly ``num_classes`` folders: sorted order (torchvision's ImageFolder rule, which is
   also ImageNet's: the 1000 synset folders sorted give the class indices).

Anything else is an error naming the folders and the fix. Hidden files and the mapping
files are ignored; any other file at the root, a file in a class folder that is not an
image (by suffix), an empty class folder, or an undecodable image is an error.

Image order is deterministic: sorted by (class folder, file name); an image's *index* is
its position in that order. ``limit`` keeps ``limit`` images spread evenly over that
order (so every class is represented); ``shard=(k, n)`` then keeps every ``n``-th of
those starting at ``k``. Shard results are merged by :func:`merge_results` into exactly
the result of the unsharded run (counts add; flips concatenate in index order).

Each variant runs in its backend's worker process (:mod:`parity.workers`), over the
images preprocessed once by the parent; this package is numpy. Layout:
:mod:`.dataset` (scanning, selection, sharding), :mod:`.running` (the workers),
:mod:`.results` (scores, JSON, merging), :mod:`.display` (the terminal table).
"""

from parity.evaluate.dataset import (
    MAPPING_FILES,
    ImageFolder,
    LabelledImage,
    parse_shard,
    scan_image_folder,
    select_indices,
    shard_indices,
)
from parity.evaluate.display import print_eval
from parity.evaluate.results import (
    FORMAT,
    KIND,
    EvalResult,
    VariantScore,
    merge_results,
    read_result,
    score_batch,
    write_result,
)
from parity.evaluate.running import DEFAULT_BATCH, EvalConfig, evaluate, reference_device

__all__ = [
    "DEFAULT_BATCH",
    "FORMAT",
    "KIND",
    "MAPPING_FILES",
    "EvalConfig",
    "EvalResult",
    "ImageFolder",
    "LabelledImage",
    "VariantScore",
    "evaluate",
    "merge_results",
    "parse_shard",
    "print_eval",
    "read_result",
    "reference_device",
    "scan_image_folder",
    "score_batch",
    "select_indices",
    "shard_indices",
    "write_result",
]
