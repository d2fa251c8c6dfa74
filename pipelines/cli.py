"""The ``mssr`` command.

    mssr run configs/demo.yaml                       # the demo: 5 tasks, SmolLM2 + LoRA, MSSR, 2 workers
    mssr run configs/demo.yaml replay.strategy=none seed=1 --summary-json out/none.json
    mssr run configs/demo.yaml --dry-run             # validate everything, print the plan, train nothing
    mssr run configs/demo.yaml --resume runs/mssr-20261121-101500   # continue after a crash or Ctrl-C
    mssr run configs/demo.yaml --register demo-model  # the final model as a new version in MLflow's registry
    mssr compare configs/demo.yaml --strategies none,fixed,mssr --seeds 2   # one table, paired 95% intervals
    mssr compare configs/compare.yaml --strategies fixed,mssr --seeds 3 --budgets 0.05,0.1   # budget curves
    mssr compare configs/tiny.yaml --strategies fixed,mssr --seeds 2 --orders 2 --detect 0.1  # blocks over orders
    mssr analyse docs/results/long16-runs --allow-mixed      # the tables of kept runs, recomputed
    mssr tune configs/demo.yaml --space tune_spaces/mssr.yaml --num-samples 8   # Ray Tune sweep, ASHA
    mssr report cmp-s2                               # HTML report of a comparison (or sweep) from MLflow
    mssr continue runs/demo --tasks week2.yaml       # the finished run, taught the next tasks (a new run)
    mssr export runs/demo --out exported/demo        # the fine-tuned adapter (--merge: a plain model)
    mssr eval exported/demo configs/demo.yaml        # one accuracy and loss row for any model on a stream
    mssr validate-data configs/demo.yaml             # counts, duplicates, leakage, lengths of the stream
    mssr provenance runs/ --out provenance.csv       # where each run ran: commit, processor, precision, versions
    mssr prepare-model                               # convert the packaged SmolLM2 once (also automatic)

User errors (bad config, bad data, missing model) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mssr.errors import UserError


def _tracking_override(args: argparse.Namespace) -> list[str]:
    """``--tracking-uri`` as the override it stands for."""
    return [f"mlflow.tracking_uri={args.tracking_uri}"] if args.tracking_uri else []


def _cmd_run(args: argparse.Namespace) -> int:
    from mssr.config import load_config
    from pipelines.run import run_stream

    cfg = load_config(args.config, [*args.overrides, *_tracking_override(args)])
    run_stream(
        cfg,
        dry_run=args.dry_run,
        summary_json=Path(args.summary_json) if args.summary_json else None,
        resume=args.resume,
        register=args.register,
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pipelines.compare import compare, load_tuned, parse_budgets, tuned_on_streams

    overrides = list(args.overrides)
    if args.tracking_uri:
        overrides.append(f"mlflow.tracking_uri={args.tracking_uri}")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else None
    result = compare(
        args.config,
        overrides,
        strategies,
        seeds=args.seeds,
        name=args.name,
        budgets=parse_budgets(args.budgets),
        reference=args.reference,
        tuned=load_tuned(args.tuned),
        tuned_on=tuned_on_streams(args.tuned),
        orders=args.orders,
        primary=args.primary,
        detect=args.detect,
        allow_mixed=args.allow_mixed,
    )
    failed = [r for r in result["runs"] if "error" in r]
    if failed:
        print(f"mssr: {len(failed)} of {len(result['runs'])} runs failed (see the table)", file=sys.stderr)
        return 1
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from pipelines.tune import tune_sweep

    result = tune_sweep(
        args.config,
        args.overrides,
        args.space,
        num_samples=args.num_samples,
        max_concurrent=args.max_concurrent,
        scheduler=args.scheduler,
        metric=args.metric,
        name=args.name,
        resume=args.resume,
    )
    if not result["best_config"]:
        print("mssr: no trial finished the stream (see the table)", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import build_report
    from pipelines.tracking import resolve_tracking_uri

    output_dir = Path(args.output_dir)
    uri = resolve_tracking_uri(args.tracking_uri, output_dir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise UserError(f"no MLflow store at {uri.removeprefix('sqlite:///')}; give --output-dir or --tracking-uri")
    index = build_report(
        args.id, uri, Path(args.out) if args.out else output_dir / "reports" / args.id, reference=args.reference
    )
    print(f"report written to {index.resolve()}")
    return 0


def _cmd_validate_data(args: argparse.Namespace) -> int:
    import json

    from mssr.config import load_config
    from mssr.data_report import describe_stream, format_report
    from mssr.models import load_tokenizer
    from mssr.tasks import load_stream
    from mssr.tokenize import PromptEncoder, encoder_options

    cfg = load_config(args.config, args.overrides)
    tasks = load_stream(cfg.stream)  # invalid rows: exit 2 with file:line
    encoder = PromptEncoder(load_tokenizer(cfg.model), **encoder_options(cfg.stream))
    report = describe_stream(tasks, encoder, cfg.stream.max_length)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if args.strict and report["warnings"] else 0


def _cmd_diagnostics(args: argparse.Namespace) -> int:
    import json

    from mssr.diagnostics import TABLE_HEAD, table_row
    from pipelines.tables import markdown_table

    rows = []
    for run_dir in map(Path, args.run_dirs):
        path = run_dir / "diagnostics.json"
        if not path.is_file():
            raise UserError(f"{path}: not found (a finished run's directory holds diagnostics.json)")
        rows.append([run_dir.name, *table_row(json.loads(path.read_text()))])
    print("\n".join(markdown_table(["run", *TABLE_HEAD], rows)))
    return 0


def _add_diagnostics(sub) -> None:
    diag = sub.add_parser(
        "diagnostics",
        help="a table of the replay diagnostics of finished runs",
        description="One row per run: replayed samples; Spearman's correlation between the memory "
        "model's predicted forgetting (1 - R) and the loss rise of the replayed samples (positive: "
        "informative); replay events in the first, middle and last third of their task; samples "
        "replayed during the last task; and the share of replays drawn from the task learned last, "
        "beside what an even split over the tasks would give.",
    )
    diag.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each with diagnostics.json)")
    diag.set_defaults(func=_cmd_diagnostics)


def _cmd_provenance(args: argparse.Namespace) -> int:
    from pipelines.provenance_table import format_markdown, provenance_table, write_table

    rows = provenance_table(args.paths)
    print(format_markdown(rows))
    if args.out:
        print(f"written to {write_table(rows, args.out)}")
    return 0


def _add_provenance(sub) -> None:
    prov = sub.add_parser(
        "provenance",
        help="a table of where and how finished runs ran (commit, processor, precision, versions)",
        description="One row per run directory (one holding summary.json; a directory above runs: "
        "every run below it, sorted by name): commit, dirty, processor, processor kind, bf16 "
        "instructions, threads, device, train and eval precision, torch, ray, transformers and "
        "peft versions, wall time. Runs from before runs recorded their provenance get their "
        "precisions from the summary and 'unknown' elsewhere. Printed as Markdown.",
    )
    prov.add_argument(
        "paths", nargs="+", metavar="RUN_DIR_OR_PARENT", help="run directories, or directories above them"
    )
    prov.add_argument("--out", metavar="FILE.csv", help="also write the table as CSV")
    prov.set_defaults(func=_cmd_provenance)


def _cmd_prepare_model(args: argparse.Namespace) -> int:
    from mssr.models import prepare_default_model

    path = prepare_default_model(force=args.force)
    print(f"model ready: {path}")
    return 0


def _add_run(sub) -> None:

    run = sub.add_parser(
        "run",
        help="fine-tune a model on a task stream",
        description="Fine-tune a model on a stream of tasks and print the accuracy matrix.",
    )
    run.add_argument("config", help="YAML config (see configs/demo.yaml)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. train.lr=3e-4")
    run.add_argument("--dry-run", action="store_true", help="validate and print the plan without training")
    run.add_argument("--summary-json", metavar="PATH", help="also write the run summary to PATH")
    run.add_argument(
        "--register",
        metavar="NAME",
        help="register the final model in the MLflow Model Registry as a new version of NAME",
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint (default: run.output_dir/run.name)",
    )
    run.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (same as mlflow.tracking_uri=URI; default: sqlite store in output dir)",
    )
    run.set_defaults(func=_cmd_run)


def _add_compare(sub) -> None:
    cmp = sub.add_parser(
        "compare",
        help="run several strategies on the same stream and seeds, print one table",
        description="Run each strategy on each seed (an ordinary run each, tagged with a common "
        "comparison id in MLflow) and write the table as Markdown and CSV.",
    )
    cmp.add_argument("config", help="YAML config shared by every run")
    cmp.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys for every run")
    cmp.add_argument(
        "--strategies",
        metavar="A,B,...",
        help="comma-separated strategy names or import paths, each optionally +ISOLATION "
        "(e.g. mssr+epi); default: none, joint, fixed, loss, accuracy, surprise, mssr, "
        "mssr-sampler, mssr-scheduler",
    )
    cmp.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds seed..seed+N-1 (default 1)")
    cmp.add_argument("--name", metavar="ID", help="comparison id (default cmp-<timestamp>)")
    cmp.add_argument(
        "--budgets",
        metavar="B1,B2,...",
        help="run every strategy at each replay budget (fractions of the new samples, e.g. "
        "0.02,0.05,0.1); fixed schedules derive their interval from the budget",
    )
    cmp.add_argument(
        "--reference",
        metavar="STRATEGY",
        help="the strategy the others are paired against (default: fixed, if compared)",
    )
    cmp.add_argument(
        "--tuned",
        metavar="FILES",
        help="YAML files (comma-separated) of each strategy's tuned settings, e.g. the best_params.yaml of its sweep",
    )
    _add_pairing_options(cmp)
    cmp.add_argument(
        "--orders",
        type=int,
        default=1,
        metavar="K",
        help="task orders per seed: --seeds N --orders K runs N x K blocks (order 0: the listed "
        "order; order o: stream.order_seed=o); default 1",
    )
    cmp.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI for every run")
    cmp.set_defaults(func=_cmd_compare)


def _add_pairing_options(parser) -> None:
    """The options that decide how a comparison's runs are paired and read (compare, analyse)."""
    from mssr.metrics import METRIC_SPECS

    parser.add_argument(
        "--primary",
        default="loss_final",
        metavar="METRIC",
        help=f"the metric that leads the tables and decides (one of {', '.join(METRIC_SPECS)}); default "
        "loss_final, the mean final answer loss; AP is always reported beside it",
    )
    parser.add_argument(
        "--detect",
        type=float,
        metavar="D",
        help="also print how many blocks would detect a difference of D in the primary metric at 80%% power",
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="pair runs made on different processor kinds or precisions (refused otherwise; counted in the table)",
    )


