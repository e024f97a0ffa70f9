"""The LibriSpeech recipe end to end (stages 1-15) on a tiny generated corpus.

One module-scoped run does: stages 1-10 (with the LM stages 6-8 and a tiny LSTM LM); stage 11
killed during its second epoch and run again (it must resume from the checkpoint); stages 12-15
(decoding with the LM; packing and the Hugging Face upload switched on, the upload going to a
stand-in ``git`` that records what it is asked to do). The tests then check every stage's outputs, the exact RESULTS.md table
format, that re-running stages is safe, that the packed zip (ASR model + LM) decodes a wav through
ESPnet's Speech2Text in a fresh process, and the recipe's bad-input errors.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

from espnet_ssm.recipe import datadir

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs2" / "librispeech" / "asr1"
PARTS = ("train-synth", "dev-synth", "test-synth")
SIZES = (24, 6, 6)
ASR_TAG = "tiny"
EXP = f"exp/asr_{ASR_TAG}"
LM_TAG = "train_lm_demo_tiny_en_bpe40"
LM_EXP = f"exp/lm_{LM_TAG}"
DECODE_CONFIG = "conf/demo/decode_asr_demo_lm.yaml"
INFERENCE_TAG = f"decode_asr_demo_lm_lm_lm_{LM_TAG}_valid.loss.ave_asr_model_valid.loss.ave"  # <config>_lm_<lm_exp>_...
LM_TEXT_SENTENCES = 300

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def recipe_copy(root: Path) -> Path:
    """egs2/librispeech/asr1 as symbolic links, so that data/, dump/ and exp/ go under root."""
    work = root / "egs2" / "librispeech" / "asr1"
    work.mkdir(parents=True)
    for item in RECIPE.iterdir():
        if item.name not in ("data", "dump", "exp", "downloads", "demo_corpus"):
            (work / item.name).symlink_to(item)
    return work


def run_args(stage: int, stop_stage: int, *extra: str) -> List[str]:
    return [
        "./run.sh", "--stage", str(stage), "--stop_stage", str(stop_stage),
        "--ngpu", "0", "--nj", "1", "--inference_nj", "2",
        "--local_data_opts", "--librispeech_dir corpus --download false --parts train-synth,dev-synth,test-synth "
        "--train_parts train-synth --train_set train_synth --valid_parts dev-synth --valid_set dev_synth",
        "--train_set", "train_synth", "--valid_set", "dev_synth", "--test_sets", "test_synth",
        "--speed_perturb_factors", "", "--token_type", "bpe", "--nbpe", "40",
        "--asr_config", "conf/demo/train_asr_demo_tiny.yaml", "--asr_tag", ASR_TAG,
        "--asr_args", "--max_epoch 3",
        "--use_lm", "true", "--lm_config", "conf/demo/train_lm_demo_tiny.yaml",
        "--lm_train_text", "data/train_synth/text data/local/other_text/text",
        "--bpe_train_text", "data/train_synth/text",
        "--inference_config", DECODE_CONFIG, "--inference_asr_model", "valid.loss.ave.pth",
        *extra,
    ]


def sh(work: Path, args: List[str], check: bool = True, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(args, cwd=work, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args[:5])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def snapshot(work: Path, patterns: List[str]) -> Dict[str, bytes]:
    return {str(p.relative_to(work)): p.read_bytes() for pat in patterns for p in sorted(work.glob(pat)) if p.is_file()}


STABLE_OUTPUTS = ["data/*/*", "dump/raw/*/*", "dump/raw/org/*/*", "data/en_token_list/bpe_unigram40/*",
                  "data/local/other_text/text", "dump/raw/lm_train.txt"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """Run the whole recipe once; return (work dir, {stage range: completed process})."""
    from espnet_ssm.recipe import synth_corpus

    root = tmp_path_factory.mktemp("recipe")
    work = recipe_copy(root)
    synth_corpus.generate(work / "corpus", dict(zip(PARTS, SIZES)), seed=11, nj=2, lm_text_sentences=LM_TEXT_SENTENCES)
    out = {"1-10": sh(work, run_args(1, 10))}
    # Stage 11, interrupted: killed (with its whole process group) once epoch 2 has started.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(run_args(11, 11), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    log = work / EXP / "train.log"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and "2/3epoch started" in log.read_text(errors="replace"):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out["11-killed"] = log.read_text(errors="replace")
    out["1epoch_mtime"] = (work / EXP / "1epoch.pth").stat().st_mtime
    out["11"] = sh(work, run_args(11, 11))
    out["12-15"] = sh(work, run_args(12, 15, "--skip_packing", "false", "--skip_upload_hf", "false",
                                      "--hf_repo", f"user/{ASR_TAG}"), env=fake_git(root))
    out["git"] = (root / "git_calls").read_text().splitlines()
    return work, out


def fake_git(root: Path) -> Dict[str, str]:
    """PATH with a ``git`` that clones into an empty directory and records every other call, and a
    ``git-lfs``: stage 15's upload without a network."""
    bin_dir = root / "fakegit"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {root / "git_calls"}\n'
        'if [ "$1" = clone ]; then mkdir -p "${@: -1}"; fi\n'
        'if [ "$1" = status ]; then echo "?? README.md"; fi\n'
    )
    (bin_dir / "git").chmod(0o755)
    (bin_dir / "git-lfs").symlink_to(bin_dir / "git")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_stage1_data_dirs(recipe):
    work, _ = recipe
    for s, n in zip(("train_synth", "dev_synth", "test_synth"), SIZES):
        assert datadir.validate(work / "data" / s) == n
        for utt, path in datadir.read_table(work / "data" / s / "wav.scp").items():
            assert Path(path).is_file() and Path(path).name == f"{utt}.flac"
        assert (work / "data" / s / "spk2gender").is_file()


