"""DVC stage report: artifacts/evaluation + training curves -> artifacts/report/report.md and its PNGs."""
import sys

from pipeline.cli import main

main(["report", *sys.argv[1:]])