def _cmd_analyse(args: argparse.Namespace) -> int:
    from pipelines.analysis import analyse

    out = Path(args.out)
    print(analyse(args.paths, out, args.reference, args.primary, args.detect, args.allow_mixed))
    print(f"written to {out.resolve()}/table.md, table.csv, runs.csv, intervals.csv")
    return 0


def _add_analyse(sub) -> None:
    ana = sub.add_parser(
        "analyse",
        help="the comparison tables of finished runs kept anywhere (no training)",
        description="Read every finished run directory at or below the paths (summary.json, "
        "eval_rows.json, config.yaml), group the runs by strategy, budget and block (seed, task "
        "order), and write the tables mssr compare writes: means over blocks, paired differences "
        "against the reference with 95%% t intervals, and what the blocks can detect.",
    )
    ana.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_PARENT", help="run directories, or directories above them")
    ana.add_argument("--reference", default="fixed", metavar="STRATEGY", help="the strategy paired against (fixed)")
    ana.add_argument("--out", default="analysis", metavar="DIR", help="where the tables go (default ./analysis)")
    _add_pairing_options(ana)
    ana.set_defaults(func=_cmd_analyse)


def _add_tune(sub) -> None:
    tun = sub.add_parser(
        "tune",
        help="sweep a search space with Ray Tune (ASHA), write the best config",
        description="Run a Ray Tune sweep of tune_spaces/*.yaml over the config: each trial an "
        "ordinary run, logged as a nested MLflow run under the sweep's run; "
        "writes the trial table and the best config as a ready-to-run YAML.",
    )
    tun.add_argument("config", help="YAML config every trial starts from")
    tun.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys for every trial")
    tun.add_argument("--space", required=True, metavar="PATH", help="search space, e.g. tune_spaces/mssr.yaml")
    tun.add_argument("--num-samples", type=int, default=8, metavar="N", help="trials to sample (default 8)")
    tun.add_argument(
        "--max-concurrent",
        type=int,
        default=2,
        metavar="M",
        help="trials at a time; the CPUs are split between them (default 2)",
    )
    tun.add_argument(
        "--scheduler",
        default="asha",
        choices=["asha", "fifo"],
        help="asha: stop weak trials after a few tasks (default); fifo: run every trial to the end",
    )
    tun.add_argument(
        "--metric",
        default="ap",
        choices=["ap", "bwt", "fwt", "avg", "forgetting", "loss_final"],
        help="what the sweep optimises (default ap; forgetting and loss_final, the mean final answer loss "
        "and comparisons' primary metric, are minimised)",
    )
    tun.add_argument("--name", metavar="ID", help="sweep name (default sweep-<timestamp>)")
    tun.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    tun.set_defaults(func=_cmd_tune)