def test_stage1_lm_text(recipe):
    """data.sh stage 4: the corpus' LM text with ESPnet's ids; none of it is a dev/test sentence."""
    work, _ = recipe
    lines = (work / "data/local/other_text/text").read_text().splitlines()
    assert len(lines) == LM_TEXT_SENTENCES
    assert lines[0].startswith("librispeech_lng_00000001 ")
    assert all(re.fullmatch(r"librispeech_lng_\d{8} [A-Z']+( [A-Z']+)*", line) for line in lines)
    held_out = {t for s in ("dev_synth", "test_synth") for t in datadir.read_table(work / "data" / s / "text").values()}
    assert not {line.split(" ", 1)[1] for line in lines} & held_out


def test_stage4_lm_train_text(recipe):
    work, _ = recipe
    lm_train = (work / "dump/raw/lm_train.txt").read_text().splitlines()
    train = (work / "data/train_synth/text").read_text().splitlines()
    other = (work / "data/local/other_text/text").read_text().splitlines()
    assert lm_train == train + other  # ids kept (files named "text" add no suffix)


def test_stages6_8_language_model(recipe):
    work, out = recipe
    stats = work / "exp/lm_stats_en_bpe40"
    for s in ("train", "valid"):
        shapes = (stats / s / "text_shape.bpe").read_text().splitlines()
        assert shapes and all(line.endswith(",40") for line in shapes)
    assert len((stats / "train/text_shape.bpe").read_text().splitlines()) == SIZES[0] + LM_TEXT_SENTENCES
    lm = work / LM_EXP
    config = yaml.safe_load((lm / "config.yaml").read_text())
    assert config["lm"] == "seq_rnn" and config["token_list"][0] == "<blank>" and len(config["token_list"]) == 40
    assert config["token_list"] == yaml.safe_load((work / EXP / "config.yaml").read_text())["token_list"]
    assert list(lm.glob("valid.loss.*.pth")) and (lm / "valid.loss.ave.pth").exists()
    ppl = float((lm / "perplexity_test/ppl").read_text())
    assert 1.0 < ppl < 40.0  # better than uniform over the 40 units
    assert "PPL: dump/raw/test_synth/text:" in out["1-10"].stdout
    assert (lm / "run.sh").is_file() and (stats / "run.sh").is_file()


def test_stages3_4_dump(recipe):
    work, _ = recipe
    for s, sub in (("train_synth", "org/"), ("dev_synth", "org/"), ("test_synth", "")):
        d = work / "dump" / "raw" / f"{sub}{s}"
        assert datadir.validate(d) > 0
        assert (d / "feats_type").read_text().strip() == "raw"
        num = datadir.read_table(d / "utt2num_samples")
        assert set(num) == set(datadir.read_table(d / "wav.scp")) and all(int(v) > 1600 for v in num.values())
    for s in ("train_synth", "dev_synth"):
        kept = set(datadir.read_table(work / "dump" / "raw" / s / "utt2spk"))
        removed = {line.split()[0] for line in (work / "dump/raw" / s / "logs/filtered_out.txt").read_text().splitlines()}
        assert kept | removed == set(datadir.read_table(work / "dump/raw/org" / s / "utt2spk")) and not kept & removed


