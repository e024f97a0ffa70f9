"""The transducer model (``model: espnet_ssm_transducer``) in ESPnet: build, loss, train, decode.

- every ``conf/tuning/*_transducer_tiny.yaml`` builds through ESPnet's own ``ASRTask`` and reports
  a ``loss_transducer`` equal to the float64 alpha recursion (``test_transducer_loss``) evaluated
  on the model's own joint outputs, with ESPnet's stats and total loss, while an import hook makes
  ``warprnnt_pytorch`` unimportable and records every attempt to import it;
- joint + loss in slices of the batch give the model the same loss and gradients as the whole
  batch, also inside ``DistributedDataParallel``;
- a few training steps lower the loss;
- a model trained by ESPnet's trainer (through our task) decodes with ESPnet's ``Speech2Text`` and
  with ``espnet_ssm.bin.asr_inference``, with and without an LM, and from its packed zip in a fresh
  process, all with ESPnet's ``BeamSearchTransducer``;
- bad input (empty transcript, utterance too short for the subsampling, label id outside the
  vocabulary) raises an error naming the utterance.
"""
from __future__ import annotations

import importlib.abc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError
from espnet2.asr.decoder.transducer_decoder import TransducerDecoder
from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer
from espnet2.asr_transducer.joint_network import JointNetwork
from espnet2.asr_transducer.utils import get_transducer_task_io
from espnet2.tasks.asr import ASRTask

import espnet_ssm  # noqa: F401  (registers encoders and the transducer model)
from conftest import REPO, TinyASRData, make_tiny_asr_data
from espnet_ssm.tasks import SSMASRTask
from espnet_ssm.transducer import ESPnetSSMTransducerModel, TransducerInputError
from test_transducer_loss import reference_nll

TUNING = REPO / "conf" / "tuning"
TINY_CONFIGS = sorted(p.name for p in TUNING.glob("train_asr_*_transducer_tiny.yaml"))
DECODE_CONFIG = REPO / "conf" / "decode_asr_transducer.yaml"
STATS = {"loss", "loss_ctc", "cer_ctc", "loss_transducer", "cer_transducer", "wer_transducer"}


class _RefuseWarprnnt(importlib.abc.MetaPathFinder):
    """Import hook: ``warprnnt_pytorch`` cannot be imported; attempts are recorded."""

    def __init__(self) -> None:
        self.attempts: List[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "warprnnt_pytorch":
            self.attempts.append(name)
            raise ImportError(f"{name} is unimportable in this test")
        return None


@pytest.fixture
def no_warprnnt():
    assert "warprnnt_pytorch" not in sys.modules
    finder = _RefuseWarprnnt()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
    assert finder.attempts == [], f"warprnnt_pytorch was imported: {finder.attempts}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TinyASRData:
    return make_tiny_asr_data(tmp_path_factory.mktemp("data"), n_utts=8, seed=3)


def build(config: str, token_list: Path, task=ASRTask, **model_conf):
    """Parse ``config`` as ``asr_train --config`` does and build the model (seed 0)."""
    args = task.get_parser().parse_args(
        ["--config", str(TUNING / config), "--token_list", str(token_list), "--output_dir", "x"]
    )
    args.model_conf = {**args.model_conf, **model_conf}
    torch.manual_seed(0)
    return task.build_model(args)


def batch_of(model, seed: int = 0, n: int = 3) -> Dict[str, object]:
    """0.4-0.9 s of noise per utterance and random transcripts of 2-6 labels, padded by -1."""
    g = torch.Generator().manual_seed(seed)
    samples = torch.randint(6400, 14400, (n,), generator=g)
    speech = torch.randn(n, int(samples.max()), generator=g) * 0.1
    speech = speech * (torch.arange(speech.size(1))[None] < samples[:, None])
    text_lengths = torch.randint(2, 7, (n,), generator=g)
    vocab = len(model.token_list)
    text = torch.randint(1, vocab - 1, (n, int(text_lengths.max())), generator=g)
    text = text.masked_fill(torch.arange(text.size(1))[None] >= text_lengths[:, None], -1)
    return dict(speech=speech, speech_lengths=samples, text=text, text_lengths=text_lengths,
                utt_id=[f"utt{i}" for i in range(n)])


@pytest.mark.parametrize("config", TINY_CONFIGS)
def test_tiny_config_loss_equals_alpha_recursion_on_own_joint_outputs(config, data, no_warprnnt):
    model = build(config, data.token_list)
    assert type(model) is ESPnetSSMTransducerModel
    assert isinstance(model.decoder, TransducerDecoder)
    assert isinstance(model.joint_network, JointNetwork)
    model.eval()
    batch = batch_of(model, seed=1)
    with torch.no_grad():
        _, stats, weight = model(**batch)
        enc, enc_lens = model.encode(batch["speech"], batch["speech_lengths"])
        enc = enc[0] if isinstance(enc, tuple) else enc
        dec_in, target, t_len, u_len = get_transducer_task_io(
            batch["text"], enc_lens, ignore_id=model.ignore_id, blank_id=model.blank_id
        )
        logits = model.joint_network(enc.unsqueeze(2), model.decoder(dec_in).unsqueeze(1))
        ref = reference_nll(logits.double(), target, t_len.tolist(), u_len.tolist(),
                            model.blank_id).mean()
    assert set(stats) == STATS and int(weight) == 3
    assert float(stats["loss_transducer"]) == pytest.approx(float(ref), rel=1e-5)
    # ESPnet's total: loss_transducer + ctc_weight * loss_ctc
    expected = float(stats["loss_transducer"]) + model.ctc_weight * float(stats["loss_ctc"])
    assert float(stats["loss"]) == pytest.approx(expected, rel=1e-6)
    # validation reports the transducer's CER/WER through ESPnet's ErrorCalculatorTransducer
    assert stats["cer_transducer"] is not None and stats["wer_transducer"] is not None


def test_interctc_is_folded_into_the_ctc_loss_as_espnet_does(data):
    args = ASRTask.get_parser().parse_args([
        "--config", str(TUNING / "train_asr_mh_ssm_transducer_tiny.yaml"), "--token_list",
        str(data.token_list), "--output_dir", "x",
        "--encoder_conf", "interctc_layer_idx=[1]", "--model_conf", "interctc_weight=0.4",
    ])
    torch.manual_seed(0)
    model = ASRTask.build_model(args).train()
    torch.manual_seed(1)
    loss, stats, _ = model(**batch_of(model, seed=8))
    ctc = (1 - 0.4) * float(stats["loss_ctc"]) + 0.4 * float(stats["loss_interctc_layer1"])
    expected = float(stats["loss_transducer"]) + model.ctc_weight * ctc
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)


