"""`audiotune evaluate`'s command line: what it takes beside the run, and what it refuses."""
from __future__ import annotations

import pytest

from audiotune.cli import build_parser


@pytest.mark.parametrize("flag", [["-l", "labels.txt"], ["--clip_length", "5"], ["--val_size", "10"], ["-e", "3"]])
def test_training_options_are_refused_naming_the_runs_own(flag: list[str], capsys: pytest.CaptureFixture) -> None:
    """The seeds' eval mode read every training flag (one parser for all modes); the run's config holds them."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--run", "run", "-d", "test.csv", *flag])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"audiotune evaluate: error: {flag[0]}: not an option of evaluate") and "leave it out" in err


def test_its_own_flags_of_a_training_options_name_stay() -> None:
    args = build_parser().parse_args(["evaluate", "--run", "run", "-d", "test.csv", "-i", "lake", "-s", "study1",
                                      "-bs", "2", "--adapt_bn", "split", "--on_error", "skip"])
    assert (vars(args)["data.prefix"], vars(args)["data.study"], args.batch_size, args.adapt_bn,
            args.on_error) == ("lake", "study1", 2, "split", "skip")


def test_which_labelled_rows_it_scores_is_the_runs_unless_given() -> None:
    from audiotune.cli.evaluate import DATA
    from audiotune.cli.run_flags import scoring_data

    given = build_parser().parse_args(["evaluate", "--run", "run", "-d", "test.csv", "--complete_rows", "False"])
    assert scoring_data(given, DATA) == {"complete_rows": False}
    assert scoring_data(build_parser().parse_args(["evaluate", "--run", "run", "-d", "test.csv", "--complete_rows"]),
                        DATA) == {"complete_rows": True}
    assert scoring_data(build_parser().parse_args(["evaluate", "--run", "run", "-d", "test.csv"]), DATA) == {}


def test_aggregate_asked_of_a_table_without_recordings_is_refused_before_writing(trained_run: dict, tmp_path,
                                                                                capsys: pytest.CaptureFixture) -> None:
    from audiotune.cli import main

    out = tmp_path / "eval"
    test = trained_run["split"] / "test.csv"
    assert main(["evaluate", "--run", str(trained_run["run"]), "-d", str(test), "-o", str(out),
                 "--aggregate", "max"]) == 2
    assert f"--aggregate max: {test}: it has no 'recording' column" in capsys.readouterr().err
    assert not out.exists()
    assert main(["evaluate", "--run", str(trained_run["run"]), "-d", str(test), "-o", str(out)]) == 0  # default: fine
