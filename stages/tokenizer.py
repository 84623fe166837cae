"""DVC stage tokenizer@FAMILY: train the family's tokenizer on the train-split corpus."""
from pipeline.stage import family_stage
from pipeline.tokenize import train_tokenizer

family_stage("tokenizer", train_tokenizer)