def test_stage5_token_list(recipe):
    work, _ = recipe
    toks = (work / "data/en_token_list/bpe_unigram40/tokens.txt").read_text().splitlines()
    assert toks[0] == "<blank>" and toks[1] == "<unk>" and toks[-1] == "<sos/eos>" and len(toks) == 40
    assert (work / "data/en_token_list/bpe_unigram40/bpe.model").is_file()


def test_stage10_stats(recipe):
    work, _ = recipe
    stats = work / "exp" / "asr_stats_raw_en_bpe40"
    for s, n in (("train", SIZES[0]), ("valid", SIZES[1])):
        assert (stats / s / "feats_stats.npz").is_file()
        shapes = (stats / s / "text_shape.bpe").read_text().splitlines()
        assert len(shapes) <= n and all(line.endswith(",40") for line in shapes)
    assert (stats / "run.sh").is_file()


def test_stage11_resumed_after_interruption(recipe):
    work, out = recipe
    exp = work / EXP
    assert "1/3epoch started" in out["11-killed"] and "3epoch results" not in out["11-killed"]
    assert "The training was resumed using" in (exp / "train.log").read_text()
    assert (exp / "train.1.log").read_text() == out["11-killed"]  # the interrupted run's log is kept
    assert (exp / "1epoch.pth").stat().st_mtime == out["1epoch_mtime"]  # epoch 1 was not trained again
    started = re.findall(r"(\d+)/3epoch started", (exp / "train.log").read_text())
    assert started and "1" not in started and started[-1] == "3"
    for name in ("3epoch.pth", "valid.loss.ave.pth", "config.yaml", "run.sh"):
        assert (exp / name).exists(), name
    assert "epoch 3/3:" in out["11"].stdout  # progress lines were shown
    assert len(list((exp / "images").glob("*.png"))) > 3


def test_stage12_parallel_decoding_and_rtf(recipe):
    work, out = recipe
    d = work / EXP / INFERENCE_TAG / "test_synth"
    keys = set(datadir.read_table(work / "dump/raw/test_synth/wav.scp"))
    per_job = [set(datadir.read_table(d / "logdir" / f"keys.{j}.scp")) for j in (1, 2)]
    assert per_job[0] | per_job[1] == keys and not per_job[0] & per_job[1]
    for f in ("text", "token", "token_int", "score"):
        assert set(datadir.read_table(d / f, allow_empty_value=True)) == keys
    rtf = (d / "logdir" / "calculate_rtf.log").read_text()
    assert re.search(r"^RTF: \d+\.\d{3}$", rtf, re.M) and re.search(r"^Latency: [\d.]+ \[ms/sentence\]$", rtf, re.M)
    assert "RTF:" in out["12-15"].stdout


def test_stage13_results_md_format(recipe):
    work, out = recipe
    md = (work / EXP / "RESULTS.md").read_text()
    lines = md.splitlines()
    assert lines[:3] == ["<!-- Generated by scripts/utils/show_asr_result.sh -->", "# RESULTS", "## Environments"]
    assert f"## {EXP}" in lines
    row = re.compile(rf"^\|{INFERENCE_TAG}/test_synth\|{SIZES[2]}\|\d+\|(\d+\.\d\|){{5}}\d+\.\d\|$")
    for kind in ("WER", "CER", "TER"):
        i = lines.index(f"### {kind}")
        assert lines[i + 1: i + 4] == ["", "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|", "|---|---|---|---|---|---|---|---|---|"]
        assert row.match(lines[i + 4]), lines[i + 4]
        result = work / EXP / INFERENCE_TAG / "test_synth" / f"score_{kind.lower()}" / "result.txt"
        nums = next(x for x in result.read_text().splitlines() if "Sum/Avg" in x).replace("|", " ").split()[1:]
        assert lines[i + 4].split("|")[2:-1] == nums
    assert md in out["12-15"].stdout  # stage 13 shows it
    assert not any(line.startswith(("- ASR config", "- LM config")) for line in lines)  # as show_asr_result.sh


