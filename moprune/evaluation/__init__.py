"""Evaluation of candidates: the :class:`Evaluator` and its plan-keyed cache."""

from moprune.evaluation.cache import EvalRecord, EvaluationCache
from moprune.evaluation.evaluator import AUTO_FINETUNE, Evaluator, has_batchnorm, plan_seed

__all__ = ["AUTO_FINETUNE", "EvalRecord", "EvaluationCache", "Evaluator", "has_batchnorm", "plan_seed"]
