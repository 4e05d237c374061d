"""Evaluation: CMC/mAP/mINP, the published SYSU-MM01 / RegDB / LLCM protocols, re-ranking, reports.

Typical use::

    from kglfr.eval import evaluate_protocol, load_features, format_table
    result = evaluate_protocol(load_features("feats.npz"), "sysu-all")
    print(format_table(result))
"""

from kglfr.eval.features import FeatureFileError, FeatureSet, check_features, load_features, save_features
from kglfr.eval.metrics import (
    METRIC_KEYS,
    RANKS,
    REMOVAL_RULES,
    Metrics,
    NoValidQueryError,
    QueryStats,
    evaluate,
    query_stats,
    summarize,
)
from kglfr.eval.protocols import (
    PROTOCOLS,
    Protocol,
    ProtocolError,
    ProtocolResult,
    TrialResult,
    draw,
    evaluate_protocol,
    get_protocol,
    trial_sets,
)
from kglfr.eval.report import format_table, result_to_dict, write_result
from kglfr.eval.rerank import RerankConfig, RerankError, k_reciprocal_rerank

__all__ = [
    "METRIC_KEYS",
    "PROTOCOLS",
    "RANKS",
    "REMOVAL_RULES",
    "FeatureFileError",
    "FeatureSet",
    "Metrics",
    "NoValidQueryError",
    "Protocol",
    "ProtocolError",
    "ProtocolResult",
    "QueryStats",
    "RerankConfig",
    "RerankError",
    "TrialResult",
    "check_features",
    "draw",
    "evaluate",
    "evaluate_protocol",
    "format_table",
    "get_protocol",
    "k_reciprocal_rerank",
    "load_features",
    "query_stats",
    "result_to_dict",
    "save_features",
    "summarize",
    "trial_sets",
    "write_result",
]
