"""DVC stage pretrain@FAMILY: pretraining from scratch (BERT: MLM + NSP; XLNet: PLM); resumes when interrupted."""
from pipeline.pretrain import pretrain
from pipeline.stage import family_stage

family_stage("pretrain", pretrain)
