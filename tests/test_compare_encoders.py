"""benchmarks/compare_encoders.py: the families' demo configs are comparable (equal parameter
count within the tolerance, the demo's own training budget), and the table is read correctly from
the recipe's outputs. A slow test runs the quick mode end to end through demo.sh."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

_spec = importlib.util.spec_from_file_location("compare_encoders", REPO / "benchmarks" / "compare_encoders.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["compare_encoders"] = compare  # its dataclass looks its module up
_spec.loader.exec_module(compare)

# Keys that make up a family; everything else is the training budget, the demo's.
ENCODER_KEYS = {"encoder", "encoder_conf"}


def load(config: str) -> dict:
    return yaml.safe_load((compare.RECIPE / config).read_text(encoding="utf-8"))


def test_every_family_at_the_reference_parameter_count():
    counts = compare.parameter_counts(list(compare.FAMILIES))
    reference = counts[compare.REFERENCE]
    assert set(counts) == set(compare.FAMILIES)
    for name, n in counts.items():
        assert abs(n / reference - 1) <= compare.TOLERANCE, (name, n, reference)
    assert compare.unequal_counts(counts, reference) == []


def test_unequal_counts_names_the_family_outside_the_tolerance():
    reference = 1_000_000
    over = int(reference * (1 + compare.TOLERANCE)) + 1
    bad = compare.unequal_counts({"conformer": reference, "a": reference + 1, "b": over}, reference)
    assert len(bad) == 1 and bad[0].startswith(f"b: {over} parameters")


def test_families_cover_the_encoders_and_train_with_the_demo_budget():
    demo_config = load(compare.demo_default("asr_config"))
    encoders = set()
    for name, config in compare.FAMILIES.items():
        conf = load(config)
        encoders.add(conf["encoder"])
        budget = {k: v for k, v in conf.items() if k not in ENCODER_KEYS}
        demo_budget = {k: v for k, v in demo_config.items() if k not in ENCODER_KEYS}
        assert budget == demo_budget, f"{config}: training settings differ from the demo's"
    assert encoders == {"conformer", "e_branchformer", "ssm_conformer", "mh_ssm", "stateformer", "speech_mamba"}
    assert compare.default_epochs() == demo_config["max_epoch"]


def test_quick_sizes_give_every_demo_part_a_size():
    sizes = compare.quick_sizes().split()
    assert len(sizes) == len(compare.demo_default("sizes").split())
    assert sizes[0] == str(compare.QUICK_TRAIN) and set(sizes[1:]) == {str(compare.QUICK_OTHER)}


@pytest.mark.parametrize("span, seconds", [
    ("59.27 seconds", 59.27), ("1 minute and 7.03 seconds", 67.03),
    ("4 minutes and 24.93 seconds", 264.93), ("1 hour, 2 minutes and 3.5 seconds", 3723.5),
])
def test_seconds_of_espnet_time_spans(span, seconds):
    assert compare.seconds(span) == pytest.approx(seconds)


RESULT_LINE = "|      Sum/Avg      |       200              {wrd}       |      87.4       11.5      1.1      0.4      {err}      56.5       |\n"
TRAIN_LOG = """\
[vm] 2026-12-04 08:09:48,880 (trainer:394) INFO: 1epoch results: [train] iter_time=0.032, loss=127.201, train_time=0.863, time=4 minutes and 24.93 seconds, total_count=307, [valid] loss=74.746, time=18.58 seconds, total_count=15
[vm] 2026-12-04 08:10:00,000 (trainer:300) INFO: 2/2epoch started
[vm] 2026-12-04 08:12:11,519 (trainer:394) INFO: 2epoch results: [train] iter_time=0.018, loss=65.165, train_time=0.445, time=59.27 seconds, total_count=614, [valid] loss=49.857, time=1.06 seconds, total_count=30
"""


def fake_run(exp: Path, rates: dict, train_log: str = TRAIN_LOG) -> None:
    """An experiment directory as stages 11-13 leave it: train.log and scored result.txt files."""
    exp.mkdir(parents=True)
    (exp / "train.log").write_text(train_log)
    for dset, by_unit in rates.items():
        for unit, err in by_unit.items():
            sub = "org/" + dset if dset.startswith("dev") else dset  # where asr.sh puts the valid set's
            score = exp / "decode_asr_demo_asr_model_valid.loss.ave" / sub / f"score_{unit}"
            score.mkdir(parents=True)
            (score / "result.txt").write_text("header\n" + RESULT_LINE.format(wrd=1806, err=err))


def test_epoch_times_error_rates_and_table(tmp_path):
    fake_run(tmp_path / "a", {"dev_synth": {"cer": 10.0, "wer": 40.0}, "test_synth": {"cer": 12.5, "wer": 45.0}})
    fake_run(tmp_path / "b", {"dev_synth": {"cer": 14.0, "wer": 44.0}, "test_synth": {"cer": 13.5, "wer": 47.0}},
             TRAIN_LOG.replace("59.27 seconds", "1 minute and 35.27 seconds"))  # epochs 264.93, 95.27
    assert compare.epoch_seconds(tmp_path / "a" / "train.log") == pytest.approx([264.93, 59.27])  # valid excluded
    assert compare.error_rates(tmp_path / "a") == {"dev_synth": {"cer": 10.0, "wer": 40.0},
                                                   "test_synth": {"cer": 12.5, "wer": 45.0}}
    assert compare.finished(tmp_path / "a") and not compare.finished(tmp_path / "missing")
    runs = [compare.Run("mh_ssm", s, d, compare.epoch_seconds(tmp_path / d / "train.log"),
                        compare.error_rates(tmp_path / d)) for s, d in ((0, "a"), (1, "b"))]
    text = compare.table(runs, {"mh_ssm": 1_067_263})
    lines = text.splitlines()
    assert lines[0] == "| family | parameters | seeds | s / epoch | dev_synth CER % | dev_synth WER % | test_synth CER % | test_synth WER % |"
    # mean ± half the range over the seeds: epoch means 162.1 and 180.1; dev CER 10, 14; WER 40, 44;
    # test 12.5, 13.5; 45, 47
    assert lines[2] == "| mh_ssm | 1.067 M | 0,1 | 171 ± 9 | 12.0 ± 2.0 | 42.0 ± 2.0 | 13.0 ± 0.5 | 46.0 ± 1.0 |"
    assert "seeds 0, 1;" in lines[4]


def test_only_scored_runs_count_as_finished(tmp_path):
    fake_run(tmp_path / "a", {"dev_synth": {"cer": 10.0, "wer": 40.0}, "test_synth": {"cer": 12.5}})
    assert not compare.finished(tmp_path / "a")  # test_synth has no WER yet


def test_error_rates_only_of_the_comparison_decoding(tmp_path):
    fake_run(tmp_path / "a", {"dev_synth": {"cer": 10.0, "wer": 40.0}})
    other = tmp_path / "a" / "decode_asr_demo_lm_asr_model_valid.loss.ave" / "test_synth" / "score_cer"
    other.mkdir(parents=True)  # decoded with the LM: not part of the comparison
    (other / "result.txt").write_text(RESULT_LINE.format(wrd=1806, err=5.0))
    assert compare.error_rates(tmp_path / "a") == {"dev_synth": {"cer": 10.0, "wer": 40.0}}


def write_longform(exp: Path, utt: tuple, rec: tuple) -> None:
    """The table local/score_longform.sh records, written by the module that writes it."""
    from espnet_ssm.streaming.longform_wer import SetScore, table

    exp.mkdir(parents=True, exist_ok=True)
    scores = [SetScore("test_synth", 200, 2.9, 900, 1351), SetScore("test_synth_long45", 10, 46.6, *rec),
              SetScore("test_synth (utterances in the long sets)", 160, 2.9, *utt)]
    compare.longform_result(exp).write_text(table("WER of x", scores) + "\n")


def test_longform_scores_are_read_from_the_recorded_table_and_tabulated(tmp_path):
    write_longform(tmp_path / "a", (694, 1061), (845, 1061))
    write_longform(tmp_path / "b", (650, 1061), (700, 1061))
    write_longform(tmp_path / "c", (500, 1061), (600, 1061))
    utt, rec = compare.read_longform(compare.longform_result(tmp_path / "a"))
    assert (utt.errors, utt.words) == (694, 1061) and (rec.errors, rec.words) == (845, 1061)
    assert rec.mean_seconds == 46.6
    runs = [compare.Run("conformer", 0, "a"), compare.Run("conformer", 1, "b"), compare.Run("mh_ssm", 0, "c"),
            compare.Run("mh_ssm", 1, "unscored")]
    scores = {t: compare.read_longform(compare.longform_result(tmp_path / t)) for t in "abc"}
    lines = compare.longform_table(runs, scores).splitlines()
    # conformer: utterances 65.41 / 61.26 %, recordings 79.64 / 65.98 %, differences +14.23 / +4.71
    assert lines[2] == "| conformer | 0,1 | 63.3 ± 2.1 | 72.8 ± 6.8 | 9.5 ± 4.8 |"
    assert lines[3] == "| mh_ssm | 0 | 47.1 | 56.6 | 9.4 |"  # the unscored seed is left out
    assert "mean 46.6 s; 1061 reference words" in lines[5]


def test_a_longform_table_without_the_long_set_is_named(tmp_path):
    from espnet_ssm.streaming.longform_wer import SetScore, table

    result = compare.longform_result(tmp_path)
    result.write_text(table("WER of x", [SetScore("test_synth", 200, 2.9, 900, 1351)]))
    with pytest.raises(SystemExit, match=r"longform_wer_test_synth.md: no row for test_synth \(utterances"):
        compare.read_longform(result)


def test_a_variant_has_its_own_tags_rows_and_training_arguments(tmp_path):
    assert compare.variant_suffix(["dt_min=0.01", "d_state=8"]) == "_dt_min0.01_d_state8"
    assert compare.variant_suffix([]) == ""
    assert compare.encoder_conf_args(["dt_min=0.01"]) == ["--encoder_conf", "dt_min=0.01"]
    # the override reaches the model the parameter count builds
    plain = compare.parameter_counts(["ssm_conformer"])["ssm_conformer"]
    wider = compare.parameter_counts(["ssm_conformer"], encoder_conf=["d_state=8"])["ssm_conformer"]
    assert wider > plain
    fake_run(tmp_path / "v", {"dev_synth": {"cer": 10.0, "wer": 40.0}})
    runs = [compare.Run("ssm_conformer", 0, "v", [1.0], compare.error_rates(tmp_path / "v"),
                        label="ssm_conformer (dt_min=0.01)")]
    assert compare.table(runs, {"ssm_conformer": plain}).splitlines()[2].startswith("| ssm_conformer (dt_min=0.01) |")


def test_a_malformed_variant_is_refused():
    with pytest.raises(SystemExit, match="--encoder_conf: expected KEY=VALUE, got \\['dt_min'\\]"):
        compare.main(["--families", "ssm_conformer", "--encoder_conf", "dt_min", "--table-only"])


def test_unknown_family_is_refused(capsys):
    with pytest.raises(SystemExit, match="unknown.*transformer"):
        compare.main(["--families", "conformer,transformer", "--params-only"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_quick_mode_end_to_end(tmp_path):
    """--quick through demo.sh for two families: a table row each with every decoded set."""
    proc = subprocess.run(
        [str(REPO / "benchmarks" / "compare_encoders.sh"), "--quick", "--families", "conformer,mh_ssm",
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "work" / "compare_encoders.md").read_text()
    assert table in proc.stdout
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert [r.split(" | ")[0] for r in rows] == ["| conformer", "| mh_ssm"]
    header = table.splitlines()[0]
    sets = re.findall(r"(\w+) CER %", header)
    assert sets[0] == "dev_synth" and "test_synth" in sets
    for row in rows:
        cells = row.strip("| ").split(" | ")
        assert len(cells) == 4 + 2 * len(sets)
        assert cells[2] == "0"  # the quick mode's one seed
        assert all(float(c) >= 0 for c in cells[3:])  # one seed: plain numbers
