"""Study 8 (resnet8) with fine-tuning steps scaled up for small candidates: 20 * clip(sqrt(0.3 / params_ratio), 1, 4)."""
import os
import runpy
import sys

import moprune


class ScaledEvaluator(moprune.Evaluator):
    base_params = None

    def finetune_plan(self, space, plan, *, seed, **options):
        if not hasattr(plan, "kind"):
            plan = space.decode(plan)
        if ScaledEvaluator.base_params is None:
            ScaledEvaluator.base_params = sum(p.numel() for p in space.model.parameters())
        ratio = sum(p.numel() for p in space.materialize(plan).parameters()) / ScaledEvaluator.base_params
        steps = int(round(20 * min(4.0, max(1.0, (0.3 / max(ratio, 1e-6)) ** 0.5))))
        return super().finetune_plan(space, plan, seed=seed, **{"steps": steps, **options})


moprune.Evaluator = ScaledEvaluator
sys.argv = ["run.py", "--models", "resnet8", "--finetune", "20", "--threads", "2", "--out", os.path.dirname(os.path.abspath(__file__))]
runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "run.py"), run_name="__main__")