def _add_report(sub) -> None:
    rep = sub.add_parser(
        "report",
        help="static HTML report of a comparison, sweep or experiment from MLflow",
        description="Read the runs of a comparison id, a sweep name or an MLflow experiment "
        "back from MLflow and write an HTML page with their table, AP/BWT bars, "
        "per-task forgetting curves and accuracy-matrix heatmaps.",
    )
    rep.add_argument("id", help="comparison id, sweep name or MLflow experiment name")
    rep.add_argument(
        "--output-dir",
        default="runs",
        help="the runs' output dir, where the default sqlite MLflow store is (default: runs)",
    )
    rep.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else OUTPUT_DIR/mlflow.db)",
    )
    rep.add_argument("--out", metavar="DIR", help="where to write index.html (default OUTPUT_DIR/reports/ID)")
    rep.add_argument(
        "--reference",
        default="fixed",
        metavar="STRATEGY",
        help="the strategy the others are paired against (default fixed)",
    )
    rep.set_defaults(func=_cmd_report)


def _add_validate_data(sub) -> None:
    val = sub.add_parser(
        "validate-data",
        help="check a task stream and describe it (counts, duplicates, leakage, lengths)",
        description="Validate every row of the config's stream (exit 2 on a bad row) and report "
        "counts per task and split, exact duplicates, train/test leakage, prompts shared "
        "across tasks, token lengths and label balance.",
    )
    val.add_argument("config", help="YAML config whose `stream` (and `model`, for the tokenizer) is checked")
    val.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    val.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    val.add_argument("--strict", action="store_true", help="exit with code 1 when there are warnings")
    val.set_defaults(func=_cmd_validate_data)


