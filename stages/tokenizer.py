"""DVC stage tokenizer@FAMILY: artifacts/tokenizers/FAMILY."""
import sys

from pipeline.cli import main

main(["tokenizer", *sys.argv[1:]])
