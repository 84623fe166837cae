"""DVC stage seeds@FAMILY: fine-tuning repeated over finetune.seeds; mean ± sd of test accuracy and macro-F1."""
from pipeline.seeds import finetune_seeds
from pipeline.stage import family_stage

family_stage("seeds", finetune_seeds)
