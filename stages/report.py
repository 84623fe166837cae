"""DVC stage report: artifacts/report/report.md and its plots, from the evaluate stage's files."""
from pipeline.report import write_report
from pipeline.stage import params_stage

params_stage("report", lambda params: write_report(params.families))