def _cmd_export(args: argparse.Namespace) -> int:
    from pipelines.export import export_model

    export_model(args.run_dir, args.out, after_task=args.after_task, merge=args.merge)
    return 0


def _add_export(sub) -> None:
    exp = sub.add_parser(
        "export",
        help="write a finished run's model: a peft adapter folder, or a merged transformers model",
        description="Write the model after the last (or K-th) task of a finished run: a LoRA run as a "
        "peft adapter folder that plain peft loads, --merge (or a full fine-tuning run) as a "
        "transformers model folder; a model card (README.md) with the run's config, metrics "
        "and accuracy matrix beside it.",
    )
    exp.add_argument("run_dir", help="the run directory (runs/NAME)")
    exp.add_argument("--out", required=True, metavar="DIR", help="where to write the model (new or empty)")
    exp.add_argument(
        "--after-task",
        type=int,
        metavar="K",
        help="the model after task K (1-based; a checkpoint the run kept; default: the last task)",
    )
    exp.add_argument("--merge", action="store_true", help="merge the LoRA adapter into the base model")
    exp.set_defaults(func=_cmd_export)


def _cmd_continue(args: argparse.Namespace) -> int:
    from pipelines.continuation import continue_run

    continue_run(
        args.run_dir,
        args.tasks,
        name=args.name,
        summary_json=Path(args.summary_json) if args.summary_json else None,
        register=args.register,
    )
    return 0


