"""DVC stage baseline: TF-IDF + logistic regression on the same splits (artifacts/metrics/baseline)."""
from pipeline.baseline import tfidf_baseline
from pipeline.stage import params_stage

params_stage("baseline", lambda params: tfidf_baseline(cfg=params.baseline, seed=params.data.seed))
