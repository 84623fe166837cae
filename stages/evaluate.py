"""DVC stage evaluate: every family x backend present -> artifacts/evaluation (metrics, statistics, plot data)."""
import sys

from pipeline.cli import main

main(["evaluate", *sys.argv[1:]])
