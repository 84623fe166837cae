"""seeds stage: fine-tuning repeated over `finetune.seeds`; test accuracy and macro-F1, mean ± sd.

Apart from pipeline.finetune so that the default, with no extra seeds, reads one metrics file without importing
the training stack (transformers' Trainer took 12 s to import on the 2-core AVX2 machine, in every stage run)."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.config import Params
from pipeline.families import check_family_keys
from pipeline.io import read_json, write_json
from pipeline.paths import Paths


def finetune_seeds(family_name: str, params: Params, paths: Paths = Paths()) -> dict:
    """Repeat fine-tuning for each seed in `finetune.seeds`; report test accuracy and macro-F1 mean ± sd.

    The main run (finetune.seed) is read from its metrics, not trained again. An empty list reports the
    main run alone (n = 1), so the default pipeline pays nothing for this stage.
    """
    check_family_keys(params)
    main_seed = params.finetune.seed
    runs = {main_seed: read_json(paths.metrics("finetune", family_name) / "test.json")}
    for seed in dict.fromkeys(params.finetune.seeds):
        if seed not in runs:
            from pipeline.finetune import finetune  # the training stack, only when a seed trains

            run_params = dataclasses.replace(params, finetune=dataclasses.replace(params.finetune, seed=seed))
            runs[seed] = finetune(family_name, run_params, paths, seed_run=True)["test"]
    summary: dict = {"n": len(runs), "seeds": {str(s): {k: m[k] for k in ("accuracy", "f1_macro")}
                                               for s, m in runs.items()}}
    for key in ("accuracy", "f1_macro"):
        values = np.array([m[key] for m in runs.values()])
        summary[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    write_json(paths.metrics("seeds") / f"{family_name}.json", summary)
    return summary