def test_stage14_pack_and_stage15_upload(recipe):
    work, out = recipe
    zips = list((work / EXP).glob("*.zip"))
    assert [z.name for z in zips] == [f"asr_{ASR_TAG}_valid.loss.ave.zip"]
    names = zipfile.ZipFile(zips[0]).namelist()
    assert "meta.yaml" in names
    for needed in (f"{EXP}/config.yaml", f"{EXP}/RESULTS.md", "exp/asr_stats_raw_en_bpe40/train/feats_stats.npz",
                   "data/en_token_list/bpe_unigram40/bpe.model"):
        assert needed in names, needed
    assert any(n.startswith(f"{EXP}/images/") for n in names)
    meta = yaml.safe_load(zipfile.ZipFile(zips[0]).read("meta.yaml"))
    assert meta["files"]["asr_model_file"] in names and meta["yaml_files"]["asr_train_config"] in names
    # The LM goes with the ASR model
    # (pack stores the file valid.loss.ave.pth links to: with one kept model, an epoch file)
    assert meta["files"]["lm_file"].startswith(f"{LM_EXP}/") and meta["files"]["lm_file"] in names
    assert meta["yaml_files"]["lm_train_config"] == f"{LM_EXP}/config.yaml" and f"{LM_EXP}/config.yaml" in names
    assert f"{LM_EXP}/perplexity_test/ppl" in names
    card = (work / "exp" / f"hf_user_{ASR_TAG}" / "README.md").read_text()
    assert card.startswith("---\ntags:\n- espnet\n") and "import espnet_ssm" in card
    assert "### WER" in card and "encoder: mh_ssm" in card
    # its usage example decodes as stage 12 did: with the packed LM and the decoding config's weight
    decode = yaml.safe_load((work / DECODE_CONFIG).read_text())
    assert f"lm_file={meta['files']['lm_file']!r}" in card and "## LM config" in card
    assert f"lm_weight={decode['lm_weight']!r}" in card
    assert (work / "exp" / f"hf_user_{ASR_TAG}" / "meta.yaml").is_file()
    # the upload: cloned from the repository, committed and pushed
    assert f"clone https://huggingface.co/user/{ASR_TAG} exp/hf_user_{ASR_TAG}" in out["git"]
    assert "commit -m Update model" in out["git"] and out["git"][-1] == "push"


def test_demo_summary(recipe):
    work, _ = recipe
    proc = sh(work, [sys.executable, "pyscripts/helper.py", "summary", "--asr_exp", EXP, "--elapsed", "75"])
    text = proc.stdout
    assert "Demo finished in 1 min 15 s" in text
    wer_rows = [line for line in (work / EXP / "RESULTS.md").read_text().splitlines() if line.startswith("|decode")]
    assert wer_rows[0] in text  # the WER table row
    utt = sorted(datadir.read_table(work / "dump/raw/test_synth/text"))[0]
    assert f"  {utt}" in text and "    REF: " in text and "    HYP: " in text
    assert f"Packed model:    {EXP}/asr_{ASR_TAG}_valid.loss.ave.zip" in text
    assert f"Training curves: {EXP}/images/ (loss.png" in text


def test_packed_model_decodes_in_fresh_process(recipe, tmp_path):
    work, _ = recipe
    zip_path = next((work / EXP).glob("*.zip"))
    utt, wav = sorted(datadir.read_table(work / "dump/raw/test_synth/wav.scp").items())[0]
    decode = yaml.safe_load((work / DECODE_CONFIG).read_text())
    code = f"""
import json, sys, soundfile
import espnet_ssm  # registers the encoders
from espnet2.bin.asr_inference import Speech2Text
from espnet2.main_funcs.pack_funcs import unpack
files = unpack({str(zip_path)!r}, {str(tmp_path / 'unpacked')!r})
assert "lm_file" in files and "lm_train_config" in files, files
s2t = Speech2Text(**files, **{decode!r})
speech, fs = soundfile.read({wav!r})
text, tokens, *_ = s2t(speech)[0]
print(json.dumps({{"text": text, "encoder": type(s2t.asr_model.encoder).__name__,
                  "scorers": sorted(s2t.beam_search.full_scorers) + sorted(s2t.beam_search.part_scorers),
                  "lm_weight": s2t.beam_search.weights.get("lm")}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["encoder"] == "MHSSMEncoder"
    assert "lm" in got["scorers"] and got["lm_weight"] == decode["lm_weight"] > 0  # the packed LM is used
    hyp = datadir.read_table(work / EXP / INFERENCE_TAG / "test_synth" / "text", allow_empty_value=True)[utt]
    assert got["text"].split() == hyp.split()  # same model and search as stage 12


def test_rerunning_stages_is_safe(recipe):
    work, _ = recipe
    before = snapshot(work, STABLE_OUTPUTS)
    results_before = snapshot(work, [f"{EXP}/{INFERENCE_TAG}/*/score_*/*"])
    sh(work, run_args(1, 5))
    sh(work, run_args(13, 13))
    assert snapshot(work, STABLE_OUTPUTS) == before
    assert snapshot(work, [f"{EXP}/{INFERENCE_TAG}/*/score_*/*"]) == results_before


def test_unknown_option_prints_usage(recipe):
    work, _ = recipe
    proc = sh(work, ["./run.sh", "--no_such_option", "1"], check=False)
    assert proc.returncode != 0
    assert "unknown option --no_such_option" in proc.stderr and "Usage:" in proc.stderr
    helped = sh(work, ["./asr.sh", "--help"])
    for stage in range(1, 16):
        assert re.search(rf"^ *{stage}[ -]", helped.stdout, re.M) or (6 <= stage <= 9 and "6-9" in helped.stdout)


def test_failed_parallel_job_names_its_log(recipe):
    """A broken audio entry makes one stage-3 job fail: the stage stops and names that job's log."""
    work, _ = recipe
    bad = work / "data" / "broken_set"
    shutil.copytree(work / "data" / "test_synth", bad)
    wav = datadir.read_table(bad / "wav.scp")
    last = sorted(wav)[-1]
    wav[last] = "false |"
    datadir.write_table(bad / "wav.scp", wav)
    args = run_args(3, 3)
    args[args.index("--test_sets") + 1] = "broken_set"
    args[args.index("--nj") + 1] = "2"
    proc = sh(work, args, check=False)
    assert proc.returncode != 0
    assert "dump/raw/broken_set/logs/format_wav.2.log" in proc.stderr
    assert "dump/raw/broken_set/logs/format_wav.1.log" not in proc.stderr
    assert last in (work / "dump/raw/broken_set/logs/format_wav.2.log").read_text()


