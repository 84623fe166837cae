"""`bilm ...`: each command is a thin call into the library. Heavy imports stay inside the commands, so that
`bilm predict` runs where only onnxruntime and tokenizers are installed."""
from __future__ import annotations

import click

from pipeline.cli_base import BilmGroup
from pipeline.params_cli import command_params, params_option, set_option


@click.group(cls=BilmGroup)
@click.version_option(package_name="bilm-pipeline")
def main() -> None:
    """bilm: train, fine-tune, export and compare BERT and XLNet."""


@main.command()
@params_option
@set_option
def prepare(params_file: str, overrides: tuple[str, ...]) -> None:
    """Load, clean and split the dataset; write artifacts/data and the pretraining corpus (pretrain.corpus)."""
    params = command_params(params_file, overrides)
    from pipeline.data import prepare as run

    stats = run(params.data, corpus=params.pretrain.corpus)
    click.echo({k: v for k, v in stats.items() if k in ("train", "validation", "test")})


@main.command()
@click.argument("family")
@params_option
@set_option
def tokenizer(family: str, params_file: str, overrides: tuple[str, ...]) -> None:
    """Train FAMILY's tokenizer on the train-split corpus."""
    params = command_params(params_file, overrides, family)
    from pipeline.tokenize import train_tokenizer

    train_tokenizer(family, params)


@main.command()
@click.argument("family")
@params_option
@set_option
def pretrain(family: str, params_file: str, overrides: tuple[str, ...]) -> None:
    """Pretrain FAMILY from scratch (BERT: MLM + NSP; XLNet: PLM). Resumes from its last checkpoint."""
    params = command_params(params_file, overrides, family)
    from pipeline.pretrain import pretrain as run

    run(family, params)


@main.command()
@click.argument("family")
@click.option("--init", default=None, help="pretrained | random | a from_pretrained folder, hub id or python:MODULE")
@click.option("--ablation", is_flag=True,
              help="the ablation: from finetune.ablation_init (default random: no pretraining), its own outputs")
@params_option
@set_option
def finetune(family: str, init: str | None, ablation: bool, params_file: str, overrides: tuple[str, ...]) -> None:
    """Fine-tune FAMILY for classification; pick the best epoch on validation macro-F1; test it."""
    params = command_params(params_file, overrides + ((f"finetune.init={init}",) if init else ()), family)
    from pipeline.finetune import finetune as run

    result = run(family, params, ablation=ablation)
    click.echo(result["summary"])


@main.command()
@click.argument("family")
@params_option
@set_option
def seeds(family: str, params_file: str, overrides: tuple[str, ...]) -> None:
    """Repeat FAMILY's fine-tuning over `finetune.seeds`; report mean ± sd of test accuracy and macro-F1."""
    params = command_params(params_file, overrides, family)
    from pipeline.seeds import finetune_seeds

    summary = finetune_seeds(family, params)
    click.echo({k: summary[k] for k in ("n", "accuracy", "f1_macro")})


@main.command()
@click.argument("family")
@click.option("--init", default=None,
              help="the weights to probe: pretrained (finetune.init's default) | a from_pretrained folder, hub id or "
                   "python:MODULE")
@params_option
@set_option
def probe(family: str, init: str | None, params_file: str, overrides: tuple[str, ...]) -> None:
    """Frozen-feature probe: a logistic regression on FAMILY's mean-pooled features, pretrained vs random init,
    on train subsets (`probe.*`); minutes, where the learning curves take half an hour. Not a DVC stage."""
    params = command_params(params_file, overrides, family)
    from pipeline.probe import probe as run, summary_lines

    click.echo(summary_lines(run(family, params, init=init)))


@main.command()
@params_option
@set_option
def baseline(params_file: str, overrides: tuple[str, ...]) -> None:
    """TF-IDF + logistic regression reference on the same splits."""
    params = command_params(params_file, overrides)
    from pipeline.baseline import tfidf_baseline

    metrics = tfidf_baseline(cfg=params.baseline, seed=params.data.seed)
    click.echo({k: metrics[k] for k in ("analyzer", "C", "accuracy", "f1_macro")})


def _register_optional() -> None:
    from pipeline.eval_commands import evaluate, report  # light: the library loads inside the commands

    main.add_command(evaluate)
    main.add_command(report)
    try:
        from pipeline.export.commands import export, predict
    except ImportError:  # the export package is optional in a stripped install
        return
    main.add_command(export)
    main.add_command(predict)
    from pipeline.export.optimize_commands import bench, optimize, quantize  # click only; library inside

    for command in (optimize, quantize, bench):
        main.add_command(command)
    from pipeline.serve.commands import loadtest, serve  # click only; PyTriton inside (the serve extra)
    main.add_command(serve)
    main.add_command(loadtest)


_register_optional()

if __name__ == "__main__":
    main()
