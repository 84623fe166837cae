"""DVC stage baseline: TF-IDF + logistic regression test metrics, the reference row."""
import sys

from pipeline.cli import main

main(["baseline", *sys.argv[1:]])