def test_sliced_model_equals_whole_batch_also_under_ddp(data, tmp_path):
    """Same seed, same dropout: loss and every parameter's gradient agree, DDP included."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    config = "train_asr_mh_ssm_transducer_tiny.yaml"
    batch = batch_of(build(config, data.token_list), seed=2, n=4)
    results = []
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        for slicing, ddp in (({}, False), ({"transducer_batch_slices": 3}, False),
                             ({"transducer_max_joint_elements": 2000}, True)):
            model = build(config, data.token_list, **slicing).train()
            runner = DistributedDataParallel(model) if ddp else model
            torch.manual_seed(5)
            loss, stats, _ = runner(**batch)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            results.append((float(stats["loss_transducer"]), grads))
    finally:
        dist.destroy_process_group()
    (ref_loss, ref_grads), *others = results
    for loss, grads in others:
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        for name, g in ref_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_training_steps_lower_the_loss(data):
    model = build("train_asr_ssm_conformer_online_transducer_tiny.yaml", data.token_list)
    model.specaug = None
    model.train()
    batch = batch_of(model, seed=4, n=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(6)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss, stats, _ = model(**batch)
        loss.backward()
        opt.step()
        losses.append(float(stats["loss_transducer"]))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


# ----------------------------------------------------------------------------- bad input
def test_bad_input_names_the_utterance(data):
    # our encoders give each utterance its exact output length (ESPnet's Conformer would give
    # the short utterance below one frame computed from padding)
    model = build("train_asr_mh_ssm_transducer_tiny.yaml", data.token_list).train()
    batch = batch_of(model, seed=7)

    empty = {**batch, "text_lengths": batch["text_lengths"].clone(), "text": batch["text"].clone()}
    empty["text"][1] = -1
    empty["text_lengths"][1] = 0
    with pytest.raises(TransducerInputError, match=r"'utt1' \(batch index 1\) has an empty"):
        model(**empty)

    oov = {**batch, "text": batch["text"].clone()}
    bad_id = len(model.token_list) + 5
    oov["text"][2, 0] = bad_id
    with pytest.raises(TransducerInputError, match=rf"'utt2'.*label ids \[{bad_id}\]"):
        model(**oov)

    short = {**batch, "speech_lengths": batch["speech_lengths"].clone()}
    short["speech_lengths"][0] = 320  # 3 feature frames: nothing left after 4x subsampling
    short["speech"] = short["speech"] * (torch.arange(short["speech"].size(1)) < 320)[None]
    # our encoders raise for the utterance's batch index; the model adds the batch's keys
    with pytest.raises(TooShortUttError, match=r"keys of this batch by index: 0='utt0', 1="):
        model(**short)

    tiny = {k: v[:1] for k, v in batch.items()}
    tiny["speech"], tiny["speech_lengths"] = tiny["speech"][:, :320], torch.tensor([320])
    with pytest.raises(TooShortUttError, match=r"by index: 0='utt0'\]"):
        model(**tiny)


def test_model_without_transducer_decoder_is_refused(data):
    args = ASRTask.get_parser().parse_args(
        ["--config", str(TUNING / "train_asr_conformer_tiny.yaml"), "--token_list",
         str(data.token_list), "--output_dir", "x", "--model", "espnet_ssm_transducer"]
    )
    with pytest.raises(ValueError, match=r"needs 'decoder: transducer'.*joint_net_conf"):
        ASRTask.build_model(args)


# ----------------------------------------------------------------------------- decoding
@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny transducer trained one epoch by ESPnet's trainer, a random LM, and their zip."""
    root = tmp_path_factory.mktemp("trained")
    exp = root / "exp"
    SSMASRTask.main(cmd=[
        "--config", str(TUNING / "train_asr_mh_ssm_transducer_tiny.yaml"), *data.train_args(),
        "--output_dir", str(exp), "--ngpu", "0", "--max_epoch", "1", "--batch_type", "unsorted",
        "--batch_size", "4", "--use_tensorboard", "false", "--seed", "0",
    ])
    from espnet2.tasks.lm import LMTask

    lm_dir = root / "lm"
    LMTask.main(cmd=[
        "--dry_run", "true", "--iterator_type", "none", "--output_dir", str(lm_dir),
        "--token_list", str(data.token_list), "--token_type", "char", "--lm", "seq_rnn",
        "--lm_conf", "unit=32", "--lm_conf", "nlayers=1",
    ])
    lm, _ = LMTask.build_model_from_file(lm_dir / "config.yaml", None, "cpu")
    torch.save(lm.state_dict(), lm_dir / "lm.pth")
    files = dict(
        asr_train_config=exp / "config.yaml", asr_model_file=exp / "latest.pth",
        lm_train_config=lm_dir / "config.yaml", lm_file=lm_dir / "lm.pth",
    )
    from espnet2.bin.pack import main as pack

    cwd = os.getcwd()
    os.chdir(root)  # pack stores paths relative to the working directory
    try:
        pack(["asr", *(a for k, v in files.items() for a in (f"--{k}", str(v.relative_to(root)))),
              "--outpath", "packed.zip"])
    finally:
        os.chdir(cwd)
    return {k: str(v) for k, v in files.items()}, root / "packed.zip"


