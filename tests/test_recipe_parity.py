"""The recipe behaves as ESPnet's asr.sh for an ESPnet user: its options (a dry parse of run.sh with
each), its skip flags, stage 15, decoding a given model with --skip_train, and NIST sclite scoring
with RESULTS.md in show_asr_result.sh's layout (and where the fallback scorer differs from sclite)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import yaml

from espnet_ssm.recipe import datadir, pretrained, results, score, tokens
from test_recipe_e2e import RECIPE, REPO, recipe_copy
needs_sclite = pytest.mark.skipif(score.find_sclite() is None, reason="NIST sclite (sctk) not installed")

# The options of ESPnet's asr.sh that an ESPnet run.sh passes, each with a value to switch it on.
ESPNET_OPTIONS = [
    ("--asr_speech_fold_length", "800"), ("--asr_text_fold_length", "150"), ("--batch_size", "1"),
    ("--skip_upload", "true"), ("--score_opts", "-e utf-8"), ("--local_score_opts", "--level 2"),
    ("--eval_valid_set", "true"), ("--bpe_nlsyms", "[noise],[laughter]"), ("--num_splits_asr", "4"),
    ("--use_word_lm", "false"), ("--word_vocab_size", "20000"), ("--use_maskctc", "true"),
    ("--hyp_cleaner", "none"), ("--download_model", "espnet/some_model"), ("--use_k2", "false"),
    ("--k2_ctc_decoding", "false"), ("--use_nbest_rescoring", "false"), ("--num_paths", "500"),
    ("--nll_batch_size", "50"), ("--k2_config", "conf/decode_k2.yaml"), ("--ngram_num", "4"),
    ("--inference_ngram", "4gram.bin"), ("--ngram_exp", "exp/ngram"), ("--skip_packing", "false"),
    ("--skip_upload_hf", "true"), ("--skip_stages", "4"),
]
# Switched on, these cannot work here: the run stops at parse time naming the option.
UNAVAILABLE = [("--use_k2", "true"), ("--use_word_lm", "true"), ("--use_ngram", "true"), ("--skip_upload", "false")]


def sh(work: Path, args: List[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(args, cwd=work, capture_output=True, text=True, env=env)


def dry(work: Path, *args: str) -> subprocess.CompletedProcess:
    """run.sh's option parsing and checks, no stage run (stage 100 > stop stage 0)."""
    return sh(work, ["./run.sh", *args, "--stage", "100", "--stop_stage", "0"])