def _add_continue(sub) -> None:
    cont = sub.add_parser(
        "continue",
        help="teach a finished run its next tasks (a new run that carries its state over)",
        description="Continue a finished run with new tasks: a new run with the run's config, its "
        "stream extended by MORE.yaml's stream.tasks, starting from its last checkpoint (model, "
        "optimizer, replay pool, memory strengths, clock and scheduler). The matrices cover the "
        "whole stream; the MLflow run is tagged with the run it continues.",
    )
    cont.add_argument("run_dir", help="the finished run directory (runs/NAME)")
    cont.add_argument(
        "--tasks", required=True, metavar="MORE.yaml", help="a YAML file with stream.tasks: the new tasks"
    )
    cont.add_argument("--name", metavar="NAME", help="the new run's name (default: NAME-cont1, -cont2, ...)")
    cont.add_argument("--summary-json", metavar="PATH", help="also write the run summary to PATH")
    cont.add_argument("--register", metavar="NAME", help="register the final model in MLflow's registry as NAME")
    cont.set_defaults(func=_cmd_continue)


def _cmd_eval(args: argparse.Namespace) -> int:
    from mssr.config import load_config
    from pipelines.model_eval import evaluate_source

    cfg = load_config(args.config, [*args.overrides, *_tracking_override(args)])
    evaluate_source(args.source, cfg, after_task=args.after_task, json_path=args.json)
    return 0


def _add_eval(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="score a model, an exported model or a run's model on a stream's test splits",
        description="One accuracy row and one loss row for SOURCE on every task of CONFIG's stream: "
        "SOURCE is a run directory (its model after the last task, or --after-task K), a folder "
        "written by mssr export, or a model name or folder. Logged as an MLflow evaluation run.",
    )
    ev.add_argument("source", help="run directory, mssr export folder, or model name/folder")
    ev.add_argument("config", help="YAML config whose stream, eval and mlflow settings apply")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    ev.add_argument("--after-task", type=int, metavar="K", help="a run's model after task K (1-based)")
    ev.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ev.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: the config's)")
    ev.set_defaults(func=_cmd_eval)


def _add_prepare_model(sub) -> None:
    prep = sub.add_parser("prepare-model", help="convert the packaged SmolLM2 into a cached HF folder")
    prep.add_argument("--force", action="store_true", help="convert again even if cached")
    prep.set_defaults(func=_cmd_prepare_model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mssr", description="Continual fine-tuning of LLMs with MSSR replay, on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (
        _add_run,
        _add_continue,
        _add_compare,
        _add_analyse,
        _add_tune,
        _add_report,
        _add_export,
        _add_eval,
        _add_validate_data,
        _add_diagnostics,
        _add_provenance,
    )
    for add in (*commands, _add_prepare_model):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.console import quiet_env

    quiet_env()  # before anything imports Ray: some of Ray's settings are read at import
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow the options (`mssr compare C --seeds 2 train.lr=1e-4`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except UserError as e:
        print(f"mssr: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mssr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