def test_stage12_streaming_decoding(recipe):
    """--use_streaming true: a causal model is decoded chunk by chunk through stages 12-13, with
    the RTF report and a RESULTS.md row; asking for the LM with it is refused."""
    work, _ = recipe
    causal = ["--asr_tag", "tiny_causal", "--use_lm", "false", "--asr_args",
              "--max_epoch 1 --encoder_conf causal=true --encoder_conf bidirectional=false"]
    sh(work, run_args(11, 11, *causal))
    streaming = [*causal, "--use_streaming", "true",
                 "--inference_config", "conf/demo/decode_asr_demo_streaming.yaml"]
    sh(work, run_args(12, 13, *streaming))
    dec = work / "exp" / "asr_tiny_causal" / "decode_asr_demo_streaming_asr_model_valid.loss.ave"
    keys = set(datadir.read_table(work / "data" / "test_synth" / "wav.scp"))
    assert set(datadir.read_table(dec / "test_synth" / "text", allow_empty_value=True)) == keys
    log = (dec / "test_synth" / "logdir" / "asr_inference.1.log").read_text()
    chunks = [int(n) for n in re.findall(r"in (\d+) chunk\(s\)", log)]
    assert chunks and min(chunks) > 1  # fed in 160 ms pieces (the utterances last seconds)
    rtf = (dec / "test_synth" / "logdir" / "calculate_rtf.log").read_text()
    assert "RTF: " in rtf and "Total audio duration: 0.000" not in rtf
    assert "|decode_asr_demo_streaming_asr_model_valid.loss.ave/test_synth|6|" in \
        (work / "exp" / "asr_tiny_causal" / "RESULTS.md").read_text()
    proc = sh(work, run_args(12, 12, *streaming, "--use_lm", "true"), check=False)
    assert proc.returncode != 0 and "--use_lm false" in proc.stdout


def test_lm_bad_input_errors(recipe):
    """--use_ngram true is refused with the reason; a missing LM text or LM is named."""
    work, _ = recipe
    proc = sh(work, run_args(9, 9, "--use_ngram", "true"), check=False)
    assert proc.returncode != 0 and "KenLM" in proc.stdout and "--use_ngram" in proc.stdout
    assert "KenLM" in sh(work, ["./asr.sh", "--help"]).stdout
    args = run_args(4, 4)
    args[args.index("--lm_train_text") + 1] = "data/train_synth/text data/local/no_such_text"
    proc = sh(work, args, check=False)
    assert proc.returncode != 0 and "data/local/no_such_text" in proc.stdout and "--lm_train_text" in proc.stdout
    proc = sh(work, run_args(12, 12, "--inference_lm", "no_such_lm.pth"), check=False)
    assert proc.returncode != 0 and f"{LM_EXP}/no_such_lm.pth not found" in proc.stdout
