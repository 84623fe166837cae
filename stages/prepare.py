"""DVC stage prepare: artifacts/data/{train,validation,test}.jsonl, label2id.json, stats.json, corpus.txt."""
import sys

from pipeline.cli import main

main(["prepare", *sys.argv[1:]])
