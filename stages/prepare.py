"""DVC stage prepare: load, clean and split the data source; write artifacts/data."""
from pipeline.data import prepare
from pipeline.stage import params_stage

params_stage("prepare", lambda params: prepare(params.data, corpus=params.pretrain.corpus))