DECODED = 3  # utterances decoded per setting


def decode_first(s2t, data: TinyASRData) -> Dict[str, str]:
    """Text of the first ``DECODED`` utterances of ``data``, decoded one by one."""
    import soundfile as sf

    out = {}
    for line in data.wav_scp.read_text().splitlines()[:DECODED]:
        key, path = line.split()
        wav, _ = sf.read(path, dtype="float32")
        out[key] = s2t(torch.from_numpy(wav))[0][0]
    return out


def read_text(path: Path) -> Dict[str, str]:
    rows = [line.split(maxsplit=1) for line in path.read_text().splitlines()]
    return {r[0]: (r[1] if len(r) > 1 else "") for r in rows}


@pytest.mark.parametrize("with_lm", [False, True], ids=["no-lm", "lm"])
def test_decodes_with_espnet_speech2text_and_our_entry_point(trained, data, tmp_path, with_lm):
    import yaml
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_ssm.bin.asr_inference import main as our_inference

    files, _ = trained
    if not with_lm:
        files = {k: v for k, v in files.items() if k.startswith("asr_")}
    search = yaml.safe_load(DECODE_CONFIG.read_text())
    s2t = Speech2Text(**files, **search)  # ESPnet's own class, after `import espnet_ssm`
    assert isinstance(s2t.beam_search_transducer, BeamSearchTransducer)
    assert s2t.beam_search_transducer.use_lm is with_lm
    expected = decode_first(s2t, data)

    keys = tmp_path / "keys"
    keys.write_text("".join(f"{k}\n" for k in expected))
    out = tmp_path / "decode"
    our_inference([
        "--config", str(DECODE_CONFIG), *(a for k, v in files.items() for a in (f"--{k}", v)),
        "--data_path_and_name_and_type", f"{data.wav_scp},speech,sound",
        "--key_file", str(keys), "--output_dir", str(out), "--ngpu", "0",
    ])
    got = read_text(out / "1best_recog" / "text")
    assert got == {k: v.strip() for k, v in expected.items()}


def test_packed_model_decodes_in_fresh_process(trained, data, tmp_path):
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.main_funcs.pack_funcs import unpack

    _, zip_path = trained
    wav = data.wav_scp.read_text().split()[1]
    code = f"""
import json, sys, soundfile, torch
import espnet_ssm
from espnet2.bin.asr_inference import Speech2Text
from espnet2.main_funcs.pack_funcs import unpack
files = unpack({str(zip_path)!r}, {str(tmp_path / 'fresh')!r})
s2t = Speech2Text(**files, beam_size=3, lm_weight=0.5)
wav, _ = soundfile.read({wav!r}, dtype="float32")
print(json.dumps({{"text": s2t(torch.from_numpy(wav))[0][0], "files": sorted(files),
    "search": type(s2t.beam_search_transducer).__name__, "lm": s2t.beam_search_transducer.use_lm,
    "warprnnt": any(m.startswith("warprnnt") for m in sys.modules)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["files"] == ["asr_model_file", "asr_train_config", "lm_file", "lm_train_config"]
    assert got["search"] == "BeamSearchTransducer" and got["lm"] and not got["warprnnt"]
    s2t = Speech2Text(**unpack(str(zip_path), str(tmp_path / "here")), beam_size=3, lm_weight=0.5)
    import soundfile as sf

    here = s2t(torch.from_numpy(sf.read(wav, dtype="float32")[0]))[0][0]
    assert got["text"] == here
