"""DVC stage pretrain@FAMILY: artifacts/pretrained/FAMILY (+ resumable checkpoints, metrics, loss curves)."""
import sys

from pipeline.cli import main

main(["pretrain", *sys.argv[1:]])
