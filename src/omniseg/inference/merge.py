"""Probability codes and the multi-class merge rule (pure numpy, one chunk at a time).

Probabilities are stored as uint8 *codes* (0..255, about round(p * 255)) that keep every
threshold decision exact: a pixel with p > threshold always gets a code >= ``threshold_code``,
one with p <= threshold a code below it. So thresholding stored codes gives the same mask as
thresholding the float prediction (``segment`` on a patch == ``evaluate`` on it).

Merge rule (label value = task id + 1, 0 = background):
* glomerulus = capsule or tuft foreground; inside it tuft (4) is written over capsule (3);
* PTC is never inside a glomerulus;
* every other overlap (DT, PT, vessel, PTC, glomerulus) goes to the higher probability, ties to
  the lower task id (deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from omniseg.catalogue import tissue

CODE_MAX = 255
DT, PT, CAPSULE, TUFT, VESSEL, PTC = (
    tissue(n).id for n in ("dt", "pt", "capsule", "tuft", "vessel", "ptc")
)
GLOMERULUS = CAPSULE  # object class of the glomerular unit (capsule ∪ tuft)
BACKGROUND = 0


def threshold_code(threshold: float) -> int:
    """Smallest code that counts as foreground for ``p > threshold``."""
    return int(np.floor(threshold * CODE_MAX)) + 1


def probability_codes(prob: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(T, H, W) float probabilities -> uint8 codes, one threshold per leading index."""
    prob = np.asarray(prob, dtype=np.float32)
    codes = np.rint(np.clip(prob, 0.0, 1.0) * CODE_MAX).astype(np.int16)
    for t, thr in enumerate(thresholds):
        cut = threshold_code(thr)
        above = prob[t] > thr
        codes[t] = np.where(above, np.maximum(codes[t], cut), np.minimum(codes[t], cut - 1))
    return np.clip(codes, 0, CODE_MAX).astype(np.uint8)


def merge_labels(
    codes: Mapping[int, np.ndarray], cuts: Mapping[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-task code maps (float or uint8, same shape) into (labels uint8, winner code).

    ``codes`` holds only the tasks that were run; ``cuts[t]`` is ``threshold_code`` of task t.
    """
    shape = next(iter(codes.values())).shape
    missing = np.full(shape, -1.0, dtype=np.float32)

    def score(task: int) -> tuple[np.ndarray, np.ndarray]:
        if task not in codes:
            return missing, np.zeros(shape, dtype=bool)
        value = np.asarray(codes[task], dtype=np.float32)
        fg = value >= cuts[task]
        return np.where(fg, value, -1.0).astype(np.float32), fg

    capsule, _ = score(CAPSULE)
    tuft, tuft_fg = score(TUFT)
    glomerulus = np.maximum(capsule, tuft)
    ptc, _ = score(PTC)
    ptc = np.where(glomerulus >= 0, -1.0, ptc).astype(np.float32)
    contestants = (DT, PT, GLOMERULUS, VESSEL, PTC)
    scores = (score(DT)[0], score(PT)[0], glomerulus, score(VESSEL)[0], ptc)
    best = scores[0].copy()
    winner = np.zeros(shape, dtype=np.uint8)
    for index in range(1, len(scores)):  # strict ">" keeps ties with the lower task id
        better = scores[index] > best
        winner[better] = index
        np.maximum(best, scores[index], out=best)
    values = np.array([t + 1 for t in contestants], dtype=np.uint8)
    labels = values[winner]
    labels[(labels == CAPSULE + 1) & tuft_fg] = TUFT + 1
    labels[best < 0] = BACKGROUND
    return labels, np.clip(np.rint(best), 0, CODE_MAX).astype(np.uint8)


def object_class_of_label(label_value: int) -> int:
    """Object class of a label value: capsule and tuft both belong to the glomerulus."""
    task = label_value - 1
    return GLOMERULUS if task in (CAPSULE, TUFT) else task


OBJECT_GROUPS: tuple[tuple[int, tuple[int, ...]], ...] = (
    (DT, (DT + 1,)),
    (PT, (PT + 1,)),
    (GLOMERULUS, (CAPSULE + 1, TUFT + 1)),
    (VESSEL, (VESSEL + 1,)),
    (PTC, (PTC + 1,)),
)
"""(object class id, label values) of the classes that become objects."""
