"""DVC stage evaluate: every family x backend present: quality, latency, statistics (artifacts/evaluation)."""
from pipeline.evaluate import evaluate, summary_text
from pipeline.stage import params_stage

params_stage("evaluate", lambda params: summary_text(evaluate(params)))
