"""One result across trials that each have their own model (RegDB): pure maths on ``kglfr evaluate`` result dicts.

RegDB's published figure is the mean over ten trials, each with a model trained on its own split and
tested on that split. Every trial's run gives a one-row result (``trial_ids: [T]``);
:func:`combine_trials` stacks them into one result of the same format, one row per trial, with the mean
and the sample standard deviation over the trials, as ``kglfr evaluate`` computes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kglfr.errors import KglfrError
from kglfr.eval.metrics import METRIC_KEYS

# per-trial fields of a result, concatenated in trial order
ROW_KEYS = ("trial_ids", "trials", "num_queries", "num_gallery", "queries_without_positive", "features",
            "features_sha256")  # fmt: skip
# fields every trial's result must share
SAME_KEYS = ("protocol", "shot", "distance", "reranking", "rerank_params", "feature")


def combine_trials(results: Sequence[Mapping]) -> dict:
    """One result of the ``kglfr evaluate`` format from per-trial results of one protocol and feature: rows
    in trial order, ``num_trials``, ``mean`` and ``std`` (n - 1, 0 for one trial) over the rows; a per-trial
    ``epoch`` becomes ``epochs``. Raises ``KglfrError`` when the results disagree on what they measured."""
    if not results:
        raise KglfrError("no trial result to combine")
    ordered = sorted(results, key=lambda r: list(r["trial_ids"]))
    first = ordered[0]
    for key in SAME_KEYS:
        values = {repr(r.get(key)) for r in ordered}
        if len(values) > 1:
            raise KglfrError(f"the trial results disagree on {key} ({', '.join(sorted(values))}); "
                             "combine results of one protocol and feature only")  # fmt: skip
    out = {k: v for k, v in first.items() if k != "epoch"}
    for key in ROW_KEYS:
        if key in first:
            out[key] = [v for r in ordered for v in r[key]]
    ids = out["trial_ids"]
    if len(set(ids)) != len(ids):
        raise KglfrError(f"a trial appears twice among the results: {ids}")
    if "epoch" in first:
        out["epochs"] = [r.get("epoch") for r in ordered]
    table = np.array([[row[k] for k in METRIC_KEYS] for row in out["trials"]], dtype=np.float64)
    std = table.std(0, ddof=1) if len(table) > 1 else np.zeros(len(METRIC_KEYS))
    out["num_trials"] = len(table)
    out["mean"] = dict(zip(METRIC_KEYS, table.mean(0).tolist(), strict=True))
    out["std"] = dict(zip(METRIC_KEYS, std.tolist(), strict=True))
    return out


def spans(numbers: Sequence[int]) -> str:
    """``1-8, 10`` for ``[1, 2, ..., 8, 10]``; ``none`` when empty."""
    nums, parts = sorted(numbers), []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ", ".join(parts) or "none"


def describe_trials(used: Sequence[int], expected: Sequence[int], missing: Mapping[int, str]) -> str:
    """``trials 1-8 of 10; 9 unfinished, 10 failed: ...``: which trials the mean covers and why the others
    are left out (``missing`` maps a trial to its reason)."""
    line = f"trials {spans(used)} of {len(expected)}"
    if missing:
        line += "; " + ", ".join(f"{t} {missing[t]}" for t in sorted(missing))
    return line
