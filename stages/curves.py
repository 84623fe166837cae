"""DVC stage curves@FAMILY: label-scarce learning curves, pretrained vs random init over seeds, and TF-IDF."""
from pipeline.curves import learning_curves, summary_line
from pipeline.stage import family_stage

family_stage("curves", lambda family, params: summary_line(learning_curves(family, params)))
