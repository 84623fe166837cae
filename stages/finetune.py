"""DVC stages finetune@FAMILY and ablation@FAMILY (`--ablation`: random init): a classifier folder + test metrics."""
import sys

from pipeline.cli import main

main(["finetune", *sys.argv[1:]])
