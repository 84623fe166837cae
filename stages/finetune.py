"""DVC stage finetune@FAMILY: fine-tune the pretrained model for classification; test metrics."""
from pipeline.finetune import finetune
from pipeline.stage import family_stage

family_stage("finetune", lambda family, params: finetune(family, params)["summary"])
