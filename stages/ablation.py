"""DVC stage ablation@FAMILY: the same fine-tuning from random init (the "no pretraining" row)."""
from pipeline.finetune import finetune
from pipeline.stage import family_stage

family_stage("ablation", lambda family, params: finetune(family, params, ablation=True)["summary"])