def skipped(proc: subprocess.CompletedProcess) -> List[int]:
    line = re.search(r"Skipped stages: ([\d ]*)", proc.stdout).group(1)
    return [int(x) for x in line.split()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return recipe_copy(tmp_path_factory.mktemp("parity"))


def test_run_sh_accepts_espnet_options(work):
    for option, value in ESPNET_OPTIONS:
        proc = dry(work, option, value)
        assert proc.returncode == 0, (option, proc.stdout[-500:], proc.stderr[-500:])
        assert "Successfully finished" in proc.stdout
    helped = sh(work, ["./asr.sh", "--help"]).stdout
    for option, _ in ESPNET_OPTIONS + UNAVAILABLE:
        assert f"    {option} " in helped, option
    for option, value in UNAVAILABLE:
        proc = dry(work, option, value)
        assert proc.returncode != 0 and f"Error: {option} {value}" in proc.stdout, (option, proc.stdout[-500:])
    proc = dry(work, "--num_splits_asr", "two")
    assert proc.returncode != 0 and "--num_splits_asr must be a positive integer, got 'two'" in proc.stdout


def test_skip_flags_as_espnet(work):
    assert skipped(dry(work)) == [14, 15]  # packing and uploading are off by default
    assert skipped(dry(work, "--skip_packing", "false", "--skip_upload_hf", "false")) == []
    # --skip_train keeps stage 3 (the test sets are dumped) and needs no training set
    proc = dry(work, "--skip_train", "true", "--train_set", "", "--valid_set", "")
    assert proc.returncode == 0 and skipped(proc) == [2, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15]
    assert skipped(dry(work, "--use_lm", "false", "--skip_eval", "true")) == [6, 7, 8, 12, 13, 14, 15]
    assert skipped(dry(work, "--skip_packing", "false", "--download_model", "x/y")) == [14, 15]
    proc = dry(work, "--train_set", "")
    assert proc.returncode != 0 and "--train_set is required (unless --skip_train true)" in proc.stdout
    # the valid set among the test sets is decoded from dump/raw/org/ as ESPnet does
    proc = dry(work, "--test_sets", "test_clean dev test_clean")
    assert proc.returncode == 0 and "--eval_valid_set true" in proc.stdout and "given twice" in proc.stdout


def test_stage15_needs_a_repository(work):
    proc = sh(work, ["./run.sh", "--stage", "15", "--stop_stage", "15", "--skip_upload_hf", "false"])
    assert proc.returncode == 1 and "needs --hf_repo" in proc.stdout
    assert not (work / "exp").exists() or not list((work / "exp").glob("hf_*"))


def test_run_sh_trains_bpe_on_the_original_transcripts():
    run_sh = (RECIPE / "run.sh").read_text()
    assert '--bpe_train_text "data/${train_set}/text"' in run_sh  # not the 3x speed-perturbed copy


def test_lm_text_where_espnet_keeps_it_and_nj_from_asr_sh(tmp_path):
    """local/data.sh finds openslr 11's archive in data/local/other_text/ (ESPnet's place), and its
    --nj defaults to asr.sh's."""
    import gzip

    work = recipe_copy(tmp_path)
    (work / "data/local/other_text").mkdir(parents=True)
    with gzip.open(work / "data/local/other_text/librispeech-lm-norm.txt.gz", "wt") as f:
        f.write("A BANK CHECK\nHELLO WORLD\n")
    proc = sh(work, ["local/data.sh", "--stage", "4", "--stop_stage", "4", "--download", "false",
                     "--librispeech_dir", "nowhere"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "data/local/other_text/text").read_text().splitlines() == [
        "librispeech_lng_00000001 A BANK CHECK", "librispeech_lng_00000002 HELLO WORLD"]
    helped = subprocess.run(["local/data.sh", "--help"], cwd=work, capture_output=True, text=True,
                            env=dict(os.environ, nj="7")).stdout
    assert "now 7)" in helped


def test_bpe_nlsyms_list_or_file(tmp_path):
    assert tokens.bpe_nlsyms("[noise],[laughter]") == ["[noise]", "[laughter]"]
    (tmp_path / "nlsyms.txt").write_text("[noise] 1\n\n[vocalized-noise]\n")
    assert tokens.bpe_nlsyms(str(tmp_path / "nlsyms.txt")) == ["[noise]", "[vocalized-noise]"]
    assert tokens.bpe_nlsyms("") == []
    with pytest.raises(ValueError, match="--bpe_nlsyms data/none.txt: no such file"):
        tokens.bpe_nlsyms("data/none.txt")


# ----------------------------------------------------------------------------- --skip_train
def tiny_test_set(work: Path, name: str, n: int = 3) -> None:
    import soundfile

    rng = np.random.default_rng(0)
    d = work / "data" / name
    (d / "wav").mkdir(parents=True)
    wav, text, utt2spk = {}, {}, {}
    for i in range(n):
        utt = f"spk{i % 2}-utt{i}"
        soundfile.write(d / "wav" / f"{utt}.wav", 0.1 * rng.standard_normal(16000 + 800 * i), 16000)
        wav[utt], text[utt], utt2spk[utt] = str(d / "wav" / f"{utt}.wav"), "HELLO WORLD", f"spk{i % 2}"
    for f, table in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk)):
        datadir.write_table(d / f, table)
    datadir.write_table(d / "spk2utt", datadir.utt2spk_to_spk2utt(utt2spk))


def packed_tiny_model(out: Path) -> Path:
    """An untrained tiny CTC model (conf/demo/train_asr_demo_tiny.yaml) packed as stage 14 would."""
    import torch
    from espnet2.main_funcs.pack_funcs import pack

    from espnet_ssm.tasks import SSMASRTask

    out.mkdir(parents=True)
    tokens = ["<blank>", "<unk>", "<space>", *"DEHLORW", "<sos/eos>"]
    (out / "tokens.txt").write_text("\n".join(tokens) + "\n")
    args = SSMASRTask.get_parser().parse_args(
        ["--config", str(REPO / "conf/demo/train_asr_demo_tiny.yaml"), "--token_list", str(out / "tokens.txt"),
         "--token_type", "char", "--output_dir", str(out)])
    torch.manual_seed(0)
    model = SSMASRTask.build_model(args)
    args.token_list = tokens
    (out / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), out / "valid.loss.ave.pth")
    zip_path = out / "tiny_model.zip"
    pack(files={"asr_model_file": out / "valid.loss.ave.pth"}, yaml_files={"asr_train_config": out / "config.yaml"},
         outpath=zip_path)
    return zip_path


