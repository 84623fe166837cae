"""DVC stage seeds@FAMILY: repeat fine-tuning over finetune.seeds; mean ± sd of the test metrics."""
import sys

from pipeline.cli import main

main(["seeds", *sys.argv[1:]])