@needs_sclite
def test_skip_train_dumps_test_sets_and_decodes_a_given_model(tmp_path):
    work = recipe_copy(tmp_path)
    tiny_test_set(work, "test_tiny")
    model = packed_tiny_model(tmp_path / "model")
    # a local/score.sh hook that records how it was called
    (work / "local").unlink()
    (work / "local").mkdir()
    for item in (RECIPE / "local").iterdir():
        (work / "local" / item.name).symlink_to(item)
    (work / "local" / "score.sh").write_text('#!/usr/bin/env bash\necho "$@" > score_sh_args\n')
    (work / "local" / "score.sh").chmod(0o755)
    proc = sh(work, ["./asr.sh", "--skip_train", "true", "--stage", "3", "--stop_stage", "13", "--ngpu", "0",
                     "--nj", "1", "--inference_nj", "1", "--token_type", "char", "--use_lm", "false",
                     "--test_sets", "test_tiny", "--download_model", str(model),
                     "--inference_config", "conf/demo/decode_asr_demo.yaml", "--local_score_opts", "--level 2"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert datadir.validate(work / "dump/raw/test_tiny") == 3  # stage 3 ran for the test set ...
    assert not (work / "dump/raw/org").exists()  # ... and for nothing else
    exp = work / "exp" / "tiny_model"
    assert (exp / "config.yaml").resolve().is_file() and (exp / "valid.loss.ave.pth").is_symlink()
    (dec,) = [d for d in exp.iterdir() if d.name.startswith("decode_asr_demo")]
    assert set(datadir.read_table(dec / "test_tiny" / "text", allow_empty_value=True)) == \
        {"spk0-utt0", "spk1-utt1", "spk0-utt2"}
    result = (dec / "test_tiny" / "score_wer" / "result.txt").read_text()
    assert "SYSTEM SUMMARY PERCENTAGES by SPEAKER" in result and score.FALLBACK_NOTE not in result
    md = (exp / "RESULTS.md").read_text()
    assert f"|{dec.name}/test_tiny|3|6|" in md and "- Scoring:" not in md  # sclite: no fallback note
    assert (work / "score_sh_args").read_text().split() == ["--level", "2", "exp/tiny_model"]


def test_download_model_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(pretrained.PretrainedError, match="huggingface_hub .* is not installed"):
        pretrained.install("espnet/no_such_model", tmp_path / "exp")
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(pretrained.PretrainedError, match="no meta.yaml"):
        pretrained.install(str(tmp_path / "not_a_model"), tmp_path / "exp")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
        z.writestr("x.txt", "x")
    with pytest.raises(pretrained.PretrainedError, match="cannot unpack"):
        pretrained.install(str(tmp_path / "bad.zip"), tmp_path / "exp")


def test_download_model_from_an_unpacked_directory(tmp_path):
    """The layout of a Hugging Face model repository: meta.yaml and recipe-relative files."""
    src = tmp_path / "hub"
    for rel, text in (("exp/asr_x/config.yaml", "normalize_conf:\n  stats_file: exp/stats/feats_stats.npz\n"),
                      ("exp/stats/feats_stats.npz", "x"), ("exp/asr_x/valid.acc.ave.pth", "w"),
                      ("exp/lm_y/config.yaml", "lm: seq_rnn\n"), ("exp/lm_y/valid.loss.ave.pth", "w")):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (src / "meta.yaml").write_text(yaml.safe_dump({
        "files": {"asr_model_file": "exp/asr_x/valid.acc.ave.pth", "lm_file": "exp/lm_y/valid.loss.ave.pth"},
        "yaml_files": {"asr_train_config": "exp/asr_x/config.yaml", "lm_train_config": "exp/lm_y/config.yaml"}}))
    exp = tmp_path / "exp" / "hub"
    names = pretrained.install(str(src), exp)
    assert names == {"asr_model_file": "valid.acc.ave.pth", "lm_file": "valid.loss.ave.pth"}
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    assert conf["normalize_conf"]["stats_file"] == str((src / "exp/stats/feats_stats.npz").resolve())
    assert (exp / "valid.acc.ave.pth").resolve() == (src / "exp/asr_x/valid.acc.ave.pth").resolve()
    assert (exp / "lm" / "config.yaml").is_file() and (exp / "lm" / "valid.loss.ave.pth").is_symlink()


# ----------------------------------------------------------------------------- scoring
TRICKY_PAIRS: List[Tuple[str, str]] = [
    ("A D A D A C D", "D D C D D B B B"),  # sclite: 3 del + 4 ins = 7 errors; unit costs: 5 sub + 1 ins = 6
    ("A B", "B A"),
    ("A B C D", "X Y"),
    ("THE CAT SAT", "THE CAT SAT"),
    ("A B C D E", "A X C Y E Z"),
    ("", "EXTRA WORDS"),
]


def write_pairs(d: Path, pairs) -> None:
    d.mkdir(parents=True, exist_ok=True)
    utts = [f"spk{i % 2}-u{i}" for i in range(len(pairs))]
    datadir.write_table(d / "ref", {u: r for u, (r, _) in zip(utts, pairs)})
    datadir.write_table(d / "hyp", {u: h for u, (_, h) in zip(utts, pairs)})
    datadir.write_table(d / "utt2spk", {u: u.split("-")[0] for u in utts})


def sentence_scores(result_txt: Path) -> List[Tuple[int, ...]]:
    """(#C #S #D #I) of every sentence, in result.txt's order of utterances (sorted)."""
    text = result_txt.read_text()
    found = re.findall(r"^id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)$", text, re.M)
    return [tuple(int(x) for x in f[1:]) for f in sorted(found, key=lambda f: f[0].split("-u")[1])]


@needs_sclite
def test_sclite_and_fallback_on_tricky_pairs(tmp_path):
    write_pairs(tmp_path, TRICKY_PAIRS)
    out = {}
    for scorer in ("sclite", "python"):
        score.score(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", tmp_path / scorer, ["word"],
                    scorer=scorer)
        out[scorer] = sentence_scores(tmp_path / scorer / "score_wer" / "result.txt")
    assert out["sclite"][0] == (4, 0, 3, 4) and out["python"][0] == (2, 5, 0, 1)  # where they differ
    for s, p in zip(out["sclite"], out["python"]):
        assert sum(p[1:]) <= sum(s[1:])  # unit costs find the fewest errors
        assert s[0] + s[1] + s[2] == p[0] + p[1] + p[2]  # both cover every reference word
    assert out["sclite"][1:] == out["python"][1:]  # the other pairs agree
    # Sum/Avg: 21 reference words; sclite counts 7 + 2 + 4 + 0 + 3 + 2 = 18 errors, the fallback 17
    rows = {s: next(x for x in (tmp_path / s / "score_wer/result.txt").read_text().splitlines() if "Sum/Avg" in x)
            for s in out}
    assert rows["sclite"].split("|")[2].split() == ["6", "21"] and " 85.7 " in rows["sclite"]
    assert " 81.0 " in rows["python"]
    assert (tmp_path / "python/score_wer/result.txt").read_text().startswith(score.FALLBACK_NOTE + "\n")


@needs_sclite
def test_score_opts_reach_sclite(tmp_path):
    write_pairs(tmp_path, TRICKY_PAIRS[:2])
    with pytest.raises(ValueError, match="failed"):  # sclite rejects a bad option, and we say so
        score.score(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", tmp_path, ["word"],
                    score_opts=["-no_such_option"])
    score.score(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", tmp_path, ["word"], score_opts=["-s"])
    assert "Scores:" in (tmp_path / "score_wer" / "result.txt").read_text()


def test_score_opts_without_sclite_are_an_error(tmp_path, monkeypatch):
    write_pairs(tmp_path, TRICKY_PAIRS[:1])
    monkeypatch.setattr(score, "find_sclite", lambda: None)
    with pytest.raises(ValueError, match="--score_opts .* NIST sclite is not installed"):
        score.score(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", tmp_path, ["word"], score_opts=["-s"])
    with pytest.raises(ValueError, match="--scorer sclite: NIST sclite is not installed"):
        score.score(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", tmp_path, ["word"], scorer="sclite")


@needs_sclite
def test_results_md_from_sclite_byte_for_byte(tmp_path, monkeypatch):
    """A fixed example: RESULTS.md from sclite's result.txt in show_asr_result.sh's exact layout."""
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path / "texts", TRICKY_PAIRS)
    for test_set in ("test_other", "test_clean"):
        score.score(tmp_path / "texts/ref", tmp_path / "texts/hyp", tmp_path / "texts/utt2spk",
                    Path("exp/asr_x/decode_asr_asr_model_valid.acc.ave") / test_set, ["word"], scorer="sclite")
    monkeypatch.setattr(results, "environments", lambda note=False: "## Environments\n- fixed\n\n")
    header = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|\n|---|---|---|---|---|---|---|---|---|\n"
    # C 11, S 4, D 6, I 8 of 21 words (counted by hand from the pairs' sclite alignments); 5 of 6 wrong
    row = "|decode_asr_asr_model_valid.acc.ave/{}|6|21|52.4|19.0|28.6|38.1|85.7|83.3|\n"
    assert results.render(Path("exp/asr_x")) == (
        "<!-- Generated by scripts/utils/show_asr_result.sh -->\n# RESULTS\n## Environments\n- fixed\n\n"
        "## exp/asr_x\n"
        f"### WER\n\n{header}{row.format('test_clean')}{row.format('test_other')}\n"
        f"### CER\n\n{header}"
        f"### TER\n\n{header}"
    )
